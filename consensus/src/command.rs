//! The envelope of every normal log entry: who asked (client and request id, for
//! exactly-once apply) and the state-machine payload; or the group's own request to
//! compact its log.

use prost::Message;

/// A client request as it is stored in the Raft log.
///
/// `client_id` 0 means "no deduplication" (internal commands that are idempotent).
/// A client that retries must reuse the same `(client_id, request_id)`.
#[derive(Clone, PartialEq, Message)]
pub struct Command {
    #[prost(uint64, tag = "1")]
    pub client_id: u64,
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Not zero: no client request but the leader asking every replica to compact its
    /// log up to this index (which every member had when it was proposed). Never
    /// reaches the state machine.
    #[prost(uint64, tag = "4")]
    pub compact_log_to: u64,
}

impl Command {
    pub fn new(client_id: u64, request_id: u64, payload: Vec<u8>) -> Self {
        Self { client_id, request_id, payload, compact_log_to: 0 }
    }

    /// The leader's request to compact every replica's log up to `index`.
    pub fn compact_log(index: u64) -> Self {
        Self { compact_log_to: index, ..Self::default() }
    }
}
