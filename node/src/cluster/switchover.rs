//! Planned switchover (maintenance, drills): the backup site becomes the primary and the
//! primary the backup, without losing an acknowledged write. Once every backup replica
//! is caught up, the sites' labels are swapped and every group's target names the old
//! backup nodes as voters and the old primary nodes as standing learners; each group's
//! leader then moves it there with joint consensus (a learner promoted as a voter is
//! demoted in one step, leadership handed over first), so writes pause only for the
//! leadership hand-overs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use consensus::{NodeId, Target};
use serde::Serialize;

use super::{Cluster, ServiceError};
use crate::clock::now_ms;
use crate::placement::META_GROUP;
use crate::proto::state::{SetNodeLabels, command};

/// Entries a backup replica may still lack when the switch starts (the joint steps
/// wait for it to be within this of the leader anyway).
const CAUGHT_UP_ENTRIES: u64 = 64;
/// How often the switchover looks at every group while it waits.
const POLL: Duration = Duration::from_millis(100);

/// What a switchover did.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchoverReport {
    /// The new primary site (the old backup nodes) and the new backup site.
    pub primary: Vec<NodeId>,
    pub backup: Vec<NodeId>,
    pub groups: usize,
    /// From the label swap until every group was on its new membership.
    pub seconds: f64,
    /// Waiting for the backup to catch up, before the switch.
    pub catch_up_seconds: f64,
    /// The longest time any group was seen without a leader (looked at every 100 ms).
    pub longest_leaderless_ms: u64,
}

impl Cluster {
    /// Swaps the sites (see the module docs); gives up after `limit`.
    pub async fn switchover(&self, limit: Duration) -> Result<SwitchoverReport, ServiceError> {
        let started = Instant::now();
        let (backup, primary) = self.sites(false).await?;
        if backup.is_empty() {
            return Err(ServiceError::Conflict("no node is labelled site=backup: there is no backup site".into()));
        }
        if let Some(down) = backup.iter().chain(&primary).find(|n| n.id != self.node_id && !self.is_reachable(n.id)) {
            return Err(ServiceError::Unavailable(format!(
                "node {} is unreachable: a switchover needs both sites up (after a site loss, promote instead)",
                down.id
            )));
        }
        let (new_primary, new_backup): (Vec<NodeId>, Vec<NodeId>) =
            (backup.iter().map(|n| n.id).collect(), primary.iter().map(|n| n.id).collect());
        self.wait_until_backup_caught_up(&new_primary, started + limit).await?;
        let catch_up_seconds = started.elapsed().as_secs_f64();

        let switch = Instant::now();
        for (node, site) in backup.iter().map(|n| (n, "primary")).chain(primary.iter().map(|n| (n, "backup"))) {
            let mut labels = node.labels.clone();
            labels.insert("site".into(), site.into());
            let op = command::Op::SetNodeLabels(SetNodeLabels { id: node.id, labels, changed_ms: now_ms() });
            self.propose(META_GROUP, op).await?;
        }
        let groups = self.shard_count() + 1;
        let mut versions = self.target_versions().await?;
        for group in 0..groups {
            let target = Target::new(new_primary.iter().copied(), new_backup.iter().copied());
            let preferred = new_primary[group as usize % new_primary.len()];
            self.overwrite_target(group, target, preferred, &mut versions).await?;
        }
        let longest_leaderless_ms = self.wait_until_switched(&new_primary, &new_backup, started + limit).await?;
        Ok(SwitchoverReport {
            primary: new_primary,
            backup: new_backup,
            groups: groups as usize,
            seconds: switch.elapsed().as_secs_f64(),
            catch_up_seconds,
            longest_leaderless_ms,
        })
    }

    /// Sets `group`'s target whatever it was: the placement driver may change it between
    /// our read and our write (it sees the swapped labels), so a conflict reads again.
    async fn overwrite_target(
        &self,
        group: u64,
        target: Target,
        preferred: NodeId,
        versions: &mut HashMap<u64, u64>,
    ) -> Result<(), ServiceError> {
        for _ in 0..10 {
            let version = versions.get(&group).copied().unwrap_or(0);
            match self.set_shard_target(group, target.clone(), Some(preferred), version).await {
                Err(ServiceError::Conflict(_)) => *versions = self.target_versions().await?,
                other => return other,
            }
        }
        Err(ServiceError::Conflict(format!("shard {group}'s target kept changing under the switchover; run it again")))
    }

    /// Every group's target version (`changed_ms`), for a compare-and-set.
    async fn target_versions(&self) -> Result<HashMap<u64, u64>, ServiceError> {
        Ok(self.shard_targets(false).await?.into_iter().map(|t| (t.shard, t.changed_ms)).collect())
    }

    /// Until every group has each of `backup` as a learner within a few entries.
    async fn wait_until_backup_caught_up(&self, backup: &[NodeId], deadline: Instant) -> Result<(), ServiceError> {
        loop {
            let views = self.shard_views().await;
            let behind = views.iter().find(|view| {
                let Some(state) = &view.state else { return true };
                backup.iter().any(|b| {
                    state.learner_lags.iter().find(|l| l.node == *b).is_none_or(|l| l.entries > CAUGHT_UP_ENTRIES)
                })
            });
            let Some(behind) = behind else { return Ok(()) };
            if Instant::now() > deadline {
                return Err(ServiceError::Unavailable(format!(
                    "shard {}'s backup replicas are not caught up; nothing was switched (umsctl backup-core status)",
                    behind.group
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Until every group is on its new membership; the longest leaderless stretch seen.
    async fn wait_until_switched(
        &self,
        voters: &[NodeId],
        learners: &[NodeId],
        deadline: Instant,
    ) -> Result<u64, ServiceError> {
        let mut leaderless_since: HashMap<u64, Instant> = HashMap::new();
        let mut longest = Duration::ZERO;
        loop {
            let views = self.shard_views().await;
            let now = Instant::now();
            for view in &views {
                if view.state.is_none() {
                    let since = *leaderless_since.entry(view.group).or_insert(now);
                    longest = longest.max(now - since);
                } else if let Some(since) = leaderless_since.remove(&view.group) {
                    longest = longest.max(now - since);
                }
            }
            let pending = views.iter().find(|view| {
                !view.state.as_ref().is_some_and(|s| s.voters == voters && s.learners == learners && view.settled())
            });
            let Some(pending) = pending else { return Ok(longest.as_millis() as u64) };
            if now > deadline {
                return Err(ServiceError::Unavailable(format!(
                    "shard {} is not on its new membership yet; the switch goes on in the background (umsctl shard list)",
                    pending.group
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
