//! Pure: the backup core's recovery point from every shard's leader view: per shard,
//! what its backup-site learners lack of the committed log (entries, and the age of the
//! oldest entry they lack), and the worst shard, which is what losing the primary site
//! right now would lose at most. And the plan of a promotion after the primary site is
//! lost: per group, the most advanced backup replica, which recovers it alone.

use consensus::NodeId;
use serde::Serialize;

use crate::cluster::ShardView;
use crate::driver::is_backup;
use crate::proto::peer::LogEnd;
use crate::proto::state::NodeRecord;
use crate::proto::state::node_record::State;

/// One shard's recovery point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardRpo {
    pub shard: u64,
    pub leader: Option<NodeId>,
    /// Backup nodes holding a replica (learners, as the leader applied them).
    pub backup_replicas: Vec<NodeId>,
    /// Up backup nodes that hold no replica yet (being seeded, or not reached).
    pub missing: Vec<NodeId>,
    /// Most committed entries the best-placed backup replica lacks (`None`: no backup
    /// replica, or no leader answered).
    pub entries: Option<u64>,
    /// Age in seconds of the oldest committed entry that best replica lacks.
    pub seconds: Option<f64>,
}

/// The whole backup core.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpoReport {
    pub backup_nodes: Vec<NodeId>,
    pub shards: Vec<ShardRpo>,
    /// Shards no backup replica can stand in for (none yet, or no leader answered).
    pub uncovered: Vec<u64>,
    /// The largest figures over the covered shards.
    pub worst_entries: u64,
    pub worst_seconds: f64,
    /// The shard with the largest age (then entries).
    pub worst_shard: Option<u64>,
}

/// The report for `views` (every group, as [`crate::cluster::Cluster::shard_views`]
/// answers) given the cluster's node records. A promotion takes, per shard, the most
/// advanced backup replica, so a shard's figure is its best backup replica's lag.
pub fn report(nodes: &[NodeRecord], views: &[ShardView]) -> RpoReport {
    let backup_nodes: Vec<NodeId> =
        nodes.iter().filter(|n| is_backup(n) && n.state() == State::Up).map(|n| n.id).collect();
    let shards: Vec<ShardRpo> = views
        .iter()
        .map(|view| {
            let state = view.state.as_ref();
            let learners = state.map(|s| s.learners.clone()).unwrap_or_default();
            let backup_replicas: Vec<NodeId> = learners.iter().copied().filter(|l| backup_nodes.contains(l)).collect();
            let missing = backup_nodes.iter().copied().filter(|b| !learners.contains(b)).collect();
            let best = state.and_then(|s| {
                s.learner_lags.iter().filter(|l| backup_replicas.contains(&l.node)).map(|l| (l.age_ms, l.entries)).min()
            });
            ShardRpo {
                shard: view.group,
                leader: state.map(|s| s.leader),
                backup_replicas,
                missing,
                entries: best.map(|(_, entries)| entries),
                seconds: best.map(|(age_ms, _)| age_ms as f64 / 1000.0),
            }
        })
        .collect();
    let uncovered = shards.iter().filter(|s| s.entries.is_none()).map(|s| s.shard).collect();
    let worst = shards
        .iter()
        .filter_map(|s| Some((s.seconds?, s.entries?, s.shard)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    RpoReport {
        backup_nodes,
        worst_entries: shards.iter().filter_map(|s| s.entries).max().unwrap_or(0),
        worst_seconds: worst.map_or(0.0, |w| w.0),
        worst_shard: worst.map(|w| w.2),
        shards,
        uncovered,
    }
}

/// One group's part of a promotion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupPromotion {
    pub group: u64,
    /// The backup replica with the most of the log (highest last term, then index): it
    /// recovers the group as its sole voter, every entry it holds kept.
    pub chosen: NodeId,
    pub last_index: u64,
    /// The other backup replicas: dropped, then added back from the new leader.
    pub others: Vec<NodeId>,
    /// Age in seconds of the newest entry the chosen replica holds: whatever the lost
    /// primary committed in that time before its loss is gone.
    pub newest_entry_age_seconds: Option<f64>,
    /// The leader's wall clock (ms since the epoch) when it proposed that newest entry:
    /// everything acknowledged before that instant is kept.
    pub newest_entry_ms: Option<u64>,
}

/// What a promotion would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromotionPlan {
    pub backup_nodes: Vec<NodeId>,
    pub groups: Vec<GroupPromotion>,
    /// Groups no backup node holds: their data is lost with the primary site.
    pub uncovered: Vec<u64>,
}

