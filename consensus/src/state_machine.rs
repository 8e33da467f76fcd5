//! The interface between the log and the application: committed commands are applied
//! through [`StateMachine::apply`], which reads and writes the group's replicated data
//! through an [`ApplyContext`].
//!
//! All of a round's apply writes go into one batch; the context reads through a staging
//! overlay so a command sees the writes of the commands applied before it in the same
//! round. The batch also carries each group's apply state, so data and applied index
//! always agree on disk.

use std::collections::HashMap;

use storage::{Cf, KvRead, WriteBatch, keys};

use crate::GroupId;

/// First byte of every state-machine key inside a group's range (the dedup table uses
/// [`crate::dedup::DEDUP_PREFIX`]), so the two never collide.
const STATE_MACHINE_PREFIX: u8 = 0x01;

/// The engine key under which a state machine's `key` of `group` is stored in `Cf::Data`
/// or `Cf::Blobs`. Read paths outside apply (after a ReadIndex) use this to find data.
pub fn state_machine_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(1 + key.len());
    inner.push(STATE_MACHINE_PREFIX);
    inner.extend_from_slice(key);
    keys::data_key(group, &inner)
}

/// The state machine's own key in a key relative to its group (as snapshots carry
/// them), or `None` for the engine's records kept beside it (exactly-once records).
pub fn state_machine_key_in_group(relative: &[u8]) -> Option<&[u8]> {
    relative.strip_prefix(&[STATE_MACHINE_PREFIX])
}

/// The application's replicated logic. Implementations must be deterministic: every
/// replica applies the same commands in the same order and must reach the same state.
pub trait StateMachine {
    /// Applies one committed command and returns the response for its proposer.
    /// Business failures (unknown user, bad input) are responses, not panics.
    fn apply(&mut self, ctx: &mut ApplyContext<'_>, payload: &[u8]) -> Vec<u8>;

    /// The group's data was replaced by a snapshot; drop any cache derived from it.
    fn on_snapshot_applied(&mut self, _group: GroupId) {}

    /// The group was removed from this node and its data deleted.
    fn on_group_removed(&mut self, _group: GroupId) {}

    /// What the last round applied is written to the engine, so readers see it now.
    fn on_applied_written(&mut self) {}
}

/// Writes staged by one round of applies, readable before they are committed.
#[derive(Default)]
pub struct ApplyBatch {
    pub(crate) batch: WriteBatch,
    /// Latest staged value per engine key; `None` marks a staged delete.
    overlay: HashMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
}

impl ApplyBatch {
    pub(crate) fn get(&self, engine: &dyn KvRead, cf: Cf, key: &[u8]) -> storage::Result<Option<Vec<u8>>> {
        match self.overlay.get(&(cf, key.to_vec())) {
            Some(staged) => Ok(staged.clone()),
            None => engine.get(cf, key),
        }
    }

    pub(crate) fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.batch.put(cf, key.clone(), value.clone());
        self.overlay.insert((cf, key), Some(value));
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.batch.delete(cf, key.clone());
        self.overlay.insert((cf, key), None);
    }

    /// Staged writes of `cf` in `[start, end)` (engine keys), for merging into a scan.
    fn staged_in(&self, cf: Cf, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.overlay
            .iter()
            .filter(|((c, k), _)| *c == cf && k.as_slice() >= start && k.as_slice() < end)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn take_batch(&mut self) -> WriteBatch {
        self.overlay.clear();
        std::mem::take(&mut self.batch)
    }
}

/// What a state machine sees while applying one entry of one group.
pub struct ApplyContext<'a> {
    pub(crate) group: GroupId,
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) engine: &'a dyn KvRead,
    pub(crate) staged: &'a mut ApplyBatch,
}

impl<'a> ApplyContext<'a> {
    /// A context over `engine` with writes staged in `staged`, as the round makes one;
    /// for state machines' own unit tests.
    pub fn new(group: GroupId, index: u64, engine: &'a dyn KvRead, staged: &'a mut ApplyBatch) -> Self {
        Self { group, index, term: 1, engine, staged }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Log index of the entry being applied (unique and increasing within the group).
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// Reads the group's `key`, including writes staged earlier in this round.
    ///
    /// # Panics
    /// Panics if the engine fails: a replica that cannot read its state cannot apply.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        assert_state_machine_cf(cf);
        self.staged
            .get(self.engine, cf, &state_machine_key(self.group, key))
            .unwrap_or_else(|e| panic!("group {}: read during apply failed: {e}", self.group))
    }

    /// Visits the group's keys in `[start, end)` in order, with their values, including
    /// writes staged earlier in this round; keys are relative to the group, as `get`
    /// takes them. `visit` returns false to stop early.
    ///
    /// # Panics
    /// Panics if the engine fails, like [`ApplyContext::get`].
    pub fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        assert_state_machine_cf(cf);
        let (start, end) = (state_machine_key(self.group, start), state_machine_key(self.group, end));
        let mut merged = std::collections::BTreeMap::new();
        self.engine
            .scan(cf, &start, &end, &mut |k, v| {
                merged.insert(k.to_vec(), v.to_vec());
                true
            })
            .unwrap_or_else(|e| panic!("group {}: scan during apply failed: {e}", self.group));
        for (key, staged) in self.staged.staged_in(cf, &start, &end) {
            match staged {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        }
        let prefix = state_machine_key(self.group, &[]).len();
        for (key, value) in &merged {
            if !visit(&key[prefix..], value) {
                return;
            }
        }
    }

    pub fn put(&mut self, cf: Cf, key: &[u8], value: Vec<u8>) {
        assert_state_machine_cf(cf);
        self.staged.put(cf, state_machine_key(self.group, key), value);
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        assert_state_machine_cf(cf);
        self.staged.delete(cf, state_machine_key(self.group, key));
    }
}

fn assert_state_machine_cf(cf: Cf) {
    assert!(Cf::STATE_MACHINE.contains(&cf), "state machines may only use the data and blob families, not {cf:?}");
}
