//! Replicated missions and tasks, and the pure transitions between task
//! states.
//!
//! Every ownership change is a compare-and-set on the task's `attempt`, the
//! fencing token: the leader proposes a change with the attempt it read, and
//! apply refuses it if the task moved on meanwhile. So a task never has two
//! live owners, and a result is committed exactly once even when execution
//! happened twice (a stale owner's result carries a stale attempt).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use coditect_memory::tree::FileChange;

use crate::types::NodeId;

/// A task's state, as interfaces.md names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    /// Dependencies not done.
    Pending,
    /// Placeable (or waiting out a retry backoff).
    Ready,
    /// In a node's queue.
    Assigned,
    /// Running on its owner.
    Running,
    /// Result committed.
    Succeeded,
    /// Out of attempts.
    Failed,
    /// A dependency failed.
    Blocked,
    /// The mission was cancelled.
    Cancelled,
}

// `TaskState::ALL` is indexed by the discriminant: the last one closes it.
const _: () = assert!(TaskState::Cancelled as usize + 1 == TaskState::COUNT);

impl TaskState {
    /// How many states there are.
    pub const COUNT: usize = 8;
    /// Every state, in declaration order (`ALL[s as usize] == s`).
    pub const ALL: [TaskState; TaskState::COUNT] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Blocked,
        TaskState::Cancelled,
    ];

    /// Whether the task will not change again (until a retry of the mission).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Blocked | TaskState::Cancelled
        )
    }
}

/// A mission's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissionState {
    /// Some task can still run.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Nothing else can run and some task failed or is blocked.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

/// Limits of one task (see interfaces.md `[task.limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Deterministic CPU budget.
    pub fuel: u64,
    /// Linear memory cap, MiB.
    pub memory_mb: u64,
    /// Wall-clock timeout, ms.
    pub timeout_ms: u64,
    /// Cap of stdout, stderr and /output each, MiB.
    pub output_mb: u64,
    /// Language-model calls the task may make.
    #[serde(default = "default_llm_calls")]
    pub max_llm_calls: u32,
    /// Language-model tokens (prompt and completion) the task may spend.
    #[serde(default = "default_llm_tokens")]
    pub max_tokens: u64,
}

/// The default of [`TaskLimits::max_llm_calls`].
pub const DEFAULT_MAX_LLM_CALLS: u32 = 8;

/// The default of [`TaskLimits::max_tokens`].
pub const DEFAULT_MAX_TOKENS: u64 = 200_000;

fn default_llm_calls() -> u32 {
    DEFAULT_MAX_LLM_CALLS
}

fn default_llm_tokens() -> u64 {
    DEFAULT_MAX_TOKENS
}

/// One language-model call a task made, for audit: what was asked and
/// answered are blobs (the prompt as the JSON list of messages, the
/// completion as its text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The model that answered (or was asked).
    pub model: String,
    /// What the agent said the call was for.
    pub purpose: Option<String>,
    /// Digest of the prompt (the messages as JSON).
    pub prompt: String,
    /// Digest of the completion text, when there was one.
    pub completion: Option<String>,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// From the agent's call to its answer, waits and retries included, ms.
    pub latency_ms: u64,
    /// HTTP requests made for it.
    pub tries: u32,
    /// `ok`, or the error kind and message (`unavailable: ...`).
    pub outcome: String,
}

/// What the task's author expects of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExpect {
    /// Exit code expected (`None`: any).
    pub exit_code: Option<i32>,
    /// A string stdout must contain.
    pub stdout_contains: Option<String>,
    /// Files the run must leave under /output.
    pub files: Vec<String>,
}

/// A task as submitted: everything a worker needs, by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSubmission {
    /// Id, unique in the mission.
    pub id: String,
    /// `sha256:<hex>` of the wasm module.
    pub module: String,
    /// Ids of tasks that must succeed first.
    pub needs: Vec<String>,
    /// Capability tags a node must offer.
    pub requires: Vec<String>,
    /// 0 (P0, most urgent) to 3.
    pub priority: u8,
    /// Digest of the text the guest reads as /input/input.txt.
    pub input: Option<String>,
    /// Files copied under /input: (relative path, digest).
    pub inputs: Vec<(String, String)>,
    /// Limits.
    pub limits: TaskLimits,
    /// Expectations.
    pub expect: TaskExpect,
    /// Already done when submitted (a checked markdown box).
    pub done: bool,
    /// Human title (a markdown task's text without its id), for display.
    #[serde(default)]
    pub title: Option<String>,
    /// The agent kind a markdown task was routed to, for display.
    #[serde(default)]
    pub agent: Option<String>,
    /// The guest's arguments after its program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// Digest of the mission's workspace tree (the same for every task of
    /// a mission), which the guest sees at /workspace.
    #[serde(default)]
    pub workspace: Option<String>,
    /// The task whose failure added this one (a fix round), if any.
    #[serde(default)]
    pub spawned_by: Option<String>,
}

/// One recorded violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationRecord {
    /// The attempt it happened in.
    pub attempt: u32,
    /// Where it ran.
    pub node: NodeId,
    /// Category (trap, timeout, out_of_fuel, memory_limit, expectation_mismatch, lost_node, ...).
    pub kind: String,
    /// One line of detail.
    pub detail: String,
    /// Files the failed run left that explain it (an agent's report, such
    /// as a tester's `tests.json`): (path under /output, digest, size).
    #[serde(default)]
    pub outputs: Vec<(String, String, u64)>,
    /// The language-model calls the failed run made.
    #[serde(default)]
    pub llm_calls: Vec<LlmCall>,
}

/// A committed result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Who ran it.
    pub node: NodeId,
    /// Which attempt.
    pub attempt: u32,
    /// Guest exit code.
    pub exit_code: Option<i32>,
    /// Digest of the full stdout.
    pub stdout_digest: String,
    /// The first bytes of stdout, for display.
    pub stdout_head: String,
    /// Files produced: (path under /output, digest, size).
    pub outputs: Vec<(String, String, u64)>,
    /// Fuel used.
    pub fuel_used: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// What the run changed in the workspace it saw, sorted by path.
    #[serde(default)]
    pub changes: Vec<FileChange>,
    /// The language-model calls the run made.
    #[serde(default)]
    pub llm_calls: Vec<LlmCall>,
}

/// A task in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// What was submitted.
    pub spec: TaskSubmission,
    /// Current state.
    pub state: TaskState,
    /// Owner while assigned or running.
    pub owner: Option<NodeId>,
    /// Fencing token: bumped by every assignment and steal.
    pub attempt: u32,
    /// Runs that ended (successfully or not); bounded by the retry policy.
    pub runs: u32,
    /// A retry may not be placed before this time (leader clock, ms).
    pub not_before_ms: u64,
    /// Why the task is not running, when it is not.
    pub reason: Option<String>,
    /// Every violation, in order.
    pub violations: Vec<ViolationRecord>,
    /// The committed result.
    pub result: Option<TaskResult>,
    /// How many results were committed (must never exceed 1).
    pub results_committed: u32,
    /// Order in which tasks became ready (older first).
    pub ready_seq: u64,
    /// The task that took over this failed one's place (a fix round's
    /// test): the mission no longer waits on this one.
    #[serde(default)]
    pub superseded_by: Option<String>,
}

impl TaskRecord {
    /// A task that has not run yet, waiting on its dependencies.
    pub fn pending(spec: TaskSubmission) -> Self {
        TaskRecord {
            spec,
            state: TaskState::Pending,
            owner: None,
            attempt: 0,
            runs: 0,
            not_before_ms: 0,
            reason: None,
            violations: Vec::new(),
            result: None,
            results_committed: 0,
            ready_seq: 0,
            superseded_by: None,
        }
    }

