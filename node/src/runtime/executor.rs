//! The worker side of a node: the tasks it holds, its slots, running tasks
//! through the [`TaskRunner`], reporting outcomes to the leader until one
//! is acknowledged, giving queued tasks to thieves, and stealing when idle.
//!
//! The node holds a task at an attempt (the fencing token). What it holds is
//! reconciled with the replicated state through heartbeats: the leader
//! answers with tasks the node owns but did not list (a lost `Assign`) and
//! tasks it listed but no longer owns (stolen, released, cancelled), so a
//! lost message or a new leader never loses or duplicates ownership.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::{Capabilities, Load, NodeId};
use coditect_memory::Digest;
use coditect_sandbox::CancelToken;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::state::Phase;
use super::Node;
use crate::messages::{Held, LeaderHint, NodeRequest, NodeResponse, QueuedTask};
use crate::scheduler::{
    approve_steal, choose_steal, BreakerGate, NodeView, PeerLoad, QueueWindow, StealConfig,
    StealRequest, TaskId, TaskView, ViolationKind, WindowConfig,
};
use crate::worker::{Assignment, BlobHint, BlobSource, Report};

/// Queued tasks an advert shows to thieves, at most.
const ADVERTISED_QUEUE: usize = 32;
/// Wait between attempts to deliver reports while no leader answers.
const REPORT_RETRY: Duration = Duration::from_millis(200);
/// Reports sent to the leader in one request, at most.
const REPORTS_PER_REQUEST: usize = 512;
/// Encoded bytes of the reports in one request, at most (well under the
/// transport's frame cap; one report always goes).
const REPORT_BYTES_PER_REQUEST: usize = 2 * 1024 * 1024;

/// Puts tasks still marked `Giving` back in the queue when a steal request
/// ends, however it ends.
struct GivingGuard {
    node: Node,
    tasks: Vec<(TaskId, u32)>,
}

impl Drop for GivingGuard {
    fn drop(&mut self) {
        let mut exec = self.node.inner.exec.lock().expect("exec lock");
        for (id, attempt) in &self.tasks {
            if let Some(task) = exec.tasks.get_mut(id) {
                if task.assignment.attempt == *attempt && matches!(task.phase, Phase::Giving) {
                    task.phase = Phase::Queued;
                }
            }
        }
    }
}

/// Fetches blobs from this node's store, then from the assignment's hints,
/// then from any connected peer.
struct HintedSource {
    node: Node,
    hints: Vec<BlobHint>,
}

impl BlobSource for Node {
    fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.fetch_blob(&digest).await })
    }
}

impl BlobSource for HintedSource {
    fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.node.fetch_blob_from(&digest, &self.hints).await })
    }
}

impl Node {
    /// How busy this node is.
    pub(super) fn load(&self) -> Load {
        let exec = self.inner.exec.lock().expect("exec lock");
        Load {
            running: exec.running(),
            queued: exec.queued(),
            slots: if exec.draining {
                0
            } else {
                self.inner.capabilities.slots
            },
        }
    }

    /// The tasks beyond its slots this node asks the leader to hold: the
    /// fixed `--queue-depth`, or the measured window (`None` until measured).
    pub(super) fn window(&self) -> Option<u32> {
        let exec = self.inner.exec.lock().expect("exec lock");
        self.window_of(&exec.window)
    }

    fn window_of(&self, measured: &QueueWindow) -> Option<u32> {
        self.inner
            .queue_depth
            .or_else(|| measured.window(self.inner.capabilities.slots, &WindowConfig::default()))
    }

    /// [`Node::window`] and what it was measured from, for `/api/status`.
    pub(super) fn window_status(&self) -> serde_json::Value {
        let (window, estimates) = {
            let exec = self.inner.exec.lock().expect("exec lock");
            (self.window_of(&exec.window), exec.window.estimates())
        };
        serde_json::json!({
            "tasks": window,
            "fixed": self.inner.queue_depth.is_some(),
            "service_us": estimates.map(|(service, _)| service.as_micros() as u64),
            "refill_us": estimates.map(|(_, refill)| refill.as_micros() as u64),
        })
    }

