//! The fix loop's decision: when a test task fails after a coder task in
//! its chain, which tasks take its place (a fix round).
//!
//! Policy choices, each with its reason:
//! - Only a failure of the built-in tester (`tests_failed`) starts a
//!   round, and only when a coder agent (coder, docs, general) is among
//!   its ancestors: without a change by a model, nobody can fix anything.
//! - A round is two tasks: a coder task (the nearest coder's submission,
//!   seeing what the failed test saw, with the failing run's report under
//!   `/input/failure/`) and a new test task after it, which takes the
//!   failed one's place for its dependents.
//! - Rounds are counted along the chain of `spawned_by`, up to the
//!   mission's `max_fix_rounds` (default [`DEFAULT_MAX_FIX_ROUNDS`]); then
//!   the test's failure fails the mission, with the last failure as reason.
//! - Ids are derived from the originals (`code.fix1`, `test.fix1`), made
//!   unique with a suffix, so a mission's JSON reads as what happened.

use coditect_consensus::mission::{MissionRecord, TaskSubmission, ViolationRecord};

/// Fix rounds a mission allows when it names none.
pub const DEFAULT_MAX_FIX_ROUNDS: u32 = 2;

/// Where the failing run's files land under the fix coder's `/input`.
pub const FAILURE_DIR: &str = "failure";

/// The kinds of agent whose changes a fix round asks to repair.
const CODER_KINDS: &[&str] = &["coder", "docs", "general"];

/// The built-in agent a task runs, from the script it was given
/// (`.coditect/<kind>.py`).
pub fn agent_kind(spec: &TaskSubmission) -> Option<&str> {
    let prefix = format!("{}/", crate::builtin::AGENT_DIR);
    spec.inputs.iter().find_map(|(path, _)| {
        let name = path.strip_prefix(&prefix)?.strip_suffix(".py")?;
        (name != "coditect").then_some(name)
    })
}

/// The tasks of a fix round after test task `failed` failed with
/// `violation`, or `None` when no round is due.
pub fn fix_round(
    mission: &MissionRecord,
    failed: &str,
    violation: &ViolationRecord,
) -> Option<Vec<TaskSubmission>> {
    let tester = &mission.tasks.get(failed)?.spec;
    if agent_kind(tester) != Some("tester") {
        return None;
    }
    // Rounds so far: the spawned_by chain above the failed test.
    let mut round = 1u32;
    let mut at = tester;
    while let Some(parent) = at
        .spawned_by
        .as_deref()
        .and_then(|id| mission.tasks.get(id))
    {
        round += 1;
        at = &parent.spec;
        if round > 64 {
            return None;
        }
    }
    let max = mission.max_fix_rounds.unwrap_or(DEFAULT_MAX_FIX_ROUNDS);
    if round > max {
        return None;
    }
    let coder = nearest_coder(mission, failed)?;
    let fresh = |base: &str| -> String {
        let root = base.split(".fix").next().unwrap_or(base);
        let mut id = format!("{root}.fix{round}");
        let mut n = 2;
        while mission.tasks.contains_key(&id) {
            id = format!("{root}.fix{round}-{n}");
            n += 1;
        }
        id
    };
    let fix_id = fresh(&coder.id);
    let test_id = fresh(&tester.id);
    let mut fix = coder.clone();
    fix.id = fix_id.clone();
    fix.needs = tester.needs.clone();
    fix.done = false;
    fix.spawned_by = Some(failed.to_string());
    fix.title = Some(format!(
        "Fix round {round}: make the failing tests of `{failed}` pass"
    ));
    fix.inputs
        .retain(|(path, _)| !path.starts_with(&format!("{FAILURE_DIR}/")));
    for (path, digest, _) in &violation.outputs {
        fix.inputs
            .push((format!("{FAILURE_DIR}/{path}"), digest.clone()));
    }
    let mut retest = tester.clone();
    retest.id = test_id;
    retest.needs = vec![fix_id];
    retest.done = false;
    retest.spawned_by = Some(failed.to_string());
    retest.title = Some(format!("Fix round {round}: run the tests again"));
    Some(vec![fix, retest])
}

