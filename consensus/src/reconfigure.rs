//! Pure policy: the next membership step a group's leader takes towards its target voters.
//!
//! A replica move (A → B) is a series of steps, each decided afresh from the membership
//! the leader has *applied* (never from what it proposed), so a move cut short by a
//! crash, a partition or a leader change simply resumes on whichever replica leads next:
//! add B as a learner → wait until B caught up → hand leadership away if A leads →
//! enter joint consensus with an explicit ConfChangeV2 (promote B, demote A) → leave the
//! joint configuration → remove the learner A. A joint configuration is left even
//! without a target (raft-rs's automatic leave is lost when the leader changes), so a
//! group never stays joint. The leader is never demoted: leadership moves first.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState};

use crate::NodeId;

/// A learner within this many entries of the leader's last index counts as caught up
/// (once it holds at least what the leader's log starts after: its snapshot arrived).
pub const CATCH_UP_SLACK: u64 = 64;

/// What the leader sees of its group when it plans.
#[derive(Clone, Debug)]
pub struct GroupView<'a> {
    /// This node, the leader.
    pub leader: NodeId,
    /// Membership as applied here.
    pub conf: &'a ConfState,
    /// Each member's matched index.
    pub matched: &'a BTreeMap<NodeId, u64>,
    pub last_index: u64,
    /// The index the leader's log starts after (compacted or snapshotted up to here).
    pub truncated_index: u64,
    /// A conf change proposed and not yet applied, or a leader transfer under way.
    pub busy: bool,
    /// Whether another learner may start catching up now (the node's limit of
    /// concurrent catch-ups, i.e. snapshots in flight, is not reached).
    pub may_add_learner: bool,
}

/// The next step; `Wait` when something is under way or cannot start yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Done,
    Wait,
    AddLearner(NodeId),
    /// Make a caught-up learner a voter (a pure addition: no voter leaves).
    Promote(NodeId),
    /// Promote `add`, demote `remove` to learner, in one joint configuration.
    EnterJoint {
        add: NodeId,
        remove: NodeId,
    },
    LeaveJoint,
    /// Remove a member that is not a voter of the target (a demoted voter, a learner).
    Remove(NodeId),
    /// Hand leadership to this voter first.
    TransferLeader(NodeId),
}

impl Step {
    /// The conf change that carries out this step, if it is one.
    pub fn conf_change(&self) -> Option<ConfChangeV2> {
        let single =
            |change_type: ConfChangeType, node_id| ConfChangeSingle { change_type: change_type as i32, node_id };
        let changes = match *self {
            Step::AddLearner(node) => vec![single(ConfChangeType::AddLearnerNode, node)],
            Step::Promote(node) => vec![single(ConfChangeType::AddNode, node)],
            Step::EnterJoint { add, remove } => {
                vec![single(ConfChangeType::AddNode, add), single(ConfChangeType::AddLearnerNode, remove)]
            }
            Step::Remove(node) => vec![single(ConfChangeType::RemoveNode, node)],
            Step::LeaveJoint => Vec::new(), // an empty V2 change leaves the joint state
            Step::Done | Step::Wait | Step::TransferLeader(_) => return None,
        };
        let transition = if matches!(self, Step::EnterJoint { .. }) {
            ConfChangeTransition::Explicit
        } else {
            ConfChangeTransition::Auto
        };
        Some(ConfChangeV2 { transition: transition as i32, changes, ..Default::default() })
    }
}

/// Whether `conf` is a joint configuration.
pub fn is_joint(conf: &ConfState) -> bool {
    !conf.voters_outgoing.is_empty()
}

/// Whether `node` is in `conf` in any role.
pub fn is_member(conf: &ConfState, node: NodeId) -> bool {
    conf.voters.contains(&node)
        || conf.learners.contains(&node)
        || conf.voters_outgoing.contains(&node)
        || conf.learners_next.contains(&node)
}

/// The next step for a group led by `view.leader` towards `target` voters (`None`:
/// keep the voters it has, only leave a joint configuration).
pub fn next_step(view: &GroupView<'_>, target: Option<&[NodeId]>) -> Step {
    if view.busy {
        return Step::Wait;
    }
    let conf = view.conf;
    let matched = |node: NodeId| view.matched.get(&node).copied().unwrap_or(0);
    if is_joint(conf) {
        // Leave, but never with the leader outside the incoming voters: hand over first.
        if conf.voters.contains(&view.leader) {
            return Step::LeaveJoint;
        }
        return best_voter(&conf.voters, view.leader, matched).map_or(Step::Wait, Step::TransferLeader);
    }
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        return Step::Done;
    };
    let adds: Vec<NodeId> = target.iter().copied().filter(|n| !conf.voters.contains(n)).collect();
    let removes: Vec<NodeId> = conf.voters.iter().copied().filter(|n| !target.contains(n)).collect();
    let hand_over = || {
        let staying: Vec<NodeId> = conf.voters.iter().copied().filter(|n| target.contains(n)).collect();
        best_voter(&staying, view.leader, matched).map_or(Step::Wait, Step::TransferLeader)
    };
    if let Some(&add) = adds.first() {
        if !conf.learners.contains(&add) {
            return if view.may_add_learner { Step::AddLearner(add) } else { Step::Wait };
        }
        if !caught_up(matched(add), view.truncated_index, view.last_index) {
            return Step::Wait;
        }
        return match removes.first() {
            Some(&remove) if remove == view.leader => hand_over(),
            Some(&remove) => Step::EnterJoint { add, remove },
            None => Step::Promote(add),
        };
    }
    if let Some(&remove) = removes.first() {
        // Fewer voters than now (the target shrank the group): remove one at a time.
        return if remove == view.leader { hand_over() } else { Step::Remove(remove) };
    }
    // Voters are right; drop learners the target does not name (a demoted voter).
    match conf.learners.iter().copied().find(|n| !target.contains(n)) {
        Some(learner) => Step::Remove(learner),
        None => Step::Done,
    }
}

