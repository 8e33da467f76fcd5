//! Which follower campaigns first when a leader goes silent (pure policy).
//!
//! raft-rs draws each follower's election timeout at random from
//! `[election_tick, max_election_tick)`, in whole ticks. With two followers and five
//! possible values, one shard in five has both followers time out in the same tick;
//! when their campaigns cross, the votes split and the shard waits a whole further
//! timeout (ums-bench saw 1.0-1.9 s instead of 0.7 s for such shards after a kill -9).
//! Instead, the followers of a known leader take distinct timeouts from that range in
//! an order that differs per group, so exactly one campaigns first, the next only two
//! ticks later should the first be gone too, and a dead node's groups spread over the
//! survivors. The first starts one tick after `election_tick`: a follower still counts
//! the leader's lease until `election_tick` ticks have passed, and the nodes' tick
//! timers are not in step, so a campaign at exactly `election_tick` could find the
//! other follower a tick short of it and be ignored. Pre-candidates and candidates
//! keep raft-rs's random timeouts, which settle the rare split that remains (two
//! followers that disagree on who the leader was).

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
    let mut order: Vec<NodeId> = voters.iter().copied().filter(|&id| id != leader).collect();
    if order.is_empty() {
        return None;
    }
    order.sort_unstable();
    // Placement makes a node lead every n-th group, so a rotation by group number
    // would give all of one node's groups the same successor; a mixed hash does not.
    let start = (mix(group) % order.len() as u64) as usize;
    order.rotate_left(start);
    let rank = order.iter().position(|&id| id == me)?;
    let first = min_ticks + 1;
    let spacing = max_ticks.saturating_sub(first) / order.len();
    (spacing > 0).then(|| first + rank * spacing)
}

/// SplitMix64's finalizer: consecutive group ids land far apart.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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
        assert_eq!(a.min(b), 11, "the first campaigns one tick after the leader's lease ends");
        assert!(a.max(b) < 15 && a.abs_diff(b) >= 2);
        assert_eq!(follower_timeout(7, &voters, 2, 2, 10, 15), None, "the leader itself");
    }

    #[test]
    fn a_dead_nodes_groups_spread_over_the_survivors() {
        // As placed by `node::placement`: node 2 leads groups 1, 4, 7, ... of 64.
        let voters = [1, 2, 3];
        let led_by_2 = (0..64u64).filter(|g| g % 3 == 1);
        let mut successors = std::collections::BTreeMap::<NodeId, usize>::new();
        for group in led_by_2 {
            let first =
                [1, 3].into_iter().min_by_key(|&me| follower_timeout(group, &voters, 2, me, 10, 15).unwrap()).unwrap();
            *successors.entry(first).or_default() += 1;
        }
        let (one, three) = (successors[&1], successors[&3]);
        assert!(one.abs_diff(three) <= 7, "node 1 takes {one} groups, node 3 takes {three}");
    }

    #[test]
    fn learners_and_narrow_ranges_keep_the_random_draw() {
        assert_eq!(follower_timeout(1, &[1, 2, 3], 1, 4, 10, 15), None, "4 is not a voter");
        assert_eq!(follower_timeout(1, &[1, 2, 3], 1, 2, 10, 11), None, "one value for two followers");
        assert_eq!(follower_timeout(1, &[], 1, 2, 10, 15), None);
    }
}
