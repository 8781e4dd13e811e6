//! Mission validation: everything that must hold before a mission is
//! committed, and the topological order the scheduler starts from.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::str::FromStr;

use coditect_memory::Digest;

use super::caps::{
    MAX_ARGS_PER_TASK, MAX_ARG_BYTES, MAX_DEPENDENCY_DEPTH, MAX_EXPECTED_FILES,
    MAX_INPUTS_PER_TASK, MAX_NEEDS_PER_TASK, MAX_PATH_BYTES, MAX_REQUIRES_PER_TASK, MAX_TAG_BYTES,
    MAX_TASKS_PER_MISSION, MAX_TASK_ID_BYTES,
};
use super::error::{one_line, MissionError};
use super::grammar::{self, excerpt};
use super::spec::{MissionSpec, ModuleRef, Priority, TaskSpec, BUILTIN_PREFIX};

/// Longest task id accepted; ids appear in URLs and in every task record.
pub const MAX_ID_LEN: usize = MAX_TASK_ID_BYTES;

/// A mission that passed [`validate`], with its tasks in a topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedMission {
    spec: MissionSpec,
    order: Vec<usize>,
    needs: Vec<Vec<usize>>,
}

impl ValidatedMission {
    /// The mission as submitted.
    pub fn spec(&self) -> &MissionSpec {
        &self.spec
    }

    /// The mission as submitted, by value.
    pub fn into_spec(self) -> MissionSpec {
        self.spec
    }

    /// Indices into `spec().tasks`: every not-done task comes after every
    /// not-done task it needs; among tasks free to go, more urgent
    /// priorities first, then file order. Done tasks come first.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The tasks in [`Self::order`].
    pub fn ordered_tasks(&self) -> impl Iterator<Item = &TaskSpec> + '_ {
        self.order.iter().map(|&i| &self.spec.tasks[i])
    }

    /// Indices of the tasks that task `index` needs, without repeats.
    pub fn needs_of(&self, index: usize) -> &[usize] {
        &self.needs[index]
    }

    /// Tasks that can start now: not done, and every task they need is done.
    pub fn ready(&self) -> Vec<&TaskSpec> {
        self.ordered_tasks()
            .zip(&self.order)
            .filter(|(task, &i)| {
                !task.done && self.needs[i].iter().all(|&d| self.spec.tasks[d].done)
            })
            .map(|(task, _)| task)
            .collect()
    }
}

/// Most fix rounds a mission may ask for.
pub const MAX_FIX_ROUNDS: u32 = 10;

/// Most language-model calls one task may make.
pub const MAX_LLM_CALLS: u32 = 256;

/// Most language-model tokens one task may spend.
pub const MAX_LLM_TOKENS: u64 = 100_000_000;