    /// The tasks running here now, for the heartbeat: the leader commits
    /// their `running` state then (a task shorter than a heartbeat goes from
    /// assigned straight to its result, saving a Raft write per task).
    pub(super) fn running_tasks(&self) -> Vec<Held> {
        let exec = self.inner.exec.lock().expect("exec lock");
        exec.tasks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Running(_)))
            .map(|(id, t)| Held {
                id: id.clone(),
                attempt: t.assignment.attempt,
            })
            .collect()
    }

    /// Every task this node holds (queued, running or reporting), by
    /// attempt: for its heartbeat, and for checkers.
    pub fn holding(&self) -> Vec<Held> {
        self.inner.exec.lock().expect("exec lock").held()
    }

    /// The most urgent queued tasks, for adverts.
    pub(super) fn advertised_queue(&self) -> Vec<QueuedTask> {
        let exec = self.inner.exec.lock().expect("exec lock");
        exec.queued_views()
            .into_iter()
            .take(ADVERTISED_QUEUE)
            .map(|view| QueuedTask {
                id: view.id,
                priority: view.priority,
                ready_seq: view.ready_seq,
                requires: view.requires,
                avoid: view.avoid_nodes.into_iter().collect(),
            })
            .collect()
    }

    /// Takes assignments (from the leader, a reconciliation or a steal). An
    /// assignment at an older attempt than one held is ignored; a newer one
    /// replaces the held one (stopping its run).
    pub(super) fn accept_assignments(&self, assignments: Vec<Assignment>) {
        let stopped = {
            let mut exec = self.inner.exec.lock().expect("exec lock");
            exec.window.assignments_arrived(self.inner.env.elapsed());
            exec.accept(assignments)
        };
        for token in stopped {
            token.cancel();
        }
        self.pump();
    }

    /// Drops tasks this node no longer owns, stopping their runs.
    pub(super) fn revoke(&self, revoked: &[Held]) {
        let stopped = self.inner.exec.lock().expect("exec lock").revoke(revoked);
        for (id, token) in stopped {
            tracing::info!(task = %id, "run stopped: the task moved on");
            token.cancel();
        }
    }

    /// Starts queued tasks while slots are free, most urgent first.
    pub(super) fn pump(&self) {
        loop {
            let start = {
                let mut exec = self.inner.exec.lock().expect("exec lock");
                if exec.draining {
                    return;
                }
                let token = CancelToken::new();
                match exec.start_next(self.inner.capabilities.slots, &token) {
                    Some(assignment) => (assignment, token),
                    None => {
                        let idle = exec.running() < self.inner.capabilities.slots;
                        drop(exec);
                        // Idle with free slots: steal now rather than at the next tick.
                        if idle && self.inner.steal {
                            self.try_steal();
                        }
                        return;
                    }
                }
            };
            let node = self.clone();
            self.inner
                .env
                .spawn("task", node.run_one(start.0, start.1).boxed());
        }
    }

    async fn run_one(self, assignment: Assignment, cancel: CancelToken) {
        let id = TaskId::new(assignment.mission.clone(), assignment.task.id.clone());
        let attempt = assignment.attempt;
        let node_id = self.inner.node_id;
        self.inner.metrics.tasks_running.inc();
        let source: Arc<dyn BlobSource> = Arc::new(HintedSource {
            node: self.clone(),
            hints: assignment.sources.clone(),
        });
        let started = self.inner.env.elapsed();
        let outcome = self
            .inner
            .runner
            .run(node_id, source, assignment, cancel)
            .await;
        let took = self.inner.env.elapsed().saturating_sub(started);
        self.inner.metrics.tasks_running.dec();
        let report = match outcome {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(task = %id, "cannot run the task here: {error}");
                Report::violated(
                    node_id,
                    attempt,
                    ViolationKind::NodeError,
                    &error.to_string(),
                )
            }
        };
        match &report {
            Report::Succeeded(_) => self.inner.metrics.tasks_succeeded.inc(),
            Report::Violated { .. } => self.inner.metrics.task_violations.inc(),
        }
        {
            let mut exec = self.inner.exec.lock().expect("exec lock");
            exec.window.task_finished(took);
            match exec.tasks.get_mut(&id) {
                Some(task) if task.assignment.attempt == attempt => {
                    task.phase = Phase::Reporting;
                    exec.outbox.push((id, attempt, report));
                }
                // Revoked while running: nobody wants this outcome.
                _ => {}
            }
        }
        self.inner.reports_ready.notify_one();
        self.pump();
    }

    /// Sends outcomes to the leader in batches, each until it is answered
    /// (committed or stale) or its task is taken from this node; then the
    /// task is let go.
    pub(super) async fn report_loop(self) {
        while !self.is_stopped() {
            let batch: Vec<(TaskId, u32, Report)> = {
                let mut exec = self.inner.exec.lock().expect("exec lock");
                let exec = &mut *exec;
                // Outcomes of tasks taken from us meanwhile are dropped.
                let tasks = &exec.tasks;
                exec.outbox.retain(|(id, attempt, _)| {
                    tasks
                        .get(id)
                        .is_some_and(|t| t.assignment.attempt == *attempt)
                });
                let mut take = 0;
                let mut bytes = 0;
                for report in exec.outbox.iter().take(REPORTS_PER_REQUEST) {
                    bytes += coditect_memory::codec::encoded_len(report).unwrap_or(usize::MAX / 2);
                    if take > 0 && bytes > REPORT_BYTES_PER_REQUEST {
                        break;
                    }
                    take += 1;
                }
                if take > 0 {
                    exec.window.reports_sent(self.inner.env.elapsed());
                }
                exec.outbox.drain(..take).collect()
            };
            if batch.is_empty() {
                let woken = self.inner.reports_ready.notified();
                let nap = self.inner.env.sleep(Duration::from_millis(500));
                futures::future::select(Box::pin(woken), nap).await;
                continue;
            }
            let node_id = self.inner.node_id;
            let answers: Result<Vec<NodeResponse>, String> = if self.is_leader() {
                Ok(self.on_reports(node_id, batch.clone()).await)
            } else if let Some(leader) = self.leader() {
                let request = NodeRequest::Reports {
                    node_id,
                    reports: batch.clone(),
                    window: self.window(),
                };
                match self.ask(&leader, &request).await {
                    Ok(NodeResponse::Answers(answers)) if answers.len() == batch.len() => {
                        Ok(answers)
                    }
                    Ok(other) => Err(format!("reports answered {other:?}")),
                    Err(error) => Err(error),
                }
            } else {
                Err("no leader known".to_string())
            };
            let answers = answers.unwrap_or_else(|error| {
                tracing::debug!("{} report(s) not delivered: {error}", batch.len());
                vec![NodeResponse::Error(error); batch.len()]
            });
            let mut retry = false;
            {
                let mut exec = self.inner.exec.lock().expect("exec lock");
                for ((id, attempt, report), answer) in batch.into_iter().zip(answers) {
                    match answer {
                        NodeResponse::Reported { committed, detail } => {
                            if !committed {
                                tracing::info!(task = %id, "outcome refused: {detail}");
                            }
                            if exec
                                .tasks
                                .get(&id)
                                .is_some_and(|t| t.assignment.attempt == attempt)
                            {
                                exec.tasks.remove(&id);
                            }
                        }
                        _ => {
                            exec.outbox.push((id, attempt, report));
                            retry = true;
                        }
                    }
                }
            }
            self.pump();
            if retry {
                self.inner.env.sleep(REPORT_RETRY).await;
            }
        }
    }

    /// This node as the scheduler sees it, for stealing decisions.
    fn self_view(&self) -> NodeView {
        let load = self.load();
        NodeView {
            id: self.inner.node_id,
            capabilities: Capabilities {
                slots: load.slots,
                ..self.capabilities()
            },
            running: load.running,
            queued: load.queued,
            live: true,
            breaker: BreakerGate::Closed,
            window: None,
        }
    }

    /// When idle, asks the busiest peer (by its adverts) for queued tasks.
    pub(super) fn try_steal(&self) {
        let thief = self.self_view();
        if thief.free_slots() == 0 || thief.queued > 0 {
            return;
        }
        if self
            .inner
            .view
            .lock()
            .expect("view lock")
            .adverts_with_queue
            == 0
        {
            return;
        }
        let fresh = self.inner.heartbeat * 8;
        let now = self.inner.env.elapsed();
        let (peers, hints): (Vec<PeerLoad>, BTreeMap<NodeId, LeaderHint>) = {
            let view = self.inner.view.lock().expect("view lock");
            let adverts = view
                .adverts
                .values()
                .filter(|(advert, at)| {
                    now.saturating_sub(*at) <= fresh && !advert.queued.is_empty()
                })
                .map(|(advert, _)| advert);
            let mut peers = Vec::new();
            let mut hints = BTreeMap::new();
            for advert in adverts {
                peers.push(PeerLoad {
                    node: advert.node_id,
                    queued_tasks: advert
                        .queued
                        .iter()
                        .map(|q| TaskView {
                            id: q.id.clone(),
                            priority: q.priority,
                            ready_seq: q.ready_seq,
                            requires: q.requires.clone(),
                            avoid_nodes: q.avoid.iter().copied().collect(),
                            home: None,
                        })
                        .collect(),
                    running: advert.load.running,
                    slots: advert.load.slots,
                    capabilities: advert.capabilities.clone(),
                });
                hints.insert(
                    advert.node_id,
                    LeaderHint {
                        node_id: advert.node_id,
                        peer_id: advert.peer_id.clone(),
                        addrs: advert.addrs.clone(),
                    },
                );
            }
            (peers, hints)
        };
        let Some(request) = choose_steal(&thief, &peers, &StealConfig::default()) else {
            return;
        };
        let Some(victim) = hints.get(&request.victim).cloned() else {
            return;
        };
        {
            let mut exec = self.inner.exec.lock().expect("exec lock");
            if exec.steal_in_flight {
                return;
            }
            exec.steal_in_flight = true;
        }
        let node = self.clone();
        self.inner.env.spawn(
            "steal",
            async move {
                let ask = NodeRequest::StealAsk {
                    request,
                    capabilities: node.capabilities(),
                };
                match node.ask(&victim, &ask).await {
                    Ok(NodeResponse::Stolen(assignments)) if !assignments.is_empty() => {
                        tracing::info!(
                            victim = %victim.peer_id,
                            tasks = assignments.len(),
                            "stole queued tasks"
                        );
                        node.inner.metrics.steals.inc_by(assignments.len() as u64);
                        node.accept_assignments(assignments);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!("steal from {}: {error}", victim.peer_id),
                }
                node.inner.exec.lock().expect("exec lock").steal_in_flight = false;
            }
            .boxed(),
        );
    }

    /// The victim's side of a steal: gives up what the rule allows, commits
    /// the transfer through the leader, and hands over what committed.
    pub(super) async fn on_steal_ask(
        &self,
        request: StealRequest,
        thief_capabilities: Capabilities,
    ) -> NodeResponse {
        let giving: Vec<Assignment> = {
            let mut exec = self.inner.exec.lock().expect("exec lock");
            if exec.draining {
                return NodeResponse::Stolen(Vec::new());
            }
            let me = PeerLoad {
                node: self.inner.node_id,
                queued_tasks: exec.queued_views(),
                running: exec.running(),
                slots: self.inner.capabilities.slots,
                capabilities: self.capabilities(),
            };
            let approved =
                approve_steal(&me, &request, &thief_capabilities, &StealConfig::default());
            approved
                .iter()
                .filter_map(|id| {
                    let task = exec.tasks.get_mut(id)?;
                    task.phase = Phase::Giving;
                    Some(task.assignment.clone())
                })
                .collect()
        };
        if giving.is_empty() {
            return NodeResponse::Stolen(Vec::new());
        }
        // If this request is dropped half way (the thief's deadline), the
        // tasks must not stay `Giving` forever: the guard puts back whatever
        // is still being given at the same attempt.
        let guard = GivingGuard {
            node: self.clone(),
            tasks: giving
                .iter()
                .map(|a| (TaskId::new(a.mission.clone(), a.task.id.clone()), a.attempt))
                .collect(),
        };
        let held: Vec<Held> = giving
            .iter()
            .map(|a| Held {
                id: TaskId::new(a.mission.clone(), a.task.id.clone()),
                attempt: a.attempt,
            })
            .collect();
        let committed = if self.is_leader() {
            self.commit_steal(self.inner.node_id, request.thief, &held)
                .await
        } else {
            match self.leader() {
                Some(leader) => match self
                    .ask(
                        &leader,
                        &NodeRequest::CommitSteal {
                            from: self.inner.node_id,
                            to: request.thief,
                            tasks: held.clone(),
                        },
                    )
                    .await
                {
                    Ok(NodeResponse::StealCommitted(flags)) => flags,
                    _ => vec![false; held.len()],
                },
                None => vec![false; held.len()],
            }
        };
        let given = self
            .inner
            .exec
            .lock()
            .expect("exec lock")
            .settle_steal(giving, &committed);
        drop(guard);
        self.pump();
        NodeResponse::Stolen(given)
    }

    /// Stops taking tasks and waits (up to `grace`) for running ones to end
    /// and report; queued ones go back to the leader when the node leaves.
    pub(super) async fn drain_tasks(&self, grace: Duration) {
        self.inner.exec.lock().expect("exec lock").draining = true;
        let env = self.inner.env.clone();
        let node = self.clone();
        let wait = async move {
            loop {
                let busy = {
                    let exec = node.inner.exec.lock().expect("exec lock");
                    exec.tasks
                        .values()
                        .any(|t| matches!(t.phase, Phase::Running(_) | Phase::Reporting))
                };
                if !busy {
                    return;
                }
                node.inner.env.sleep(Duration::from_millis(50)).await;
            }
        };
        if crate::env::timeout(env.as_ref(), grace, wait)
            .await
            .is_err()
        {
            tracing::warn!("running tasks did not finish within the drain grace; leaving anyway");
        }
    }
}
