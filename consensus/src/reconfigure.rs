//! Pure policy: the next membership step a group's leader takes towards its target
//! voters and learners.
//!
//! A replica move (A → B) is a series of steps, each decided afresh from the membership
//! the leader has *applied* (never from what it proposed), so a move cut short by a
//! crash, a partition or a leader change simply resumes on whichever replica leads next:
//! add B as a learner → wait until B caught up → hand leadership away if A leads →
//! enter joint consensus with an explicit ConfChangeV2 (promote B, demote A) → leave the
//! joint configuration → remove the learner A. A joint configuration is left even
//! without a target (raft-rs's automatic leave is lost when the leader changes), so a
//! group never stays joint. The leader is never demoted: leadership moves first.
//!
//! A target may also name standing learners (a backup site's replicas: they receive the
//! log but never vote, so a distant site adds no latency to commits). They are added once
//! the voters are right; a voter the target makes a learner is demoted, not removed; a
//! learner the target makes a voter is promoted like any caught-up learner.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState};

use crate::NodeId;

/// A learner within this many entries of the leader's last index counts as caught up
/// (once it holds at least what the leader's log starts after: its snapshot arrived).
pub const CATCH_UP_SLACK: u64 = 64;

/// The membership a group should end up with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Sorted, no duplicates.
    pub voters: Vec<NodeId>,
    /// Standing learners (never promoted by the policy); sorted, none a voter.
    pub learners: Vec<NodeId>,
}

impl Target {
    /// A target of voters only.
    pub fn voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self::new(voters, [])
    }

    /// A target in its one spelling: sorted, deduplicated, a node named as both a voter.
    pub fn new(voters: impl IntoIterator<Item = NodeId>, learners: impl IntoIterator<Item = NodeId>) -> Self {
        let voters: Vec<NodeId> = voters.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let learners = learners
            .into_iter()
            .filter(|n| !voters.contains(n))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Self { voters, learners }
    }

    /// Whether the target names `node` in either role.
    pub fn names(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Whether `conf` is exactly this target (not joint, the same voters and learners).
    pub fn reached_by(&self, conf: &ConfState) -> bool {
        !is_joint(conf) && sorted(&conf.voters) == self.voters && sorted(&conf.learners) == self.learners
    }
}

pub(crate) fn sorted(ids: &[NodeId]) -> Vec<NodeId> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

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
    /// Remove a member the target does not name (a demoted voter, a learner).
    Remove(NodeId),
    /// Make a voter a standing learner of the target (no voter joins).
    Demote(NodeId),
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
            Step::Demote(node) => vec![single(ConfChangeType::AddLearnerNode, node)],
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

