//! [`GroupStorage`]: one Raft group's log and states on the shared engine, implementing
//! `raft::Storage` for raft-rs.
//!
//! Mutations (`append`, `set_hard_state`, `compact`, `apply_snapshot`) only *stage* writes
//! into a caller's [`WriteBatch`] and update the in-memory view at once. The caller writes
//! the batch (with the other groups' writes, one fsync) before it lets raft-rs observe the
//! new state, which is why the eager in-memory update is safe. Recent entries are cached
//! so replication and apply rarely read the engine.

use std::collections::VecDeque;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::engine::{Cf, Engine, WriteBatch};
use crate::keys;
use crate::states::{ApplyState, Tombstone, TruncatedState, decode};
use crate::{GroupId, Result};

/// Index and term at which a freshly bootstrapped group starts, as TiKV does: a
/// non-zero starting point keeps raft-rs away from its "uninitialised storage" cases.
pub const BOOTSTRAP_INDEX: u64 = 5;
pub const BOOTSTRAP_TERM: u64 = 5;

/// Cap on cached entries per group; older entries are read from the engine.
const CACHE_MAX_ENTRIES: usize = 4096;
const CACHE_MAX_BYTES: usize = 8 << 20;

/// One group's Raft log, hard state and membership, backed by the shared engine.
pub struct GroupStorage {
    group: GroupId,
    engine: Engine,
    hard_state: HardState,
    /// Membership as of the applied index (what raft-rs restarts from).
    conf_state: ConfState,
    truncated: TruncatedState,
    last_index: u64,
    last_term: u64,
    /// The newest entries, contiguous and ending at `last_index` when non-empty.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
}

impl GroupStorage {
    /// Stages the initial records of a new group whose replicas are `conf_state`.
    /// Every replica bootstrapped this way starts from the same index and term.
    pub fn bootstrap(group: GroupId, conf_state: &ConfState, batch: &mut WriteBatch) {
        let hard_state = HardState { term: BOOTSTRAP_TERM, vote: 0, commit: BOOTSTRAP_INDEX };
        let truncated = TruncatedState { index: BOOTSTRAP_INDEX, term: BOOTSTRAP_TERM };
        let apply_state = ApplyState {
            applied_index: BOOTSTRAP_INDEX,
            applied_term: BOOTSTRAP_TERM,
            conf_state: Some(conf_state.clone()),
        };
        batch.put(Cf::RaftState, keys::hard_state_key(group), hard_state.encode_to_vec());
        batch.put(Cf::RaftState, keys::truncated_state_key(group), truncated.encode_to_vec());
        batch.put(Cf::RaftState, keys::apply_state_key(group), apply_state.encode_to_vec());
    }

    /// Stages the Raft records of a group restored from a snapshot taken elsewhere (a
    /// backup), whose data and apply state [`crate::snapshot::SnapshotWriter`] stages in
    /// the same batch: an empty log starting after the snapshot, everything up to it
    /// committed, at its term, with no vote cast.
    pub fn restore(group: GroupId, metadata: &SnapshotMetadata, batch: &mut WriteBatch) {
        let hard_state = HardState { term: metadata.term, vote: 0, commit: metadata.index };
        let truncated = TruncatedState { index: metadata.index, term: metadata.term };
        batch.put(Cf::RaftState, keys::hard_state_key(group), hard_state.encode_to_vec());
        batch.put(Cf::RaftState, keys::truncated_state_key(group), truncated.encode_to_vec());
    }

    /// Whether `group` has any persisted state on this engine.
    pub fn exists(engine: &Engine, group: GroupId) -> Result<bool> {
        Ok(engine.get(Cf::RaftState, &keys::hard_state_key(group))?.is_some())
    }

