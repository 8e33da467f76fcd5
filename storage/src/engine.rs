//! The key-value engine interface that all durable state goes through.
//!
//! It is deliberately small (get, ordered scan, atomic batch write with an optional
//! fsync, consistent snapshot) so that the simulation can swap in [`crate::MemEngine`],
//! which models a crash that loses unsynced writes, while production runs RocksDB.

use std::sync::Arc;

use crate::Result;

/// Column families. Each has its own tuning in RocksDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Raft log entries, keyed by group + index. Written once, deleted on compaction.
    RaftLog,
    /// Per-group hard state, truncated state and apply state.
    RaftState,
    /// Replicated state-machine records (directory, mailboxes, queues, dedup table).
    Data,
    /// Large values such as message bodies; RocksDB keeps them in blob files.
    Blobs,
}

impl Cf {
    /// Every family, in a fixed order (used to open the database and to index arrays).
    pub const ALL: [Cf; 4] = [Cf::RaftLog, Cf::RaftState, Cf::Data, Cf::Blobs];

    /// The families that hold replicated state-machine data, i.e. what a snapshot carries.
    pub const STATE_MACHINE: [Cf; 2] = [Cf::Data, Cf::Blobs];

    /// Name of the family in RocksDB.
    pub fn name(self) -> &'static str {
        match self {
            Cf::RaftLog => "raft_log",
            Cf::RaftState => "raft_state",
            Cf::Data => "data",
            Cf::Blobs => "blobs",
        }
    }

    /// Position in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Inverse of `self as u32`, for decoding snapshot chunks.
    pub fn from_u32(value: u32) -> Option<Cf> {
        Cf::ALL.get(value as usize).copied()
    }
}

/// One mutation inside a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Mutations that commit atomically: either all survive a crash or none do.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
    /// Approximate payload size, so callers can cap batches.
    bytes: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put { cf, key, value });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(Op::Delete { cf, key });
    }

    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.bytes += start.len() + end.len();
        self.ops.push(Op::DeleteRange { cf, start, end });
    }

    /// Appends all of `other`'s mutations after this batch's own.
    pub fn extend(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// Read access, shared by the live engine and its snapshots.
pub trait KvRead {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits keys in `[start, end)` in ascending order until `visit` returns `false`.
    fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;

    /// The greatest key in `[start, end)`, if any.
    fn last_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// Counters an engine keeps so benchmarks and metrics can show fsyncs beside throughput.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Batches written (synced or not).
    pub writes: u64,
    /// Batches written with an fsync.
    pub syncs: u64,
}

/// A durable, ordered key-value store with atomic batches.
pub trait KvEngine: KvRead + Send + Sync {
    /// Commits `batch` atomically. With `sync`, returns only after the batch and every
    /// earlier batch are on stable storage.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;

    /// A consistent point-in-time view that later writes do not change.
    fn snapshot(&self) -> Box<dyn KvRead + Send>;

    fn stats(&self) -> EngineStats;
}

/// Shared handle to a node's engine.
pub type Engine = Arc<dyn KvEngine>;
