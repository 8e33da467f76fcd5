//! Drill scenarios and their report.
//!
//! Every drill: create the drill users, start the workload, run the scenario's faults,
//! heal everything, stop the workload, wait until all replicas agree, read every
//! replica, and check the history. The report lists violations and each shard's
//! unavailability; `passed` is false on any violation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use devkit::http::post_with_retry;
use devkit::webhook_sink::WebhookSink;
use serde::Serialize;

use crate::checker::{self, Observed, Verdict};
use crate::cluster::Cluster;
use crate::faults::Faults;
use crate::history::{FaultEvent, Isolation, Operation};
use crate::outbound::{Delivery, OutboundVerdict, check_outbound};
use crate::workload::{ApiNode, Protocol, Workload, WorkloadSettings};

/// Scenarios that can run against a cluster of local processes today.
pub const AVAILABLE: [&str; 15] = [
    "leader-kill",
    "node-pause",
    "partition-minority",
    "partition-leader",
    "packet-loss",
    "slow-network",
    "slow-disk",
    "disk-full",
    "rolling-restart",
    "power-cut",
    // Membership, in this order: a node joins, a replica moves while its leader is cut
    // off, and the newest node is drained and removed.
    "add-node",
    "move-under-partition",
    "drain-node",
    // The backup core: the two sites swap roles and back; then the primary site is lost
    // for good and the backup promoted (last: the cluster is left on the backup site).
    "switchover",
    "site-loss",
];

/// Knobs of one drill run.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub duration: Duration,
    pub rate: u32,
    pub seed: u64,
    pub users: usize,
    /// A write slower than this counts as its shard being unavailable.
    pub stall_ms: u64,
    /// The longest wait for queued webhooks still pending in the cluster.
    pub outbound_wait: Duration,
    /// Which public endpoints the workload writes through.
    pub protocol: Protocol,
}

/// What a drill found.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub scenario: String,
    pub seed: u64,
    pub faults: Vec<FaultEvent>,
    pub verdict: Verdict,
    /// Outbound webhook items queued during the drill, against what arrived.
    pub outbound: OutboundVerdict,
    pub unavailability_ms: Percentiles,
    /// From the first fault to the moment every shard hit by it took writes again.
    pub recovery_ms: Option<u64>,
    /// Acknowledged writes per second and their latency before the first fault, from
    /// the first fault to the last fault event (the moves of a membership drill), and
    /// after.
    pub phases: Vec<Phase>,
    /// Shards not back on exactly their target voters (led, not joint, no learner)
    /// within 30 s of the drill's end; `None` when all were.
    pub membership: Option<String>,
    /// The site-loss drill's figures: RTO, reported and measured loss.
    pub site_loss: Option<crate::sites::SiteLoss>,
    pub passed: bool,
}

/// The workload's figures over one part of a drill.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub from_ms: u64,
    pub to_ms: u64,
    pub acknowledged_per_s: f64,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
}

