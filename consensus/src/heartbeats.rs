//! Heartbeats a busy group does without: a follower its leader sent an append within
//! the last heartbeat interval already knows the leader lives (an append resets its
//! election timer and carries the commit index, and its answer marks the follower
//! active for the leader's quorum check), so the leader's timer heartbeat to it is
//! dropped. With a thousand busy groups on three nodes, heartbeats and their answers
//! were half of all Raft messages, each costing both ends a Ready round.
//!
//! Kept: heartbeats carrying a read-index context (a linearizable read waits for their
//! answers), and heartbeats to a follower that got only a snapshot or nothing lately
//! (a paused or lagging follower is resumed by the heartbeat's answer, one interval
//! later at worst).

use raft::eraftpb::{Message, MessageType};

use crate::NodeId;

/// As leader: the tick at which each follower was last sent an append.
#[derive(Debug, Default)]
pub(crate) struct RecentAppends {
    sent: Vec<(NodeId, u64)>,
}

impl RecentAppends {
    /// Remembers the appends among `messages`, sent at tick `now`.
    pub(crate) fn note(&mut self, messages: &[Message], now: u64) {
        for m in messages.iter().filter(|m| m.msg_type() == MessageType::MsgAppend) {
            match self.sent.iter_mut().find(|(to, _)| *to == m.to) {
                Some(entry) => entry.1 = now,
                None => self.sent.push((m.to, now)),
            }
        }
    }

    /// Notes the appends among `messages` and drops the heartbeats a recent append made
    /// unneeded (sent less than `interval` ticks before `now`, or in this batch).
    pub(crate) fn drop_redundant_heartbeats(&mut self, messages: &mut Vec<Message>, now: u64, interval: u64) {
        self.note(messages, now);
        messages.retain(|m| {
            let redundant = m.msg_type() == MessageType::MsgHeartbeat
                && m.context.is_empty()
                && self.sent.iter().any(|&(to, at)| to == m.to && now.saturating_sub(at) < interval);
            !redundant
        });
    }

    /// Forgets everything (a new term: a follower's last append came from another leader).
    pub(crate) fn clear(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: MessageType, to: NodeId) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.to = to;
        m
    }

    fn kinds(messages: &[Message]) -> Vec<(MessageType, NodeId)> {
        messages.iter().map(|m| (m.msg_type(), m.to)).collect()
    }

    #[test]
    fn a_heartbeat_shortly_after_an_append_to_that_follower_is_dropped() {
        use MessageType::*;
        let mut recent = RecentAppends::default();
        recent.note(&[message(MsgAppend, 2)], 10);
        let mut out = vec![message(MsgHeartbeat, 2), message(MsgHeartbeat, 3)];
        recent.drop_redundant_heartbeats(&mut out, 11, 2);
        assert_eq!(kinds(&out), [(MsgHeartbeat, 3)], "3 got no append");
        let mut out = vec![message(MsgHeartbeat, 2)];
        recent.drop_redundant_heartbeats(&mut out, 12, 2);
        assert_eq!(kinds(&out), [(MsgHeartbeat, 2)], "two ticks on: the heartbeat goes");
    }

    #[test]
    fn an_append_in_the_same_batch_counts_and_other_messages_pass() {
        use MessageType::*;
        let mut recent = RecentAppends::default();
        let mut out = vec![message(MsgHeartbeat, 2), message(MsgAppend, 2), message(MsgSnapshot, 3)];
        recent.drop_redundant_heartbeats(&mut out, 5, 2);
        assert_eq!(kinds(&out), [(MsgAppend, 2), (MsgSnapshot, 3)]);
        let mut out = vec![message(MsgHeartbeat, 3)];
        recent.drop_redundant_heartbeats(&mut out, 5, 2);
        assert_eq!(kinds(&out), [(MsgHeartbeat, 3)], "a snapshot is no append: its receiver keeps its heartbeats");
    }

    #[test]
    fn heartbeats_of_a_read_index_are_never_dropped() {
        use MessageType::*;
        let mut recent = RecentAppends::default();
        let mut read = message(MsgHeartbeat, 2);
        read.context = b"read 7".to_vec();
        let mut out = vec![message(MsgAppend, 2), read];
        recent.drop_redundant_heartbeats(&mut out, 5, 2);
        assert_eq!(out.len(), 2);
        recent.clear();
        let mut out = vec![message(MsgHeartbeat, 2)];
        recent.drop_redundant_heartbeats(&mut out, 5, 2);
        assert_eq!(out.len(), 1, "forgotten on a new term");
    }
}
