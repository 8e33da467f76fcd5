//! Pure placement policy: from the nodes and every shard's voters, the target changes
//! that repair, drain and balance the cluster, as PD's schedulers do it.
//!
//! One round, in order of urgency, while fewer than `max_in_flight` shards are moving:
//! 1. a voter on a draining or removed node is replaced by an up node;
//! 2. a shard with too few or too many voters gets one more or one fewer;
//! 3. while the most loaded up node holds more than `tolerance` replicas above the
//!    least loaded one, one replica moves from the first to the second.
//!
//! Counts include the moves in flight (a shard counts where its target puts it), a new
//! replica never lands on a node that has one of the shard already, and among
//! candidates the one in a zone the shard does not use yet wins, then the least loaded.
//! Preferred leaders are spread the same way: each shard's preferred leader is the up
//! voter leading fewest shards so far (its current leader when that is as good).
//!
//! Nodes of the backup site (`site = "backup"`) never hold voters: a voter there is
//! replaced like one on a draining node. Instead every up backup node is a standing
//! learner of every group, meta group included, so the backup site holds everything
//! the primary commits without adding a WAN round trip to any commit. Learner changes
//! are not counted against `max_in_flight`: each shard leader's own limit on learners
//! catching up at once (snapshots in flight) paces a new backup site.

use std::collections::{BTreeMap, BTreeSet};

use consensus::{GroupId, NodeId};

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Up: may take replicas. Draining or removed: its replicas move away.
    pub up: bool,
    pub zone: Option<String>,
    /// Of the backup site: holds standing learners only.
    pub backup: bool,
}

/// A shard as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub group: GroupId,
    /// Where it is heading (its target) or, without one, where it is.
    pub voters: Vec<NodeId>,
    /// Its standing learners, as its target or (without one) its membership says.
    pub learners: Vec<NodeId>,
    /// Its membership differs from the target, or it is joint or has learners.
    pub moving: bool,
    pub leader: Option<NodeId>,
    pub preferred_leader: Option<NodeId>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub replicas: usize,
    /// Replica count difference between up nodes that is left alone.
    pub tolerance: usize,
    /// Shards moving at once, cluster-wide.
    pub max_in_flight: usize,
}

/// A shard's new target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub group: GroupId,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub preferred_leader: Option<NodeId>,
    pub why: String,
}

/// What a round decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Draining nodes whose replicas cannot all move, and why.
    pub blocked: BTreeMap<NodeId, String>,
}

