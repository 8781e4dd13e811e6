//! The orchestrator: what the Raft leader does with missions. It accepts
//! submissions, places ready tasks (batched into one Raft entry per round),
//! pushes assignments to their owners, commits outcomes with the attempt
//! as fencing token, decides retries, takes tasks back from nodes whose
//! lease ran out, commits steals, and reconciles what each node holds with
//! the replicated state. Any node answers mission queries and forwards
//! submissions and controls to the leader.
//!
//! The decisions themselves are the pure functions of [`crate::scheduler`];
//! this file gathers their inputs from the replica and heartbeats and turns
//! their outputs into commands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coditect_consensus::mission::{
    MissionRecord, TaskRecord, TaskResult, TaskState, TaskSubmission,
};
use coditect_consensus::{Command, CommandResponse, MeshState, NodeId};
use coditect_memory::Digest;
use futures::FutureExt;

use super::state::{ViewKey, WaiterSlot};
use super::Node;
use crate::messages::MAX_LEADER_SUBMIT_BUDGET;
use crate::messages::{
    Held, LeaderHint, MissionAction, MissionView, NodeRequest, NodeResponse, SubmitError,
};
use crate::mission::{parse_mission, to_submissions, validate, AgentConfig, MissionFormat};
use crate::propose::WriteError;
use crate::scheduler::orchestrator::{
    expired_leases, reconcile, revocations, round_commands, LeaseEnd, Owned, ReadyFacts,
};
use crate::scheduler::retention::{to_compact, MissionAge};
use crate::scheduler::{
    decide, place, Blame, BreakerConfig, BreakerGate, NodeView, PlacementConfig, RetryDecision,
    RetryPolicy, TaskId, TaskView, ViolationKind,
};
use crate::worker::{Assignment, BlobHint, Report};

/// How long a node waits for the leader's answer to a forwarded control.
const CONTROL_FORWARD_DEADLINE: Duration = Duration::from_secs(7);
/// What the hop to the leader and back may take, on top of the leader's budget.
const FORWARD_MARGIN: Duration = Duration::from_secs(2);
/// The longest a long poll naps after a change before it looks (see
/// `Node::wait_for_change`).
const MAX_POLL_NAP: Duration = Duration::from_millis(20);
/// How long a member that forwarded a submission waits for its own replica
/// to hold the new mission before answering (so a client that reads from
/// the node it submitted to finds it).
const APPLY_WAIT: Duration = Duration::from_secs(2);
/// Blob bytes the leader is assumed to fetch per second from the submitter.
const FETCH_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;

/// The time the leader gets for a submission of `tasks`: one write
/// deadline per Raft entry it takes (staged chunks and the sealing entry)
/// and the fetch of the blobs it names (sized from `blobs`, which holds
/// them). The forwarder sends this budget with the request and waits a
/// margin longer, so the leader always answers first: a forwarder that gave
/// up earlier could not tell the client whether the mission was committed.
/// Encodes every task and reads file sizes: callers run it off the runtime.
fn submit_budget(tasks: &[TaskSubmission], blobs: &coditect_memory::BlobStore) -> Duration {
    let named: BTreeSet<String> = tasks.iter().flat_map(digests_of).collect();
    let blob_bytes: u64 = named
        .iter()
        .filter_map(|text| text.parse::<Digest>().ok())
        .filter_map(|digest| blobs.size(&digest))
        .sum();
    let task_bytes: usize = tasks
        .iter()
        .map(|t| coditect_memory::codec::encoded_len(t).unwrap_or(0))
        .sum();
    let entries = 1 + (task_bytes / STAGE_CHUNK_BYTES) as u32;
    let fetch = Duration::from_millis(1_000 + blob_bytes * 1_000 / FETCH_BYTES_PER_SEC);
    (crate::propose::WRITE_DEADLINE * entries + fetch).min(MAX_LEADER_SUBMIT_BUDGET)
}

/// Missions in one page of `GET /api/missions`, at most.
pub const MAX_PAGE: usize = 500;

/// How often the leader looks for finished missions to compact.
const COMPACTION_PERIOD: Duration = Duration::from_secs(5);
/// Missions compacted per Raft entry, at most.
const COMPACT_PER_ENTRY: usize = 16;

/// How often the leader looks for work when nothing woke it.
const ROUND_PERIOD: Duration = Duration::from_millis(50);

/// Mission views kept, at most (the least recently read go first).
const MAX_CACHED_VIEWS: usize = 64;
/// Long polls waiting at once on this node, at most: half the HTTP
/// connections (`http_limits::MAX_CONNECTIONS`), so waiters can never hold
/// every connection and leave nobody else a way in.
pub const MAX_WAITERS: usize = 512;
const _: () = assert!(MAX_WAITERS <= crate::http_limits::MAX_CONNECTIONS / 2);
/// Long polls one client address may hold at once, at most.
pub const MAX_WAITERS_PER_CLIENT: usize = 256;
/// Largest view relayed from the leader to a node outside Raft, bytes.
const MAX_RELAYED_VIEW_BYTES: u64 = 256 * 1024 * 1024;
/// A relayed view travels in parts of this size (under the transport's
/// 16 MiB frame cap).
const RELAY_PART_BYTES: usize = 4 * 1024 * 1024;
/// Times a relayed view is started over because the mission changed while
/// its parts travelled, before the asker gives up.
const RELAY_RESTARTS: usize = 3;

/// Bytes of tasks per staged chunk of a large submission: a chunk's entry
/// stays well inside one Raft entry ([`coditect_consensus::MAX_ENTRY_BYTES`]).
const STAGE_CHUNK_BYTES: usize = 640 * 1024;

/// Splits `tasks` into runs of about [`STAGE_CHUNK_BYTES`] encoded bytes,
/// in order; every run has at least one task.
fn chunk_tasks(tasks: Vec<TaskSubmission>) -> Vec<Vec<TaskSubmission>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for task in tasks {
        let size = coditect_memory::codec::encoded_len(&task).unwrap_or(STAGE_CHUNK_BYTES);
        if !current.is_empty() && bytes + size > STAGE_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(task);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Violation kinds whose blame is the node (the task avoids that node next).
fn blames_node(kind: &str) -> bool {
    matches!(
        kind,
        "timeout" | "lost_node" | "node_error" | "llm_unavailable"
    )
}

/// The scheduler's view of a ready task; `home` is the node holding its
/// inputs (the mission's origin), preferred among equally loaded nodes.
fn task_view(mission: &str, record: &TaskRecord, home: Option<NodeId>) -> TaskView {
    TaskView {
        home,
        id: TaskId::new(mission, record.spec.id.clone()),
        priority: record.spec.priority,
        ready_seq: record.ready_seq,
        requires: record.spec.requires.clone(),
        avoid_nodes: record
            .violations
            .iter()
            .filter(|v| blames_node(&v.kind))
            .map(|v| v.node)
            .collect(),
    }
}

/// Mission `id`'s local change count in `state`, if it is there.
fn revision_in(state: &MeshState, id: &str) -> Option<u64> {
    state.missions.get(id).map(|m| m.revision.0)
}

/// A mission text up to this size is parsed and validated in line (tens
/// of microseconds); a larger one off the runtime that serves Raft.
const SMALL_MISSION_BYTES: usize = 8 * 1024;
/// A submission of up to this many tasks is checked and chunked in line.
const SMALL_MISSION_TASKS: usize = 64;

/// How often a scheduling round looks at every task instead of the index.
const FULL_SCAN_PERIOD: Duration = Duration::from_secs(1);

/// The tasks of `mission` a round looks at: its held tasks (from its
/// index), or every task when `full_scan` or before the index is built.
/// Callers still check each task's state.
fn held_in(mission: &MissionRecord, full_scan: bool) -> Box<dyn Iterator<Item = &TaskRecord> + '_> {
    match mission.index() {
        Some(index) if !full_scan => {
            Box::new(index.held.iter().filter_map(|id| mission.tasks.get(id)))
        }
        _ => Box::new(mission.tasks.values()),
    }
}

/// The ready tasks of `mission`, most urgent first when its index is used
/// (`true`), else every task in id order (`false`).
type TaskIter<'a> = Box<dyn Iterator<Item = &'a TaskRecord> + 'a>;
fn ready_in(mission: &MissionRecord, full_scan: bool) -> (bool, TaskIter<'_>) {
    match mission.index() {
        Some(index) if !full_scan => (
            true,
            Box::new(
                index
                    .ready
                    .iter()
                    .filter_map(|(_, _, id)| mission.tasks.get(id)),
            ),
        ),
        _ => (false, Box::new(mission.tasks.values())),
    }
}

/// Ready tasks of one requirement set looked at per round beyond twice the
/// room its capable nodes have: enough to note why tasks wait (a
/// requirement no node meets, say) without visiting them all.
const REASON_SAMPLE: usize = 64;

/// Reasons written per round, at most (the rest follow in later rounds), so
/// the round's Raft entry stays small whatever the backlog.
const MAX_REASONS_PER_ROUND: usize = 1024;

