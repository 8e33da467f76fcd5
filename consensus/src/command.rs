//! The envelope of every normal log entry: who asked (client and request id, for
//! exactly-once apply) and the state-machine payload.

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
}

impl Command {
    pub fn new(client_id: u64, request_id: u64, payload: Vec<u8>) -> Self {
        Self {
            client_id,
            request_id,
            payload,
        }
    }
}
