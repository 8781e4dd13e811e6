//! Mission validation: everything that must hold before a mission is
//! committed, and the topological order the scheduler starts from.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Component, Path};
use std::str::FromStr;

use coditect_memory::Digest;

use super::error::{one_line, MissionError};
use super::spec::{MissionSpec, ModuleRef, Priority, TaskSpec, BUILTIN_PREFIX};

/// Longest task id accepted; ids appear in URLs and in every task record.
pub const MAX_ID_LEN: usize = 128;

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

/// Checks a mission and orders its tasks. With `base_dir` (the mission
/// file's folder, on the submitting machine) module paths and inputs must
/// exist there; without it only their form is checked. `builtin:` modules
/// and `sha256:` digests never touch the disk.
///
/// Checks, in this order, stopping at the first problem: at least one task;
/// per task in file order: its id, its `requires`, its limits, its
/// `expect.files`, its module and its inputs; then duplicate ids, unknown
/// dependencies, and cycles. A dependency on a done task is satisfied, and a
/// done task waits for nothing, so cycles only count among not-done tasks.
pub fn validate(
    spec: &MissionSpec,
    base_dir: Option<&Path>,
) -> Result<ValidatedMission, MissionError> {
    if spec.tasks.is_empty() {
        return Err(MissionError::NoTasks);
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
                    missing: dep.clone(),
                })?;
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
        needs.push(deps);
    }

    let order = topological_order(spec, &needs)?;
    Ok(ValidatedMission {
        spec: spec.clone(),
        order,
        needs,
    })
}

/// Checks one task id: not empty, at most [`MAX_ID_LEN`] bytes, only
/// `A-Z a-z 0-9 . _ -`, and starting with a letter or digit (so `.` and `..`
/// can never be an id in a URL path).
pub fn check_id(id: &str) -> Result<(), MissionError> {
    let bad = |reason: &str| {
        Err(MissionError::InvalidId {
            id: id.to_string(),
            reason: reason.to_string(),
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("it is longer than 128 characters");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(MissionError::InvalidId {
            id: id.to_string(),
            reason: format!("character {c:?} is not allowed (use A-Z a-z 0-9 . _ -)"),
        });
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    Ok(())
}

/// The per-task checks that need no other task.
fn check_task(task: &TaskSpec, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let id = &task.id;
    let place = || format!("task `{id}`");
    if let Some(tag) = task
        .requires
        .iter()
        .find(|r| r.is_empty() || r.chars().any(char::is_whitespace))
    {
        return Err(MissionError::InvalidField {
            field: "requires".into(),
            place: place(),
            message: format!("capability tag {tag:?} is empty or contains whitespace"),
        });
    }
    task.limits
        .validate()
        .map_err(|e| MissionError::InvalidLimits {
            task: id.clone(),
            message: one_line(&e.to_string()),
        })?;
    for file in &task.expect.files {
        if let Some(reason) = relative_path_problem(file) {
            return Err(MissionError::InvalidField {
                field: "expect.files".into(),
                place: place(),
                message: format!("{file:?} {reason}"),
            });
        }
    }
    check_module(task, base_dir)?;
    for input in &task.inputs {
        check_input(task, input, base_dir)?;
    }
    Ok(())
}

fn check_module(task: &TaskSpec, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let ModuleRef::Path(path) = &task.module else {
        return Ok(());
    };
    let invalid = |reason: &str| {
        Err(MissionError::InvalidModule {
            task: task.id.clone(),
            module: path.clone(),
            reason: reason.to_string(),
        })
    };
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

fn check_input(task: &TaskSpec, input: &str, base_dir: Option<&Path>) -> Result<(), MissionError> {
    let invalid = |reason: String| {
        Err(MissionError::InvalidInput {
            task: task.id.clone(),
            input: input.to_string(),
            reason,
        })
    };
    // Uploaded forms: `sha256:<hex>`, or `<path>=sha256:<hex>` keeping the
    // file's path under /input (what `coditect submit` writes).
    let (input, uploaded) = match input.split_once("=sha256:") {
        Some((path, hex)) => (path, Some(format!("sha256:{hex}"))),
        None if input.starts_with("sha256:") => ("", Some(input.to_string())),
        None => (input, None),
    };
    if let Some(digest) = uploaded {
        if let Err(e) = Digest::from_str(&digest) {
            return invalid(one_line(&e.to_string()));
        }
        if input.is_empty() {
            return Ok(());
        }
        return match relative_path_problem(input) {
            Some(reason) => invalid(reason.to_string()),
            None => Ok(()),
        };
    }
    // An input keeps its relative path under /input, so it must stay inside.
    if let Some(reason) = relative_path_problem(input) {
        return invalid(reason.to_string());
    }
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
    Ok(())
}

/// Why `path` is not a relative path that stays inside its folder, if it is not.
fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    let p = Path::new(path);
    if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return Some("must be a relative path");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some("must not contain `..`");
    }
    None
}

/// Kahn's algorithm over the edges between not-done tasks; on failure, one
/// cycle among the tasks left over, in dependency order.
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
    use super::*;

    fn task(id: &str, needs: &[&str]) -> TaskSpec {
        let mut task = TaskSpec::new(id, ModuleRef::Path("builtin:noop".into()));
        task.needs = needs.iter().map(|s| s.to_string()).collect();
        task
    }

    fn mission(tasks: Vec<TaskSpec>) -> MissionSpec {
        MissionSpec {
            name: "m".into(),
            tasks,
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