/// Whether a learner that matched `matched` holds enough of the log to become a voter.
pub fn caught_up(matched: u64, truncated_index: u64, last_index: u64) -> bool {
    matched >= truncated_index.max(1) && matched + CATCH_UP_SLACK >= last_index
}

/// The voter other than `leader` with the most of the log, to hand leadership to.
fn best_voter(voters: &[NodeId], leader: NodeId, matched: impl Fn(NodeId) -> u64) -> Option<NodeId> {
    voters.iter().copied().filter(|&n| n != leader).max_by_key(|&n| (matched(n), std::cmp::Reverse(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[NodeId], learners: &[NodeId], outgoing: &[NodeId]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            ..Default::default()
        }
    }

    fn plan(leader: NodeId, conf: &ConfState, matched: &[(NodeId, u64)], target: Option<&[NodeId]>) -> Step {
        let matched: BTreeMap<NodeId, u64> = matched.iter().copied().collect();
        let view = GroupView {
            leader,
            conf,
            matched: &matched,
            last_index: 1000,
            truncated_index: 5,
            busy: false,
            may_add_learner: true,
        };
        next_step(&view, target)
    }

    #[test]
    fn a_move_goes_through_every_step_in_order() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000)];
        let target: &[NodeId] = &[1, 2, 4]; // move 3 → 4, node 1 leads
        type Case<'a> = (ConfState, &'a [(NodeId, u64)], Step);
        let cases: &[Case] = &[
            (conf(&[1, 2, 3], &[], &[]), &up, Step::AddLearner(4)),
            (conf(&[1, 2, 3], &[4], &[]), &[(1, 1000), (4, 10)], Step::Wait), // catching up
            (
                conf(&[1, 2, 3], &[4], &[]),
                &[(1, 1000), (4, 1000 - CATCH_UP_SLACK)],
                Step::EnterJoint { add: 4, remove: 3 },
            ),
            (conf(&[1, 2, 4], &[3], &[1, 2, 3]), &up, Step::LeaveJoint),
            (conf(&[1, 2, 4], &[3], &[]), &up, Step::Remove(3)),
            (conf(&[1, 2, 4], &[], &[]), &up, Step::Done),
        ];
        for (conf, matched, expected) in cases {
            assert_eq!(&plan(1, conf, matched, Some(target)), expected, "{conf:?}");
        }
    }

    #[test]
    fn the_leader_hands_over_before_it_is_demoted_or_removed() {
        let matched = [(1, 1000), (2, 990), (3, 1000), (4, 1000)];
        // Moving the leader's own replica away: transfer to the best staying voter.
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[4], &[]), &matched, Some(&[2, 3, 4])), Step::TransferLeader(3));
        // Joint with the leader only in the outgoing half: transfer, do not leave yet.
        assert_eq!(plan(1, &conf(&[2, 3, 4], &[1], &[1, 2, 3]), &matched, None), Step::TransferLeader(3));
        // Shrinking the group by the leader.
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[], &[]), &matched, Some(&[2, 3])), Step::TransferLeader(3));
    }

    #[test]
    fn joint_is_left_without_a_target_and_nothing_else_happens() {
        let matched = [(1, 5), (2, 5), (3, 5)];
        assert_eq!(plan(1, &conf(&[1, 2], &[3], &[1, 2, 3]), &matched, None), Step::LeaveJoint);
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[], &[]), &matched, None), Step::Done);
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[], &[]), &matched, Some(&[])), Step::Done);
    }

    #[test]
    fn a_learner_is_caught_up_only_once_it_holds_the_snapshot() {
        assert!(!caught_up(0, 5, 20)); // empty, though within the slack
        assert!(!caught_up(4, 5, 20));
        assert!(caught_up(5, 5, 20));
        assert!(!caught_up(100, 5, 100 + CATCH_UP_SLACK + 1));
    }

    #[test]
    fn busy_groups_and_the_catch_up_limit_wait() {
        let c = conf(&[1, 2, 3], &[], &[]);
        let matched = BTreeMap::new();
        let mut view = GroupView {
            leader: 1,
            conf: &c,
            matched: &matched,
            last_index: 9,
            truncated_index: 5,
            busy: true,
            may_add_learner: true,
        };
        assert_eq!(next_step(&view, Some(&[1, 2, 4])), Step::Wait);
        view.busy = false;
        view.may_add_learner = false;
        assert_eq!(next_step(&view, Some(&[1, 2, 4])), Step::Wait);
    }

    #[test]
    fn additions_and_removals_alone_use_simple_changes() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000)];
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[4], &[]), &up, Some(&[1, 2, 3, 4])), Step::Promote(4));
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[], &[]), &up, Some(&[1, 2])), Step::Remove(3));
    }

    #[test]
    fn steps_become_the_right_conf_changes() {
        let joint = Step::EnterJoint { add: 4, remove: 3 }.conf_change().unwrap();
        assert_eq!(joint.transition(), ConfChangeTransition::Explicit);
        assert_eq!(joint.changes.len(), 2);
        assert_eq!(joint.changes[0].change_type(), ConfChangeType::AddNode);
        assert_eq!(joint.changes[1].change_type(), ConfChangeType::AddLearnerNode);
        assert!(Step::LeaveJoint.conf_change().unwrap().changes.is_empty());
        assert_eq!(Step::Remove(3).conf_change().unwrap().changes[0].change_type(), ConfChangeType::RemoveNode);
        assert!(Step::TransferLeader(2).conf_change().is_none());
    }
}