    /// What a reader of the task's files gets: the committed result, or
    /// else the files the last failed run kept to explain itself (as a
    /// result with no stdout, `stdout_digest` empty).
    pub fn files(&self) -> Option<TaskResult> {
        if let Some(result) = &self.result {
            return Some(result.clone());
        }
        let last = self.violations.last().filter(|v| !v.outputs.is_empty())?;
        Some(TaskResult {
            node: last.node,
            attempt: last.attempt,
            exit_code: None,
            stdout_digest: String::new(),
            stdout_head: String::new(),
            outputs: last.outputs.clone(),
            fuel_used: 0,
            wall_ms: 0,
            changes: Vec::new(),
            llm_calls: last.llm_calls.clone(),
        })
    }
}

/// Ids of tasks changed since storage last wrote them. Local bookkeeping,
/// never replicated and never part of equality: storage writes one key per
/// changed task instead of the whole mission.
#[derive(Clone, Debug, Default)]
pub struct Dirty(pub std::collections::BTreeSet<String>);

impl PartialEq for Dirty {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Dirty {}

/// Data derived from a mission's tasks and cached (never replicated, never
/// part of equality): the reverse dependency index, and a task last seen
/// open (the witness that the mission is still running).
#[derive(Clone, Debug, Default)]
pub struct Derived {
    /// Which tasks need each task, built on first use.
    pub dependents: Option<BTreeMap<String, Vec<String>>>,
    /// A task that was open (not terminal, not superseded) when the
    /// mission's state was last decided.
    pub open: Option<String>,
    /// Which tasks are ready and which are held, kept current as changes
    /// are applied (see [`MissionRecord::take_dirty`]); `None` until the
    /// first change after the mission was created or loaded.
    pub index: Option<TaskIndex>,
}

/// The tasks of a mission a scheduler looks at, by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskIndex {
    /// Tasks in state `Ready`, most urgent first: (priority, ready
    /// sequence, id), the order placement serves them in.
    pub ready: std::collections::BTreeSet<(u8, u64, String)>,
    /// Each ready task's key in `ready`.
    ready_keys: BTreeMap<String, (u8, u64)>,
    /// Tasks in state `Assigned` or `Running` (they have an owner).
    pub held: std::collections::BTreeSet<String>,
    /// Each task's state as counted in `counts`.
    states: std::collections::HashMap<String, TaskState>,
    /// How many tasks are in each state (by `TaskState as usize`): a
    /// mission's summary without a pass over its tasks.
    counts: [u64; TaskState::COUNT],
}

impl TaskIndex {
    /// How many tasks are in each state, the states with none left out.
    pub fn counts(&self) -> impl Iterator<Item = (TaskState, u64)> + '_ {
        TaskState::ALL
            .iter()
            .map(|state| (*state, self.counts[*state as usize]))
            .filter(|(_, count)| *count > 0)
    }

    /// How many tasks the index counts.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether it counts no task.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn place(&mut self, id: &str, task: Option<&TaskRecord>) {
        let before = match task {
            Some(task) => match self.states.get_mut(id) {
                Some(state) => Some(std::mem::replace(state, task.state)),
                None => self.states.insert(id.to_string(), task.state),
            },
            None => self.states.remove(id),
        };
        if let Some(before) = before {
            self.counts[before as usize] -= 1;
        }
        if let Some(task) = task {
            self.counts[task.state as usize] += 1;
        }
        // The id's strings leaving one set serve the set it enters: the
        // common steps (ready to assigned, assigned to finished) allocate
        // nothing.
        let mut spares: [Option<String>; 2] = [None, None];
        if let Some((owned, (priority, seq))) = self.ready_keys.remove_entry(id) {
            let key = (priority, seq, owned);
            spares[0] = self.ready.take(&key).map(|(_, _, taken)| taken);
            spares[1] = Some(key.2);
        }
        let holds = matches!(
            task.map(|t| t.state),
            Some(TaskState::Assigned | TaskState::Running)
        );
        if !holds {
            self.held.remove(id);
        }
        let mut owned = || {
            spares
                .iter_mut()
                .find_map(Option::take)
                .unwrap_or_else(|| id.to_string())
        };
        match task.map(|t| (t.state, t)) {
            Some((TaskState::Ready, task)) => {
                let key = (task.spec.priority, task.ready_seq);
                self.ready_keys.insert(owned(), key);
                self.ready.insert((key.0, key.1, owned()));
            }
            Some((TaskState::Assigned | TaskState::Running, _)) if !self.held.contains(id) => {
                self.held.insert(owned());
            }
            _ => {}
        }
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

/// A mission in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionRecord {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// State.
    pub state: MissionState,
    /// Tasks by id.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// When it was submitted (leader clock, ms).
    pub submitted_ms: u64,
    /// Tasks changed since storage last wrote them.
    #[serde(skip)]
    pub dirty: Dirty,
    /// Which tasks need each task, built on first use.
    #[serde(skip)]
    pub derived: Derived,
    /// Set once the finished mission was compacted: its tasks are gone and
    /// this is how many ended in each state (lower-case state names).
    pub summary: Option<BTreeMap<String, u64>>,
    /// How many fix rounds a failed test may start (`None`: the default, 2).
    #[serde(default)]
    pub max_fix_rounds: Option<u32>,
    /// The member that received the submission and holds its blobs
    /// (`None`: the leader that committed it).
    #[serde(default)]
    pub origin: Option<NodeId>,
    /// Local count of applied changes to this mission (never replicated,
    /// never part of equality): readers rebuild views only when it moves.
    #[serde(skip)]
    pub revision: Revision,
}

/// A local change counter; see [`MissionRecord::revision`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Revision(pub u64);

impl PartialEq for Revision {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Revision {}

/// Why a mission transition was refused.
pub type Refusal = String;

/// Tasks one task may add at once (a fix round adds two, a planner its
/// fragment).
pub const MAX_SPAWN: usize = 32;

/// Tasks a mission may gain after its submission.
pub const MAX_SPAWNED: usize = 256;

impl MissionRecord {
    /// A new mission; tasks whose dependencies are all done start ready.
    pub fn new(
        id: String,
        name: String,
        tasks: Vec<TaskSubmission>,
        submitted_ms: u64,
        next_seq: &mut u64,
    ) -> Self {
        let tasks: BTreeMap<String, TaskRecord> = tasks
            .into_iter()
            .map(|spec| {
                let state = if spec.done {
                    TaskState::Succeeded
                } else {
                    TaskState::Pending
                };
                let mut record = TaskRecord::pending(spec);
                record.state = state;
                (record.spec.id.clone(), record)
            })
            .collect();
        let dirty = Dirty(tasks.keys().cloned().collect());
        let mut mission = MissionRecord {
            id,
            name,
            state: MissionState::Running,
            tasks,
            submitted_ms,
            dirty,
            derived: Derived::default(),
            summary: None,
            max_fix_rounds: None,
            origin: None,
            revision: Revision::default(),
        };
        mission.settle(next_seq);
        mission
    }

    /// Moves pending tasks whose dependencies all succeeded to ready, blocks
    /// the dependents of failed or blocked tasks, and sets the mission state.
    /// Looks at every task; [`Self::settle_after`] looks only downstream of one.
    pub fn settle(&mut self, next_seq: &mut u64) {
        if self.state == MissionState::Cancelled {
            return;
        }
        loop {
            let mut changed = false;
            let pending: Vec<String> = self
                .tasks
                .iter()
                .filter(|(_, task)| task.state == TaskState::Pending)
                .map(|(id, _)| id.clone())
                .collect();
            for id in pending {
                changed |= self.evaluate(&id, next_seq);
            }
            if !changed {
                break;
            }
        }
        self.update_state();
    }

