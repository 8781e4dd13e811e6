//! Running one assigned task on this node: materialize its `/input` from
//! blobs (`input.txt`, its `inputs`, and `deps/<id>/` holding each
//! dependency's `/output`), run the module in the sandbox under the task's
//! limits, keep every produced file and the full stdout as blobs, and check
//! the outcome against the task's expectations.
//!
//! The result is a [`Report`] the owner sends to the leader, which commits it
//! with the attempt as fencing token (see `coditect_consensus::mission`).
//! Problems of this node rather than of the task (no slot free, a blob
//! nobody serves, a full disk) are a [`WorkerError`], not a violation.
//! Problems of the task (a path outside `mission::grammar`, a malformed
//! digest, limits past the hard maxima, an `/output` name outside the
//! grammar) are found by [`check_assignment`] before anything is fetched and
//! reported as an `invalid_task` violation blamed on the task, so they never
//! count against a healthy node's breaker.
//!
//! No detail this module reports names a host path: files are named as the
//! guest sees them (`/input/...`, `/output/...`) and the node's work and data
//! directories are replaced by placeholders, since details are shown to
//! whoever submitted the mission.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use coditect_consensus::mission::{TaskLimits, TaskResult};
use coditect_consensus::NodeId;
use coditect_memory::tree::{FileChange, Tree};
use coditect_memory::{BlobStore, Digest};
use coditect_sandbox::{CancelToken, Limits, ModuleDigest, Sandbox, SandboxError};
use futures::future::BoxFuture;

use serde::Deserialize;

pub use crate::messages::{Assignment, BlobHint, DependencyOutputs, Report};
use crate::mission::caps::MAX_INPUTS_PER_TASK;
use crate::mission::grammar::{self, excerpt};
use crate::scheduler::{check, Expectation, ViolationKind};

/// Bytes of stdout kept in the replicated result for display; the whole of
/// it is a blob.
const STDOUT_HEAD_BYTES: usize = 4 * 1024;

/// Bytes of stdout copied at a time into the blob store.
const STDOUT_COPY_BYTES: usize = 256 * 1024;

/// Where blobs come from: this node's store, or a peer.
pub trait BlobSource: Send + Sync {
    /// The bytes of `digest`, verified; `None` if nobody reachable holds it.
    fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
}

/// The sandbox limits of a replicated task.
pub fn sandbox_limits(limits: &TaskLimits) -> Limits {
    Limits {
        fuel: limits.fuel,
        memory_mb: limits.memory_mb,
        timeout_ms: limits.timeout_ms,
        output_mb: limits.output_mb,
    }
}

/// The replicated form of sandbox limits.
pub fn task_limits(limits: &Limits) -> TaskLimits {
    TaskLimits {
        max_llm_calls: coditect_consensus::mission::DEFAULT_MAX_LLM_CALLS,
        max_tokens: coditect_consensus::mission::DEFAULT_MAX_TOKENS,
        fuel: limits.fuel,
        memory_mb: limits.memory_mb,
        timeout_ms: limits.timeout_ms,
        output_mb: limits.output_mb,
    }
}

/// Runs assigned tasks: the sandbox in production, a model in the simulation.
pub trait TaskRunner: Send + Sync {
    /// Runs `assignment` for `node`, fetching blobs through `source`.
    fn run(
        &self,
        node: NodeId,
        source: std::sync::Arc<dyn BlobSource>,
        assignment: Assignment,
        cancel: CancelToken,
    ) -> BoxFuture<'static, Result<Report, WorkerError>>;
}

/// A runner for nodes that run no tasks (they advertise no slots).
pub struct NoRunner;

impl TaskRunner for NoRunner {
    fn run(
        &self,
        _node: NodeId,
        _source: std::sync::Arc<dyn BlobSource>,
        _assignment: Assignment,
        _cancel: CancelToken,
    ) -> BoxFuture<'static, Result<Report, WorkerError>> {
        Box::pin(async { Err(WorkerError::Io("this node runs no tasks".into())) })
    }
}

/// The production runner: the wasmtime sandbox, blobs kept in the node's store.
pub struct SandboxRunner {
    /// The sandbox.
    pub sandbox: std::sync::Arc<Sandbox>,
    /// Where produced files and stdout are kept.
    pub blobs: BlobStore,
    /// Work directories go under here.
    pub work_dir: PathBuf,
    /// Work directories not in use, kept for the next run: creating and
    /// deleting directories per task costs more than a no-op task itself.
    /// Each was emptied after its last run, off that run's path.
    pub idle_dirs: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
    /// The node's language model, granted to tasks that require `llm`.
    pub llm: Option<std::sync::Arc<crate::llm::service::LlmService>>,
}

impl SandboxRunner {
    /// A runner keeping work directories under `work_dir`.
    pub fn new(sandbox: std::sync::Arc<Sandbox>, blobs: BlobStore, work_dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&work_dir);
        SandboxRunner {
            sandbox,
            blobs,
            work_dir,
            idle_dirs: Default::default(),
            llm: None,
        }
    }

    /// Grants `llm` to the tasks that require it.
    pub fn with_llm(mut self, llm: std::sync::Arc<crate::llm::service::LlmService>) -> Self {
        self.llm = Some(llm);
        self
    }
}

impl TaskRunner for SandboxRunner {
    fn run(
        &self,
        node: NodeId,
        source: std::sync::Arc<dyn BlobSource>,
        assignment: Assignment,
        cancel: CancelToken,
    ) -> BoxFuture<'static, Result<Report, WorkerError>> {
        let sandbox = self.sandbox.clone();
        let blobs = self.blobs.clone();
        let idle = self.idle_dirs.clone();
        let llm = self.llm.clone();
        let reused = idle.lock().expect("work dirs lock").pop();
        let clean = reused.is_some();
        let dir = reused.unwrap_or_else(|| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.work_dir.join(format!("w{n}"))
        });
        // The work dir lives in the data dir; neither is named to users.
        let data_dir = self.work_dir.parent().map(Path::to_path_buf);
        Box::pin(async move {
            let mut left_empty = false;
            let report = run_in_dir(
                node,
                &sandbox,
                &blobs,
                source.as_ref(),
                &dir,
                clean,
                &assignment,
                llm.as_ref(),
                cancel,
                &mut left_empty,
            )
            .await;
            if left_empty {
                // Nothing was written into it (a no-op task): no listing
                // and no hop to a blocking thread.
                idle.lock().expect("work dirs lock").push(dir);
            } else {
                // Emptied off the report's path; back in the pool only once
                // empty (a directory that cannot be emptied is not used again).
                in_background(move || {
                    if empty_run_dirs(&dir) {
                        idle.lock().expect("work dirs lock").push(dir);
                    }
                });
            }
            match &data_dir {
                Some(data_dir) => {
                    let hide = [(data_dir.display().to_string(), "<data dir>")];
                    scrub_result(report, &hide)
                }
                None => report,
            }
        })
    }
}

