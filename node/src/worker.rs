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

use std::path::{Component, Path, PathBuf};

use coditect_consensus::mission::{TaskLimits, TaskResult, TaskSubmission, ViolationRecord};
use coditect_consensus::NodeId;
use coditect_memory::{BlobStore, Digest};
use coditect_sandbox::{CancelToken, Limits, Sandbox, SandboxError};
use futures::future::BoxFuture;

use serde::{Deserialize, Serialize};

use crate::scheduler::{check, Blame, Expectation, Violation, ViolationKind};

/// Bytes of stdout kept in the replicated result for display; the whole of
/// it is a blob.
const STDOUT_HEAD_BYTES: usize = 4 * 1024;

/// Where blobs come from: this node's store, or a peer.
pub trait BlobSource: Send + Sync {
    /// The bytes of `digest`, verified; `None` if nobody reachable holds it.
    fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
}

impl BlobSource for crate::runtime::Node {
    fn fetch(&self, digest: Digest) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.fetch_blob(&digest).await })
    }
}

/// A dependency's committed outputs: its task id and (path, digest, size) per file.
pub type DependencyOutputs = (String, Vec<(String, String, u64)>);

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
        fuel: limits.fuel,
        memory_mb: limits.memory_mb,
        timeout_ms: limits.timeout_ms,
        output_mb: limits.output_mb,
    }
}

/// A peer that may hold blobs a task needs: (peer id, addresses).
pub type BlobHint = (String, Vec<String>);

/// One task to run, as the leader assigned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Mission id.
    pub mission: String,
    /// The task.
    pub task: TaskSubmission,
    /// The attempt (fencing token) it was assigned at.
    pub attempt: u32,
    /// Each dependency's committed outputs: (task id, [(path, digest, size)]).
    pub deps: Vec<DependencyOutputs>,
    /// When the task became ready (older first among equal priorities).
    pub ready_seq: u64,
    /// Peers to ask first for its blobs: the leader, the dependencies' producers.
    pub sources: Vec<BlobHint>,
    /// Nodes it failed on for node-specific reasons (thieves among them leave it).
    #[serde(default)]
    pub avoid: Vec<NodeId>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// The run met every expectation.
    Succeeded(TaskResult),
    /// It did not; `blame` says whether to avoid this node on retry.
    Violated {
        /// What happened.
        violation: ViolationRecord,
        /// Its category.
        kind: ViolationKind,
        /// Whose fault it was.
        blame: Blame,
    },
}

impl Report {
    /// A violation of `kind` in `attempt` on `node`.
    pub fn violated(node: NodeId, attempt: u32, kind: ViolationKind, detail: &str) -> Report {
        let violation = Violation::new(kind, detail);
        Report::Violated {
            blame: kind.blame(),
            kind,
            violation: ViolationRecord {
                attempt,
                node,
                kind: kind.as_str().to_string(),
                detail: violation.detail,
            },
        }
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
    pub idle_dirs: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
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
        }
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
        let dir = idle
            .lock()
            .expect("work dirs lock")
            .pop()
            .unwrap_or_else(|| {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.work_dir.join(format!("w{n}"))
            });
        Box::pin(async move {
            let report = run_assignment(
                node,
                &sandbox,
                &blobs,
                source.as_ref(),
                &dir,
                &assignment,
                cancel,
            )
            .await;
            idle.lock().expect("work dirs lock").push(dir);
            report
        })
    }
}

/// Why a task could not be run here (the task is not at fault).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A blob the task needs is held by no reachable node.
    #[error("blob {0} is not held by any reachable node")]
    MissingBlob(String),
    /// A digest in the task is malformed.
    #[error("task names {0:?}, which is not a digest")]
    BadDigest(String),
    /// A path in the task would leave its directory.
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

/// A relative path with no `..`, root or prefix, joined under `base`.
fn contained(base: &Path, relative: &str) -> Result<PathBuf, WorkerError> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !plain {
        return Err(WorkerError::BadPath(relative.to_string()));
    }
    Ok(base.join(path))
}

async fn blob(source: &dyn BlobSource, text: &str) -> Result<Vec<u8>, WorkerError> {
    source
        .fetch(digest(text)?)
        .await
        .map_err(WorkerError::Io)?
        .ok_or_else(|| WorkerError::MissingBlob(text.to_string()))
}

async fn write_blob(source: &dyn BlobSource, text: &str, to: &Path) -> Result<(), WorkerError> {
    let bytes = blob(source, text).await?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent.display()))?;
    }
    std::fs::write(to, bytes).map_err(io(to.display()))
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

