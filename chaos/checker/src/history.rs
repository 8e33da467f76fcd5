//! The record of a drill: what the workload asked for and what it was told, in the
//! style of Jepsen histories. An operation whose outcome is unknown (timeout, reset,
//! 503 after internal retries) may or may not have happened; the checker allows both.

use serde::{Deserialize, Serialize};

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Outcome {
    /// Acknowledged (HTTP 201) with this UID: it must be in the mailbox exactly once.
    Ok { uid: u64 },
    /// Acknowledged without a UID (SMTP 250): it must be in the mailbox exactly once.
    Accepted,
    /// Definitely not applied (connection refused, 4xx).
    Failed { reason: String },
    /// May or may not have been applied.
    Unknown { reason: String },
}

/// One append of a uniquely tagged message to a user's mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub user: String,
    pub shard: u64,
    /// Unique per operation; how the checker finds the message again.
    pub client_ref: String,
    /// The node the request was sent to.
    pub node: u64,
    /// Milliseconds since the drill started.
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub outcome: Outcome,
}

impl Operation {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. } | Outcome::Accepted)
    }
}

/// A fault or recovery step, with when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub at_ms: u64,
    pub what: String,
}

/// A node cut off from the rest of the cluster, from `from_ms` until `to_ms` (None while
/// it lasts), in drill milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    pub node: u64,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}
