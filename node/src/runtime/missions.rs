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

use coditect_consensus::mission::{MissionRecord, TaskRecord, TaskState, TaskSubmission};
use coditect_consensus::{Command, CommandResponse, MeshState, NodeId};
use coditect_memory::Digest;
use futures::FutureExt;

use super::Node;
use crate::messages::{Held, LeaderHint, MissionAction, NodeRequest, NodeResponse};
use crate::mission::{parse_mission, to_submissions, validate, AgentConfig, MissionFormat};
use crate::scheduler::{
    decide, place, Blame, Breaker, BreakerConfig, BreakerGate, NodeView, PlacementConfig,
    RetryDecision, RetryPolicy, TaskId, TaskView, ViolationKind,
};
use crate::worker::{Assignment, BlobHint, Report};

/// How often the leader looks for work when nothing woke it.
const ROUND_PERIOD: Duration = Duration::from_millis(50);

/// Leader-local scheduling state (rebuilt from scratch by a new leader).
#[derive(Default)]
pub(super) struct SchedState {
    breakers: BTreeMap<NodeId, Breaker>,
    /// The node views of the last round, for placing a new mission's ready
    /// tasks in its submission entry (kept current by every round).
    last_views: Vec<NodeView>,
}

/// Why a submission was refused.
#[derive(Debug)]
pub enum SubmitError {
    /// The mission is invalid (HTTP 400).
    Invalid(String),
    /// The mesh could not take it now (HTTP 503).
    Unavailable(String),
    /// No such mission (HTTP 404).
    NotFound(String),
}

/// Violation kinds whose blame is the node (the task avoids that node next).
fn blames_node(kind: &str) -> bool {
    matches!(kind, "timeout" | "lost_node" | "node_error")
}

