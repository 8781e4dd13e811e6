//! The storage seam: an ordered key-value store with column families and
//! explicit durability. The log store and state machine are written once
//! over [`KvStore`]; production opens RocksDB ([`RocksKv`]), the simulation
//! and unit tests use [`MemKv`], which can lose unsynced writes on a
//! simulated crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// The column families the mesh keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    /// Vote, committed id, purge point, applied state, snapshots, format marker.
    Meta,
    /// Raft log entries keyed by big-endian index.
    Log,
    /// State-machine records.
    State,
}

impl Column {
    /// All columns, in a fixed order.
    pub const ALL: [Column; 3] = [Column::Meta, Column::Log, Column::State];

    fn name(self) -> &'static str {
        match self {
            Column::Meta => "meta",
            Column::Log => "log",
            Column::State => "state",
        }
    }
}

/// One change in an atomic write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set a key.
    Put(Column, Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Column, Vec<u8>),
    /// Remove the keys in `[from, to)`.
    DeleteRange(Column, Vec<u8>, Vec<u8>),
}

/// A storage failure. These are fatal for Raft: openraft stops the node.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The database could not be opened (corrupt, not ours, or locked).
    #[error("cannot open the Raft database at {path}: {message}")]
    Open {
        /// The database directory.
        path: String,
        /// What RocksDB said.
        message: String,
    },
    /// A read or write failed.
    #[error("Raft database {operation} failed: {message}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// What the store said.
        message: String,
    },
}

/// A key and its value.
pub type KvEntry = (Vec<u8>, Vec<u8>);

/// What [`KvStore::export`] hands each entry to.
pub type ExportSink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), KvError> + 'a;

/// An ordered key-value store with atomic batches; see the module docs.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// The entries with `from <= key < to`, in key order.
    fn range(&self, column: Column, from: &[u8], to: &[u8]) -> Result<Vec<KvEntry>, KvError> {
        self.range_bounded(column, from, to, usize::MAX)
    }
    /// Like [`KvStore::range`], but stops after the entry whose value takes
    /// the total past `max_bytes` (at least one entry when any is in range):
    /// a reader of large values never holds more than about that many bytes.
    fn range_bounded(
        &self,
        column: Column,
        from: &[u8],
        to: &[u8],
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, KvError>;
    /// The entry with the greatest key.
    fn last(&self, column: Column) -> Result<Option<KvEntry>, KvError>;
    /// Reads `meta_key` of the meta column and hands every entry of
    /// `column` to `sink`, in key order, all as of one moment (a consistent
    /// view, whatever is written meanwhile); returns the meta value. The
    /// sink may write to the store. Used to build snapshots entry by entry.
    fn export(
        &self,
        column: Column,
        meta_key: &[u8],
        sink: &mut ExportSink<'_>,
    ) -> Result<Option<Vec<u8>>, KvError>;
    /// Applies `ops` atomically. With `durable`, this write and every earlier
    /// one survive a crash once the call returns.
    fn write(&self, ops: Vec<KvOp>, durable: bool) -> Result<(), KvError>;
    /// The device time of a write of about `bytes` bytes (`durable`: with a
    /// flush to stable storage), as a future the Raft log store awaits
    /// before its writes (durable: appends and the vote; the committed id is
    /// not synced). A real store
    /// spends that time inside [`KvStore::write`] and returns `None` (the
    /// default); a simulated disk returns a sleep on virtual time, so a
    /// slow disk holds Raft up as a real one does.
    fn device_time(&self, _bytes: usize, _durable: bool) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// RocksDB, one column family per [`Column`].
pub struct RocksKv {
    db: rocksdb::DB,
}

impl RocksKv {
    /// Opens or creates the database in `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        let families = Column::ALL.iter().map(|column| {
            rocksdb::ColumnFamilyDescriptor::new(column.name(), rocksdb::Options::default())
        });
        let db = rocksdb::DB::open_cf_descriptors(&options, path, families).map_err(|error| {
            KvError::Open {
                path: path.display().to_string(),
                message: error.to_string(),
            }
        })?;
        Ok(RocksKv { db })
    }

    fn family(&self, column: Column) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(column.name())
            .expect("every column family is created when the database opens")
    }
}

