//! Promotion of the backup site after the primary site is lost (unsafe recovery, as
//! TiKV's Online Unsafe Recovery does it): every backup node reports where its replicas'
//! logs end; per group, the most advanced backup replica becomes the group's sole voter
//! with everything it holds kept, and the other backup replicas are dropped and added
//! back by the new leader from a snapshot. The meta group goes first; once it leads
//! again, the lost primary nodes are recorded as removed (so a primary node that comes
//! back with its old data is refused by every peer and stops), the backup nodes become
//! `site = primary`, and every group's target names the backup nodes as its voters.
//! Later, `reseed` records the lost machines again as a new backup site.

use std::collections::BTreeMap;
use std::time::Duration;

use consensus::{GroupId, NodeId, ProposeError, Target};
use prost::Message as _;

use super::{Cluster, ServiceError};
use crate::backup_core::{PromotionPlan, plan_promotion};
use crate::clock::now_ms;
use crate::driver::is_backup;
use crate::placement::META_GROUP;
use crate::proto::peer::{LogEnd, LogEnds, RecoverGroup, forward_request};
use crate::proto::state::node_record::State;
use crate::proto::state::{NodeRecord, SetNodeLabels, command};

/// How long a promotion waits for a recovered group to have its leader.
const LEADER_WAIT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Where every replica's log on this node ends.
    pub(super) async fn log_ends_here(&self) -> Vec<LogEnd> {
        self.raft.log_ends().await
    }

    /// One group's recovery step on this node (see [`RecoverGroup`]); answers the index.
    pub(super) async fn recover_here(&self, group: GroupId, step: RecoverGroup) -> Result<u64, ProposeError> {
        self.raft.recover(group, step.sole_voter, step.recovered_at).await.map_err(ProposeError::Invalid)
    }

    async fn log_ends_of(&self, node: NodeId) -> Result<Vec<LogEnd>, ServiceError> {
        if node == self.node_id {
            return Ok(self.log_ends_here().await);
        }
        let bytes = self
            .forward(node, META_GROUP, forward_request::Body::LogEnds(true))
            .await
            .map_err(|e| ServiceError::Unavailable(format!("backup node {node} did not answer: {e}")))?;
        Ok(LogEnds::decode(bytes.as_slice()).map_err(|e| ServiceError::Internal(e.to_string()))?.ends)
    }

    async fn recover_on(&self, node: NodeId, group: GroupId, step: RecoverGroup) -> Result<u64, ServiceError> {
        let failed = |e: ProposeError| ServiceError::Internal(format!("node {node}, shard {group}: {e}"));
        if node == self.node_id {
            return self.recover_here(group, step).await.map_err(failed);
        }
        let bytes = self.forward(node, group, forward_request::Body::Recover(step)).await.map_err(failed)?;
        Ok(LogEnd::decode(bytes.as_slice()).map_err(|e| ServiceError::Internal(e.to_string()))?.last_index)
    }

    /// The backup and the primary nodes that are not removed; `local` reads this node's
    /// replica of the meta group (which has no leader once the primary site is gone).
    pub(super) async fn sites(&self, local: bool) -> Result<(Vec<NodeRecord>, Vec<NodeRecord>), ServiceError> {
        let nodes = self.nodes(local).await?;
        let (backup, primary): (Vec<NodeRecord>, Vec<NodeRecord>) =
            nodes.into_iter().filter(|n| n.state() != State::Removed).partition(is_backup);
        Ok((backup, primary))
    }

    /// What a promotion would do now, or why it must not run: no backup site, a backup
    /// node unreachable, or (unless `force`) a primary node still reachable.
    pub async fn promotion_plan(&self, force: bool) -> Result<PromotionPlan, ServiceError> {
        Ok(self.plan_with_sites(force).await?.0)
    }

    /// [`Cluster::promotion_plan`] with the sites' records it was made from.
    async fn plan_with_sites(
        &self,
        force: bool,
    ) -> Result<(PromotionPlan, Vec<NodeRecord>, Vec<NodeRecord>), ServiceError> {
        let (backup, primary) = self.sites(true).await?;
        if backup.is_empty() {
            return Err(ServiceError::Conflict(
                "no node is labelled site=backup: there is no backup site to promote (was it promoted already?)".into(),
            ));
        }
        let reachable: Vec<NodeId> =
            primary.iter().map(|n| n.id).filter(|&id| id == self.node_id || self.is_reachable(id)).collect();
        if !force && !reachable.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "primary node(s) {reachable:?} are still reachable: promoting now would leave two sites taking writes; \
                 stop them first, or pass force if they are truly lost to their clients"
            )));
        }
        let mut ends = Vec::new();
        for node in &backup {
            if node.id != self.node_id && !self.is_reachable(node.id) {
                return Err(ServiceError::Unavailable(format!(
                    "backup node {} is unreachable; retry when it is up",
                    node.id
                )));
            }
            ends.extend(self.log_ends_of(node.id).await?.into_iter().map(|end| (node.id, end)));
        }
        let ids: Vec<NodeId> = backup.iter().map(|n| n.id).collect();
        Ok((plan_promotion(&ids, &ends, self.shards, now_ms()), backup, primary))
    }

    /// Promotes the backup site (see the module docs); returns the plan it carried out.
    /// Groups no backup node holds are refused unless `force` (their data is gone).
    pub async fn promote_backup_site(&self, force: bool) -> Result<PromotionPlan, ServiceError> {
        let (plan, backup, primary) = self.plan_with_sites(force).await?;
        if !plan.uncovered.is_empty() && !force {
            return Err(ServiceError::Conflict(format!(
                "shards {:?} have no backup replica: promoting loses them entirely; pass force to go on",
                plan.uncovered
            )));
        }
        for group in &plan.groups {
            let at =
                self.recover_on(group.chosen, group.group, RecoverGroup { sole_voter: true, recovered_at: 0 }).await?;
            for &other in &group.others {
                self.recover_on(other, group.group, RecoverGroup { sole_voter: false, recovered_at: at }).await?;
            }
            // Route to the new sole voter at once (the membership task learns it within
            // half a second; until then the lost voters would make this node look cut off).
            self.replicas_of.write().expect("replicas").insert(group.group, vec![group.chosen]);
            if group.group == META_GROUP {
                self.wait_for_leader(META_GROUP).await?;
                self.record_promotion(&plan, &backup, &primary).await?;
            }
            tracing::warn!(
                shard = group.group,
                node = group.chosen,
                index = at,
                "promotion: group recovered on the backup site"
            );
        }
        Ok(plan)
    }

    async fn wait_for_leader(&self, group: GroupId) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while self.raft.leader(group).is_none() {
            if tokio::time::Instant::now() > deadline {
                return Err(ServiceError::Unavailable(format!("shard {group} elected no leader after its recovery")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Records `node`'s `site` label as `site`, its other labels kept.
    async fn set_site(&self, node: &NodeRecord, site: &str) -> Result<(), ServiceError> {
        let mut labels = node.labels.clone();
        labels.insert("site".into(), site.into());
        let op = command::Op::SetNodeLabels(SetNodeLabels { id: node.id, labels, changed_ms: now_ms() });
        self.propose(META_GROUP, op).await.map(drop)
    }

    /// After a promotion: records the lost primary nodes (or those `named`) again, at
    /// their addresses, as new backup-site nodes with new ids; started there with
    /// fresh data and `join = true`, each gets a learner of every group. The old ids
    /// stay removed. Returns (old id, new record) pairs.
    pub async fn reseed(&self, named: &[NodeId]) -> Result<Vec<(NodeId, NodeRecord)>, ServiceError> {
        let nodes = self.nodes(false).await?;
        let planned = crate::backup_core::plan_reseed(&nodes, named).map_err(ServiceError::Conflict)?;
        let mut added = Vec::new();
        for (old, record) in planned {
            added.push((old, self.add_node(record, 0).await?));
        }
        Ok(added)
    }

    /// In the recovered meta group: the primary nodes removed (labelled `site = lost`),
    /// the backup nodes the new primary, and every group's voters the backup nodes (its recovering replica the
    /// preferred leader).
    async fn record_promotion(
        &self,
        plan: &PromotionPlan,
        backup: &[NodeRecord],
        primary: &[NodeRecord],
    ) -> Result<(), ServiceError> {
        for node in primary {
            self.set_node_state(node.id, State::Removed).await?;
            // What a reseed later turns into the new backup site.
            self.set_site(node, crate::backup_core::LOST_SITE).await?;
        }
        for node in backup {
            self.set_site(node, "primary").await?;
        }
        let versions: BTreeMap<GroupId, u64> =
            self.shard_targets(false).await?.into_iter().map(|t| (t.shard, t.changed_ms)).collect();
        let voters: Vec<NodeId> = backup.iter().map(|n| n.id).collect();
        for group in &plan.groups {
            let version = versions.get(&group.group).copied().unwrap_or(0);
            let target = Target::voters(voters.iter().copied());
            self.set_shard_target(group.group, target, Some(group.chosen), version).await?;
        }
        Ok(())
    }
}
