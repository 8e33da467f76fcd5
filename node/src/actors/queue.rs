//! The outbound queue of a shard, run by a [`QueueActor`] only while this node leads
//! the shard: the [`QueueSupervisor`] starts it when the node gains leadership and
//! stops it when the node loses it, so after a failover the new leader's actor resumes
//! from the replicated queue where the old one stopped.
//!
//! The actor looks at its queue only when the queue changed (the state machine's
//! [`OutboundBell`] rings and the supervisor passes a [`Scan`] on), when a retry falls
//! due (a timer set for it), or when it starts: an idle shard costs no quorum reads, so
//! its Raft group can quiesce, and no timer wakes the node for it.
//!
//! Delivery is at-least-once: an item delivered but not yet recorded when its leader
//! dies is delivered again by the next leader, with the same `Idempotency-Key` header
//! (`{cluster}:{shard}:{seq}`) so the receiver can drop the repeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use consensus::GroupId;
use tracing::{debug, info, warn};

use gateways::smtp::dsn::{self, Bounce};
use gateways::smtp::relay::{self, RelayOutcome, RelayTarget};

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::placement::META_GROUP;
use crate::proto::state::{Deliver, OutboundAttempt, OutboundItem};
use crate::state::bell::OutboundBell;
use crate::webhook_targets::WebhookTargets;

/// Retry policy and pacing of every shard's queue.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub cluster_id: String,
    /// The shortest wait before a queue is scanned again without a ring (after a failed
    /// scan or attempt, so a sick shard is not scanned in a loop).
    pub rescan_after: Duration,
    /// Rung by the state machine when a shard's queue changes.
    pub bell: Arc<OutboundBell>,
    /// Delay before the first retry; doubles per attempt, capped at 5 minutes.
    pub retry_base: Duration,
    /// Attempts before an item is given up (a failed delivery report).
    pub max_attempts: u32,
    /// Items attempted per poll.
    pub batch: usize,
    /// Where outbound e-mail (channel `smtp`) goes.
    pub relay: RelayTarget,
    /// The HTTP client of webhooks ([`webhook_agent`]).
    pub webhooks: ureq::Agent,
    /// Signs outgoing e-mail with its domain's DKIM key.
    pub dkim: Arc<crate::dkim::DkimSigners>,
}

/// Why a resolver found no address a webhook may use.
const NOT_ALLOWED: &str = "the target's address is not allowed for webhooks";

/// The HTTP client of webhook deliveries: redirects are not followed (each hop would be
/// a new, unchecked destination), and names resolve only to addresses `targets` allows.
pub fn webhook_agent(targets: Arc<WebhookTargets>) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .resolver(move |netloc: &str| {
            use std::net::ToSocketAddrs as _;
            let allowed = targets.filter(netloc.to_socket_addrs()?.collect());
            if allowed.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, NOT_ALLOWED));
            }
            Ok(allowed)
        })
        .build()
}

/// What one delivery attempt came to.
enum Outcome {
    Delivered,
    /// Worth retrying (network error, 5xx, 408, 429).
    Retry(String),
    /// The receiver refused the item for good (other 4xx).
    Refused(String),
}

/// Backoff after `attempts` failed attempts.
fn retry_delay(settings: &QueueSettings, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.min(16);
    (settings.retry_base * factor).min(Duration::from_secs(300))
}

/// The report to replicate after an attempt.
fn attempt_report(settings: &QueueSettings, item: &OutboundItem, outcome: &Outcome, now: u64) -> OutboundAttempt {
    let attempts = item.attempts + 1;
    let (delivered, give_up, error) = match outcome {
        Outcome::Delivered => (true, false, String::new()),
        Outcome::Refused(e) => (false, true, e.clone()),
        Outcome::Retry(e) => (false, attempts >= settings.max_attempts, e.clone()),
    };
    OutboundAttempt {
        seq: item.seq,
        delivered,
        give_up,
        error,
        next_attempt_ms: now + retry_delay(settings, attempts).as_millis() as u64,
        now_ms: now,
    }
}

