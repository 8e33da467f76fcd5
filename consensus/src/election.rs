//! Which follower campaigns first when a leader goes silent (pure policy).
//!
//! raft-rs draws each follower's election timeout at random from
//! `[election_tick, max_election_tick)`, in whole ticks. With two followers and five
//! possible values, one shard in five has both followers time out in the same tick;
//! when their campaigns cross, the votes split and the shard waits a whole further
//! timeout (ums-bench saw 1.2-1.3 s instead of 0.7 s for such shards after a kill -9).
//! Instead, the followers of a known leader take distinct timeouts from that range in
//! a fixed order, so exactly one campaigns first and the next one only a tick or more
//! later, should the first be gone too. The order starts at a different member for
//! each group, so a dead node's shards spread over the survivors. Candidates keep
//! raft-rs's random timeouts, which settle the rare split that remains (two followers
//! that disagree on who the leader was).

use crate::{GroupId, NodeId};

/// The election timeout (in ticks) for `me`, a follower of `leader` in `group`, or
/// `None` to keep raft-rs's random draw (a learner, or a range too narrow to give
/// each follower its own value).
pub(crate) fn follower_timeout(
    group: GroupId,
    voters: &[NodeId],
    leader: NodeId,
    me: NodeId,
    min_ticks: usize,
    max_ticks: usize,
) -> Option<usize> {
    let mut order: Vec<NodeId> = voters.to_vec();
    order.sort_unstable();
    if order.is_empty() {
        return None;
    }
    let start = (group % order.len() as u64) as usize;
    order.rotate_left(start);
    order.retain(|&id| id != leader);
    let rank = order.iter().position(|&id| id == me)?;
    let spacing = max_ticks.saturating_sub(min_ticks) / order.len();
    (spacing > 0).then(|| min_ticks + rank * spacing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_followers_of_a_three_replica_group_time_out_apart() {
        let voters = [1, 2, 3];
        let a = follower_timeout(7, &voters, 2, 1, 10, 15).unwrap();
        let b = follower_timeout(7, &voters, 2, 3, 10, 15).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.min(b), 10, "the first campaigns as early as before");
        assert!(a.max(b) < 15 && a.abs_diff(b) >= 2);
        assert_eq!(follower_timeout(7, &voters, 2, 2, 10, 15), None, "the leader itself");
    }

    #[test]
    fn a_dead_nodes_groups_elect_different_successors() {
        let voters = [1, 2, 3];
        let first = |group| {
            [1, 3]
                .into_iter()
                .min_by_key(|&me| follower_timeout(group, &voters, 2, me, 10, 15).unwrap())
                .unwrap()
        };
        let successors: std::collections::BTreeSet<NodeId> = (0..6).map(first).collect();
        assert_eq!(successors.len(), 2, "both survivors take over some groups");
    }

    #[test]
    fn learners_and_narrow_ranges_keep_the_random_draw() {
        assert_eq!(follower_timeout(1, &[1, 2, 3], 1, 4, 10, 15), None, "4 is not a voter");
        assert_eq!(follower_timeout(1, &[1, 2, 3], 1, 2, 10, 11), None, "one value for two followers");
        assert_eq!(follower_timeout(1, &[], 1, 2, 10, 15), None);
    }
}