fn task_view(mission: &str, record: &TaskRecord) -> TaskView {
    TaskView {
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

/// Every digest a task needs.
fn digests_of(task: &TaskSubmission) -> Vec<String> {
    let mut out = vec![task.module.clone()];
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
            }
        }
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
        let mut sources: Vec<BlobHint> = vec![(self.inner.peer_id.clone(), self.listen_addrs())];
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
        Assignment {
            mission: mission.id.clone(),
            task: record.spec.clone(),
            attempt: record.attempt,
            deps,
            ready_seq: record.ready_seq,
            sources,
            avoid: task_view(&mission.id, record)
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
        let (heard, since, draining): (BTreeMap<NodeId, Duration>, Duration, BTreeSet<NodeId>) = {
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
            )
        };
        let self_draining = self.load().slots == 0;
        let silent_for = |node: NodeId| -> Duration {
            if node == self.inner.node_id {
                return Duration::ZERO;
            }
            let at = heard.get(&node).copied().unwrap_or(since).max(since);
            now.saturating_sub(at)
        };
        struct Snapshot {
            ready: Vec<(TaskView, u32, Option<String>)>,
            holding: BTreeMap<NodeId, (u32, u32)>,
            nodes: Vec<(NodeId, coditect_consensus::Capabilities, bool)>,
        }
        let snapshot = self.state(|state| {
            let mut ready = Vec::new();
            let mut holding: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
            for mission in state.missions.values() {
                if mission.state != coditect_consensus::mission::MissionState::Running {
                    continue;
                }
                for record in mission.tasks.values() {
                    match record.state {
                        TaskState::Ready if record.not_before_ms <= now_ms => ready.push((
                            task_view(&mission.id, record),
                            record.attempt,
                            record.reason.clone(),
                        )),
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
            Snapshot {
                ready,
                holding,
                nodes,
            }
        });

        // Leases: a node silent past the lease (or gone) loses its tasks.
        let left: BTreeSet<NodeId> = snapshot
            .nodes
            .iter()
            .filter(|(_, _, left)| *left)
            .map(|(id, _, _)| *id)
            .collect();
        let mut releases = Vec::new();
        for owner in snapshot.holding.keys() {
            let silent = silent_for(*owner);
            if left.contains(owner) {
                releases.push(Command::ReleaseNode {
                    node: *owner,
                    reason: format!("node {owner} left the mesh"),
                    max_runs: RetryPolicy::default().max_attempts,
                });
            } else if silent > lease {
                releases.push(Command::ReleaseNode {
                    node: *owner,
                    reason: format!(
                        "node {owner} stopped heartbeating ({} ms silent) and lost its lease",
                        silent.as_millis()
                    ),
                    max_runs: RetryPolicy::default().max_attempts,
                });
                let mut sched = self.inner.sched.lock().expect("sched lock");
                sched.breakers.entry(*owner).or_default().record_failure(
                    ViolationKind::LostNode,
                    &BreakerConfig::default(),
                    now_ms,
                );
            }
        }
        if !releases.is_empty() {
            for release in &releases {
                if let Command::ReleaseNode { reason, .. } = release {
                    tracing::warn!("{reason}; its tasks are placed again");
                }
            }
            if let Err(error) = self.write(Command::Batch(releases)).await {
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
                    }
                })
                .collect()
        };
        self.inner.sched.lock().expect("sched lock").last_views = nodes.clone();
        if snapshot.ready.is_empty() {
            return;
        }
        let views: Vec<TaskView> = snapshot.ready.iter().map(|(v, _, _)| v.clone()).collect();
        let attempts: BTreeMap<&TaskId, (u32, &Option<String>)> = snapshot
            .ready
            .iter()
            .map(|(v, attempt, reason)| (&v.id, (*attempt, reason)))
            .collect();
        let config = PlacementConfig {
            queue_depth_beyond_slots: self.inner.queue_depth,
            ..PlacementConfig::default()
        };
        let plan = place(&views, &nodes, &config, self.inner.env.random_u64());

        // Reasons, written only when they change.
        let mut reasons: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (id, reason) in &plan.unplaceable {
            let text = reason.to_string();
            if attempts.get(id).and_then(|(_, r)| r.as_deref()) != Some(text.as_str()) {
                reasons
                    .entry(id.mission.clone())
                    .or_default()
                    .push((id.task.clone(), text));
            }
        }
        let mut commands: Vec<Command> = reasons
            .into_iter()
            .map(|(mission, reasons)| Command::NoteReasons { mission, reasons })
            .collect();
        let first_assignment = commands.len();
        for (id, node) in &plan.assignments {
            commands.push(Command::AssignTask {
                mission: id.mission.clone(),
                task: id.task.clone(),
                node: *node,
                attempt: attempts.get(id).map(|(a, _)| *a).unwrap_or(0),
                at_ms: now_ms,
            });
        }
        if commands.is_empty() {
            return;
        }
        let answers = match self.write(Command::Batch(commands)).await {
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

    /// Leader: what `node` should hold (from the state) against what it says it holds.
    pub(super) fn reconcile(&self, node: NodeId, holding: &[Held]) -> (Vec<Assignment>, Vec<Held>) {
        if !self.caught_up() {
            return (Vec::new(), Vec::new());
        }
        let listed: BTreeMap<&TaskId, u32> = holding.iter().map(|h| (&h.id, h.attempt)).collect();
        self.state(|state| {
            let mut missing = Vec::new();
            let running = state
                .missions
                .values()
                .filter(|m| m.state == coditect_consensus::mission::MissionState::Running);
            for mission in running {
                for record in mission.tasks.values() {
                    let owned = record.owner == Some(node)
                        && matches!(record.state, TaskState::Assigned | TaskState::Running);
                    if !owned {
                        continue;
                    }
                    let id = TaskId::new(mission.id.clone(), record.spec.id.clone());
                    if listed.get(&id) != Some(&record.attempt) {
                        missing.push(self.assignment_for(state, mission, record));
                    }
                }
            }
            let revoked = holding
                .iter()
                .filter(|held| {
                    let current = state
                        .missions
                        .get(&held.id.mission)
                        .and_then(|m| m.tasks.get(&held.id.task))
                        .is_some_and(|record| {
                            record.owner == Some(node)
                                && record.attempt == held.attempt
                                && matches!(record.state, TaskState::Assigned | TaskState::Running)
                        });
                    !current
                })
                .cloned()
                .collect();
            (missing, revoked)
        })
    }

    /// Leader: records as `running` the tasks `node` runs that the state
    /// still shows queued (in the background; one entry for all of them).
    pub(super) fn commit_starts(&self, node: NodeId, running: Vec<Held>) {
        let commands: Vec<Command> = self.state(|state| {
            running
                .into_iter()
                .filter(|held| {
                    state
                        .missions
                        .get(&held.id.mission)
                        .and_then(|m| m.tasks.get(&held.id.task))
                        .is_some_and(|t| {
                            t.state == TaskState::Assigned
                                && t.owner == Some(node)
                                && t.attempt == held.attempt
                        })
                })
                .map(|held| Command::StartTask {
                    mission: held.id.mission,
                    task: held.id.task,
                    node,
                    attempt: held.attempt,
                })
                .collect()
        });
        if commands.is_empty() {
            return;
        }
        let me = self.clone();
        self.inner.env.spawn(
            "commit-starts",
            async move {
                if let Err(error) = me.write(Command::Batch(commands)).await {
                    tracing::debug!("starts not committed: {error}");
                }
            }
            .boxed(),
        );
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

    /// Leader: commits an outcome (or decides a retry) with the attempt as fencing token.
    pub(super) async fn on_report(
        &self,
        node: NodeId,
        mission: &str,
        task: &str,
        report: Report,
    ) -> NodeResponse {
        let now_ms = self.inner.env.now_ms();
        let command = match report {
            Report::Succeeded(result) => {
                if result.node != node {
                    return NodeResponse::Error("a node reports only its own runs".into());
                }
                Command::CompleteTask {
                    mission: mission.to_string(),
                    task: task.to_string(),
                    result,
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
                    RetryDecision::Fail { reason } => (None, Some(reason)),
                };
                Command::FailTask {
                    mission: mission.to_string(),
                    task: task.to_string(),
                    violation,
                    retry_not_before_ms,
                    fail_reason,
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
            Err(error) => NodeResponse::Error(error),
        }
    }

    /// Leader: commits a steal, one compare-and-set per task.
    pub(super) async fn commit_steal(&self, from: NodeId, to: NodeId, tasks: &[Held]) -> Vec<bool> {
        let commands = tasks
            .iter()
            .map(|held| Command::StealTask {
                mission: held.id.mission.clone(),
                task: held.id.task.clone(),
                from,
                to,
                attempt: held.attempt,
            })
            .collect();
        match self.write(Command::Batch(commands)).await {
            Ok(CommandResponse::Batch(answers)) => answers
                .into_iter()
                .map(|a| a == CommandResponse::Ok)
                .collect(),
            _ => vec![false; tasks.len()],
        }
    }

    /// Leader: takes a submission. Every blob it names is fetched first (from
    /// `hint`, the node that accepted it), so the mission never names a blob
    /// the leader cannot serve.
    pub(super) async fn leader_submit(
        &self,
        hint: Option<BlobHint>,
        name: String,
        tasks: Vec<TaskSubmission>,
    ) -> Result<String, SubmitError> {
        crate::mission::check_submissions(&name, &tasks)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let hints: Vec<BlobHint> = hint.into_iter().collect();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for task in &tasks {
            wanted.extend(digests_of(task));
        }
        for text in wanted {
            let digest: Digest = text
                .parse()
                .map_err(|_| SubmitError::Invalid(format!("{text:?} is not a digest")))?;
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
        let at_ms = self.inner.env.now_ms();
        let assign = self.first_placements(&tasks);
        match self
            .write(Command::SubmitMission {
                name,
                tasks,
                at_ms,
                assign: assign.clone(),
            })
            .await
        {
            Ok(CommandResponse::MissionCreated(id)) => {
                self.dispatch_placed(&id, &assign);
                self.wake_scheduler();
                Ok(id)
            }
            Ok(other) => Err(SubmitError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(error) => Err(SubmitError::Unavailable(error)),
        }
    }

    /// Where a new mission's immediately ready tasks go, decided with the
    /// last round's node views (which are then charged for them), so they
    /// are assigned in the submission's own Raft entry. Empty until this
    /// leader has scheduled once; tasks left out wait for the next round.
    fn first_placements(&self, tasks: &[TaskSubmission]) -> Vec<(String, NodeId)> {
        if !self.caught_up() {
            return Vec::new();
        }
        let ready: Vec<TaskView> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.done && t.needs.is_empty())
            .map(|(i, t)| TaskView {
                id: TaskId::new("", t.id.clone()),
                priority: t.priority,
                ready_seq: i as u64,
                requires: t.requires.clone(),
                avoid_nodes: BTreeSet::new(),
            })
            .collect();
        let mut sched = self.inner.sched.lock().expect("sched lock");
        if ready.is_empty() || sched.last_views.is_empty() {
            return Vec::new();
        }
        let config = PlacementConfig {
            queue_depth_beyond_slots: self.inner.queue_depth,
            ..PlacementConfig::default()
        };
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
    ) -> Result<String, SubmitError> {
        let agents: &AgentConfig = &self.inner.agents;
        let spec =
            parse_mission(text, format, agents).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let validated = validate(&spec, None).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let tasks = to_submissions(&validated, &self.inner.blobs)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let name = validated.spec().name.clone();
        if self.is_leader() {
            return self.leader_submit(None, name, tasks).await;
        }
        let leader = self
            .leader()
            .ok_or_else(|| SubmitError::Unavailable("no leader known yet".into()))?;
        match self
            .ask(&leader, &NodeRequest::Submit { name, tasks })
            .await
        {
            Ok(NodeResponse::MissionCreated(id)) => Ok(id),
            Ok(NodeResponse::Error(message)) => Err(SubmitError::Invalid(message)),
            Ok(other) => Err(SubmitError::Unavailable(format!(
                "the leader answered {other:?}"
            ))),
            Err(error) => Err(SubmitError::Unavailable(format!(
                "cannot reach the leader: {error}"
            ))),
        }
    }

    /// Whether this node holds the replicated state (a voter or standby).
    fn holds_replica(&self) -> bool {
        let metrics = self.raft_metrics();
        let membership = metrics.membership_config.membership();
        membership.get_node(&self.inner.node_id).is_some() && metrics.last_applied.is_some()
    }

    /// A mission: from the local replica, or (outside Raft) from the leader.
    pub async fn mission(&self, id: &str) -> Result<Option<MissionRecord>, String> {
        if self.holds_replica() {
            return Ok(self.state(|state| state.missions.get(id).cloned()));
        }
        let leader = self.leader().ok_or("no leader known yet")?;
        match self
            .ask(&leader, &NodeRequest::GetMission(id.to_string()))
            .await?
        {
            NodeResponse::Mission(mission) => Ok(mission.map(|m| *m)),
            other => Err(format!("the leader answered {other:?}")),
        }
    }

    /// Leader: cancels or retries a mission.
    pub(super) async fn leader_control(
        &self,
        mission: &str,
        action: MissionAction,
    ) -> Result<(), SubmitError> {
        let before = self.state(|state| state.missions.get(mission).cloned());
        let Some(before) = before else {
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
        match self
            .write(command)
            .await
            .map_err(SubmitError::Unavailable)?
        {
            CommandResponse::Ok => {}
            CommandResponse::Rejected(reason) => return Err(SubmitError::Invalid(reason)),
            other => {
                return Err(SubmitError::Unavailable(format!(
                    "unexpected answer {other:?}"
                )))
            }
        }
        if action == MissionAction::Cancel {
            // Interrupt running guests now rather than at the next heartbeat.
            let mut by_owner: BTreeMap<NodeId, Vec<Held>> = BTreeMap::new();
            for record in before.tasks.values() {
                if let Some(owner) = record.owner {
                    by_owner.entry(owner).or_default().push(Held {
                        id: TaskId::new(mission, record.spec.id.clone()),
                        attempt: record.attempt,
                    });
                }
            }
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
        match self.ask(&leader, &request).await {
            Ok(NodeResponse::Ack) => Ok(()),
            Ok(NodeResponse::Mission(None)) => {
                Err(SubmitError::NotFound(format!("no mission {mission}")))
            }
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

    /// Waits up to `max` for the replicated state to change (members), or
    /// a short while (nodes outside Raft, which ask the leader again).
    pub async fn wait_for_change(&self, max: Duration) {
        if self.holds_replica() {
            let mut metrics = self.inner.raft.metrics();
            let _ = crate::env::timeout(self.inner.env.as_ref(), max, metrics.changed()).await;
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
        let Some(record) = self.mission(mission).await? else {
            return Ok(None);
        };
        let Some(result) = record.tasks.get(task).and_then(|t| t.result.clone()) else {
            return Ok(None);
        };
        let digest = if path == "stdout" && !result.outputs.iter().any(|(p, _, _)| p == path) {
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

/// A mission as `GET /api/missions/{id}` shows it; without `with_tasks`,
/// only its state and the count of tasks in each state.
pub fn mission_json(
    mission: &MissionRecord,
    peers: &BTreeMap<NodeId, String>,
    with_tasks: bool,
) -> serde_json::Value {
    let peer = |id: NodeId| peers.get(&id).cloned().unwrap_or_else(|| id.to_string());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in mission.tasks.values() {
        *counts.entry(lower(task.state)).or_default() += 1;
    }
    if !with_tasks {
        return serde_json::json!({
            "id": mission.id,
            "name": mission.name,
            "state": lower(mission.state),
            "submitted_ms": mission.submitted_ms,
            "counts": counts,
        });
    }
    let tasks: Vec<serde_json::Value> = mission
        .tasks
        .values()
        .map(|t| {
            let running = u32::from(t.state == TaskState::Running);
            serde_json::json!({
                "id": t.spec.id,
                "state": lower(t.state),
                "reason": t.reason,
                "owner": t.owner.map(peer),
                "attempts": t.runs + running,
                "attempt": t.attempt,
                "priority": format!("P{}", t.spec.priority),
                "needs": t.spec.needs,
                "requires": t.spec.requires,
                "results_committed": t.results_committed,
                "not_before_ms": t.not_before_ms,
                "violations": t.violations.iter().map(|v| serde_json::json!({
                    "attempt": v.attempt,
                    "node": peer(v.node),
                    "kind": v.kind,
                    "detail": v.detail,
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
        "tasks": tasks,
    })
}
