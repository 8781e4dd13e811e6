//! Black-box tests of workspaces and the built-in Python agents with real
//! `coditect node` processes on 127.0.0.1: a code base uploaded as a tree
//! (only missing files sent, `.gitignore` respected), the analyzer and the
//! tester on different nodes, a failing test as `tests_failed`, parallel
//! changes of one file as `conflict`, and `mission --diff` / `apply`
//! round-tripping the changes of a chain.
//!
//! The projects are `tests/fixtures/pyprojects/` (see its FIXTURES.md).
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::{Path, PathBuf};
use std::time::Duration;

use coditect_tests::{coditect_output, mesh_flags, wait_for, NodeProcess};
use serde_json::Value;

/// First compile of the Python runtime on a fresh machine, plus slack.
const READY_LIMIT: Duration = Duration::from_secs(240);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pyprojects")
        .join(name)
}

/// A copy of `from` at `to` (files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn wait_python_ready(node: &NodeProcess) {
    wait_for(READY_LIMIT, "the Python runtime ready", || {
        let state = node.status()?["runtimes"]["python"].clone();
        assert_ne!(state["state"], "failed", "{state}\n{}", node.log_text());
        (state["state"] == "ready").then_some(())
    })
}

/// `coditect ARGS --api NODE`: exit code, stdout, stderr.
fn cli(node: &NodeProcess, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--api".to_string(), node.api()]);
    let (status, stdout, stderr) = coditect_output(&all, Duration::from_secs(300));
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// Submits `file` and waits for the mission's end: exit code, id, stderr.
fn submit_wait(node: &NodeProcess, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["submit", file.to_str().unwrap(), "--wait"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(node, &args);
    let id = stdout.lines().next().unwrap_or("").trim().to_string();
    (code, id, stderr)
}

fn task<'a>(mission: &'a Value, id: &str) -> &'a Value {
    mission["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {mission}"))
}

