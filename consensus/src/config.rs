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
    /// Compact a group's log once this many applied entries sit in it.
    pub compact_threshold: u64,
    /// Applied entries kept after compaction so briefly lagging followers catch up from
    /// the log rather than by snapshot.
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
            compact_threshold: 10_000,
            compact_keep: 1_000,
            dedup_window: 1_000_000,
        }
    }
}

impl RaftConfig {
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
