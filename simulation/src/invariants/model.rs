//! Model tasks run only where a model is: every task that requires `llm`
//! succeeded with a recorded, answered model call, and no node without a
//! model was ever handed one (it would say so in a `node_error`).

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct ModelTasksOnModelNodes {
    first: First,
}

impl Checker for ModelTasksOnModelNodes {
    fn name(&self) -> &'static str {
        "model_tasks_only_on_model_nodes"
    }

    fn observe(&mut self, _observation: &Observation<'_>) {}

    fn finish(&mut self, end: &Final<'_>) {
        let Some(state) = end.leader_state else {
            return;
        };
        for (id, mission) in &state.missions {
            for task in mission.tasks.values() {
                if !task.spec.requires.iter().any(|r| r == "llm") {
                    continue;
                }
                let name = format!("{id}/{}", task.spec.id);
                if let Some(v) = task
                    .violations
                    .iter()
                    .find(|v| v.detail.contains("no model on this node"))
                {
                    self.first.set(
                        None,
                        format!("task {name} was run by node {} without a model", v.node),
                    );
                    return;
                }
                if let Some(result) = &task.result {
                    if result.llm_calls.last().map(|c| c.outcome.as_str()) != Some("ok") {
                        self.first.set(
                            None,
                            format!("task {name} succeeded without an answered model call"),
                        );
                        return;
                    }
                }
            }
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
