//! The envelope of every normal log entry: who asked (client and request id, for
//! exactly-once apply) and the state-machine payload; or the group's own request to
//! compact its log. The leader stamps each with its wall clock as it proposes, so how
//! old the entries a lagging replica lacks are is known (a backup site's recovery point).

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
    /// The leader's wall clock (ms since the Unix epoch) when it proposed the entry;
    /// set by [`crate::MultiRaft`], whatever the proposer's command said.
    #[prost(uint64, tag = "5")]
    pub proposed_at_ms: u64,
}

impl Command {
    pub fn new(client_id: u64, request_id: u64, payload: Vec<u8>) -> Self {
        Self { client_id, request_id, payload, compact_log_to: 0, proposed_at_ms: 0 }
    }

    /// The leader's request to compact every replica's log up to `index`.
    pub fn compact_log(index: u64) -> Self {
        Self { compact_log_to: index, ..Self::default() }
    }

    /// The command encoded as a log entry's data, stamped `proposed_at_ms`. The stamp
    /// is appended as one more field (protobuf keeps the last occurrence of a field), so
    /// a payload of megabytes is not copied to set it.
    pub(crate) fn encode_stamped(&self, proposed_at_ms: u64) -> Vec<u8> {
        let mut data = self.encode_to_vec();
        prost::encoding::uint64::encode(5, &proposed_at_ms, &mut data);
        data
    }

    /// The stamp of an entry's data, if it is a command that carries one. Only the
    /// stamp's field is decoded: the others, the payload of megabytes among them, are
    /// skipped rather than copied.
    pub(crate) fn stamp_of(data: &[u8]) -> Option<u64> {
        Stamp::decode(data).ok().map(|s| s.proposed_at_ms).filter(|&ms| ms > 0)
    }
}

/// [`Command`]'s stamp field alone (the same tag), to read it from an entry cheaply.
#[derive(Clone, PartialEq, Message)]
struct Stamp {
    #[prost(uint64, tag = "5")]
    proposed_at_ms: u64,
}

/// The wall clock in ms since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_overrides_what_the_proposer_wrote_and_keeps_the_rest() {
        let mut command = Command::new(7, 8, b"payload".to_vec());
        command.proposed_at_ms = 5;
        let data = command.encode_stamped(1_700_000_000_000);
        let decoded = Command::decode(data.as_slice()).unwrap();
        assert_eq!((decoded.client_id, decoded.request_id, decoded.payload.as_slice()), (7, 8, &b"payload"[..]));
        assert_eq!(Command::stamp_of(&data), Some(1_700_000_000_000));
        assert_eq!(Command::stamp_of(&Command::compact_log(3).encode_to_vec()), None);
    }
}
