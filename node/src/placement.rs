//! Where data lives: group 0 is the meta group (address directory, cluster records);
//! groups 1..=shards hold users, each user on the shard given by a stable hash of its id.

use std::collections::BTreeMap;

use consensus::{GroupId, GroupStatus, NodeId};
use raft::StateRole;

/// The meta group: address directory and cluster-wide records.
pub const META_GROUP: GroupId = 0;

/// FNV-1a: simple, fast, and stable across releases and platforms, which matters
/// because a user's shard must never change while the shard count stays the same.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard (1..=shards) holding `user_id`.
pub fn shard_for_user(user_id: &str, shards: u64) -> GroupId {
    1 + stable_hash(user_id.as_bytes()) % shards
}

/// The replicas of every group at bootstrap: group g on `replicas` consecutive members
/// starting at member g (mod n), which spreads groups and leaders evenly.
pub fn initial_placement(members: &[NodeId], shards: u64, replicas: usize) -> BTreeMap<GroupId, Vec<NodeId>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    (META_GROUP..=shards)
        .map(|group| {
            let nodes = (0..replicas).map(|k| sorted[(group as usize + k) % sorted.len()]).collect();
            (group, nodes)
        })
        .collect()
}

/// Each group's preferred leader: its first replica, so leaders spread as evenly as
/// the replicas do (a leader does more work than a follower).
pub fn preferred_leaders(placement: &BTreeMap<GroupId, Vec<NodeId>>) -> BTreeMap<GroupId, NodeId> {
    placement.iter().filter_map(|(&group, nodes)| Some((group, *nodes.first()?))).collect()
}

/// The groups this node leads that should move to their preferred leader now: only to
/// a replica that has the whole log (so the transfer is instant), at most `max` at once.
pub fn leadership_handoffs(
    statuses: &[GroupStatus],
    me: NodeId,
    preferred: &BTreeMap<GroupId, NodeId>,
    max: usize,
) -> Vec<(GroupId, NodeId)> {
    statuses
        .iter()
        .filter(|s| s.role == StateRole::Leader)
        .filter_map(|s| {
            let target = *preferred.get(&s.group)?;
            (target != me && s.progress.get(&target) == Some(&s.last_index)).then_some((s.group, target))
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(group: GroupId, role: StateRole, last_index: u64, progress: &[(NodeId, u64)]) -> GroupStatus {
        GroupStatus {
            group,
            role,
            leader: None,
            term: 6,
            commit_index: last_index,
            applied_index: last_index,
            last_index,
            first_index: 1,
            voters: vec![1, 2, 3],
            learners: vec![],
            voters_outgoing: vec![],
            progress: progress.iter().copied().collect(),
            learner_lags: BTreeMap::new(),
        }
    }

    #[test]
    fn leadership_moves_only_to_caught_up_preferred_replicas() {
        let preferred: BTreeMap<GroupId, NodeId> = [(1, 1), (2, 2), (3, 3), (4, 2)].into_iter().collect();
        let statuses = [
            status(1, StateRole::Leader, 10, &[(1, 10), (2, 10), (3, 10)]), // already preferred
            status(2, StateRole::Leader, 10, &[(1, 10), (2, 10), (3, 9)]),  // move to 2
            status(3, StateRole::Leader, 10, &[(1, 10), (2, 10), (3, 9)]),  // 3 lags: stay
            status(4, StateRole::Follower, 10, &[]),                        // not ours
        ];
        assert_eq!(leadership_handoffs(&statuses, 1, &preferred, 8), vec![(2, 2)]);
        assert_eq!(leadership_handoffs(&statuses, 1, &preferred, 0), vec![]);
        let placement = initial_placement(&[1, 2, 3], 3, 3);
        assert_eq!(preferred_leaders(&placement), [(0, 1), (1, 2), (2, 3), (3, 1)].into_iter().collect());
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Pinned values: changing the hash would move every user's data.
        assert_eq!(shard_for_user("user1@ministry.go.ke", 64), shard_for_user("user1@ministry.go.ke", 64));
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0u32; 65];
        for n in 1..=6400 {
            counts[shard_for_user(&format!("user{n}@ministry.go.ke"), 64) as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1..].iter().all(|&c| c > 50 && c < 160), "{counts:?}");
    }

    #[test]
    fn placement_spreads_replicas() {
        let placement = initial_placement(&[3, 1, 2, 4], 8, 3);
        assert_eq!(placement.len(), 9);
        assert_eq!(placement[&0], vec![1, 2, 3]);
        assert_eq!(placement[&1], vec![2, 3, 4]);
        let mut per_node = BTreeMap::new();
        for nodes in placement.values() {
            assert_eq!(nodes.len(), 3);
            for n in nodes {
                *per_node.entry(*n).or_insert(0) += 1;
            }
        }
        assert!(per_node.values().all(|&c| (6..=7).contains(&c)), "{per_node:?}");
    }
}
