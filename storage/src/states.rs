//! Per-group records persisted beside the log, encoded with prost.

use prost::Message;
use raft::eraftpb::ConfState;

use crate::{Error, GroupId, Result};

/// How far a group's state machine has applied the log. Written in the same batch as
/// the state-machine writes of those entries, so after a crash data and apply state agree
/// and replay resumes exactly after `applied_index`.
#[derive(Clone, PartialEq, Message)]
pub struct ApplyState {
    #[prost(uint64, tag = "1")]
    pub applied_index: u64,
    /// Term of the entry at `applied_index` (the term of a snapshot taken here).
    #[prost(uint64, tag = "2")]
    pub applied_term: u64,
    /// Membership as of `applied_index`; raft-rs starts from this on restart.
    #[prost(message, optional, tag = "3")]
    pub conf_state: Option<ConfState>,
}

/// The last entry removed from the log by compaction or replaced by a snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct TruncatedState {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
}

/// What a node keeps of a group after its replica was removed: the log position from
/// which on it is known not to be a member, and its last term and vote, so a replica
/// created again later (the node added back) never votes twice in one term.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Tombstone {
    #[prost(uint64, tag = "1")]
    pub removed_at: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub vote: u64,
}

/// Decodes a prost record, naming the group and record in the error.
pub(crate) fn decode<M: Message + Default>(group: GroupId, what: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Corrupt { group, what, detail: e.to_string() })
}
