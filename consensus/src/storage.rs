//! openraft's log store and state machine over the [`KvStore`] seam.

// openraft's traits return its own (large) StorageError; helpers return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::command::{CommandResponse, TypeConfig};
use crate::kv::{Column, KvError, KvOp, KvStore};
use crate::state::{MeshState, StateKey};
use crate::types::{MeshNode, NodeId};
use coditect_memory::codec;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// A snapshot being installed (its data fully received): present only
/// between the start and the end of an install, which is redone on open.
const KEY_INSTALLING: &[u8] = b"installing";
/// Counter naming snapshot data, so a new snapshot never overwrites the
/// chunks of the current one.
const KEY_SNAPSHOT_SEQUENCE: &[u8] = b"snapshot_sequence";
/// Bytes of state written per batch while a snapshot is installed.
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Applied entries whose changes the state column may lag behind. The log
/// is the durable record (state writes were never synced): a task's
/// changes within this many entries (submitted, assigned, finished) cost
/// one write instead of three, and a restart re-applies at most this many.
const WRITE_AFTER_ENTRIES: u64 = 64;
/// Changed keys (counted with repeats) that are written without waiting
/// for [`WRITE_AFTER_ENTRIES`]: bounds the memory the unwritten keys hold.
const WRITE_AFTER_KEYS: usize = 16_384;
const KEY_FORMAT: &[u8] = b"format";
/// Written into every database we create; a database without it is not ours.
/// Version 2: standard Raft leader ids (one leader per term) and one key per
/// task. Version 3: snapshots stored as chunks of frames, staged submissions
/// and idempotency keys. Version 4: tasks carry a title, an agent kind and
/// guest arguments. Version 7: language-model limits and call records,
/// fix rounds (spawned and superseded tasks). Version 8: a mission's
/// origin. Version 9: admission (join secret, tokens, allowlist).
/// An older database is refused by name, never misread.
pub const FORMAT_MARKER: &[u8] = b"coditect-raft/9";

const NODE_PREFIX: &[u8] = b"node/";
const MISSION_PREFIX: &[u8] = b"mission/";
/// `task/<mission id> 0x00 <task id>`: one key per task, so a change to one
/// task rewrites that task, not its whole mission.
const TASK_PREFIX: &[u8] = b"task/";

/// What a mission's own key holds; its tasks live under [`TASK_PREFIX`].
#[derive(serde::Serialize, serde::Deserialize)]
struct MissionHeader {
    id: String,
    name: String,
    state: crate::mission::MissionState,
    submitted_ms: u64,
    summary: Option<std::collections::BTreeMap<String, u64>>,
    max_fix_rounds: Option<u32>,
    origin: Option<crate::types::NodeId>,
}

fn task_key(mission: &str, task: &str) -> Vec<u8> {
    let mut key = TASK_PREFIX.to_vec();
    key.extend_from_slice(mission.as_bytes());
    key.push(0);
    key.extend_from_slice(task.as_bytes());
    key
}
const KEY_COUNTERS: &[u8] = b"counters";
/// The admission record, one key (its size is capped in `admission.rs`).
const KEY_ADMISSION: &[u8] = b"admission";
/// `stage/<stage id> 0x00 <chunk, u32 big-endian>`: one staged chunk of a
/// large submission, as `(started_ms, tasks)`.
const STAGE_PREFIX: &[u8] = b"stage/";
/// `submitkey/<key>`: the mission a submission's idempotency key created.
const SUBMISSION_KEY_PREFIX: &[u8] = b"submitkey/";

fn stage_key(stage: &str, chunk: u32) -> Vec<u8> {
    let mut key = STAGE_PREFIX.to_vec();
    key.extend_from_slice(stage.as_bytes());
    key.push(0);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

fn log_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// Waits out the device time `store` models for a write of `bytes` bytes
/// (nothing on a real store: see [`KvStore::device_time`]).
async fn device_time(store: &dyn KvStore, bytes: usize, durable: bool) {
    if let Some(wait) = store.device_time(bytes, durable) {
        wait.await;
    }
}

fn ops_bytes(ops: &[KvOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            KvOp::Put(_, key, value) => key.len() + value.len(),
            KvOp::Delete(_, key) => key.len(),
            KvOp::DeleteRange(_, from, to) => from.len() + to.len(),
        })
        .sum()
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&error)),
    }
}

fn kv(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(KvError) -> StorageError<NodeId> {
    move |error| storage_error(subject, verb, error)
}

fn codec_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(codec::CodecError) -> StorageError<NodeId> {
    move |error| storage_error(subject, verb, error)
}

/// Checks or writes the format marker. Returns an error naming the problem if
/// the database holds data but no marker (not a Coditect database).
pub fn check_format(store: &dyn KvStore) -> Result<(), String> {
    match store
        .get(Column::Meta, KEY_FORMAT)
        .map_err(|e| e.to_string())?
    {
        Some(marker) if marker == FORMAT_MARKER => Ok(()),
        Some(other) => Err(format!(
            "unknown Raft database format {:?}",
            String::from_utf8_lossy(&other)
        )),
        None => {
            let empty = Column::ALL
                .iter()
                .all(|column| matches!(store.last(*column), Ok(None)));
            if !empty {
                return Err("the Raft database holds data but no Coditect format marker".into());
            }
            store
                .write(
                    vec![KvOp::Put(
                        Column::Meta,
                        KEY_FORMAT.to_vec(),
                        FORMAT_MARKER.to_vec(),
                    )],
                    true,
                )
                .map_err(|e| e.to_string())
        }
    }
}

/// The Raft log over a [`KvStore`]. Appends are durable before openraft is told.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn KvStore>,
    /// The newest entries, as appended: what replication to each follower
    /// and the state machine's apply read back, served without a read of
    /// the store and a decode each time. Shared by every clone (openraft
    /// reads through clones of the log store).
    recent: Arc<std::sync::Mutex<RecentEntries>>,
}

/// The newest appended entries with their encoded sizes, at most
/// [`RECENT_ENTRIES`] of them and [`RECENT_BYTES`] encoded bytes; always a
/// contiguous run of indexes ending at the last appended one.
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::BTreeMap<u64, (Entry<TypeConfig>, usize)>,
    bytes: usize,
}

