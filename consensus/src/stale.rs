//! Pure: finding and retiring replicas their group no longer counts as members.
//!
//! A node cut off while its removal committed never applies it, and a leader's message
//! delayed past the removal can create an empty replica again; both would sit there
//! forever. So, as TiKV's stale-peer checks do: a replica that hears from no leader for
//! a while sends a *probe* to the members it knows; a member that receives any message
//! from a node outside its applied membership answers with a *notice*: "as of my applied
//! index N you are not a member". The receiver retires its replica only if its whole
//! log ends at or before N: then it has nothing the group could still need, and any
//! later membership of it starts after N (it is added again and catches up anew).
//!
//! Both travel as raft-rs messages of a type raft-rs only uses locally
//! (`MsgCheckQuorum`) marked in their context, and never reach raft-rs.

use raft::eraftpb::{Message, MessageType};

use crate::NodeId;

const PROBE: &[u8] = b"ums:membership-probe";
const NOTICE: &[u8] = b"ums:not-a-member";

/// Ticks without a message from a leader before a replica probes.
pub fn probe_after_ticks(election_tick: usize) -> u32 {
    (6 * election_tick) as u32
}

/// What an incoming message is, for these checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Raft,
    Probe,
    /// Not a member as of this applied index of the sender.
    NotMember {
        as_of: u64,
    },
}

pub fn kind(message: &Message) -> Kind {
    if message.msg_type() != MessageType::MsgCheckQuorum {
        return Kind::Raft;
    }
    match message.context.as_slice() {
        PROBE => Kind::Probe,
        NOTICE => Kind::NotMember { as_of: message.index },
        _ => Kind::Raft,
    }
}

pub fn probe(from: NodeId, to: NodeId) -> Message {
    marked(from, to, PROBE, 0)
}

pub fn notice(from: NodeId, to: NodeId, applied: u64) -> Message {
    marked(from, to, NOTICE, applied)
}

fn marked(from: NodeId, to: NodeId, mark: &[u8], index: u64) -> Message {
    let mut message = Message { from, to, index, context: mark.to_vec(), ..Default::default() };
    message.set_msg_type(MessageType::MsgCheckQuorum);
    message
}

/// Whether a leader's `message` may create a replica again where one was removed (its
/// tombstone: removed as of `removed_at`, last term `term`): a leader of a later term,
/// one whose log is past the removal (the node was added back), or a heartbeat that
/// commits nothing (how a leader greets a new learner). A stale leader's appends from
/// before the removal stay ignored; what else slips through is an empty replica that
/// holds nothing and retires by itself when no leader keeps it ([`retires_empty`]).
pub fn revives(removed_at: u64, term: u64, message: &Message) -> bool {
    if removed_at == u64::MAX {
        return false; // a tombstone from before they had contents: never back
    }
    let past_removal = match message.msg_type() {
        MessageType::MsgSnapshot => message.snapshot.as_ref().and_then(|s| s.metadata.as_ref()).map(|m| m.index),
        MessageType::MsgAppend => Some(message.index),
        MessageType::MsgHeartbeat if message.commit == 0 => return true,
        _ => None,
    };
    message.term > term || past_removal.is_some_and(|index| index > removed_at)
}

/// Whether a replica that never received its first snapshot (no members known, nothing
/// in it) gives up after `ticks_unled` ticks without a leader: it holds nothing.
pub fn retires_empty(initialized: bool, ticks_unled: u32, election_tick: usize) -> bool {
    !initialized && ticks_unled > probe_after_ticks(election_tick)
}

/// Whether a replica whose log ends at `last_index` should retire on a notice.
pub fn retires(last_index: u64, notice_as_of: u64) -> bool {
    last_index <= notice_as_of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_notices_are_told_apart_from_raft_messages() {
        assert_eq!(kind(&probe(1, 2)), Kind::Probe);
        assert_eq!(kind(&notice(2, 1, 77)), Kind::NotMember { as_of: 77 });
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        assert_eq!(kind(&heartbeat), Kind::Raft);
    }

    #[test]
    fn only_later_leaders_or_logs_past_the_removal_revive() {
        let append = |term, index| {
            let mut m = Message { term, index, ..Default::default() };
            m.set_msg_type(MessageType::MsgAppend);
            m
        };
        assert!(!revives(100, 7, &append(7, 90))); // the old leader, delayed
        assert!(revives(100, 7, &append(7, 120))); // added back in the same term
        assert!(revives(100, 7, &append(8, 90)));
        assert!(!revives(u64::MAX, u64::MAX, &append(9, 1 << 40))); // an old, empty tombstone
        let mut greeting = Message { term: 7, commit: 0, ..Default::default() };
        greeting.set_msg_type(MessageType::MsgHeartbeat);
        assert!(revives(100, 7, &greeting));
        greeting.commit = 26; // for the replica that was here before: not for a new one
        assert!(!revives(100, 7, &greeting));
    }

    #[test]
    fn only_a_replica_with_nothing_past_the_notice_retires() {
        assert!(retires(0, 10)); // an empty replica
        assert!(retires(10, 10));
        assert!(!retires(11, 10)); // it holds entries the sender has not applied: maybe a new member
    }
}
