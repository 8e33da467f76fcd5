//! Multi-Raft for UMS: one node hosts many Raft groups (shards) on one storage engine.
//!
//! The core, [`MultiRaft`], does no IO of its own: it is driven by plain method calls
//! (`step` for incoming messages, `tick` from one timer, `propose`/`read_index` from
//! clients) and one [`MultiRaft::handle_ready`] call per round, which
//! 1. collects every group that has work,
//! 2. hands messages that need no persistence (a leader's appends) to the [`Transport`],
//! 3. writes all groups' entries and hard states in **one batch with one fsync**,
//! 4. sends the messages that had to wait for persistence,
//! 5. applies committed entries through the [`StateMachine`] (dropping replays of a
//!    client request already applied, see [`dedup`]) and only then completes proposals.
//!
//! Modules: [`config`] (timing and log limits), [`command`] (the proposal envelope),
//! [`transport`] (the network interface and per-peer batching), [`state_machine`] (the
//! apply interface), [`dedup`] (exactly-once apply of retried requests), [`group`] (one
//! group's Raft node and pending requests), [`multi_raft`] (the round),
//! [`reconfigure`] (the membership steps a leader takes towards its target voters),
//! `stale` (replicas a group no longer counts as members find out and retire),
//! `quiesce` (idle groups stop ticking until something wakes them), `heartbeats` (a
//! busy group's leader sends no heartbeat to a follower it just sent an append). The deterministic
//! simulated cluster that tests all of this under faults, and the `raft-bench` benchmark,
//! live in the crate `consensus-sim` (`consensus/sim`), outside the production build.

pub mod command;
mod compaction;
pub mod config;
pub mod dedup;
mod election;
pub mod error;
pub mod group;
mod heartbeats;
pub mod multi_raft;
mod quiesce;
pub mod reconfigure;
mod stale;
pub mod state_machine;
pub mod transport;

pub use command::Command;
pub use config::RaftConfig;
pub use error::{Error, ProposeError, Result};
pub use multi_raft::{Event, GroupStatus, Lag, MultiRaft, ProposalCallback, ReadCallback};
pub use reconfigure::Target;
pub use state_machine::{ApplyBatch, ApplyContext, StateMachine, state_machine_key, state_machine_key_in_group};
pub use storage::GroupId;
pub use transport::{GroupMessage, Transport};

/// Identifies a node (a store) in the cluster. Inside every group a node's replica uses
/// the node id as its Raft peer id, so messages route by `Message::to` directly.
pub type NodeId = u64;