/// Entries kept in [`RecentEntries`], at most.
const RECENT_ENTRIES: usize = 4096;
/// Encoded bytes kept in [`RecentEntries`], at most.
const RECENT_BYTES: usize = 32 << 20;

impl RecentEntries {
    /// Records appended entries (contiguous after what is kept, else the
    /// kept run starts again from them).
    fn appended(&mut self, appended: Vec<(Entry<TypeConfig>, usize)>) {
        for (entry, size) in appended {
            let index = entry.log_id.index;
            let follows = match self.entries.last_key_value() {
                Some((last, _)) => *last + 1 == index,
                None => true,
            };
            if !follows {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += size;
            self.entries.insert(index, (entry, size));
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            match self.entries.pop_first() {
                Some((_, (_, size))) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Forgets every entry at `from` and after (a truncated log).
    fn truncated(&mut self, from: u64) {
        for (_, (_, size)) in self.entries.split_off(&from) {
            self.bytes -= size;
        }
    }

    /// Forgets every entry up to `upto` (a purged log).
    fn purged(&mut self, upto: u64) {
        let kept = self.entries.split_off(&upto.saturating_add(1));
        for (_, (_, size)) in std::mem::replace(&mut self.entries, kept) {
            self.bytes -= size;
        }
    }

    /// Entries `start..end`, stopping after the one that takes the encoded
    /// total past `max_bytes` (at least one), if all of them are kept.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry<TypeConfig>>> {
        let first = *self.entries.first_key_value()?.0;
        let last = *self.entries.last_key_value()?.0;
        if start < first || end > last + 1 {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for (entry, size) in self.entries.range(start..end).map(|(_, kept)| kept) {
            if !out.is_empty() && total >= max_bytes {
                break;
            }
            total = total.saturating_add(*size);
            out.push(entry.clone());
        }
        Some(out)
    }
}

impl LogStore {
    /// A log store over `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        LogStore {
            store,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_meta<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        match self
            .store
            .get(Column::Meta, key)
            .map_err(kv(subject.clone(), ErrorVerb::Read))?
        {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).map_err(codec_err(subject, ErrorVerb::Read))?,
            )),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
        durable: bool,
    ) -> StorageResult<()> {
        let bytes = codec::encode(value).map_err(codec_err(subject.clone(), ErrorVerb::Write))?;
        self.store
            .write(vec![KvOp::Put(Column::Meta, key.to_vec(), bytes)], durable)
            .map_err(kv(subject, ErrorVerb::Write))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_index = match range.end_bound() {
            Bound::Included(index) => Some(index.saturating_add(1)),
            Bound::Excluded(index) => Some(*index),
            Bound::Unbounded => None,
        };
        if let Some(end) = end_index {
            if start >= end {
                return Ok(Vec::new());
            }
            if let Some(entries) = self.recent().read(start, end, usize::MAX) {
                return Ok(entries);
            }
        }
        let end = match end_index {
            Some(index) => log_key(index),
            None => vec![0xff; 9],
        };
        let rows = self
            .store
            .range(Column::Log, &log_key(start), &end)
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Read))?;
        decode_entries(rows)
    }

    /// The replication path: at most about [`crate::limits::MAX_APPEND_BYTES`] of
    /// stored entries (at least one), so no AppendEntries request outgrows
    /// the transport or the heartbeat it must fit in, however large the
    /// entries are.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(entries) = self
            .recent()
            .read(start, end, crate::limits::MAX_APPEND_BYTES)
        {
            return Ok(entries);
        }
        let rows = self
            .store
            .range_bounded(
                Column::Log,
                &log_key(start),
                &log_key(end),
                crate::limits::MAX_APPEND_BYTES,
            )
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Read))?;
        decode_entries(rows)
    }
}

