//! The placement driver: on the meta group's leader, every `every_ms`, it looks at the
//! nodes and every shard (as their leaders see them) and records new shard targets
//! where [`policy`] says: replicas off draining nodes, replica counts repaired, counts
//! and leaders balanced, a few shards at a time. The shard leaders then carry the
//! moves out ([`consensus::reconfigure`]). `umsctl rebalance` runs a round on demand,
//! `--dry-run` only shows it.

pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use consensus::Target;

use crate::cluster::{Cluster, ShardView};
use crate::placement::META_GROUP;
use crate::proto::state::NodeRecord;
use crate::proto::state::node_record::State;
use policy::{NodeInfo, Plan, ShardInfo};

/// `[placement]` in `node.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriverSettings {
    /// Run rounds by itself (off: only `umsctl rebalance` moves anything).
    pub auto: bool,
    pub every_ms: u64,
    /// Shards moving at once, cluster-wide.
    pub max_in_flight: usize,
    /// Replica count difference between up nodes left alone.
    pub tolerance: usize,
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self { auto: true, every_ms: 2_000, max_in_flight: 4, tolerance: 1 }
    }
}

/// Starts the driver's loop on the current tokio runtime (it acts only while this node
/// leads the meta group).
pub fn start(cluster: Arc<Cluster>, settings: DriverSettings, replicas: usize) {
    if !settings.auto {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(settings.every_ms.max(100)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if cluster.raft().leader(META_GROUP) != Some(cluster.node_id()) {
                continue;
            }
            if let Err(e) = round(&cluster, &settings, replicas, true).await {
                warn!(error = %e, "placement round failed; retrying");
            }
        }
    });
}

/// One round: the plan, carried out when `apply`.
pub async fn round(
    cluster: &Cluster,
    settings: &DriverSettings,
    replicas: usize,
    apply: bool,
) -> Result<Plan, crate::cluster::ServiceError> {
    let nodes = cluster.nodes(false).await?;
    let views = cluster.shard_views().await;
    let plan = plan_for(&nodes, &views, settings, replicas);
    if apply {
        for change in &plan.changes {
            let version = views.iter().find(|v| v.group == change.group).map_or(0, |v| v.target_changed_ms);
            let target = Target::new(change.voters.iter().copied(), change.learners.iter().copied());
            let set = cluster.set_shard_target(change.group, target, change.preferred_leader, version);
            match set.await {
                Ok(()) => {}
                // Someone (an operator's move) changed it since we looked: next round.
                Err(crate::cluster::ServiceError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            if !change.why.starts_with("spread") {
                info!(shard = change.group, voters = ?change.voters, "placement: {}", change.why);
            }
        }
    }
    Ok(plan)
}

/// The label value that puts a node in the backup site.
pub const BACKUP_SITE: &str = "backup";

/// Whether `node` is of the backup site (its `site` label).
pub fn is_backup(node: &NodeRecord) -> bool {
    node.labels.get("site").is_some_and(|site| site == BACKUP_SITE)
}

/// The pure policy's view of what the cluster answered.
pub fn plan_for(nodes: &[NodeRecord], views: &[ShardView], settings: &DriverSettings, replicas: usize) -> Plan {
    let nodes: Vec<NodeInfo> = nodes
        .iter()
        .map(|n| NodeInfo {
            id: n.id,
            up: n.state() == State::Up,
            zone: n.labels.get("zone").cloned(),
            backup: is_backup(n),
        })
        .collect();
    let shards: Vec<ShardInfo> = views
        .iter()
        .filter_map(|view| {
            let voters = view.target.clone().or_else(|| view.state.as_ref().map(|s| s.voters.clone()))?;
            let learners = match (&view.target, &view.state) {
                (None, Some(state)) => state.learners.clone(),
                _ => view.target_learners.clone(),
            };
            Some(ShardInfo {
                group: view.group,
                voters,
                learners,
                // No leader answered: leave it alone this round.
                moving: view.state.is_none() || !view.settled(),
                leader: view.state.as_ref().map(|s| s.leader),
                preferred_leader: view.preferred_leader,
            })
        })
        .collect();
    let settings = policy::Settings { replicas, tolerance: settings.tolerance, max_in_flight: settings.max_in_flight };
    policy::plan(&nodes, &shards, &settings)
}
