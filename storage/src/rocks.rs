//! The RocksDB engine: one database per node, one column family per [`Cf`].
//!
//! Synced writes fsync the WAL (fdatasync); unsynced writes reach the WAL too and become
//! durable with the next synced write, because the WAL is a single ordered file.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteOptions,
};

use crate::engine::{Cf, EngineStats, KvEngine, KvRead, Op, WriteBatch};
use crate::{Error, Result};

/// Tuning knobs of the RocksDB engine.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Values in [`Cf::Blobs`] at least this large go to blob files instead of the LSM
    /// tree, so compaction does not rewrite message bodies over and over.
    pub min_blob_size: u64,
    /// Write buffer (memtable) size per column family. Small on purpose: inserting into
    /// a large memtable's skiplist is a chain of cache misses, and with 8 MiB instead of
    /// 64 MiB the cluster spends ~7 % less CPU per acknowledged append (ums-bench), more
    /// than the extra flushes cost.
    pub write_buffer_bytes: usize,
    /// Write buffer of [`Cf::RaftLog`]. Larger than the others: log entries are deleted
    /// soon after they reach every replica (the leader compacts every few hundred
    /// entries), and an entry deleted while still in the memtable is never written to a
    /// file. Appends go next to the group's last entry (see `memtable_hint_options`),
    /// so the size costs no search time.
    pub raft_log_write_buffer_bytes: usize,
    /// DELIBERATELY UNSAFE, for proving that drills catch lost writes: synced writes
    /// are not synced, and the WAL stays in a user-space buffer (up to 4 MiB), so a
    /// kill -9 loses recent "durable" writes. Never enable this on real data.
    pub unsafe_skip_fsync: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            min_blob_size: 4096,
            write_buffer_bytes: 8 << 20,
            raft_log_write_buffer_bytes: 32 << 20,
            unsafe_skip_fsync: false,
        }
    }
}

/// Fail points a drill turns on at run time (through the node's debug API): a slow
/// disk as the layers above see it.
#[derive(Debug, Default)]
pub struct DiskFaults {
    fsync_delay_ms: AtomicU64,
}

impl DiskFaults {
    /// Every synced write takes this much longer (zero: off).
    pub fn set_fsync_delay(&self, delay: Duration) {
        self.fsync_delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn fsync_delay(&self) -> Duration {
        Duration::from_millis(self.fsync_delay_ms.load(Ordering::Relaxed))
    }
}

/// A RocksDB database opened with every UMS column family.
pub struct RocksEngine {
    db: Arc<DB>,
    unsafe_skip_fsync: bool,
    faults: Arc<DiskFaults>,
    writes: AtomicU64,
    syncs: AtomicU64,
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path, options: &RocksOptions) -> Result<Self> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // fdatasync is enough for the WAL and cheaper than fsync.
        db_options.set_use_fsync(false);
        db_options.increase_parallelism(2);
        // Bound the WAL: a log file can only go once every family with data in it has
        // flushed, and the small families flush rarely, so without a bound the WAL grew
        // to hundreds of MiB behind a stream of large messages (RocksDB's default is four
        // times all write buffers). Beyond this, RocksDB flushes the laggards.
        db_options.set_max_total_wal_size(64 << 20);
        if options.unsafe_skip_fsync {
            tracing::warn!("UNSAFE: fsync disabled and the WAL kept in memory; acknowledged writes can be lost");
            db_options.set_manual_wal_flush(true);
            db_options.set_writable_file_max_buffer_size(4 << 20);
        }

        let mut families = Vec::new();
        for cf in Cf::ALL {
            let mut cf_options = memtable_hint_options()?;
            // Raft and apply states are a few small keys per group rewritten every round:
            // a smaller memtable still holds thousands of rounds, and each flush keeps
            // only the latest versions.
            let write_buffer = match cf {
                Cf::RaftState => options.write_buffer_bytes.min(4 << 20),
                Cf::RaftLog => options.raft_log_write_buffer_bytes,
                _ => options.write_buffer_bytes,
            };
            cf_options.set_write_buffer_size(write_buffer);
            // Most apply-time reads are misses (a request id not seen before): a bloom
            // filter answers those without touching data blocks.
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            cf_options.set_block_based_table_factory(&table);
            // The same for the memtable, where recent keys live.
            cf_options.set_memtable_whole_key_filtering(true);
            cf_options.set_memtable_prefix_bloom_ratio(0.1);
            if cf == Cf::Blobs {
                cf_options.set_enable_blob_files(true);
                cf_options.set_min_blob_size(options.min_blob_size);
                cf_options.set_enable_blob_gc(true);
            }
            families.push(ColumnFamilyDescriptor::new(cf.name(), cf_options));
        }
        let db = DB::open_cf_descriptors(&db_options, path, families)?;
        Ok(Self {
            db: Arc::new(db),
            unsafe_skip_fsync: options.unsafe_skip_fsync,
            faults: Arc::default(),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        })
    }
}