    /// Settles after `task` ended: only its (transitive) dependents can
    /// change, so a completion costs its fan-out, not the mission's size.
    fn settle_after(&mut self, task: &str, next_seq: &mut u64) {
        if self.state == MissionState::Cancelled {
            return;
        }
        let mut work: std::collections::VecDeque<String> = self.dependents_of(task).into();
        while let Some(id) = work.pop_front() {
            if self.tasks.get(&id).map(|t| t.state) != Some(TaskState::Pending) {
                continue;
            }
            if self.evaluate(&id, next_seq) && self.tasks[&id].state == TaskState::Blocked {
                work.extend(self.dependents_of(&id));
            }
        }
        self.update_state();
    }

    /// The tasks that need `task`, in id order (an index built on first use).
    fn dependents_of(&mut self, task: &str) -> Vec<String> {
        let tasks = &self.tasks;
        let index = self.derived.dependents.get_or_insert_with(|| {
            let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, record) in tasks {
                for need in &record.spec.needs {
                    let list = index.entry(need.clone()).or_default();
                    if !list.contains(id) {
                        list.push(id.clone());
                    }
                }
            }
            index
        });
        index.get(task).cloned().unwrap_or_default()
    }

    /// Re-evaluates pending task `id` against its dependencies; returns
    /// whether its state changed (to ready or blocked).
    fn evaluate(&mut self, id: &str, next_seq: &mut u64) -> bool {
        let task = &self.tasks[id];
        let mut all_done = true;
        let mut blocked_by = None;
        for need in &task.spec.needs {
            match self.tasks.get(need).map(|t| t.state) {
                Some(TaskState::Succeeded) => {}
                Some(TaskState::Failed | TaskState::Blocked | TaskState::Cancelled) => {
                    blocked_by = Some(need.clone());
                    all_done = false;
                    break;
                }
                _ => all_done = false,
            }
        }
        let task = self.tasks.get_mut(id).expect("task exists");
        let changed = if let Some(need) = blocked_by {
            task.state = TaskState::Blocked;
            task.reason = Some(format!("blocked by `{need}`"));
            true
        } else if all_done {
            task.state = TaskState::Ready;
            task.reason = None;
            task.ready_seq = *next_seq;
            *next_seq += 1;
            true
        } else {
            let waiting: Vec<&str> = task.spec.needs.iter().map(String::as_str).collect();
            let reason = Some(format!("waiting for {}", waiting.join(", ")));
            if task.reason == reason {
                return false;
            }
            task.reason = reason;
            false
        };
        self.dirty.0.insert(id.to_string());
        changed
    }

    /// The tasks changed since the last call (for storage to write), with
    /// the ready/held index brought up to date for them (built from every
    /// task the first time).
    pub fn take_dirty(&mut self) -> std::collections::BTreeSet<String> {
        let dirty = std::mem::take(&mut self.dirty.0);
        for id in &dirty {
            if let Some(task) = self.tasks.get(id) {
                // One live owner: a task has an owner exactly while it is
                // queued or running there. On in release builds: a replica
                // that broke it must stop, not spread it.
                assert_eq!(
                    task.owner.is_some(),
                    matches!(task.state, TaskState::Assigned | TaskState::Running),
                    "task `{id}` of mission {} is {:?} with owner {:?}",
                    self.id,
                    task.state,
                    task.owner
                );
            }
        }
        match &mut self.derived.index {
            Some(index) => {
                for id in &dirty {
                    index.place(id, self.tasks.get(id));
                }
            }
            None => {
                let mut index = TaskIndex::default();
                for (id, task) in &self.tasks {
                    index.place(id, Some(task));
                }
                self.derived.index = Some(index);
            }
        }
        dirty
    }

    /// The ready/held index, once built (see [`MissionRecord::take_dirty`]).
    pub fn index(&self) -> Option<&TaskIndex> {
        self.derived.index.as_ref()
    }

    /// The mission's state from its tasks'. While any task is open (not
    /// terminal, not superseded) the mission runs; the last open task seen
    /// is remembered and the search for the next one starts after it, so a
    /// mission whose tasks finish in any order costs about a lookup per
    /// change instead of a scan of every finished task.
    fn update_state(&mut self) {
        use std::ops::Bound;
        if self.state == MissionState::Cancelled {
            return;
        }
        let open = |task: &TaskRecord| !task.state.is_terminal() && task.superseded_by.is_none();
        let witness = self.derived.open.take();
        let found = match &witness {
            Some(from) if self.tasks.get(from).is_some_and(open) => Some(from.clone()),
            Some(from) => self
                .tasks
                .range::<str, _>((Bound::Excluded(from.as_str()), Bound::Unbounded))
                .chain(
                    self.tasks
                        .range::<str, _>((Bound::Unbounded, Bound::Included(from.as_str()))),
                )
                .find(|(_, task)| open(task))
                .map(|(id, _)| id.clone()),
            None => self
                .tasks
                .iter()
                .find(|(_, task)| open(task))
                .map(|(id, _)| id.clone()),
        };
        if let Some(id) = found {
            self.derived.open = Some(id);
            self.state = MissionState::Running;
            return;
        }
        self.state = if self
            .tasks
            .values()
            .all(|t| t.state == TaskState::Succeeded || t.superseded_by.is_some())
        {
            MissionState::Succeeded
        } else if self.tasks.values().all(|t| t.state.is_terminal()) {
            MissionState::Failed
        } else {
            MissionState::Running
        };
    }

    fn task_mut(&mut self, task: &str) -> Result<&mut TaskRecord, Refusal> {
        let mission = self.id.clone();
        self.tasks
            .get_mut(task)
            .ok_or_else(|| format!("mission {mission} has no task `{task}`"))
    }

    fn check_running(&self) -> Result<(), Refusal> {
        match self.state {
            MissionState::Running => Ok(()),
            other => Err(format!("mission {} is {other:?}", self.id)),
        }
    }

    /// Ready -> assigned to `node`, if the task is still at `attempt`.
    pub fn assign(
        &mut self,
        task: &str,
        node: NodeId,
        attempt: u32,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.check_running()?;
        let record = self.task_mut(task)?;
        if record.state != TaskState::Ready || record.attempt != attempt || record.owner.is_some() {
            return Err(format!(
                "task `{task}` is {:?} at attempt {}, not ready at attempt {attempt}",
                record.state, record.attempt
            ));
        }
        if now_ms < record.not_before_ms {
            return Err(format!(
                "task `{task}` backs off until {} ms",
                record.not_before_ms
            ));
        }
        record.state = TaskState::Assigned;
        record.owner = Some(node);
        record.attempt += 1;
        record.reason = None;
        self.dirty.0.insert(task.to_string());
        Ok(())
    }

    /// A queued (not started) task moves from `from` to `to`.
    pub fn steal(
        &mut self,
        task: &str,
        from: NodeId,
        to: NodeId,
        attempt: u32,
    ) -> Result<(), Refusal> {
        self.check_running()?;
        let record = self.task_mut(task)?;
        if record.state != TaskState::Assigned
            || record.owner != Some(from)
            || record.attempt != attempt
        {
            return Err(format!(
                "task `{task}` is not queued on node {from} at attempt {attempt}"
            ));
        }
        record.owner = Some(to);
        record.attempt += 1;
        self.dirty.0.insert(task.to_string());
        Ok(())
    }

