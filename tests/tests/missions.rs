//! Black-box tests of missions with real `coditect node` processes on
//! 127.0.0.1: submission through the CLI, placement across nodes, results
//! committed exactly once through leader and worker crashes, capability
//! pinning, retries that end in failure and block dependents, cancellation,
//! and work stealing.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use coditect_tests::{coditect_output, string_list, wait_for, NodeProcess};
use serde_json::Value;

/// Fast timings: heartbeat 100 ms (so a node lease is 1.5 s), a voter
/// silent for 3 s is replaced.
fn flags(bootstrap: Option<&str>, extra: &[&str]) -> Vec<String> {
    coditect_tests::mesh_flags(100, bootstrap, extra)
}

/// A mesh of `count` nodes with heartbeat 100 ms; `extra(i)` adds flags to node i.
fn start_mesh(
    dir: &Path,
    count: usize,
    extra: impl Fn(usize) -> Vec<&'static str>,
) -> Vec<NodeProcess> {
    coditect_tests::start_mesh(dir, count, 100, extra)
}

/// A module that counts to `n` (about 1 ms per million on this machine's
/// debug-free wasmtime code) and exits 0.
fn busy_wat(n: u64) -> String {
    format!(
        "(module (memory (export \"memory\") 1)\n  (func (export \"_start\") (local $i i64)\n    (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))\n      (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))))\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// `coditect submit FILE` (with `--wait` if asked); returns exit code, mission id, stderr.
fn submit(node: &NodeProcess, file: &Path, wait: bool) -> (i32, String, String) {
    let mut args = vec![
        "submit".to_string(),
        file.display().to_string(),
        "--api".into(),
        node.api(),
    ];
    if wait {
        args.push("--wait".into());
    }
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(180));
    (
        status.code().unwrap_or(-1),
        stdout.trim().to_string(),
        stderr,
    )
}

fn tasks(mission: &Value) -> Vec<Value> {
    mission["tasks"].as_array().cloned().unwrap_or_default()
}

fn task<'a>(mission: &'a Value, id: &str) -> &'a Value {
    mission["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {mission}"))
}

fn count_state(mission: &Value, state: &str) -> usize {
    tasks(mission)
        .iter()
        .filter(|t| t["state"] == state)
        .count()
}

/// Waits until the mission (read from `node`) is in `state`.
fn wait_state(node: &NodeProcess, id: &str, state: &str, limit: Duration) -> Value {
    wait_for(limit, &format!("mission {id} {state}"), || {
        node.mission(id).filter(|m| m["state"] == state)
    })
}

/// Every task succeeded with exactly one committed result.
fn assert_all_succeeded_once(mission: &Value, expected: usize) {
    let tasks = tasks(mission);
    assert_eq!(tasks.len(), expected, "{mission}");
    for task in &tasks {
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["results_committed"], 1, "{task}");
        assert!(task["result"]["exit_code"] == 0, "{task}");
    }
}

/// A mission of `count` tasks: eight roots, then every task needs the one
/// eight before it and some the one three before, so dependencies cross nodes.
fn layered_mission(module: &str, count: usize) -> String {
    let mut text = String::from("name = \"layered\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[task]]\nid = \"t{i:02}\"\nmodule = \"{module}\"\n"
        ));
        let mut needs = Vec::new();
        if i >= 8 {
            needs.push(format!("\"t{:02}\"", i - 8));
        }
        if i >= 8 && i % 3 == 0 {
            needs.push(format!("\"t{:02}\"", i - 3));
        }
        text.push_str(&format!("needs = [{}]\n", needs.join(", ")));
    }
    text
}

