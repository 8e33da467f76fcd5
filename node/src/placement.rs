//! Where data lives: group 0 is the meta group (address directory, cluster records);
//! groups 1..=shards hold users, each user on the shard given by a stable hash of its id.

use std::collections::BTreeMap;

use consensus::{GroupId, NodeId};

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(per_node.values().all(|&c| c >= 6 && c <= 7), "{per_node:?}");
    }
}
