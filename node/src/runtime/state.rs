//! The runtime's plain state, shared by the shell's files: what this node
//! holds as a worker ([`ExecState`]), the leader's scheduling state
//! ([`SchedState`]) and the cache of mission views ([`Views`]). Data only;
//! the files that act on it (`executor.rs`, `missions.rs`) import it, and
//! nothing here imports them.

use std::collections::BTreeMap;
use std::time::Duration;

use coditect_consensus::NodeId;
use coditect_sandbox::CancelToken;

use crate::messages::Held;
use crate::messages::MissionView;
use crate::scheduler::{Breaker, NodeView, QueueWindow, TaskId, TaskView};
use crate::worker::{Assignment, Report};

/// Where a held task is.
pub(super) enum Phase {
    /// Waiting for a slot.
    Queued,
    /// Being handed to a thief (the transfer is being committed).
    Giving,
    /// Running; the token stops it.
    Running(CancelToken),
    /// Ran; the outcome is on its way to the leader.
    Reporting,
}

pub(super) struct HeldTask {
    pub(super) assignment: Assignment,
    pub(super) phase: Phase,
}

/// The tasks this node holds.
#[derive(Default)]
pub(super) struct ExecState {
    pub(super) tasks: BTreeMap<TaskId, HeldTask>,
    pub(super) draining: bool,
    pub(super) steal_in_flight: bool,
    /// Outcomes waiting to be sent to the leader (sent in batches).
    pub(super) outbox: Vec<(TaskId, u32, Report)>,
    /// Service and refill times, for the queue window this node asks for.
    pub(super) window: QueueWindow,
}

impl ExecState {
    pub(super) fn running(&self) -> u32 {
        self.tasks
            .values()
            .filter(|t| matches!(t.phase, Phase::Running(_)))
            .count() as u32
    }

    pub(super) fn queued(&self) -> u32 {
        self.tasks
            .values()
            .filter(|t| matches!(t.phase, Phase::Queued | Phase::Giving))
            .count() as u32
    }

    /// Takes assignments (from the leader, a reconciliation or a steal). An
    /// assignment at an attempt no newer than the one held is ignored; a
    /// newer one replaces the held task. Returns the runs to stop.
    pub(super) fn accept(&mut self, assignments: Vec<Assignment>) -> Vec<CancelToken> {
        let mut stopped = Vec::new();
        for assignment in assignments {
            let id = TaskId::new(assignment.mission.clone(), assignment.task.id.clone());
            if let Some(held) = self.tasks.get(&id) {
                if held.assignment.attempt >= assignment.attempt {
                    continue;
                }
                if let Phase::Running(token) = &held.phase {
                    stopped.push(token.clone());
                }
            }
            self.tasks.insert(
                id,
                HeldTask {
                    assignment,
                    phase: Phase::Queued,
                },
            );
        }
        stopped
    }

    /// Drops the tasks held at exactly the attempts named (a task held at
    /// another attempt is not the one revoked). Returns the runs to stop.
    pub(super) fn revoke(&mut self, revoked: &[Held]) -> Vec<(TaskId, CancelToken)> {
        let mut stopped = Vec::new();
        for held in revoked {
            let current = self
                .tasks
                .get(&held.id)
                .is_some_and(|t| t.assignment.attempt == held.attempt);
            if !current {
                continue;
            }
            if let Some(task) = self.tasks.remove(&held.id) {
                if let Phase::Running(token) = task.phase {
                    stopped.push((held.id.clone(), token));
                }
            }
        }
        stopped
    }