/// The plan for groups `0..=shards` from each backup node's log ends (meta group first,
/// so the cluster's records can be rewritten before the shards move).
pub fn plan_promotion(backup_nodes: &[NodeId], ends: &[(NodeId, LogEnd)], shards: u64, now_ms: u64) -> PromotionPlan {
    let mut groups = Vec::new();
    let mut uncovered = Vec::new();
    for group in 0..=shards {
        let holders: Vec<&(NodeId, LogEnd)> = ends.iter().filter(|(_, end)| end.group == group).collect();
        let Some((chosen, end)) =
            holders.iter().max_by_key(|(node, end)| (end.last_term, end.last_index, std::cmp::Reverse(*node)))
        else {
            uncovered.push(group);
            continue;
        };
        groups.push(GroupPromotion {
            group,
            chosen: *chosen,
            last_index: end.last_index,
            others: holders.iter().map(|(node, _)| *node).filter(|n| n != chosen).collect(),
            newest_entry_age_seconds: (end.newest_stamp_ms > 0)
                .then(|| now_ms.saturating_sub(end.newest_stamp_ms) as f64 / 1000.0),
            newest_entry_ms: (end.newest_stamp_ms > 0).then_some(end.newest_stamp_ms),
        });
    }
    PromotionPlan { backup_nodes: backup_nodes.to_vec(), groups, uncovered }
}

/// The `site` label a promotion gives the primary nodes it removes: the machines a
/// reseed turns into the new backup site.
pub const LOST_SITE: &str = "lost";