#[test]
fn a_forty_task_mission_with_dependencies_completes_across_five_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_mesh(dir.path(), 5, |_| vec!["--slots", "2"]);
    write(dir.path(), "busy.wat", &busy_wat(30_000_000));
    let file = write(dir.path(), "layered.toml", &layered_mission("busy.wat", 40));
    let (code, id, stderr) = submit(&nodes[4], &file, true);
    assert_eq!(code, 0, "submit --wait failed: {stderr}");
    assert!(id.starts_with('m'), "stdout is the mission id only: {id:?}");
    assert!(
        stderr.contains("40/40 succeeded"),
        "progress is streamed to stderr: {stderr}"
    );
    // Every node answers for the mission, members from their replica and
    // workers through the leader.
    for node in &nodes {
        let mission = wait_state(node, &id, "succeeded", Duration::from_secs(10));
        assert_all_succeeded_once(&mission, 40);
    }
    let mission = nodes[0].mission(&id).unwrap();
    let ran_on: BTreeSet<String> = tasks(&mission)
        .iter()
        .filter_map(|t| t["result"]["node"].as_str().map(str::to_string))
        .collect();
    assert!(ran_on.len() >= 3, "tasks spread over nodes: {ran_on:?}");
    let t08 = task(&mission, "t08");
    assert_eq!(t08["needs"], serde_json::json!(["t00"]));
}

#[test]
fn leader_and_worker_sigkill_mid_mission_leave_every_task_succeeded_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_mesh(dir.path(), 5, |_| vec!["--slots", "2"]);
    write(dir.path(), "busy.wat", &busy_wat(120_000_000));
    let file = write(dir.path(), "layered.toml", &layered_mission("busy.wat", 40));
    let status = nodes[0].status().unwrap();
    let leader = status["leader"].as_str().unwrap().to_string();
    let voters = string_list(&status, "voters");
    let index_of =
        |peer: &str, nodes: &[NodeProcess]| nodes.iter().position(|n| n.peer_id == peer).unwrap();
    let leader_index = index_of(&leader, &nodes);
    let worker_index = (0..5)
        .find(|i| !voters.contains(&nodes[*i].peer_id))
        .expect("a non-voter among five nodes");
    let api_index = (0..5)
        .find(|i| *i != leader_index && *i != worker_index)
        .unwrap();
    let (code, id, stderr) = submit(&nodes[api_index], &file, false);
    assert_eq!(code, 0, "{stderr}");

    // Kill the leader once work is under way, then a worker holding tasks.
    wait_for(Duration::from_secs(60), "some tasks done", || {
        let m = nodes[api_index].mission(&id)?;
        (count_state(&m, "succeeded") >= 6).then_some(())
    });
    nodes[leader_index].kill();
    let worker_peer = nodes[worker_index].peer_id.clone();
    wait_for(Duration::from_secs(60), "the worker holding a task", || {
        let m = nodes[api_index].mission(&id)?;
        tasks(&m)
            .iter()
            .any(|t| t["owner"].as_str() == Some(worker_peer.as_str()))
            .then_some(())
    });
    nodes[worker_index].kill();

    let mission = wait_state(
        &nodes[api_index],
        &id,
        "succeeded",
        Duration::from_secs(120),
    );
    assert_all_succeeded_once(&mission, 40);
    // The mission's history shows the crash: some run was lost with its node
    // or some queued task was placed again.
    let replaced = tasks(&mission).iter().any(|t| {
        t["violations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["kind"] == "lost_node"))
            || t["attempt"].as_u64().unwrap_or(0) > 1
    });
    assert!(
        replaced,
        "no task was taken back from a dead node: {mission}"
    );
    // A survivor's view agrees on every result.
    let other = (0..5)
        .find(|i| *i != leader_index && *i != worker_index && *i != api_index)
        .unwrap();
    let again = wait_state(&nodes[other], &id, "succeeded", Duration::from_secs(10));
    assert_all_succeeded_once(&again, 40);
}

