//! An in-memory engine for deterministic simulation. It keeps two copies of the data:
//! what readers see, and what has been synced. [`MemEngine::crash`] throws away every
//! write that was not followed by a synced write, exactly what a power loss does to a
//! real disk, so simulated crash-restarts exercise recovery from the durable state only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::Result;
use crate::engine::{Cf, EngineStats, KvEngine, KvRead, Op, WriteBatch};

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Default)]
struct MemState {
    /// What readers see: every write so far.
    visible: Tables,
    /// What survives a crash: writes up to the last synced one.
    durable: Tables,
    /// Writes since the last sync, in order.
    unsynced: Vec<WriteBatch>,
    stats: EngineStats,
}

/// In-memory [`KvEngine`] with crash semantics. Cheap to create; thread-safe.
#[derive(Default)]
pub struct MemEngine {
    state: Mutex<MemState>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: forgets every write not made durable by a synced write.
    pub fn crash(&self) {
        let mut state = self.state.lock().expect("mem engine lock");
        state.visible = state.durable.clone();
        state.unsynced.clear();
    }
}

fn apply(tables: &mut Tables, batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            Op::Put { cf, key, value } => {
                tables[cf.index()].insert(key.clone(), value.clone());
            }
            Op::Delete { cf, key } => {
                tables[cf.index()].remove(key);
            }
            Op::DeleteRange { cf, start, end } => {
                let table = &mut tables[cf.index()];
                let doomed: Vec<Vec<u8>> = table.range(start.clone()..end.clone()).map(|(k, _)| k.clone()).collect();
                for key in doomed {
                    table.remove(&key);
                }
            }
        }
    }
}

fn scan_table(
    table: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) {
    if start >= end {
        return;
    }
    for (key, value) in table.range(start.to_vec()..end.to_vec()) {
        if !visit(key, value) {
            break;
        }
    }
}

fn last_in_table(table: &BTreeMap<Vec<u8>, Vec<u8>>, start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    if start >= end {
        return None;
    }
    table.range(start.to_vec()..end.to_vec()).next_back().map(|(k, _)| k.clone())
}

impl KvRead for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.state.lock().expect("mem engine lock").visible[cf.index()].get(key).cloned())
    }

    fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let state = self.state.lock().expect("mem engine lock");
        scan_table(&state.visible[cf.index()], start, end, visit);
        Ok(())
    }

    fn last_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let state = self.state.lock().expect("mem engine lock");
        Ok(last_in_table(&state.visible[cf.index()], start, end))
    }
}

impl KvEngine for MemEngine {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut state = self.state.lock().expect("mem engine lock");
        apply(&mut state.visible, batch);
        state.stats.writes += 1;
        if sync {
            let pending = std::mem::take(&mut state.unsynced);
            for earlier in &pending {
                apply(&mut state.durable, earlier);
            }
            apply(&mut state.durable, batch);
            state.stats.syncs += 1;
        } else {
            state.unsynced.push(batch.clone());
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn KvRead + Send> {
        let state = self.state.lock().expect("mem engine lock");
        Box::new(MemSnapshot { tables: state.visible.clone() })
    }

    fn stats(&self) -> EngineStats {
        self.state.lock().expect("mem engine lock").stats
    }
}

struct MemSnapshot {
    tables: Tables,
}

impl KvRead for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables[cf.index()].get(key).cloned())
    }

    fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        scan_table(&self.tables[cf.index()], start, end, visit);
        Ok(())
    }

    fn last_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(last_in_table(&self.tables[cf.index()], start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_writes_and_drops_the_rest() {
        let engine = MemEngine::new();
        let mut first = WriteBatch::new();
        first.put(Cf::Data, b"a".to_vec(), b"1".to_vec());
        engine.write(&first, false).unwrap();
        let mut second = WriteBatch::new();
        second.put(Cf::Data, b"b".to_vec(), b"2".to_vec());
        engine.write(&second, true).unwrap();
        let mut third = WriteBatch::new();
        third.put(Cf::Data, b"c".to_vec(), b"3".to_vec());
        third.delete(Cf::Data, b"a".to_vec());
        engine.write(&third, false).unwrap();
        assert_eq!(engine.get(Cf::Data, b"c").unwrap(), Some(b"3".to_vec()));

        engine.crash();
        // `a` was made durable by the later sync; `c` and the delete were never synced.
        assert_eq!(engine.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(Cf::Data, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(engine.get(Cf::Data, b"c").unwrap(), None);
        assert_eq!(engine.stats(), EngineStats { writes: 3, syncs: 1 });
    }
}
