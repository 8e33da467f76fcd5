//! Group snapshots: a consistent view of one group's state-machine data plus the apply
//! state it corresponds to, read in bounded chunks and applied atomically.
//!
//! [`SnapshotReader`] walks an engine snapshot (so concurrent applies do not tear it) and
//! yields chunks of at most a given size; a transport can stream them one by one.
//! [`SnapshotWriter`] clears the group's old data and writes the chunks and the new apply
//! state into one [`WriteBatch`], so a crash mid-way leaves the old state intact.
//! For raft-rs, which moves a snapshot as one message, [`build_raft_snapshot`] and
//! [`apply_raft_snapshot`] pack the chunks into `Snapshot::data`.

use prost::Message;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::engine::{Cf, Engine, KvRead, WriteBatch};
use crate::raft_log::GroupStorage;
use crate::states::{ApplyState, decode};
use crate::{Error, GroupId, Result, keys};

/// Default upper bound of one chunk's payload.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// One key-value pair of a snapshot; `key` is relative to the group prefix.
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotPair {
    #[prost(uint32, tag = "1")]
    pub cf: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

/// A bounded piece of a snapshot stream.
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotChunk {
    #[prost(message, repeated, tag = "1")]
    pub pairs: Vec<SnapshotPair>,
}

/// What `raft::eraftpb::Snapshot::data` carries: the group and its chunks.
#[derive(Clone, PartialEq, Message)]
struct SnapshotData {
    #[prost(uint64, tag = "1")]
    group: u64,
    #[prost(message, repeated, tag = "2")]
    chunks: Vec<SnapshotChunk>,
}

/// Reads one group's data from a point-in-time view, chunk by chunk.
pub struct SnapshotReader {
    view: Box<dyn KvRead + Send>,
    group: GroupId,
    metadata: SnapshotMetadata,
    /// Position in [`Cf::STATE_MACHINE`] and the key to resume from there.
    family: usize,
    resume_from: Vec<u8>,
}

impl SnapshotReader {
    /// Pins a consistent view of `group` as of its last written apply state.
    pub fn new(engine: &Engine, group: GroupId) -> Result<Self> {
        let view = engine.snapshot();
        let apply_state: ApplyState = match view.get(Cf::RaftState, &keys::apply_state_key(group))? {
            Some(bytes) => decode(group, "apply state", &bytes)?,
            None => {
                return Err(Error::InvalidSnapshot { group, detail: "group has no apply state on this node".into() });
            }
        };
        let metadata = SnapshotMetadata {
            conf_state: apply_state.conf_state,
            index: apply_state.applied_index,
            term: apply_state.applied_term,
        };
        Ok(Self { view, group, metadata, family: 0, resume_from: keys::group_range(group).0 })
    }

    /// Position and membership the snapshot reflects.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// The next chunk of at most about `max_bytes` (a single larger value still forms a
    /// chunk of its own), or `None` when the whole group has been read.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Result<Option<SnapshotChunk>> {
        let (_, group_end) = keys::group_range(self.group);
        let mut chunk = SnapshotChunk::default();
        let mut bytes = 0;
        while self.family < Cf::STATE_MACHINE.len() {
            let cf = Cf::STATE_MACHINE[self.family];
            let mut last_key = None;
            let mut full = false;
            self.view.scan(cf, &self.resume_from, &group_end, &mut |key, value| {
                if bytes > 0 && bytes + key.len() + value.len() > max_bytes {
                    full = true;
                    return false;
                }
                bytes += key.len() + value.len();
                chunk.pairs.push(SnapshotPair { cf: cf as u32, key: key[8..].to_vec(), value: value.to_vec() });
                last_key = Some(key.to_vec());
                true
            })?;
            if full {
                // Nothing taken from this family yet (the chunk filled up in an earlier
                // one): resume where this family's scan began.
                if let Some(key) = last_key {
                    self.resume_from = keys::next_key(&key);
                }
                return Ok(Some(chunk));
            }
            self.family += 1;
            self.resume_from = keys::group_range(self.group).0;
        }
        Ok((!chunk.pairs.is_empty()).then_some(chunk))
    }
}