/// The ready tasks worth placing this round: for each set of requirements,
/// the most urgent `2 * room + REASON_SAMPLE`, where `room` is what the
/// nodes that meet them can still take. A round over a mission of tens of
/// thousands of ready tasks then costs what it can place, not the mission's
/// size (the scan itself clones nothing). Tasks left out keep their reason
/// and wait; the most urgent always come first, as in [`place`].
fn ready_to_consider(
    state: &MeshState,
    now_ms: u64,
    nodes: &[NodeView],
    config: &PlacementConfig,
    full_scan: bool,
) -> Vec<(TaskView, u32, Option<String>)> {
    use std::collections::BinaryHeap;
    /// A ready task, ordered by urgency only (most urgent smallest).
    struct Candidate<'a> {
        urgency: (u8, u64, &'a str, &'a str),
        record: &'a TaskRecord,
        home: Option<NodeId>,
    }
    impl PartialEq for Candidate<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.urgency == other.urgency
        }
    }
    impl Eq for Candidate<'_> {}
    impl PartialOrd for Candidate<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Candidate<'_> {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.urgency.cmp(&other.urgency)
        }
    }
    // Per requirement set: how many to keep, and the most urgent so far
    // (a max-heap, so the least urgent kept is the one to drop).
    let mut wanted: BTreeMap<&[String], (usize, BinaryHeap<Candidate<'_>>)> = BTreeMap::new();
    for mission in state.missions.values() {
        if mission.state != coditect_consensus::mission::MissionState::Running {
            continue;
        }
        let (ordered, tasks) = ready_in(mission, full_scan);
        for record in tasks {
            if record.state != TaskState::Ready || record.not_before_ms > now_ms {
                continue;
            }
            // In urgency order, once every requirement set met so far has
            // all it can use, the rest of this mission cannot get in (a set
            // first met further on waits for the next full scan at most).
            if ordered
                && wanted.contains_key(record.spec.requires.as_slice())
                && wanted.values().all(|(limit, heap)| heap.len() >= *limit)
            {
                break;
            }
            let requires = record.spec.requires.as_slice();
            let (limit, heap) = wanted.entry(requires).or_insert_with(|| {
                let room: u64 = nodes
                    .iter()
                    .filter(|node| requires.iter().all(|tag| node.capabilities.has(tag)))
                    .map(|node| u64::from(crate::scheduler::placement::room_left(node, config)))
                    .sum();
                let limit = usize::try_from(room.saturating_mul(2)).unwrap_or(usize::MAX);
                (limit.saturating_add(REASON_SAMPLE), BinaryHeap::new())
            });
            let candidate = Candidate {
                urgency: (
                    record.spec.priority,
                    record.ready_seq,
                    mission.id.as_str(),
                    record.spec.id.as_str(),
                ),
                record,
                home: mission.origin,
            };
            if heap.len() < *limit {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                heap.pop();
                heap.push(candidate);
            }
        }
    }
    wanted
        .into_values()
        .flat_map(|(_, heap)| heap.into_vec())
        .map(|c| {
            let record = c.record;
            (
                task_view(c.urgency.2, record, c.home),
                record.attempt,
                record.reason.clone(),
            )
        })
        .collect()
}

/// Every digest a task needs.
/// A successful result too large for one Raft entry (tens of thousands of
/// output files) can never be committed: it becomes the task's own
/// `invalid_task` violation, which fails it with that reason, instead of a
/// report the owner would resend forever while the task stays running.
fn bound_result(mission: &str, task: &str, report: Report) -> Report {
    let Report::Succeeded(result) = report else {
        return report;
    };
    let command = Command::CompleteTask {
        spawn: Vec::new(),
        mission: mission.to_string(),
        task: task.to_string(),
        result,
    };
    let size = crate::propose::entry_size(&command);
    let Command::CompleteTask { result, .. } = command else {
        unreachable!("built above")
    };
    match size {
        Ok(_) => Report::Succeeded(result),
        Err(problem) => Report::violated(
            result.node,
            result.attempt,
            ViolationKind::InvalidTask,
            &format!(
                "its result ({} output files) cannot be stored: {problem}; write fewer files, for example one archive",
                result.outputs.len()
            ),
        ),
    }
}

fn digests_of(task: &TaskSubmission) -> Vec<String> {
    // The Python runtime is served by the nodes that advertise `python`,
    // not copied to the leader with every mission.
    let mut out = Vec::new();
    if !crate::python::is_runtime(&task.module) {
        out.push(task.module.clone());
    }
    out.extend(task.input.iter().cloned());
    out.extend(task.inputs.iter().map(|(_, digest)| digest.clone()));
    out
}

impl Node {
    /// Wakes the scheduling loop (something became placeable).
    pub(super) fn wake_scheduler(&self) {
        self.inner.wake.notify_one();
    }

    /// The leader's scheduling loop: a round whenever woken, at least every
    /// [`ROUND_PERIOD`] (retry backoffs, leases, capacity freed elsewhere).
    pub(super) async fn scheduling_loop(self) {
        while !self.is_stopped() {
            let woken = self.inner.wake.notified();
            // A node that does not lead only wakes when it becomes leader.
            let nap = self.inner.env.sleep(if self.is_leader() {
                ROUND_PERIOD
            } else {
                self.inner.heartbeat
            });
            futures::future::select(Box::pin(woken), nap).await;
            let ready = self.is_leader()
                && self
                    .inner
                    .view
                    .lock()
                    .expect("view lock")
                    .leader_since
                    .is_some();
            if ready {
                self.schedule_round().await;
                let now = self.inner.env.elapsed();
                let due = {
                    let mut sched = self.inner.sched.lock().expect("sched lock");
                    let due = sched
                        .last_compaction
                        .is_none_or(|at| now >= at + COMPACTION_PERIOD);
                    if due {
                        sched.last_compaction = Some(now);
                    }
                    due
                };
                if due {
                    self.compact_finished().await;
                }
            }
        }
    }

    /// Leader: compacts finished missions past the retention policy (a
    /// bounded number per Raft entry), so the replicated state stays bounded.
    async fn compact_finished(&self) {
        let ages: Vec<MissionAge> = self.state(|state| {
            state
                .missions
                .values()
                .map(|m| MissionAge {
                    id: m.id.clone(),
                    sequence: m.id.trim_start_matches('m').parse().unwrap_or(0),
                    submitted_ms: m.submitted_ms,
                    finished: m.state != coditect_consensus::mission::MissionState::Running,
                    compacted: m.summary.is_some(),
                })
                .collect()
        });
        let chosen = to_compact(
            &ages,
            &self.inner.retention,
            self.inner.env.now_ms(),
            COMPACT_PER_ENTRY,
        );
        if chosen.is_empty() {
            return;
        }
        let count = chosen.len();
        match self
            .write(Command::CompactMissions { missions: chosen })
            .await
        {
            Ok(CommandResponse::Ok) => {
                tracing::info!("compacted {count} finished mission(s) to summaries")
            }
            Ok(other) => tracing::debug!("compaction answered {other:?}"),
            Err(error) => tracing::debug!("compaction not committed: {error}"),
        }
    }

    /// Where to fetch the blobs node `node` produced first.
    fn peer_hint_of(&self, node: NodeId) -> Vec<BlobHint> {
        self.state(|state| self.peer_hint(state, node))
            .map(|hint| vec![(hint.peer_id, hint.addrs)])
            .unwrap_or_default()
    }

    fn peer_hint(&self, state: &MeshState, node: NodeId) -> Option<LeaderHint> {
        if node == self.inner.node_id {
            return Some(LeaderHint {
                node_id: node,
                peer_id: self.inner.peer_id.clone(),
                addrs: self.listen_addrs(),
            });
        }
        state.nodes.get(&node).map(|record| LeaderHint {
            node_id: node,
            peer_id: record.peer_id.clone(),
            addrs: record.addrs.clone(),
        })
    }

    /// The assignment of `task` as the state holds it now (owner and attempt included).
    fn assignment_for(
        &self,
        state: &MeshState,
        mission: &MissionRecord,
        record: &TaskRecord,
    ) -> Assignment {
        // The node that received the submission holds its blobs; then this
        // leader (which copies them after the commit).
        let mut sources: Vec<BlobHint> = Vec::new();
        if let Some(hint) = mission
            .origin
            .and_then(|origin| self.peer_hint(state, origin))
        {
            sources.push((hint.peer_id, hint.addrs));
        }
        if !sources.iter().any(|(peer, _)| *peer == self.inner.peer_id) {
            sources.push((self.inner.peer_id.clone(), self.listen_addrs()));
        }
        let mut deps = Vec::new();
        for need in &record.spec.needs {
            let Some(result) = mission.tasks.get(need).and_then(|t| t.result.as_ref()) else {
                continue;
            };
            deps.push((need.clone(), result.outputs.clone()));
            if let Some(hint) = self.peer_hint(state, result.node) {
                if !sources.iter().any(|(peer, _)| *peer == hint.peer_id) {
                    sources.push((hint.peer_id, hint.addrs));
                }
            }
        }
        // The workspace it sees: its dependencies' changes, whose blobs
        // their producers hold.
        let mut workspace_changes = Vec::new();
        if record.spec.workspace.is_some() {
            for (change, by) in mission.workspace_view(&record.spec.id) {
                let producer = mission.tasks.get(&by).and_then(|t| t.result.as_ref());
                if let Some(hint) = producer.and_then(|r| self.peer_hint(state, r.node)) {
                    if !sources.iter().any(|(peer, _)| *peer == hint.peer_id) {
                        sources.push((hint.peer_id, hint.addrs));
                    }
                }
                workspace_changes.push(change);
            }
        }
        Assignment {
            mission: mission.id.clone(),
            task: record.spec.clone(),
            attempt: record.attempt,
            deps,
            workspace_changes,
            ready_seq: record.ready_seq,
            sources,
            previous: record
                .violations
                .last()
                .map(|v| (v.attempt, v.kind.clone(), v.detail.clone())),
            avoid: task_view(&mission.id, record, None)
                .avoid_nodes
                .into_iter()
                .collect(),
        }
    }