/// The next step for a group led by `view.leader` towards `target` (`None`: keep the
/// membership it has, only leave a joint configuration).
pub fn next_step(view: &GroupView<'_>, target: Option<&Target>) -> Step {
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
    let Some(target) = target.filter(|t| !t.voters.is_empty()) else {
        return Step::Done;
    };
    let adds: Vec<NodeId> = target.voters.iter().copied().filter(|n| !conf.voters.contains(n)).collect();
    let removes: Vec<NodeId> = conf.voters.iter().copied().filter(|n| !target.voters.contains(n)).collect();
    let others_leaving: Vec<NodeId> = removes.iter().copied().filter(|&n| n != view.leader).collect();
    let staying: Vec<NodeId> = conf.voters.iter().copied().filter(|n| target.voters.contains(n)).collect();
    let hand_over = || best_voter(&staying, view.leader, matched).map_or(Step::Wait, Step::TransferLeader);
    let add_learner = |node| if view.may_add_learner { Step::AddLearner(node) } else { Step::Wait };
    if let Some(&add) = adds.first() {
        if !conf.learners.contains(&add) {
            return add_learner(add);
        }
        if !caught_up(matched(add), view.truncated_index, view.last_index) {
            return Step::Wait;
        }
        // Swap out a voter other than the leader first; when only the leader leaves,
        // hand over to a staying voter, or (none stays: every voter is replaced) grow
        // by the new one first and hand over to it later.
        return match (others_leaving.first(), removes.is_empty()) {
            (Some(&remove), _) => Step::EnterJoint { add, remove },
            (None, true) => Step::Promote(add),
            (None, false) if staying.is_empty() => Step::Promote(add),
            (None, false) => hand_over(),
        };
    }
    if let Some(&remove) = others_leaving.first().or(removes.first()) {
        // Fewer voters than now (the target shrank the group): one at a time, a standing
        // learner of the target demoted rather than removed.
        return if remove == view.leader {
            hand_over()
        } else if target.learners.contains(&remove) {
            Step::Demote(remove)
        } else {
            Step::Remove(remove)
        };
    }
    // Voters are right: drop learners the target does not name (a demoted voter), then
    // add the standing learners it names.
    if let Some(learner) = conf.learners.iter().copied().find(|&n| !target.names(n)) {
        return Step::Remove(learner);
    }
    match target.learners.iter().copied().find(|n| !conf.learners.contains(n)) {
        Some(learner) => add_learner(learner),
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
        plan_to(leader, conf, matched, target.map(|voters| Target::voters(voters.iter().copied())).as_ref())
    }

    fn plan_to(leader: NodeId, conf: &ConfState, matched: &[(NodeId, u64)], target: Option<&Target>) -> Step {
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
    fn every_voter_replaced_swaps_the_others_first_then_hands_over() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000), (5, 1000)];
        let swapped = Target::new([4, 5], [1, 2, 3]); // a switchover of sites, node 1 leads
        type Case<'a> = (ConfState, Step);
        let cases: &[Case] = &[
            (conf(&[1, 2, 3], &[4, 5], &[]), Step::EnterJoint { add: 4, remove: 2 }),
            (conf(&[1, 3, 4], &[2, 5], &[]), Step::EnterJoint { add: 5, remove: 3 }),
            (conf(&[1, 4, 5], &[2, 3], &[]), Step::TransferLeader(4)),
        ];
        for (conf, expected) in cases {
            assert_eq!(&plan_to(1, conf, &up, Some(&swapped)), expected, "{conf:?}");
        }
        assert_eq!(plan_to(4, &conf(&[1, 4, 5], &[2, 3], &[]), &up, Some(&swapped)), Step::Demote(1));
        // A lone voter replaced: the new one joins first, leadership follows.
        assert_eq!(plan(1, &conf(&[1], &[2], &[]), &up, Some(&[2])), Step::Promote(2));
        assert_eq!(plan(1, &conf(&[1, 2], &[], &[]), &up, Some(&[2])), Step::TransferLeader(2));
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
        let target = Target::voters([1, 2, 4]);
        assert_eq!(next_step(&view, Some(&target)), Step::Wait);
        view.busy = false;
        view.may_add_learner = false;
        assert_eq!(next_step(&view, Some(&target)), Step::Wait);
        let standing = Target::new([1, 2, 3], [5]);
        assert_eq!(next_step(&view, Some(&standing)), Step::Wait, "a standing learner waits its turn too");
    }

    #[test]
    fn additions_and_removals_alone_use_simple_changes() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000)];
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[4], &[]), &up, Some(&[1, 2, 3, 4])), Step::Promote(4));
        assert_eq!(plan(1, &conf(&[1, 2, 3], &[], &[]), &up, Some(&[1, 2])), Step::Remove(3));
    }

    #[test]
    fn standing_learners_are_added_after_the_voters_and_never_promoted() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000), (5, 1000)];
        let target = Target::new([1, 2, 3], [4, 5]);
        type Case<'a> = (ConfState, Step);
        let cases: &[Case] = &[
            (conf(&[1, 2, 3], &[], &[]), Step::AddLearner(4)),
            (conf(&[1, 2, 3], &[4], &[]), Step::AddLearner(5)),
            (conf(&[1, 2, 3], &[4, 5], &[]), Step::Done),
            // A move of a voter still happens first, then the learners.
            (conf(&[1, 2, 6], &[], &[]), Step::AddLearner(3)),
            // A learner the target does not name goes; one it names stays.
            (conf(&[1, 2, 3], &[4, 5, 6], &[]), Step::Remove(6)),
        ];
        for (conf, expected) in cases {
            assert_eq!(&plan_to(1, conf, &up, Some(&target)), expected, "{conf:?}");
        }
        assert!(target.reached_by(&conf(&[3, 1, 2], &[5, 4], &[])));
        assert!(!target.reached_by(&conf(&[1, 2, 3], &[4], &[])));
    }

    #[test]
    fn voters_become_learners_and_learners_voters_as_the_target_says() {
        let up = [(1, 1000), (2, 1000), (3, 1000), (4, 1000), (5, 1000)];
        // Switching sites: the learners 4 and 5 become voters, the voters 2 and 3 learners.
        let swapped = Target::new([1, 4, 5], [2, 3]);
        let joint = plan_to(1, &conf(&[1, 2, 3], &[4, 5], &[]), &up, Some(&swapped));
        assert_eq!(joint, Step::EnterJoint { add: 4, remove: 2 });
        // A smaller voter set whose leaver stays as a learner: demoted, not removed.
        let shrunk = Target::new([1, 2], [3]);
        assert_eq!(plan_to(1, &conf(&[1, 2, 3], &[], &[]), &up, Some(&shrunk)), Step::Demote(3));
        assert_eq!(Step::Demote(3).conf_change().unwrap().changes[0].change_type(), ConfChangeType::AddLearnerNode);
        // The spelling: sorted, deduplicated, a voter never also a learner.
        assert_eq!(Target::new([3, 1, 1], [3, 5, 4]), Target { voters: vec![1, 3], learners: vec![4, 5] });
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