fn output(node: &NodeProcess, mission: &str, task: &str, path: &str) -> String {
    let (code, body) = coditect_tests::http_request(
        "GET",
        &node.http,
        &format!("/api/missions/{mission}/tasks/{task}/output/{path}"),
    )
    .unwrap();
    assert_eq!(code, 200, "{task}/{path}: {body}");
    body
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter_map(|item| item[key].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_analyzer_and_the_tester_run_on_different_nodes_over_an_uploaded_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(
        &dir.path().join("n0"),
        "n0",
        &mesh_flags(100, None, &["--capability", "first"]),
    );
    let boot = first.bootstrap_addr();
    let second = NodeProcess::start(
        &dir.path().join("n1"),
        "n1",
        &mesh_flags(100, Some(&boot), &["--capability", "second"]),
    );
    wait_python_ready(&first);
    wait_python_ready(&second);
    let project = dir.path().join("project");
    copy_tree(&fixture("calc"), &project);
    // Ignored by the project's .gitignore, or git's own: never uploaded.
    std::fs::create_dir_all(project.join("build")).unwrap();
    std::fs::write(project.join("build/junk.o"), "object").unwrap();
    std::fs::write(project.join("run.log"), "noise").unwrap();
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::write(project.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        dir.path().join("mission.toml"),
        "name = \"analyze and test\"\nworkspace = \"project\"\n\
         [[task]]\nid = \"analyze\"\nmodule = \"builtin:analyzer\"\nrequires = [\"first\"]\n\
         [[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"analyze\"]\nrequires = [\"second\"]\n",
    )
    .unwrap();
    let (code, id, stderr) = submit_wait(&first, &dir.path().join("mission.toml"), &[]);
    assert_eq!(
        code,
        0,
        "{stderr}\n{}\n{}",
        first.log_text(),
        second.log_text()
    );
    assert!(stderr.contains("workspace"), "progress on stderr: {stderr}");
    let mission = first.mission(&id).unwrap();
    let analyze = task(&mission, "analyze");
    let test = task(&mission, "test");
    assert_eq!(
        analyze["result"]["node"],
        first.peer_id.as_str(),
        "{analyze}"
    );
    assert_eq!(test["result"]["node"], second.peer_id.as_str(), "{test}");

    // The tree holds the project and nothing ignored.
    let tree = mission["workspace"]["tree"].as_str().unwrap().to_string();
    let (code, manifest) =
        coditect_tests::http_request("GET", &first.http, &format!("/api/blobs/{tree}")).unwrap();
    assert_eq!(code, 200);
    assert!(manifest.starts_with("coditect-tree/1\n"), "{manifest}");
    assert!(manifest.contains(" calc/ops.py\n") && manifest.contains(" tests/test_fib.py\n"));
    for ignored in ["build/", "run.log", ".git/"] {
        assert!(
            !manifest.contains(ignored),
            "{ignored} uploaded:\n{manifest}"
        );
    }

    let report: Value =
        serde_json::from_str(&output(&first, &id, "analyze", "report.json")).unwrap();
    let functions = names(&report["functions"], "qualname");
    for expected in [
        "fib",
        "fib_memo",
        "fib_sequence",
        "add",
        "safe_div",
        "mean",
        "Calculator.add",
        "Calculator.divide",
    ] {
        assert!(
            functions.iter().any(|f| f == expected),
            "{expected} missing from {functions:?}"
        );
    }
    // The exact facts of tests/fixtures/pyprojects/FIXTURES.md.
    assert_eq!(functions.len(), 21, "{functions:?}");
    assert_eq!(report["summary"]["files"], 8, "{}", report["summary"]);
    assert_eq!(report["summary"]["lines"], 228, "{}", report["summary"]);
    let files = names(&report["files"], "path");
    assert!(
        files.iter().any(|f| f == "lib.rs") && files.iter().any(|f| f == "tool.js"),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.starts_with("build/")), "{files:?}");
    assert!(names(&report["classes"], "name").contains(&"Calculator".to_string()));
    assert!(
        !report["todos"].as_array().unwrap().is_empty(),
        "{}",
        report["todos"]
    );
    let summary = output(&first, &id, "analyze", "summary.md");
    assert!(
        summary.contains("calc/ops.py") || summary.contains("functions"),
        "{summary}"
    );

    let tests: Value = serde_json::from_str(&output(&second, &id, "test", "tests.json")).unwrap();
    assert_eq!(
        (tests["passed"].as_u64(), tests["total"].as_u64()),
        (Some(10), Some(10)),
        "{tests}"
    );
    assert_eq!(tests["failed"], 0, "{tests}");
    assert_eq!(tests["errors"], 0, "{tests}");
    let ran = names(&tests["tests"], "name");
    assert_eq!(
        tests["passed"].as_u64().unwrap() as usize,
        ran.len(),
        "{tests}"
    );
    for expected in ["test_fib_of_ten", "test_add", "test_fib_negative_raises"] {
        assert!(
            ran.iter().any(|n| n.ends_with(expected)),
            "{expected} not run: {ran:?}"
        );
    }
    // The parametrized test ran once per case, unittest and plain functions alike.
    assert!(
        ran.iter()
            .filter(|n| n.contains("test_fib_parametrized"))
            .count()
            > 1,
        "{ran:?}"
    );

    // Submitting the same project again sends no file: the node has them all.
    let (code, again, stderr) = submit_wait(&first, &dir.path().join("mission.toml"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(again, id);
    assert!(stderr.contains("the node lacks 0"), "{stderr}");
}

#[test]
fn a_failing_test_fails_the_tester_with_tests_failed_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), "n0", &mesh_flags(100, None, &[]));
    wait_python_ready(&node);
    let project = dir.path().join("failing");
    copy_tree(&fixture("calc_failing"), &project);
    // A markdown tasklist routed to the agents by its words.
    std::fs::write(
        dir.path().join("tasks.md"),
        "# Check the project\n\n- [ ] T001 Analyze the project\n- [ ] T002 Run the tests (depends on T001)\n",
    )
    .unwrap();
    let (code, id, stderr) = submit_wait(
        &node,
        &dir.path().join("tasks.md"),
        &["--workspace", project.to_str().unwrap()],
    );
    assert_eq!(code, 1, "the mission fails: {stderr}");
    let mission = node.mission(&id).unwrap();
    assert_eq!(mission["state"], "failed");
    assert_eq!(task(&mission, "T001")["state"], "succeeded", "{mission}");
    let tester = task(&mission, "T002");
    assert_eq!(tester["agent"], "tester");
    assert_eq!(tester["state"], "failed", "{tester}");
    let violations = tester["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "not retried: {tester}");
    assert_eq!(violations[0]["kind"], "tests_failed", "{tester}");
    let detail = violations[0]["detail"].as_str().unwrap();
    assert!(detail.contains("test_fib_of_ten"), "{detail}");
    assert!(
        !detail.contains("test_fib_small"),
        "only the failing test: {detail}"
    );
    // The failed run's report is kept with its violation and served.
    assert_eq!(
        names(&violations[0]["outputs"], "path"),
        ["tests.json", "violation.json"]
    );
    let tests: Value = serde_json::from_str(&output(&node, &id, "T002", "tests.json")).unwrap();
    assert_eq!(
        (
            tests["passed"].as_u64(),
            tests["failed"].as_u64(),
            tests["total"].as_u64()
        ),
        (Some(9), Some(1), Some(10)),
        "{tests}"
    );
    let failing: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "failed")
        .collect();
    assert_eq!(failing.len(), 1);
    assert!(
        failing[0]["message"]
            .as_str()
            .unwrap()
            .contains("assert 55 == 56"),
        "{}",
        failing[0]
    );
    assert!(
        tester["reason"]
            .as_str()
            .unwrap()
            .contains("test_fib_of_ten"),
        "{tester}"
    );
}