/// Writes a received snapshot over a group's data, staged in one batch.
pub struct SnapshotWriter {
    group: GroupId,
}

impl SnapshotWriter {
    /// Stages deletion of the group's current state-machine data.
    pub fn begin(group: GroupId, batch: &mut WriteBatch) -> Self {
        let (start, end) = keys::group_range(group);
        for cf in Cf::STATE_MACHINE {
            batch.delete_range(cf, start.clone(), end.clone());
        }
        Self { group }
    }

    pub fn write_chunk(&self, chunk: SnapshotChunk, batch: &mut WriteBatch) -> Result<()> {
        for pair in chunk.pairs {
            let cf = Cf::from_u32(pair.cf).filter(|cf| Cf::STATE_MACHINE.contains(cf)).ok_or_else(|| {
                Error::InvalidSnapshot {
                    group: self.group,
                    detail: format!("pair in column family {} which snapshots never carry", pair.cf),
                }
            })?;
            batch.put(cf, keys::data_key(self.group, &pair.key), pair.value);
        }
        Ok(())
    }

    /// Stages the apply state matching the snapshot.
    pub fn finish(self, metadata: &SnapshotMetadata, batch: &mut WriteBatch) {
        let apply_state = ApplyState {
            applied_index: metadata.index,
            applied_term: metadata.term,
            conf_state: metadata.conf_state.clone(),
        };
        batch.put(Cf::RaftState, keys::apply_state_key(self.group), apply_state.encode_to_vec());
    }
}

/// Builds the whole snapshot of `group` as raft-rs moves it: all chunks in `data`.
pub fn build_raft_snapshot(engine: &Engine, group: GroupId) -> Result<Snapshot> {
    let mut reader = SnapshotReader::new(engine, group)?;
    let mut data = SnapshotData { group, chunks: Vec::new() };
    while let Some(chunk) = reader.next_chunk(DEFAULT_CHUNK_BYTES)? {
        data.chunks.push(chunk);
    }
    Ok(Snapshot { data: data.encode_to_vec(), metadata: Some(reader.metadata().clone()) })
}