/// Why a task could not be run here (the task is not at fault).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A blob the task needs is held by no reachable node.
    #[error("blob {0} is not held by any reachable node")]
    MissingBlob(String),
    /// A digest in the task is malformed ([`check_assignment`] reports this
    /// as the task's violation first; this remains for callers that skip it).
    #[error("task names {0:?}, which is not a digest")]
    BadDigest(String),
    /// A path in the task is outside the grammar (as for `BadDigest`).
    #[error("path {0:?} is not a plain relative path")]
    BadPath(String),
    /// The sandbox has no free slot or failed on the host side; retry later.
    #[error("sandbox: {0}")]
    Sandbox(SandboxError),
    /// Reading or writing the work directory or the blob store failed.
    #[error("{0}")]
    Io(String),
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> WorkerError {
    move |error| WorkerError::Io(format!("{context}: {error}"))
}

fn digest(text: &str) -> Result<Digest, WorkerError> {
    text.parse()
        .map_err(|_| WorkerError::BadDigest(text.to_string()))
}

/// `relative` joined under `base`, if it is in the path grammar.
fn contained(base: &Path, relative: &str) -> Result<PathBuf, WorkerError> {
    grammar::join_under(base, relative).map_err(|_| WorkerError::BadPath(excerpt(relative)))
}

/// A blob store failure without the store's host path.
fn blob_error(error: coditect_memory::BlobError) -> WorkerError {
    match error {
        coditect_memory::BlobError::Io { source, .. } => {
            WorkerError::Io(format!("blob store: {source}"))
        }
        other => WorkerError::Io(other.to_string()),
    }
}

/// `text` with each host path of `hide` replaced by what users may see.
fn scrub(text: &str, hide: &[(String, &str)]) -> String {
    hide.iter()
        .filter(|(host, _)| !host.is_empty())
        .fold(text.to_string(), |text, (host, shown)| {
            text.replace(host.as_str(), shown)
        })
}

/// A run's report or error with the host paths of `hide` replaced.
fn scrub_result(
    result: Result<Report, WorkerError>,
    hide: &[(String, &str)],
) -> Result<Report, WorkerError> {
    match result {
        Ok(Report::Violated {
            mut violation,
            kind,
            blame,
        }) => {
            violation.detail = scrub(&violation.detail, hide);
            Ok(Report::Violated {
                violation,
                kind,
                blame,
            })
        }
        Ok(report) => Ok(report),
        Err(WorkerError::Sandbox(error)) => {
            let text = error.to_string();
            let clean = scrub(&text, hide);
            if clean == text {
                Err(WorkerError::Sandbox(error))
            } else {
                Err(WorkerError::Io(format!("sandbox: {clean}")))
            }
        }
        Err(WorkerError::Io(text)) => Err(WorkerError::Io(scrub(&text, hide))),
        Err(other) => Err(other),
    }
}

/// Why `assignment` cannot run on any node, if it cannot: its limits past
/// the hard maxima, a malformed digest, an input or dependency path outside
/// the grammar (or reserved, repeated, or inside another input). This is
/// the task's fault, reported as an `invalid_task` violation; the mission
/// validator refuses all of it at submission, so only a task committed
/// without that check (another build, a bug) gets here.
pub fn check_assignment(assignment: &Assignment) -> Result<(), String> {
    let task = &assignment.task;
    sandbox_limits(&task.limits)
        .validate()
        .map_err(|error| format!("limits: {}", crate::mission::limits_problem(error)))?;
    let is_digest = |text: &str| text.parse::<Digest>().is_ok();
    if !is_digest(&task.module) {
        return Err(format!(
            "module {:?} is not a digest",
            excerpt(&task.module)
        ));
    }
    if let Some(text) = &task.input {
        if !is_digest(text) {
            return Err(format!("input {:?} is not a digest", excerpt(text)));
        }
    }
    if task.args.len() > crate::mission::caps::MAX_ARGS_PER_TASK
        || task
            .args
            .iter()
            .any(|a| a.len() > crate::mission::caps::MAX_ARG_BYTES || a.contains('\0'))
    {
        return Err(format!(
            "args: more than {} arguments, or one longer than {} bytes or with a NUL",
            crate::mission::caps::MAX_ARGS_PER_TASK,
            crate::mission::caps::MAX_ARG_BYTES
        ));
    }
    if task.inputs.len() > MAX_INPUTS_PER_TASK {
        return Err(format!(
            "{} inputs, more than the cap of {MAX_INPUTS_PER_TASK}",
            task.inputs.len()
        ));
    }
    for (path, text) in &task.inputs {
        grammar::check_input_path(path)
            .map_err(|error| format!("input {:?}: {error}", excerpt(path)))?;
        if !is_digest(text) {
            return Err(format!(
                "input {:?} names {:?}, not a digest",
                excerpt(path),
                excerpt(text)
            ));
        }
    }
    grammar::check_input_set(task.inputs.iter().map(|(path, _)| path.as_str()))
        .map_err(|error| error.to_string())?;
    for (dependency, files) in &assignment.deps {
        grammar::check_task_id(dependency)
            .map_err(|error| format!("dependency id {:?}: {error}", excerpt(dependency)))?;
        for (path, text, _) in files {
            grammar::check_path(path).map_err(|error| {
                format!(
                    "output {:?} of dependency `{dependency}`: {error}",
                    excerpt(path)
                )
            })?;
            if !is_digest(text) {
                return Err(format!(
                    "output {:?} of dependency `{dependency}` names {:?}, not a digest",
                    excerpt(path),
                    excerpt(text)
                ));
            }
        }
    }
    Ok(())
}

async fn blob(source: &dyn BlobSource, text: &str) -> Result<Vec<u8>, WorkerError> {
    source
        .fetch(digest(text)?)
        .await
        .map_err(WorkerError::Io)?
        .ok_or_else(|| WorkerError::MissingBlob(text.to_string()))
}

