//! Errors of the consensus layer.

use crate::{GroupId, NodeId};

/// Why a proposal or read did not complete with a result. Callers retry `NotLeader`
/// at the hinted node and `Dropped` anywhere, with the same request id: the state
/// machine applies a request id at most once, so a retry never applies twice.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader. `leader` is the current leader if known.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader { group: GroupId, leader: Option<NodeId> },
    /// The proposal was lost (leadership changed before it committed, or raft-rs
    /// refused it, e.g. during a leader transfer). Its outcome is unknown: retry.
    #[error("proposal to group {group} dropped; retry with the same request id")]
    Dropped { group: GroupId },
    /// The group has no replica on this node.
    #[error("group {group} is not hosted on this node")]
    GroupNotFound { group: GroupId },
    /// The proposal could not be decoded or applied as a command.
    #[error("invalid proposal: {0}")]
    Invalid(String),
}

/// Errors of the consensus layer itself (not of one request).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("group {0} already exists on this node")]
    GroupExists(GroupId),
    #[error("this node holds no replica of group {0}")]
    NoReplica(GroupId),
}

/// Result alias of the consensus crate.
pub type Result<T> = std::result::Result<T, Error>;
