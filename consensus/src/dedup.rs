//! Exactly-once apply of client requests.
//!
//! A client that did not get an answer (leader crashed, proposal dropped, timeout)
//! retries with the same `(client_id, request_id)`. Both copies may end up committed;
//! the first one applied records its response here, and later copies return that
//! response without touching the state machine. Records live in the group's data range,
//! so they travel in snapshots and survive failover; they are garbage-collected once
//! they are older than `RaftConfig::dedup_window` log entries.

use prost::Message;
use storage::{Cf, KvRead, WriteBatch, keys};

use crate::GroupId;
use crate::state_machine::ApplyBatch;

/// First byte of dedup keys inside a group's data range.
pub const DEDUP_PREFIX: u8 = 0x00;

#[derive(Clone, PartialEq, Message)]
struct DedupRecord {
    /// Log index at which the request was first applied.
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(bytes = "vec", tag = "2")]
    response: Vec<u8>,
}

fn dedup_key(group: GroupId, client_id: u64, request_id: u64) -> Vec<u8> {
    let mut inner = Vec::with_capacity(17);
    inner.push(DEDUP_PREFIX);
    inner.extend_from_slice(&client_id.to_be_bytes());
    inner.extend_from_slice(&request_id.to_be_bytes());
    keys::data_key(group, &inner)
}

/// The stored response if this request was applied within `window` entries before
/// `index`. An older record counts as gone whether or not it was collected yet, so
/// every replica decides alike although each collects at its own pace.
pub(crate) fn lookup(
    staged: &ApplyBatch,
    engine: &dyn KvRead,
    group: GroupId,
    (client_id, request_id): (u64, u64),
    index: u64,
    window: u64,
) -> storage::Result<Option<Vec<u8>>> {
    let Some(bytes) = staged.get(engine, Cf::Data, &dedup_key(group, client_id, request_id))? else {
        return Ok(None);
    };
    let record = DedupRecord::decode(bytes.as_slice()).map_err(|e| storage::Error::Corrupt {
        group,
        what: "dedup record",
        detail: e.to_string(),
    })?;
    Ok((record.index.saturating_add(window) > index).then_some(record.response))
}

/// Remembers that the request was applied at `index` with `response`.
pub(crate) fn record(
    staged: &mut ApplyBatch,
    group: GroupId,
    client_id: u64,
    request_id: u64,
    index: u64,
    response: &[u8],
) {
    let record = DedupRecord { index, response: response.to_vec() };
    staged.put(Cf::Data, dedup_key(group, client_id, request_id), record.encode_to_vec());
}

/// Stages deletion of records applied before `before_index`. Scans the committed table,
/// so it runs with log compaction, not on every apply.
pub(crate) fn collect_garbage(
    engine: &dyn KvRead,
    group: GroupId,
    before_index: u64,
    batch: &mut WriteBatch,
) -> storage::Result<usize> {
    let start = keys::data_key(group, &[DEDUP_PREFIX]);
    let end = keys::data_key(group, &[DEDUP_PREFIX + 1]);
    let mut removed = 0;
    engine.scan(Cf::Data, &start, &end, &mut |key, value| {
        if DedupRecord::decode(value).is_ok_and(|r| r.index < before_index) {
            batch.delete(Cf::Data, key.to_vec());
            removed += 1;
        }
        true
    })?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use storage::{KvEngine, MemEngine};

    use super::*;

    #[test]
    fn records_are_found_staged_and_committed_and_collected_by_age() {
        let engine = MemEngine::new();
        let mut staged = ApplyBatch::default();
        let window = 1_000;
        assert_eq!(lookup(&staged, &engine, 3, (7, 1), 100, window).unwrap(), None);
        record(&mut staged, 3, 7, 1, 100, b"first");
        record(&mut staged, 3, 7, 2, 200, b"second");
        // Visible before the batch is written, so a duplicate in the same round is caught.
        assert_eq!(lookup(&staged, &engine, 3, (7, 1), 101, window).unwrap(), Some(b"first".to_vec()));
        engine.write(&staged.take_batch(), true).unwrap();
        let staged = ApplyBatch::default();
        assert_eq!(lookup(&staged, &engine, 3, (7, 2), 300, window).unwrap(), Some(b"second".to_vec()));
        assert_eq!(lookup(&staged, &engine, 4, (7, 2), 300, window).unwrap(), None, "other group");
        assert_eq!(
            lookup(&staged, &engine, 3, (7, 1), 1_100, window).unwrap(),
            None,
            "outside the window, collected or not"
        );

        let mut batch = WriteBatch::new();
        assert_eq!(collect_garbage(&engine, 3, 150, &mut batch).unwrap(), 1);
        engine.write(&batch, true).unwrap();
        assert_eq!(lookup(&staged, &engine, 3, (7, 1), 300, window).unwrap(), None);
        assert_eq!(lookup(&staged, &engine, 3, (7, 2), 300, window).unwrap(), Some(b"second".to_vec()));
    }
}
