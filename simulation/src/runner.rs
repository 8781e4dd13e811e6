//! The simulated task runner: the real executor and orchestrator path
//! (placement, assignment, reports, commits with the attempt as fencing
//! token) with the sandbox replaced by a modelled run time on the virtual
//! clock and a modelled stdout (empty, or in the `disk` scenario tens to
//! hundreds of KiB, all carried in the result, so results fill Raft entries
//! and report batches). Durations and sizes come from the task's identity
//! and the run's seed, so they replay exactly.
#![allow(clippy::disallowed_methods)] // the simulated runner sleeps on virtual time

use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::mission::{LlmCall, TaskResult};
use coditect_consensus::NodeId;
use coditect_memory::Digest;
use coditect_node::llm::service::LlmService;
use coditect_node::llm::wire::{ChatMessage, ChatRequest};
use coditect_node::scheduler::ViolationKind;
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
    /// Smallest stdout a task prints, bytes (its result carries all of it).
    pub min_output_bytes: usize,
    /// Largest stdout a task prints, bytes.
    pub max_output_bytes: usize,
}

/// A [`TaskRunner`] that sleeps for the modelled duration, honouring
/// cancellation, and reports success. A task that requires `llm` first
/// calls the node's model through the node's real `LlmService` (over the
/// modelled provider of [`crate::model`]): its answer is recorded with the
/// result, and a call that fails is the task's `llm_unavailable`.
pub struct SimRunner {
    seed: u64,
    model: TaskModel,
    llm: Option<Arc<LlmService>>,
}

impl SimRunner {
    /// A runner for one node.
    pub fn new(seed: u64, model: TaskModel) -> Arc<Self> {
        Arc::new(SimRunner {
            seed,
            model,
            llm: None,
        })
    }

    /// A runner for a node that has a model.
    pub fn with_llm(seed: u64, model: TaskModel, llm: Arc<LlmService>) -> Arc<Self> {
        Arc::new(SimRunner {
            seed,
            model,
            llm: Some(llm),
        })
    }

    /// Two draws from the task's identity and the seed.
    fn draws(&self, mission: &str, task: &str) -> [u64; 2] {
        let digest = Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update(mission.as_bytes())
            .chain_update([0])
            .chain_update(task.as_bytes())
            .finalize();
        [
            u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(digest[8..16].try_into().expect("8 bytes")),
        ]
    }

    /// The modelled run time of `task` of `mission` (integer arithmetic only).
    pub fn duration(&self, mission: &str, task: &str) -> Duration {
        let draw = self.draws(mission, task)[0];
        let span = self.model.max_ms.saturating_sub(self.model.min_ms) + 1;
        Duration::from_millis((self.model.min_ms + draw % span) * self.model.slowdown.max(1))
    }

    /// How many bytes `task` of `mission` prints.
    pub fn output_bytes(&self, mission: &str, task: &str) -> usize {
        let draw = self.draws(mission, task)[1];
        let span = self
            .model
            .max_output_bytes
            .saturating_sub(self.model.min_output_bytes) as u64
            + 1;
        self.model.min_output_bytes + (draw % span) as usize
    }
}

/// `bytes` of printable stdout naming the run, line by line.
fn stdout_of(mission: &str, task: &str, attempt: u32, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 80);
    let mut line = 0u64;
    while out.len() < bytes {
        out.push_str(&format!("{mission}/{task} attempt {attempt} line {line}\n"));
        line += 1;
    }
    out.truncate(bytes);
    out
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
        let output_bytes = self.output_bytes(&assignment.mission, &assignment.task.id);
        let needs_llm = assignment.task.requires.iter().any(|r| r == "llm");
        let llm = self.llm.clone();
        Box::pin(async move {
            let mut llm_calls = Vec::new();
            if needs_llm {
                let Some(llm) = llm else {
                    return Ok(Report::violated(
                        node,
                        assignment.attempt,
                        ViolationKind::NodeError,
                        "no model on this node",
                    ));
                };
                let request = ChatRequest {
                    messages: vec![ChatMessage {
                        role: "user".into(),
                        content: format!(
                            "{}/{} attempt {}",
                            assignment.mission, assignment.task.id, assignment.attempt
                        ),
                    }],
                    max_tokens: Some(64),
                    temperature: None,
                    purpose: Some("sim".into()),
                };
                let called = llm.chat(&request, 64, Duration::from_secs(30)).await;
                let prompt = serde_json::to_vec(&request.messages).unwrap_or_default();
                let (outcome, completion, tokens) = match &called.answer {
                    Ok(answer) => (
                        "ok".to_string(),
                        Some(Digest::of(answer.content.as_bytes()).to_string()),
                        (answer.tokens_in, answer.tokens_out),
                    ),
                    Err(error) => (format!("{}: {}", error.kind, error.message), None, (0, 0)),
                };
                let call = LlmCall {
                    model: crate::model::SIM_MODEL.into(),
                    purpose: request.purpose.clone(),
                    prompt: Digest::of(&prompt).to_string(),
                    completion,
                    tokens_in: tokens.0,
                    tokens_out: tokens.1,
                    latency_ms: called.latency_ms,
                    tries: called.tries,
                    outcome: outcome.clone(),
                };
                if called.answer.is_err() {
                    let mut report = Report::violated(
                        node,
                        assignment.attempt,
                        ViolationKind::LlmUnavailable,
                        &outcome,
                    );
                    if let Report::Violated { violation, .. } = &mut report {
                        violation.llm_calls = vec![call];
                    }
                    return Ok(report);
                }
                llm_calls.push(call);
            }
            let step = Duration::from_millis(20);
            let mut left = duration;
            while !left.is_zero() {
                if cancel.is_cancelled() {
                    return Ok(Report::violated(
                        node,
                        assignment.attempt,
                        ViolationKind::Cancelled,
                        "cancelled",
                    ));
                }
                let nap = left.min(step);
                tokio::time::sleep(nap).await;
                left -= nap;
            }
            let stdout = stdout_of(
                &assignment.mission,
                &assignment.task.id,
                assignment.attempt,
                output_bytes,
            );
            Ok(Report::Succeeded(TaskResult {
                llm_calls,
                node,
                attempt: assignment.attempt,
                exit_code: Some(0),
                stdout_digest: Digest::of(stdout.as_bytes()).to_string(),
                stdout_head: stdout,
                outputs: Vec::new(),
                fuel_used: 0,
                wall_ms: duration.as_millis() as u64,
                changes: Vec::new(),
            }))
        })
    }
}
