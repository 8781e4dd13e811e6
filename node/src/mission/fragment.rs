//! A running task's own subtasks: a mission fragment it leaves as
//! `/output/subtasks.toml` (a planner's plan), read by the leader when it
//! commits the task's result and validated like a submission. The tasks
//! join the running mission through the same Raft entry as the result
//! (`MissionRecord::complete_and_spawn`): new ids, no cycle, a bounded
//! count, built-in agents or modules every node holds.

use std::collections::BTreeSet;

use coditect_consensus::mission::{MissionRecord, TaskSubmission};
use coditect_memory::BlobStore;

use super::spec::MissionSpec;

/// The file a task leaves its subtasks in, under `/output`.
pub const SUBTASKS_FILE: &str = "subtasks.toml";

/// Largest fragment read, bytes.
pub const MAX_FRAGMENT_BYTES: u64 = 256 * 1024;

/// What a fragment is checked against: the running mission's name,
/// workspace and task ids.
#[derive(Clone, Debug)]
pub struct MissionView {
    /// The mission's name.
    pub name: String,
    /// Its workspace tree digest.
    pub workspace: Option<String>,
    /// Its task ids.
    pub tasks: BTreeSet<String>,
}

impl MissionView {
    /// The view of `mission`.
    pub fn of(mission: &MissionRecord) -> Self {
        MissionView {
            name: mission.name.clone(),
            workspace: mission.workspace().map(str::to_string),
            tasks: mission.tasks.keys().cloned().collect(),
        }
    }
}

/// The submissions of the fragment `text` that task `spawner` of `mission`
/// left, in dependency order: needs may name the fragment's own tasks or
/// the mission's; every task sees the mission's workspace. The error is
/// one line naming the problem.
pub fn fragment_submissions(
    text: &str,
    mission: &MissionView,
    spawner: &str,
    blobs: &BlobStore,
) -> Result<Vec<TaskSubmission>, String> {
    let mut spec: MissionSpec = super::parse_toml(text).map_err(|e| e.to_string())?;
    if spec.workspace.is_some() {
        return Err("a fragment names no workspace: its tasks see the mission's".into());
    }
    if spec.max_fix_rounds.is_some() {
        return Err("a fragment sets no max_fix_rounds: the mission's holds".into());
    }
    spec.name = mission.name.clone();
    spec.workspace = mission.workspace.clone();
    let own: BTreeSet<String> = spec.tasks.iter().map(|t| t.id.clone()).collect();
    // Needs outside the fragment are the mission's tasks: set aside for
    // validation, which knows only the fragment.
    let mut outside: Vec<Vec<String>> = Vec::with_capacity(spec.tasks.len());
    for task in &mut spec.tasks {
        if let Some(taken) = own.iter().find(|id| mission.tasks.contains(*id)) {
            return Err(format!("task id `{taken}` is taken in the mission"));
        }
        let (inner, external): (Vec<String>, Vec<String>) =
            task.needs.drain(..).partition(|need| own.contains(need));
        if let Some(unknown) = external.iter().find(|need| !mission.tasks.contains(*need)) {
            return Err(format!(
                "task `{}` needs `{unknown}`, which is neither in the fragment nor in the mission",
                task.id
            ));
        }
        task.needs = inner;
        outside.push(external);
    }
    let externals: std::collections::BTreeMap<String, Vec<String>> = spec
        .tasks
        .iter()
        .map(|t| t.id.clone())
        .zip(outside)
        .collect();
    let validated = super::validate(&spec, None).map_err(|e| e.to_string())?;
    let mut tasks = super::to_submissions(&validated, blobs).map_err(|e| e.to_string())?;
    for task in &mut tasks {
        if let Some(external) = externals.get(&task.id) {
            task.needs.extend(external.iter().cloned());
        }
        // Every subtask comes after its spawner.
        if task.needs.iter().all(|need| !own.contains(need))
            && !task.needs.iter().any(|n| n == spawner)
        {
            task.needs.push(spawner.to_string());
        }
        task.spawned_by = Some(spawner.to_string());
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_consensus::mission::TaskExpect;

    fn task(id: &str, needs: &[&str]) -> TaskSubmission {
        TaskSubmission {
            id: id.into(),
            module: crate::builtin::digest("noop").unwrap().to_string(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            requires: vec!["wasm".into()],
            priority: 2,
            input: None,
            inputs: Vec::new(),
            limits: crate::worker::task_limits(&Default::default()),
            expect: TaskExpect::default(),
            done: false,
            title: None,
            agent: None,
            args: Vec::new(),
            workspace: None,
            spawned_by: None,
        }
    }

    fn store(dir: &std::path::Path) -> BlobStore {
        let blobs = BlobStore::open(dir.join("blobs"), 1 << 20).unwrap();
        crate::builtin::seed(&blobs).unwrap();
        blobs
    }

    fn mission() -> MissionView {
        let mut seq = 0;
        MissionView::of(&MissionRecord::new(
            "m1".into(),
            "m".into(),
            vec![task("plan", &[]), task("ship", &["plan"])],
            0,
            &mut seq,
        ))
    }

    #[test]
    fn a_fragment_becomes_submissions_after_its_spawner() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let text = "[[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\ninput = \"do it\"\n\
                    [[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"code\"]\n";
        let tasks = fragment_submissions(text, &mission(), "plan", &blobs).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].id, "code");
        assert_eq!(tasks[0].needs, ["plan"]);
        assert!(tasks[0].requires.contains(&"llm".to_string()));
        assert_eq!(tasks[1].needs, ["code"]);
        assert!(tasks
            .iter()
            .all(|t| t.spawned_by.as_deref() == Some("plan")));
    }

    #[test]
    fn bad_fragments_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        for (text, needle) in [
            ("[[task]]\nid = \"ship\"\nmodule = \"builtin:noop\"\n", "taken"),
            ("[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\nneeds = [\"ghost\"]\n", "ghost"),
            ("[[task]]\nid = \"a\"\nmodule = \"agents/x.wasm\"\n", "path cannot be read"),
            ("workspace = \"/\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\n", "workspace"),
            (
                "[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\nneeds = [\"b\"]\n[[task]]\nid = \"b\"\nmodule = \"builtin:noop\"\nneeds = [\"a\"]\n",
                "cycle",
            ),
            ("nonsense [[", "invalid mission TOML"),
        ] {
            let why = fragment_submissions(text, &mission(), "plan", &blobs).unwrap_err();
            assert!(why.contains(needle), "{needle}: {why}");
        }
    }
}