#[test]
fn a_task_requiring_a_tag_runs_only_where_it_is_offered_and_unmet_ones_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_mesh(dir.path(), 3, |i| {
        if i == 2 {
            vec!["--capability", "gpu=a100"]
        } else {
            vec![]
        }
    });
    let mut text = String::from("name = \"pinned\"\n");
    for i in 0..6 {
        text.push_str(&format!(
            "[[task]]\nid = \"gpu{i}\"\nmodule = \"builtin:noop\"\nrequires = [\"wasm\", \"gpu\"]\n"
        ));
    }
    text.push_str("[[task]]\nid = \"tpu\"\nmodule = \"builtin:noop\"\nrequires = [\"tpu\"]\n");
    let file = write(dir.path(), "pinned.toml", &text);
    let (code, id, stderr) = submit(&nodes[0], &file, false);
    assert_eq!(code, 0, "{stderr}");
    let mission = wait_for(Duration::from_secs(30), "the gpu tasks", || {
        let m = nodes[1].mission(&id)?;
        let unmet = task(&m, "tpu")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no live node offers `tpu`"));
        (count_state(&m, "succeeded") == 6 && unmet).then_some(m)
    });
    for i in 0..6 {
        let result = &task(&mission, &format!("gpu{i}"))["result"];
        assert_eq!(result["node"], nodes[2].peer_id.as_str(), "{mission}");
    }
    assert_eq!(task(&mission, "tpu")["state"], "ready");
    assert_eq!(mission["state"], "running");

    // Cancel: the waiting task is dropped and the mission ends cancelled.
    let (status, _, stderr) = coditect_output(
        &["cancel".into(), id.clone(), "--api".into(), nodes[1].api()],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let mission = wait_state(&nodes[0], &id, "cancelled", Duration::from_secs(10));
    assert_eq!(task(&mission, "tpu")["state"], "cancelled");
    assert_eq!(task(&mission, "gpu0")["state"], "succeeded");
}

#[test]
fn a_failing_task_is_retried_with_backoff_then_fails_and_blocks_its_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_mesh(dir.path(), 3, |_| vec![]);
    let text = r#"name = "doomed"