/// One webhook call. What a failure records says no more than the caller needs (a
/// refused connection and a timeout read alike), so `last_error` maps no networks.
fn deliver_webhook(agent: &ureq::Agent, item: &OutboundItem, idempotency_key: &str) -> Outcome {
    let content_type = if item.content_type.is_empty() { "application/octet-stream" } else { &item.content_type };
    let response = agent
        .post(&item.target)
        .set("Content-Type", content_type)
        .set("Idempotency-Key", idempotency_key)
        .set("X-UMS-Attempt", &(item.attempts + 1).to_string())
        .send_bytes(&item.payload);
    match response {
        Ok(r) if (300..400).contains(&r.status()) => {
            Outcome::Refused(format!("HTTP {}: redirects are not followed", r.status()))
        }
        Ok(_) => Outcome::Delivered,
        Err(ureq::Error::Status(code, _)) if code == 408 || code == 429 || code >= 500 => {
            Outcome::Retry(format!("HTTP {code}"))
        }
        Err(ureq::Error::Status(code, _)) => Outcome::Refused(format!("HTTP {code}")),
        Err(ureq::Error::Transport(t)) if t.to_string().contains(NOT_ALLOWED) => Outcome::Refused(NOT_ALLOWED.into()),
        Err(ureq::Error::Transport(t)) => {
            debug!(target = %item.target, error = %t, "webhook not delivered");
            Outcome::Retry("the target could not be reached".into())
        }
    }
}

/// Works one shard's queue while this node leads it.
pub struct QueueActor {
    shard: GroupId,
    cluster: Arc<Cluster>,
    settings: QueueSettings,
    busy: bool,
    /// The bell's generation the last finished scan started from (none yet: scan now).
    scanned: Option<u64>,
    /// When the earliest pending item the last scan saw falls due.
    next_due_ms: Option<u64>,
    /// The timer of that next scan.
    timer: Option<SpawnHandle>,
}

/// Whether the queue must be scanned: it changed since the last scan (or was never
/// scanned), or an item it saw is due.
fn scan_needed(scanned: Option<u64>, generation: u64, next_due_ms: Option<u64>, now_ms: u64) -> bool {
    scanned != Some(generation) || next_due_ms.is_some_and(|due| due <= now_ms)
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(shard = self.shard, "queue actor started");
        self.scan_if_needed(ctx);
    }
}

impl QueueActor {
    /// Scans the queue if it changed or an item is due; after the scan, scans again at
    /// once if it was rung meanwhile, else sets a timer for the next item due (at least
    /// `rescan_after` away).
    fn scan_if_needed(&mut self, ctx: &mut Context<Self>) {
        // Read before the scan: a ring during it shows as a newer generation after.
        let generation = self.settings.bell.generation(self.shard);
        if self.busy || !scan_needed(self.scanned, generation, self.next_due_ms, now_ms()) {
            return;
        }
        self.busy = true;
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let (cluster, shard, settings) = (Arc::clone(&self.cluster), self.shard, self.settings.clone());
        ctx.spawn(work_queue(cluster, shard, settings).into_actor(self).map(move |next_due_ms, actor, ctx| {
            actor.busy = false;
            actor.scanned = Some(generation);
            actor.next_due_ms = next_due_ms;
            if actor.settings.bell.generation(actor.shard) != generation {
                actor.scan_if_needed(ctx); // Rung during the scan.
            } else if let Some(due) = next_due_ms {
                let wait = Duration::from_millis(due.saturating_sub(now_ms())).max(actor.settings.rescan_after);
                actor.timer = Some(ctx.run_later(wait, |actor, ctx| {
                    actor.timer = None;
                    actor.scan_if_needed(ctx);
                }));
            }
        }));
    }
}

/// The shard's queue changed (the bell rang for it): look.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Scan;

impl Handler<Scan> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Scan, ctx: &mut Self::Context) {
        self.scan_if_needed(ctx);
    }
}

