//! openraft's log store and state machine over the [`KvStore`] seam.

// openraft's traits return its own (large) StorageError; helpers return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::kv::{Column, KvError, KvOp, KvStore};
use crate::state::{MeshState, StateKey};
use crate::types::{CommandResponse, MeshNode, NodeId, TypeConfig};
use coditect_memory::codec;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_FORMAT: &[u8] = b"format";
/// Written into every database we create; a database without it is not ours.
/// Version 2: standard Raft leader ids (one leader per term) and one key per
/// task; a version 1 database is refused by name, never misread.
pub const FORMAT_MARKER: &[u8] = b"coditect-raft/2";

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
}

fn task_key(mission: &str, task: &str) -> Vec<u8> {
    let mut key = TASK_PREFIX.to_vec();
    key.extend_from_slice(mission.as_bytes());
    key.push(0);
    key.extend_from_slice(task.as_bytes());
    key
}
const KEY_COUNTERS: &[u8] = b"counters";

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

fn log_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
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
}

impl LogStore {
    /// A log store over `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        LogStore { store }
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
    ) -> StorageResult<()> {
        let bytes = codec::encode(value).map_err(codec_err(subject.clone(), ErrorVerb::Write))?;
        self.store
            .write(vec![KvOp::Put(Column::Meta, key.to_vec(), bytes)], true)
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
        let end = match range.end_bound() {
            Bound::Included(index) => log_key(index.saturating_add(1)),
            Bound::Excluded(index) => log_key(*index),
            Bound::Unbounded => vec![0xff; 9],
        };
        let rows = self
            .store
            .range(Column::Log, &log_key(start), &end)
            .map_err(kv(ErrorSubject::Logs, ErrorVerb::Read))?;
        rows.into_iter()
            .map(|(_, bytes)| {
                codec::decode(&bytes).map_err(codec_err(ErrorSubject::Logs, ErrorVerb::Read))
            })
            .collect()
    }
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
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
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
        for entry in entries {
            let bytes =
                codec::encode(&entry).map_err(codec_err(ErrorSubject::Logs, ErrorVerb::Write))?;
            ops.push(KvOp::Put(Column::Log, log_key(entry.log_id.index), bytes));
        }
        // Durable (fsync) before the callback: openraft counts the entries as
        // persisted, and may count this node toward a quorum, once it fires.
        let result = self.store.write(ops, true);
        match result {
            Ok(()) => {
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

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, MeshNode>,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    state: MeshState,
}

/// The state machine over a [`KvStore`]: the state lives in memory
/// ([`SharedState`]) and every applied batch is written through.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<dyn KvStore>,
    replica: SharedState,
    applied_watch: Arc<tokio::sync::watch::Sender<u64>>,
    snapshot_sequence: u64,
}