/// Runs `assignment` on this node (`node`) and reports how it went, in the
/// private work directory `dir` (its `input/` and `output/` are emptied
/// before and after the run; the directories themselves are kept for reuse).
pub async fn run_assignment(
    node: NodeId,
    sandbox: &Sandbox,
    blobs: &BlobStore,
    source: &dyn BlobSource,
    dir: &Path,
    assignment: &Assignment,
    cancel: CancelToken,
) -> Result<Report, WorkerError> {
    let input = dir.join("input");
    let output = dir.join("output");
    empty_dir(&input)?;
    empty_dir(&output)?;
    let result = run_in(
        node, sandbox, blobs, source, &input, &output, assignment, cancel,
    )
    .await;
    let _ = empty_dir(&input);
    let _ = empty_dir(&output);
    result
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces are all distinct
async fn run_in(
    node: NodeId,
    sandbox: &Sandbox,
    blobs: &BlobStore,
    source: &dyn BlobSource,
    input: &Path,
    output: &Path,
    assignment: &Assignment,
    cancel: CancelToken,
) -> Result<Report, WorkerError> {
    let task = &assignment.task;
    if let Some(text) = &task.input {
        write_blob(source, text, &input.join("input.txt")).await?;
    }
    for (path, text) in &task.inputs {
        write_blob(source, text, &contained(input, path)?).await?;
    }
    for (dependency, files) in &assignment.deps {
        let base = contained(&input.join("deps"), dependency)?;
        std::fs::create_dir_all(&base).map_err(io(base.display()))?;
        for (path, text, _) in files {
            write_blob(source, text, &contained(&base, path)?).await?;
        }
    }
    let module = blob(source, &task.module).await?;
    let violation = |kind: ViolationKind, detail: String| {
        Report::violated(node, assignment.attempt, kind, &detail)
    };
    let prepared = match sandbox.prepare(&module) {
        Ok(prepared) => prepared,
        Err(SandboxError::InvalidModule(message)) => {
            return Ok(violation(ViolationKind::InvalidModule, message));
        }
        Err(other) => return Err(WorkerError::Sandbox(other)),
    };
    let spec = coditect_sandbox::TaskSpec::new(input, output, sandbox_limits(&task.limits));
    let outcome = sandbox
        .start(&prepared, spec, cancel)
        .map_err(WorkerError::Sandbox)?
        .await
        .map_err(WorkerError::Sandbox)?;
    let expect = Expectation {
        exit_code: task.expect.exit_code,
        stdout_contains: task.expect.stdout_contains.clone(),
        files: task.expect.files.clone(),
        ..Expectation::default()
    };
    if let Some(first) = check(&expect, &outcome).into_iter().next() {
        return Ok(violation(first.kind, first.detail));
    }
    // Keep what the run produced; peers and dependents fetch it by digest.
    let mut outputs = Vec::with_capacity(outcome.files.len());
    for file in &outcome.files {
        let path = contained(output, &file.path)?;
        let bytes = std::fs::read(&path).map_err(io(path.display()))?;
        let stored = blobs
            .put(&bytes)
            .map_err(|e| WorkerError::Io(e.to_string()))?;
        if stored.to_string() != file.sha256 {
            return Err(WorkerError::Io(format!(
                "{} changed after the run ended",
                file.path
            )));
        }
        outputs.push((file.path.clone(), file.sha256.clone(), file.size));
    }
    let stdout_digest = blobs
        .put(outcome.stdout.as_bytes())
        .map_err(|e| WorkerError::Io(e.to_string()))?;
    let mut head_end = outcome.stdout.len().min(STDOUT_HEAD_BYTES);
    while !outcome.stdout.is_char_boundary(head_end) {
        head_end -= 1;
    }
    Ok(Report::Succeeded(TaskResult {
        node,
        attempt: assignment.attempt,
        exit_code: outcome.exit_code,
        stdout_digest: stdout_digest.to_string(),
        stdout_head: outcome.stdout[..head_end].to_string(),
        outputs,
        fuel_used: outcome.fuel_used,
        wall_ms: outcome.wall_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_consensus::mission::{TaskExpect, TaskLimits};

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
            mission: "m1".into(),
            task: TaskSubmission {
                id: "cat".into(),
                module,
                needs: vec!["up".into()],
                requires: vec![],
                priority: 1,
                input: Some(input),
                inputs: vec![],
                limits: TaskLimits {
                    fuel: 100_000_000,
                    memory_mb: 16,
                    timeout_ms: 10_000,
                    output_mb: 1,
                },
                expect,
                done: false,
            },
            attempt: 3,
            deps: vec![("up".into(), vec![("data.txt".into(), dep, 5)])],
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
    fn missing_blobs_and_escaping_paths_are_errors_of_the_node() {
        let (dir, sandbox, blobs) = setup();
        let work = dir.path().join("work");
        let mut job = assignment(&blobs, TaskExpect::default());
        job.task.input = Some(Digest::of(b"nobody has this").to_string());
        let error = run(1, &sandbox, &blobs, &work, &job).unwrap_err();
        assert!(matches!(error, WorkerError::MissingBlob(_)), "{error}");
        let mut job = assignment(&blobs, TaskExpect::default());
        job.deps = vec![("../escape".into(), vec![])];
        let error = run(1, &sandbox, &blobs, &work, &job).unwrap_err();
        assert!(matches!(error, WorkerError::BadPath(_)), "{error}");
    }
}
