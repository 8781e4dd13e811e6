//! The simulated task runner: the real executor and orchestrator path
//! (placement, assignment, reports, commits with the attempt as fencing
//! token) with the sandbox replaced by a modelled run time on the virtual
//! clock. Durations come from the task's identity and the run's seed, so
//! they replay exactly.
#![allow(clippy::disallowed_methods)] // the simulated runner sleeps on virtual time

use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::mission::TaskResult;
use coditect_consensus::NodeId;
use coditect_memory::Digest;
use coditect_node::worker::{Assignment, BlobSource, Report, TaskRunner, WorkerError};
use coditect_sandbox::CancelToken;
use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};

/// How long a modelled task runs.
#[derive(Clone, Copy, Debug)]
pub struct TaskModel {
    /// Shortest run, ms.
    pub min_ms: u64,
    /// Longest run, ms.
    pub max_ms: u64,
    /// This node runs every task this many times slower (a slow node).
    pub slowdown: u64,
}

/// A [`TaskRunner`] that sleeps for the modelled duration, honouring
/// cancellation, and reports success.
pub struct SimRunner {
    seed: u64,
    model: TaskModel,
}

impl SimRunner {
    /// A runner for one node.
    pub fn new(seed: u64, model: TaskModel) -> Arc<Self> {
        Arc::new(SimRunner { seed, model })
    }

    /// The modelled run time of `task` of `mission` (integer arithmetic only).
    pub fn duration(&self, mission: &str, task: &str) -> Duration {
        let digest = Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update(mission.as_bytes())
            .chain_update([0])
            .chain_update(task.as_bytes())
            .finalize();
        let draw = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let span = self.model.max_ms.saturating_sub(self.model.min_ms) + 1;
        Duration::from_millis((self.model.min_ms + draw % span) * self.model.slowdown.max(1))
    }
}

impl TaskRunner for SimRunner {
    fn run(
        &self,
        node: NodeId,
        _source: Arc<dyn BlobSource>,
        assignment: Assignment,
        cancel: CancelToken,
    ) -> BoxFuture<'static, Result<Report, WorkerError>> {
        let duration = self.duration(&assignment.mission, &assignment.task.id);
        Box::pin(async move {
            let step = Duration::from_millis(20);
            let mut left = duration;
            while !left.is_zero() {
                if cancel.is_cancelled() {
                    return Ok(Report::violated(
                        node,
                        assignment.attempt,
                        coditect_node::scheduler::ViolationKind::Cancelled,
                        "cancelled",
                    ));
                }
                let nap = left.min(step);
                tokio::time::sleep(nap).await;
                left -= nap;
            }
            Ok(Report::Succeeded(TaskResult {
                node,
                attempt: assignment.attempt,
                exit_code: Some(0),
                stdout_digest: Digest::of(b"").to_string(),
                stdout_head: String::new(),
                outputs: Vec::new(),
                fuel_used: 0,
                wall_ms: duration.as_millis() as u64,
            }))
        })
    }
}
