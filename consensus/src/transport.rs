//! The network as the Raft core sees it, and the per-peer batching of one round.

use std::collections::BTreeMap;

use raft::eraftpb::Message;

use crate::{GroupId, NodeId};

/// A Raft message of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    pub group: GroupId,
    pub message: Message,
}

/// Delivers batches of Raft messages to peers. Sending must not block: a transport
/// queues (bounded) and may drop; Raft retransmits.
pub trait Transport {
    /// Sends every message in `batch` to node `to`, ideally as one frame.
    fn send(&mut self, to: NodeId, batch: Vec<GroupMessage>);

    /// Whether node `to` looks alive and connected; quiesced groups whose leader is
    /// not wake up and elect another ([`crate::MultiRaft::wake_orphans`]).
    fn is_reachable(&self, _to: NodeId) -> bool {
        true
    }
}

/// Messages of one round, grouped by destination so each peer gets one batch.
#[derive(Default)]
pub(crate) struct Outbox {
    by_peer: BTreeMap<NodeId, Vec<GroupMessage>>,
}

impl Outbox {
    pub(crate) fn add(&mut self, group: GroupId, messages: Vec<Message>) {
        for message in messages {
            self.by_peer.entry(message.to).or_default().push(GroupMessage { group, message });
        }
    }

    /// Hands one batch per peer to the transport and empties the outbox.
    pub(crate) fn flush(&mut self, transport: &mut dyn Transport) {
        for (to, batch) in std::mem::take(&mut self.by_peer) {
            transport.send(to, batch);
        }
    }
}