    /// One placement round: place, note reasons, take back lost nodes' tasks.
    async fn schedule_round(&self) {
        if !self.caught_up() {
            return;
        }
        let now_ms = self.inner.env.now_ms();
        let now = self.inner.env.elapsed();
        let lease = self.inner.lease;
        let (heard, since, draining, mut windows): (
            BTreeMap<NodeId, Duration>,
            Duration,
            BTreeSet<NodeId>,
            BTreeMap<NodeId, u32>,
        ) = {
            let view = self.inner.view.lock().expect("view lock");
            (
                view.heard.iter().map(|(id, (at, _))| (*id, *at)).collect(),
                view.leader_since.unwrap_or(now),
                // A node whose last heartbeat offers no slots is draining.
                view.heard
                    .iter()
                    .filter(|(_, (_, load))| load.slots == 0)
                    .map(|(id, _)| *id)
                    .collect(),
                view.windows.clone(),
            )
        };
        let self_draining = self.load().slots == 0;
        match self.window() {
            Some(window) => windows.insert(self.inner.node_id, window),
            None => windows.remove(&self.inner.node_id),
        };
        let silent_for = |node: NodeId| -> Duration {
            if node == self.inner.node_id {
                return Duration::ZERO;
            }
            let at = heard.get(&node).copied().unwrap_or(since).max(since);
            now.saturating_sub(at)
        };
        struct Snapshot {
            holding: BTreeMap<NodeId, (u32, u32)>,
            nodes: Vec<(NodeId, coditect_consensus::Capabilities, bool)>,
        }
        // Each mission's ready/held index, except once a second, when a
        // round looks at every task (so a task the index missed waits at
        // most that long).
        let full_scan = {
            let mut sched = self.inner.sched.lock().expect("sched lock");
            let due = sched
                .last_full_scan
                .is_none_or(|at| now >= at + FULL_SCAN_PERIOD);
            if due {
                sched.last_full_scan = Some(now);
            }
            due
        };
        // Pass 1, cheap (nothing cloned per task): who holds what.
        let snapshot = self.state(|state| {
            let mut holding: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
            for mission in state.missions.values() {
                if mission.state != coditect_consensus::mission::MissionState::Running {
                    continue;
                }
                for record in held_in(mission, full_scan) {
                    match record.state {
                        TaskState::Assigned | TaskState::Running => {
                            if let Some(owner) = record.owner {
                                let entry = holding.entry(owner).or_default();
                                if record.state == TaskState::Running {
                                    entry.0 += 1;
                                } else {
                                    entry.1 += 1;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let nodes = state
                .nodes
                .values()
                .map(|n| (n.node_id, n.capabilities.clone(), n.left))
                .collect();
            Snapshot { holding, nodes }
        });

        // Leases: a node silent past the lease (or gone) loses its tasks.
        let left: BTreeSet<NodeId> = snapshot
            .nodes
            .iter()
            .filter(|(_, _, left)| *left)
            .map(|(id, _, _)| *id)
            .collect();
        let ended = expired_leases(snapshot.holding.keys().copied(), &left, silent_for, lease);
        if !ended.is_empty() {
            let mut releases = Vec::new();
            {
                let mut sched = self.inner.sched.lock().expect("sched lock");
                for end in &ended {
                    let reason = end.reason();
                    tracing::warn!("{reason}; its tasks are placed again");
                    if matches!(end.cause, LeaseEnd::Silent { .. }) {
                        sched.breakers.entry(end.node).or_default().record_failure(
                            ViolationKind::LostNode,
                            &BreakerConfig::default(),
                            now_ms,
                        );
                    }
                    releases.push(Command::ReleaseNode {
                        node: end.node,
                        reason,
                        max_runs: RetryPolicy::default().max_attempts,
                    });
                }
            }
            if let Err(error) = self.write(Command::Batch(releases.into())).await {
                tracing::debug!("release not committed: {error}");
            }
            self.wake_scheduler();
            return;
        }
        let nodes: Vec<NodeView> = {
            let sched = self.inner.sched.lock().expect("sched lock");
            snapshot
                .nodes
                .iter()
                .filter(|(_, _, left)| !left)
                .map(|(id, capabilities, _)| {
                    let (running, queued) = snapshot.holding.get(id).copied().unwrap_or_default();
                    let mut capabilities = capabilities.clone();
                    if draining.contains(id) || (*id == self.inner.node_id && self_draining) {
                        capabilities.slots = 0;
                    }
                    NodeView {
                        id: *id,
                        capabilities,
                        running,
                        queued,
                        live: silent_for(*id) <= lease,
                        breaker: sched
                            .breakers
                            .get(id)
                            .map(|b| b.gate(now_ms))
                            .unwrap_or(BreakerGate::Closed),
                        window: windows.get(id).copied(),
                    }
                })
                .collect()
        };
        self.inner.sched.lock().expect("sched lock").last_views = nodes.clone();
        let config = PlacementConfig::default();
        // Pass 2: the ready tasks this round can use, most urgent first.
        let ready =
            self.state(|state| ready_to_consider(state, now_ms, &nodes, &config, full_scan));
        if ready.is_empty() {
            return;
        }
        let views: Vec<TaskView> = ready.iter().map(|(v, _, _)| v.clone()).collect();
        let facts: ReadyFacts<'_> = ready
            .iter()
            .map(|(v, attempt, reason)| (&v.id, (*attempt, reason.as_deref())))
            .collect();
        let plan = place(&views, &nodes, &config, self.inner.env.random_u64());
        let (commands, first_assignment) =
            round_commands(&plan, &facts, now_ms, MAX_REASONS_PER_ROUND);
        if commands.is_empty() {
            return;
        }
        let answers = match self.write(Command::Batch(commands.into())).await {
            Ok(CommandResponse::Batch(answers)) => answers,
            Ok(other) => {
                tracing::debug!("placement answered {other:?}");
                return;
            }
            Err(error) => {
                tracing::debug!("placement not committed: {error}");
                return;
            }
        };
        let placed: Vec<(TaskId, NodeId)> = plan
            .assignments
            .into_iter()
            .zip(answers.into_iter().skip(first_assignment))
            .filter(|(_, answer)| *answer == CommandResponse::Ok)
            .map(|(placement, _)| placement)
            .collect();
        if placed.is_empty() {
            return;
        }
        self.inner.metrics.tasks_placed.inc_by(placed.len() as u64);
        {
            let mut sched = self.inner.sched.lock().expect("sched lock");
            for (_, node) in &placed {
                let breaker = sched.breakers.entry(*node).or_default();
                if breaker.gate(now_ms) == BreakerGate::Probe {
                    breaker.record_placement(now_ms);
                }
            }
        }
        let mut by_owner: BTreeMap<NodeId, Vec<Assignment>> = BTreeMap::new();
        self.state(|state| {
            for (id, node) in &placed {
                let Some(mission) = state.missions.get(&id.mission) else {
                    continue;
                };
                let Some(record) = mission.tasks.get(&id.task) else {
                    continue;
                };
                if record.owner == Some(*node) && record.state == TaskState::Assigned {
                    by_owner
                        .entry(*node)
                        .or_default()
                        .push(self.assignment_for(state, mission, record));
                }
            }
        });
        self.dispatch(by_owner);
    }

    /// Sends assignments to their owners (this node's go straight in).
    fn dispatch(&self, by_owner: BTreeMap<NodeId, Vec<Assignment>>) {
        for (owner, assignments) in by_owner {
            if owner == self.inner.node_id {
                self.accept_assignments(assignments);
                continue;
            }
            let Some(hint) = self.state(|state| self.peer_hint(state, owner)) else {
                continue;
            };
            let node = self.clone();
            self.inner.env.spawn(
                "assign",
                async move {
                    // A lost message is repaired by the owner's next heartbeat.
                    if let Err(error) = node.ask(&hint, &NodeRequest::Assign(assignments)).await {
                        tracing::debug!("assignment to {} not delivered: {error}", hint.peer_id);
                    }
                }
                .boxed(),
            );
        }
    }

    /// Whether the registry says Raft node `node` is libp2p peer `peer`
    /// (a node may only speak for itself).
    pub(super) fn node_is(&self, node: NodeId, peer: &str) -> bool {
        if node == self.inner.node_id {
            return peer == self.inner.peer_id;
        }
        self.state(|state| state.nodes.get(&node).is_some_and(|n| n.peer_id == peer))
    }

    /// Whether this leader has applied an entry of its own term, so its
    /// state holds everything earlier leaders committed: until then it
    /// neither schedules nor reconciles (a lagging state would revoke
    /// valid work).
    pub(super) fn caught_up(&self) -> bool {
        let metrics = self.raft_metrics();
        metrics.last_applied.map(|id| id.leader_id.term) == Some(metrics.current_term)
    }

    /// Leader: answers what `node` says it holds and runs with what the
    /// state gives it ([`reconcile`]): the assignments it misses and the
    /// tasks it must drop. Starts the state does not show yet are committed
    /// in the background (one entry for all of them).
    pub(super) fn reconcile(
        &self,
        node: NodeId,
        holding: &[Held],
        running: &[Held],
    ) -> (Vec<Assignment>, Vec<Held>) {
        if !self.caught_up() {
            return (Vec::new(), Vec::new());
        }
        let pairs = |held: &[Held]| -> Vec<(TaskId, u32)> {
            held.iter().map(|h| (h.id.clone(), h.attempt)).collect()
        };
        let (holding, running) = (pairs(holding), pairs(running));
        let (missing, answer) = self.state(|state| {
            let mut owned: BTreeMap<TaskId, Owned> = BTreeMap::new();
            let running_missions = state
                .missions
                .values()
                .filter(|m| m.state == coditect_consensus::mission::MissionState::Running);
            for mission in running_missions {
                // The index lists every held task (checked against a scan
                // by the consensus property tests).
                for record in held_in(mission, false) {
                    if record.owner == Some(node)
                        && matches!(record.state, TaskState::Assigned | TaskState::Running)
                    {
                        owned.insert(
                            TaskId::new(mission.id.clone(), record.spec.id.clone()),
                            Owned {
                                attempt: record.attempt,
                                started: record.state == TaskState::Running,
                            },
                        );
                    }
                }
            }
            let answer = reconcile(&owned, &holding, &running);
            let missing: Vec<Assignment> = answer
                .missing
                .iter()
                .filter_map(|id| {
                    let mission = state.missions.get(&id.mission)?;
                    let record = mission.tasks.get(&id.task)?;
                    Some(self.assignment_for(state, mission, record))
                })
                .collect();
            (missing, answer)
        });
        let starts: Vec<Command> = answer
            .starts
            .into_iter()
            .map(|(id, attempt)| Command::StartTask {
                mission: id.mission,
                task: id.task,
                node,
                attempt,
            })
            .collect();
        if !starts.is_empty() {
            let me = self.clone();
            self.inner.env.spawn(
                "commit-starts",
                async move {
                    if let Err(error) = me.write(Command::Batch(starts.into())).await {
                        tracing::debug!("starts not committed: {error}");
                    }
                }
                .boxed(),
            );
        }
        let revoked = answer
            .revoked
            .into_iter()
            .map(|(id, attempt)| Held { id, attempt })
            .collect();
        (missing, revoked)
    }

    /// Leader: commits a batch of outcomes (one Raft entry through the
    /// proposer); one answer per outcome.
    pub(super) async fn on_reports(
        &self,
        node: NodeId,
        reports: Vec<(TaskId, u32, Report)>,
    ) -> Vec<NodeResponse> {
        let answers = reports.into_iter().map(|(id, _, report)| async move {
            self.on_report(node, &id.mission, &id.task, report).await
        });
        futures::future::join_all(answers).await
    }

    /// Leader: the subtasks a succeeded run left in `/output/subtasks.toml`
    /// (a planner's fragment), checked like a submission; a fragment that
    /// cannot be read or is invalid turns the run into the task's
    /// `bad_model_output` (retried, the retry told why).
    async fn subtasks_of(
        &self,
        mission: &str,
        task: &str,
        result: TaskResult,
    ) -> (Report, Vec<TaskSubmission>) {
        use crate::mission::fragment::{
            fragment_submissions, MissionView, MAX_FRAGMENT_BYTES, SUBTASKS_FILE,
        };
        let Some((_, digest, size)) = result
            .outputs
            .iter()
            .find(|(path, _, _)| path == SUBTASKS_FILE)
            .cloned()
        else {
            return (Report::Succeeded(result), Vec::new());
        };
        let refuse = |result: TaskResult, why: String| {
            let kind = ViolationKind::BadModelOutput;
            let mut report = Report::violated(
                result.node,
                result.attempt,
                kind,
                &format!("its /output/{SUBTASKS_FILE} is not a valid mission fragment: {why}"),
            );
            if let Report::Violated { violation, .. } = &mut report {
                violation.outputs = result.outputs;
                violation.llm_calls = result.llm_calls;
            }
            (report, Vec::new())
        };
        if size > MAX_FRAGMENT_BYTES {
            return refuse(
                result,
                format!("it is larger than {} KiB", MAX_FRAGMENT_BYTES >> 10),
            );
        }
        let Some(view) = self.state(|state| state.missions.get(mission).map(MissionView::of))
        else {
            return (Report::Succeeded(result), Vec::new());
        };
        let hint = self.peer_hint_of(result.node);
        let bytes = match digest.parse::<coditect_memory::Digest>() {
            Ok(parsed) => self.fetch_blob_from(&parsed, &hint).await,
            Err(_) => Err(format!("{digest} is not a digest")),
        };
        let text = match bytes {
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return refuse(result, "it is not UTF-8".into()),
            },
            // Lost with its node: the task runs again (its plan too).
            Ok(None) | Err(_) => {
                return refuse(
                    result,
                    "the leader could not fetch it from the node that ran the task".into(),
                )
            }
        };
        let blobs = self.inner.blobs.clone();
        let spawner = task.to_string();
        let checked = self
            .off_runtime(move || fragment_submissions(&text, &view, &spawner, &blobs))
            .await;
        match checked {
            Ok(spawn) => (Report::Succeeded(result), spawn),
            Err(why) => refuse(result, why),
        }
    }

    /// Leader: commits an outcome (or decides a retry) with the attempt as fencing token.
    pub(super) async fn on_report(
        &self,
        node: NodeId,
        mission: &str,
        task: &str,
        report: Report,
    ) -> NodeResponse {
        let now_ms = self.inner.env.now_ms();
        let report = bound_result(mission, task, report);
        // A task that left subtasks: they join the mission with its result.
        let (report, spawn) = match report {
            Report::Succeeded(result) if result.node == node => {
                self.subtasks_of(mission, task, result).await
            }
            other => (other, Vec::new()),
        };
        let command = match report {
            Report::Succeeded(result) => {
                if result.node != node {
                    return NodeResponse::Error("a node reports only its own runs".into());
                }
                Command::CompleteTask {
                    mission: mission.to_string(),
                    task: task.to_string(),
                    result,
                    spawn,
                }
            }
            Report::Violated {
                violation,
                kind,
                blame,
            } => {
                if violation.node != node {
                    return NodeResponse::Error("a node reports only its own runs".into());
                }
                let runs = self.state(|state| {
                    state
                        .missions
                        .get(mission)
                        .and_then(|m| m.tasks.get(task))
                        .map(|t| t.runs)
                        .unwrap_or(0)
                });
                let decision = decide(
                    &RetryPolicy::default(),
                    runs + 1,
                    kind,
                    violation.node,
                    now_ms,
                );
                if blame == Blame::Node {
                    let mut sched = self.inner.sched.lock().expect("sched lock");
                    sched.breakers.entry(node).or_default().record_failure(
                        kind,
                        &BreakerConfig::default(),
                        now_ms,
                    );
                }
                let (retry_not_before_ms, fail_reason) = match decision {
                    RetryDecision::Retry { not_before_ms, .. } => (Some(not_before_ms), None),
                    // The agent's own words name what broke (the failing tests).
                    RetryDecision::Fail { .. }
                        if matches!(
                            kind,
                            ViolationKind::TestsFailed | ViolationKind::BadModelOutput
                        ) =>
                    {
                        (None, Some(format!("{kind}: {}", violation.detail)))
                    }
                    RetryDecision::Fail { reason } => (None, Some(reason)),
                };
                // Failed tests after a coder's change: a fix round.
                let spawn = if retry_not_before_ms.is_none() && kind == ViolationKind::TestsFailed {
                    self.state(|state| {
                        state
                            .missions
                            .get(mission)
                            .and_then(|m| crate::scheduler::fix::fix_round(m, task, &violation))
                    })
                    .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Command::FailTask {
                    mission: mission.to_string(),
                    task: task.to_string(),
                    violation,
                    retry_not_before_ms,
                    fail_reason,
                    spawn,
                }
            }
        };
        let succeeded = matches!(command, Command::CompleteTask { .. });
        match self.write(command).await {
            Ok(CommandResponse::Ok) => {
                if succeeded {
                    let mut sched = self.inner.sched.lock().expect("sched lock");
                    sched
                        .breakers
                        .entry(node)
                        .or_default()
                        .record_success(now_ms);
                }
                self.inner.metrics.results_committed.inc();
                self.wake_scheduler();
                NodeResponse::Reported {
                    committed: true,
                    detail: String::new(),
                }
            }
            Ok(CommandResponse::Rejected(detail)) => NodeResponse::Reported {
                committed: false,
                detail,
            },
            Ok(other) => NodeResponse::Error(format!("unexpected answer {other:?}")),
            Err(error) => NodeResponse::Error(error.to_string()),
        }
    }

    /// Leader: commits a steal, one compare-and-set per task.
    pub(super) async fn commit_steal(&self, from: NodeId, to: NodeId, tasks: &[Held]) -> Vec<bool> {
        let commands: Vec<Command> = tasks
            .iter()
            .map(|held| Command::StealTask {
                mission: held.id.mission.clone(),
                task: held.id.task.clone(),
                from,
                to,
                attempt: held.attempt,
            })
            .collect();
        match self.write(Command::Batch(commands.into())).await {
            Ok(CommandResponse::Batch(answers)) => answers
                .into_iter()
                .map(|a| a == CommandResponse::Ok)
                .collect(),
            _ => vec![false; tasks.len()],
        }
    }

    /// Leader: takes a submission. Every blob it names is fetched first (from
    /// `hint`, the node that accepted it), so the mission never names a blob
    /// the leader cannot serve. A submission too large for one Raft entry is
    /// staged in chunks, then sealed by its `SubmitMission`; a known
    /// idempotency key answers with the mission it created. A submission
    /// from another node (`hint` set) is checked here; one this node parsed
    /// and validated itself is not checked twice.
    pub(super) async fn leader_submit(
        &self,
        hint: Option<BlobHint>,
        name: String,
        tasks: Vec<TaskSubmission>,
        idempotency_key: Option<String>,
        max_fix_rounds: Option<u32>,
    ) -> Result<String, SubmitError> {
        if let Some(key) = &idempotency_key {
            let known =
                self.state(|state| state.submission_keys.get(key).map(|(id, _)| id.clone()));
            if let Some(id) = known {
                return Ok(id);
            }
        }
        // Room in the mesh: unfinished missions are kept whole on every voter.
        let unfinished = self.state(|state| {
            state
                .missions
                .values()
                .filter(|mission| {
                    mission.state == coditect_consensus::mission::MissionState::Running
                })
                .map(|mission| mission.tasks.len())
                .sum::<usize>()
        });
        crate::mission::caps::room_for(unfinished, tasks.len())
            .map_err(SubmitError::Unavailable)?;
        // Validation and chunking in one trip off the runtime.
        let forwarded = hint.is_some();
        let small = tasks.len() <= SMALL_MISSION_TASKS;
        let (name, mut chunks) = self
            .off_runtime_unless(small, move || {
                let mut tasks = tasks;
                if forwarded {
                    crate::mission::check_submissions(&name, &tasks)?;
                }
                for task in tasks
                    .iter_mut()
                    .filter(|t| crate::python::is_runtime(&t.module))
                {
                    crate::mission::submit::require_python(&mut task.requires);
                }
                Ok::<_, crate::mission::MissionError>((name, chunk_tasks(tasks)))
            })
            .await
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        // A member that forwarded the submission checked that it holds
        // every blob named (`to_submissions`): workers fetch them from it
        // (the mission records it as origin), and this leader copies them
        // after the commit, off the submission's path, so they survive the
        // origin. A forwarder the registry does not know yet is asked for
        // them first, as before.
        let origin = hint.as_ref().and_then(|(peer, _)| {
            self.state(|state| {
                state
                    .nodes
                    .values()
                    .find(|n| n.peer_id == *peer && !n.left)
                    .map(|n| n.node_id)
            })
        });
        let hints: Vec<BlobHint> = hint.into_iter().collect();
        let mut wanted: Vec<Digest> = Vec::new();
        for text in chunks
            .iter()
            .flatten()
            .flat_map(digests_of)
            .collect::<BTreeSet<_>>()
        {
            let digest: Digest = text
                .parse()
                .map_err(|_| SubmitError::Invalid(format!("{text:?} is not a digest")))?;
            // The Python runtime is served by the nodes that offer `python`.
            if !crate::python::is_runtime(&text) && !self.inner.blobs.contains(&digest) {
                wanted.push(digest);
            }
        }
        if origin.is_none() {
            for digest in std::mem::take(&mut wanted) {
                match self.fetch_blob_from(&digest, &hints).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(SubmitError::Invalid(format!(
                            "blob {digest} is held by no reachable node; upload it with POST /api/blobs"
                        )))
                    }
                    Err(error) => return Err(SubmitError::Unavailable(error)),
                }
            }
        }
        let at_ms = self.inner.env.now_ms();
        let assign = self.first_placements(
            chunks.iter().flatten(),
            origin.unwrap_or(self.inner.node_id),
        );
        let last = chunks.pop().unwrap_or_default();
        let staged = if chunks.is_empty() {
            None
        } else {
            let stage = format!(
                "{}-{at_ms}-{:016x}",
                self.inner.node_id,
                self.inner.env.random_u64()
            );
            let count = chunks.len();
            for (index, chunk) in chunks.into_iter().enumerate() {
                tracing::info!(stage = %stage, "staging part {} of {} of a large submission", index + 1, count + 1);
                let command = Command::StageTasks {
                    stage: stage.clone(),
                    tasks: chunk,
                    at_ms,
                };
                match self.write(command).await {
                    Ok(CommandResponse::Ok) => {}
                    Ok(CommandResponse::Rejected(reason)) => {
                        return Err(SubmitError::Unavailable(reason))
                    }
                    // Staging alone creates no mission: a retry is safe.
                    Ok(other) => {
                        return Err(SubmitError::Unavailable(format!(
                            "unexpected answer {other:?}"
                        )))
                    }
                    Err(error) => return Err(SubmitError::Unavailable(error.to_string())),
                }
            }
            Some(stage)
        };
        match self
            .write(Command::SubmitMission {
                max_fix_rounds,
                name,
                tasks: last,
                at_ms,
                assign: assign.clone(),
                staged,
                idempotency_key,
                origin,
            })
            .await
        {
            Ok(CommandResponse::MissionCreated(id)) => {
                self.dispatch_placed(&id, &assign);
                self.wake_scheduler();
                if !wanted.is_empty() {
                    let me = self.clone();
                    self.inner.env.spawn(
                        "copy-blobs",
                        async move {
                            for digest in wanted {
                                if let Ok(None) | Err(_) = me.fetch_blob_from(&digest, &hints).await
                                {
                                    tracing::warn!(
                                        blob = %digest,
                                        "could not copy a submitted blob from the node that received it; \
                                         its tasks fetch it from there"
                                    );
                                }
                            }
                        }
                        .boxed(),
                    );
                }
                Ok(id)
            }
            Ok(CommandResponse::Rejected(reason)) => Err(SubmitError::Unavailable(reason)),
            Ok(other) => Err(SubmitError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(WriteError::Refused(error)) => Err(SubmitError::Unavailable(error)),
            Err(WriteError::Uncertain(error)) => Err(SubmitError::MaybeCommitted(format!(
                "{error}; the mission may have been committed: resubmit with the same Idempotency-Key"
            ))),
        }
    }

    /// Where a new mission's immediately ready tasks go, decided with the
    /// last round's node views (which are then charged for them), so they
    /// are assigned in the submission's own Raft entry. Empty until this
    /// leader has scheduled once; tasks left out wait for the next round.
    /// `home` holds the blobs (the node that took the submission) and wins
    /// ties of load.
    fn first_placements<'a>(
        &self,
        tasks: impl Iterator<Item = &'a TaskSubmission>,
        home: NodeId,
    ) -> Vec<(String, NodeId)> {
        if !self.caught_up() {
            return Vec::new();
        }
        let ready: Vec<TaskView> = tasks
            .enumerate()
            .filter(|(_, t)| !t.done && t.needs.is_empty())
            .map(|(i, t)| TaskView {
                id: TaskId::new("", t.id.clone()),
                priority: t.priority,
                ready_seq: i as u64,
                requires: t.requires.clone(),
                avoid_nodes: BTreeSet::new(),
                home: Some(home),
            })
            .collect();
        let mut sched = self.inner.sched.lock().expect("sched lock");
        if ready.is_empty() || sched.last_views.is_empty() {
            return Vec::new();
        }
        let config = PlacementConfig::default();
        let plan = place(
            &ready,
            &sched.last_views,
            &config,
            self.inner.env.random_u64(),
        );
        for (_, node) in &plan.assignments {
            if let Some(view) = sched.last_views.iter_mut().find(|v| v.id == *node) {
                view.queued += 1;
            }
        }
        plan.assignments
            .into_iter()
            .map(|(id, node)| (id.task, node))
            .collect()
    }

    /// Pushes the placements a submission carried to their owners.
    fn dispatch_placed(&self, mission: &str, placed: &[(String, NodeId)]) {
        if placed.is_empty() {
            return;
        }
        let mut by_owner: BTreeMap<NodeId, Vec<Assignment>> = BTreeMap::new();
        self.state(|state| {
            let Some(record) = state.missions.get(mission) else {
                return;
            };
            for (task, node) in placed {
                if let Some(task) = record.tasks.get(task) {
                    if task.owner == Some(*node) && task.state == TaskState::Assigned {
                        by_owner
                            .entry(*node)
                            .or_default()
                            .push(self.assignment_for(state, record, task));
                    }
                }
            }
        });
        let count: usize = by_owner.values().map(Vec::len).sum();
        self.inner.metrics.tasks_placed.inc_by(count as u64);
        self.dispatch(by_owner);
    }

    /// Any node: parses, validates and converts a mission file, then hands
    /// it to the leader. Returns the mission id.
    pub async fn submit_mission(
        &self,
        text: &str,
        format: MissionFormat,
        idempotency_key: Option<String>,
        workspace: Option<String>,
    ) -> Result<String, SubmitError> {
        // Parsing and validating a large mission takes seconds: never on the
        // runtime that serves Raft (a small one takes less than the hop).
        let agents: AgentConfig = self.inner.agents.clone();
        let blobs = self.inner.blobs.clone();
        let text = text.to_string();
        let small = text.len() <= SMALL_MISSION_BYTES;
        let (name, tasks, budget, max_fix_rounds) = self
            .off_runtime_unless(small, move || -> Result<_, String> {
                let mut spec = parse_mission(&text, format, &agents).map_err(|e| e.to_string())?;
                if let Some(workspace) = workspace {
                    if spec.workspace.as_ref().is_some_and(|own| *own != workspace) {
                        return Err(format!(
                            "the mission names workspace {:?} and the request {workspace:?}; name one",
                            spec.workspace.unwrap_or_default()
                        ));
                    }
                    spec.workspace = Some(workspace);
                }
                let validated = validate(&spec, None).map_err(|e| e.to_string())?;
                let tasks = to_submissions(&validated, &blobs).map_err(|e| e.to_string())?;
                let budget = submit_budget(&tasks, &blobs);
                let spec = validated.spec();
                Ok((spec.name.clone(), tasks, budget, spec.max_fix_rounds))
            })
            .await
            .map_err(SubmitError::Invalid)?;
        if self.is_leader() {
            return self
                .leader_submit(None, name, tasks, idempotency_key, max_fix_rounds)
                .await;
        }
        let leader = self
            .leader()
            .ok_or_else(|| SubmitError::Unavailable("no leader known yet".into()))?;
        let request = NodeRequest::Submit {
            name,
            tasks,
            idempotency_key,
            max_fix_rounds,
            budget_ms: budget.as_millis() as u64,
        };
        match self
            .ask_within(&leader, &request, budget + FORWARD_MARGIN)
            .await
        {
            Ok(NodeResponse::MissionCreated(id)) => {
                self.await_applied(&id).await;
                Ok(id)
            }
            Ok(NodeResponse::Refused(error)) => Err(error),
            Ok(NodeResponse::Error(message)) => Err(SubmitError::Invalid(message)),
            Ok(NodeResponse::NotLeader { .. }) => Err(SubmitError::Unavailable(
                "the leader changed while the mission was forwarded; submit again".into(),
            )),
            Ok(other) => Err(SubmitError::Unavailable(format!(
                "the leader answered {other:?}"
            ))),
            // The leader may have taken it before the answer was lost.
            Err(error) => Err(SubmitError::MaybeCommitted(format!(
                "no answer from the leader ({error}); the mission may have been committed: \
                 resubmit with the same Idempotency-Key"
            ))),
        }
    }

    /// A member: waits (at most [`APPLY_WAIT`]) until its replica holds
    /// mission `id`, which the leader has committed (read your writes).
    async fn await_applied(&self, id: &str) {
        self.await_replica(|state| state.missions.contains_key(id))
            .await
    }

    /// A member: waits (at most [`APPLY_WAIT`]) until `done` holds for its
    /// replica, after the leader committed a change this node forwarded.
    async fn await_replica(&self, done: impl Fn(&MeshState) -> bool) {
        if self.holds_replica() {
            self.wait_until(APPLY_WAIT, done).await;
        }
    }

    /// Waits up to `max` until `done` holds for this node's replica,
    /// looking again whenever an entry is applied.
    async fn wait_until(&self, max: Duration, done: impl Fn(&MeshState) -> bool) {
        let deadline = self.inner.env.elapsed() + max;
        // The state changes only as entries apply (or a snapshot installs),
        // and the applied index moves with every such change.
        let mut applied = self.inner.applied.clone();
        applied.mark_unchanged();
        while !self.state(&done) {
            let left = deadline.saturating_sub(self.inner.env.elapsed());
            let changed =
                crate::env::timeout(self.inner.env.as_ref(), left, applied.changed()).await;
            if left.is_zero() || !matches!(changed, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// A place for one long poll from `client`, or why there is none.
    pub fn wait_slot(&self, client: &str) -> Result<WaiterSlot, String> {
        use crate::places::Full;
        self.inner
            .views
            .waiters
            .take(client.to_string(), MAX_WAITERS_PER_CLIENT, MAX_WAITERS)
            .map_err(|full| match full {
                Full::Total => format!("{MAX_WAITERS} requests are waiting on this node already"),
                Full::Key => {
                    format!("this client has {MAX_WAITERS_PER_CLIENT} requests waiting already")
                }
            })
    }

    /// The mission's view (with or without its task list): built once per
    /// change of the mission, off the runtime, and shared by every reader.
    /// A node outside Raft asks the leader, which answers from its cache.
    pub async fn mission_view(
        &self,
        id: &str,
        with_tasks: bool,
        known: Option<&str>,
    ) -> Result<Option<MissionView>, String> {
        if !self.holds_replica() {
            return self.relayed_view(id, with_tasks, known).await;
        }
        let key = (id.to_string(), with_tasks);
        let Some(revision) = self.mission_revision(id) else {
            return Ok(None);
        };
        if let Some(view) = self.cached_view(&key, revision) {
            return Ok(Some(view));
        }
        let _building = self.inner.views.build.lock().await;
        // Another reader may have built it while this one waited.
        let revision = self.mission_revision(id).ok_or("the mission is gone")?;
        if let Some(view) = self.cached_view(&key, revision) {
            return Ok(Some(view));
        }
        let peers = self.peer_ids();
        let view = if with_tasks {
            // The whole task list: built from a copy, off the runtime.
            let Some(record) = self.state(|state| state.missions.get(id).cloned()) else {
                return Ok(None);
            };
            self.off_runtime(move || build_view(&record, &peers, with_tasks))
                .await
        } else {
            // A summary (the long polls of `submit --wait`): one pass over
            // the tasks in place, nothing copied.
            let Some(view) = self.state(|state| {
                state
                    .missions
                    .get(id)
                    .map(|record| build_view(record, &peers, false))
            }) else {
                return Ok(None);
            };
            view
        };
        let mut cache = self.inner.views.cache.lock().expect("views lock");
        let read = self
            .inner
            .views
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cache.insert(key, (revision, read, view.clone()));
        while cache.len() > MAX_CACHED_VIEWS {
            let oldest = cache
                .iter()
                .min_by_key(|(_, (_, read, _))| *read)
                .map(|(key, _)| key.clone())
                .expect("a full cache has entries");
            cache.remove(&oldest);
        }
        Ok(Some(view))
    }

    fn cached_view(&self, key: &ViewKey, revision: u64) -> Option<MissionView> {
        let mut cache = self.inner.views.cache.lock().expect("views lock");
        let entry = cache.get_mut(key)?;
        if entry.0 != revision {
            return None;
        }
        entry.1 = self
            .inner
            .views
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(entry.2.clone())
    }

    /// Outside Raft: the view from the leader's cache, in parts. A part of
    /// another version (the mission changed meanwhile) starts it over.
    async fn relayed_view(
        &self,
        id: &str,
        with_tasks: bool,
        known: Option<&str>,
    ) -> Result<Option<MissionView>, String> {
        let leader = self.leader().ok_or("no leader known yet")?;
        let mut body: Vec<u8> = Vec::new();
        let mut pinned: Option<String> = None;
        let mut restarts = 0;
        loop {
            let request = NodeRequest::GetMissionView {
                id: id.to_string(),
                with_tasks,
                known: pinned
                    .is_none()
                    .then(|| known.map(str::to_string))
                    .flatten(),
                offset: body.len() as u64,
            };
            let (version, finished, total, bytes) = match self.ask(&leader, &request).await? {
                NodeResponse::MissionView(view) => return Ok(view),
                NodeResponse::NoMission => return Ok(None),
                NodeResponse::MissionViewPart {
                    version,
                    finished,
                    total,
                    bytes,
                } => (version, finished, total, bytes),
                NodeResponse::Error(message) => return Err(message),
                other => return Err(format!("the leader answered {other:?}")),
            };
            if total > MAX_RELAYED_VIEW_BYTES {
                return Err(format!(
                    "the mission's view is {total} bytes, more than the {MAX_RELAYED_VIEW_BYTES} a node outside Raft relays; ask with tasks=false or ask a voter"
                ));
            }
            if pinned.as_ref().is_some_and(|pinned| *pinned != version) {
                restarts += 1;
                if restarts > RELAY_RESTARTS {
                    return Err(
                        "the mission kept changing while its view was relayed; try again".into(),
                    );
                }
                body.clear();
                pinned = None;
                continue;
            }
            if bytes.is_empty() && (body.len() as u64) < total {
                return Err("the leader sent an empty part of the view".into());
            }
            body.extend_from_slice(&bytes);
            pinned = Some(version);
            if body.len() as u64 >= total {
                let body = String::from_utf8(body).map_err(|_| "the relayed view is not UTF-8")?;
                return Ok(Some(MissionView {
                    version: pinned.expect("a pinned version"),
                    body: std::sync::Arc::new(body),
                    finished,
                }));
            }
        }
    }

    /// Leader: one part of a view for a node outside Raft; no body when the
    /// asker has that version already.
    pub(super) async fn relay_view(
        &self,
        id: &str,
        with_tasks: bool,
        known: Option<String>,
        offset: u64,
    ) -> NodeResponse {
        match self.mission_view(id, with_tasks, None).await {
            Ok(Some(view)) if known.as_deref() == Some(view.version.as_str()) => {
                NodeResponse::MissionView(Some(MissionView {
                    body: std::sync::Arc::new(String::new()),
                    ..view
                }))
            }
            Ok(Some(view)) => {
                let whole = view.body.as_bytes();
                let start = (offset as usize).min(whole.len());
                let end = start.saturating_add(RELAY_PART_BYTES).min(whole.len());
                NodeResponse::MissionViewPart {
                    version: view.version,
                    finished: view.finished,
                    total: whole.len() as u64,
                    bytes: whole[start..end].to_vec(),
                }
            }
            Ok(None) => NodeResponse::NoMission,
            Err(error) => NodeResponse::Error(error),
        }
    }

    /// A page of missions, oldest first: summaries (id, name, state,
    /// counts) of the missions numbered after `after`, at most `limit`, and
    /// the cursor for the next page. A node outside Raft asks the leader.
    pub async fn missions_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<serde_json::Value, String> {
        let limit = limit.clamp(1, MAX_PAGE);
        if !self.holds_replica() {
            let leader = self.leader().ok_or("no leader known yet")?;
            let request = NodeRequest::ListMissions {
                after,
                limit: limit as u32,
            };
            return match self.ask(&leader, &request).await? {
                NodeResponse::MissionList(text) => {
                    serde_json::from_str(&text).map_err(|e| format!("the leader's list: {e}"))
                }
                NodeResponse::Error(message) => Err(message),
                other => Err(format!("the leader answered {other:?}")),
            };
        }
        let peers = self.peer_ids();
        let page = self.state(|state| {
            let mut numbered: Vec<(u64, &MissionRecord)> = state
                .missions
                .values()
                .filter_map(|m| Some((m.id.strip_prefix('m')?.parse::<u64>().ok()?, m)))
                .filter(|(number, _)| *number > after)
                .collect();
            numbered.sort_by_key(|(number, _)| *number);
            let more = numbered.len() > limit;
            numbered.truncate(limit);
            let next = more.then(|| numbered.last().map(|(n, _)| *n)).flatten();
            let items: Vec<serde_json::Value> = numbered
                .iter()
                .map(|(_, m)| mission_json(m, &peers, false))
                .collect();
            serde_json::json!({"missions": items, "next": next})
        });
        Ok(page)
    }

    /// Whether this node holds the replicated state (a voter or standby).
    fn holds_replica(&self) -> bool {
        let metrics = self.raft_metrics();
        let membership = metrics.membership_config.membership();
        membership.get_node(&self.inner.node_id).is_some() && metrics.last_applied.is_some()
    }

    /// A task's committed result (or, failed, the files its last run kept;
    /// see `TaskRecord::files`): from the local replica, or (outside Raft)
    /// from the leader.
    pub async fn task_result(
        &self,
        mission: &str,
        task: &str,
    ) -> Result<Option<TaskResult>, String> {
        if self.holds_replica() {
            return Ok(self.state(|state| {
                state
                    .missions
                    .get(mission)
                    .and_then(|m| m.tasks.get(task))
                    .and_then(|t| t.files())
            }));
        }
        let leader = self.leader().ok_or("no leader known yet")?;
        let request = NodeRequest::GetTaskResult {
            mission: mission.to_string(),
            task: task.to_string(),
        };
        match self.ask(&leader, &request).await? {
            NodeResponse::TaskResult(result) => Ok(result.map(|r| *r)),
            NodeResponse::NotLeader { .. } => Err("the leader changed; try again".into()),
            other => Err(format!("the leader answered {other:?}")),
        }
    }

    /// Leader: cancels or retries a mission.
    pub(super) async fn leader_control(
        &self,
        mission: &str,
        action: MissionAction,
    ) -> Result<(), SubmitError> {
        // Who holds its tasks now (a cancel interrupts them; nothing is cloned).
        let holders = self.state(|state| {
            state.missions.get(mission).map(|m| {
                revocations(
                    mission,
                    held_in(m, false)
                        .filter_map(|t| Some((t.spec.id.as_str(), t.owner?, t.attempt))),
                )
            })
        });
        let Some(holders) = holders else {
            return Err(SubmitError::NotFound(format!("no mission {mission}")));
        };
        let command = match action {
            MissionAction::Cancel => Command::CancelMission {
                mission: mission.to_string(),
            },
            MissionAction::Retry => Command::RetryMission {
                mission: mission.to_string(),
            },
        };
        match self.write(command).await.map_err(|error| match error {
            WriteError::Refused(message) => SubmitError::Unavailable(message),
            WriteError::Uncertain(message) => SubmitError::MaybeCommitted(format!(
                "{message}; it may have been applied: check the mission before repeating it"
            )),
        })? {
            CommandResponse::Ok => {}
            CommandResponse::Rejected(reason) => return Err(SubmitError::Conflict(reason)),
            other => {
                return Err(SubmitError::Unavailable(format!(
                    "unexpected answer {other:?}"
                )))
            }
        }
        if action == MissionAction::Cancel {
            // Interrupt running guests now rather than at the next heartbeat.
            let by_owner = holders.into_iter().map(|(owner, tasks)| {
                let held: Vec<Held> = tasks
                    .into_iter()
                    .map(|(id, attempt)| Held { id, attempt })
                    .collect();
                (owner, held)
            });
            for (owner, held) in by_owner {
                if owner == self.inner.node_id {
                    self.revoke(&held);
                    continue;
                }
                let Some(hint) = self.state(|state| self.peer_hint(state, owner)) else {
                    continue;
                };
                let node = self.clone();
                self.inner.env.spawn(
                    "revoke",
                    async move {
                        let _ = node.ask(&hint, &NodeRequest::Revoke(held)).await;
                    }
                    .boxed(),
                );
            }
        }
        self.wake_scheduler();
        Ok(())
    }

    /// Any node: cancels or retries a mission through the leader.
    pub async fn control(&self, mission: &str, action: MissionAction) -> Result<(), SubmitError> {
        if self.is_leader() {
            return self.leader_control(mission, action).await;
        }
        let leader = self
            .leader()
            .ok_or_else(|| SubmitError::Unavailable("no leader known yet".into()))?;
        let request = NodeRequest::Control {
            mission: mission.to_string(),
            action,
        };
        // What the mission's state is once the leader's change is applied
        // (any other change, a task starting say, is not this one).
        let after = match action {
            MissionAction::Cancel => coditect_consensus::mission::MissionState::Cancelled,
            MissionAction::Retry => coditect_consensus::mission::MissionState::Running,
        };
        match self
            .ask_within(&leader, &request, CONTROL_FORWARD_DEADLINE)
            .await
        {
            Ok(NodeResponse::Ack) => {
                // Read your writes: the answer shows the change.
                self.await_replica(|state| {
                    state
                        .missions
                        .get(mission)
                        .is_some_and(|m| m.state == after)
                })
                .await;
                Ok(())
            }
            Ok(NodeResponse::NoMission) => {
                Err(SubmitError::NotFound(format!("no mission {mission}")))
            }
            Ok(NodeResponse::Refused(error)) => Err(error),
            Ok(NodeResponse::Error(message)) => Err(SubmitError::Invalid(message)),
            Ok(other) => Err(SubmitError::Unavailable(format!(
                "the leader answered {other:?}"
            ))),
            Err(error) => Err(SubmitError::Unavailable(error)),
        }
    }

    /// Time since the node started (its clock seam).
    pub fn elapsed(&self) -> Duration {
        self.inner.env.elapsed()
    }

    /// This node's change count of mission `id` (see
    /// [`Node::wait_for_change`]); `None` outside Raft or for no such mission.
    pub fn mission_revision(&self, id: &str) -> Option<u64> {
        self.state(|state| revision_in(state, id))
    }

    /// Waits up to `max` for mission `mission` to change from revision
    /// `seen` (members: taken before the view the caller has was read, so a
    /// change in between is not missed), or a short while (nodes outside
    /// Raft, which ask the leader again).
    pub async fn wait_for_change(&self, max: Duration, mission: &str, seen: Option<u64>) {
        if self.holds_replica() {
            let deadline = self.inner.env.elapsed() + max;
            self.wait_until(max, |state| revision_in(state, mission) != seen)
                .await;
            if self.mission_revision(mission) == seen {
                return;
            }
            // Changes come in bursts: a nap lets one look see many. It grows
            // with the mission, whose view costs about its size to build, so
            // a small mission's change is seen at once and a large one's
            // views stay a small share of the node's time.
            let tasks = self.state(|state| state.missions.get(mission).map(|m| m.tasks.len()));
            let nap = Duration::from_micros(tasks.unwrap_or(0) as u64).min(MAX_POLL_NAP);
            if nap >= Duration::from_millis(1) {
                let left = deadline.saturating_sub(self.inner.env.elapsed());
                self.inner.env.sleep(left.min(nap)).await;
            }
        } else {
            self.inner
                .env
                .sleep(max.min(Duration::from_millis(100)))
                .await;
        }
    }

    /// Peer ids by Raft id, from the registry (for showing owners).
    pub fn peer_ids(&self) -> BTreeMap<NodeId, String> {
        let mut out: BTreeMap<NodeId, String> = self.state(|state| {
            state
                .nodes
                .values()
                .map(|n| (n.node_id, n.peer_id.clone()))
                .collect()
        });
        let view = self.inner.view.lock().expect("view lock");
        for (advert, _) in view.adverts.values() {
            out.entry(advert.node_id)
                .or_insert_with(|| advert.peer_id.clone());
        }
        out.insert(self.inner.node_id, self.inner.peer_id.clone());
        out
    }

    /// A file a task produced: its digest from the committed result, the
    /// bytes from this node or the producer.
    pub async fn task_output(
        &self,
        mission: &str,
        task: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let Some(result) = self.task_result(mission, task).await? else {
            return Ok(None);
        };
        let digest = if path == "stdout" && !result.outputs.iter().any(|(p, _, _)| p == path) {
            if result.stdout_digest.is_empty() {
                return Ok(None);
            }
            result.stdout_digest.clone()
        } else {
            match result.outputs.iter().find(|(p, _, _)| p == path) {
                Some((_, digest, _)) => digest.clone(),
                None => return Ok(None),
            }
        };
        let digest: Digest = digest.parse().map_err(|_| "bad digest in result")?;
        let peers = self.peer_ids();
        let hints: Vec<BlobHint> = peers
            .get(&result.node)
            .map(|peer| {
                let addrs = self.inner.addresses.merged(peer, &[]);
                vec![(peer.clone(), addrs)]
            })
            .unwrap_or_default();
        self.fetch_blob_from(&digest, &hints).await
    }
}

fn lower(debug: impl std::fmt::Debug) -> String {
    format!("{debug:?}").to_ascii_lowercase()
}

/// Builds one version of a mission's view (CPU-heavy for large missions:
/// callers run it off the runtime).
fn build_view(
    record: &MissionRecord,
    peers: &BTreeMap<NodeId, String>,
    with_tasks: bool,
) -> MissionView {
    use sha2::Digest as _;
    let mut json = mission_json(record, peers, with_tasks);
    let digest = sha2::Sha256::digest(json.to_string().as_bytes());
    let version = hex::encode(&digest[..8]);
    json["version"] = serde_json::Value::String(version.clone());
    MissionView {
        version,
        body: std::sync::Arc::new(json.to_string()),
        finished: record.state != coditect_consensus::mission::MissionState::Running,
    }
}

/// A mission as `GET /api/missions/{id}` shows it; without `with_tasks`,
/// only its state and the count of tasks in each state.
pub fn mission_json(
    mission: &MissionRecord,
    peers: &BTreeMap<NodeId, String>,
    with_tasks: bool,
) -> serde_json::Value {
    let peer = |id: NodeId| peers.get(&id).cloned().unwrap_or_else(|| id.to_string());
    let mut counts: BTreeMap<String, u64> = mission.summary.clone().unwrap_or_default();
    // From the index the state machine keeps as it applies (no pass over
    // the tasks: the long polls of `submit --wait` read this after every
    // change); counted here only before the index exists.
    let by_state: Vec<(TaskState, u64)> = match mission.index() {
        Some(index) if index.len() == mission.tasks.len() => index.counts().collect(),
        _ => {
            let mut by_state: Vec<(TaskState, u64)> = Vec::new();
            for task in mission.tasks.values() {
                match by_state.iter_mut().find(|(state, _)| *state == task.state) {
                    Some((_, count)) => *count += 1,
                    None => by_state.push((task.state, 1)),
                }
            }
            by_state
        }
    };
    for (state, count) in by_state {
        *counts.entry(lower(state)).or_default() += count;
    }
    if !with_tasks {
        return serde_json::json!({
            "id": mission.id,
            "name": mission.name,
            "state": lower(mission.state),
            "submitted_ms": mission.submitted_ms,
            "counts": counts,
            "compacted": mission.summary.is_some(),
        });
    }
    let tasks: Vec<serde_json::Value> = mission
        .tasks
        .values()
        .map(|t| {
            let running = u32::from(t.state == TaskState::Running);
            serde_json::json!({
                "id": t.spec.id,
                "title": t.spec.title,
                "agent": t.spec.agent,
                "state": lower(t.state),
                "reason": t.reason,
                "owner": t.owner.map(peer),
                "attempts": t.runs + running,
                "attempt": t.attempt,
                "priority": format!("P{}", t.spec.priority),
                "needs": t.spec.needs,
                "requires": t.spec.requires,
                "spawned_by": t.spec.spawned_by,
                "superseded_by": t.superseded_by,
                "results_committed": t.results_committed,
                "not_before_ms": t.not_before_ms,
                "violations": t.violations.iter().map(|v| serde_json::json!({
                    "attempt": v.attempt,
                    "node": peer(v.node),
                    "kind": v.kind,
                    "detail": v.detail,
                    "outputs": v.outputs.iter().map(|(path, digest, size)| serde_json::json!({
                        "path": path, "digest": digest, "size": size,
                    })).collect::<Vec<_>>(),
                    "llm_calls": v.llm_calls,
                })).collect::<Vec<_>>(),
                "result": t.result.as_ref().map(|r| serde_json::json!({
                    "node": peer(r.node),
                    "attempt": r.attempt,
                    "exit_code": r.exit_code,
                    "stdout": r.stdout_head,
                    "stdout_digest": r.stdout_digest,
                    "outputs": r.outputs.iter().map(|(path, digest, size)| serde_json::json!({
                        "path": path, "digest": digest, "size": size,
                    })).collect::<Vec<_>>(),
                    "fuel_used": r.fuel_used,
                    "wall_ms": r.wall_ms,
                    "changes": r.changes.iter().map(change_json).collect::<Vec<_>>(),
                    "llm_calls": r.llm_calls,
                })),
            })
        })
        .collect();
    serde_json::json!({
        "id": mission.id,
        "name": mission.name,
        "state": lower(mission.state),
        "submitted_ms": mission.submitted_ms,
        "counts": counts,
        "compacted": mission.summary.is_some(),
        "origin": mission.origin.map(peer),
        "max_fix_rounds": mission
            .max_fix_rounds
            .unwrap_or(crate::scheduler::fix::DEFAULT_MAX_FIX_ROUNDS),
        "workspace": mission.workspace().map(|tree| serde_json::json!({
            "tree": tree,
            "changes": mission.workspace_changes().iter().map(|(change, by)| {
                let mut json = change_json(change);
                json["task"] = serde_json::json!(by);
                json
            }).collect::<Vec<_>>(),
        })),
        "tasks": tasks,
    })
}

/// One workspace change as JSON (`digest` null for a deletion).
fn change_json(change: &coditect_memory::tree::FileChange) -> serde_json::Value {
    serde_json::json!({
        "path": change.path,
        "digest": change.digest,
        "size": change.size,
        "exec": change.exec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_consensus::mission::TaskResult;

    fn result(outputs: usize) -> Report {
        Report::Succeeded(TaskResult {
            llm_calls: Vec::new(),
            node: 7,
            attempt: 2,
            exit_code: Some(0),
            stdout_digest: format!("sha256:{}", "0".repeat(64)),
            stdout_head: String::new(),
            outputs: (0..outputs)
                .map(|i| {
                    (
                        format!("out/file-{i:06}.txt"),
                        format!("sha256:{}", "a".repeat(64)),
                        10,
                    )
                })
                .collect(),
            fuel_used: 1,
            wall_ms: 1,
            changes: Vec::new(),
        })
    }

    #[test]
    fn a_result_too_large_for_one_entry_fails_the_task_with_the_reason() {
        assert!(matches!(
            bound_result("m1", "t", result(10)),
            Report::Succeeded(_)
        ));
        match bound_result("m1", "t", result(20_000)) {
            Report::Violated {
                violation, kind, ..
            } => {
                assert_eq!(kind, ViolationKind::InvalidTask);
                assert_eq!((violation.node, violation.attempt), (7, 2));
                assert!(
                    violation.detail.contains("20000 output files"),
                    "{}",
                    violation.detail
                );
            }
            other => panic!("not refused: {other:?}"),
        }
    }
}