/// One pass over the due items of a shard; returns when the next pass is due without a
/// ring (now, after a failure or with more items than a batch; else the earliest retry).
async fn work_queue(cluster: Arc<Cluster>, shard: GroupId, settings: QueueSettings) -> Option<u64> {
    let items = match cluster.pending_outbound(shard, settings.batch).await {
        Ok(items) => items,
        Err(e) => {
            debug!(shard, error = %e, "queue scan skipped");
            return Some(now_ms());
        }
    };
    metrics::gauge!("ums_outbound_pending", "shard" => shard.to_string()).set(items.len() as f64);
    let now = now_ms();
    let next_due_ms = if items.len() >= settings.batch {
        Some(now)
    } else {
        items.iter().map(|i| i.next_attempt_ms).filter(|&at| at > now).min()
    };
    for item in items.into_iter().filter(|i| i.next_attempt_ms <= now) {
        let key = format!("{}:{shard}:{}", settings.cluster_id, item.seq);
        let outcome = match item.channel.as_str() {
            "smtp" => {
                match relay::send(&settings.relay, &item.mail_from, &item.target, &settings.dkim.sign(&item.payload))
                    .await
                {
                    RelayOutcome::Delivered => Outcome::Delivered,
                    RelayOutcome::Retry(e) => Outcome::Retry(e),
                    RelayOutcome::Refused(e) => Outcome::Refused(e),
                }
            }
            _ => {
                let (item, key, agent) = (item.clone(), key.clone(), settings.webhooks.clone());
                tokio::task::spawn_blocking(move || deliver_webhook(&agent, &item, &key))
                    .await
                    .unwrap_or_else(|e| Outcome::Retry(e.to_string()))
            }
        };
        let report = attempt_report(&settings, &item, &outcome, now_ms());
        metrics::counter!("ums_outbound_attempts_total", "channel" => item.channel.clone()).increment(1);
        if report.give_up {
            warn!(shard, seq = item.seq, error = %report.error, "outbound item failed for good");
            if item.channel == "smtp"
                && !item.mail_from.is_empty()
                && let Err(e) = bounce(&cluster, &settings, &item, &report.error, key).await
            {
                // Not recorded as failed yet: the next pass (here or on the next leader) retries.
                warn!(shard, seq = item.seq, error = %e, "could not deliver a bounce");
                return Some(now_ms());
            }
        }
        if let Err(e) = cluster.record_attempt(shard, report).await {
            // Leadership moved or the cluster is busy: the next leader retries the item.
            warn!(shard, seq = item.seq, error = %e, "could not record an outbound attempt");
            return Some(now_ms());
        }
    }
    next_due_ms
}

/// Tells the sender of an undeliverable e-mail, in their own INBOX. The bounce is keyed
/// by the item, so a retried pass never delivers it twice.
async fn bounce(
    cluster: &Cluster,
    settings: &QueueSettings,
    item: &OutboundItem,
    error: &str,
    key: String,
) -> Result<(), crate::cluster::ServiceError> {
    let message = dsn::build(&Bounce {
        hostname: &settings.relay.hostname,
        to: &item.mail_from,
        recipient: &item.target,
        error,
        attempts: item.attempts + 1,
        original: &item.payload,
    });
    let key = format!("bounce:{key}");
    let deliver = Deliver {
        user_id: item.user_id.clone(),
        mailbox: "INBOX".into(),
        raw: message,
        kind: "email".into(),
        internal_date_ms: now_ms(),
        client_ref: key.clone(),
        // The sender must learn of the failure even with a full mailbox.
        ignore_quota: true,
        ..Default::default()
    };
    cluster.deliver_to_user(deliver, Some(&key)).await.map(|_| ())
}

/// Leadership news from the Raft thread.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leadership {
    pub shard: GroupId,
    pub leading: bool,
}

/// Starts and stops the queue actors as this node gains and loses shard leadership.
pub struct QueueSupervisor {
    cluster: Arc<Cluster>,
    settings: QueueSettings,
    running: HashMap<GroupId, Addr<QueueActor>>,
}