/// Pure: `history` cut at the first and last fault event into before / during / after.
fn phases(history: &[Operation], faults: &[FaultEvent]) -> Vec<Phase> {
    let (Some(first), Some(last)) = (faults.first(), faults.last()) else { return Vec::new() };
    let end = history.iter().map(|o| o.completed_ms).max().unwrap_or(last.at_ms);
    let cuts = [("before", 0, first.at_ms), ("during", first.at_ms, last.at_ms), ("after", last.at_ms, end)];
    cuts.into_iter()
        .filter(|(_, from, to)| to > from)
        .map(|(name, from_ms, to_ms)| {
            let mut latencies: Vec<u64> = history
                .iter()
                .filter(|o| o.is_ok() && o.invoked_ms >= from_ms && o.invoked_ms < to_ms)
                .map(|o| o.completed_ms.saturating_sub(o.invoked_ms))
                .collect();
            let acknowledged_per_s = latencies.len() as f64 * 1000.0 / (to_ms - from_ms) as f64;
            Phase {
                name,
                from_ms,
                to_ms,
                acknowledged_per_s,
                latency_p50_ms: checker::quantile(&mut latencies, 0.5),
                latency_p99_ms: checker::quantile(&mut latencies, 0.99),
            }
        })
        .collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub windows: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Creates the drill's users (again: creating one that exists updates it) and returns
/// each with its shard, as the cluster placed it.
fn create_drill_users(count: usize, cluster: &Cluster) -> anyhow::Result<Vec<(String, u64)>> {
    (1..=count)
        .map(|n| {
            let user = format!("drill{n}@chaos.go.ke");
            let body = serde_json::json!({ "email": user, "name": "drill user", "password": "drill-password" });
            let entry = cluster.ids()[0];
            let created = post_with_retry(&cluster.url(entry, "/api/v1/users"), &cluster.node(entry).token, &body)?;
            let shard = created["shard"].as_u64().with_context(|| format!("no shard in the answer for {user}"))?;
            Ok((user, shard))
        })
        .collect()
}

const NO_SMALL_DISK: &str = "disk-full needs a node whose data directory is a small filesystem of its own \
     (e.g. `mount -t tmpfs -o size=256m tmpfs DATA/node-3` before that node first starts); none has one";

fn node_with_own_filesystem(cluster: &Cluster) -> Option<u64> {
    cluster.ids().into_iter().find(|&id| crate::faults::has_own_filesystem(&cluster.node(id).config.data_dir))
}

/// Why `scenario` cannot run against `cluster`, if it cannot (`drill all` skips it).
pub fn skip_reason(scenario: &str, cluster: &Cluster) -> Option<String> {
    match scenario {
        "partition-minority" | "partition-leader" | "packet-loss" => crate::faults::network_faults_unsupported(cluster),
        "disk-full" if node_with_own_filesystem(cluster).is_none() => Some(NO_SMALL_DISK.to_string()),
        "slow-network" | "slow-disk" if !cluster.allows_debug_faults() => {
            Some("the nodes do not accept injected delays (debug_faults = true in node.toml; umsd dev sets it)".into())
        }
        "move-under-partition" => crate::faults::network_faults_unsupported(cluster)
            .or_else(|| crate::placement::skip_reason(scenario, cluster)),
        "add-node" | "drain-node" => crate::placement::skip_reason(scenario, cluster),
        "switchover" | "site-loss" => crate::sites::skip_reason(cluster),
        _ => None,
    }
}

/// Every node with the number of the drill users' shards it leads, fewest first.
fn nodes_by_led_shards(cluster: &Cluster, users: &[(String, u64)]) -> anyhow::Result<Vec<u64>> {
    let leaders = cluster.leaders();
    if leaders.is_empty() {
        bail!("no shard has a leader; is the cluster up?");
    }
    let shards: BTreeSet<u64> = users.iter().map(|(_, s)| *s).collect();
    let mut counts: BTreeMap<u64, usize> = cluster.ids().into_iter().map(|id| (id, 0)).collect();
    for shard in shards {
        if let Some(&leader) = leaders.get(&shard) {
            *counts.entry(leader).or_default() += 1;
        }
    }
    let mut nodes: Vec<(u64, usize)> = counts.into_iter().collect();
    nodes.sort_by_key(|&(id, count)| (count, id));
    Ok(nodes.into_iter().map(|(id, _)| id).collect())
}

/// The node leading the most shards that `users` live on.
fn busiest_leader(cluster: &Cluster, users: &[(String, u64)]) -> anyhow::Result<u64> {
    nodes_by_led_shards(cluster, users)?.last().copied().context("the cluster has no nodes")
}

/// Runs one scenario and checks it.
pub fn run(scenario: &str, cluster: &Cluster, options: &DrillOptions) -> anyhow::Result<DrillReport> {
    if !AVAILABLE.contains(&scenario) {
        bail!("unknown scenario '{scenario}'; choose one of {} or all", AVAILABLE.join(", "));
    }
    if let Some(why) = skip_reason(scenario, cluster) {
        bail!("scenario '{scenario}' cannot run against this cluster: {why}");
    }
    for id in cluster.ids() {
        if !cluster.is_healthy(id) {
            bail!(
                "node {id} is not answering at {}; start the whole cluster before a drill",
                cluster.url(id, "/health")
            );
        }
    }
    let users = create_drill_users(options.users, cluster)?;
    println!(
        "drill {scenario}: {} s at {} writes/s over {} users through {} (seed {})",
        options.duration.as_secs(),
        options.rate,
        users.len(),
        options.protocol,
        options.seed
    );
    let sink = WebhookSink::start(Duration::ZERO).context("starting the outbound sink")?;
    // The node drain-node takes away gets no client traffic (out of the load balancer).
    let spared = if scenario == "drain-node" { Some(crate::placement::drain_victim(cluster)?) } else { None };
    let clients: Vec<u64> = cluster.ids().into_iter().filter(|id| Some(*id) != spared).collect();
    let started = Instant::now();
    let workload = Workload::start(
        WorkloadSettings {
            nodes: clients
                .iter()
                .map(|&id| ApiNode { id, base: cluster.url(id, ""), token: cluster.node(id).token.clone() })
                .collect(),
            smtp: clients
                .iter()
                .filter_map(|&id| cluster.node(id).config.smtp.listen.map(|a| (id, a.to_string())))
                .collect(),
            protocol: options.protocol,
            users: users.clone(),
            rate: options.rate,
            seed: options.seed,
            run_tag: format!(
                "{scenario}-{}-{}",
                options.seed,
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
            ),
            outbound_target: Some(sink.url.clone()),
        },
        started,
    );
    let mut faults = Faults::new(started);
    let third = options.duration / 3;
    std::thread::sleep(third);
    let (outcome, mut site_loss) = if scenario == "site-loss" {
        match crate::sites::site_loss(cluster, &mut faults, third) {
            Ok(loss) => (Ok(()), Some(loss)),
            Err(e) => (Err(e), None),
        }
    } else {
        (inject(scenario, cluster, &users, &mut faults, third), None)
    };
    let healed = faults.heal(cluster);
    let remaining = options.duration.saturating_sub(started.elapsed());
    std::thread::sleep(remaining.max(Duration::from_secs(1)));
    let history = workload.stop();
    outcome?;
    healed?;
    // After a site loss, the cluster is what was its backup site.
    let cluster = &cluster.without(site_loss.as_ref().map_or(&[], |loss| &loss.lost_nodes));
    let membership = crate::placement::settled(cluster, Duration::from_secs(30)).err();
    let observed = read_replicas(cluster, &users)?;
    let deliveries = await_deliveries(cluster, &users, &sink, &history.outbound, options.outbound_wait);
    let (mut messages, mut queued) = (history.messages, history.outbound);
    if let Some(loss) = &mut site_loss {
        (messages, queued) = excuse_site_loss(loss, messages, queued, &observed, &deliveries);
    }
    let outbound = check_outbound(&queued, &deliveries);
    let mut found = report(scenario, options, messages, &observed, faults.events, &faults.isolations);
    found.passed &= outbound.violation_lines().next().is_none() && membership.is_none();
    if let Some(loss) = &site_loss {
        found.passed &= loss.rto_ms.is_some();
    }
    found.membership = membership;
    found.outbound = outbound;
    found.site_loss = site_loss;
    Ok(found)
}

/// Takes out of the checked histories what the lost site acknowledged after each shard's
/// recovery point and the promoted site lacks (appends, and webhooks never delivered),
/// and accounts for it in `loss` with the RTO.
fn excuse_site_loss(
    loss: &mut crate::sites::SiteLoss,
    messages: Vec<Operation>,
    queued: Vec<Operation>,
    observed: &Observed,
    deliveries: &[Delivery],
) -> (Vec<Operation>, Vec<Operation>) {
    let stored = |o: &Operation| {
        observed.iter().any(|((user, _), mailbox)| *user == o.user && mailbox.iter().any(|(_, r)| *r == o.client_ref))
    };
    let delivered = |o: &Operation| deliveries.iter().any(|d| d.client_ref == o.client_ref);
    let points = &loss.recovery_points_ms;
    let (messages, mut excused) = checker::excuse_after_recovery_point(messages, points, stored);
    let (queued, excused_queued) = checker::excuse_after_recovery_point(queued, points, delivered);
    excused.extend(excused_queued);
    loss.account(&messages, &excused);
    (messages, queued)
}

/// What the sink got once every queued item arrived, or once the cluster holds none of
/// the drill users' items pending any more (an item lost with its shard, or failed, will
/// never arrive: that is the checker's to report), or after `wait` (retries back off).
fn await_deliveries(
    cluster: &Cluster,
    users: &[(String, u64)],
    sink: &WebhookSink,
    queued: &[Operation],
    wait: Duration,
) -> Vec<Delivery> {
    let delivered = || -> Vec<Delivery> {
        let received = sink.received().into_iter();
        received.map(|r| Delivery { client_ref: r.body, idempotency_key: r.idempotency_key }).collect()
    };
    let deadline = Instant::now() + wait;
    let mut next_queue_check = Instant::now() + Duration::from_secs(2);
    loop {
        let deliveries = delivered();
        let arrived: std::collections::HashSet<&str> = deliveries.iter().map(|d| d.client_ref.as_str()).collect();
        let all_arrived = queued.iter().filter(|o| o.is_ok()).all(|o| arrived.contains(o.client_ref.as_str()));
        let nothing_pending = Instant::now() >= next_queue_check && {
            next_queue_check = Instant::now() + Duration::from_secs(1);
            pending_outbound(cluster, users) == Some(0)
        };
        if all_arrived || nothing_pending || Instant::now() > deadline {
            // A moment longer, for redeliveries already on their way.
            std::thread::sleep(Duration::from_millis(500));
            return delivered();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of the users' outbound items the cluster still holds pending; `None` when a
/// user's list could not be read.
fn pending_outbound(cluster: &Cluster, users: &[(String, u64)]) -> Option<usize> {
    let mut pending = 0;
    for (user, _) in users {
        let path = format!("/api/v1/users/{user}/outbound");
        let list: serde_json::Value = match cluster.get(cluster.ids()[0], &path).timeout(Duration::from_secs(5)).call()
        {
            Ok(response) => response.into_json().ok()?,
            // The user itself was lost (a drill against an unsafe cluster): nothing pending.
            Err(ureq::Error::Status(404, _)) => continue,
            Err(_) => return None,
        };
        pending += list["outbound"].as_array()?.iter().filter(|item| item["status"] == "pending").count();
    }
    Some(pending)
}

/// The faults of each scenario, over about `span`: most inject one fault, hold it for
/// `span`, and undo it (`Faults::heal` undoes whatever is in effect).
fn inject(
    scenario: &str,
    cluster: &Cluster,
    users: &[(String, u64)],
    faults: &mut Faults,
    span: Duration,
) -> anyhow::Result<()> {
    let hold = |faults: &mut Faults| {
        std::thread::sleep(span);
        faults.heal(cluster)
    };
    match scenario {
        "leader-kill" => {
            faults.kill(cluster, busiest_leader(cluster, users)?)?;
            hold(faults)
        }
        "node-pause" => {
            faults.pause(cluster, busiest_leader(cluster, users)?)?;
            hold(faults)
        }
        "partition-minority" => {
            // A node leading as little as possible: the majority keeps most leaders.
            let victim = *nodes_by_led_shards(cluster, users)?.first().context("the cluster has no nodes")?;
            faults.isolate(cluster, victim)?;
            hold(faults)
        }
        "partition-leader" => {
            // The busiest leader is cut off with its clients still reaching it: it must
            // stop acknowledging (checked by the checker) while the majority elects anew.
            faults.isolate(cluster, busiest_leader(cluster, users)?)?;
            hold(faults)
        }
        "packet-loss" => {
            faults.packet_loss(cluster, 0.2)?;
            hold(faults)
        }
        "slow-network" => {
            // Every frame between nodes arrives 100 ms late (200 ms round trips): commits
            // slow down, heartbeats still come in time, so leaders must stay put.
            faults.slow_network(cluster, Duration::from_millis(100))?;
            hold(faults)
        }
        "slow-disk" => {
            // The busiest leader's fsyncs take 200 ms longer: its shards slow down.
            faults.slow_disk(cluster, busiest_leader(cluster, users)?, Duration::from_millis(200))?;
            hold(faults)
        }
        "disk-full" => {
            // Needs a node whose data lives on a small filesystem of its own.
            let victim = node_with_own_filesystem(cluster).context(NO_SMALL_DISK)?;
            faults.fill_disk(cluster, victim)?;
            let started = Instant::now();
            write_ballast(cluster, victim, faults, started + span);
            std::thread::sleep(span.saturating_sub(started.elapsed()));
            faults.heal(cluster)
        }
        "power-cut" => {
            // Every node dies at once, as when a site loses power: only what was fsynced
            // before an acknowledgement may be relied on.
            for id in cluster.ids() {
                faults.kill(cluster, id)?;
            }
            std::thread::sleep(Duration::from_secs(1));
            for id in cluster.ids() {
                faults.restart(cluster, id)?;
            }
            Ok(())
        }
        "add-node" => crate::placement::add_node(cluster, faults, span.max(Duration::from_secs(120))),
        "drain-node" => crate::placement::drain_node(cluster, faults, span.max(Duration::from_secs(180))),
        "move-under-partition" => {
            let shard = users.first().map(|(_, shard)| *shard).context("no drill users")?;
            crate::placement::move_under_partition(cluster, faults, shard, span)
        }
        "switchover" => crate::sites::switchover(cluster, faults, span),
        "rolling-restart" => {
            let pause = span / cluster.nodes.len() as u32;
            for id in cluster.ids() {
                faults.stop(cluster, id)?;
                faults.restart(cluster, id)?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        _ => unreachable!("checked by run"),
    }
}

/// Ballast beyond which a victim that has not stopped is not pushed: more than its WAL
/// and memtables can hold (so its storage must fail), little enough for it to catch up
/// once its filesystem is freed, should it have stalled instead of stopping.
const MAX_BALLAST_MIB: u32 = 128;

/// Until `victim` stops or `until`: appends 1 MiB messages (through the other nodes) to a
/// ballast mailbox, so the full disk is needed at once instead of after the space
/// RocksDB set aside earlier runs out. Ballast is not part of the checked history.
fn write_ballast(cluster: &Cluster, victim: u64, faults: &mut Faults, until: Instant) {
    const BALLAST_USER: &str = "ballast@chaos.go.ke";
    let Some(entry) = cluster.ids().into_iter().find(|&id| id != victim) else { return };
    let user = serde_json::json!({ "email": BALLAST_USER, "name": "drill ballast", "password": "drill-password" });
    if post_with_retry(&cluster.url(entry, "/api/v1/users"), &cluster.node(entry).token, &user).is_err() {
        return;
    }
    let body = serde_json::json!({ "kind": "email", "body": "x".repeat(1 << 20) });
    let path = format!("/api/v1/users/{BALLAST_USER}/messages");
    let mut written = 0;
    while Instant::now() < until && cluster.pid(victim).is_some() && written < MAX_BALLAST_MIB {
        if cluster.post(entry, &path).timeout(Duration::from_secs(5)).send_json(body.clone()).is_ok() {
            written += 1;
        }
    }
    if cluster.pid(victim).is_none() {
        faults.log(format!("wrote {written} MiB of ballast through node {entry}; node {victim} stopped"));
        return;
    }
    // Its storage should have failed by now: what the node said of it goes in the report.
    faults.log(format!("wrote {written} MiB of ballast through node {entry}; node {victim} still running"));
    let log = cluster.node(victim).config_path.with_file_name("umsd.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).rev().take(3) {
        faults.log(format!("node {victim}: {}", line.chars().take(300).collect::<String>()));
    }
}

/// A node's own replica of a mailbox as `(UID, drill reference)`: the client reference
/// of an HTTP append, the `X-UMS-Drill-Ref` header of mail that came in over SMTP.
fn replica_refs(cluster: &Cluster, id: u64, user: &str) -> Option<Vec<(u64, String)>> {
    let path = format!("/api/v1/users/{user}/messages?local=true&limit=10000&bodies=true");
    let body: serde_json::Value = match cluster.get(id, &path).timeout(Duration::from_secs(10)).call() {
        Ok(response) => response.into_json().ok()?,
        Err(ureq::Error::Status(404, _)) => return Some(Vec::new()),
        Err(_) => return None,
    };
    let reference = |m: &serde_json::Value| {
        let client_ref = m["client_ref"].as_str().unwrap_or_default();
        if !client_ref.starts_with("smtp:") {
            return client_ref.to_string();
        }
        let text = m["body"].as_str().unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("X-UMS-Drill-Ref: ")).unwrap_or(client_ref).trim().to_string()
    };
    Some(body["messages"].as_array()?.iter().map(|m| (m["uid"].as_u64().unwrap_or(0), reference(m))).collect())
}

/// Waits until every replica of each user agrees, then returns them all: the replicas
/// on the nodes its shard's leader names (those this drill knows), or every node's.
fn read_replicas(cluster: &Cluster, users: &[(String, u64)]) -> anyhow::Result<Observed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut observed = Observed::new();
    let placement = crate::placement::holders(cluster);
    for (user, shard) in users {
        let holders: Vec<u64> = placement
            .get(shard)
            .map(|h| h.iter().copied().filter(|id| cluster.ids().contains(id)).collect())
            .filter(|h: &Vec<u64>| !h.is_empty())
            .unwrap_or_else(|| cluster.ids());
        loop {
            let lists: Vec<Option<Vec<(u64, String)>>> =
                holders.iter().map(|&id| replica_refs(cluster, id, user)).collect();
            let settled = lists.iter().all(Option::is_some) && lists.windows(2).all(|w| w[0] == w[1]);
            if settled || Instant::now() > deadline {
                // After the deadline, record what is there: the checker reports divergence.
                for (&id, list) in holders.iter().zip(lists) {
                    observed.insert((user.clone(), id), list.unwrap_or_default());
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(observed)
}

fn report(
    scenario: &str,
    options: &DrillOptions,
    history: Vec<Operation>,
    observed: &Observed,
    faults: Vec<FaultEvent>,
    isolations: &[Isolation],
) -> DrillReport {
    let seed = options.seed;
    let mut verdict = checker::check(&history, observed, options.stall_ms);
    verdict.isolated_acks = checker::acks_while_isolated(&history, isolations);
    let mut durations: Vec<u64> = verdict.windows.iter().map(|w| w.duration_ms()).collect();
    let unavailability_ms = Percentiles {
        windows: durations.len(),
        p50: checker::quantile(&mut durations, 0.5),
        p99: checker::quantile(&mut durations, 0.99),
        max: durations.iter().copied().max().unwrap_or(0),
    };
    let recovery_ms = faults.first().map(|first| {
        verdict.windows.iter().filter(|w| w.end_ms >= first.at_ms).map(|w| w.end_ms - first.at_ms).max().unwrap_or(0)
    });
    let passed = verdict.violations() == 0 && verdict.windows.iter().all(|w| w.recovered);
    let phases = phases(&history, &faults);
    DrillReport {
        scenario: scenario.to_string(),
        seed,
        faults,
        verdict,
        outbound: OutboundVerdict::default(),
        unavailability_ms,
        recovery_ms,
        phases,
        membership: None,
        site_loss: None,
        passed,
    }
}

/// The human-readable report.
pub fn print(report: &DrillReport) {
    let v = &report.verdict;
    println!("\n== {} (seed {}) ==", report.scenario, report.seed);
    println!(
        "  operations {:>6}   acknowledged {:>6}   failed {:>4}   unknown {:>4} ({} of them applied)",
        v.operations, v.acknowledged, v.failed, v.unknown, v.unknown_applied
    );
    println!(
        "  lost acknowledged: {:>3}   duplicates: {:>3}   UID violations: {:>3}   divergent replicas: {:>3}   acked while isolated: {:>3}",
        v.lost.len(),
        v.duplicates.len(),
        v.uid_violations.len(),
        v.divergent.len(),
        v.isolated_acks.len()
    );
    let o = &report.outbound;
    println!(
        "  outbound webhooks: queued {}   delivered {}   never delivered: {:>3}   duplicated: {:>3}   redelivered under the same key (at-least-once): {}",
        o.queued,
        o.delivered,
        o.undelivered.len(),
        o.duplicated.len(),
        o.redelivered
    );
    for line in v.violation_lines().chain(o.violation_lines()).take(20) {
        println!("    ! {line}");
    }
    let u = &report.unavailability_ms;
    println!("  unavailability per shard: {} windows, p50 {} ms, p99 {} ms, max {} ms", u.windows, u.p50, u.p99, u.max);
    if let Some(recovery) = report.recovery_ms {
        println!("  recovery after the first fault: {recovery} ms");
    }
    for phase in &report.phases {
        println!(
            "  {:<6} ({:>5.1}-{:>5.1}s): {:>6.0} acknowledged writes/s, latency p50 {} ms, p99 {} ms",
            phase.name,
            phase.from_ms as f64 / 1000.0,
            phase.to_ms as f64 / 1000.0,
            phase.acknowledged_per_s,
            phase.latency_p50_ms,
            phase.latency_p99_ms
        );
    }
    if let Some(loss) = &report.site_loss {
        println!(
            "  site loss of nodes {:?}: recovery point {} entries / {:.3} s just before; promotion reported up to {} ms lost; promoted {} ms after the loss",
            loss.lost_nodes,
            loss.rpo_before_loss_entries,
            loss.rpo_before_loss_seconds,
            loss.reported_rpo_ms,
            loss.promoted_after_ms
        );
        let rto =
            loss.rto_ms.map_or("never (no write acknowledged on the promoted site)".into(), |ms| format!("{ms} ms"));
        let oldest = loss
            .oldest_missing_before_loss_ms
            .map_or(String::new(), |ms| format!(", the oldest acknowledged {ms} ms before the loss"));
        println!("  RTO (loss to the first write acknowledged on the promoted site): {rto}");
        println!("  acknowledged but missing after the promotion: {}{oldest}", loss.missing_acknowledged);
    }
    match &report.membership {
        None => println!("  membership: every shard led, on its target voters, not joint"),
        Some(unsettled) => println!("    ! membership not settled: {unsettled}"),
    }
    println!("  {}", if report.passed { "PASSED" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    #[test]
    fn phases_cut_the_history_at_the_first_and_last_fault() {
        let op = |id: u64, invoked_ms: u64, latency: u64| Operation {
            id,
            user: "u".into(),
            shard: 1,
            client_ref: id.to_string(),
            node: 1,
            invoked_ms,
            completed_ms: invoked_ms + latency,
            outcome: Outcome::Ok { uid: id },
        };
        let history: Vec<Operation> =
            (0..30).map(|i| op(i, i * 100, if (10..20).contains(&i) { 50 } else { 5 })).collect();
        let event = |at_ms| FaultEvent { at_ms, what: "x".into() };
        let cut = phases(&history, &[event(1000), event(2000)]);
        let names: Vec<&str> = cut.iter().map(|p| p.name).collect();
        assert_eq!(names, ["before", "during", "after"]);
        assert_eq!(cut[0].acknowledged_per_s, 10.0);
        assert_eq!((cut[0].latency_p99_ms, cut[1].latency_p99_ms, cut[2].latency_p99_ms), (5, 50, 5));
        assert!(phases(&history, &[]).is_empty());
    }
}