    /// Moves the most urgent queued task to running under `token` if a slot
    /// of `slots` is free, and returns its assignment to run.
    pub(super) fn start_next(&mut self, slots: u32, token: &CancelToken) -> Option<Assignment> {
        if self.running() >= slots {
            return None;
        }
        let next = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Queued))
            // Borrowed keys: this runs once per task start over a queue of
            // up to a window (hundreds), so nothing is copied to compare.
            .min_by_key(|(id, t)| (t.assignment.task.priority, t.assignment.ready_seq, *id))
            .map(|(id, _)| id.clone())?;
        let task = self.tasks.get_mut(&next).expect("task just found");
        task.phase = Phase::Running(token.clone());
        Some(task.assignment.clone())
    }

    /// The victim's side of a steal once the leader answered: each task
    /// being given whose transfer committed (`committed`, one flag per
    /// task; missing flags count as refused) leaves this node and is handed
    /// over at its next attempt, the thief's; the others are queued here
    /// again. A task that changed meanwhile (a newer attempt arrived) is
    /// left as it is.
    pub(super) fn settle_steal(
        &mut self,
        giving: Vec<Assignment>,
        committed: &[bool],
    ) -> Vec<Assignment> {
        let mut given = Vec::new();
        for (index, mut assignment) in giving.into_iter().enumerate() {
            let id = TaskId::new(assignment.mission.clone(), assignment.task.id.clone());
            let ours = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.assignment.attempt == assignment.attempt);
            if committed.get(index).copied().unwrap_or(false) {
                if ours {
                    self.tasks.remove(&id);
                }
                assignment.attempt += 1;
                given.push(assignment);
            } else if ours {
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.phase = Phase::Queued;
                }
            }
        }
        given
    }

    /// What this node tells the leader it holds, at which attempts.
    pub(super) fn held(&self) -> Vec<Held> {
        self.tasks
            .iter()
            .map(|(id, t)| Held {
                id: id.clone(),
                attempt: t.assignment.attempt,
            })
            .collect()
    }

    pub(super) fn queued_views(&self) -> Vec<TaskView> {
        let mut views: Vec<TaskView> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Queued))
            .map(|(id, t)| TaskView {
                id: id.clone(),
                priority: t.assignment.task.priority,
                ready_seq: t.assignment.ready_seq,
                requires: t.assignment.task.requires.clone(),
                avoid_nodes: t.assignment.avoid.iter().copied().collect(),
                home: None,
            })
            .collect();
        views.sort_by(|a, b| {
            (a.priority, a.ready_seq, &a.id).cmp(&(b.priority, b.ready_seq, &b.id))
        });
        views
    }
}

/// A view's key: (mission id, with its task list).
pub(super) type ViewKey = (String, bool);
/// A cached view: (the mission's revision it shows, last read, the view).
pub(super) type CachedView = (u64, u64, MissionView);

/// Cached views by (mission, with tasks), each at the mission's revision,
/// plus the count of waiting long polls.
#[derive(Default)]
pub(super) struct Views {
    pub(super) cache: std::sync::Mutex<BTreeMap<ViewKey, CachedView>>,
    /// Only one view is built at a time; the others wait and share it.
    pub(super) build: tokio::sync::Mutex<()>,
    /// Reads so far, to evict the least recently read.
    pub(super) reads: std::sync::atomic::AtomicU64,
    pub(super) waiters: Waiters,
}

/// Long polls waiting on this node, by client.
pub(super) type Waiters = crate::places::Places<String>;

/// A long poll's place among the waiters; leaving frees it.
pub type WaiterSlot = crate::places::Place<String>;

/// Leader-local scheduling state (rebuilt from scratch by a new leader).
#[derive(Default)]
pub(super) struct SchedState {
    pub(super) breakers: BTreeMap<NodeId, Breaker>,
    /// The node views of the last round, for placing a new mission's ready
    /// tasks in its submission entry (kept current by every round).
    pub(super) last_views: Vec<NodeView>,
    /// When finished missions were last considered for compaction.
    pub(super) last_compaction: Option<Duration>,
    /// When a round last looked at every task rather than each mission's
    /// ready/held index (a safety net, once a second).
    pub(super) last_full_scan: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use coditect_consensus::mission::{TaskLimits, TaskSubmission};
    use coditect_sandbox::CancelToken;
    use proptest::prelude::*;

    use super::*;
    use crate::scheduler::orchestrator::{reconcile, Owned};

    fn assignment(task: u8, attempt: u32, priority: u8) -> Assignment {
        Assignment {
            mission: "m".into(),
            task: TaskSubmission {
                id: format!("t{task}"),
                module: "sha256:noop".into(),
                needs: Vec::new(),
                requires: Vec::new(),
                priority,
                input: None,
                inputs: Vec::new(),
                limits: TaskLimits {
                    fuel: 1,
                    memory_mb: 1,
                    timeout_ms: 1,
                    output_mb: 1,
                    max_llm_calls: 0,
                    max_tokens: 0,
                },
                expect: Default::default(),
                done: false,
                title: None,
                agent: None,
                args: Vec::new(),
                workspace: None,
                spawned_by: None,
            },
            attempt,
            deps: Vec::new(),
            workspace_changes: Vec::new(),
            ready_seq: task as u64,
            sources: Vec::new(),
            avoid: Vec::new(),
            previous: None,
        }
    }

    fn pairs(held: &[Held]) -> Vec<(TaskId, u32)> {
        held.iter().map(|h| (h.id.clone(), h.attempt)).collect()
    }