impl RocksEngine {
    /// The engine's fail points, for a drill to turn on.
    pub fn disk_faults(&self) -> Arc<DiskFaults> {
        Arc::clone(&self.faults)
    }
}

/// Options whose memtable keeps an insert position per key prefix: the group id and
/// the byte after it (a state record's or a state-machine record's kind; in the log,
/// the top byte of the index, so in effect one position per group).
/// A round writes each group's log entries and records next to what that group wrote
/// last round, so an insert starts from there instead of searching the skiplist from
/// the top; that search was the biggest single cost of a round (ums-bench). The C API
/// has no setter for this option, hence the options string.
fn memtable_hint_options() -> Result<Options> {
    let hint = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.9";
    Ok(Options::default().get_options_from_string(hint)?)
}

fn handle(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name()).unwrap_or_else(|| panic!("column family {} missing although opened at start", cf.name()))
}

fn bounded_read_options(end: &[u8]) -> ReadOptions {
    let mut read_options = ReadOptions::default();
    read_options.set_iterate_upper_bound(end.to_vec());
    read_options
}

/// Shared scan over a RocksDB iterator of the live database or of a snapshot.
fn scan_iter<'a>(
    iter: impl Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    for item in iter {
        let (key, value) = item?;
        if !visit(&key, &value) {
            break;
        }
    }
    Ok(())
}

impl KvRead for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(handle(&self.db, cf), key)?)
    }

    fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let iter = self.db.iterator_cf_opt(
            handle(&self.db, cf),
            bounded_read_options(end),
            IteratorMode::From(start, Direction::Forward),
        );
        scan_iter(iter, visit)
    }

    fn last_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut iter = self.db.raw_iterator_cf(handle(&self.db, cf));
        iter.seek_for_prev(end);
        last_key_from(iter, start, end)
    }
}

fn last_key_from<D: rocksdb::DBAccess>(
    iter: rocksdb::DBRawIteratorWithThreadMode<'_, D>,
    start: &[u8],
    end: &[u8],
) -> Result<Option<Vec<u8>>> {
    let mut iter = iter;
    // seek_for_prev lands on `end` itself when it exists; step back once then.
    if iter.valid() && iter.key() == Some(end) {
        iter.prev();
    }
    iter.status()?;
    Ok(match iter.key() {
        Some(key) if iter.valid() && key >= start && key < end => Some(key.to_vec()),
        _ => None,
    })
}

/// The batch's operations in the order that is cheapest for the memtables: sorted by
/// column family and key between range deletes. Each memtable keeps the position of its
/// last insert, so ascending keys are found from there instead of from the top of the
/// skiplist. The sort is stable and does not cross a range delete, so later writes to a
/// key still win and nothing moves to the other side of a delete that covers it.
fn memtable_order(ops: &[Op]) -> Vec<&Op> {
    fn sort_key(op: &Op) -> (Cf, &[u8]) {
        match op {
            Op::Put { cf, key, .. } | Op::Delete { cf, key } => (*cf, key),
            Op::DeleteRange { cf, start, .. } => (*cf, start),
        }
    }
    let mut ordered: Vec<&Op> = ops.iter().collect();
    for segment in ordered.split_mut(|op| matches!(op, Op::DeleteRange { .. })) {
        segment.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    }
    ordered
}