/// The coder task nearest above `task` (breadth first over its needs).
fn nearest_coder<'a>(mission: &'a MissionRecord, task: &str) -> Option<&'a TaskSubmission> {
    let mut queue: std::collections::VecDeque<&str> = mission
        .tasks
        .get(task)?
        .spec
        .needs
        .iter()
        .map(String::as_str)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let Some(record) = mission.tasks.get(id) else {
            continue;
        };
        if agent_kind(&record.spec).is_some_and(|kind| CODER_KINDS.contains(&kind)) {
            return Some(&record.spec);
        }
        queue.extend(record.spec.needs.iter().map(String::as_str));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_consensus::mission::{MissionState, TaskLimits, TaskResult, TaskState};

    fn agent(id: &str, kind: &str, needs: &[&str]) -> TaskSubmission {
        TaskSubmission {
            id: id.into(),
            module: "sha256:python".into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            requires: vec!["wasm".into()],
            priority: 1,
            input: None,
            inputs: vec![(format!(".coditect/{kind}.py"), format!("sha256:{kind}"))],
            limits: TaskLimits {
                fuel: 1,
                memory_mb: 1,
                timeout_ms: 1,
                output_mb: 1,
                max_llm_calls: 1,
                max_tokens: 1,
            },
            expect: Default::default(),
            done: false,
            title: None,
            agent: None,
            args: Vec::new(),
            workspace: None,
            spawned_by: None,
        }
    }

    fn ok(node: u64, attempt: u32) -> TaskResult {
        TaskResult {
            node,
            attempt,
            exit_code: Some(0),
            stdout_digest: String::new(),
            stdout_head: String::new(),
            outputs: Vec::new(),
            fuel_used: 0,
            wall_ms: 0,
            changes: Vec::new(),
            llm_calls: Vec::new(),
        }
    }

    fn failure(node: u64, attempt: u32) -> ViolationRecord {
        ViolationRecord {
            attempt,
            node,
            kind: "tests_failed".into(),
            detail: "1 failed: test_fib".into(),
            outputs: vec![("tests.json".into(), "sha256:report".into(), 10)],
            llm_calls: Vec::new(),
        }
    }

    fn run_ok(mission: &mut MissionRecord, id: &str, seq: &mut u64) {
        let attempt = mission.tasks[id].attempt;
        mission.assign(id, 1, attempt, 0).unwrap();
        mission.complete(id, ok(1, attempt + 1), seq).unwrap();
    }

    /// Fails test task `id` the way the leader does, with its fix round.
    fn fail_test(mission: &mut MissionRecord, id: &str, seq: &mut u64) -> bool {
        let attempt = mission.tasks[id].attempt;
        mission.assign(id, 1, attempt, 0).unwrap();
        let violation = failure(1, attempt + 1);
        let spawn = fix_round(mission, id, &violation).unwrap_or_default();
        let spawned = !spawn.is_empty();
        mission
            .fail_and_spawn(id, violation, None, Some("tests_failed".into()), spawn, seq)
            .unwrap();
        spawned
    }

    fn mission(tasks: Vec<TaskSubmission>) -> (MissionRecord, u64) {
        let mut seq = 0;
        let m = MissionRecord::new("m1".into(), "m".into(), tasks, 0, &mut seq);
        (m, seq)
    }

    #[test]
    fn a_failed_test_after_a_coder_is_fixed_and_the_mission_can_succeed() {
        let (mut m, mut seq) = mission(vec![
            agent("analyze", "analyzer", &[]),
            agent("code", "coder", &["analyze"]),
            agent("test", "tester", &["code"]),
            agent("ship", "noop", &["test"]),
        ]);
        run_ok(&mut m, "analyze", &mut seq);
        run_ok(&mut m, "code", &mut seq);
        assert!(fail_test(&mut m, "test", &mut seq));
        let fix = &m.tasks["code.fix1"];
        assert_eq!(fix.spec.needs, ["code"]);
        assert_eq!(fix.spec.spawned_by.as_deref(), Some("test"));
        assert!(fix
            .spec
            .inputs
            .contains(&("failure/tests.json".into(), "sha256:report".into())));
        assert_eq!(fix.state, TaskState::Ready);
        assert_eq!(m.tasks["test.fix1"].spec.needs, ["code.fix1"]);
        assert_eq!(
            m.tasks["ship"].spec.needs,
            ["test.fix1"],
            "the heir is needed instead"
        );
        assert_eq!(m.tasks["ship"].state, TaskState::Pending, "not blocked");
        assert_eq!(m.tasks["test"].superseded_by.as_deref(), Some("test.fix1"));
        assert_eq!(m.state, MissionState::Running);
        run_ok(&mut m, "code.fix1", &mut seq);
        run_ok(&mut m, "test.fix1", &mut seq);
        run_ok(&mut m, "ship", &mut seq);
        assert_eq!(
            m.state,
            MissionState::Succeeded,
            "the superseded failure does not count"
        );
    }

    #[test]
    fn rounds_stop_at_the_maximum_and_then_the_mission_fails() {
        let (mut m, mut seq) = mission(vec![
            agent("code", "coder", &[]),
            agent("test", "tester", &["code"]),
        ]);
        m.max_fix_rounds = Some(2);
        run_ok(&mut m, "code", &mut seq);
        assert!(fail_test(&mut m, "test", &mut seq));
        run_ok(&mut m, "code.fix1", &mut seq);
        assert!(fail_test(&mut m, "test.fix1", &mut seq));
        run_ok(&mut m, "code.fix2", &mut seq);
        assert!(
            !fail_test(&mut m, "test.fix2", &mut seq),
            "a third round is not due"
        );
        assert_eq!(m.state, MissionState::Failed);
        assert!(m.tasks["test.fix2"]
            .reason
            .as_deref()
            .unwrap()
            .contains("tests_failed"));
    }

    #[test]
    fn no_round_without_a_coder_or_for_other_agents() {
        let (mut m, mut seq) = mission(vec![
            agent("analyze", "analyzer", &[]),
            agent("test", "tester", &["analyze"]),
        ]);
        run_ok(&mut m, "analyze", &mut seq);
        assert!(!fail_test(&mut m, "test", &mut seq));
        assert_eq!(m.state, MissionState::Failed);
        let (m, _) = mission(vec![agent("code", "coder", &[])]);
        assert!(fix_round(&m, "code", &failure(1, 1)).is_none());
        let mut zero = m.clone();
        zero.max_fix_rounds = Some(0);
        assert!(fix_round(&zero, "code", &failure(1, 1)).is_none());
    }

    #[test]
    fn a_spawn_that_does_not_fit_is_refused_by_apply() {
        let (mut m, mut seq) = mission(vec![
            agent("code", "coder", &[]),
            agent("test", "tester", &["code"]),
        ]);
        run_ok(&mut m, "code", &mut seq);
        let attempt = m.tasks["test"].attempt;
        m.assign("test", 1, attempt, 0).unwrap();
        let mut bad = agent("code", "coder", &["test"]);
        bad.spawned_by = Some("test".into());
        m.fail_and_spawn(
            "test",
            failure(1, attempt + 1),
            None,
            None,
            vec![bad],
            &mut seq,
        )
        .unwrap();
        assert!(m.tasks["test"]
            .reason
            .as_deref()
            .unwrap()
            .contains("no fix round"));
        assert_eq!(m.state, MissionState::Failed);
    }
}