fn decode_entries(rows: Vec<crate::kv::KvEntry>) -> StorageResult<Vec<Entry<TypeConfig>>> {
    rows.into_iter()
        .map(|(_, bytes)| {
            codec::decode(&bytes).map_err(codec_err(ErrorSubject::Logs, ErrorVerb::Read))
        })
        .collect()
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(KEY_LAST_PURGED, ErrorSubject::Store)?;
        let last = match self
            .store
            .last(Column::Log)
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Read))?
        {
            None => None,
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = codec::decode(&bytes)
                    .map_err(codec_err(ErrorSubject::Logs, ErrorVerb::Read))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        device_time(self.store.as_ref(), KEY_VOTE.len(), true).await;
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    /// Not synced: Raft's commit index is volatile state (openraft does not
    /// need it kept at all). Kept, it lets a restarted node apply up to it
    /// before hearing from a leader; lost in a crash, the node learns the
    /// commit index from the leader again. Writes reach the store's log in
    /// order, so a crash loses a suffix: never a committed index without
    /// the appends before it. Synced, it cost an fsync per commit on every
    /// node, in the commit's path.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        device_time(self.store.as_ref(), KEY_COMMITTED.len(), false).await;
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, false)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes =
                codec::encode(&entry).map_err(codec_err(ErrorSubject::Logs, ErrorVerb::Write))?;
            let size = bytes.len();
            ops.push(KvOp::Put(Column::Log, log_key(entry.log_id.index), bytes));
            appended.push((entry, size));
        }
        // Durable (fsync) before the callback: openraft counts the entries as
        // persisted, and may count this node toward a quorum, once it fires.
        device_time(self.store.as_ref(), ops_bytes(&ops), true).await;
        let result = self.store.write(ops, true);
        match result {
            Ok(()) => {
                // Readable from memory once stored (and only then).
                self.recent().appended(appended);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Forgotten first: a failed delete must not leave memory serving
        // entries the log is giving up.
        self.recent().truncated(log_id.index);
        self.store
            .write(
                vec![KvOp::DeleteRange(
                    Column::Log,
                    log_key(log_id.index),
                    vec![0xff; 9],
                )],
                true,
            )
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.recent().purged(log_id.index);
        let bytes =
            codec::encode(&log_id).map_err(codec_err(ErrorSubject::Store, ErrorVerb::Write))?;
        self.store
            .write(
                vec![
                    KvOp::Put(Column::Meta, KEY_LAST_PURGED.to_vec(), bytes),
                    KvOp::DeleteRange(
                        Column::Log,
                        log_key(0),
                        log_key(log_id.index.saturating_add(1)),
                    ),
                ],
                true,
            )
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

/// The replicated state as this node has applied it, shared with readers that
/// must answer from the local view without waiting on consensus.
pub type SharedState = Arc<RwLock<Replica>>;

/// The applied state and the log position it reflects, read together.
#[derive(Default)]
pub struct Replica {
    /// The state.
    pub state: MeshState,
    applied: AppliedMeta,
    /// What was applied since the state column was last written: the keys
    /// changed (with repeats) and how many entries.
    unwritten: Unwritten,
}

#[derive(Default)]
struct Unwritten {
    keys: Vec<StateKey>,
    entries: u64,
}

impl Unwritten {
    fn due(&self) -> bool {
        self.entries >= WRITE_AFTER_ENTRIES || self.keys.len() >= WRITE_AFTER_KEYS
    }
}

impl Replica {
    /// Index of the last log entry applied (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.applied.last_applied.map(|id| id.index).unwrap_or(0)
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, MeshNode>,
}

/// Where a snapshot's data is: its chunks, by name, and its length.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, MeshNode>,
    name: String,
    len: u64,
}

/// Whether `key` is one the state column may hold (a snapshot's entries
/// are checked against it before they are installed).
fn is_state_key(key: &[u8]) -> bool {
    key == KEY_COUNTERS
        || key == KEY_ADMISSION
        || [
            NODE_PREFIX,
            MISSION_PREFIX,
            TASK_PREFIX,
            STAGE_PREFIX,
            SUBMISSION_KEY_PREFIX,
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// The replicated state as the state column holds it.
fn load_state(store: &dyn KvStore) -> StorageResult<MeshState> {
    let mut state = MeshState::default();
    let read = |prefix: &[u8]| {
        store
            .range(Column::State, prefix, &prefix_end(prefix))
            .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))
    };
    let decode_err = || codec_err(ErrorSubject::StateMachine, ErrorVerb::Read);
    for (_, bytes) in read(NODE_PREFIX)? {
        let record: crate::types::NodeRecord = codec::decode(&bytes).map_err(decode_err())?;
        state.nodes.insert(record.node_id, record);
    }
    for (_, bytes) in read(MISSION_PREFIX)? {
        let header: MissionHeader = codec::decode(&bytes).map_err(decode_err())?;
        state.missions.insert(
            header.id.clone(),
            crate::mission::MissionRecord {
                id: header.id,
                name: header.name,
                state: header.state,
                tasks: Default::default(),
                submitted_ms: header.submitted_ms,
                dirty: Default::default(),
                derived: Default::default(),
                summary: header.summary,
                max_fix_rounds: header.max_fix_rounds,
                origin: header.origin,
                revision: Default::default(),
            },
        );
    }
    for (key, bytes) in read(TASK_PREFIX)? {
        let record: crate::mission::TaskRecord = codec::decode(&bytes).map_err(decode_err())?;
        let rest = &key[TASK_PREFIX.len()..];
        let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let mission = String::from_utf8_lossy(&rest[..split]).to_string();
        if let Some(mission) = state.missions.get_mut(&mission) {
            mission.tasks.insert(record.spec.id.clone(), record);
        }
    }
    for (key, bytes) in read(STAGE_PREFIX)? {
        let (started_ms, tasks): (u64, Vec<crate::mission::TaskSubmission>) =
            codec::decode(&bytes).map_err(decode_err())?;
        let rest = &key[STAGE_PREFIX.len()..];
        let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let stage = String::from_utf8_lossy(&rest[..split]).to_string();
        // Keys sort by chunk number (big-endian), so chunks arrive in order.
        state
            .staged
            .entry(stage)
            .or_insert_with(|| crate::state::StagedTasks {
                started_ms,
                chunks: Vec::new(),
            })
            .chunks
            .push(tasks);
    }
    for (key, bytes) in read(SUBMISSION_KEY_PREFIX)? {
        let value: (String, u64) = codec::decode(&bytes).map_err(decode_err())?;
        let name = String::from_utf8_lossy(&key[SUBMISSION_KEY_PREFIX.len()..]).to_string();
        state.submission_keys.insert(name, value);
    }
    if let Some(bytes) = store
        .get(Column::State, KEY_COUNTERS)
        .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))?
    {
        let (submitted, ready): (u64, u64) = codec::decode(&bytes).map_err(decode_err())?;
        state.missions_submitted = submitted;
        state.next_ready_seq = ready;
    }
    if let Some(bytes) = store
        .get(Column::State, KEY_ADMISSION)
        .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))?
    {
        state.admission = codec::decode(&bytes).map_err(decode_err())?;
    }
    Ok(state)
}

/// The state machine over a [`KvStore`]: the state lives in memory
/// ([`SharedState`]) and is written behind, the keys that applied entries
/// changed in one batch with the applied position, every
/// [`WRITE_AFTER_ENTRIES`] entries and before a snapshot is built. The
/// column is thus always the state as of some applied entry, never a mix;
/// after a restart openraft re-applies the committed entries past it.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<dyn KvStore>,
    replica: SharedState,
    /// Held from taking the unwritten keys until their batch is written, so
    /// batches land in the order their values were read.
    writing: Arc<std::sync::Mutex<()>>,
    applied_watch: Arc<tokio::sync::watch::Sender<u64>>,
    snapshot_sequence: u64,
    naming: Arc<std::sync::Mutex<()>>,
    /// Where snapshot builds and installs run (in line when `None`).
    offload: Option<crate::runtime::Offload>,
}

