//! Idle groups stop ticking (CockroachDB's quiescence, TiKV's hibernate regions), so a
//! node can host a thousand replicas whose shards see no traffic at no cost.
//!
//! A leader whose group has been idle for [`IDLE_TICKS_BEFORE_QUIESCE`] ticks — nothing
//! proposed, read or reconfiguring, every member holding the whole log, everything
//! committed and applied — tells each member to quiesce (its term and last index, as a
//! marked message like [`crate::stale`]'s) and stops ticking itself: no heartbeats, no
//! election timers. A follower quiesces only when it is in that exact state too.
//! Anything else wakes a group: a proposal, a read, a leader transfer, a new target, any
//! Raft message (a vote from a restarted member included), or, for a follower, its
//! leader's node becoming unreachable ([`crate::MultiRaft::wake_orphans`]), which
//! the node learns from its connections. Safety is Raft's own: quiescing only skips
//! ticks, and reads still confirm leadership with a quorum.

use raft::eraftpb::{Message, MessageType};

use crate::NodeId;

/// Idle ticks a leader waits before it quiesces its group (two election timeouts of
/// the defaults: a busy group never quiesces between two writes).
pub const IDLE_TICKS_BEFORE_QUIESCE: u32 = 20;

const MARK: &[u8] = b"ums:quiesce";

/// The leader's request that `to` quiesce: it is at `term` with the whole log to `last_index`.
pub fn request(from: NodeId, to: NodeId, term: u64, last_index: u64) -> Message {
    let mut message = Message { from, to, term, index: last_index, context: MARK.to_vec(), ..Default::default() };
    message.set_msg_type(MessageType::MsgCheckQuorum);
    message
}

/// Whether `message` is a quiesce request.
pub fn is_request(message: &Message) -> bool {
    message.msg_type() == MessageType::MsgCheckQuorum && message.context == MARK
}

/// What a leader knows of its group when it decides whether it is idle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderState {
    pub last_index: u64,
    pub committed: u64,
    pub applied: u64,
    /// The lowest matched index of any member.
    pub min_matched: u64,
    /// Proposals, reads, a conf change or a leader transfer under way, a membership
    /// step to take, or a joint configuration.
    pub busy: bool,
}

/// Whether the leader's group is idle this tick.
pub fn leader_idle(state: &LeaderState) -> bool {
    !state.busy
        && state.committed == state.last_index
        && state.applied == state.committed
        && state.min_matched == state.last_index
}

/// Whether `message` leaves a quiesced replica quiet: a heartbeat's answer arriving
/// after the leader quiesced, or a heartbeat from the leader it knows in its term (the
/// leader's last tick may send one just after the quiesce request; waking on it would
/// start the follower's election timer while the leader sleeps, and it would depose it).
pub fn keeps_quiet(message: &Message, leader: NodeId, term: u64) -> bool {
    match message.msg_type() {
        MessageType::MsgHeartbeatResponse => true,
        MessageType::MsgHeartbeat => message.from == leader && message.term == term,
        _ => false,
    }
}

/// Whether a follower at (`term`, `last_index`, `committed`) that hears the quiesce
/// request `message` from `leader` may stop ticking: it holds and has committed exactly
/// what the leader has.
pub fn follower_may_quiesce(message: &Message, leader: NodeId, term: u64, last_index: u64, committed: u64) -> bool {
    message.from == leader && message.term == term && message.index == last_index && committed == last_index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_idle_only_with_everything_replicated_committed_and_applied() {
        let idle = LeaderState { last_index: 9, committed: 9, applied: 9, min_matched: 9, busy: false };
        assert!(leader_idle(&idle));
        assert!(!leader_idle(&LeaderState { min_matched: 8, ..idle }), "a member lags");
        assert!(!leader_idle(&LeaderState { committed: 8, ..idle }));
        assert!(!leader_idle(&LeaderState { applied: 8, ..idle }));
        assert!(!leader_idle(&LeaderState { busy: true, ..idle }));
    }

    #[test]
    fn only_heartbeats_of_the_known_leader_and_their_answers_keep_a_replica_quiet() {
        let message = |kind: MessageType, from: NodeId, term: u64| {
            let mut m = Message { from, term, ..Default::default() };
            m.set_msg_type(kind);
            m
        };
        assert!(keeps_quiet(&message(MessageType::MsgHeartbeat, 2, 5), 2, 5));
        assert!(keeps_quiet(&message(MessageType::MsgHeartbeatResponse, 3, 5), 2, 5));
        assert!(!keeps_quiet(&message(MessageType::MsgHeartbeat, 3, 5), 2, 5), "not its leader");
        assert!(!keeps_quiet(&message(MessageType::MsgHeartbeat, 2, 6), 2, 5), "a newer term");
        assert!(!keeps_quiet(&message(MessageType::MsgAppend, 2, 5), 2, 5), "new entries");
        assert!(!keeps_quiet(&message(MessageType::MsgRequestPreVote, 3, 6), 2, 5));
    }

    #[test]
    fn a_follower_quiesces_only_in_the_leaders_exact_state() {
        let message = request(1, 2, 7, 40);
        assert!(is_request(&message));
        assert!(follower_may_quiesce(&message, 1, 7, 40, 40));
        assert!(!follower_may_quiesce(&message, 3, 7, 40, 40), "not from its leader");
        assert!(!follower_may_quiesce(&message, 1, 8, 40, 40), "another term");
        assert!(!follower_may_quiesce(&message, 1, 7, 39, 39), "it lacks entries");
        assert!(!follower_may_quiesce(&message, 1, 7, 40, 38), "not all committed");
    }
}