/// Stages a raft-rs snapshot for `storage`'s group: data, apply state and log reset.
pub fn apply_raft_snapshot(storage: &mut GroupStorage, snapshot: &Snapshot, batch: &mut WriteBatch) -> Result<()> {
    let group = storage.group();
    let data: SnapshotData = decode(group, "snapshot data", &snapshot.data)?;
    if data.group != group {
        return Err(Error::InvalidSnapshot { group, detail: format!("snapshot belongs to group {}", data.group) });
    }
    let metadata = snapshot.metadata.clone().unwrap_or_default();
    let writer = SnapshotWriter::begin(group, batch);
    for chunk in data.chunks {
        writer.write_chunk(chunk, batch)?;
    }
    writer.finish(&metadata, batch);
    storage.apply_snapshot_metadata(&metadata, batch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use raft::Storage as _;
    use raft::eraftpb::ConfState;

    use super::*;
    use crate::{MemEngine, RocksEngine, RocksOptions};

    fn fill(engine: &Engine, group: GroupId, count: u32, applied_index: u64) {
        let mut batch = WriteBatch::new();
        for i in 0..count {
            batch.put(Cf::Data, keys::data_key(group, &i.to_be_bytes()), vec![group as u8; 100]);
            batch.put(Cf::Blobs, keys::data_key(group, &i.to_be_bytes()), vec![i as u8; 5000]);
        }
        let apply_state = ApplyState {
            applied_index,
            applied_term: 3,
            conf_state: Some(ConfState { voters: vec![1, 2, 3], ..Default::default() }),
        };
        batch.put(Cf::RaftState, keys::apply_state_key(group), apply_state.encode_to_vec());
        engine.write(&batch, true).unwrap();
    }

    fn dump(engine: &Engine, group: GroupId) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
        let (start, end) = keys::group_range(group);
        let mut out = Vec::new();
        for cf in Cf::STATE_MACHINE {
            engine
                .scan(cf, &start, &end, &mut |k, v| {
                    out.push((cf, k.to_vec(), v.to_vec()));
                    true
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn chunks_respect_the_size_bound_and_cover_everything() {
        let dir = tempfile::tempdir().unwrap();
        let engine: Engine = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
        fill(&engine, 4, 50, 77);
        fill(&engine, 5, 10, 12);
        let mut reader = SnapshotReader::new(&engine, 4).unwrap();
        // Writes after the reader pinned its view are not part of the snapshot.
        fill(&engine, 4, 60, 90);
        assert_eq!(reader.metadata().index, 77);
        let mut pairs = 0;
        let mut chunks = 0;
        while let Some(chunk) = reader.next_chunk(16 * 1024).unwrap() {
            let bytes: usize = chunk.pairs.iter().map(|p| p.key.len() + 8 + p.value.len()).sum();
            assert!(bytes <= 16 * 1024 || chunk.pairs.len() == 1, "chunk of {bytes} bytes");
            pairs += chunk.pairs.len();
            chunks += 1;
        }
        assert_eq!(pairs, 100);
        assert!(chunks > 10, "expected many chunks, got {chunks}");
    }

    /// The chunk ends with the data family's last pair and the blob family's first value
    /// is bigger than a whole chunk: it must begin the next chunk (this once panicked the
    /// leader building a snapshot of a shard with a 1 MiB message).
    #[test]
    fn a_value_bigger_than_a_chunk_at_the_start_of_a_family_gets_a_chunk_of_its_own() {
        let engine: Engine = Arc::new(MemEngine::new());
        fill(&engine, 3, 0, 5);
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, keys::data_key(3, b"small"), vec![1; 100]);
        batch.put(Cf::Blobs, keys::data_key(3, b"big"), vec![2; 50_000]);
        batch.put(Cf::Blobs, keys::data_key(3, b"later"), vec![3; 10]);
        engine.write(&batch, true).unwrap();
        let mut reader = SnapshotReader::new(&engine, 3).unwrap();
        let mut sizes = Vec::new();
        while let Some(chunk) = reader.next_chunk(16 * 1024).unwrap() {
            sizes.push(chunk.pairs.iter().map(|p| p.value.len()).collect::<Vec<_>>());
        }
        assert_eq!(sizes, [vec![100], vec![50_000], vec![10]]);
    }

    #[test]
    fn raft_snapshot_round_trip_replaces_old_data() {
        let source: Engine = Arc::new(MemEngine::new());
        fill(&source, 7, 30, 40);
        fill(&source, 8, 5, 9);
        let snapshot = build_raft_snapshot(&source, 7).unwrap();

        let target: Engine = Arc::new(MemEngine::new());
        // Stale data on the target must disappear, a neighbouring group must not.
        fill(&target, 7, 45, 20);
        fill(&target, 6, 3, 5);
        let neighbour = dump(&target, 6);
        let mut storage = GroupStorage::open(Arc::clone(&target), 7).unwrap();
        let mut batch = WriteBatch::new();
        apply_raft_snapshot(&mut storage, &snapshot, &mut batch).unwrap();
        target.write(&batch, true).unwrap();

        assert_eq!(dump(&target, 7), dump(&source, 7));
        assert_eq!(dump(&target, 6), neighbour);
        assert_eq!(storage.first_index().unwrap(), 41);
        assert_eq!(storage.last_index().unwrap(), 40);
        assert_eq!(storage.term(40).unwrap(), 3);
        assert_eq!(storage.apply_state().unwrap().applied_index, 40);
        let reopened = GroupStorage::open(Arc::clone(&target), 7).unwrap();
        assert_eq!(reopened.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);

        let mut wrong_group = GroupStorage::open(Arc::clone(&target), 6).unwrap();
        assert!(apply_raft_snapshot(&mut wrong_group, &snapshot, &mut WriteBatch::new()).is_err());
    }
}