/// One round of placement (see the module docs).
pub fn plan(nodes: &[NodeInfo], shards: &[ShardInfo], settings: &Settings) -> Plan {
    let up: Vec<&NodeInfo> = nodes.iter().filter(|n| n.up && !n.backup).collect();
    let learners: Vec<NodeId> = sorted(nodes.iter().filter(|n| n.up && n.backup).map(|n| n.id));
    let mut voters: BTreeMap<GroupId, Vec<NodeId>> = shards.iter().map(|s| (s.group, s.voters.clone())).collect();
    let mut in_flight = shards.iter().filter(|s| s.moving).count();
    let mut moved: BTreeMap<GroupId, String> = BTreeMap::new();
    let mut blocked = BTreeMap::new();
    let zone_of = |id: NodeId| nodes.iter().find(|n| n.id == id).and_then(|n| n.zone.clone());

    // 1 and 2: repairs, shard by shard.
    for shard in shards {
        if in_flight >= settings.max_in_flight {
            break;
        }
        if shard.moving {
            continue;
        }
        let current = voters[&shard.group].clone();
        let leaving = current.iter().copied().find(|v| !up.iter().any(|n| n.id == *v));
        let change = if let Some(leaving) = leaving {
            match best_target(&up, &current, &voters, &zone_of) {
                Some(to) => {
                    Some((replace(&current, leaving, to), format!("node {leaving} is draining: {leaving} -> {to}")))
                }
                None => {
                    blocked.insert(leaving, no_room(shard.group, &current, up.len()));
                    None
                }
            }
        } else if current.len() < settings.replicas {
            best_target(&up, &current, &voters, &zone_of)
                .map(|to| (sorted(current.iter().copied().chain([to])), format!("too few replicas: add {to}")))
        } else if current.len() > settings.replicas {
            let from = most_loaded(&current, &voters, shard.leader);
            Some((current.iter().copied().filter(|&n| n != from).collect(), format!("too many replicas: drop {from}")))
        } else {
            None
        };
        if let Some((new, why)) = change {
            voters.insert(shard.group, new);
            moved.insert(shard.group, why);
            in_flight += 1;
        }
    }

    // 3: balance replica counts between up nodes.
    while in_flight < settings.max_in_flight && up.len() > 1 {
        let counts = replica_counts(&up, &voters);
        let (&most, &high) = counts.iter().max_by_key(|&(id, c)| (*c, std::cmp::Reverse(*id))).expect("up nodes");
        let (&least, &low) = counts.iter().min_by_key(|&(id, c)| (*c, *id)).expect("up nodes");
        if high <= low + settings.tolerance {
            break;
        }
        // A shard on the busiest node that the emptiest lacks, not moving, not the
        // emptiest's zone's second replica when avoidable; the highest group first.
        let candidate = shards.iter().rev().find(|s| {
            let v = &voters[&s.group];
            !s.moving && !moved.contains_key(&s.group) && v.contains(&most) && !v.contains(&least)
        });
        let Some(shard) = candidate else { break };
        let new = replace(&voters[&shard.group], most, least);
        voters.insert(shard.group, new);
        moved.insert(shard.group, format!("balance: {most} ({high} replicas) -> {least} ({low})"));
        in_flight += 1;
    }

    let leaders = spread_leaders(shards, &voters, &up);
    let changes = shards
        .iter()
        .filter_map(|s| {
            let new_voters = &voters[&s.group];
            let preferred = leaders.get(&s.group).copied();
            let why = moved.get(&s.group).cloned().or_else(|| {
                (s.learners != learners).then(|| format!("backup site: learners {:?} -> {learners:?}", s.learners))
            });
            (why.is_some() || preferred != s.preferred_leader).then(|| Change {
                group: s.group,
                voters: new_voters.clone(),
                learners: learners.clone(),
                preferred_leader: preferred,
                why: why.unwrap_or_else(|| "spread leaders".into()),
            })
        })
        .collect();
    Plan { changes, blocked }
}

fn no_room(group: GroupId, current: &[NodeId], up: usize) -> String {
    format!(
        "shard {group} (on {current:?}) has no up node left to move to: {} replicas need {} up nodes outside the drained one, and {up} are up; add a node or cancel the drain",
        current.len(),
        current.len()
    )
}

fn sorted(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let set: BTreeSet<NodeId> = ids.into_iter().collect();
    set.into_iter().collect()
}

fn replace(current: &[NodeId], from: NodeId, to: NodeId) -> Vec<NodeId> {
    sorted(current.iter().copied().filter(|&n| n != from).chain([to]))
}

fn replica_counts(up: &[&NodeInfo], voters: &BTreeMap<GroupId, Vec<NodeId>>) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = up.iter().map(|n| (n.id, 0)).collect();
    for v in voters.values().flatten() {
        if let Some(count) = counts.get_mut(v) {
            *count += 1;
        }
    }
    counts
}

/// The up node outside `current` to add: a zone the shard lacks first, then the fewest replicas.
fn best_target(
    up: &[&NodeInfo],
    current: &[NodeId],
    voters: &BTreeMap<GroupId, Vec<NodeId>>,
    zone_of: &impl Fn(NodeId) -> Option<String>,
) -> Option<NodeId> {
    let counts = replica_counts(up, voters);
    let zones: BTreeSet<Option<String>> = current.iter().map(|&n| zone_of(n)).collect();
    up.iter()
        .filter(|n| !current.contains(&n.id))
        .min_by_key(|n| (n.zone.is_some() && zones.contains(&n.zone), counts[&n.id], n.id))
        .map(|n| n.id)
}

/// The voter to drop: the most loaded, never the leader when another will do.
fn most_loaded(current: &[NodeId], voters: &BTreeMap<GroupId, Vec<NodeId>>, leader: Option<NodeId>) -> NodeId {
    let load = |id: NodeId| voters.values().filter(|v| v.contains(&id)).count();
    *current.iter().max_by_key(|&&n| (Some(n) != leader, load(n), n)).expect("a voter")
}