/// The new records a reseed makes: per lost node (those named, or every removed node a
/// promotion labelled [`LOST_SITE`]), a node at the same addresses with its labels and
/// `site = backup`, for the cluster to give a new id (ids are never reused). An error
/// says why a named node cannot be reseeded, or that there is none.
pub fn plan_reseed(nodes: &[NodeRecord], named: &[NodeId]) -> Result<Vec<(NodeId, NodeRecord)>, String> {
    let lost = |n: &&NodeRecord| n.labels.get("site").is_some_and(|site| site == LOST_SITE);
    let chosen: Vec<&NodeRecord> = if named.is_empty() {
        nodes.iter().filter(|n| n.state() == State::Removed).filter(lost).collect()
    } else {
        let mut chosen = Vec::new();
        for id in named {
            let node = nodes.iter().find(|n| n.id == *id).ok_or_else(|| format!("there is no node {id}"))?;
            if node.state() != State::Removed {
                return Err(format!("node {id} is {}: only a removed node is reseeded", node.state().as_str_name()));
            }
            chosen.push(node);
        }
        chosen
    };
    let mut planned = Vec::new();
    for old in chosen {
        let live = nodes.iter().find(|n| n.state() != State::Removed && n.peer == old.peer);
        match live {
            Some(_) if named.is_empty() => continue, // reseeded already
            Some(live) => return Err(format!("node {}'s address {} is node {}'s now", old.id, old.peer, live.id)),
            None => {}
        }
        let mut labels = old.labels.clone();
        labels.insert("site".into(), crate::driver::BACKUP_SITE.into());
        let record = NodeRecord { id: 0, peer: old.peer.clone(), http: old.http.clone(), labels, ..Default::default() };
        planned.push((old.id, record));
    }
    if planned.is_empty() {
        return Err(format!(
            "no lost node to reseed: a promotion labels the primary nodes it removes site={LOST_SITE} (name others by id)"
        ));
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer::{GroupState, LearnerLag};
    use crate::proto::state::ShardTarget;

    fn node(id: NodeId, site: Option<&str>) -> NodeRecord {
        let labels = site.map(|s| [("site".to_string(), s.to_string())].into()).unwrap_or_default();
        NodeRecord { id, labels, ..Default::default() }
    }

    fn view(group: u64, learners: &[(NodeId, u64, u64)]) -> ShardView {
        let state = GroupState {
            group,
            leader: 1,
            voters: vec![1, 2, 3],
            learners: learners.iter().map(|l| l.0).collect(),
            learner_lags: learners
                .iter()
                .map(|&(node, entries, age_ms)| LearnerLag { node, entries, age_ms })
                .collect(),
            ..Default::default()
        };
        let target = ShardTarget { shard: group, voters: vec![1, 2, 3], learners: vec![4, 5], ..Default::default() };
        ShardView::new(group, Some(state), Some(&target))
    }

    #[test]
    fn a_promotion_takes_the_most_advanced_backup_replica_of_each_group() {
        let end =
            |group, last_term, last_index, newest_stamp_ms| LogEnd { group, last_term, last_index, newest_stamp_ms };
        let ends = [
            (4, end(0, 7, 100, 9_000)),
            (5, end(0, 7, 90, 8_000)),
            (4, end(1, 6, 50, 0)), // a longer log of an older term loses
            (5, end(1, 7, 40, 9_500)),
            (5, end(2, 3, 10, 9_900)),
        ];
        let plan = plan_promotion(&[4, 5], &ends, 3, 10_000);
        let picks: Vec<(u64, NodeId, u64, Vec<NodeId>)> =
            plan.groups.iter().map(|g| (g.group, g.chosen, g.last_index, g.others.clone())).collect();
        assert_eq!(picks, [(0, 4, 100, vec![5]), (1, 5, 40, vec![4]), (2, 5, 10, vec![])]);
        assert_eq!(plan.groups[0].newest_entry_age_seconds, Some(1.0));
        assert_eq!(plan.uncovered, [3]);
    }

    #[test]
    fn each_shard_counts_its_best_backup_replica_and_the_worst_shard_is_named() {
        let nodes =
            [node(1, None), node(2, None), node(3, Some("primary")), node(4, Some("backup")), node(5, Some("backup"))];
        let views = [
            view(0, &[(4, 0, 0), (5, 0, 0)]),
            view(1, &[(4, 30, 1_500), (5, 2, 200)]), // node 5 is nearly there: it counts
            view(2, &[(4, 7, 900)]),                 // node 5 still being seeded
            view(3, &[]),
            ShardView::new(4, None, None), // no leader answered
        ];
        let report = report(&nodes, &views);
        assert_eq!(report.backup_nodes, [4, 5]);
        assert_eq!((report.shards[1].entries, report.shards[1].seconds), (Some(2), Some(0.2)));
        assert_eq!(report.shards[2].missing, [5]);
        assert_eq!(report.uncovered, [3, 4]);
        assert_eq!((report.worst_entries, report.worst_seconds, report.worst_shard), (7, 0.9, Some(2)));
    }

    #[test]
    fn a_reseed_records_the_lost_nodes_again_as_backup_nodes_once() {
        let mut nodes =
            vec![node(1, Some(LOST_SITE)), node(2, Some(LOST_SITE)), node(3, None), node(4, Some("primary"))];
        for (i, n) in nodes.iter_mut().enumerate() {
            n.peer = format!("10.0.0.{}:7100", i + 1);
            n.http = format!("10.0.0.{}:7180", i + 1);
            n.set_state(if i < 3 { State::Removed } else { State::Up });
        }
        nodes[0].labels.insert("zone".into(), "a".into());
        let planned = plan_reseed(&nodes, &[]).unwrap();
        let olds: Vec<NodeId> = planned.iter().map(|(old, _)| *old).collect();
        assert_eq!(olds, [1, 2], "the nodes the promotion lost, not one removed otherwise");
        let first = &planned[0].1;
        assert_eq!((first.id, first.peer.as_str(), first.labels["site"].as_str()), (0, "10.0.0.1:7100", "backup"));
        assert_eq!(first.labels["zone"], "a");
        assert_eq!(plan_reseed(&nodes, &[3]).unwrap()[0].0, 3, "a removed node named by id");
        assert!(plan_reseed(&nodes, &[4]).unwrap_err().contains("only a removed node"));
        assert!(plan_reseed(&nodes, &[9]).unwrap_err().contains("no node 9"));
        // Once node 1 is back as node 5, it is not reseeded again.
        let mut again = nodes.clone();
        again.push(NodeRecord { id: 5, peer: "10.0.0.1:7100".into(), ..node(5, Some("backup")) });
        assert_eq!(plan_reseed(&again, &[]).unwrap().len(), 1);
        assert!(plan_reseed(&again, &[1]).unwrap_err().contains("node 5's now"));
        again.push(NodeRecord { id: 6, peer: "10.0.0.2:7100".into(), ..node(6, Some("backup")) });
        assert!(plan_reseed(&again, &[]).unwrap_err().contains("no lost node"));
    }
}