[[task]]
id = "bad"
module = "builtin:noop"
[task.expect]
stdout_contains = "never printed"
[[task]]
id = "after-bad"
module = "builtin:noop"
needs = ["bad"]
[[task]]
id = "last"
module = "builtin:noop"
needs = ["after-bad"]
[[task]]
id = "fine"
module = "builtin:noop"
"#;
    let file = write(dir.path(), "doomed.toml", text);
    let started = std::time::Instant::now();
    let (code, id, stderr) = submit(&nodes[1], &file, true);
    assert_eq!(code, 1, "a failed mission exits 1: {stderr}");
    // At the end, what did not succeed is listed with its reason; what did
    // is not.
    assert!(stderr.contains("  bad failed: "), "{stderr}");
    assert!(
        stderr.contains("  after-bad blocked: blocked by `bad`"),
        "{stderr}"
    );
    assert!(!stderr.contains("  fine "), "{stderr}");
    // Backoff: 1 s before the second attempt, 2 s before the third.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let mission = nodes[0].mission(&id).unwrap();
    assert_eq!(mission["state"], "failed");
    let bad = task(&mission, "bad");
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["attempts"], 3, "{bad}");
    let violations = bad["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 3, "{bad}");
    assert!(violations
        .iter()
        .all(|v| v["kind"] == "expectation_mismatch"));
    assert!(
        bad["reason"].as_str().unwrap().contains("out of attempts"),
        "{bad}"
    );
    assert_eq!(task(&mission, "after-bad")["state"], "blocked");
    assert!(task(&mission, "after-bad")["reason"]
        .as_str()
        .unwrap()
        .contains("blocked by `bad`"));
    assert_eq!(task(&mission, "last")["state"], "blocked");
    assert_eq!(task(&mission, "fine")["state"], "succeeded");
    assert_eq!(task(&mission, "after-bad")["results_committed"], 0);

    // Retry re-runs the failed and blocked tasks; it fails the same way again.
    let (status, _, stderr) = coditect_output(
        &["retry".into(), id.clone(), "--api".into(), nodes[2].api()],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let mission = wait_for(
        Duration::from_secs(30),
        "the retried mission to fail",
        || {
            let m = nodes[0].mission(&id)?;
            let runs = task(&m, "bad")["violations"].as_array()?.len();
            (m["state"] == "failed" && runs == 6).then_some(m)
        },
    );
    assert_eq!(task(&mission, "after-bad")["state"], "blocked");
    assert_eq!(task(&mission, "fine")["results_committed"], 1);
    // Retrying a mission that is not failed is refused by name.
    let (status, _, stderr) = coditect_output(
        &[
            "retry".into(),
            "m404".into(),
            "--api".into(),
            nodes[2].api(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("m404"), "{stderr}");
}

#[test]
fn cancel_interrupts_running_guests() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_mesh(dir.path(), 3, |_| vec![]);
    // Far longer than the test: only cancellation can end it.
    write(dir.path(), "spin.wat", &busy_wat(u64::MAX / 2));
    let text = "[[task]]\nid = \"spin\"\nmodule = \"spin.wat\"\n[task.limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 600_000\n";
    let file = write(dir.path(), "spin.toml", text);
    let (code, id, stderr) = submit(&nodes[0], &file, false);
    assert_eq!(code, 0, "{stderr}");
    wait_for(Duration::from_secs(30), "the guest running", || {
        nodes
            .iter()
            .any(|n| n.metric("coditect_tasks_running") >= 1.0)
            .then_some(())
    });
    let (status, _, stderr) = coditect_output(
        &["cancel".into(), id.clone(), "--api".into(), nodes[1].api()],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    let mission = wait_state(&nodes[2], &id, "cancelled", Duration::from_secs(10));
    assert_eq!(task(&mission, "spin")["state"], "cancelled");
    wait_for(Duration::from_secs(10), "the guest stopped", || {
        nodes
            .iter()
            .all(|n| n.metric("coditect_tasks_running") == 0.0)
            .then_some(())
    });
}

#[test]
fn idle_nodes_steal_a_burst_queued_on_the_only_node_known_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    // One node, allowed a deep queue: the whole burst lands on it.
    let first = NodeProcess::start(
        &dir.path().join("n0"),
        "n0",
        &flags(None, &["--slots", "1", "--queue-depth", "64"]),
    );
    wait_for(Duration::from_secs(30), "a leader", || {
        first.status()?["leader"].as_str().map(|_| ())
    });
    write(dir.path(), "busy.wat", &busy_wat(150_000_000));
    let mut text = String::from("name = \"burst\"\n");
    for i in 0..24 {
        text.push_str(&format!(
            "[[task]]\nid = \"b{i:02}\"\nmodule = \"busy.wat\"\n"
        ));
    }
    let file = write(dir.path(), "burst.toml", &text);
    let (code, id, stderr) = submit(&first, &file, false);
    assert_eq!(code, 0, "{stderr}");
    wait_for(Duration::from_secs(30), "the burst queued on n0", || {
        let m = first.mission(&id)?;
        (count_state(&m, "ready") == 0).then_some(())
    });
    // Two idle nodes join; nothing is left to place, so they can only steal.
    let boot = first.bootstrap_addr();
    let others: Vec<NodeProcess> = (1..3)
        .map(|i| {
            NodeProcess::start(
                &dir.path().join(format!("n{i}")),
                &format!("n{i}"),
                &flags(Some(&boot), &["--slots", "1"]),
            )
        })
        .collect();
    let mission = wait_state(&first, &id, "succeeded", Duration::from_secs(120));
    assert_all_succeeded_once(&mission, 24);
    let steals: f64 = others
        .iter()
        .map(|n| n.metric("coditect_steals_total"))
        .sum();
    assert!(steals >= 1.0, "no steals counted");
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks(&mission) {
        *by_node
            .entry(task["result"]["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let stolen_runs: usize = others
        .iter()
        .map(|n| by_node.get(&n.peer_id).copied().unwrap_or(0))
        .sum();
    assert!(
        stolen_runs as f64 >= 1.0 && stolen_runs as f64 <= steals,
        "runs elsewhere {stolen_runs}, steals {steals}: {by_node:?}"
    );
}

#[test]
fn the_example_mission_fans_out_and_in_on_a_local_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let agents = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../agents");
    let work = dir.path().join("agents");
    std::fs::create_dir_all(&work).unwrap();
    for entry in std::fs::read_dir(&agents).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, work.join(path.file_name().unwrap())).unwrap();
        }
    }
    let built = std::process::Command::new("bash")
        .arg(work.join("build.sh"))
        .arg(&work)
        .status()
        .expect("run build.sh");
    assert!(built.success(), "agents/build.sh failed");
    let nodes = start_mesh(&dir.path().join("mesh"), 3, |_| vec![]);
    let (code, id, stderr) = submit(&nodes[2], &work.join("example-mission.toml"), true);
    assert_eq!(code, 0, "{stderr}");
    let mission = nodes[0].mission(&id).unwrap();
    assert_all_succeeded_once(&mission, 5);
    // The fan-in task saw each dependency's /output under /input/deps/<id>/.
    let (code, report) = coditect_tests::http_request(
        "GET",
        &nodes[1].http,
        &format!("/api/missions/{id}/tasks/summarize/output/report.json"),
    )
    .unwrap();
    assert_eq!(code, 200, "{report}");
    for dep in ["analyze-analyzer", "analyze-tester", "test-math"] {
        assert!(
            report.contains(&format!("deps/{dep}/report.json")),
            "{report}"
        );
    }
    let (code, _) = coditect_tests::http_request(
        "GET",
        &nodes[1].http,
        &format!("/api/missions/{id}/tasks/summarize/output/nope.txt"),
    )
    .unwrap();
    assert_eq!(code, 404);
}

#[test]
fn sigterm_on_a_busy_worker_hands_its_work_back_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_mesh(dir.path(), 4, |_| {
        vec![
            "--slots",
            "1",
            "--queue-depth",
            "4",
            "--drain-grace-ms",
            "6000",
        ]
    });
    write(dir.path(), "busy.wat", &busy_wat(200_000_000));
    let mut text = String::from("name = \"drain\"\n");
    for i in 0..24 {
        text.push_str(&format!(
            "[[task]]\nid = \"d{i:02}\"\nmodule = \"busy.wat\"\n"
        ));
    }
    let file = write(dir.path(), "drain.toml", &text);
    let status = nodes[0].status().unwrap();
    let voters = string_list(&status, "voters");
    let worker = (0..4)
        .find(|i| !voters.contains(&nodes[*i].peer_id))
        .expect("a non-voter among four nodes");
    let api = (0..4).find(|i| *i != worker).unwrap();
    let (code, id, stderr) = submit(&nodes[api], &file, false);
    assert_eq!(code, 0, "{stderr}");
    let peer = nodes[worker].peer_id.clone();
    wait_for(
        Duration::from_secs(60),
        "the worker holding queued tasks",
        || {
            let m = nodes[api].mission(&id)?;
            let held = tasks(&m)
                .iter()
                .filter(|t| t["owner"].as_str() == Some(peer.as_str()))
                .count();
            (held >= 2).then_some(())
        },
    );
    let exit = nodes[worker].terminate(Duration::from_secs(30));
    assert!(exit.success(), "a drained node exits 0: {exit:?}");
    let mission = wait_state(&nodes[api], &id, "succeeded", Duration::from_secs(120));
    assert_all_succeeded_once(&mission, 24);
    // What the drained node still had queued was placed again elsewhere.
    let moved = tasks(&mission)
        .iter()
        .filter(|t| {
            t["attempt"].as_u64().unwrap_or(0) > 1
                && t["result"]["node"].as_str() != Some(peer.as_str())
        })
        .count();
    assert!(moved >= 1, "no task was handed back: {mission}");
}