/// Each shard's preferred leader, spreading leadership over up voters.
fn spread_leaders(
    shards: &[ShardInfo],
    voters: &BTreeMap<GroupId, Vec<NodeId>>,
    up: &[&NodeInfo],
) -> BTreeMap<GroupId, NodeId> {
    let mut led: BTreeMap<NodeId, usize> = up.iter().map(|n| (n.id, 0)).collect();
    let mut preferred = BTreeMap::new();
    for shard in shards {
        let candidates: Vec<NodeId> = voters[&shard.group].iter().copied().filter(|v| led.contains_key(v)).collect();
        let fewest = candidates.iter().map(|c| led[c]).min();
        let Some(fewest) = fewest else { continue };
        // Keep the current preference (or the leader) when it is among the least loaded.
        let keep = [shard.preferred_leader, shard.leader]
            .into_iter()
            .flatten()
            .find(|c| candidates.contains(c) && led[c] == fewest);
        let choice = keep.unwrap_or_else(|| *candidates.iter().find(|c| led[c] == fewest).expect("a candidate"));
        *led.get_mut(&choice).expect("up") += 1;
        preferred.insert(shard.group, choice);
    }
    preferred
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, up: bool, zone: Option<&str>) -> NodeInfo {
        NodeInfo { id, up, zone: zone.map(str::to_string), backup: false }
    }

    fn shard(group: GroupId, voters: &[NodeId]) -> ShardInfo {
        ShardInfo {
            group,
            voters: voters.to_vec(),
            learners: Vec::new(),
            moving: false,
            leader: voters.first().copied(),
            preferred_leader: None,
        }
    }

    fn settings(max_in_flight: usize) -> Settings {
        Settings { replicas: 3, tolerance: 1, max_in_flight }
    }

    fn moves(plan: &Plan) -> Vec<(GroupId, Vec<NodeId>)> {
        plan.changes.iter().filter(|c| !c.why.starts_with("spread")).map(|c| (c.group, c.voters.clone())).collect()
    }

    /// Shards of 3 over nodes 1-3, as a 3-node cluster starts.
    fn three_node_shards(count: u64) -> Vec<ShardInfo> {
        (0..count).map(|g| shard(g, &[1, 2, 3])).collect()
    }

    #[test]
    fn a_new_node_receives_replicas_until_counts_are_within_the_tolerance() {
        let nodes: Vec<NodeInfo> = (1..=4).map(|id| node(id, true, None)).collect();
        let mut shards = three_node_shards(8);
        // Apply plans round after round as if each move finished at once.
        for _ in 0..10 {
            let plan = plan(&nodes, &shards, &settings(2));
            assert!(moves(&plan).len() <= 2, "rate limit: {plan:?}");
            for (group, voters) in moves(&plan) {
                shards[group as usize].voters = voters;
            }
        }
        let mut counts = BTreeMap::new();
        for s in &shards {
            assert_eq!(s.voters.len(), 3);
            for v in &s.voters {
                *counts.entry(*v).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [6, 6, 6, 6], "{counts:?}");
    }

    #[test]
    fn moves_in_flight_count_against_the_limit() {
        let nodes: Vec<NodeInfo> = (1..=4).map(|id| node(id, true, None)).collect();
        let mut shards = three_node_shards(8);
        shards[0].moving = true;
        shards[1].moving = true;
        assert!(moves(&plan(&nodes, &shards, &settings(2))).is_empty());
    }

    #[test]
    fn a_draining_node_loses_every_replica_and_a_drain_without_room_says_why() {
        let mut nodes: Vec<NodeInfo> = (1..=4).map(|id| node(id, true, None)).collect();
        nodes[3].up = false; // node 4 drains
        let shards = vec![shard(1, &[1, 2, 4]), shard(2, &[2, 3, 4]), shard(3, &[1, 2, 3])];
        let plan = plan(&nodes, &shards, &settings(8));
        assert_eq!(moves(&plan), vec![(1, vec![1, 2, 3]), (2, vec![1, 2, 3])]);
        assert!(plan.blocked.is_empty());

        // Three nodes, three replicas: node 3 cannot drain.
        let nodes = vec![node(1, true, None), node(2, true, None), node(3, false, None)];
        let plan = super::plan(&nodes, &[shard(1, &[1, 2, 3])], &settings(8));
        assert!(moves(&plan).is_empty());
        assert!(plan.blocked[&3].contains("no up node left"), "{plan:?}");
    }

    #[test]
    fn replicas_spread_over_zones_when_there_are_enough() {
        let nodes = vec![
            node(1, true, Some("a")),
            node(2, true, Some("a")),
            node(3, true, Some("b")),
            node(4, true, Some("c")),
            node(5, false, Some("a")),
        ];
        // Node 5 drains: its replacement must be in zone c (a and b are taken), not 2.
        let plan = plan(&nodes, &[shard(1, &[1, 3, 5])], &settings(8));
        assert_eq!(moves(&plan), vec![(1, vec![1, 3, 4])]);
    }

    #[test]
    fn replica_counts_are_repaired_and_never_doubled_on_a_node() {
        let nodes: Vec<NodeInfo> = (1..=4).map(|id| node(id, true, None)).collect();
        let shards = vec![shard(1, &[1, 2]), shard(2, &[1, 2, 3, 4])];
        let plan = plan(&nodes, &shards, &settings(8));
        let moved = moves(&plan);
        assert_eq!(moved[0].0, 1);
        assert_eq!(moved[0].1.len(), 3);
        assert_eq!(moved[1].0, 2);
        assert_eq!(moved[1].1.len(), 3);
        assert!(moved[1].1.contains(&1), "drops a follower, not the leader 1: {moved:?}");
        for (_, voters) in moved {
            assert_eq!(sorted(voters.clone()), voters, "no node twice");
        }
    }

    #[test]
    fn leaders_are_spread_over_up_voters() {
        let nodes: Vec<NodeInfo> = (1..=3).map(|id| node(id, true, None)).collect();
        let shards = three_node_shards(9);
        let plan = plan(&nodes, &shards, &settings(8));
        let mut led = BTreeMap::new();
        for change in &plan.changes {
            *led.entry(change.preferred_leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(led.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
        // Applied, the next round changes nothing.
        let settled: Vec<ShardInfo> = shards
            .iter()
            .zip(&plan.changes)
            .map(|(s, c)| ShardInfo { preferred_leader: c.preferred_leader, ..s.clone() })
            .collect();
        assert_eq!(super::plan(&nodes, &settled, &settings(8)), Plan::default());
    }

    #[test]
    fn backup_nodes_hold_a_learner_of_every_shard_and_no_voter() {
        let backup = |id, up| NodeInfo { backup: true, ..node(id, up, None) };
        let mut nodes: Vec<NodeInfo> = (1..=3).map(|id| node(id, true, None)).collect();
        nodes.extend([backup(4, true), backup(5, true)]);
        let mut shards = three_node_shards(6);
        shards[5].voters = vec![1, 2, 4]; // a voter on the backup site
        let plan = plan(&nodes, &shards, &settings(8));
        for change in &plan.changes {
            assert_eq!(change.learners, [4, 5], "{change:?}");
            assert!(!change.voters.contains(&4) && !change.voters.contains(&5), "{change:?}");
        }
        assert_eq!(plan.changes.len(), 6, "every shard gets the learners: {plan:?}");
        assert_eq!(plan.changes[5].voters, [1, 2, 3], "the backup voter replaced by the primary node");
        // Applied, the next round leaves the learners alone; a drained backup node leaves.
        let applied: Vec<ShardInfo> = shards
            .iter()
            .zip(&plan.changes)
            .map(|(s, c)| ShardInfo {
                voters: c.voters.clone(),
                learners: c.learners.clone(),
                preferred_leader: c.preferred_leader,
                ..s.clone()
            })
            .collect();
        assert_eq!(super::plan(&nodes, &applied, &settings(8)), Plan::default());
        nodes[4].up = false;
        let drained = super::plan(&nodes, &applied, &settings(8));
        assert_eq!(drained.changes.len(), 6);
        assert!(drained.changes.iter().all(|c| c.learners == [4] && c.voters == [1, 2, 3]), "{drained:?}");
    }
}