    /// Assigned -> running, by its owner at the current attempt.
    pub fn start(&mut self, task: &str, node: NodeId, attempt: u32) -> Result<(), Refusal> {
        self.check_running()?;
        let record = self.task_mut(task)?;
        if record.state != TaskState::Assigned
            || record.owner != Some(node)
            || record.attempt != attempt
        {
            return Err(format!(
                "task `{task}` is not queued on node {node} at attempt {attempt}"
            ));
        }
        record.state = TaskState::Running;
        self.dirty.0.insert(task.to_string());
        Ok(())
    }

    /// Commits the result of the current attempt's owner; anything else is refused.
    pub fn complete(
        &mut self,
        task: &str,
        result: TaskResult,
        next_seq: &mut u64,
    ) -> Result<(), Refusal> {
        self.complete_and_spawn(task, result, Vec::new(), next_seq)
    }

    /// Like [`Self::complete`]; with `spawn`, the task's own subtasks (a
    /// planner's mission fragment) join the mission: they may need the task
    /// and each other, and the task's dependents wait for them too (for the
    /// ones no other subtask needs). Subtasks that do not fit (see
    /// [`Self::check_spawn`]) fail the task instead, with that reason.
    pub fn complete_and_spawn(
        &mut self,
        task: &str,
        result: TaskResult,
        spawn: Vec<TaskSubmission>,
        next_seq: &mut u64,
    ) -> Result<(), Refusal> {
        self.check_running()?;
        let record = self.task_mut(task)?;
        let live = matches!(record.state, TaskState::Assigned | TaskState::Running);
        if !live || record.owner != Some(result.node) || record.attempt != result.attempt {
            return Err(format!(
                "stale result for `{task}` from node {} at attempt {} (task is {:?}, attempt {})",
                result.node, result.attempt, record.state, record.attempt
            ));
        }
        if let Some((path, other)) = self.conflict(task, &result.changes) {
            let violation = ViolationRecord {
                attempt: result.attempt,
                node: result.node,
                kind: "conflict".into(),
                detail: format!(
                    "`{path}` was also changed by task `{other}`, and neither task depends on the other"
                ),
                outputs: Vec::new(),
                llm_calls: Vec::new(),
            };
            let record = self.task_mut(task)?;
            record.owner = None;
            record.runs += 1;
            record.state = TaskState::Failed;
            record.reason = Some(format!("conflict: {}", violation.detail));
            record.violations.push(violation);
            self.dirty.0.insert(task.to_string());
            self.settle_after(task, next_seq);
            return Ok(());
        }
        if !spawn.is_empty() {
            if let Err(why) = self.check_spawn(task, &spawn, true) {
                let violation = ViolationRecord {
                    attempt: result.attempt,
                    node: result.node,
                    kind: "invalid_task".into(),
                    detail: format!("its subtasks cannot join the mission: {why}"),
                    outputs: result.outputs.clone(),
                    llm_calls: result.llm_calls.clone(),
                };
                let record = self.task_mut(task)?;
                record.owner = None;
                record.runs += 1;
                record.state = TaskState::Failed;
                record.reason = Some(format!("invalid_task: {}", violation.detail));
                record.violations.push(violation);
                self.dirty.0.insert(task.to_string());
                self.settle_after(task, next_seq);
                return Ok(());
            }
        }
        let record = self.task_mut(task)?;
        record.state = TaskState::Succeeded;
        record.owner = None;
        record.runs += 1;
        record.results_committed += 1;
        // The invariant every fencing check above exists for; on in release
        // builds too (a replica that broke it must stop, not spread it).
        assert_eq!(
            record.results_committed, 1,
            "task `{task}` would commit a second result"
        );
        record.result = Some(result);
        self.dirty.0.insert(task.to_string());
        if !spawn.is_empty() {
            self.expand(task, spawn, next_seq);
        }
        self.settle_after(task, next_seq);
        Ok(())
    }

    /// Adds a succeeded task's checked subtasks; its dependents need the
    /// subtasks' sinks as well.
    fn expand(&mut self, task: &str, spawn: Vec<TaskSubmission>, next_seq: &mut u64) {
        let needed: std::collections::BTreeSet<&str> = spawn
            .iter()
            .flat_map(|t| t.needs.iter().map(String::as_str))
            .collect();
        let sinks: Vec<String> = spawn
            .iter()
            .filter(|t| !needed.contains(t.id.as_str()))
            .map(|t| t.id.clone())
            .collect();
        for id in self.dependents_of(task) {
            if let Some(record) = self.tasks.get_mut(&id) {
                for sink in &sinks {
                    if !record.spec.needs.contains(sink) {
                        record.spec.needs.push(sink.clone());
                    }
                }
                self.dirty.0.insert(id);
            }
        }
        self.insert_pending(spawn, next_seq);
    }

    /// Inserts checked new tasks as pending and evaluates them.
    fn insert_pending(&mut self, spawn: Vec<TaskSubmission>, next_seq: &mut u64) {
        let mut added = Vec::new();
        for spec in spawn {
            let id = spec.id.clone();
            self.tasks.insert(id.clone(), TaskRecord::pending(spec));
            self.dirty.0.insert(id.clone());
            added.push(id);
        }
        self.derived = Derived::default();
        for id in added {
            if self.tasks.get(&id).map(|t| t.state) == Some(TaskState::Pending) {
                self.evaluate(&id, next_seq);
            }
        }
    }

    /// The first path `changes` (of `task`) changes differently from a
    /// succeeded task that is neither an ancestor nor a dependent of `task`.
    fn conflict(&self, task: &str, changes: &[FileChange]) -> Option<(String, String)> {
        if changes.is_empty() {
            return None;
        }
        let needs_of = |id: &str| self.tasks.get(id).map(|t| t.spec.needs.as_slice());
        let before = crate::workspace::ancestors(needs_of, task);
        let mut found: Option<(String, String)> = None;
        for (id, record) in &self.tasks {
            let Some(result) = record.result.as_ref() else {
                continue;
            };
            if id == task || before.contains(id) || result.changes.is_empty() {
                continue;
            }
            let Some((path, other)) =
                crate::workspace::first_conflict(changes, [(id.as_str(), &result.changes[..])])
            else {
                continue;
            };
            // Rare (only overlapping changes get here): is it a dependent?
            if crate::workspace::ancestors(needs_of, id).contains(task) {
                continue;
            }
            if found.as_ref().is_none_or(|(first, _)| path < *first) {
                found = Some((path, other));
            }
        }
        found
    }

    /// The ids of the tasks in dependency order.
    fn dependency_order(&self) -> Vec<&str> {
        let graph: BTreeMap<&str, &[String]> = self
            .tasks
            .iter()
            .map(|(id, record)| (id.as_str(), record.spec.needs.as_slice()))
            .collect();
        crate::workspace::topological(&graph)
    }

    /// What `task` sees of the workspace beyond the submitted tree: the net
    /// changes of its dependencies, applied in dependency order, with the
    /// task that made each (see [`crate::workspace::collapse`]).
    pub fn workspace_view(&self, task: &str) -> Vec<(FileChange, String)> {
        let needs_of = |id: &str| self.tasks.get(id).map(|t| t.spec.needs.as_slice());
        let before = crate::workspace::ancestors(needs_of, task);
        // Only the ancestors are ordered: the leader does this per
        // assignment, so it must not cost the whole mission.
        let graph: BTreeMap<&str, &[String]> = before
            .iter()
            .filter_map(|id| Some((id.as_str(), self.tasks.get(id)?.spec.needs.as_slice())))
            .collect();
        let order = crate::workspace::topological(&graph);
        crate::workspace::collapse(order.into_iter().filter_map(|id| {
            let result = self.tasks[id].result.as_ref()?;
            Some((id, &result.changes[..]))
        }))
    }