/// A Python task writing `text` to the workspace file `path`.
fn writer(id: &str, needs: &[&str], path: &str, text: &str) -> String {
    let needs: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "[[task]]\nid = \"{id}\"\nmodule = \"builtin:python\"\nneeds = [{}]\n\
         args = [\"-c\", \"import os; os.makedirs('/output/workspace/{dir}', exist_ok=True); open('/output/workspace/{path}', 'w').write('{text}')\"]\n",
        needs.join(", "),
        dir = Path::new(path).parent().unwrap().display(),
    )
}

#[test]
fn parallel_tasks_writing_one_file_conflict_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), "n0", &mesh_flags(100, None, &[]));
    wait_python_ready(&node);
    let project = dir.path().join("project");
    copy_tree(&fixture("calc"), &project);
    let mission = format!(
        "name = \"conflict\"\nworkspace = \"project\"\n{}{}{}",
        writer("left", &[], "calc/ops.py", "LEFT = 1"),
        writer("right", &[], "calc/ops.py", "RIGHT = 2"),
        writer("after", &["left", "right"], "calc/x.py", "x = 1"),
    );
    std::fs::write(dir.path().join("conflict.toml"), mission).unwrap();
    let (code, id, stderr) = submit_wait(&node, &dir.path().join("conflict.toml"), &[]);
    assert_eq!(code, 1, "{stderr}");
    let mission = node.mission(&id).unwrap();
    let (left, right) = (task(&mission, "left"), task(&mission, "right"));
    let states = [
        left["state"].as_str().unwrap(),
        right["state"].as_str().unwrap(),
    ];
    assert!(
        states.contains(&"succeeded") && states.contains(&"failed"),
        "{mission}"
    );
    let loser = if left["state"] == "failed" {
        left
    } else {
        right
    };
    let winner = if left["state"] == "failed" {
        "right"
    } else {
        "left"
    };
    let violation = &loser["violations"][0];
    assert_eq!(violation["kind"], "conflict", "{loser}");
    let detail = violation["detail"].as_str().unwrap();
    assert!(
        detail.contains("calc/ops.py") && detail.contains(winner),
        "{detail}"
    );
    assert_eq!(task(&mission, "after")["state"], "blocked");
    // The final workspace holds the winner's change only.
    let changes = mission["workspace"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["task"], winner);
}