    /// Loads a group's persisted state. A group never written here opens empty (first
    /// index 1, no members): that is a replica about to receive a snapshot.
    pub fn open(engine: Engine, group: GroupId) -> Result<Self> {
        let hard_state = match engine.get(Cf::RaftState, &keys::hard_state_key(group))? {
            Some(bytes) => decode(group, "hard state", &bytes)?,
            None => HardState::default(),
        };
        let truncated = match engine.get(Cf::RaftState, &keys::truncated_state_key(group))? {
            Some(bytes) => decode(group, "truncated state", &bytes)?,
            None => TruncatedState::default(),
        };
        let apply_state = load_apply_state(&engine, group)?;
        let (start, end) = (keys::log_key(group, 0), keys::log_key(group, u64::MAX));
        let (last_index, last_term) = match engine.last_key(Cf::RaftLog, &start, &end)? {
            Some(key) => {
                let index = keys::log_index(&key);
                let entry = read_entry(&engine, group, index)?;
                (index, entry.term)
            }
            None => (truncated.index, truncated.term),
        };
        Ok(Self {
            group,
            engine,
            hard_state,
            conf_state: apply_state.conf_state.unwrap_or_default(),
            truncated,
            last_index,
            last_term,
            cache: VecDeque::new(),
            cache_bytes: 0,
        })
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Membership as of the applied index.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn truncated(&self) -> TruncatedState {
        self.truncated
    }

    pub fn last_index_now(&self) -> u64 {
        self.last_index
    }

    /// The persisted apply state of this group (as of the last written batch).
    pub fn apply_state(&self) -> Result<ApplyState> {
        load_apply_state(&self.engine, self.group)
    }

    /// Records the membership as of the applied index (after a conf change is applied).
    /// The caller persists it in the group's [`ApplyState`].
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Stages `entries` (contiguous, from raft-rs `Ready::entries`), replacing any
    /// conflicting suffix of the log.
    ///
    /// # Panics
    /// Panics if the entries would leave a gap in the log: raft-rs never asks for that.
    pub fn append(&mut self, entries: &[Entry], batch: &mut WriteBatch) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        assert!(
            first.index <= self.last_index + 1 && first.index > self.truncated.index,
            "group {}: append of {}..={} leaves a gap (log {}..={})",
            self.group,
            first.index,
            last.index,
            self.truncated.index + 1,
            self.last_index
        );
        for entry in entries {
            batch.put(Cf::RaftLog, keys::log_key(self.group, entry.index), entry.encode_to_vec());
        }
        if last.index < self.last_index {
            batch.delete_range(
                Cf::RaftLog,
                keys::log_key(self.group, last.index + 1),
                keys::log_key(self.group, self.last_index + 1),
            );
        }
        // Keep the cache contiguous: drop what the new entries replace, then push them.
        while self.cache.back().is_some_and(|e| e.index >= first.index) {
            let dropped = self.cache.pop_back().expect("checked non-empty");
            self.cache_bytes -= dropped.data.len();
        }
        if self.cache.back().is_some_and(|e| e.index + 1 != first.index) {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        for entry in entries {
            self.cache_bytes += entry.data.len();
            self.cache.push_back(entry.clone());
        }
        while self.cache.len() > CACHE_MAX_ENTRIES || self.cache_bytes > CACHE_MAX_BYTES {
            let dropped = self.cache.pop_front().expect("cache over limit is non-empty");
            self.cache_bytes -= dropped.data.len();
        }
        self.last_index = last.index;
        self.last_term = last.term;
    }

    pub fn set_hard_state(&mut self, hard_state: &HardState, batch: &mut WriteBatch) {
        batch.put(Cf::RaftState, keys::hard_state_key(self.group), hard_state.encode_to_vec());
        self.hard_state = hard_state.clone();
    }

    /// Stages removal of every entry up to and including `index`, which must already be
    /// applied. Returns false (and stages nothing) when there is nothing to remove.
    pub fn compact(&mut self, index: u64, batch: &mut WriteBatch) -> Result<bool> {
        if index <= self.truncated.index || index > self.last_index {
            return Ok(false);
        }
        let term = self.entry_term(index)?;
        batch.delete_range(
            Cf::RaftLog,
            keys::log_key(self.group, self.truncated.index + 1),
            keys::log_key(self.group, index + 1),
        );
        self.truncated = TruncatedState { index, term };
        batch.put(Cf::RaftState, keys::truncated_state_key(self.group), self.truncated.encode_to_vec());
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let dropped = self.cache.pop_front().expect("checked non-empty");
            self.cache_bytes -= dropped.data.len();
        }
        Ok(true)
    }

    /// Stages replacing the whole log with the snapshot's position: the log becomes empty
    /// and starts after `meta.index`. The state-machine data is written by
    /// [`crate::snapshot::apply_raft_snapshot`], in the same batch.
    pub fn apply_snapshot_metadata(&mut self, meta: &SnapshotMetadata, batch: &mut WriteBatch) {
        batch.delete_range(Cf::RaftLog, keys::log_key(self.group, 0), keys::log_key(self.group, u64::MAX));
        self.truncated = TruncatedState { index: meta.index, term: meta.term };
        batch.put(Cf::RaftState, keys::truncated_state_key(self.group), self.truncated.encode_to_vec());
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        batch.put(Cf::RaftState, keys::hard_state_key(self.group), self.hard_state.encode_to_vec());
        self.conf_state = meta.conf_state.clone().unwrap_or_default();
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.cache.clear();
        self.cache_bytes = 0;
    }