    /// The final workspace beyond the submitted tree: the net changes of
    /// every succeeded task in dependency order, with who made each.
    pub fn workspace_changes(&self) -> Vec<(FileChange, String)> {
        let order = self.dependency_order();
        crate::workspace::collapse(order.into_iter().filter_map(|id| {
            let result = self.tasks[id].result.as_ref()?;
            Some((id, &result.changes[..]))
        }))
    }

    /// The mission's workspace tree digest (every task names the same).
    pub fn workspace(&self) -> Option<&str> {
        self.tasks
            .values()
            .find_map(|task| task.spec.workspace.as_deref())
    }

    /// Records a violation of the current attempt; the task goes back to
    /// ready (with `retry_not_before_ms`) or fails, blocking its dependents.
    pub fn fail(
        &mut self,
        task: &str,
        violation: ViolationRecord,
        retry_not_before_ms: Option<u64>,
        fail_reason: Option<String>,
        next_seq: &mut u64,
    ) -> Result<(), Refusal> {
        self.fail_and_spawn(
            task,
            violation,
            retry_not_before_ms,
            fail_reason,
            Vec::new(),
            next_seq,
        )
    }

    /// Like [`Self::fail`]; when the task fails for good and `spawn` is
    /// not empty, those tasks join the mission (a fix round), the last of
    /// them takes the failed task's place (its dependents need it instead,
    /// and the mission no longer waits on the failed one). Tasks that do
    /// not fit (see [`Self::check_spawn`]) are not added, and the task's
    /// reason says why.
    pub fn fail_and_spawn(
        &mut self,
        task: &str,
        violation: ViolationRecord,
        retry_not_before_ms: Option<u64>,
        fail_reason: Option<String>,
        spawn: Vec<TaskSubmission>,
        next_seq: &mut u64,
    ) -> Result<(), Refusal> {
        self.check_running()?;
        let record = self.task_mut(task)?;
        let live = matches!(record.state, TaskState::Assigned | TaskState::Running);
        if !live || record.owner != Some(violation.node) || record.attempt != violation.attempt {
            return Err(format!(
                "stale violation for `{task}` from node {} at attempt {}",
                violation.node, violation.attempt
            ));
        }
        record.owner = None;
        record.runs += 1;
        let detail = violation.detail.clone();
        record.violations.push(violation);
        match retry_not_before_ms {
            Some(not_before_ms) => {
                record.state = TaskState::Ready;
                record.not_before_ms = not_before_ms;
                record.ready_seq = *next_seq;
                *next_seq += 1;
                record.reason = Some(format!("retry after {detail}"));
            }
            None => {
                record.state = TaskState::Failed;
                record.reason = Some(fail_reason.unwrap_or(detail));
                if !spawn.is_empty() {
                    match self.check_spawn(task, &spawn, false) {
                        Ok(()) => self.spawn(task, spawn, next_seq),
                        Err(why) => {
                            let record = self.task_mut(task)?;
                            let reason = record.reason.take().unwrap_or_default();
                            record.reason = Some(format!("{reason} (no fix round: {why})"));
                        }
                    }
                }
            }
        }
        self.dirty.0.insert(task.to_string());
        self.settle_after(task, next_seq);
        Ok(())
    }

    /// Whether `spawn` may join the mission for task `failed` (its spawner):
    /// new unique ids, each naming the spawner, needing only existing tasks
    /// or earlier ones of `spawn` (so no cycle can form), and the spawner
    /// itself only when `may_need_spawner` (a succeeded planner, not a
    /// failed test), at most [`MAX_SPAWN`] at once and [`MAX_SPAWNED`] in
    /// the mission.
    pub fn check_spawn(
        &self,
        failed: &str,
        spawn: &[TaskSubmission],
        may_need_spawner: bool,
    ) -> Result<(), Refusal> {
        if spawn.len() > MAX_SPAWN {
            return Err(format!(
                "{} tasks at once, more than {MAX_SPAWN}",
                spawn.len()
            ));
        }
        let spawned = self
            .tasks
            .values()
            .filter(|t| t.spec.spawned_by.is_some())
            .count();
        if spawned + spawn.len() > MAX_SPAWNED {
            return Err(format!(
                "the mission would hold more than {MAX_SPAWNED} added tasks"
            ));
        }
        let mut known: std::collections::BTreeSet<&str> =
            self.tasks.keys().map(String::as_str).collect();
        for task in spawn {
            if task.spawned_by.as_deref() != Some(failed) {
                return Err(format!(
                    "task `{}` does not name `{failed}` as its spawner",
                    task.id
                ));
            }
            if task.id.is_empty() || self.tasks.contains_key(&task.id) {
                return Err(format!("task id `{}` is taken", task.id));
            }
            if let Some(need) = task
                .needs
                .iter()
                .find(|n| !known.contains(n.as_str()) || (*n == failed && !may_need_spawner))
            {
                return Err(format!(
                    "task `{}` needs `{need}`, which it cannot",
                    task.id
                ));
            }
            if !known.insert(task.id.as_str()) {
                return Err(format!("task id `{}` appears twice", task.id));
            }
        }
        Ok(())
    }

    /// Adds `spawn` (checked) in `failed`'s place.
    fn spawn(&mut self, failed: &str, spawn: Vec<TaskSubmission>, next_seq: &mut u64) {
        let Some(heir) = spawn.last().map(|t| t.id.clone()) else {
            return;
        };
        let dependents = self.dependents_of(failed);
        for id in dependents {
            if let Some(record) = self.tasks.get_mut(&id) {
                for need in record.spec.needs.iter_mut() {
                    if need == failed {
                        *need = heir.clone();
                    }
                }
                self.dirty.0.insert(id);
            }
        }
        if let Some(record) = self.tasks.get_mut(failed) {
            record.superseded_by = Some(heir);
        }
        self.insert_pending(spawn, next_seq);
    }

    /// Records why waiting tasks wait; tasks that moved on are left alone.
    pub fn note_reasons(&mut self, reasons: &[(String, String)]) {
        for (task, reason) in reasons {
            if let Some(record) = self.tasks.get_mut(task) {
                if matches!(record.state, TaskState::Ready | TaskState::Pending) {
                    record.reason = Some(reason.clone());
                    self.dirty.0.insert(task.clone());
                }
            }
        }
    }

    /// A node lost its lease: its queued and running tasks go back to ready.
    /// Running ones record a `lost_node` violation and use up a run; one
    /// that reaches `max_runs` fails (a task that keeps taking its node down
    /// must not be placed forever), blocking its dependents.
    pub fn release_node(
        &mut self,
        node: NodeId,
        reason: &str,
        max_runs: u32,
        next_seq: &mut u64,
    ) -> usize {
        if self.state != MissionState::Running {
            return 0;
        }
        let mut released = 0;
        let mut failed = Vec::new();
        for (id, record) in self.tasks.iter_mut() {
            if record.owner != Some(node) {
                continue;
            }
            self.dirty.0.insert(id.clone());
            record.owner = None;
            released += 1;
            if record.state == TaskState::Running {
                record.violations.push(ViolationRecord {
                    attempt: record.attempt,
                    node,
                    kind: "lost_node".into(),
                    detail: reason.to_string(),
                    outputs: Vec::new(),
                    llm_calls: Vec::new(),
                });
                record.runs += 1;
                if record.runs >= max_runs.max(1) {
                    record.state = TaskState::Failed;
                    record.reason = Some(format!(
                        "out of attempts ({} of {}); last violation: lost_node: {reason}",
                        record.runs,
                        max_runs.max(1)
                    ));
                    failed.push(id.clone());
                    continue;
                }
            }
            record.state = TaskState::Ready;
            record.ready_seq = *next_seq;
            *next_seq += 1;
            record.reason = Some(format!("re-placed: {reason}"));
        }
        for id in failed {
            self.settle_after(&id, next_seq);
        }
        released
    }

