//! Timing and log-size settings of a node's Raft groups.

/// Settings shared by every group on a node.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// Ticks without a leader's heartbeat before a follower campaigns (at least).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks. `None`
    /// means twice `election_tick`. The deterministic simulation sets `election_tick + 1`
    /// because raft-rs draws the timeout from a thread-local RNG it does not seed; the
    /// simulation randomizes tick timing itself instead.
    pub max_election_tick: Option<usize>,
    /// Byte cap of the entries in one append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// A leader proposes compacting the log (on every replica) once this many entries
    /// beyond the log's start are on every member. Small, so entries are deleted while
    /// still in RocksDB's memtable and never flushed or compacted as files.
    pub compact_every: u64,
    /// Log entries the awake groups of a node may hold together beyond their logs'
    /// starts: with many busy groups, each leader compacts after fewer than
    /// `compact_every` entries (see [`crate::compaction::compact_every`]), so their logs
    /// together still die in the memtable.
    pub compact_log_budget: u64,
    /// Once this many applied entries sit in a log anyway (a member is down or far
    /// behind, so the leader does not compact), compact regardless: that member will
    /// catch up by snapshot. Also each replica's own limit should no leader compact.
    pub compact_threshold: u64,
    /// Applied entries kept by such a forced compaction, so a briefly lagging member
    /// still catches up from the log rather than by snapshot.
    pub compact_keep: u64,
    /// How many log entries a request id is remembered after it was applied. A client
    /// retry later than this may apply twice; it is sized far beyond any retry timeout.
    pub dedup_window: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            election_tick: 10,
            heartbeat_tick: 2,
            max_election_tick: None,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            compact_every: 256,
            compact_log_budget: 16_384,
            compact_threshold: 10_000,
            compact_keep: 1_000,
            dedup_window: 1_000_000,
        }
    }
}

impl RaftConfig {
    /// The range raft-rs draws election timeouts from, in ticks: `[min, max)`.
    pub(crate) fn election_range(&self) -> (usize, usize) {
        (self.election_tick, self.max_election_tick.unwrap_or(2 * self.election_tick))
    }

    /// The raft-rs configuration of this node's replica in one group.
    pub(crate) fn raft_config(&self, node_id: u64, applied: u64) -> raft::Config {
        raft::Config {
            id: node_id,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            max_election_tick: self.max_election_tick.unwrap_or(0),
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        }
    }
}