/// A stdout up to this size is hashed in line to see whether it is stored.
const INLINE_STDOUT_BYTES: usize = 4 * 1024;

/// Runs blocking `job` on tokio's blocking pool without waiting for it (in
/// line outside a tokio runtime), as [`blocking`] does.
#[allow(clippy::disallowed_methods)] // production runner only: the simulation has its own
fn in_background(job: impl FnOnce() + Send + 'static) {
    if tokio::runtime::Handle::try_current().is_err() {
        return job();
    }
    // Dropping the handle detaches the job; it still runs to its end.
    drop(tokio::task::spawn_blocking(job));
}

/// Runs blocking work (files, fsyncs, compiling a module) on tokio's
/// blocking pool, so the runtime that serves Raft and the network keeps its
/// threads. The production runner is never simulated, so it may.
#[allow(clippy::disallowed_methods)] // production runner only: the simulation has its own
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WorkerError> {
    // Outside a tokio runtime (unit tests driving the worker by hand) the
    // job runs in line.
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(job());
    }
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|error| WorkerError::Io(format!("a blocking step of the run failed: {error}")))
}

/// Writes blob `text` to `to`, which the guest sees as `shown`.
async fn write_blob(
    source: &dyn BlobSource,
    text: &str,
    to: &Path,
    shown: &str,
) -> Result<(), WorkerError> {
    let bytes = blob(source, text).await?;
    let to = to.to_path_buf();
    let shown = shown.to_string();
    blocking(move || {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating the folder of {shown}")))?;
        }
        std::fs::write(&to, bytes).map_err(io(format!("writing {shown}")))
    })
    .await?
}

/// Empties `dir` (creating it if missing) without removing it.
fn empty_dir(dir: &Path) -> Result<(), WorkerError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(io(dir.display()))?.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(io(path.display()))?;
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io(dir.display()))
        }
        Err(error) => Err(io(dir.display())(error)),
    }
}

/// The directories of work directory `dir` a run sees and leaves things in.
fn run_dirs(dir: &Path) -> [PathBuf; 4] {
    ["input", "output", "workspace", "channel"].map(|name| dir.join(name))
}

/// Empties every run directory of `dir`; whether all of them are empty now.
fn empty_run_dirs(dir: &Path) -> bool {
    run_dirs(dir).iter().all(|dir| empty_dir(dir).is_ok())
}

/// Runs `assignment` on this node (`node`) and reports how it went, in the
/// private work directory `dir` (its `input/` and `output/` are emptied
/// before and after the run; the directories themselves are kept for reuse).
#[allow(clippy::too_many_arguments)] // each is a distinct piece of the run's world
pub async fn run_assignment(
    node: NodeId,
    sandbox: &Sandbox,
    blobs: &BlobStore,
    source: &dyn BlobSource,
    dir: &Path,
    assignment: &Assignment,
    llm: Option<&std::sync::Arc<crate::llm::service::LlmService>>,
    cancel: CancelToken,
) -> Result<Report, WorkerError> {
    let report = run_in_dir(
        node, sandbox, blobs, source, dir, false, assignment, llm, cancel, &mut false,
    )
    .await;
    let dir = dir.to_path_buf();
    let _ = blocking(move || empty_run_dirs(&dir)).await;
    report
}

/// [`run_assignment`] without emptying `dir` afterwards (the caller does,
/// off the task's path, unless it sets `left_empty`: the run wrote nothing
/// into its directories and the guest left `/output` empty), and without
/// emptying it first when `clean` (the caller emptied it after its last run).
#[allow(clippy::too_many_arguments)] // as run_assignment
async fn run_in_dir(
    node: NodeId,
    sandbox: &Sandbox,
    blobs: &BlobStore,
    source: &dyn BlobSource,
    dir: &Path,
    clean: bool,
    assignment: &Assignment,
    llm: Option<&std::sync::Arc<crate::llm::service::LlmService>>,
    cancel: CancelToken,
    left_empty: &mut bool,
) -> Result<Report, WorkerError> {
    let input = dir.join("input");
    let output = dir.join("output");
    let workspace = dir.join("workspace");
    let channel = dir.join("channel");
    // Host paths in any detail become what the guest sees.
    let hide = [
        (input.display().to_string(), "/input"),
        (output.display().to_string(), "/output"),
        (workspace.display().to_string(), "/workspace"),
        (channel.display().to_string(), "/coditect"),
        (dir.display().to_string(), "<work dir>"),
    ];
    if let Err(detail) = check_assignment(assignment) {
        return Ok(Report::violated(
            node,
            assignment.attempt,
            ViolationKind::InvalidTask,
            &detail,
        ));
    }
    let emptied = if clean {
        Ok(Ok(()))
    } else {
        let dirs = run_dirs(dir);
        blocking(move || dirs.iter().try_for_each(|dir| empty_dir(dir))).await
    };
    // A task that requires `llm` on a node that has one is granted it.
    let grant = match llm {
        Some(service)
            if assignment
                .task
                .requires
                .iter()
                .any(|r| r == crate::llm::LLM_CAPABILITY) =>
        {
            Some(std::sync::Arc::new(crate::llm::grant::LlmGrant::new(
                service.clone(),
                blobs.clone(),
                &assignment.task.limits,
            )))
        }
        _ => None,
    };
    let prepared = match emptied.and_then(|emptied| emptied) {
        Ok(()) => {
            run_in(
                node,
                sandbox,
                blobs,
                source,
                dir,
                assignment,
                grant.clone(),
                cancel,
                left_empty,
            )
            .await
        }
        Err(error) => Err(error),
    };
    // The calls the run made go into its history, whatever the outcome.
    let prepared = match (prepared, grant) {
        (Ok(mut report), Some(grant)) => {
            let calls = blocking(move || grant.finish())
                .await?
                .map_err(WorkerError::Io)?;
            match &mut report {
                Report::Succeeded(result) => result.llm_calls = calls,
                Report::Violated { violation, .. } => violation.llm_calls = calls,
            }
            Ok(report)
        }
        (other, _) => other,
    };
    scrub_result(prepared, &hide)
}