impl KvEngine for RocksEngine {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in memtable_order(batch.ops()) {
            match op {
                Op::Put { cf, key, value } => rocks_batch.put_cf(handle(&self.db, *cf), key, value),
                Op::Delete { cf, key } => rocks_batch.delete_cf(handle(&self.db, *cf), key),
                Op::DeleteRange { cf, start, end } => rocks_batch.delete_range_cf(handle(&self.db, *cf), start, end),
            }
        }
        if sync {
            let delay = self.faults.fsync_delay();
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync && !self.unsafe_skip_fsync);
        self.db.write_opt(rocks_batch, &write_options).map_err(Error::from)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn KvRead + Send> {
        let snapshot = self.db.snapshot();
        // SAFETY: the snapshot borrows the database; `RocksSnapshot` keeps an `Arc` of that
        // same database and declares `snapshot` before `db`, so the snapshot is released
        // before the last reference to the database can go away.
        let snapshot: SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snapshot) };
        Box::new(RocksSnapshot { snapshot, db: Arc::clone(&self.db) })
    }

    fn stats(&self) -> EngineStats {
        EngineStats { writes: self.writes.load(Ordering::Relaxed), syncs: self.syncs.load(Ordering::Relaxed) }
    }
}

/// A point-in-time view of a [`RocksEngine`] that owns what it borrows.
struct RocksSnapshot {
    // Field order matters: `snapshot` must drop before `db`.
    snapshot: SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
}

// SAFETY: a RocksDB snapshot is an immutable handle that RocksDB allows to be read from
// any thread; the wrapper only exposes reads.
unsafe impl Send for RocksSnapshot {}

impl KvRead for RocksSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snapshot.get_cf(handle(&self.db, cf), key)?)
    }

    fn scan(&self, cf: Cf, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let iter = self.snapshot.iterator_cf_opt(
            handle(&self.db, cf),
            bounded_read_options(end),
            IteratorMode::From(start, Direction::Forward),
        );
        scan_iter(iter, visit)
    }

    fn last_key(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut iter = self.snapshot.raw_iterator_cf(handle(&self.db, cf));
        iter.seek_for_prev(end);
        last_key_from(iter, start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memtable_order_keeps_last_write_last_and_never_crosses_a_range_delete() {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, b"b".to_vec(), b"1".to_vec());
        batch.put(Cf::RaftLog, b"z".to_vec(), b"1".to_vec());
        batch.put(Cf::Data, b"a".to_vec(), b"1".to_vec());
        batch.put(Cf::Data, b"b".to_vec(), b"2".to_vec());
        batch.delete_range(Cf::Data, b"a".to_vec(), b"c".to_vec());
        batch.put(Cf::Data, b"a".to_vec(), b"3".to_vec());
        let ops = batch.ops();
        // Families in `Cf` order (raft log first), keys ascending, equal keys as written.
        assert_eq!(memtable_order(ops), vec![&ops[1], &ops[2], &ops[0], &ops[3], &ops[4], &ops[5]]);

        // And RocksDB ends with what the unsorted batch means.
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        engine.write(&batch, true).unwrap();
        assert_eq!(engine.get(Cf::Data, b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(engine.get(Cf::Data, b"b").unwrap(), None);
        assert_eq!(engine.get(Cf::RaftLog, b"z").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn batch_scan_snapshot_and_last_key() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        for i in 0u8..10 {
            batch.put(Cf::Data, vec![1, i], vec![i]);
        }
        batch.put(Cf::Blobs, b"big".to_vec(), vec![7u8; 10_000]);
        engine.write(&batch, true).unwrap();
        let snapshot = engine.snapshot();

        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::Data, vec![1, 3], vec![1, 6]);
        batch.delete(Cf::Data, vec![1, 9]);
        engine.write(&batch, false).unwrap();

        let mut seen = Vec::new();
        engine
            .scan(Cf::Data, &[1], &[2], &mut |k, _| {
                seen.push(k[1]);
                true
            })
            .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 6, 7, 8]);
        assert_eq!(engine.last_key(Cf::Data, &[1], &[2]).unwrap(), Some(vec![1, 8]));
        assert_eq!(engine.last_key(Cf::Data, &[1], &[1, 8]).unwrap(), Some(vec![1, 7]));
        assert_eq!(engine.last_key(Cf::Data, &[2], &[3]).unwrap(), None);
        assert_eq!(engine.get(Cf::Blobs, b"big").unwrap().unwrap().len(), 10_000);

        // The snapshot still sees the state before the deletes.
        let mut seen = 0;
        snapshot
            .scan(Cf::Data, &[1], &[2], &mut |_, _| {
                seen += 1;
                true
            })
            .unwrap();
        assert_eq!(seen, 10);
        assert_eq!(snapshot.last_key(Cf::Data, &[1], &[2]).unwrap(), Some(vec![1, 9]));
        assert_eq!(engine.stats(), EngineStats { writes: 2, syncs: 1 });
    }
}