/// Checks a mission and orders its tasks. With `base_dir` (the mission
/// file's folder, on the submitting machine) module paths and inputs must
/// exist there; without it only their form is checked. `builtin:` modules
/// and `sha256:` digests never touch the disk.
///
/// Checks, in this order, stopping at the first problem: at least one and
/// at most [`MAX_TASKS_PER_MISSION`] tasks; the mission name; per task in
/// file order: its id, its `needs` count, its `requires`, its limits (the
/// hard maxima included), its `expect.files`, its module and its inputs
/// (each in the path grammar of [`grammar`], none reserved, none twice or
/// inside another); then duplicate ids, unknown dependencies, and cycles.
/// Every cap is in [`super::caps`]. A dependency on a done task is satisfied, and a
/// done task waits for nothing, so cycles only count among not-done tasks.
pub fn validate(
    spec: &MissionSpec,
    base_dir: Option<&Path>,
) -> Result<ValidatedMission, MissionError> {
    if spec.tasks.is_empty() {
        return Err(MissionError::NoTasks);
    }
    if spec.tasks.len() > MAX_TASKS_PER_MISSION {
        return Err(MissionError::TooManyTasks {
            count: spec.tasks.len(),
            max: MAX_TASKS_PER_MISSION,
        });
    }
    grammar::check_mission_name(&spec.name).map_err(|e| MissionError::InvalidField {
        field: "name".into(),
        place: "the mission".into(),
        message: e.to_string(),
    })?;
    if let Some(workspace) = &spec.workspace {
        check_workspace(workspace, base_dir)?;
    }
    if let Some(rounds) = spec.max_fix_rounds.filter(|r| *r > MAX_FIX_ROUNDS) {
        return Err(MissionError::InvalidField {
            field: "max_fix_rounds".into(),
            place: "the mission".into(),
            message: format!("{rounds} is more than {MAX_FIX_ROUNDS}"),
        });
    }
    for task in &spec.tasks {
        check_id(&task.id)?;
        check_task(task, base_dir)?;
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(spec.tasks.len());
    for (i, task) in spec.tasks.iter().enumerate() {
        if index.insert(task.id.as_str(), i).is_some() {
            return Err(MissionError::DuplicateId(task.id.clone()));
        }
    }

    let mut needs: Vec<Vec<usize>> = Vec::with_capacity(spec.tasks.len());
    for task in &spec.tasks {
        let mut deps = Vec::with_capacity(task.needs.len());
        for dep in &task.needs {
            let &d = index
                .get(dep.as_str())
                .ok_or_else(|| MissionError::UnknownDependency {
                    task: task.id.clone(),
                    missing: excerpt(dep),
                })?;
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
        needs.push(deps);
    }

    let order = topological_order(spec, &needs)?;
    check_depth(spec, &needs, &order)?;
    Ok(ValidatedMission {
        spec: spec.clone(),
        order,
        needs,
    })
}

/// Longest `workspace` value, bytes.
const MAX_WORKSPACE_BYTES: usize = 4096;

/// The mission's `workspace`: a `sha256:` digest of a tree, or (with a
/// base directory to look in) a folder there.
fn check_workspace(workspace: &str, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let invalid = |message: String| MissionError::InvalidField {
        field: "workspace".into(),
        place: "the mission".into(),
        message,
    };
    if workspace.is_empty()
        || workspace.len() > MAX_WORKSPACE_BYTES
        || workspace.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "expected a folder or a sha256: digest of 1 to {MAX_WORKSPACE_BYTES} bytes without control characters"
        )));
    }
    if workspace.starts_with("sha256:") {
        return workspace
            .parse::<coditect_memory::Digest>()
            .map(|_| ())
            .map_err(|error| invalid(error.to_string()));
    }
    match base_dir {
        Some(base) if base.join(workspace).is_dir() => Ok(()),
        Some(base) => Err(invalid(format!(
            "{} is not a folder",
            base.join(workspace).display()
        ))),
        None => Ok(()),
    }
}

/// Checks one task id with [`grammar::check_task_id`]: not empty, at most
/// [`MAX_ID_LEN`] bytes, only `A-Z a-z 0-9 . _ -`, and starting with a
/// letter or digit (so `.` and `..` can never be an id in a URL path).
pub fn check_id(id: &str) -> Result<(), MissionError> {
    grammar::check_task_id(id).map_err(|e| MissionError::InvalidId {
        id: excerpt(id),
        reason: e.to_string(),
    })
}

/// The sandbox's reason for refusing limits, without its generic prefix.
pub(crate) fn limits_problem(error: coditect_sandbox::SandboxError) -> String {
    match error {
        coditect_sandbox::SandboxError::InvalidConfig(problem) => problem,
        other => other.to_string(),
    }
}

/// Refuses a list longer than its cap.
fn check_count(task: &TaskSpec, field: &str, count: usize, max: usize) -> Result<(), MissionError> {
    if count > max {
        return Err(MissionError::TooManyEntries {
            task: task.id.clone(),
            field: field.to_string(),
            count,
            max,
        });
    }
    Ok(())
}

