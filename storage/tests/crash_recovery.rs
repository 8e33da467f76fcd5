//! A writer process is killed with SIGKILL mid-stream; after reopening, every write it
//! reported as synced must be there, intact. The test binary re-runs itself as the
//! writer (selected by an environment variable) so no extra binary is needed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage as _};
use storage::{Cf, Engine, GroupStorage, RocksEngine, RocksOptions, WriteBatch, keys};

const CHILD_ENV: &str = "UMS_STORAGE_CRASH_CHILD_DIR";
const GROUPS: u64 = 8;

fn payload(group: u64, index: u64) -> Vec<u8> {
    format!("group {group} entry {index} ").repeat(20).into_bytes()
}

/// The writer: appends one entry to every group per round, one fsync per round, and
/// prints the round number after the fsync returned. Runs until killed.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when started by `synced_writes_survive_kill_9`.
    };
    let engine: Engine = Arc::new(RocksEngine::open(dir.as_ref(), &RocksOptions::default()).unwrap());
    let mut groups: Vec<GroupStorage> = (1..=GROUPS)
        .map(|group| {
            let mut batch = WriteBatch::new();
            GroupStorage::bootstrap(group, &ConfState { voters: vec![1], ..Default::default() }, &mut batch);
            engine.write(&batch, true).unwrap();
            GroupStorage::open(Arc::clone(&engine), group).unwrap()
        })
        .collect();
    for round in 1u64.. {
        let mut batch = WriteBatch::new();
        for storage in &mut groups {
            let index = storage.last_index_now() + 1;
            let entry = Entry { index, term: 6, data: payload(storage.group(), index), ..Default::default() };
            storage.append(&[entry], &mut batch);
            storage.set_hard_state(&HardState { term: 6, vote: 1, commit: index }, &mut batch);
            // State-machine data in the same atomic batch.
            batch.put(Cf::Data, keys::data_key(storage.group(), &index.to_be_bytes()), payload(0, index));
        }
        engine.write(&batch, true).unwrap();
        println!("synced {round}");
    }
}

#[test]
fn synced_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_synced = 0;
    while last_synced < 300 {
        let line = lines.next().expect("writer exited early").unwrap();
        if let Some(round) = line.strip_prefix("synced ") {
            last_synced = round.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no clean RocksDB shutdown.
    child.wait().unwrap();
    // Rounds the writer finished after our last read may also be there.
    for line in lines.map_while(Result::ok) {
        if let Some(round) = line.strip_prefix("synced ") {
            last_synced = round.parse().unwrap();
        }
    }

    let engine: Engine = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
    for group in 1..=GROUPS {
        let storage = GroupStorage::open(Arc::clone(&engine), group).unwrap();
        let first = storage.first_index().unwrap();
        let last = storage.last_index().unwrap();
        assert!(last >= first - 1 + last_synced, "group {group}: last index {last}, synced rounds {last_synced}");
        let entries = storage.entries(first, last + 1, None, GetEntriesContext::empty(false)).unwrap();
        for entry in &entries {
            assert_eq!(entry.data, payload(group, entry.index), "group {group} entry {}", entry.index);
            let data = engine.get(Cf::Data, &keys::data_key(group, &entry.index.to_be_bytes())).unwrap();
            assert_eq!(data, Some(payload(0, entry.index)), "state-machine data of entry {}", entry.index);
        }
        assert_eq!(storage.hard_state().commit, last, "hard state written with the entries");
    }
}
