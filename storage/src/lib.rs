//! Durable storage for a UMS node: one key-value engine (RocksDB in production, an
//! in-memory engine with crash semantics in simulations) holding every Raft group's log,
//! its hard/apply state, and the replicated state-machine data.
//!
//! Layout:
//! - [`engine`]: the [`KvEngine`] trait, column families ([`Cf`]) and the [`WriteBatch`]
//!   that carries many groups' writes into one commit (one fsync per ready round).
//! - [`rocks`]: the RocksDB engine (fsync'd WAL, blob files for large values).
//! - [`mem`]: an in-memory engine that forgets unsynced writes on [`MemEngine::crash`].
//! - [`keys`]: key encoding; every key starts with the big-endian group id so a group's
//!   data is one contiguous range (snapshots and deletion are range operations).
//! - [`states`]: persisted per-group records (apply state, truncated state).
//! - [`raft_log`]: [`GroupStorage`], a per-group view implementing `raft::Storage`.
//! - [`snapshot`]: consistent group snapshots, read and applied in chunks.

pub mod engine;
pub mod error;
pub mod keys;
pub mod mem;
pub mod raft_log;
pub mod rocks;
pub mod snapshot;
pub mod states;

pub use engine::{Cf, Engine, EngineStats, KvEngine, KvRead, WriteBatch};
pub use error::{Error, Result};
pub use mem::MemEngine;
pub use raft_log::GroupStorage;
pub use rocks::{DiskFaults, RocksEngine, RocksOptions};
pub use states::{ApplyState, Tombstone, TruncatedState};

/// Identifies one Raft group (a shard, or the meta group 0) across the cluster.
pub type GroupId = u64;