/// Runs `assignment` in the work directory `dir`, whose `input/` and
/// `output/` are empty.
#[allow(clippy::too_many_arguments)] // as run_assignment
async fn run_in(
    node: NodeId,
    sandbox: &Sandbox,
    blobs: &BlobStore,
    source: &dyn BlobSource,
    dir: &Path,
    assignment: &Assignment,
    grant: Option<std::sync::Arc<crate::llm::grant::LlmGrant>>,
    cancel: CancelToken,
    left_empty: &mut bool,
) -> Result<Report, WorkerError> {
    let (input, output) = (&dir.join("input"), &dir.join("output"));
    let task = &assignment.task;
    // `check_assignment` has passed, so every path below is in the grammar.
    if let Some(text) = &task.input {
        write_blob(source, text, &input.join("input.txt"), "/input/input.txt").await?;
    }
    for (path, text) in &task.inputs {
        write_blob(
            source,
            text,
            &contained(input, path)?,
            &format!("/input/{path}"),
        )
        .await?;
    }
    for (dependency, files) in &assignment.deps {
        let base = contained(&input.join("deps"), dependency)?;
        std::fs::create_dir_all(&base).map_err(io(format!("creating /input/deps/{dependency}")))?;
        for (path, text, _) in files {
            let shown = format!("/input/deps/{dependency}/{path}");
            write_blob(source, text, &contained(&base, path)?, &shown).await?;
        }
    }
    // An agent retried after a failure learns how the last run failed.
    if let Some((attempt, kind, detail)) = &assignment.previous {
        let agent_dir = input.join(crate::builtin::AGENT_DIR);
        if agent_dir.is_dir() {
            let retry = serde_json::json!({"attempt": attempt, "kind": kind, "detail": detail});
            std::fs::write(agent_dir.join("retry.json"), retry.to_string())
                .map_err(io("writing /input/.coditect/retry.json"))?;
        }
    }
    let violation = |kind: ViolationKind, detail: String| {
        Report::violated(node, assignment.attempt, kind, &detail)
    };
    // The workspace it sees, with its dependencies' changes.
    let seen = match &task.workspace {
        Some(tree) => {
            let at = dir.join("workspace");
            match materialize(blobs, source, tree, &assignment.workspace_changes, &at).await? {
                Ok(seen) => Some(seen),
                Err(detail) => return Ok(violation(ViolationKind::InvalidTask, detail)),
            }
        }
        None => None,
    };
    // A module this node prepared before (in memory, or compiled in the
    // disk cache) is used by digest, without reading and hashing its bytes:
    // the Python runtime is 26 MB.
    let digest: Option<ModuleDigest> = task.module.parse().ok();
    let cached = match digest {
        Some(digest) => match sandbox.prepared_in_memory(&digest) {
            Some(prepared) => Some(prepared),
            None => {
                let sandbox = sandbox.clone();
                blocking(move || sandbox.prepared(&digest)).await?
            }
        },
        None => None,
    };
    let prepared = match cached {
        Some(prepared) => prepared,
        None => {
            let module = blob(source, &task.module).await?;
            // Compiling is CPU-heavy (seconds for a large module the first time).
            let compiler = sandbox.clone();
            match blocking(move || compiler.prepare(&module)).await? {
                Ok(prepared) => prepared,
                Err(SandboxError::InvalidModule(message)) => {
                    return Ok(violation(ViolationKind::InvalidModule, message));
                }
                Err(other) => return Err(WorkerError::Sandbox(other)),
            }
        }
    };
    // The work directory holds /input and /output and no guest sees it:
    // stdout past the sandbox's memory buffer spills there.
    let mut spec =
        coditect_sandbox::TaskSpec::new(input, output, sandbox_limits(&task.limits)).spill_dir(dir);
    spec.args = task.args.clone();
    if seen.is_some() {
        spec.workspace_dir = Some(dir.join("workspace"));
        // Where its changes go, ready to write into.
        let changes = output.join(crate::workspace::CHANGES_DIR);
        std::fs::create_dir_all(&changes).map_err(io(format!(
            "creating /output/{}",
            crate::workspace::CHANGES_DIR
        )))?;
    }
    if crate::python::is_runtime(&task.module) {
        spec.program = crate::python::PROGRAM.into();
        spec.env = crate::python::environment();
    }
    // Whether this run writes into its directories before the guest runs
    // (inputs, a workspace, the model's channel).
    let host_wrote = task.input.is_some()
        || !task.inputs.is_empty()
        || !assignment.deps.is_empty()
        || seen.is_some()
        || grant.is_some();
    if let Some(grant) = grant {
        spec = spec.grant(crate::llm::LLM_CAPABILITY, grant);
        // Python reaches it through the channel (it cannot import host functions).
        let channel = dir.join("channel");
        std::fs::create_dir_all(&channel).map_err(io("creating /coditect"))?;
        spec.channel_dir = Some(channel);
    }
    let outcome = sandbox
        .start(&prepared, spec, cancel)
        .map_err(WorkerError::Sandbox)?
        .await
        .map_err(WorkerError::Sandbox)?;
    // The guest can write only into /output (and the channel, counted above).
    *left_empty = !host_wrote && outcome.output_empty;
    let expect = Expectation {
        exit_code: task.expect.exit_code,
        stdout_contains: task.expect.stdout_contains.clone(),
        files: task.expect.files.clone(),
        ..Expectation::default()
    };
    // Searching a spilled stdout reads its file: off the async runtime.
    let (checked, outcome) = if outcome.stdout_capture.is_spilled() {
        blocking(move || (check(&expect, &outcome), outcome)).await?
    } else {
        (check(&expect, &outcome), outcome)
    };
    let violations = checked.map_err(io("reading back stdout"))?;
    // An agent that ran to its end may say itself what went wrong.
    if outcome.kind == coditect_sandbox::OutcomeKind::Succeeded {
        if let Some((kind, detail)) = agent_violation(output, &outcome) {
            let mut report = violation(kind, detail);
            if kind != ViolationKind::InvalidTask {
                // Its report (a tester's tests.json) says what broke.
                let files: Vec<coditect_sandbox::OutputFile> = outcome
                    .files
                    .iter()
                    .filter(|f| grammar::check_path(&f.path).is_ok())
                    .take(MAX_VIOLATION_OUTPUTS)
                    .cloned()
                    .collect();
                let (blobs, output) = (blobs.clone(), output.to_path_buf());
                let kept = blocking(move || keep_files(&blobs, &output, &files)).await??;
                if let Report::Violated { violation, .. } = &mut report {
                    violation.outputs = kept;
                }
            }
            return Ok(report);
        }
    }
    if let Some(first) = violations.into_iter().next() {
        return Ok(violation(first.kind, first.detail));
    }
    // Dependents see these files under /input/deps/<id>/, so they must be in
    // the same grammar as inputs; a name outside it is the task's doing.
    for file in &outcome.files {
        // The sandbox lists names lossily; U+FFFD marks a name that was not UTF-8.
        let problem = if file.path.contains('\u{FFFD}') {
            Some("the name is not valid UTF-8".to_string())
        } else {
            grammar::check_path(&file.path).err().map(|e| e.to_string())
        };
        if let Some(problem) = problem {
            return Ok(violation(
                ViolationKind::InvalidTask,
                format!("the run left /output/{}: {problem}", excerpt(&file.path)),
            ));
        }
    }
    // Keep what the run produced; peers and dependents fetch it by digest.
    // Reading, hashing and fsyncing run off the async runtime. The outcome
    // goes with them and is dropped there, which deletes its stdout spill
    // file once it is stored.
    let (exit_code, fuel_used, wall_ms) = (outcome.exit_code, outcome.fuel_used, outcome.wall_ms);
    let nothing_to_write = outcome.files.is_empty()
        && !outcome.stdout_capture.is_spilled()
        && outcome.stdout_head_bytes().len() <= INLINE_STDOUT_BYTES
        && blobs.contains(&Digest::of(outcome.stdout_head_bytes()));
    let keep = {
        let output = output.to_path_buf();
        let blobs = blobs.clone();
        move || {
            let kept = keep_outputs(&blobs, &output, &outcome);
            (kept, stdout_head(&outcome.stdout).to_string())
        }
    };
    // Nothing to write (no files, a short stdout already stored, as a no-op
    // task's empty one): in line, without a hop to a blocking thread.
    let (kept, stdout_head) = if nothing_to_write {
        keep()
    } else {
        blocking(keep).await?
    };
    let (outputs, stdout_digest) = kept?;
    let changes = match &seen {
        Some(seen) => match crate::workspace::changes_of_run(seen, &outputs, output) {
            Ok(changes) => changes,
            Err(detail) => return Ok(violation(ViolationKind::InvalidTask, detail)),
        },
        None => Vec::new(),
    };
    Ok(Report::Succeeded(TaskResult {
        node,
        attempt: assignment.attempt,
        exit_code,
        stdout_digest: stdout_digest.to_string(),
        stdout_head,
        outputs,
        fuel_used,
        wall_ms,
        changes,
        llm_calls: Vec::new(),
    }))
}