    /// Stages deletion of everything this group stored, after it was removed from this
    /// node as of log index `removed_at`, and leaves a [`Tombstone`] so stale messages do
    /// not recreate it.
    pub fn destroy(&mut self, removed_at: u64, batch: &mut WriteBatch) {
        let (start, end) = keys::group_range(self.group);
        for cf in Cf::ALL {
            batch.delete_range(cf, start.clone(), end.clone());
        }
        let tombstone = Tombstone { removed_at, term: self.hard_state.term, vote: self.hard_state.vote };
        batch.put(Cf::RaftState, keys::tombstone_key(self.group), tombstone.encode_to_vec());
        self.cache.clear();
        self.cache_bytes = 0;
    }

    /// The tombstone `group` left here when it was removed (see [`GroupStorage::destroy`]).
    /// One written before tombstones had contents forbids any return.
    pub fn tombstone(engine: &Engine, group: GroupId) -> Result<Option<Tombstone>> {
        let Some(bytes) = engine.get(Cf::RaftState, &keys::tombstone_key(group))? else {
            return Ok(None);
        };
        if bytes.is_empty() {
            return Ok(Some(Tombstone { removed_at: u64::MAX, term: u64::MAX, vote: 0 }));
        }
        decode(group, "tombstone", &bytes).map(Some)
    }

    /// Stages the start of a replica created again where `tombstone` lay: the term and
    /// vote it had, nothing else (it catches up by snapshot).
    pub fn revive(group: GroupId, tombstone: &Tombstone, batch: &mut WriteBatch) {
        let hard_state = HardState { term: tombstone.term, vote: tombstone.vote, commit: 0 };
        batch.delete(Cf::RaftState, keys::tombstone_key(group));
        batch.put(Cf::RaftState, keys::hard_state_key(group), hard_state.encode_to_vec());
    }

    /// Every group with persisted state on this engine, in ascending order.
    pub fn list_groups(engine: &Engine) -> Result<Vec<GroupId>> {
        let mut groups = Vec::new();
        engine.scan(Cf::RaftState, &[], &[0xff; 9], &mut |key, _| {
            groups.extend(keys::group_of_hard_state_key(key));
            true
        })?;
        Ok(groups)
    }

    fn entry_term(&self, index: u64) -> Result<u64> {
        if index == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if index == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(entry) = self.cached(index) {
            return Ok(entry.term);
        }
        Ok(read_entry(&self.engine, self.group, index)?.term)
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        if index < front {
            return None;
        }
        self.cache.get((index - front) as usize)
    }
}

fn load_apply_state(engine: &Engine, group: GroupId) -> Result<ApplyState> {
    match engine.get(Cf::RaftState, &keys::apply_state_key(group))? {
        Some(bytes) => decode(group, "apply state", &bytes),
        None => Ok(ApplyState::default()),
    }
}

fn read_entry(engine: &Engine, group: GroupId, index: u64) -> Result<Entry> {
    match engine.get(Cf::RaftLog, &keys::log_key(group, index))? {
        Some(bytes) => decode(group, "log entry", &bytes),
        None => Err(crate::Error::Corrupt {
            group,
            what: "log entry",
            detail: format!("entry {index} missing inside the log range"),
        }),
    }
}