impl StateMachineStore {
    /// Loads the state machine from `store`.
    pub fn open(store: Arc<dyn KvStore>) -> StorageResult<Self> {
        let read_meta = |key: &[u8]| {
            store
                .get(Column::Meta, key)
                .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))
        };
        // An install that a crash interrupted is finished first: its data
        // was complete before it began.
        if let Some(bytes) = read_meta(KEY_INSTALLING)? {
            let marker: StoredSnapshot = codec::decode(&bytes)
                .map_err(codec_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
            tracing::warn!(snapshot = %marker.meta.snapshot_id, "finishing an interrupted snapshot install");
            replay_snapshot(&store, &marker)?;
        }
        let applied: AppliedMeta = match read_meta(KEY_APPLIED)? {
            Some(bytes) => codec::decode(&bytes)
                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Read))?,
            None => AppliedMeta::default(),
        };
        // Chunks of snapshots that were being built or received when the
        // process stopped belong to no snapshot: drop them.
        let current = read_meta(KEY_SNAPSHOT)?
            .map(|bytes| codec::decode::<StoredSnapshot>(&bytes))
            .transpose()
            .map_err(codec_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        let all_end = prefix_end(crate::snapshot::CHUNK_PREFIX);
        let cleanup = match &current {
            None => vec![KvOp::DeleteRange(
                Column::Meta,
                crate::snapshot::CHUNK_PREFIX.to_vec(),
                all_end,
            )],
            Some(current) => vec![
                KvOp::DeleteRange(
                    Column::Meta,
                    crate::snapshot::CHUNK_PREFIX.to_vec(),
                    crate::snapshot::name_prefix(&current.name),
                ),
                KvOp::DeleteRange(
                    Column::Meta,
                    crate::snapshot::name_end(&current.name),
                    all_end,
                ),
            ],
        };
        store
            .write(cleanup, false)
            .map_err(kv(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        let state = load_state(store.as_ref())?;
        let index = applied.last_applied.map(|id| id.index).unwrap_or(0);
        Ok(StateMachineStore {
            store,
            replica: Arc::new(RwLock::new(Replica {
                state,
                applied,
                unwritten: Unwritten::default(),
            })),
            writing: Arc::new(std::sync::Mutex::new(())),
            applied_watch: Arc::new(tokio::sync::watch::channel(index).0),
            snapshot_sequence: 0,
            naming: Arc::new(std::sync::Mutex::new(())),
            offload: None,
        })
    }

    /// A fresh name for snapshot data (a persistent counter, so it never
    /// names the chunks of the current snapshot).
    /// Runs snapshot builds and installs through `offload` from now on.
    pub fn set_offload(&mut self, offload: Option<crate::runtime::Offload>) {
        self.offload = offload;
    }

    fn next_snapshot_name(&self, kind: &str) -> StorageResult<String> {
        let _naming = self.naming.lock().expect("naming lock");
        let subject = ErrorSubject::Snapshot(None);
        let sequence: u64 = match self
            .store
            .get(Column::Meta, KEY_SNAPSHOT_SEQUENCE)
            .map_err(kv(subject.clone(), ErrorVerb::Read))?
        {
            Some(bytes) => {
                codec::decode(&bytes).map_err(codec_err(subject.clone(), ErrorVerb::Read))?
            }
            None => 0,
        };
        let next =
            codec::encode(&(sequence + 1)).map_err(codec_err(subject.clone(), ErrorVerb::Write))?;
        self.store
            .write(
                vec![KvOp::Put(
                    Column::Meta,
                    KEY_SNAPSHOT_SEQUENCE.to_vec(),
                    next,
                )],
                false,
            )
            .map_err(kv(subject, ErrorVerb::Write))?;
        Ok(format!("{kind}{sequence}"))
    }

    /// The state readers share.
    pub fn shared_state(&self) -> SharedState {
        self.replica.clone()
    }

    /// Changes to the last applied index, for readers that react to new state.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_watch.subscribe()
    }

    /// Writes what was applied since the last write: the changed keys as
    /// they are now and the applied position, in one batch (not synced: the
    /// log is the durable record).
    pub fn write_state(&self) -> StorageResult<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let ops = {
            let mut replica = self.replica.write().expect("state lock");
            // Keys come only with entries: no entry, nothing to write.
            let mut unwritten = std::mem::take(&mut replica.unwritten);
            if unwritten.entries == 0 {
                return Ok(());
            }
            Self::record_ops(&replica, &mut unwritten.keys)?
        };
        self.store
            .write(ops, false)
            .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    fn record_ops(replica: &Replica, keys: &mut Vec<StateKey>) -> StorageResult<Vec<KvOp>> {
        let state = &replica.state;
        keys.sort_unstable();
        keys.dedup();
        let mut ops = Vec::with_capacity(keys.len() + 1);
        for key in keys.iter() {
            match key {
                StateKey::Node(node_id) => {
                    let mut db_key = NODE_PREFIX.to_vec();
                    db_key.extend_from_slice(&node_id.to_be_bytes());
                    match state.nodes.get(node_id) {
                        Some(record) => ops.push(KvOp::Put(
                            Column::State,
                            db_key,
                            codec::encode(record)
                                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                        )),
                        None => ops.push(KvOp::Delete(Column::State, db_key)),
                    }
                }
                StateKey::Mission(id) => {
                    let mut db_key = MISSION_PREFIX.to_vec();
                    db_key.extend_from_slice(id.as_bytes());
                    match state.missions.get(id) {
                        Some(mission) => ops.push(KvOp::Put(
                            Column::State,
                            db_key,
                            codec::encode(&MissionHeader {
                                id: mission.id.clone(),
                                name: mission.name.clone(),
                                state: mission.state,
                                submitted_ms: mission.submitted_ms,
                                summary: mission.summary.clone(),
                                max_fix_rounds: mission.max_fix_rounds,
                                origin: mission.origin,
                            })
                            .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                        )),
                        None => ops.push(KvOp::Delete(Column::State, db_key)),
                    }
                }
                StateKey::Task(mission, task) => {
                    let db_key = task_key(mission, task);
                    match state.missions.get(mission).and_then(|m| m.tasks.get(task)) {
                        Some(record) => ops.push(KvOp::Put(
                            Column::State,
                            db_key,
                            codec::encode(record)
                                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                        )),
                        None => ops.push(KvOp::Delete(Column::State, db_key)),
                    }
                }
                StateKey::StageChunk(stage, chunk) => {
                    let db_key = stage_key(stage, *chunk);
                    match state.staged.get(stage).and_then(|staged| {
                        Some((staged.started_ms, staged.chunks.get(*chunk as usize)?))
                    }) {
                        Some(value) => ops.push(KvOp::Put(
                            Column::State,
                            db_key,
                            codec::encode(&value)
                                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                        )),
                        None => ops.push(KvOp::Delete(Column::State, db_key)),
                    }
                }
                StateKey::SubmissionKey(name) => {
                    let mut db_key = SUBMISSION_KEY_PREFIX.to_vec();
                    db_key.extend_from_slice(name.as_bytes());
                    match state.submission_keys.get(name) {
                        Some(value) => ops.push(KvOp::Put(
                            Column::State,
                            db_key,
                            codec::encode(value)
                                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                        )),
                        None => ops.push(KvOp::Delete(Column::State, db_key)),
                    }
                }
                StateKey::Admission => ops.push(KvOp::Put(
                    Column::State,
                    KEY_ADMISSION.to_vec(),
                    codec::encode(&state.admission)
                        .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                )),
                StateKey::Counters => ops.push(KvOp::Put(
                    Column::State,
                    KEY_COUNTERS.to_vec(),
                    codec::encode(&(state.missions_submitted, state.next_ready_seq))
                        .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
                )),
            }
        }
        ops.push(KvOp::Put(
            Column::Meta,
            KEY_APPLIED.to_vec(),
            codec::encode(&replica.applied)
                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Write))?,
        ));
        Ok(ops)
    }

    fn read_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        match self
            .store
            .get(Column::Meta, KEY_SNAPSHOT)
            .map_err(kv(ErrorSubject::Snapshot(None), ErrorVerb::Read))?
        {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                codec::decode(&bytes)
                    .map_err(codec_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?,
            )),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // The state column and the applied position are exported as of one
        // moment, entry by entry into chunks: no copy of the whole state.
        // This reads the whole state (seconds at a GiB), so it runs off the
        // runtime that serves Raft.
        // The column catches up first, so the snapshot is as of now.
        self.write_state()?;
        let subject = ErrorSubject::Snapshot(None);
        let name = self.next_snapshot_name("b")?;
        let store = self.store.clone();
        let chunks = name.clone();
        let (data, applied) =
            crate::runtime::off_runtime(self.offload.as_ref(), move || -> Result<_, KvError> {
                let mut writer = crate::snapshot::FrameWriter::new(store.clone(), chunks)?;
                let applied = store.export(Column::State, KEY_APPLIED, &mut |key, value| {
                    writer.entry(key, value)
                })?;
                Ok((writer.finish()?, applied))
            })
            .await
            .map_err(kv(subject.clone(), ErrorVerb::Write))?;
        let applied: AppliedMeta = match applied {
            Some(bytes) => {
                codec::decode(&bytes).map_err(codec_err(subject.clone(), ErrorVerb::Read))?
            }
            None => AppliedMeta::default(),
        };
        let snapshot_id = match applied.last_applied {
            Some(last) => format!(
                "{}-{}-{}",
                last.leader_id, last.index, self.snapshot_sequence
            ),
            None => format!("--{}", self.snapshot_sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            name,
            len: data.len(),
        };
        let current = self.read_snapshot()?;
        // An install may have brought a newer snapshot meanwhile: keep it.
        let newer = current
            .as_ref()
            .is_none_or(|current| current.meta.last_log_id <= meta.last_log_id);
        if newer {
            let mut ops = vec![KvOp::Put(
                Column::Meta,
                KEY_SNAPSHOT.to_vec(),
                codec::encode(&stored).map_err(codec_err(subject.clone(), ErrorVerb::Write))?,
            )];
            if let Some(current) = current {
                ops.push(crate::snapshot::delete_op(&current.name));
            }
            self.store
                .write(ops, true)
                .map_err(kv(subject, ErrorVerb::Write))?;
        }
        tracing::debug!(bytes = stored.len, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

/// Writes a fully received snapshot's entries into the state column in
/// bounded batches, then (durably, in one batch) its applied position and
/// itself as the current snapshot, ending the install. Redone on open if a
/// crash interrupted it.
fn replay_snapshot(store: &Arc<dyn KvStore>, marker: &StoredSnapshot) -> StorageResult<()> {
    let subject = ErrorSubject::Snapshot(Some(marker.meta.signature()));
    let previous = match store
        .get(Column::Meta, KEY_SNAPSHOT)
        .map_err(kv(subject.clone(), ErrorVerb::Read))?
    {
        Some(bytes) => Some(
            codec::decode::<StoredSnapshot>(&bytes)
                .map_err(codec_err(subject.clone(), ErrorVerb::Read))?,
        ),
        None => None,
    };
    let mut data =
        crate::snapshot::SnapshotData::open(store.clone(), marker.name.clone(), marker.len);
    let mut batch = vec![KvOp::DeleteRange(Column::State, Vec::new(), vec![0xff; 16])];
    let mut bytes = 0usize;
    crate::snapshot::read_frames(&mut data, &mut |key, value| {
        if !is_state_key(&key) {
            return Err(KvError::Io {
                operation: "snapshot install",
                message: format!(
                    "the snapshot holds a key the state does not: {:?}",
                    String::from_utf8_lossy(&key[..key.len().min(40)])
                ),
            });
        }
        bytes += key.len() + value.len();
        batch.push(KvOp::Put(Column::State, key, value));
        if bytes >= INSTALL_BATCH_BYTES {
            store.write(std::mem::take(&mut batch), false)?;
            bytes = 0;
        }
        Ok(())
    })
    .map_err(kv(subject.clone(), ErrorVerb::Read))?;
    let applied = AppliedMeta {
        last_applied: marker.meta.last_log_id,
        membership: marker.meta.last_membership.clone(),
    };
    batch.push(KvOp::Put(
        Column::Meta,
        KEY_APPLIED.to_vec(),
        codec::encode(&applied).map_err(codec_err(subject.clone(), ErrorVerb::Write))?,
    ));
    batch.push(KvOp::Put(
        Column::Meta,
        KEY_SNAPSHOT.to_vec(),
        codec::encode(marker).map_err(codec_err(subject.clone(), ErrorVerb::Write))?,
    ));
    batch.push(KvOp::Delete(Column::Meta, KEY_INSTALLING.to_vec()));
    if let Some(previous) = previous.filter(|p| p.name != marker.name) {
        batch.push(crate::snapshot::delete_op(&previous.name));
    }
    store
        .write(batch, true)
        .map_err(kv(subject, ErrorVerb::Write))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, MeshNode>)> {
        let replica = self.replica.read().expect("state lock");
        Ok((
            replica.applied.last_applied,
            replica.applied.membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let (due, last_index) = {
            let mut guard = self.replica.write().expect("state lock");
            let replica = &mut *guard;
            for entry in entries {
                replica.applied.last_applied = Some(entry.log_id);
                replica.unwritten.entries += 1;
                match entry.payload {
                    EntryPayload::Blank => responses.push(CommandResponse::Ok),
                    EntryPayload::Normal(command) => {
                        responses.push(replica.state.apply(&command, &mut replica.unwritten.keys));
                    }
                    EntryPayload::Membership(membership) => {
                        replica.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(CommandResponse::Ok);
                    }
                }
            }
            (replica.unwritten.due(), replica.last_applied_index())
        };
        if due {
            self.write_state()?;
        }
        self.applied_watch.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_sequence += 1;
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> StorageResult<Box<crate::snapshot::SnapshotData>> {
        let name = self.next_snapshot_name("r")?;
        let data = crate::snapshot::SnapshotData::create(self.store.clone(), name)
            .map_err(kv(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(data))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MeshNode>,
        snapshot: Box<crate::snapshot::SnapshotData>,
    ) -> StorageResult<()> {
        let mut data = *snapshot;
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        data.flush_chunk()
            .map_err(kv(subject.clone(), ErrorVerb::Write))?;
        if !data.stored_in(&self.store) {
            // Handed over in process (openraft's test suite does): copy it in.
            let name = self.next_snapshot_name("r")?;
            data = data
                .copy_to(self.store.clone(), name)
                .map_err(kv(subject.clone(), ErrorVerb::Write))?;
        }
        let marker = StoredSnapshot {
            meta: meta.clone(),
            name: data.name().to_string(),
            len: data.len(),
        };
        self.store
            .write(
                vec![KvOp::Put(
                    Column::Meta,
                    KEY_INSTALLING.to_vec(),
                    codec::encode(&marker).map_err(codec_err(subject.clone(), ErrorVerb::Write))?,
                )],
                true,
            )
            .map_err(kv(subject.clone(), ErrorVerb::Write))?;
        // What was applied and not written belongs to the state the
        // snapshot replaces: dropped, after any write under way has landed
        // (no entry is applied during an install, so none is taken again).
        {
            let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let mut replica = self.replica.write().expect("state lock");
            replica.unwritten = Unwritten::default();
        }
        // No entry is applied while openraft installs, and readers keep the
        // state in memory until it is swapped below, so the replay and the
        // reload run without the state lock.
        let store = self.store.clone();
        let replayed = marker.clone();
        let mut state = crate::runtime::off_runtime(self.offload.as_ref(), move || {
            replay_snapshot(&store, &replayed)?;
            load_state(store.as_ref())
        })
        .await?;
        // Views cached by revision must not match the new state by accident:
        // revisions after an install start in a range counting never reaches.
        let installed_at = meta.last_log_id.map(|id| id.index).unwrap_or(0);
        for mission in state.missions.values_mut() {
            mission.revision.0 = (1 << 63) | installed_at;
        }
        let mut replica = self.replica.write().expect("state lock");
        replica.state = state;
        replica.applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let last_index = replica.last_applied_index();
        drop(replica);
        tracing::info!(bytes = marker.len, "snapshot installed");
        self.applied_watch.send_replace(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(crate::snapshot::SnapshotData::open(
                self.store.clone(),
                stored.name,
                stored.len,
            )),
        }))
    }
}

/// Opens the log store and state machine over one store.
pub fn open_storage(store: Arc<dyn KvStore>) -> StorageResult<(LogStore, StateMachineStore)> {
    Ok((
        LogStore::new(store.clone()),
        StateMachineStore::open(store)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state machine over the RocksDB database in `dir`.
    fn open_rocks(dir: &std::path::Path) -> StateMachineStore {
        let store: Arc<dyn KvStore> = Arc::new(RocksKv::open(dir).unwrap());
        StateMachineStore::open(store).unwrap()
    }

    /// A normal entry of term 1 at `index`.
    fn normal(index: u64, command: crate::command::Command) -> Entry<TypeConfig> {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(command),
        }
    }

    fn blank(index: u64) -> (Entry<TypeConfig>, usize) {
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        (entry, 10)
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_serve_only_a_contiguous_kept_run() {
        let mut recent = RecentEntries::default();
        assert_eq!(indexes(recent.read(1, 2, usize::MAX)), None);
        recent.appended((1..=5).map(blank).collect());
        assert_eq!(indexes(recent.read(2, 5, usize::MAX)), Some(vec![2, 3, 4]));
        // Past the last kept entry, or before the first: the store answers.
        assert_eq!(indexes(recent.read(4, 7, usize::MAX)), None);
        // The byte bound stops after the entry that reaches it.
        assert_eq!(indexes(recent.read(1, 6, 20)), Some(vec![1, 2]));
        assert_eq!(indexes(recent.read(1, 6, 0)), Some(vec![1]));
        recent.truncated(4);
        assert_eq!(indexes(recent.read(1, 4, usize::MAX)), Some(vec![1, 2, 3]));
        assert_eq!(indexes(recent.read(1, 5, usize::MAX)), None);
        recent.appended(vec![blank(4)]);
        recent.purged(2);
        assert_eq!(indexes(recent.read(1, 5, usize::MAX)), None);
        assert_eq!(indexes(recent.read(3, 5, usize::MAX)), Some(vec![3, 4]));
        assert_eq!(recent.bytes, 20);
        // An append that does not follow starts the run again.
        recent.appended(vec![blank(9)]);
        assert_eq!(indexes(recent.read(3, 5, usize::MAX)), None);
        assert_eq!(indexes(recent.read(9, 10, usize::MAX)), Some(vec![9]));
        assert_eq!(recent.bytes, 10);
    }

    #[test]
    fn recent_entries_stay_within_their_bounds() {
        let mut recent = RecentEntries::default();
        recent.appended((1..=(RECENT_ENTRIES as u64 + 10)).map(blank).collect());
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.bytes, RECENT_ENTRIES * 10);
        assert_eq!(*recent.entries.first_key_value().unwrap().0, 11);
    }
    use crate::kv::{MemKv, RocksKv};
    use openraft::testing::{StoreBuilder, Suite};

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().expect("temp dir");
            let store: Arc<dyn KvStore> =
                Arc::new(RocksKv::open(dir.path()).expect("open rocksdb"));
            let (log, machine) = open_storage(store)?;
            Ok((dir, log, machine))
        }
    }

    struct MemBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
        async fn build(&self) -> StorageResult<((), LogStore, StateMachineStore)> {
            let (log, machine) = open_storage(Arc::new(MemKv::new()))?;
            Ok(((), log, machine))
        }
    }

    #[test]
    fn rocksdb_stores_pass_the_openraft_suite() {
        Suite::test_all(RocksBuilder).unwrap();
    }

    #[test]
    fn memory_stores_pass_the_openraft_suite() {
        Suite::test_all(MemBuilder).unwrap();
    }

    #[test]
    fn applied_missions_survive_a_reopen_and_a_snapshot() {
        use crate::command::Command;
        use crate::mission::TaskState;

        let dir = tempfile::tempdir().unwrap();
        let open = || open_rocks(dir.path());
        let task = crate::mission::test_submission;
        let entry = normal;
        let built = {
            let mut machine = open();
            let answers = futures::executor::block_on(machine.apply(vec![
                entry(
                    1,
                    Command::SubmitMission {
                        max_fix_rounds: None,
                        name: "demo".into(),
                        tasks: vec![task("a", &[]), task("b", &["a"])],
                        at_ms: 5,
                        assign: vec![],
                        staged: None,
                        idempotency_key: None,
                        origin: None,
                    },
                ),
                entry(
                    2,
                    Command::AssignTask {
                        mission: "m1".into(),
                        task: "a".into(),
                        node: 9,
                        attempt: 0,
                        at_ms: 6,
                    },
                ),
                entry(
                    3,
                    Command::AssignTask {
                        mission: "m1".into(),
                        task: "a".into(),
                        node: 8,
                        attempt: 0,
                        at_ms: 6,
                    },
                ),
            ]))
            .unwrap();
            assert_eq!(answers[0], CommandResponse::MissionCreated("m1".into()));
            assert_eq!(answers[1], CommandResponse::Ok);
            assert!(
                matches!(answers[2], CommandResponse::Rejected(_)),
                "compare-and-set refuses a second owner"
            );
            let mut builder = futures::executor::block_on(machine.get_snapshot_builder());
            let mut built = futures::executor::block_on(builder.build_snapshot()).unwrap();
            // The bytes leave with the snapshot's meta, as openraft sends them.
            (built.meta.clone(), read_all(&mut built.snapshot))
        };
        // Completing `a` makes `b` ready: a change to a task the command did
        // not name, which storage must write too.
        let before_reopen = {
            let mut machine = open();
            let result = crate::mission::test_result(9, 1);
            let answers = futures::executor::block_on(machine.apply(vec![entry(
                4,
                Command::CompleteTask {
                    spawn: Vec::new(),
                    mission: "m1".into(),
                    task: "a".into(),
                    result,
                },
            )]))
            .unwrap();
            assert_eq!(answers[0], CommandResponse::Ok);
            let state = machine.shared_state().read().unwrap().state.clone();
            assert_eq!(state.missions["m1"].tasks["b"].state, TaskState::Ready);
            machine.write_state().unwrap();
            state
        };
        let reopened = open().shared_state().read().unwrap().state.clone();
        assert_eq!(reopened, before_reopen, "every changed task was written");
        let machine = {
            // Back to the state of the snapshot for the checks below.
            let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
            let mut machine = StateMachineStore::open(store).unwrap();
            install(&mut machine, &built.0, &built.1);
            machine
        };
        {
            let replica = machine.shared_state();
            let replica = replica.read().unwrap();
            let task = &replica.state.missions["m1"].tasks["a"];
            assert_eq!(
                (task.state, task.owner, task.attempt),
                (TaskState::Assigned, Some(9), 1)
            );
            assert_eq!(replica.state.missions_submitted, 1);
            assert_eq!(replica.last_applied_index(), 3);
            assert_eq!(
                replica.state.missions["m1"].tasks["b"].state,
                TaskState::Pending
            );
        }
        drop(machine);
        // A snapshot carries missions to a fresh replica.
        let mut fresh = StateMachineStore::open(Arc::new(MemKv::new())).unwrap();
        install(&mut fresh, &built.0, &built.1);
        let replica = fresh.shared_state();
        assert_eq!(
            replica.read().unwrap().state.missions["m1"].tasks["a"].owner,
            Some(9)
        );
    }

    #[test]
    fn the_state_column_is_written_behind_as_of_one_applied_entry() {
        use crate::command::Command;

        let dir = tempfile::tempdir().unwrap();
        let open = || open_rocks(dir.path());
        let entry = normal;
        let tasks: Vec<_> = (0..40)
            .map(|t| crate::mission::test_submission(&format!("t{t}"), &[]))
            .collect();
        // The state after each applied entry, to compare a reopen against.
        let mut states = vec![MeshState::default()];
        let last = 3 * WRITE_AFTER_ENTRIES + 7;
        {
            let mut machine = open();
            for index in 1..=last {
                let command = match index {
                    1 => Command::SubmitMission {
                        max_fix_rounds: None,
                        name: "demo".into(),
                        tasks: tasks.clone(),
                        at_ms: 5,
                        assign: vec![],
                        staged: None,
                        idempotency_key: None,
                        origin: None,
                    },
                    // Every task is assigned, then finished, one per entry.
                    i if i <= 41 => Command::AssignTask {
                        mission: "m1".into(),
                        task: format!("t{}", i - 2),
                        node: 3,
                        attempt: 0,
                        at_ms: 6,
                    },
                    i if i <= 81 => Command::CompleteTask {
                        spawn: Vec::new(),
                        mission: "m1".into(),
                        task: format!("t{}", i - 42),
                        result: crate::mission::test_result(3, 1),
                    },
                    _ => Command::Noop,
                };
                let answers =
                    futures::executor::block_on(machine.apply(vec![entry(index, command)]))
                        .unwrap();
                assert!(
                    !matches!(answers[0], CommandResponse::Rejected(_)),
                    "entry {index}: {answers:?}"
                );
                states.push(machine.shared_state().read().unwrap().state.clone());
            }
        }
        // Dropped without a final write, as a crash leaves it.
        let reopened = open();
        let replica = reopened.shared_state();
        let replica = replica.read().unwrap();
        let at = replica.last_applied_index();
        assert!(
            at + WRITE_AFTER_ENTRIES > last && at <= last,
            "the column lags {} entries",
            last - at
        );
        assert_eq!(
            replica.state, states[at as usize],
            "the column holds the state as of entry {at}, nothing newer or older"
        );
        assert_eq!(
            at % WRITE_AFTER_ENTRIES,
            0,
            "written every {WRITE_AFTER_ENTRIES} entries"
        );
        drop(replica);
        drop(reopened);
        // A write brings it up to the last entry.
        let mut machine = open();
        futures::executor::block_on(machine.apply(vec![entry(last + 1, Command::Noop)])).unwrap();
        machine.write_state().unwrap();
        drop(machine);
        assert_eq!(
            open().shared_state().read().unwrap().last_applied_index(),
            last + 1
        );
    }

    fn read_all(data: &mut crate::snapshot::SnapshotData) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = data.read_some(&mut buffer).unwrap();
            if n == 0 {
                return bytes;
            }
            bytes.extend_from_slice(&buffer[..n]);
        }
    }

    /// Receives `bytes` as a snapshot and installs it, as openraft does.
    fn install(
        machine: &mut StateMachineStore,
        meta: &SnapshotMeta<NodeId, MeshNode>,
        bytes: &[u8],
    ) {
        let mut receiving =
            futures::executor::block_on(machine.begin_receiving_snapshot()).unwrap();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = receiving.write_some(rest).unwrap();
            rest = &rest[n..];
        }
        futures::executor::block_on(machine.install_snapshot(meta, receiving)).unwrap();
    }

    #[test]
    fn a_state_far_larger_than_the_codec_cap_snapshots_and_installs_in_chunks() {
        use crate::command::Command;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
        // 40 missions of 100 tasks with 20 KiB names: about 80 MiB of state,
        // over the codec's 64 MiB cap for one value.
        let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let mut machine = StateMachineStore::open(store.clone()).unwrap();
        let name = "n".repeat(20 * 1024);
        for m in 0..40u64 {
            let tasks = (0..100)
                .map(|t| {
                    let mut task = crate::mission::test_submission(&format!("t{t}"), &[]);
                    task.inputs = vec![(name.clone(), "sha256:00".into())];
                    task
                })
                .collect();
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), m + 1),
                payload: EntryPayload::Normal(Command::SubmitMission {
                    max_fix_rounds: None,
                    origin: None,
                    name: format!("big{m}"),
                    tasks,
                    at_ms: m,
                    assign: Vec::new(),
                    staged: None,
                    idempotency_key: Some(format!("k{m}")),
                }),
            };
            futures::executor::block_on(machine.apply(vec![entry])).unwrap();
        }
        let mut builder = futures::executor::block_on(machine.get_snapshot_builder());
        let mut built = futures::executor::block_on(builder.build_snapshot()).unwrap();
        assert!(
            built.snapshot.len() > coditect_memory::codec::MAX_ENCODED_BYTES as u64,
            "{}",
            built.snapshot.len()
        );
        assert_eq!(built.meta.last_log_id.map(|id| id.index), Some(40));
        let bytes = read_all(&mut built.snapshot);
        let mut fresh = StateMachineStore::open(Arc::new(MemKv::new())).unwrap();
        install(&mut fresh, &built.meta, &bytes);
        let expected = machine.shared_state().read().unwrap().state.clone();
        assert_eq!(fresh.shared_state().read().unwrap().state, expected);
        // The installed snapshot is the current one, served in full.
        let mut current = futures::executor::block_on(fresh.get_current_snapshot())
            .unwrap()
            .unwrap();
        assert_eq!(read_all(&mut current.snapshot).len(), bytes.len());
    }

    #[test]
    fn an_interrupted_install_is_finished_on_open() {
        let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let mut source = StateMachineStore::open(store).unwrap();
        let entry = openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: openraft::EntryPayload::Normal(crate::command::Command::SubmitMission {
                max_fix_rounds: None,
                name: "m".into(),
                tasks: vec![crate::mission::test_submission("a", &[])],
                at_ms: 1,
                assign: Vec::new(),
                staged: None,
                idempotency_key: None,
                origin: None,
            }),
        };
        futures::executor::block_on(source.apply(vec![entry])).unwrap();
        let mut builder = futures::executor::block_on(source.get_snapshot_builder());
        let mut built = futures::executor::block_on(builder.build_snapshot()).unwrap();
        let bytes = read_all(&mut built.snapshot);
        // The receiver got every byte and recorded the install, then crashed.
        let target: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let machine = StateMachineStore::open(target.clone()).unwrap();
        let mut receiving =
            crate::snapshot::SnapshotData::create(target.clone(), "r9".into()).unwrap();
        receiving
            .write_some(&bytes[..bytes.len().min(crate::snapshot::CHUNK_BYTES)])
            .unwrap();
        let mut rest = &bytes[bytes.len().min(crate::snapshot::CHUNK_BYTES)..];
        while !rest.is_empty() {
            let n = receiving.write_some(rest).unwrap();
            rest = &rest[n..];
        }
        receiving.flush_chunk().unwrap();
        let marker = StoredSnapshot {
            meta: built.meta.clone(),
            name: "r9".into(),
            len: receiving.len(),
        };
        target
            .write(
                vec![KvOp::Put(
                    Column::Meta,
                    KEY_INSTALLING.to_vec(),
                    codec::encode(&marker).unwrap(),
                )],
                true,
            )
            .unwrap();
        drop(machine);
        let reopened = StateMachineStore::open(target.clone()).unwrap();
        let state = reopened.shared_state().read().unwrap().state.clone();
        assert_eq!(state.missions["m1"].tasks.len(), 1);
        assert!(target.get(Column::Meta, KEY_INSTALLING).unwrap().is_none());
    }

    #[test]
    fn format_marker_is_written_then_required() {
        let store = MemKv::new();
        check_format(&store).unwrap();
        assert_eq!(
            store.get(Column::Meta, KEY_FORMAT).unwrap().unwrap(),
            FORMAT_MARKER
        );
        check_format(&store).unwrap();

        let foreign = MemKv::new();
        foreign
            .write(vec![KvOp::Put(Column::Log, vec![1], vec![1])], true)
            .unwrap();
        assert!(check_format(&foreign).is_err());
    }
}