fn io_error(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> KvError {
    move |error| KvError::Io {
        operation,
        message: error.to_string(),
    }
}

impl KvStore for RocksKv {
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.db
            .get_cf(self.family(column), key)
            .map_err(io_error("read"))
    }

    fn range_bounded(
        &self,
        column: Column,
        from: &[u8],
        to: &[u8],
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let iterator = self.db.iterator_cf(
            self.family(column),
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
        );
        for item in iterator {
            let (key, value) = item.map_err(io_error("scan"))?;
            if key.as_ref() >= to {
                break;
            }
            bytes = bytes.saturating_add(value.len());
            entries.push((key.to_vec(), value.to_vec()));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(entries)
    }

    fn last(&self, column: Column) -> Result<Option<KvEntry>, KvError> {
        match self
            .db
            .iterator_cf(self.family(column), rocksdb::IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(io_error("scan"))?;
                Ok(Some((key.to_vec(), value.to_vec())))
            }
        }
    }

    fn export(
        &self,
        column: Column,
        meta_key: &[u8],
        sink: &mut ExportSink<'_>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let snapshot = self.db.snapshot();
        let meta = snapshot
            .get_cf(self.family(Column::Meta), meta_key)
            .map_err(io_error("read"))?;
        for item in snapshot.iterator_cf(self.family(column), rocksdb::IteratorMode::Start) {
            let (key, value) = item.map_err(io_error("scan"))?;
            sink(&key, &value)?;
        }
        Ok(meta)
    }

    fn write(&self, ops: Vec<KvOp>, durable: bool) -> Result<(), KvError> {
        let mut batch = rocksdb::WriteBatch::default();
        for op in ops {
            match op {
                KvOp::Put(column, key, value) => batch.put_cf(self.family(column), key, value),
                KvOp::Delete(column, key) => batch.delete_cf(self.family(column), key),
                KvOp::DeleteRange(column, from, to) => {
                    batch.delete_range_cf(self.family(column), from, to)
                }
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        // A durable write fsyncs the WAL before returning, which is what
        // openraft's "log flushed" callback promises.
        options.set_sync(durable);
        self.db
            .write_opt(batch, &options)
            .map_err(io_error("write"))
    }
}

type Tables = BTreeMap<Column, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
struct MemInner {
    /// What reads see.
    live: Tables,
    /// What survives a crash.
    durable: Tables,
    /// Writes applied to `live` but not yet to `durable`, in order.
    unsynced: Vec<KvOp>,
    /// A deliberate bug, if one was injected.
    bug: Option<InjectedBug>,
    /// While set, every write fails with this message (a full disk).
    failing_writes: Option<String>,
    /// The state column when the store was opened (or last crashed).
    state_at_open: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn apply_ops(tables: &mut Tables, ops: &[KvOp]) {
    for op in ops {
        match op {
            KvOp::Put(column, key, value) => {
                tables
                    .entry(*column)
                    .or_default()
                    .insert(key.clone(), value.clone());
            }
            KvOp::Delete(column, key) => {
                tables.entry(*column).or_default().remove(key);
            }
            KvOp::DeleteRange(column, from, to) => {
                let table = tables.entry(*column).or_default();
                let doomed: Vec<Vec<u8>> = table
                    .range(from.clone()..to.clone())
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in doomed {
                    table.remove(&key);
                }
            }
        }
    }
}

/// An in-memory [`KvStore`]. Writes that were not made durable are lost by
/// [`MemKv::crash`], as an OS crash loses RocksDB writes whose WAL was not synced.
#[derive(Clone, Default)]
pub struct MemKv {
    inner: Arc<Mutex<MemInner>>,
}

/// A deliberately broken store, for proving that the simulation's checkers
/// catch storage bugs: on a crash it forgets every write to the state
/// column since it was opened, although they were acknowledged as durable,
/// while it keeps the applied index in the meta column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// Forget acknowledged state writes on crash (see the type's docs).
    ForgetStateWrites,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        MemKv::default()
    }

    /// Simulates a crash: every write not yet made durable is forgotten.
    pub fn crash(&self) {
        let mut inner = self.inner.lock().expect("mem kv lock");
        inner.unsynced.clear();
        if inner.bug == Some(InjectedBug::ForgetStateWrites) {
            let old = inner.state_at_open.clone();
            inner.durable.insert(Column::State, old);
        }
        inner.live = inner.durable.clone();
        inner.state_at_open = inner.live.get(&Column::State).cloned().unwrap_or_default();
    }

    /// Makes every later write fail with `message` (a full or broken disk),
    /// or, with `None`, succeed again. Reads keep working.
    pub fn fail_writes(&self, message: Option<String>) {
        self.inner.lock().expect("mem kv lock").failing_writes = message;
    }

    /// Turns on a deliberate bug (test and simulation use only).
    pub fn inject_bug(&self, bug: InjectedBug) {
        let mut inner = self.inner.lock().expect("mem kv lock");
        inner.bug = Some(bug);
        inner.state_at_open = inner.live.get(&Column::State).cloned().unwrap_or_default();
    }
}

impl KvStore for MemKv {
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let inner = self.inner.lock().expect("mem kv lock");
        Ok(inner
            .live
            .get(&column)
            .and_then(|table| table.get(key))
            .cloned())
    }

    fn range_bounded(
        &self,
        column: Column,
        from: &[u8],
        to: &[u8],
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let inner = self.inner.lock().expect("mem kv lock");
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        if let Some(table) = inner.live.get(&column) {
            for (key, value) in table.range(from.to_vec()..to.to_vec()) {
                bytes = bytes.saturating_add(value.len());
                entries.push((key.clone(), value.clone()));
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(entries)
    }

    fn last(&self, column: Column) -> Result<Option<KvEntry>, KvError> {
        let inner = self.inner.lock().expect("mem kv lock");
        Ok(inner.live.get(&column).and_then(|table| {
            table
                .iter()
                .next_back()
                .map(|(key, value)| (key.clone(), value.clone()))
        }))
    }

    fn export(
        &self,
        column: Column,
        meta_key: &[u8],
        sink: &mut ExportSink<'_>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        // A copy taken under the lock is the consistent view; the sink runs
        // without the lock, since it may write to this store.
        let (meta, entries) = {
            let inner = self.inner.lock().expect("mem kv lock");
            let meta = inner
                .live
                .get(&Column::Meta)
                .and_then(|table| table.get(meta_key))
                .cloned();
            let entries = inner.live.get(&column).cloned().unwrap_or_default();
            (meta, entries)
        };
        for (key, value) in &entries {
            sink(key, value)?;
        }
        Ok(meta)
    }

    fn write(&self, ops: Vec<KvOp>, durable: bool) -> Result<(), KvError> {
        let mut inner = self.inner.lock().expect("mem kv lock");
        if let Some(message) = &inner.failing_writes {
            return Err(KvError::Io {
                operation: "write",
                message: message.clone(),
            });
        }
        apply_ops(&mut inner.live, &ops);
        inner.unsynced.extend(ops);
        if durable {
            let pending = std::mem::take(&mut inner.unsynced);
            apply_ops(&mut inner.durable, &pending);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn KvStore) {
        store
            .write(
                vec![
                    KvOp::Put(Column::Log, vec![1], b"a".to_vec()),
                    KvOp::Put(Column::Log, vec![2], b"b".to_vec()),
                    KvOp::Put(Column::Log, vec![3], b"c".to_vec()),
                    KvOp::Put(Column::Meta, b"vote".to_vec(), b"v".to_vec()),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            store.get(Column::Meta, b"vote").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(store.get(Column::Log, b"vote").unwrap(), None);
        let keys: Vec<Vec<u8>> = store
            .range(Column::Log, &[2], &[9])
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec![vec![2], vec![3]]);
        // A byte bound stops after the entry that reaches it, never before the first.
        let bounded = |max_bytes| {
            store
                .range_bounded(Column::Log, &[1], &[9], max_bytes)
                .unwrap()
        };
        assert_eq!(bounded(0).len(), 1);
        assert_eq!(bounded(2).len(), 2);
        assert_eq!(bounded(1_000).len(), 3);
        assert_eq!(store.last(Column::Log).unwrap().unwrap().0, vec![3]);
        store
            .write(vec![KvOp::DeleteRange(Column::Log, vec![2], vec![9])], true)
            .unwrap();
        assert_eq!(store.last(Column::Log).unwrap().unwrap().0, vec![1]);
        store
            .write(vec![KvOp::Delete(Column::Log, vec![1])], false)
            .unwrap();
        assert_eq!(store.last(Column::Log).unwrap(), None);
    }

    /// An export sees the store as it was when it began, even while its
    /// sink writes to the exported column.
    fn export_sees_one_moment(store: &dyn KvStore) {
        store
            .write(
                vec![
                    KvOp::Put(Column::State, b"a".to_vec(), b"1".to_vec()),
                    KvOp::Put(Column::State, b"b".to_vec(), b"2".to_vec()),
                    KvOp::Put(Column::Meta, b"applied".to_vec(), b"7".to_vec()),
                ],
                true,
            )
            .unwrap();
        let mut seen = Vec::new();
        let meta = store
            .export(Column::State, b"applied", &mut |key, value| {
                seen.push((key.to_vec(), value.to_vec()));
                store.write(
                    vec![
                        KvOp::Put(Column::State, b"c".to_vec(), b"3".to_vec()),
                        KvOp::Put(Column::Meta, b"applied".to_vec(), b"8".to_vec()),
                    ],
                    false,
                )
            })
            .unwrap();
        assert_eq!(meta, Some(b"7".to_vec()));
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(store.get(Column::State, b"c").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn rocks_kv_behaves() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RocksKv::open(dir.path()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        export_sees_one_moment(&RocksKv::open(dir.path()).unwrap());
    }

    #[test]
    fn mem_kv_behaves() {
        exercise(&MemKv::new());
        export_sees_one_moment(&MemKv::new());
    }

    #[test]
    fn rocks_kv_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksKv::open(dir.path()).unwrap();
            store
                .write(
                    vec![KvOp::Put(Column::State, b"k".to_vec(), b"v".to_vec())],
                    true,
                )
                .unwrap();
        }
        let store = RocksKv::open(dir.path()).unwrap();
        assert_eq!(store.get(Column::State, b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn mem_kv_crash_loses_only_unsynced_writes() {
        let store = MemKv::new();
        store
            .write(vec![KvOp::Put(Column::Log, vec![1], vec![1])], true)
            .unwrap();
        store
            .write(vec![KvOp::Put(Column::Log, vec![2], vec![2])], false)
            .unwrap();
        assert!(store.get(Column::Log, &[2]).unwrap().is_some());
        store.crash();
        assert!(store.get(Column::Log, &[1]).unwrap().is_some());
        assert!(store.get(Column::Log, &[2]).unwrap().is_none());
        // A later durable write also makes earlier unsynced ones durable, as a WAL fsync does.
        store
            .write(vec![KvOp::Put(Column::Log, vec![3], vec![3])], false)
            .unwrap();
        store
            .write(vec![KvOp::Put(Column::Log, vec![4], vec![4])], true)
            .unwrap();
        store.crash();
        assert!(store.get(Column::Log, &[3]).unwrap().is_some());
    }

    #[test]
    fn garbage_in_place_of_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CURRENT"), b"not a manifest name\n").unwrap();
        assert!(matches!(
            RocksKv::open(dir.path()),
            Err(KvError::Open { .. })
        ));
    }
}