impl QueueSupervisor {
    pub fn new(cluster: Arc<Cluster>, settings: QueueSettings) -> Self {
        Self { cluster, settings, running: HashMap::new() }
    }
}

impl Actor for QueueSupervisor {
    type Context = Context<Self>;
}

impl Handler<Leadership> for QueueSupervisor {
    type Result = ();

    fn handle(&mut self, news: Leadership, _ctx: &mut Self::Context) {
        if news.shard == META_GROUP {
            return;
        }
        match (news.leading, self.running.contains_key(&news.shard)) {
            (true, false) => {
                let actor = QueueActor {
                    shard: news.shard,
                    cluster: Arc::clone(&self.cluster),
                    settings: self.settings.clone(),
                    busy: false,
                    scanned: None,
                    next_due_ms: None,
                    timer: None,
                };
                let addr = actor.start();
                self.running.insert(news.shard, addr);
                info!(shard = news.shard, "outbound queue running here");
            }
            (false, true) => {
                if let Some(addr) = self.running.remove(&news.shard) {
                    addr.do_send(StopQueue);
                }
                info!(shard = news.shard, "outbound queue stopped here");
            }
            _ => {}
        }
        metrics::gauge!("ums_queue_actors").set(self.running.len() as f64);
    }
}

/// The bell rang for these shards: their actors (those running here) look.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rung(pub Vec<GroupId>);

impl Handler<Rung> for QueueSupervisor {
    type Result = ();

    fn handle(&mut self, Rung(shards): Rung, _ctx: &mut Self::Context) {
        for shard in shards {
            if let Some(actor) = self.running.get(&shard) {
                actor.do_send(Scan);
            }
        }
    }
}

/// Asks a queue actor to stop (its node no longer leads the shard).
#[derive(Message)]
#[rtype(result = "()")]
struct StopQueue;

impl Handler<StopQueue> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: StopQueue, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        QueueSettings {
            cluster_id: "c".into(),
            rescan_after: Duration::from_millis(100),
            bell: Default::default(),
            retry_base: Duration::from_secs(1),
            max_attempts: 3,
            batch: 10,
            relay: RelayTarget::new(None, "node.test".into(), Default::default()).unwrap(),
            webhooks: webhook_agent(Arc::new(WebhookTargets::default())),
            dkim: Default::default(),
        }
    }

    #[test]
    fn the_queue_is_scanned_when_it_changed_or_an_item_is_due() {
        assert!(scan_needed(None, 0, None, 5), "never scanned");
        assert!(!scan_needed(Some(3), 3, None, 5), "unchanged, nothing pending");
        assert!(scan_needed(Some(3), 4, None, 5), "rung since");
        assert!(!scan_needed(Some(3), 3, Some(6), 5), "the retry is not due yet");
        assert!(scan_needed(Some(3), 3, Some(5), 5), "the retry is due");
    }

    #[test]
    fn retries_back_off_and_give_up_after_the_last_attempt() {
        let settings = settings();
        let mut item = OutboundItem { seq: 7, ..Default::default() };
        let first = attempt_report(&settings, &item, &Outcome::Retry("HTTP 503".into()), 1_000);
        assert_eq!((first.delivered, first.give_up, first.next_attempt_ms), (false, false, 3_000));
        item.attempts = 1;
        assert_eq!(attempt_report(&settings, &item, &Outcome::Retry("x".into()), 1_000).next_attempt_ms, 5_000);
        item.attempts = 2;
        assert!(attempt_report(&settings, &item, &Outcome::Retry("x".into()), 1_000).give_up, "third failure is final");
        item.attempts = 0;
        assert!(
            attempt_report(&settings, &item, &Outcome::Refused("HTTP 400".into()), 1_000).give_up,
            "a refusal is final at once"
        );
        assert!(attempt_report(&settings, &item, &Outcome::Delivered, 1_000).delivered);
        assert_eq!(retry_delay(&settings, 40), Duration::from_secs(300));
    }
}