fn to_raft_error(e: crate::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low <= self.truncated.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index + 1,
            "group {}: entries [{low}, {high}) beyond last index {}",
            self.group,
            self.last_index
        );
        let mut entries = Vec::with_capacity((high - low) as usize);
        let cache_front = self.cache.front().map(|e| e.index).unwrap_or(u64::MAX);
        if low < cache_front {
            let disk_high = high.min(cache_front);
            let mut failure = None;
            self.engine
                .scan(
                    Cf::RaftLog,
                    &keys::log_key(self.group, low),
                    &keys::log_key(self.group, disk_high),
                    &mut |_, value| match Entry::decode(value) {
                        Ok(entry) => {
                            entries.push(entry);
                            true
                        }
                        Err(e) => {
                            failure = Some(e.to_string());
                            false
                        }
                    },
                )
                .map_err(to_raft_error)?;
            if let Some(detail) = failure {
                return Err(to_raft_error(crate::Error::Corrupt { group: self.group, what: "log entry", detail }));
            }
            if entries.len() as u64 != disk_high - low {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
        }
        for index in low.max(cache_front)..high {
            entries.push(self.cached(index).expect("cache is contiguous to last index").clone());
        }
        raft::util::limit_size(&mut entries, max_size);
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.truncated.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry_term(index).map_err(to_raft_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = crate::snapshot::build_raft_snapshot(&self.engine, self.group).map_err(to_raft_error)?;
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        if index < request_index {
            // The applied state has not reached the requested index yet; raft-rs retries.
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use raft::Storage as _;

    use super::*;
    use crate::MemEngine;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("e{index}t{term}").into_bytes(), ..Default::default() }
    }

    fn voters(ids: &[u64]) -> ConfState {
        ConfState { voters: ids.to_vec(), ..Default::default() }
    }

    fn bootstrapped(engine: &Engine, group: GroupId) -> GroupStorage {
        let mut batch = WriteBatch::new();
        GroupStorage::bootstrap(group, &voters(&[1, 2, 3]), &mut batch);
        engine.write(&batch, true).unwrap();
        GroupStorage::open(Arc::clone(engine), group).unwrap()
    }

    #[test]
    fn bootstrap_then_append_overwrite_and_reopen() {
        let engine: Engine = Arc::new(MemEngine::new());
        let mut storage = bootstrapped(&engine, 9);
        assert_eq!(storage.first_index().unwrap(), BOOTSTRAP_INDEX + 1);
        assert_eq!(storage.last_index().unwrap(), BOOTSTRAP_INDEX);
        assert_eq!(storage.term(BOOTSTRAP_INDEX).unwrap(), BOOTSTRAP_TERM);
        assert_eq!(storage.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);

        let mut batch = WriteBatch::new();
        storage.append(&(6..=10).map(|i| entry(i, 6)).collect::<Vec<_>>(), &mut batch);
        // A new leader overwrites 8..=10 with a shorter suffix.
        storage.append(&[entry(8, 7)], &mut batch);
        engine.write(&batch, true).unwrap();
        assert_eq!(storage.last_index().unwrap(), 8);
        assert_eq!(storage.term(8).unwrap(), 7);

        let reopened = GroupStorage::open(Arc::clone(&engine), 9).unwrap();
        assert_eq!(reopened.last_index().unwrap(), 8);
        let from_disk = reopened.entries(6, 9, None, GetEntriesContext::empty(false)).unwrap();
        let from_cache = storage.entries(6, 9, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(from_disk, from_cache);
        assert_eq!(from_disk.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(6, 6), (7, 6), (8, 7)]);
        // The size limit still returns at least one entry.
        assert_eq!(reopened.entries(6, 9, Some(1), GetEntriesContext::empty(false)).unwrap().len(), 1);
    }

    #[test]
    fn compaction_moves_first_index_and_keeps_boundary_term() {
        let engine: Engine = Arc::new(MemEngine::new());
        let mut storage = bootstrapped(&engine, 1);
        let mut batch = WriteBatch::new();
        storage.append(&(6..=20).map(|i| entry(i, 6)).collect::<Vec<_>>(), &mut batch);
        engine.write(&batch, true).unwrap();

        let mut batch = WriteBatch::new();
        assert!(storage.compact(15, &mut batch).unwrap());
        assert!(!storage.compact(10, &mut batch).unwrap(), "already compacted");
        engine.write(&batch, true).unwrap();
        for storage in [storage, GroupStorage::open(Arc::clone(&engine), 1).unwrap()] {
            assert_eq!(storage.first_index().unwrap(), 16);
            assert_eq!(storage.term(15).unwrap(), 6);
            assert!(matches!(storage.term(14), Err(raft::Error::Store(StorageError::Compacted))));
            assert!(matches!(
                storage.entries(15, 17, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(StorageError::Compacted))
            ));
            assert_eq!(storage.entries(16, 21, None, GetEntriesContext::empty(false)).unwrap().len(), 5);
        }
    }

    #[test]
    fn groups_do_not_see_each_others_entries() {
        let engine: Engine = Arc::new(MemEngine::new());
        let mut one = bootstrapped(&engine, 1);
        let two = bootstrapped(&engine, 2);
        let mut batch = WriteBatch::new();
        one.append(&[entry(6, 6), entry(7, 6)], &mut batch);
        engine.write(&batch, true).unwrap();
        assert_eq!(GroupStorage::open(Arc::clone(&engine), 2).unwrap().last_index().unwrap(), 5);
        assert_eq!(two.last_index().unwrap(), 5);
        assert!(!GroupStorage::exists(&engine, 3).unwrap());
    }
}