#[test]
fn diff_and_apply_round_trip_the_changes_of_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), "n0", &mesh_flags(100, None, &[]));
    wait_python_ready(&node);
    let project = dir.path().join("project");
    copy_tree(&fixture("calc"), &project);
    let ops = std::fs::read_to_string(project.join("calc/ops.py")).unwrap();
    // `edit` appends to ops.py, adds notes.txt and deletes README.md;
    // `check` (after it) must see exactly that, then rewrites notes.txt.
    let edit = "import os, shutil\n\
        os.makedirs('/output/workspace/calc')\n\
        text = open('/workspace/calc/ops.py').read()\n\
        open('/output/workspace/calc/ops.py', 'w').write(text + 'ADDED = True\\n')\n\
        open('/output/workspace/notes.txt', 'w').write('first\\n')\n\
        open('/output/workspace.deleted', 'w').write('README.md\\n')\n";
    let check = "import os\n\
        assert open('/workspace/calc/ops.py').read().endswith('ADDED = True\\n')\n\
        assert open('/workspace/notes.txt').read() == 'first\\n'\n\
        assert not os.path.exists('/workspace/README.md')\n\
        try:\n    open('/workspace/x', 'w')\n    raise SystemExit('the workspace is writable')\nexcept OSError:\n    pass\n\
        open('/output/workspace/notes.txt', 'w').write('second\\n')\n";
    std::fs::write(dir.path().join("edit.py"), edit).unwrap();
    std::fs::write(dir.path().join("check.py"), check).unwrap();
    std::fs::write(
        dir.path().join("chain.toml"),
        "name = \"chain\"\nworkspace = \"project\"\n\
         [[task]]\nid = \"edit\"\nmodule = \"builtin:python\"\nargs = [\"/input/edit.py\"]\ninputs = [\"edit.py\"]\n\
         [[task]]\nid = \"check\"\nmodule = \"builtin:python\"\nargs = [\"/input/check.py\"]\ninputs = [\"check.py\"]\nneeds = [\"edit\"]\n",
    )
    .unwrap();
    let (code, id, stderr) = submit_wait(&node, &dir.path().join("chain.toml"), &[]);
    let mission = node.mission(&id).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}\n{mission}");

    let (code, diff, stderr) = cli(&node, &["mission", &id, "--diff"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        diff.contains("--- a/calc/ops.py\n+++ b/calc/ops.py\n"),
        "{diff}"
    );
    assert!(diff.contains("+ADDED = True\n"), "{diff}");
    assert!(
        diff.contains("--- /dev/null\n+++ b/notes.txt\n") && diff.contains("+second\n"),
        "{diff}"
    );
    assert!(!diff.contains("+first"), "the later change wins: {diff}");
    assert!(diff.contains("--- a/README.md\n+++ /dev/null\n"), "{diff}");

    // Apply to the checkout that was submitted: it becomes the final workspace.
    let (code, stdout, stderr) = cli(&node, &["apply", &id, project.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 file(s) written, 1 deleted"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(project.join("calc/ops.py")).unwrap(),
        format!("{ops}ADDED = True\n")
    );
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "second\n"
    );
    assert!(!project.join("README.md").exists());
    // Again: nothing left to do.
    let (code, stdout, _) = cli(&node, &["apply", &id, project.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("0 file(s) written, 0 deleted, 3 already up to date"),
        "{stdout}"
    );

    // A checkout where ops.py changed locally since submission: refused, nothing written.
    let other = dir.path().join("other");
    copy_tree(&fixture("calc"), &other);
    std::fs::write(other.join("calc/ops.py"), "local work\n").unwrap();
    let (code, _, stderr) = cli(&node, &["apply", &id, other.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("calc/ops.py") && stderr.contains("changed locally"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("calc/ops.py")).unwrap(),
        "local work\n"
    );
    assert!(!other.join("notes.txt").exists() && other.join("README.md").exists());

    // A mission without a workspace has nothing to diff: a clear error, exit 2.
    std::fs::write(
        dir.path().join("plain.toml"),
        "[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\n",
    )
    .unwrap();
    let (code, plain, _) = submit_wait(&node, &dir.path().join("plain.toml"), &[]);
    assert_eq!(code, 0);
    let (code, _, stderr) = cli(&node, &["mission", &plain, "--diff"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no workspace"), "{stderr}");
}