/// Files of a workspace fetched from peers at a time.
const WORKSPACE_FETCHES: usize = 16;

/// Writes the workspace tree `tree` with `changes` applied under `at`
/// (hard links into the blob store where it holds the file, so only the
/// guest's read-only view shares them) and returns the tree. `Ok(Err)` is
/// the task's fault: a manifest or change that is not a tree.
async fn materialize(
    blobs: &BlobStore,
    source: &dyn BlobSource,
    tree: &str,
    changes: &[FileChange],
    at: &Path,
) -> Result<Result<Tree, String>, WorkerError> {
    use futures::StreamExt as _;
    let manifest = blob(source, tree).await?;
    let mut seen = match Tree::decode(&manifest) {
        Ok(seen) => seen,
        Err(error) => return Ok(Err(format!("workspace {tree}: {error}"))),
    };
    if let Err(error) = seen.apply(changes) {
        return Ok(Err(format!("the dependencies' workspace changes: {error}")));
    }
    let missing = {
        let (blobs, seen, at) = (blobs.clone(), seen.clone(), at.to_path_buf());
        blocking(
            move || -> Result<Vec<(PathBuf, Digest, String)>, WorkerError> {
                let mut missing = Vec::new();
                for (path, entry) in seen.iter() {
                    let to = at.join(path);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(io(format!("creating the folder of /workspace/{path}")))?;
                    }
                    if !blobs.link_to(&entry.digest, &to).map_err(blob_error)? {
                        missing.push((to, entry.digest, path.to_string()));
                    }
                }
                Ok(missing)
            },
        )
        .await??
    };
    let mut writes = futures::stream::iter(missing.into_iter().map(|(to, digest, path)| {
        let digest = digest.to_string();
        async move {
            let shown = format!("/workspace/{path}");
            write_blob(source, &digest, &to, &shown).await
        }
    }))
    .buffer_unordered(WORKSPACE_FETCHES);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(Ok(seen))
}

/// Most files a failed run keeps with its violation (they are replicated
/// by name and digest, so the list stays short).
const MAX_VIOLATION_OUTPUTS: usize = 16;

/// Stores `files` of `output` as blobs, each checked against the digest
/// the sandbox listed: (path, digest, size) of each.
fn keep_files(
    blobs: &BlobStore,
    output: &Path,
    files: &[coditect_sandbox::OutputFile],
) -> Result<Vec<(String, String, u64)>, WorkerError> {
    let mut kept = Vec::with_capacity(files.len());
    for file in files {
        let path = contained(output, &file.path)?;
        let bytes = std::fs::read(&path).map_err(io(format!("reading /output/{}", file.path)))?;
        let stored = blobs.put(&bytes).map_err(blob_error)?;
        if stored.to_string() != file.sha256 {
            return Err(WorkerError::Io(format!(
                "{} changed after the run ended",
                file.path
            )));
        }
        kept.push((file.path.clone(), file.sha256.clone(), file.size));
    }
    Ok(kept)
}

/// Largest `/output/violation.json`, bytes.
const MAX_AGENT_VIOLATION_BYTES: u64 = 64 * 1024;

/// The violation an agent reported in `/output/violation.json`
/// (`{"kind": "tests_failed", "message": "..."}`); a file that is not
/// such an object, or names a kind agents may not report, is the task's
/// `invalid_task`.
fn agent_violation(
    output: &Path,
    outcome: &coditect_sandbox::Outcome,
) -> Option<(ViolationKind, String)> {
    let file = outcome.files.iter().find(|f| f.path == "violation.json")?;
    if file.size > MAX_AGENT_VIOLATION_BYTES {
        return Some((
            ViolationKind::InvalidTask,
            format!(
                "/output/violation.json is larger than {} KiB",
                MAX_AGENT_VIOLATION_BYTES >> 10
            ),
        ));
    }
    let invalid = |why: String| Some((ViolationKind::InvalidTask, why));
    let bytes = match std::fs::read(output.join("violation.json")) {
        Ok(bytes) => bytes,
        Err(error) => return invalid(format!("/output/violation.json: {error}")),
    };
    #[derive(Deserialize)]
    struct Reported {
        kind: String,
        message: String,
    }
    match serde_json::from_slice::<Reported>(&bytes) {
        Ok(reported) => match ViolationKind::reported_by_agent(&reported.kind) {
            Some(kind) => Some((kind, reported.message)),
            None => invalid(format!(
                "/output/violation.json names kind {:?}, which agents cannot report (tests_failed, bad_model_output, llm_unavailable)",
                excerpt(&reported.kind)
            )),
        },
        Err(error) => invalid(format!(
            "/output/violation.json is not {{\"kind\", \"message\"}}: {error}"
        )),
    }
}

