//! Liveness: after the fault-free recovery phase every submitted task has
//! succeeded with exactly one committed result.

use coditect_consensus::mission::TaskState;

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct ExactlyOnceResults {
    first: First,
}

impl Checker for ExactlyOnceResults {
    fn name(&self) -> &'static str {
        "every_task_succeeds_exactly_once"
    }

    fn observe(&mut self, _observation: &Observation<'_>) {}

    fn finish(&mut self, end: &Final<'_>) {
        let Some(state) = end.leader_state else {
            self.first.set(None, "no leader at the end".into());
            return;
        };
        if end.submitted.len() < end.waves_expected {
            self.first.set(
                None,
                format!(
                    "only {} of {} missions were ever accepted",
                    end.submitted.len(),
                    end.waves_expected
                ),
            );
            return;
        }
        for (id, count) in end.submitted {
            let Some(mission) = state.missions.get(id) else {
                self.first
                    .set(None, format!("submitted mission {id} is not in the state"));
                return;
            };
            if mission.tasks.len() != *count {
                self.first.set(
                    None,
                    format!(
                        "mission {id} has {} tasks, {count} were submitted",
                        mission.tasks.len()
                    ),
                );
                return;
            }
            for task in mission.tasks.values() {
                if task.state != TaskState::Succeeded || task.results_committed != 1 {
                    self.first.set(
                        None,
                        format!(
                            "task {id}/{} is {:?} (owner {:?}, attempt {}) with {} results committed ({})",
                            task.spec.id,
                            task.state,
                            task.owner,
                            task.attempt,
                            task.results_committed,
                            task.reason.as_deref().unwrap_or("no reason")
                        ),
                    );
                    return;
                }
            }
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
