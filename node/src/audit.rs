//! The node's audit writer. The API and the login check hand it records; a task appends
//! them to the meta group's audit log in batches (one proposal per batch, under a key of
//! its own, so a retried batch counts once). The queue is bounded and never waited on:
//! under a flood of refused logins the API keeps answering, and what did not fit is
//! counted (`ums_audit_dropped_total`) and said in the next record.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use consensus::NodeId;
use tokio::sync::mpsc;
use tracing::warn;

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::proto::state::AuditRecord;

/// Records waiting to be written, at most.
const QUEUE: usize = 10_000;
/// Records in one append, at most.
const BATCH: usize = 500;
/// How long a batch gathers records after its first.
const GATHER: Duration = Duration::from_millis(100);
/// How long a batch is retried (same key) before it is given up and counted as dropped.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What one audited event says.
pub struct AuditEvent<'a> {
    pub actor: &'a str,
    pub source: IpAddr,
    pub action: &'a str,
    pub result: u32,
    pub detail: &'a str,
}

pub struct AuditLog {
    node: NodeId,
    queue: mpsc::Sender<AuditRecord>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Starts the writer on the current tokio runtime.
    pub fn start(cluster: Arc<Cluster>) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let node = cluster.node_id();
        tokio::spawn(write_batches(cluster, receiver));
        Arc::new(Self { node, queue, dropped: AtomicU64::new(0) })
    }

    /// Queues a record; never waits.
    pub fn record(&self, event: AuditEvent<'_>) {
        let clip = |text: &str| text.chars().take(512).collect::<String>();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let mut detail = clip(event.detail);
        if dropped > 0 {
            detail = format!("{detail} ({dropped} earlier records dropped: the audit queue was full)");
        }
        let record = AuditRecord {
            seq: 0,
            at_ms: now_ms(),
            actor: clip(event.actor),
            source: event.source.to_string(),
            node: self.node,
            action: clip(event.action),
            result: event.result,
            detail,
        };
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            metrics::counter!("ums_audit_dropped_total").increment(1);
        }
    }
}

async fn write_batches(cluster: Arc<Cluster>, mut receiver: mpsc::Receiver<AuditRecord>) {
    let boot: u64 = rand::random();
    let node = cluster.node_id();
    for number in 1u64.. {
        let Some(first) = receiver.recv().await else { return };
        let mut batch = vec![first];
        let gathering = tokio::time::sleep(GATHER);
        tokio::pin!(gathering);
        while batch.len() < BATCH {
            tokio::select! {
                next = receiver.recv() => match next {
                    Some(record) => batch.push(record),
                    None => break,
                },
                () = &mut gathering => break,
            }
        }
        let key = format!("audit:{node}:{boot:016x}:{number}");
        let started = tokio::time::Instant::now();
        while let Err(e) = cluster.append_audit(batch.clone(), &key).await {
            if started.elapsed() > GIVE_UP_AFTER {
                warn!(node, records = batch.len(), error = %e, "audit records could not be written; dropped");
                metrics::counter!("ums_audit_dropped_total").increment(batch.len() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