impl StateMachineStore {
    /// Loads the state machine from `store`.
    pub fn open(store: Arc<dyn KvStore>) -> StorageResult<Self> {
        let applied: AppliedMeta = match store
            .get(Column::Meta, KEY_APPLIED)
            .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))?
        {
            Some(bytes) => codec::decode(&bytes)
                .map_err(codec_err(ErrorSubject::StateMachine, ErrorVerb::Read))?,
            None => AppliedMeta::default(),
        };
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
        if let Some(bytes) = store
            .get(Column::State, KEY_COUNTERS)
            .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Read))?
        {
            let (submitted, ready): (u64, u64) = codec::decode(&bytes).map_err(decode_err())?;
            state.missions_submitted = submitted;
            state.next_ready_seq = ready;
        }
        let index = applied.last_applied.map(|id| id.index).unwrap_or(0);
        Ok(StateMachineStore {
            store,
            replica: Arc::new(RwLock::new(Replica { state, applied })),
            applied_watch: Arc::new(tokio::sync::watch::channel(index).0),
            snapshot_sequence: 0,
        })
    }

    /// The state readers share.
    pub fn shared_state(&self) -> SharedState {
        self.replica.clone()
    }

    /// Changes to the last applied index, for readers that react to new state.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_watch.subscribe()
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
        // State and applied position are read under one lock, so the
        // snapshot is exactly the state at `last_log_id`.
        let (data, applied) = {
            let replica = self.replica.read().expect("state lock");
            let data = codec::encode(&SnapshotPayload {
                state: replica.state.clone(),
            })
            .map_err(codec_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
            (data, replica.applied.clone())
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
            data: data.clone(),
        };
        let bytes = codec::encode(&stored)
            .map_err(codec_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        self.store
            .write(
                vec![KvOp::Put(Column::Meta, KEY_SNAPSHOT.to_vec(), bytes)],
                true,
            )
            .map_err(kv(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
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
        let mut touched = Vec::new();
        let (ops, last_index) = {
            let mut replica = self.replica.write().expect("state lock");
            for entry in entries {
                replica.applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(CommandResponse::Ok),
                    EntryPayload::Normal(command) => {
                        responses.push(replica.state.apply(&command, &mut touched));
                    }
                    EntryPayload::Membership(membership) => {
                        replica.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(CommandResponse::Ok);
                    }
                }
            }
            (
                Self::record_ops(&replica, &mut touched)?,
                replica.last_applied_index(),
            )
        };
        // Not synced: the log is the durable record; after a crash openraft
        // re-applies from whatever applied point survived.
        self.store
            .write(ops, false)
            .map_err(kv(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        self.applied_watch.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_sequence += 1;
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MeshNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let payload: SnapshotPayload =
            codec::decode(&data).map_err(codec_err(subject.clone(), ErrorVerb::Read))?;
        let (ops, last_index) = {
            let mut replica = self.replica.write().expect("state lock");
            replica.state = payload.state;
            // Everything is written below; nothing is left to mark.
            for mission in replica.state.missions.values_mut() {
                mission.dirty.0.clear();
            }
            replica.applied = AppliedMeta {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            let mut keys: Vec<StateKey> = replica
                .state
                .nodes
                .keys()
                .map(|id| StateKey::Node(*id))
                .chain(
                    replica
                        .state
                        .missions
                        .keys()
                        .map(|id| StateKey::Mission(id.clone())),
                )
                .chain(replica.state.missions.values().flat_map(|mission| {
                    mission
                        .tasks
                        .keys()
                        .map(|task| StateKey::Task(mission.id.clone(), task.clone()))
                }))
                .chain([StateKey::Counters])
                .collect();
            let mut ops = vec![KvOp::DeleteRange(Column::State, Vec::new(), vec![0xff; 16])];
            ops.extend(Self::record_ops(&replica, &mut keys)?);
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data,
            };
            ops.push(KvOp::Put(
                Column::Meta,
                KEY_SNAPSHOT.to_vec(),
                codec::encode(&stored).map_err(codec_err(subject.clone(), ErrorVerb::Write))?,
            ));
            (ops, replica.last_applied_index())
        };
        self.store
            .write(ops, true)
            .map_err(kv(subject, ErrorVerb::Write))?;
        self.applied_watch.send_replace(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
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
        use crate::mission::TaskState;
        use crate::types::Command;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store: Arc<dyn KvStore> = Arc::new(RocksKv::open(dir.path()).unwrap());
            StateMachineStore::open(store).unwrap()
        };
        let task = crate::mission::test_submission;
        let entry = |index: u64, command: Command| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        };
        let built = {
            let mut machine = open();
            let answers = futures::executor::block_on(machine.apply(vec![
                entry(
                    1,
                    Command::SubmitMission {
                        name: "demo".into(),
                        tasks: vec![task("a", &[]), task("b", &["a"])],
                        at_ms: 5,
                        assign: vec![],
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
            futures::executor::block_on(builder.build_snapshot()).unwrap()
        };
        // Completing `a` makes `b` ready: a change to a task the command did
        // not name, which storage must write too.
        let before_reopen = {
            let mut machine = open();
            let result = crate::mission::test_result(9, 1);
            let answers = futures::executor::block_on(machine.apply(vec![entry(
                4,
                Command::CompleteTask {
                    mission: "m1".into(),
                    task: "a".into(),
                    result,
                },
            )]))
            .unwrap();
            assert_eq!(answers[0], CommandResponse::Ok);
            let state = machine.shared_state().read().unwrap().state.clone();
            assert_eq!(state.missions["m1"].tasks["b"].state, TaskState::Ready);
            state
        };
        let reopened = open().shared_state().read().unwrap().state.clone();
        assert_eq!(reopened, before_reopen, "every changed task was written");
        let machine = {
            // Back to the state of the snapshot for the checks below.
            let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
            let mut machine = StateMachineStore::open(store).unwrap();
            futures::executor::block_on(machine.install_snapshot(
                &built.meta,
                Box::new(Cursor::new(built.snapshot.get_ref().clone())),
            ))
            .unwrap();
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
        futures::executor::block_on(fresh.install_snapshot(&built.meta, built.snapshot)).unwrap();
        let replica = fresh.shared_state();
        assert_eq!(
            replica.read().unwrap().state.missions["m1"].tasks["a"].owner,
            Some(9)
        );
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