    #[test]
    fn a_newer_attempt_replaces_the_held_task_and_stops_its_run() {
        let mut exec = ExecState::default();
        assert!(exec.accept(vec![assignment(1, 1, 1)]).is_empty());
        let token = CancelToken::new();
        assert_eq!(exec.start_next(1, &token).map(|a| a.attempt), Some(1));
        assert!(
            exec.accept(vec![assignment(1, 1, 1)]).is_empty(),
            "same attempt: ignored"
        );
        let stopped = exec.accept(vec![assignment(1, 2, 1)]);
        assert_eq!(stopped.len(), 1);
        assert_eq!(exec.held()[0].attempt, 2);
        assert_eq!(exec.queued(), 1, "the new attempt waits for a slot");
    }

    #[test]
    fn starts_take_the_most_urgent_task_and_never_exceed_the_slots() {
        let mut exec = ExecState::default();
        exec.accept(vec![
            assignment(1, 0, 5),
            assignment(2, 0, 1),
            assignment(3, 0, 1),
        ]);
        let token = CancelToken::new();
        assert_eq!(
            exec.start_next(2, &token).map(|a| a.task.id),
            Some("t2".into())
        );
        assert_eq!(
            exec.start_next(2, &token).map(|a| a.task.id),
            Some("t3".into())
        );
        assert!(exec.start_next(2, &token).is_none(), "both slots are taken");
        assert_eq!((exec.running(), exec.queued()), (2, 1));
    }

    #[test]
    fn a_committed_steal_hands_over_the_next_attempt_and_a_refused_one_queues_again() {
        let mut exec = ExecState::default();
        exec.accept(vec![
            assignment(1, 1, 1),
            assignment(2, 1, 1),
            assignment(3, 1, 1),
        ]);
        for task in exec.tasks.values_mut() {
            task.phase = Phase::Giving;
        }
        let giving = vec![
            assignment(1, 1, 1),
            assignment(2, 1, 1),
            assignment(3, 1, 1),
        ];
        // Only the first flag came back: the rest count as refused.
        let given = exec.settle_steal(giving, &[true, false]);
        assert_eq!(
            given
                .iter()
                .map(|a| (a.task.id.as_str(), a.attempt))
                .collect::<Vec<_>>(),
            vec![("t1", 2)]
        );
        assert_eq!(exec.held().len(), 2, "t1 left this node");
        assert_eq!(exec.queued_views().len(), 2, "t2 and t3 are queued again");
    }

    proptest! {
        /// The executor and the leader's reconciliation together converge:
        /// whatever the node held and ran, after it applies one heartbeat's
        /// answer it holds exactly what the state gives it (no task it does
        /// not own, none missing, never two attempts of one task), and the
        /// next heartbeat's answer is empty.
        #[test]
        fn reconciliation_with_the_executor_converges(
            owned in prop::collection::btree_map(0u8..10, 1u32..4, 0..10),
            held in prop::collection::btree_map(0u8..10, (0u32..4, any::<bool>()), 0..10),
            slots in 1u32..4,
        ) {
            let mut exec = ExecState::default();
            exec.accept(held.iter().map(|(t, (a, _))| assignment(*t, *a, 1)).collect());
            for _ in held.values().filter(|(_, running)| *running) {
                exec.start_next(slots, &CancelToken::new());
            }
            prop_assert!(exec.running() <= slots);
            let owned: BTreeMap<TaskId, Owned> = owned
                .into_iter()
                .map(|(t, attempt)| (TaskId::new("m", format!("t{t}")), Owned { attempt, started: false }))
                .collect();
            let running: Vec<(TaskId, u32)> = exec
                .tasks
                .iter()
                .filter(|(_, t)| matches!(t.phase, Phase::Running(_)))
                .map(|(id, t)| (id.clone(), t.assignment.attempt))
                .collect();
            let answer = reconcile(&owned, &pairs(&exec.held()), &running);
            let revoked: Vec<Held> = answer
                .revoked
                .iter()
                .map(|(id, attempt)| Held { id: id.clone(), attempt: *attempt })
                .collect();
            // As the heartbeat's answer is applied: revocations, then assignments.
            exec.revoke(&revoked);
            exec.accept(
                answer
                    .missing
                    .iter()
                    .map(|id| {
                        let task: u8 = id.task[1..].parse().expect("task number");
                        assignment(task, owned[id].attempt, 1)
                    })
                    .collect(),
            );
            let now: BTreeMap<TaskId, u32> = pairs(&exec.held()).into_iter().collect();
            let wanted: BTreeMap<TaskId, u32> =
                owned.iter().map(|(id, o)| (id.clone(), o.attempt)).collect();
            prop_assert_eq!(now, wanted);
            let again = reconcile(&owned, &pairs(&exec.held()), &[]);
            prop_assert!(again.missing.is_empty() && again.revoked.is_empty(), "{:?}", again);
            for (id, attempt) in &answer.starts {
                prop_assert!(running.contains(&(id.clone(), *attempt)));
            }
        }
    }
}