/// The per-task checks that need no other task.
fn check_task(task: &TaskSpec, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let id = &task.id;
    let place = || format!("task `{id}`");
    check_count(task, "needs", task.needs.len(), MAX_NEEDS_PER_TASK)?;
    check_count(task, "requires", task.requires.len(), MAX_REQUIRES_PER_TASK)?;
    if let Some(tag) = task.requires.iter().find(|r| {
        r.is_empty()
            || r.len() > MAX_TAG_BYTES
            || r.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err(MissionError::InvalidField {
            field: "requires".into(),
            place: place(),
            message: format!(
                "capability tag {:?} is empty, longer than {MAX_TAG_BYTES} bytes, or contains whitespace or control characters",
                excerpt(tag)
            ),
        });
    }
    check_count(task, "args", task.args.len(), MAX_ARGS_PER_TASK)?;
    if let Some(arg) = task
        .args
        .iter()
        .find(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        return Err(MissionError::InvalidField {
            field: "args".into(),
            place: place(),
            message: format!(
                "argument {:?} is longer than {MAX_ARG_BYTES} bytes or contains a NUL",
                excerpt(arg)
            ),
        });
    }
    task.limits
        .validate()
        .map_err(|e| MissionError::InvalidLimits {
            task: id.clone(),
            message: one_line(&limits_problem(e)),
        })?;
    if let Some(calls) = task.max_llm_calls.filter(|n| *n > MAX_LLM_CALLS) {
        return Err(MissionError::InvalidLimits {
            task: id.clone(),
            message: format!("max_llm_calls must be between 1 and {MAX_LLM_CALLS}, not {calls}"),
        });
    }
    if let Some(tokens) = task.max_tokens.filter(|n| *n > MAX_LLM_TOKENS) {
        return Err(MissionError::InvalidLimits {
            task: id.clone(),
            message: format!("max_tokens must be between 1 and {MAX_LLM_TOKENS}, not {tokens}"),
        });
    }
    check_count(
        task,
        "expect.files",
        task.expect.files.len(),
        MAX_EXPECTED_FILES,
    )?;
    for file in &task.expect.files {
        if let Err(problem) = grammar::check_path(file) {
            return Err(MissionError::InvalidField {
                field: "expect.files".into(),
                place: place(),
                message: format!("{:?}: {problem}", excerpt(file)),
            });
        }
    }
    check_module(task, base_dir)?;
    check_count(task, "inputs", task.inputs.len(), MAX_INPUTS_PER_TASK)?;
    let mut targets = Vec::with_capacity(task.inputs.len());
    for input in &task.inputs {
        targets.push(check_input(task, input, base_dir)?);
    }
    grammar::check_input_set(targets).map_err(|problem| MissionError::InvalidField {
        field: "inputs".into(),
        place: place(),
        message: problem.to_string(),
    })
}

fn check_module(task: &TaskSpec, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let ModuleRef::Path(path) = &task.module else {
        return Ok(());
    };
    let invalid = |reason: &str| {
        Err(MissionError::InvalidModule {
            task: task.id.clone(),
            module: excerpt(path),
            reason: reason.to_string(),
        })
    };
    // A module path is the submitter's own file (it may well start with
    // `../`), so only what no file name needs is refused here.
    if path.len() > MAX_PATH_BYTES {
        return invalid(&format!(
            "the module path is {} bytes long, more than the cap of {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    if path.chars().any(char::is_control) {
        return invalid("the module path contains a control character");
    }
    if let Some(name) = path.strip_prefix(BUILTIN_PREFIX) {
        if name.is_empty() {
            return invalid("a builtin module needs a name");
        }
        return Ok(());
    }
    if path.is_empty() {
        return invalid("the module path is empty");
    }
    let extension = Path::new(path).extension().and_then(|e| e.to_str());
    if !matches!(extension, Some("wasm" | "wat")) {
        return invalid("a module must be a .wasm or .wat file");
    }
    if let Some(base) = base_dir {
        let full = base.join(path);
        if !full.is_file() {
            return Err(MissionError::MissingModule {
                task: task.id.clone(),
                module: path.clone(),
                path: full.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Checks one `inputs` entry and returns the path it lands at under `/input`.
fn check_input<'a>(
    task: &TaskSpec,
    input: &'a str,
    base_dir: Option<&Path>,
) -> Result<&'a str, MissionError> {
    let invalid = |reason: String| MissionError::InvalidInput {
        task: task.id.clone(),
        input: excerpt(input),
        reason,
    };
    // Uploaded forms: `sha256:<hex>` (it lands at `/input/<hex>`), or
    // `<path>=sha256:<hex>` keeping the file's path under /input (what
    // `coditect submit` writes).
    let uploaded = match input.split_once("=sha256:") {
        Some((path, hex)) => Some((path, format!("sha256:{hex}"))),
        None => input
            .strip_prefix("sha256:")
            .map(|hex| (hex, input.to_string())),
    };
    if let Some((target, digest)) = uploaded {
        if let Err(e) = Digest::from_str(&digest) {
            return Err(invalid(one_line(&e.to_string())));
        }
        grammar::check_input_path(target).map_err(|e| invalid(e.to_string()))?;
        return Ok(target);
    }
    // A file or folder of the submitter's: it keeps its relative path under
    // /input, so it must be in the grammar (a folder may end in `/`).
    let target = grammar::source_input_target(input);
    grammar::check_input_path(target).map_err(|e| invalid(e.to_string()))?;
    if let Some(base) = base_dir {
        let full = base.join(input);
        if !full.exists() {
            return Err(MissionError::MissingInput {
                task: task.id.clone(),
                input: input.to_string(),
                path: full.display().to_string(),
            });
        }
    }
    Ok(target)
}

/// Kahn's algorithm over the edges between not-done tasks; on failure, one
/// cycle among the tasks left over, in dependency order.
/// The longest chain of not-done tasks, in `order` (dependencies first),
/// is at most [`MAX_DEPENDENCY_DEPTH`] tasks.
fn check_depth(
    spec: &MissionSpec,
    needs: &[Vec<usize>],
    order: &[usize],
) -> Result<(), MissionError> {
    let mut depth = vec![0usize; spec.tasks.len()];
    for &i in order {
        if spec.tasks[i].done {
            continue;
        }
        let below = needs[i].iter().map(|&d| depth[d]).max().unwrap_or(0);
        depth[i] = below + 1;
        if depth[i] > MAX_DEPENDENCY_DEPTH {
            return Err(MissionError::TooDeep {
                task: excerpt(&spec.tasks[i].id),
                depth: depth[i],
                max: MAX_DEPENDENCY_DEPTH,
            });
        }
    }
    Ok(())
}

fn topological_order(spec: &MissionSpec, needs: &[Vec<usize>]) -> Result<Vec<usize>, MissionError> {
    let n = spec.tasks.len();
    let done = |i: usize| spec.tasks[i].done;
    // The edges that matter: a not-done task waiting on a not-done task.
    let live: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            if done(i) {
                Vec::new()
            } else {
                needs[i].iter().copied().filter(|&d| !done(d)).collect()
            }
        })
        .collect();
    let mut waiting: Vec<usize> = live.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in live.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let key = |i: usize| -> Reverse<(bool, Priority, usize)> {
        // Done tasks sort first (false < true), then priority, then file order.
        Reverse((!done(i), spec.tasks[i].priority, i))
    };
    let mut free: BinaryHeap<Reverse<(bool, Priority, usize)>> =
        (0..n).filter(|&i| waiting[i] == 0).map(key).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, _, i))) = free.pop() {
        order.push(i);
        for &dependent in &dependents[i] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                free.push(key(dependent));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    Err(MissionError::Cycle(find_cycle(spec, &live, &waiting)))
}

/// A cycle among the tasks Kahn's algorithm could not free. Each of them
/// still waits on another one of them, so walking "first dependency still
/// waiting" from any of them must revisit a task; the walk from that task on
/// is a cycle. It is rotated to start at its earliest task in file order, so
/// the report is the same however the walk entered it.
fn find_cycle(spec: &MissionSpec, live: &[Vec<usize>], waiting: &[usize]) -> Vec<String> {
    let stuck = |i: usize| waiting[i] > 0;
    let start = (0..live.len()).find(|&i| stuck(i)).unwrap_or(0);
    let mut path: Vec<usize> = Vec::new();
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut node = start;
    loop {
        if let Some(&at) = seen_at.get(&node) {
            path.drain(..at);
            break;
        }
        seen_at.insert(node, path.len());
        path.push(node);
        match live[node].iter().copied().find(|&d| stuck(d)) {
            Some(next) => node = next,
            // Unreachable while the invariant above holds; report what was walked.
            None => break,
        }
    }
    if let Some(min_at) = path
        .iter()
        .enumerate()
        .min_by_key(|(_, &i)| i)
        .map(|(at, _)| at)
    {
        path.rotate_left(min_at);
    }
    let mut members: Vec<String> = path.iter().map(|&i| spec.tasks[i].id.clone()).collect();
    if let Some(first) = members.first().cloned() {
        members.push(first);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::super::caps::{
        MAX_FUEL, MAX_MEMORY_MB, MAX_MISSION_NAME_BYTES, MAX_OUTPUT_MB, MAX_TIMEOUT_MS,
    };
    use super::*;
    use coditect_sandbox::Limits;

    fn task(id: &str, needs: &[&str]) -> TaskSpec {
        let mut task = TaskSpec::new(id, ModuleRef::Path("builtin:noop".into()));
        task.needs = needs.iter().map(|s| s.to_string()).collect();
        task
    }

    fn mission(tasks: Vec<TaskSpec>) -> MissionSpec {
        MissionSpec {
            max_fix_rounds: None,
            name: "m".into(),
            tasks,
            workspace: None,
        }
    }

    fn ids(v: &ValidatedMission) -> Vec<&str> {
        v.ordered_tasks().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn orders_a_diamond_and_reports_ready_tasks() {
        let spec = mission(vec![
            task("join", &["left", "right"]),
            task("left", &["root"]),
            task("right", &["root", "root"]),
            task("root", &[]),
        ]);
        let v = validate(&spec, None).unwrap();
        assert_eq!(ids(&v), ["root", "left", "right", "join"]);
        assert_eq!(v.needs_of(2), [3], "repeated needs count once");
        let ready: Vec<&str> = v.ready().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ready, ["root"]);
        assert_eq!(v.spec(), &spec);
    }

    #[test]
    fn urgent_tasks_come_first_among_free_ones() {
        let mut late = task("late", &[]);
        late.priority = Priority::P3;
        let mut urgent = task("urgent", &[]);
        urgent.priority = Priority::P0;
        let v = validate(&mission(vec![late, task("normal", &[]), urgent]), None).unwrap();
        assert_eq!(ids(&v), ["urgent", "normal", "late"]);
    }

    #[test]
    fn empty_missions_are_refused() {
        assert_eq!(validate(&mission(vec![]), None), Err(MissionError::NoTasks));
    }

    #[test]
    fn bad_ids_are_refused() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for (id, needle) in [
            ("", "empty"),
            ("has space", "' '"),
            ("a/b", "'/'"),
            ("..", "start with"),
            ("-x", "start with"),
            (long.as_str(), "longer"),
        ] {
            let err = validate(&mission(vec![task(id, &[])]), None).unwrap_err();
            assert!(
                matches!(err, MissionError::InvalidId { .. }),
                "{id}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{id}: {err}");
        }
        assert!(check_id("T001.010").is_ok());
        assert!(check_id("day-1.2-write_tests").is_ok());
    }

    #[test]
    fn duplicate_ids_are_named() {
        let err = validate(
            &mission(vec![task("a", &[]), task("b", &[]), task("a", &[])]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "duplicate task id `a`");
    }

    #[test]
    fn unknown_dependencies_name_task_and_missing_id() {
        let err = validate(
            &mission(vec![task("a", &[]), task("b", &["a", "zz"])]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "task `b` depends on unknown task `zz`");
    }

    #[test]
    fn cycles_are_reported_in_order() {
        let spec = mission(vec![
            task("x", &[]),
            task("b", &["c"]),
            task("a", &["b", "x"]),
            task("c", &["a"]),
            task("after", &["c"]),
        ]);
        let err = validate(&spec, None).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: b -> c -> a -> b");
        let err = validate(&mission(vec![task("self", &["self"])]), None).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: self -> self");
    }

    #[test]
    fn done_tasks_satisfy_dependencies_and_break_cycles() {
        let mut a = task("a", &["b"]);
        a.done = true;
        let spec = mission(vec![a, task("b", &["a"]), task("c", &["b"])]);
        let v = validate(&spec, None).unwrap();
        assert_eq!(ids(&v), ["a", "b", "c"]);
        let ready: Vec<&str> = v.ready().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ready, ["b"]);
    }

    #[test]
    fn limits_are_checked() {
        let mut t = task("t", &[]);
        t.limits.fuel = 0;
        let err = validate(&mission(vec![t]), None).unwrap_err();
        assert!(matches!(err, MissionError::InvalidLimits { ref task, .. } if task == "t"));
        assert!(err.to_string().contains("fuel"), "{err}");
        let mut t = task("t", &[]);
        t.limits.memory_mb = 1 << 20;
        let err = validate(&mission(vec![t]), None).unwrap_err();
        assert!(err.to_string().contains("memory_mb"), "{err}");
    }

    #[test]
    fn requires_and_expected_files_are_checked() {
        let mut t = task("t", &[]);
        t.requires = vec!["gpu model".into()];
        let err = validate(&mission(vec![t]), None).unwrap_err();
        assert!(err.to_string().contains("requires"), "{err}");
        for file in ["", "/etc/passwd", "../x"] {
            let mut t = task("t", &[]);
            t.expect.files = vec![file.into()];
            let err = validate(&mission(vec![t]), None).unwrap_err();
            assert!(err.to_string().contains("expect.files"), "{file}: {err}");
        }
    }

    #[test]
    fn modules_are_checked_on_disk_when_a_folder_is_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("agents")).unwrap();
        std::fs::write(dir.path().join("agents/noop.wat"), "(module)").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let with = |module: &str| {
            let mut t = task("t", &[]);
            t.module = ModuleRef::parse(module).unwrap();
            mission(vec![t])
        };
        assert!(validate(&with("agents/noop.wat"), Some(dir.path())).is_ok());
        assert!(validate(&with("builtin:coder"), Some(dir.path())).is_ok());
        let digest = Digest::of(b"m").to_string();
        assert!(validate(&with(&digest), Some(dir.path())).is_ok());

        let err = validate(&with("agents/missing.wasm"), Some(dir.path())).unwrap_err();
        assert!(matches!(err, MissionError::MissingModule { .. }), "{err:?}");
        assert!(err.to_string().contains("agents/missing.wasm"), "{err}");
        assert!(
            validate(&with("agents/missing.wasm"), None).is_ok(),
            "no folder, no disk check"
        );

        let err = validate(&with("notes.txt"), Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains(".wasm or .wat"), "{err}");
        let err = validate(&with("agents"), Some(dir.path())).unwrap_err();
        assert!(matches!(err, MissionError::InvalidModule { .. }), "{err:?}");
        let err = validate(&with(""), None).unwrap_err();
        assert!(matches!(err, MissionError::InvalidModule { .. }), "{err:?}");
        let err = validate(&with("builtin:"), None).unwrap_err();
        assert!(matches!(err, MissionError::InvalidModule { .. }), "{err:?}");
    }

    #[test]
    fn inputs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("data.txt"), "x").unwrap();
        let with = |input: &str| {
            let mut t = task("t", &[]);
            t.inputs = vec![input.into()];
            mission(vec![t])
        };
        assert!(validate(&with("src/"), Some(dir.path())).is_ok());
        assert!(validate(&with("data.txt"), Some(dir.path())).is_ok());
        assert!(validate(&with(&Digest::of(b"i").to_string()), Some(dir.path())).is_ok());
        let err = validate(&with("nope.txt"), Some(dir.path())).unwrap_err();
        assert!(matches!(err, MissionError::MissingInput { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.txt"), "{err}");
        for bad in ["", "/abs", "../up", "sha256:xyz"] {
            let err = validate(&with(bad), None).unwrap_err();
            assert!(
                matches!(err, MissionError::InvalidInput { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn task_count_is_capped() {
        let tasks = |n: usize| (0..n).map(|i| task(&format!("t{i}"), &[])).collect();
        assert!(validate(&mission(tasks(MAX_TASKS_PER_MISSION)), None).is_ok());
        let err = validate(&mission(tasks(MAX_TASKS_PER_MISSION + 1)), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mission has 50001 tasks, more than the cap of 50000"
        );
    }

    #[test]
    fn per_task_lists_are_capped() {
        let digest = Digest::of(b"i").to_string();
        let fill = |field: &str, t: &mut TaskSpec, n: usize| match field {
            "needs" => t.needs = vec!["root".into(); n],
            "requires" => t.requires = (0..n).map(|i| format!("tag{i}")).collect(),
            "inputs" => t.inputs = (0..n).map(|i| format!("f{i}={digest}")).collect(),
            _ => t.expect.files = (0..n).map(|i| format!("o{i}")).collect(),
        };
        let cases = [
            ("needs", MAX_NEEDS_PER_TASK),
            ("requires", MAX_REQUIRES_PER_TASK),
            ("inputs", MAX_INPUTS_PER_TASK),
            ("expect.files", MAX_EXPECTED_FILES),
        ];
        for (field, max) in cases {
            let with = |n: usize| {
                let mut t = task("t", &[]);
                fill(field, &mut t, n);
                mission(vec![task("root", &[]), t])
            };
            assert!(validate(&with(max), None).is_ok(), "{field} at its cap");
            let err = validate(&with(max + 1), None).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "task `t` has {} `{field}` entries, more than the cap of {max}",
                    max + 1
                )
            );
        }
    }

    #[test]
    fn capability_tags_are_capped_and_plain() {
        for tag in ["a\0b", &"t".repeat(MAX_TAG_BYTES + 1)] {
            let mut t = task("t", &[]);
            t.requires = vec![tag.to_string()];
            let err = validate(&mission(vec![t]), None).unwrap_err().to_string();
            assert!(err.contains("invalid `requires` in task `t`"), "{err}");
            assert!(err.len() < 300, "{err}");
        }
    }

    #[test]
    fn mission_names_have_a_cap_and_no_control_characters() {
        let named = |name: &str| MissionSpec {
            max_fix_rounds: None,
            name: name.to_string(),
            tasks: vec![task("t", &[])],
            workspace: None,
        };
        assert!(validate(&named("example pipeline"), None).is_ok());
        assert!(validate(&named(&"n".repeat(MAX_MISSION_NAME_BYTES)), None).is_ok());
        for (name, needle) in [
            ("", "invalid `name` in the mission: it is empty"),
            ("a\0b", "control character '\\0'"),
            (
                &"n".repeat(5000),
                "5000 bytes long, longer than the cap of 256",
            ),
        ] {
            let err = validate(&named(name), None).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn limits_past_the_hard_maxima_are_refused_by_name() {
        let big = i64::MAX as u64;
        type SetLimit = fn(&mut Limits, u64);
        let setters: [(&str, SetLimit); 4] = [
            ("fuel", |l, v| l.fuel = v),
            ("timeout_ms", |l, v| l.timeout_ms = v),
            ("output_mb", |l, v| l.output_mb = v),
            ("memory_mb", |l, v| l.memory_mb = v),
        ];
        for (field, set) in setters {
            let mut t = task("t", &[]);
            set(&mut t.limits, big);
            let err = validate(&mission(vec![t]), None).unwrap_err();
            assert!(
                matches!(err, MissionError::InvalidLimits { .. }),
                "{field}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "task `t`: invalid limits: {field} must be between 1 and"
                )),
                "{message}"
            );
        }
        let mut t = task("t", &[]);
        t.limits.output_mb = 1 << 20;
        let err = validate(&mission(vec![t]), None).unwrap_err().to_string();
        assert!(
            err.contains("output_mb must be between 1 and 1024"),
            "{err}"
        );
        let mut t = task("t", &[]);
        t.limits = Limits {
            fuel: MAX_FUEL,
            memory_mb: MAX_MEMORY_MB,
            timeout_ms: MAX_TIMEOUT_MS,
            output_mb: MAX_OUTPUT_MB,
        };
        assert!(
            validate(&mission(vec![t]), None).is_ok(),
            "the maxima themselves"
        );
    }

    #[test]
    fn poison_input_names_are_refused_by_name() {
        let digest = Digest::of(b"i").to_string();
        let long = "x".repeat(5000);
        let with = |inputs: Vec<String>| {
            let mut t = task("t", &[]);
            t.inputs = inputs;
            mission(vec![t])
        };
        let cases: Vec<(Vec<String>, &str)> = vec![
            (vec!["./x".into()], "`.` component"),
            (vec![format!("./x={digest}")], "`.` component"),
            (vec![format!("a\0b={digest}")], "NUL"),
            (vec![format!("{long}={digest}")], "5000 bytes long"),
            (
                vec![format!("a/{}={digest}", &long[..300])],
                "300 bytes long",
            ),
            (
                vec![format!("a={digest}"), format!("a/b={digest}")],
                "\"a/b\" lies inside input path \"a\"",
            ),
            (vec!["a".into(), "a/b".into()], "lies inside"),
            (vec!["src/".into(), "src/x.rs".into()], "lies inside"),
            (
                vec![format!("x={digest}"), format!("x={digest}")],
                "listed twice",
            ),
            (vec![format!("input.txt={digest}")], "reserved"),
            (vec![format!("deps/up/f={digest}")], "reserved"),
            (vec![format!("a\\b={digest}")], "backslash"),
            (vec![format!("a:b={digest}")], "Windows"),
            (vec![format!("={digest}")], "empty"),
        ];
        for (inputs, needle) in cases {
            let err = validate(&with(inputs.clone()), None).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(needle), "{inputs:?}: {message}");
            assert!(
                message.starts_with("task `t`:") || message.contains("in task `t`"),
                "{message}"
            );
            assert!(!message.contains('\n') && message.len() < 300, "{message}");
        }
        // A bare digest lands at /input/<hex>, so it may sit beside named inputs.
        assert!(validate(&with(vec![digest.clone(), format!("a={digest}")]), None).is_ok());
    }

    #[test]
    fn module_paths_may_leave_the_folder_but_not_carry_control_characters() {
        let with = |module: &str| {
            let mut t = task("t", &[]);
            t.module = ModuleRef::Path(module.to_string());
            mission(vec![t])
        };
        assert!(validate(&with("../agents/echo.wat"), None).is_ok());
        let err = validate(&with("a\0.wat"), None).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        let long = format!("{}.wat", "m".repeat(5000));
        let err = validate(&with(&long), None).unwrap_err().to_string();
        assert!(
            err.contains("more than the cap of 1024") && err.len() < 300,
            "{err}"
        );
    }

    #[test]
    fn every_error_message_is_one_line() {
        let errors = [
            validate(&mission(vec![]), None).unwrap_err(),
            validate(&mission(vec![task("a", &["a"])]), None).unwrap_err(),
            validate(&mission(vec![task("a b", &[])]), None).unwrap_err(),
        ];
        for err in errors {
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
