//! A task never has two live owners: no two live nodes hold the same task
//! at the same attempt (the attempt is the fencing token every ownership
//! change bumps), and no replica ever shows a task with two results.

use std::collections::BTreeMap;

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct OneLiveOwner {
    first: First,
}

impl Checker for OneLiveOwner {
    fn name(&self) -> &'static str {
        "one_live_owner_per_task"
    }

    fn observe(&mut self, observation: &Observation<'_>) {
        let mut owners: BTreeMap<(&str, &str, u32), &str> = BTreeMap::new();
        for node in observation.nodes {
            for held in &node.held {
                let key = (
                    held.id.mission.as_str(),
                    held.id.task.as_str(),
                    held.attempt,
                );
                if let Some(other) = owners.insert(key, &node.name) {
                    self.first.set(
                        Some(observation.at_ms),
                        format!(
                            "task {} attempt {} is held by both {other} and {}",
                            held.id, held.attempt, node.name
                        ),
                    );
                }
            }
            if node.max_results_per_task > 1 {
                self.first.set(
                    Some(observation.at_ms),
                    format!(
                        "{} shows a task with {} committed results",
                        node.name, node.max_results_per_task
                    ),
                );
            }
        }
    }

    fn finish(&mut self, _end: &Final<'_>) {}

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