    /// Cancels the mission: queued tasks dropped, running ones told to stop.
    pub fn cancel(&mut self) -> Result<(), Refusal> {
        if self.state != MissionState::Running {
            return Err(format!("mission {} is already {:?}", self.id, self.state));
        }
        for (id, record) in self.tasks.iter_mut() {
            if !record.state.is_terminal() {
                self.dirty.0.insert(id.clone());
                record.state = TaskState::Cancelled;
                record.owner = None;
                record.reason = Some("mission cancelled".into());
            }
        }
        self.state = MissionState::Cancelled;
        Ok(())
    }

    /// Drops a finished mission's tasks, keeping its header and how many
    /// tasks ended in each state. Every task is marked dirty, so storage
    /// deletes its key.
    pub fn compact(&mut self) -> Result<(), Refusal> {
        if self.state == MissionState::Running {
            return Err(format!("mission {} is still running", self.id));
        }
        if self.summary.is_some() {
            return Err(format!("mission {} is compacted already", self.id));
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for task in self.tasks.values() {
            *counts
                .entry(format!("{:?}", task.state).to_ascii_lowercase())
                .or_default() += 1;
        }
        self.dirty.0.extend(self.tasks.keys().cloned());
        self.tasks.clear();
        self.derived = Derived::default();
        self.summary = Some(counts);
        Ok(())
    }

    /// Re-runs the failed and blocked tasks with a fresh attempt budget.
    pub fn retry(&mut self, next_seq: &mut u64) -> Result<usize, Refusal> {
        if self.summary.is_some() {
            return Err(format!(
                "mission {} was compacted (its tasks are no longer kept); submit it again",
                self.id
            ));
        }
        if self.state != MissionState::Failed {
            return Err(format!(
                "mission {} is {:?}; only failed missions are retried",
                self.id, self.state
            ));
        }
        let mut again = 0;
        for (id, record) in self.tasks.iter_mut() {
            // A failed test a fix round replaced stays as it was.
            if matches!(record.state, TaskState::Failed | TaskState::Blocked)
                && record.superseded_by.is_none()
            {
                self.dirty.0.insert(id.clone());
                record.state = TaskState::Pending;
                record.runs = 0;
                record.not_before_ms = 0;
                record.reason = None;
                again += 1;
            }
        }
        self.state = MissionState::Running;
        self.settle(next_seq);
        Ok(again)
    }
}

/// A successful result of `attempt` on `node`, for tests in this crate.
#[cfg(test)]
pub(crate) fn test_result(node: NodeId, attempt: u32) -> TaskResult {
    TaskResult {
        llm_calls: Vec::new(),
        node,
        attempt,
        exit_code: Some(0),
        stdout_digest: "sha256:00".into(),
        stdout_head: String::new(),
        outputs: vec![],
        fuel_used: 1,
        wall_ms: 1,
        changes: Vec::new(),
    }
}

/// A minimal task for tests in this crate: tiny limits, no inputs.
#[cfg(test)]
pub(crate) fn test_submission(id: &str, needs: &[&str]) -> TaskSubmission {
    TaskSubmission {
        spawned_by: None,
        id: id.into(),
        module: "sha256:00".into(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        requires: vec!["wasm".into()],
        priority: 2,
        input: None,
        inputs: vec![],
        limits: TaskLimits {
            max_llm_calls: DEFAULT_MAX_LLM_CALLS,
            max_tokens: DEFAULT_MAX_TOKENS,
            fuel: 1,
            memory_mb: 1,
            timeout_ms: 1,
            output_mb: 1,
        },
        expect: TaskExpect::default(),
        done: false,
        title: None,
        agent: None,
        args: vec![],
        workspace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(id: &str, needs: &[&str]) -> TaskSubmission {
        test_submission(id, needs)
    }

    fn result(node: NodeId, attempt: u32) -> TaskResult {
        test_result(node, attempt)
    }

    fn chain() -> (MissionRecord, u64) {
        let mut seq = 0;
        let mission = MissionRecord::new(
            "m1".into(),
            "chain".into(),
            vec![spec("a", &[]), spec("b", &["a"]), spec("c", &["b"])],
            0,
            &mut seq,
        );
        (mission, seq)
    }

    #[test]
    fn every_state_is_listed_at_its_discriminant() {
        for (index, state) in TaskState::ALL.iter().enumerate() {
            assert_eq!(*state as usize, index, "{state:?}");
        }
    }

    #[test]
    fn dependencies_gate_readiness_and_success_releases_dependents() {
        let (mut mission, mut seq) = chain();
        assert_eq!(mission.tasks["a"].state, TaskState::Ready);
        assert_eq!(mission.tasks["b"].state, TaskState::Pending);
        assert!(mission.tasks["b"]
            .reason
            .as_deref()
            .unwrap()
            .contains("waiting for a"));
        mission.assign("a", 7, 0, 0).unwrap();
        mission.start("a", 7, 1).unwrap();
        mission.complete("a", result(7, 1), &mut seq).unwrap();
        assert_eq!(mission.tasks["b"].state, TaskState::Ready);
        assert_eq!(mission.state, MissionState::Running);
    }

    fn changed(node: NodeId, attempt: u32, files: &[(&str, u8)]) -> TaskResult {
        TaskResult {
            changes: files
                .iter()
                .map(|(path, seed)| FileChange {
                    path: path.to_string(),
                    digest: Some(coditect_memory::Digest::of(&[*seed]).to_string()),
                    size: 1,
                    exec: false,
                })
                .collect(),
            ..result(node, attempt)
        }
    }

    fn run(mission: &mut MissionRecord, task: &str, node: NodeId, out: TaskResult, seq: &mut u64) {
        let attempt = mission.tasks[task].attempt;
        mission.assign(task, node, attempt, 0).unwrap();
        mission.start(task, node, attempt + 1).unwrap();
        mission.complete(task, out, seq).unwrap();
    }

    #[test]
    fn a_planner_expands_into_its_subtasks_and_its_dependents_wait_for_them() {
        let mut seq = 0;
        let mut m = MissionRecord::new(
            "m1".into(),
            "m".into(),
            vec![spec("plan", &[]), spec("ship", &["plan"])],
            0,
            &mut seq,
        );
        let sub = |id: &str, needs: &[&str]| {
            let mut t = spec(id, needs);
            t.spawned_by = Some("plan".into());
            t
        };
        let attempt = m.tasks["plan"].attempt;
        m.assign("plan", 1, attempt, 0).unwrap();
        let spawn = vec![sub("a", &["plan"]), sub("b", &["a"]), sub("c", &["plan"])];
        m.complete_and_spawn("plan", result(1, attempt + 1), spawn, &mut seq)
            .unwrap();
        assert_eq!(m.tasks["plan"].state, TaskState::Succeeded);
        assert_eq!(m.tasks["a"].state, TaskState::Ready);
        assert_eq!(m.tasks["c"].state, TaskState::Ready);
        assert_eq!(m.tasks["b"].state, TaskState::Pending);
        assert_eq!(m.tasks["ship"].spec.needs, ["plan", "b", "c"], "the sinks");
        assert_eq!(m.tasks["ship"].state, TaskState::Pending);
        for id in ["a", "b", "c", "ship"] {
            if id == "ship" {
                assert_eq!(m.tasks["ship"].state, TaskState::Ready);
            }
            let next = m.tasks[id].attempt + 1;
            run(&mut m, id, 2, result(2, next), &mut seq);
        }
        assert_eq!(m.state, MissionState::Succeeded);

        // Subtasks that would form a cycle, or take an id, fail the planner.
        for bad in [
            vec![sub("x", &["y"]), sub("y", &["x"])],
            vec![sub("ship", &["plan"])],
            vec![spec("z", &["plan"])],
        ] {
            let mut seq = 0;
            let mut m = MissionRecord::new(
                "m1".into(),
                "m".into(),
                vec![spec("plan", &[]), spec("ship", &["plan"])],
                0,
                &mut seq,
            );
            m.assign("plan", 1, 0, 0).unwrap();
            m.complete_and_spawn("plan", result(1, 1), bad, &mut seq)
                .unwrap();
            assert_eq!(m.tasks["plan"].state, TaskState::Failed);
            assert_eq!(m.tasks["plan"].results_committed, 0);
            assert!(m.tasks["plan"]
                .reason
                .as_deref()
                .unwrap()
                .contains("subtasks"));
            assert_eq!(m.tasks["ship"].state, TaskState::Blocked);
            assert_eq!(m.tasks.len(), 2);
        }
    }

    #[test]
    fn parallel_tasks_changing_one_file_conflict_and_a_chain_does_not() {
        // a -> c, b -> c: a and b run in parallel; d depends on c.
        let mut seq = 0;
        let tasks = vec![
            spec("a", &[]),
            spec("b", &[]),
            spec("c", &["a", "b"]),
            spec("d", &["c"]),
        ];
        let mut mission = MissionRecord::new("m1".into(), "m".into(), tasks, 0, &mut seq);
        run(
            &mut mission,
            "a",
            1,
            changed(1, 1, &[("x.py", 1), ("y.py", 1)]),
            &mut seq,
        );
        // The same change is agreement, not a conflict.
        run(
            &mut mission,
            "b",
            2,
            changed(2, 1, &[("y.py", 1)]),
            &mut seq,
        );
        assert_eq!(mission.tasks["b"].state, TaskState::Succeeded);
        // c depends on both: it may change what they changed.
        run(
            &mut mission,
            "c",
            1,
            changed(1, 1, &[("x.py", 3)]),
            &mut seq,
        );
        assert_eq!(mission.tasks["c"].state, TaskState::Succeeded);
        let view = mission.workspace_view("d");
        let paths: Vec<(&str, &str)> = view
            .iter()
            .map(|(c, by)| (c.path.as_str(), by.as_str()))
            .collect();
        assert_eq!(paths, [("x.py", "c"), ("y.py", "b")]);
        assert_eq!(mission.workspace_changes().len(), 2);

        let tasks = vec![spec("a", &[]), spec("b", &[]), spec("c", &["b"])];
        let mut mission = MissionRecord::new("m2".into(), "m".into(), tasks, 0, &mut seq);
        run(
            &mut mission,
            "a",
            1,
            changed(1, 1, &[("x.py", 1)]),
            &mut seq,
        );
        run(
            &mut mission,
            "b",
            2,
            changed(2, 1, &[("x.py", 2)]),
            &mut seq,
        );
        let b = &mission.tasks["b"];
        assert_eq!(b.state, TaskState::Failed);
        assert_eq!(b.results_committed, 0);
        assert!(b.result.is_none());
        assert_eq!(b.violations.last().unwrap().kind, "conflict");
        let detail = &b.violations.last().unwrap().detail;
        assert!(
            detail.contains("`x.py`") && detail.contains("`a`"),
            "{detail}"
        );
        assert_eq!(mission.tasks["c"].state, TaskState::Blocked);
        assert_eq!(mission.state, MissionState::Failed);
        // The final workspace holds only the committed change.
        let changes = mission.workspace_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1, "a");
    }

    #[test]
    fn a_stale_owner_cannot_commit_after_a_steal() {
        let (mut mission, mut seq) = chain();
        mission.assign("a", 1, 0, 0).unwrap();
        mission.steal("a", 1, 2, 1).unwrap();
        // Node 1 ran it anyway (at-least-once execution): its result is refused.
        assert!(mission.complete("a", result(1, 1), &mut seq).is_err());
        assert!(mission.start("a", 1, 1).is_err());
        mission.start("a", 2, 2).unwrap();
        mission.complete("a", result(2, 2), &mut seq).unwrap();
        assert!(
            mission.complete("a", result(2, 2), &mut seq).is_err(),
            "committed once"
        );
        assert_eq!(mission.tasks["a"].results_committed, 1);
    }

    #[test]
    fn running_tasks_cannot_be_stolen() {
        let (mut mission, _) = chain();
        mission.assign("a", 1, 0, 0).unwrap();
        mission.start("a", 1, 1).unwrap();
        assert!(mission.steal("a", 1, 2, 1).is_err());
    }

    #[test]
    fn failure_without_retry_blocks_the_chain_and_fails_the_mission() {
        let (mut mission, mut seq) = chain();
        mission.assign("a", 1, 0, 0).unwrap();
        let violation = ViolationRecord {
            llm_calls: Vec::new(),
            attempt: 1,
            node: 1,
            kind: "trap".into(),
            detail: "unreachable".into(),
            outputs: Vec::new(),
        };
        mission
            .fail("a", violation.clone(), Some(1_000), None, &mut seq)
            .unwrap();
        assert_eq!(mission.tasks["a"].state, TaskState::Ready);
        assert!(mission.assign("a", 2, 1, 999).is_err(), "backoff holds");
        mission.assign("a", 2, 1, 1_000).unwrap();
        let violation = ViolationRecord {
            attempt: 2,
            node: 2,
            ..violation
        };
        mission.fail("a", violation, None, None, &mut seq).unwrap();
        assert_eq!(mission.tasks["a"].state, TaskState::Failed);
        assert_eq!(mission.tasks["a"].violations.len(), 2);
        assert_eq!(mission.tasks["b"].state, TaskState::Blocked);
        assert_eq!(mission.tasks["c"].state, TaskState::Blocked);
        assert_eq!(mission.tasks["c"].reason.as_deref(), Some("blocked by `b`"));
        assert_eq!(mission.state, MissionState::Failed);
        assert_eq!(mission.retry(&mut seq).unwrap(), 3);
        assert_eq!(mission.tasks["a"].state, TaskState::Ready);
        assert_eq!(mission.state, MissionState::Running);
    }

    #[test]
    fn a_lost_node_hands_its_tasks_back() {
        let (mut mission, mut seq) = chain();
        mission.assign("a", 1, 0, 0).unwrap();
        mission.start("a", 1, 1).unwrap();
        assert_eq!(
            mission.release_node(1, "node 1 stopped heartbeating", 3, &mut seq),
            1
        );
        let task = &mission.tasks["a"];
        assert_eq!((task.state, task.owner), (TaskState::Ready, None));
        assert_eq!(task.violations[0].kind, "lost_node");
        // The lost node's late result is stale.
        assert!(mission.complete("a", result(1, 1), &mut seq).is_err());
    }

    #[test]
    fn a_task_that_keeps_losing_its_node_fails_and_blocks_its_dependents() {
        let (mut mission, mut seq) = chain();
        for (node, attempt) in [(1, 0), (2, 1), (3, 2)] {
            mission.assign("a", node, attempt, 0).unwrap();
            mission.start("a", node, attempt + 1).unwrap();
            mission.release_node(node, "lost", 3, &mut seq);
        }
        let task = &mission.tasks["a"];
        assert_eq!(task.state, TaskState::Failed);
        assert_eq!(task.runs, 3);
        assert!(task
            .reason
            .as_deref()
            .unwrap()
            .contains("out of attempts (3 of 3)"));
        assert_eq!(mission.tasks["b"].state, TaskState::Blocked);
        assert_eq!(mission.tasks["c"].state, TaskState::Blocked);
        assert_eq!(mission.state, MissionState::Failed);
        // A queued (never started) task is handed back without using a run.
        let (mut other, mut seq) = chain();
        other.assign("a", 1, 0, 0).unwrap();
        other.release_node(1, "lost", 1, &mut seq);
        assert_eq!(other.tasks["a"].state, TaskState::Ready);
        assert_eq!(other.tasks["a"].runs, 0);
    }

    #[test]
    fn cancel_stops_everything_not_finished() {
        let (mut mission, _) = chain();
        mission.assign("a", 1, 0, 0).unwrap();
        mission.cancel().unwrap();
        assert!(mission
            .tasks
            .values()
            .all(|t| t.state == TaskState::Cancelled && t.owner.is_none()));
        assert_eq!(mission.state, MissionState::Cancelled);
        assert!(mission.cancel().is_err());
    }

    #[test]
    fn done_tasks_count_as_succeeded() {
        let mut seq = 0;
        let mut done = spec("a", &[]);
        done.done = true;
        let mission = MissionRecord::new(
            "m".into(),
            "n".into(),
            vec![done, spec("b", &["a"])],
            0,
            &mut seq,
        );
        assert_eq!(mission.tasks["b"].state, TaskState::Ready);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(usize, NodeId, u32),
        Steal(usize, NodeId, NodeId, u32),
        Start(usize, NodeId, u32),
        Complete(usize, NodeId, u32),
        Fail(usize, NodeId, u32, bool),
        Release(NodeId),
    }

    fn op() -> impl Strategy<Value = Op> {
        let task = 0usize..5;
        let node = 1u64..4;
        let attempt = 0u32..6;
        prop_oneof![
            (task.clone(), node.clone(), attempt.clone()).prop_map(|(t, n, a)| Op::Assign(t, n, a)),
            (task.clone(), node.clone(), node.clone(), attempt.clone())
                .prop_map(|(t, f, to, a)| Op::Steal(t, f, to, a)),
            (task.clone(), node.clone(), attempt.clone()).prop_map(|(t, n, a)| Op::Start(t, n, a)),
            (task.clone(), node.clone(), attempt.clone())
                .prop_map(|(t, n, a)| Op::Complete(t, n, a)),
            (task, node.clone(), attempt, any::<bool>())
                .prop_map(|(t, n, a, r)| Op::Fail(t, n, a, r)),
            node.prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever the leaders propose, in any order and with any stale
        /// attempts: a task has an owner exactly while assigned or running,
        /// at most one result is ever committed, a succeeded task has one, and
        /// a refused transition leaves the mission untouched.
        #[test]
        fn ownership_and_results_stay_consistent(ops in proptest::collection::vec(op(), 0..80)) {
            // A diamond with a tail: a -> {b, c} -> d -> e.
            let mut seq = 0;
            let mut mission = MissionRecord::new(
                "m1".into(),
                "diamond".into(),
                vec![
                    spec("a", &[]),
                    spec("b", &["a"]),
                    spec("c", &["a"]),
                    spec("d", &["b", "c"]),
                    spec("e", &["d"]),
                ],
                0,
                &mut seq,
            );
            let ids = ["a", "b", "c", "d", "e"];
            for op in ops {
                let before = (mission.clone(), seq);
                let outcome = match op {
                    Op::Assign(t, n, a) => mission.assign(ids[t], n, a, u64::MAX),
                    Op::Steal(t, f, to, a) => mission.steal(ids[t], f, to, a),
                    Op::Start(t, n, a) => mission.start(ids[t], n, a),
                    Op::Complete(t, n, a) => mission.complete(ids[t], result(n, a), &mut seq),
                    Op::Fail(t, n, a, retry) => mission.fail(
                        ids[t],
                        ViolationRecord { attempt: a, node: n, kind: "trap".into(), detail: "x".into(), outputs: Vec::new(), llm_calls: Vec::new() },
                        retry.then_some(0),
                        None,
                        &mut seq,
                    ),
                    Op::Release(n) => { mission.release_node(n, "lost", 3, &mut seq); Ok(()) }
                };
                // A refused transition changes nothing (apply relies on it).
                if outcome.is_err() {
                    prop_assert_eq!(&(mission.clone(), seq), &before);
                }
                // Settling only downstream of the changed task leaves nothing
                // for a settle over every task to do.
                let mut full = mission.clone();
                let mut full_seq = seq;
                full.settle(&mut full_seq);
                prop_assert_eq!(&(full, full_seq), &(mission.clone(), seq));
                for task in mission.tasks.values() {
                    let owned = matches!(task.state, TaskState::Assigned | TaskState::Running);
                    prop_assert_eq!(task.owner.is_some(), owned, "{:?}", task);
                    prop_assert!(task.results_committed <= 1);
                    prop_assert_eq!(task.state == TaskState::Succeeded, task.results_committed == 1);
                }
                // The remembered open task never changes the mission's state
                // from what a scan of every task says.
                let tasks = || mission.tasks.values();
                let reference = if tasks().all(|t| t.state == TaskState::Succeeded || t.superseded_by.is_some()) {
                    MissionState::Succeeded
                } else if tasks().all(|t| t.state.is_terminal()) {
                    MissionState::Failed
                } else {
                    MissionState::Running
                };
                prop_assert_eq!(mission.state, reference);
                // The ready/held index, brought up to date as apply does,
                // is exactly what a scan finds, ready tasks most urgent first.
                let ready: Vec<(u8, u64, String)> = {
                    let mut ready: Vec<_> = tasks()
                        .filter(|t| t.state == TaskState::Ready)
                        .map(|t| (t.spec.priority, t.ready_seq, t.spec.id.clone()))
                        .collect();
                    ready.sort();
                    ready
                };
                let held: std::collections::BTreeSet<String> = tasks()
                    .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running))
                    .map(|t| t.spec.id.clone())
                    .collect();
                let mut scanned: BTreeMap<TaskState, u64> = BTreeMap::new();
                for task in tasks() {
                    *scanned.entry(task.state).or_default() += 1;
                }
                mission.take_dirty();
                let index = mission.index().expect("built by take_dirty");
                prop_assert_eq!(&index.held, &held);
                // The counts by state are what a scan counts.
                prop_assert_eq!(index.counts().collect::<BTreeMap<_, _>>(), scanned);
                prop_assert_eq!(index.len(), mission.tasks.len());
                prop_assert_eq!(index.ready.iter().cloned().collect::<Vec<_>>(), ready);
                for id in ["b", "c"] {
                    let task = &mission.tasks[id];
                    if task.state != TaskState::Pending && task.state != TaskState::Blocked {
                        let need = &task.spec.needs[0];
                        prop_assert_eq!(mission.tasks[need].state, TaskState::Succeeded);
                    }
                }
            }
        }
    }
}
