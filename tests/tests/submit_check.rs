//! `coditect submit FILE --check [--json]`: the parsed task graph and its
//! warnings, without a mesh; exit 0 when valid, 2 with one error line when
//! not. And a markdown mission submitted for real: its warnings on stderr,
//! each task's `title` and `agent` in the mission JSON.

use std::time::Duration;

use coditect_tests::{coditect_output, start_mesh, wait_for};

/// No node listens here: `--check` must never try it.
const NO_MESH: &str = "http://127.0.0.1:9";

fn check(path: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "submit".to_string(),
        path.display().to_string(),
        "--check".into(),
        "--api".into(),
        NO_MESH.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(30));
    (status.code(), stdout, stderr)
}

#[test]
fn check_prints_the_graph_as_json_without_a_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.md");
    std::fs::write(
        &file,
        "# Tasks: Albums\n\n## Phase 1: Setup\n\n\
         - [x] T001 Create project structure\n\
         - [ ] T002 [P] Configure linting\n\
         - [ ] T003 [P] Write the README\n\n\
         ## Phase 2: User Story 1 (Priority: P1)\n\n\
         - [ ] T004 [US1] Implement the album model in src/album.py (after T999)\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&file, &["--json"]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let tasks = report["tasks"].as_array().expect("tasks");
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T001", "T002", "T003", "T004"]);
    for task in tasks {
        let mut keys: Vec<&str> = task
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["agent", "done", "id", "needs", "priority", "title"]);
        assert!(
            task["title"].is_string() && task["agent"].is_string(),
            "{task}"
        );
    }
    let t004 = &tasks[3];
    assert_eq!(
        t004["title"],
        "Implement the album model in src/album.py (after T999)"
    );
    assert_eq!(t004["agent"], "coder");
    assert_eq!(t004["priority"], "P1");
    assert_eq!(t004["needs"], serde_json::json!(["T002", "T003"]));
    assert_eq!(t004["done"], false);
    assert_eq!(tasks[0]["done"], true);
    assert_eq!(tasks[2]["agent"], "docs");
    let warnings = report["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].as_str().unwrap().contains("`T999`"),
        "{warnings:?}"
    );

    // Without --json: one line per task, the warning on stderr.
    let (code, stdout, stderr) = check(&file, &[]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("T004") && l.contains("needs T002, T003")),
        "{stdout}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("T999")),
        "{stderr}"
    );
}

#[test]
fn check_refuses_a_file_without_tasks_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.md");
    std::fs::write(
        &file,
        "# Notes\n\nWe should:\n- add albums\n- maybe sharing\n",
    )
    .unwrap();
    for extra in [&[][..], &["--json"][..]] {
        let (code, stdout, stderr) = check(&file, extra);
        assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with("error: no checkbox tasks"), "{stderr}");
        for format in ["spec-kit", "Kiro", "seed"] {
            assert!(lines[0].contains(format), "{stderr}");
        }
        assert!(stdout.is_empty(), "{stdout}");
    }

    // A cycle is refused by name the same way.
    let cycle = dir.path().join("cycle.md");
    std::fs::write(&cycle, "- [ ] T1 a, after T2\n- [ ] T2 b, after T1\n").unwrap();
    let (code, _, stderr) = check(&cycle, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim(), "error: dependency cycle: T1 -> T2 -> T1");
}

#[test]
fn a_submitted_tasklist_warns_on_stderr_and_its_tasks_carry_title_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_mesh(dir.path(), 1, 100, |_| vec![]);
    let file = dir.path().join("tasks.md");
    std::fs::write(
        &file,
        "# Implementation Plan\n\n\
         - [x] 1. Set up the project\n\
         - [ ] 2. Storage\n\
         - [ ] 2.1 Write the repository tests\n  - _Requirements: 1.1_\n\
         - [ ] 2.2 Implement the repository\n  - _Depends: 2.1, 2.9_\n",
    )
    .unwrap();
    let args = vec![
        "submit".to_string(),
        file.display().to_string(),
        "--api".into(),
        nodes[0].api(),
    ];
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    let id = stdout.trim().to_string();
    assert!(!id.is_empty() && !id.contains('\n'), "{stdout}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("`2.9`")),
        "{stderr}"
    );
    let mission = wait_for(Duration::from_secs(30), "the mission view", || {
        nodes[0]
            .mission(&id)
            .filter(|m| m["tasks"].as_array().is_some_and(|t| t.len() == 3))
    });
    let tasks = mission["tasks"].as_array().unwrap();
    let by_id = |wanted: &str| {
        tasks
            .iter()
            .find(|t| t["id"] == wanted)
            .unwrap_or_else(|| panic!("no task {wanted} in {mission}"))
    };
    assert_eq!(by_id("1")["title"], "Set up the project");
    assert_eq!(by_id("2.1")["title"], "Write the repository tests");
    assert_eq!(by_id("2.1")["agent"], "tester");
    assert_eq!(by_id("2.2")["agent"], "coder");
    assert_eq!(by_id("2.2")["needs"], serde_json::json!(["2.1"]));
}