/// The first [`STDOUT_HEAD_BYTES`] of `stdout` at most, cut on a character
/// boundary (the sandbox keeps far more than this in memory, so the head of
/// its in-memory part is the head of the whole).
fn stdout_head(stdout: &str) -> &str {
    let mut end = stdout.len().min(STDOUT_HEAD_BYTES);
    while !stdout.is_char_boundary(end) {
        end -= 1;
    }
    &stdout[..end]
}

/// Stores a run's files and stdout as blobs; the files' `(path, digest,
/// size)` and the stdout's digest. Stdout is streamed from the sandbox's
/// memory and spill file into the store, never held whole in memory.
#[allow(clippy::type_complexity)]
fn keep_outputs(
    blobs: &BlobStore,
    output: &Path,
    outcome: &coditect_sandbox::Outcome,
) -> Result<(Vec<(String, String, u64)>, Digest), WorkerError> {
    let outputs = keep_files(blobs, output, &outcome.files)?;
    if !outcome.stdout_capture.is_spilled() {
        // All of it is in memory already (at most the sandbox's buffer).
        let stdout_digest = blobs.put(outcome.stdout_head_bytes()).map_err(blob_error)?;
        return Ok((outputs, stdout_digest));
    }
    let mut writer = blobs.writer().map_err(blob_error)?;
    let mut reader = outcome.stdout_reader();
    let mut chunk = vec![0u8; STDOUT_COPY_BYTES];
    loop {
        let read = reader.read(&mut chunk).map_err(io("reading back stdout"))?;
        if read == 0 {
            break;
        }
        writer.write(&chunk[..read]).map_err(blob_error)?;
    }
    let stdout_digest = writer.finish().map_err(blob_error)?;
    Ok((outputs, stdout_digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Blame;
    use coditect_consensus::mission::{TaskExpect, TaskLimits, TaskSubmission, ViolationRecord};

    struct LocalBlobs(BlobStore);

    impl BlobSource for LocalBlobs {
        fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
            Box::pin(async move { self.0.get(&digest).map_err(|e| e.to_string()) })
        }
    }

    /// Copies /input/input.txt and /input/deps/up/data.txt to stdout and
    /// to /output/copy.txt (via the example agent's WAT, extended).
    const CAT: &str = r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "input.txt")
      (data (i32.const 120) "deps/up/data.txt")
      (data (i32.const 140) "copy.txt")
      ;; Reads file at (ptr,len) under /input into 1024.., writes it to fd `out`.
      (func $copy (param $ptr i32) (param $len i32) (param $out i32)
        (local $fd i32)
        (if (call $open (i32.const 3) (i32.const 0) (local.get $ptr) (local.get $len)
              (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
          (then (unreachable)))
        (local.set $fd (i32.load (i32.const 12)))
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (i32.const 4) (i32.load (i32.const 8)))
        (drop (call $write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func (export "_start")
        (local $copy i32)
        (call $copy (i32.const 100) (i32.const 9) (i32.const 1))
        (call $copy (i32.const 120) (i32.const 16) (i32.const 1))
        (if (call $open (i32.const 4) (i32.const 0) (i32.const 140) (i32.const 8)
              (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12))
          (then (unreachable)))
        (local.set $copy (i32.load (i32.const 12)))
        (call $copy (i32.const 100) (i32.const 9) (local.get $copy))))"#;

    /// Runs `job` as node `node` against the local blob store.
    fn run(
        node: NodeId,
        sandbox: &Sandbox,
        blobs: &BlobStore,
        work: &Path,
        job: &Assignment,
    ) -> Result<Report, WorkerError> {
        let source = LocalBlobs(blobs.clone());
        futures::executor::block_on(run_assignment(
            node,
            sandbox,
            blobs,
            &source,
            work,
            job,
            None,
            CancelToken::new(),
        ))
    }

    fn setup() -> (tempfile::TempDir, Sandbox, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = coditect_sandbox::SandboxConfig::new(dir.path().join("cache"));
        config.max_instances = 4;
        let sandbox = Sandbox::new(config).unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs"), 1 << 20).unwrap();
        (dir, sandbox, blobs)
    }

    fn assignment(blobs: &BlobStore, expect: TaskExpect) -> Assignment {
        let module = blobs.put(CAT.as_bytes()).unwrap().to_string();
        let input = blobs.put(b"hello ").unwrap().to_string();
        let dep = blobs.put(b"world").unwrap().to_string();
        Assignment {
            previous: None,
            mission: "m1".into(),
            task: TaskSubmission {
                spawned_by: None,
                id: "cat".into(),
                module,
                needs: vec!["up".into()],
                requires: vec![],
                priority: 1,
                input: Some(input),
                inputs: vec![],
                limits: TaskLimits {
                    max_llm_calls: coditect_consensus::mission::DEFAULT_MAX_LLM_CALLS,
                    max_tokens: coditect_consensus::mission::DEFAULT_MAX_TOKENS,
                    fuel: 100_000_000,
                    memory_mb: 16,
                    timeout_ms: 10_000,
                    output_mb: 1,
                },
                expect,
                done: false,
                title: None,
                agent: None,
                args: vec![],
                workspace: None,
            },
            attempt: 3,
            deps: vec![("up".into(), vec![("data.txt".into(), dep, 5)])],
            workspace_changes: vec![],
            ready_seq: 0,
            sources: vec![],
            avoid: vec![],
        }
    }

    #[test]
    fn a_task_sees_its_input_and_dependencies_and_its_outputs_become_blobs() {
        let (dir, sandbox, blobs) = setup();
        let expect = TaskExpect {
            exit_code: Some(0),
            stdout_contains: Some("hello world".into()),
            files: vec!["copy.txt".into()],
        };
        let job = assignment(&blobs, expect);
        let report = run(9, &sandbox, &blobs, &dir.path().join("work"), &job).unwrap();
        let Report::Succeeded(result) = report else {
            panic!("{report:?}")
        };
        assert_eq!((result.node, result.attempt), (9, 3));
        assert_eq!(result.stdout_head, "hello world");
        assert_eq!(result.outputs.len(), 1);
        let (path, digest, size) = &result.outputs[0];
        assert_eq!((path.as_str(), *size), ("copy.txt", 6));
        assert_eq!(
            blobs.get(&digest.parse().unwrap()).unwrap().unwrap(),
            b"hello "
        );
        for sub in ["input", "output"] {
            let left = std::fs::read_dir(dir.path().join("work").join(sub))
                .unwrap()
                .count();
            assert_eq!(left, 0, "{sub} is emptied after the run");
        }
    }

    /// Prints `blocks` blocks of 64 KiB, each starting with its index
    /// (little-endian) and otherwise `i % 251` (so not UTF-8), then `MARK`.
    fn printer(blocks: u32) -> String {
        format!(
            r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (data (i32.const 16) "{MARK}")
          (func (export "_start") (local $i i32) (local $k i32)
            (loop $fill
              (i32.store8 (i32.add (i32.const 65536) (local.get $i))
                (i32.rem_u (local.get $i) (i32.const 251)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $fill (i32.lt_u (local.get $i) (i32.const 65536))))
            (loop $more
              (i32.store (i32.const 65536) (local.get $k))
              (i32.store (i32.const 0) (i32.const 65536))
              (i32.store (i32.const 4) (i32.const 65536))
              (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (local.set $k (i32.add (local.get $k) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $k) (i32.const {blocks}))))
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const {len}))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
            len = MARK.len()
        )
    }

    const MARK: &str = "MARK-PAST-THE-MEMORY-BUFFER";

    /// What [`printer`] prints.
    fn printed(blocks: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for block in 0..blocks {
            let start = bytes.len();
            bytes.extend((0..65536u32).map(|i| (i % 251) as u8));
            bytes[start..start + 4].copy_from_slice(&block.to_le_bytes());
        }
        bytes.extend_from_slice(MARK.as_bytes());
        bytes
    }

    #[test]
    fn stdout_of_several_mebibytes_is_stored_whole_and_searched_past_the_buffer() {
        let (dir, sandbox, _) = setup();
        let blobs = BlobStore::open(dir.path().join("big-blobs"), 64 << 20).unwrap();
        let work = dir.path().join("work");
        let blocks = 80; // 5 MiB, far past the sandbox's memory buffer
        let expected = printed(blocks);
        assert!(expected.len() > 4 * coditect_sandbox::STDOUT_MEMORY_BYTES);
        let mut job = assignment(
            &blobs,
            TaskExpect {
                exit_code: Some(0),
                stdout_contains: Some(MARK.into()),
                files: vec![],
            },
        );
        job.task.module = blobs.put(printer(blocks).as_bytes()).unwrap().to_string();
        job.task.limits.output_mb = 8;
        let report = run(1, &sandbox, &blobs, &work, &job).unwrap();
        let Report::Succeeded(result) = report else {
            panic!("the mark past the buffer was not found: {report:?}")
        };
        let stored = blobs
            .get(&result.stdout_digest.parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(stored.len(), expected.len());
        assert!(
            stored == expected,
            "the stored stdout differs from what was printed"
        );
        assert_eq!(
            result.stdout_head,
            stdout_head(&String::from_utf8_lossy(&expected[..STDOUT_HEAD_BYTES]))
        );
        // Nothing of the spill is left in the work directory.
        let mut left: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["channel", "input", "output", "workspace"]);

        // A needle printed nowhere is still a mismatch.
        job.task.expect.stdout_contains = Some(format!("{MARK}!"));
        let (violation, blame) = refused(run(1, &sandbox, &blobs, &work, &job));
        assert_eq!(
            (violation.kind.as_str(), blame),
            ("expectation_mismatch", Blame::Task)
        );
    }

    #[test]
    fn unmet_expectations_and_bad_modules_are_violations_not_errors() {
        let (dir, sandbox, blobs) = setup();
        let expect = TaskExpect {
            exit_code: Some(0),
            stdout_contains: Some("goodbye".into()),
            files: vec![],
        };
        let job = assignment(&blobs, expect);
        let work = dir.path().join("work");
        let report = run(1, &sandbox, &blobs, &work, &job).unwrap();
        match report {
            Report::Violated {
                violation, blame, ..
            } => {
                assert_eq!(violation.kind, "expectation_mismatch");
                assert_eq!((violation.node, violation.attempt), (1, 3));
                assert_eq!(blame, Blame::Task);
            }
            other => panic!("{other:?}"),
        }
        let mut broken = job.clone();
        broken.task.module = blobs.put(b"\0asm garbage").unwrap().to_string();
        let report = run(1, &sandbox, &blobs, &work, &broken).unwrap();
        assert!(
            matches!(report, Report::Violated { ref violation, .. } if violation.kind == "invalid_module"),
            "{report:?}"
        );
    }

    #[test]
    fn missing_blobs_are_errors_of_the_node() {
        let (dir, sandbox, blobs) = setup();
        let work = dir.path().join("work");
        let mut job = assignment(&blobs, TaskExpect::default());
        job.task.input = Some(Digest::of(b"nobody has this").to_string());
        let error = run(1, &sandbox, &blobs, &work, &job).unwrap_err();
        assert!(matches!(error, WorkerError::MissingBlob(_)), "{error}");
    }

    /// The violation a run reported, or a panic.
    fn refused(report: Result<Report, WorkerError>) -> (ViolationRecord, Blame) {
        match report {
            Ok(Report::Violated {
                violation, blame, ..
            }) => (violation, blame),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn inputs_no_worker_can_place_are_violations_blamed_on_the_task() {
        let (dir, sandbox, blobs) = setup();
        let work = dir.path().join("work");
        let file = blobs.put(b"f").unwrap().to_string();
        let long = "n".repeat(5000);
        let input = |paths: &[&str]| -> Vec<(String, String)> {
            paths
                .iter()
                .map(|p| (p.to_string(), file.clone()))
                .collect()
        };
        let base = assignment(&blobs, TaskExpect::default());
        let with = |change: &dyn Fn(&mut Assignment)| {
            let mut job = base.clone();
            change(&mut job);
            job
        };
        let cases = vec![
            (
                with(&|job: &mut Assignment| job.deps = vec![("../escape".into(), vec![])]),
                "dependency id",
            ),
            (
                with(&|job: &mut Assignment| job.task.inputs = input(&["./x"])),
                "`.` component",
            ),
            (
                with(&|job: &mut Assignment| job.task.inputs = input(&["a\0b"])),
                "NUL",
            ),
            (
                with(&|job: &mut Assignment| job.task.inputs = input(&[long.as_str()])),
                "5000 bytes long",
            ),
            (
                with(&|job: &mut Assignment| job.task.inputs = input(&["a", "a/b"])),
                "lies inside",
            ),
            (
                with(&|job: &mut Assignment| job.task.inputs = input(&["input.txt"])),
                "reserved",
            ),
            (
                with(&|job: &mut Assignment| job.deps[0].1[0].0 = "../../etc/passwd".into()),
                "`..` component",
            ),
            (
                with(&|job: &mut Assignment| job.task.module = "not-a-digest".into()),
                "not a digest",
            ),
            (
                with(&|job: &mut Assignment| job.task.limits.fuel = i64::MAX as u64),
                "fuel must be between",
            ),
            (
                with(&|job: &mut Assignment| job.task.limits.timeout_ms = i64::MAX as u64),
                "timeout_ms must be between",
            ),
            (
                with(&|job: &mut Assignment| job.task.limits.output_mb = 1 << 20),
                "output_mb must be between 1 and 1024",
            ),
        ];
        for (job, needle) in cases {
            let (violation, blame) = refused(run(1, &sandbox, &blobs, &work, &job));
            assert_eq!(violation.kind, "invalid_task", "{needle}");
            assert_eq!(blame, Blame::Task, "{needle}: never the node's breaker");
            assert_eq!((violation.node, violation.attempt), (1, 3));
            assert!(
                violation.detail.contains(needle),
                "{needle}: {}",
                violation.detail
            );
            assert!(violation.detail.len() < 300, "{}", violation.detail);
        }
    }

    #[test]
    fn an_output_name_outside_the_grammar_is_the_tasks_violation() {
        let (dir, sandbox, blobs) = setup();
        let writes_colon = r#"(module
          (import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "a:b")
          (func (export "_start")
            (if (call $open (i32.const 4) (i32.const 0) (i32.const 100) (i32.const 3)
                  (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12))
              (then (unreachable)))))"#;
        let mut job = assignment(&blobs, TaskExpect::default());
        job.task.module = blobs.put(writes_colon.as_bytes()).unwrap().to_string();
        let (violation, blame) = refused(run(1, &sandbox, &blobs, &dir.path().join("work"), &job));
        assert_eq!(
            (violation.kind.as_str(), blame),
            ("invalid_task", Blame::Task)
        );
        assert!(
            violation.detail.contains("/output/a:b"),
            "{}",
            violation.detail
        );
        assert!(violation.detail.contains("Windows"), "{}", violation.detail);
    }

    #[test]
    fn errors_name_guest_paths_never_host_paths() {
        let (dir, sandbox, blobs) = setup();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        // A file where the input folder belongs: the node's own problem.
        std::fs::write(work.join("input"), b"in the way").unwrap();
        let job = assignment(&blobs, TaskExpect::default());
        let error = run(1, &sandbox, &blobs, &work, &job)
            .unwrap_err()
            .to_string();
        let host = dir.path().display().to_string();
        assert!(!error.contains(&host), "{error}");
        assert!(error.starts_with("/input"), "{error}");

        /// A source whose errors name a file in the data dir.
        struct Leaky(String);
        impl BlobSource for Leaky {
            fn fetch(&self, _: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
                Box::pin(async move { Err(format!("cannot read {}/blobs/ab/cd", self.0)) })
            }
        }
        let data_dir = dir.path().join("data");
        let runner = SandboxRunner::new(
            std::sync::Arc::new(sandbox),
            blobs.clone(),
            data_dir.join("work"),
        );
        let source = std::sync::Arc::new(Leaky(data_dir.display().to_string()));
        let error = futures::executor::block_on(runner.run(1, source, job, CancelToken::new()))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "cannot read <data dir>/blobs/ab/cd");
    }

    /// Makes the folder `/output/d`, and traps if it cannot (it exists).
    const MKDIR: &str = r#"(module
      (import "wasi_snapshot_preview1" "path_create_directory"
        (func $mkdir (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "d")
      (func (export "_start")
        (if (call $mkdir (i32.const 4) (i32.const 16) (i32.const 1))
          (then (unreachable)))))"#;

    #[test]
    fn a_work_dir_goes_back_to_the_pool_empty_even_after_a_run_that_left_only_a_folder() {
        let (dir, sandbox, blobs) = setup();
        let runner = SandboxRunner::new(
            std::sync::Arc::new(sandbox),
            blobs.clone(),
            dir.path().join("work"),
        );
        let source: std::sync::Arc<dyn BlobSource> = std::sync::Arc::new(LocalBlobs(blobs.clone()));
        let mut job = assignment(&blobs, TaskExpect::default());
        (job.task.input, job.task.inputs, job.deps) = (None, Default::default(), vec![]);
        let run = |job: &Assignment| {
            futures::executor::block_on(runner.run(
                1,
                source.clone(),
                job.clone(),
                CancelToken::new(),
            ))
            .unwrap()
        };
        // A run that writes nothing anywhere returns its directory as it is.
        job.task.module = blobs
            .put(b"(module (func (export \"_start\")))")
            .unwrap()
            .to_string();
        assert!(matches!(run(&job), Report::Succeeded(_)));
        assert_eq!(runner.idle_dirs.lock().unwrap().len(), 1);
        // A folder and no file in /output: no output files, yet not empty.
        job.task.module = blobs.put(MKDIR.as_bytes()).unwrap().to_string();
        for round in 0..3 {
            let report = run(&job);
            assert!(
                matches!(report, Report::Succeeded(ref r) if r.outputs.is_empty()),
                "round {round}: /output/d was left from the run before: {report:?}"
            );
            let idle = runner.idle_dirs.lock().unwrap().clone();
            assert_eq!(idle.len(), 1, "one directory, reused");
            let left = std::fs::read_dir(idle[0].join("output")).unwrap().count();
            assert_eq!(left, 0, "round {round}: emptied before it is used again");
        }
    }
}
