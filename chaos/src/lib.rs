//! Chaos drills for UMS: break a running cluster on purpose and prove with numbers that
//! nothing acknowledged was lost, nothing was applied twice, and how long each shard
//! was unavailable.
//!
//! - [`history`] and [`checker`] (from the `chaos-checker` crate, shared with the
//!   consensus simulation): every operation's invocation and outcome, and the pure
//!   verdict over a history and the replicas' final state.
//! - [`cluster`]: finds a cluster's nodes and processes from its data directory.
//! - [`faults`]: undoable, timestamped faults (kill -9, SIGSTOP, partitions, loss).
//! - [`network`]: the iptables rules behind network faults.
//! - [`workload`]: unique, checkable messages at a fixed rate over the HTTP API and SMTP,
//!   and outbound webhooks to a `devkit` webhook sink
//!   ([`smtp_client`] tells acknowledged, failed and unknown SMTP outcomes apart).
//! - [`placement`]: the membership drills' steps (a node joins, a node drains, a
//!   replica moves across a partition) and the membership check every drill ends with.
//! - [`sites`]: the backup core's drills (a planned switchover of the two sites).
//! - [`drill`]: the scenarios and the report `umschaos drill` prints.

pub use chaos_checker::{checker, history, outbound};

pub mod cluster;
pub mod drill;
pub mod faults;
pub mod network;
pub mod placement;
pub mod sites;
pub mod smtp_client;
pub mod workload;
