//! The scheduler's decisions: placement of ready tasks, work stealing,
//! retry after a violation, consistency violation detection and per-node
//! circuit breakers.
//!
//! Everything here is a pure synchronous function (or a small state machine)
//! over plain data, in the style of `quinn-proto`: the caller passes in the
//! time (`now_ms`) and any randomness (a seed); nothing reads a clock, does
//! IO or spawns. The same inputs always give the same decision, so the
//! simulation replays them from its seed, and the tests need no runtime.
//!
//! The runtime turns decisions into effects. It builds [`TaskView`]s and
//! [`NodeView`]s from the replicated state and heartbeats, then commits
//! every ownership change a decision asks for (assignment, steal, retry)
//! through Raft as a compare-and-set on the task's owner and attempt, so a
//! decision taken on a stale view is refused instead of giving a task two
//! owners.
//!
//! - [`placement`]: which ready task goes to which node, or why it waits.
//! - [`orchestrator`]: leases, reconciliation of what a node holds, a round's commands.
//! - [`stealing`]: what an idle node asks a busy peer for, and what the peer gives.
//! - [`violation`]: comparing an outcome with the task's expectations.
//! - [`retry`]: retry with backoff, fail, and whether to avoid the node.
//! - [`breaker`]: keeping new work off a node whose runs keep failing.
//! - [`retention`]: which finished missions are compacted to a summary.
//! - [`fix`]: the fix loop, which tasks replace a failed test after a coder's change.
//! - [`window`]: how many tasks beyond its slots a node asks to hold (its queue window).

pub mod breaker;
pub mod fix;
pub mod orchestrator;
pub mod placement;
pub mod retention;
pub mod retry;
pub mod stealing;
pub mod view;
pub mod violation;
pub mod window;

pub use breaker::{Breaker, BreakerConfig, BreakerGate, BreakerState};
pub use placement::{place, PlacementConfig, PlacementPlan, Reason, Spread};
pub use retry::{decide, RetryDecision, RetryPolicy};
pub use stealing::{approve_steal, choose_steal, PeerLoad, StealConfig, StealRequest};
pub use view::{NodeView, TaskId, TaskView};
pub use violation::{check, Blame, Expectation, ExpectedField, Violation, ViolationKind};
pub use window::{QueueWindow, WindowConfig};

#[cfg(test)]
mod tests {
    //! The decisions working together on a virtual clock, the way the runtime
    //! and the simulation drive them.

    use std::collections::{BTreeMap, BTreeSet};

    use coditect_consensus::{Capabilities, NodeId};

    use super::*;

    struct Worker {
        id: NodeId,
        ticks_per_task: u64,
        running: Vec<u64>,
        queue: Vec<TaskView>,
    }

    impl Worker {
        fn view(&self) -> NodeView {
            NodeView {
                id: self.id,
                capabilities: Capabilities {
                    slots: 1,
                    wasm: true,
                    ..Capabilities::default()
                },
                running: self.running.len() as u32,
                queued: self.queue.len() as u32,
                live: true,
                breaker: BreakerGate::Closed,
                window: None,
            }
        }

        fn load(&self) -> PeerLoad {
            PeerLoad {
                node: self.id,
                queued_tasks: self.queue.clone(),
                running: self.running.len() as u32,
                slots: 1,
                capabilities: self.view().capabilities,
            }
        }

        fn start_queued(&mut self, now: u64) {
            self.queue.sort_by(|a, b| a.urgency().cmp(&b.urgency()));
            while self.running.is_empty() && !self.queue.is_empty() {
                self.queue.remove(0);
                self.running.push(now + self.ticks_per_task);
            }
        }
    }

    /// Runs `tasks` on one slow and one fast single-slot node; returns the
    /// tick at which the last task finished.
    fn makespan(tasks: usize, stealing: bool) -> u64 {
        let mut workers = [
            Worker {
                id: 1,
                ticks_per_task: 10,
                running: Vec::new(),
                queue: Vec::new(),
            },
            Worker {
                id: 2,
                ticks_per_task: 1,
                running: Vec::new(),
                queue: Vec::new(),
            },
        ];
        let mut ready: Vec<TaskView> = (0..tasks as u64)
            .map(|seq| TaskView {
                id: TaskId::new("skew", format!("t{seq:02}")),
                priority: 1,
                ready_seq: seq,
                requires: vec!["wasm".to_string()],
                avoid_nodes: BTreeSet::new(),
                home: None,
            })
            .collect();
        let mut finished = 0;
        for now in 0..10_000u64 {
            for worker in &mut workers {
                let before = worker.running.len();
                worker.running.retain(|&finish_at| finish_at > now);
                finished += before - worker.running.len();
            }
            if finished == tasks {
                return now;
            }
            let views: Vec<NodeView> = workers.iter().map(Worker::view).collect();
            let plan = place(&ready, &views, &PlacementConfig::default(), now);
            let mut placed: BTreeMap<TaskId, NodeId> = plan.assignments.into_iter().collect();
            ready.retain(|task| match placed.remove(&task.id) {
                Some(node) => {
                    workers[node as usize - 1].queue.push(task.clone());
                    false
                }
                None => true,
            });
            for worker in &mut workers {
                worker.start_queued(now);
            }
            if stealing {
                for thief in 0..workers.len() {
                    let peers: Vec<PeerLoad> = workers.iter().map(Worker::load).collect();
                    let thief_view = workers[thief].view();
                    let Some(request) = choose_steal(&thief_view, &peers, &StealConfig::default())
                    else {
                        continue;
                    };
                    let victim = request.victim as usize - 1;
                    let given = approve_steal(
                        &peers[victim],
                        &request,
                        &thief_view.capabilities,
                        &StealConfig::default(),
                    );
                    let (moved, kept) = workers[victim]
                        .queue
                        .drain(..)
                        .partition(|task| given.contains(&task.id));
                    workers[victim].queue = kept;
                    workers[thief].queue.extend::<Vec<TaskView>>(moved);
                    workers[thief].start_queued(now);
                }
            }
        }
        panic!("the tasks never finished");
    }

    #[test]
    fn stealing_cuts_the_makespan_of_a_slow_node() {
        let without = makespan(20, false);
        let with = makespan(20, true);
        assert!(with < without, "with stealing {with}, without {without}");
    }
}
