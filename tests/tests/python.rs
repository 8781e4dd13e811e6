//! Black-box tests of `builtin:python` (CPython 3.12 for WASI in the
//! sandbox) with real `coditect node` processes on 127.0.0.1: a node without
//! the runtime file fetches it from a peer and runs Python tasks, and hostile
//! scripts end as the right outcome, like the C guests.
//!
//! The runtime file comes from `scripts/setup.sh` (`$CODITECT_PYTHON_WASM`,
//! or its default place under `~/.cache/coditect/runtimes/`); compiled
//! artifacts are shared through the machine's module cache, so only the
//! first node on a fresh machine compiles it (tens of seconds).
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::Path;
use std::time::Duration;

use coditect_tests::{coditect_output, mesh_flags, wait_for, NodeProcess};
use serde_json::Value;

/// First compile of the runtime on a fresh machine, plus slack for a busy one.
const READY_LIMIT: Duration = Duration::from_secs(240);

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write file");
}

fn python_state(node: &NodeProcess) -> Option<Value> {
    node.status().map(|s| s["runtimes"]["python"].clone())
}

fn wait_python_ready(node: &NodeProcess) -> Value {
    wait_for(READY_LIMIT, "the Python runtime ready", || {
        let state = python_state(node)?;
        assert_ne!(state["state"], "failed", "{state}\n{}", node.log_text());
        (state["state"] == "ready").then_some(state)
    })
}

/// `coditect submit FILE --wait`: exit code and the mission id.
fn submit_wait(node: &NodeProcess, file: &Path) -> (i32, String, String) {
    let args = vec![
        "submit".to_string(),
        file.display().to_string(),
        "--api".into(),
        node.api(),
        "--wait".into(),
    ];
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(300));
    (
        status.code().unwrap_or(-1),
        stdout.trim().to_string(),
        stderr,
    )
}

fn task<'a>(mission: &'a Value, id: &str) -> &'a Value {
    mission["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {mission}"))
}

#[test]
fn a_node_without_the_runtime_file_fetches_it_from_a_peer_and_runs_python() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(&dir.path().join("n0"), "n0", &mesh_flags(100, None, &[]));
    let boot = first.bootstrap_addr();
    let absent = dir.path().join("no-such-runtime.wasm");
    let second = NodeProcess::start_with_env(
        &dir.path().join("n1"),
        "n1",
        &mesh_flags(100, Some(&boot), &["--capability", "second"]),
        &[("CODITECT_PYTHON_WASM", absent.to_str().unwrap())],
    );
    let local = wait_python_ready(&first);
    assert_eq!(local["from"], "file", "{local}");
    let fetched = wait_python_ready(&second);
    assert!(
        fetched["from"].as_str().unwrap().starts_with("peer "),
        "{fetched}"
    );
    assert!(second.status().unwrap()["capabilities"]["tags"]["python"].is_string());
    // The fetched copy is served (the blob store verifies it against its
    // digest on every read; the text helper decodes it lossily, so only its
    // size is a lower bound).
    let (code, body) = coditect_tests::http_request(
        "GET",
        &second.http,
        &format!("/api/blobs/{}", fetched["digest"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(body.len() >= 26_267_204, "{} bytes", body.len());

    write(
        dir.path(),
        "hello.py",
        "import sys, platform\n\
         print('hello', ' '.join(sys.argv[1:]), platform.python_version())\n\
         with open('/output/answer.txt', 'w') as f:\n    f.write(str(sum(range(10))))\n",
    );
    // `second` is the only node with that tag, so the task must run there.
    write(
        dir.path(),
        "py.toml",
        "name = \"py\"\n\
         [[task]]\nid = \"here\"\nmodule = \"builtin:python\"\nargs = [\"/input/hello.py\", \"from\", \"the mesh\"]\n\
         inputs = [\"hello.py\"]\nrequires = [\"second\"]\n\
         [task.expect]\nstdout_contains = \"hello from the mesh 3.12.0\"\nfiles = [\"answer.txt\"]\n\
         [[task]]\nid = \"anywhere\"\nmodule = \"builtin:python\"\nargs = [\"-c\", \"print(6 * 7)\"]\nneeds = [\"here\"]\n\
         [task.expect]\nstdout_contains = \"42\"\n",
    );
    let (code, id, stderr) = submit_wait(&first, &dir.path().join("py.toml"));
    assert_eq!(code, 0, "{stderr}\n{}", second.log_text());
    let mission = first.mission(&id).unwrap();
    let here = task(&mission, "here");
    assert_eq!(here["state"], "succeeded", "{here}");
    assert_eq!(here["result"]["node"], second.peer_id.as_str(), "{here}");
    let (code, answer) = coditect_tests::http_request(
        "GET",
        &first.http,
        &format!("/api/missions/{id}/tasks/here/output/answer.txt"),
    )
    .unwrap();
    assert_eq!((code, answer.as_str()), (200, "45"));
    assert_eq!(task(&mission, "anywhere")["state"], "succeeded");
}

#[test]
fn hostile_python_scripts_end_as_the_right_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), "n0", &mesh_flags(100, None, &[]));
    wait_python_ready(&node);
    let script = |name: &str, body: &str| write(dir.path(), name, body);
    script("spin.py", "while True:\n    pass\n");
    script(
        "bomb.py",
        "hog = []\nwhile True:\n    hog.append(bytearray(16 * 1024 * 1024))\n",
    );
    script(
        "escape.py",
        "import os\nfor path in ['/etc/passwd', '/root', '/workspace/../etc/passwd']:\n    try:\n        open(path).read()\n        print('READ', path)\n    except OSError as e:\n        print('refused', path, type(e).__name__)\n\
         print(sorted(os.listdir('/input')))\n",
    );
    script(
        "scribble.py",
        "for path in ['/input/x.txt', '/tmp/x.txt', '/x.txt']:\n    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n    except OSError as e:\n        print('refused', path, type(e).__name__)\n\
         open('/output/ok.txt', 'w').write('ok')\n",
    );
    script("fails.py", "raise SystemExit(3)\n");
    let one = |id: &str, file: &str, limits: &str| {
        format!(
            "[[task]]\nid = \"{id}\"\nmodule = \"builtin:python\"\nargs = [\"/input/{file}\"]\ninputs = [\"{file}\"]\n{limits}"
        )
    };
    let mut text = String::from("name = \"hostile\"\n");
    text += &one(
        "burn",
        "spin.py",
        "[task.limits]\nfuel = 3000000000\ntimeout_ms = 120000\n",
    );
    text += &one("bomb", "bomb.py", "[task.limits]\nmemory_mb = 128\n");
    text += &one("escape", "escape.py", "");
    text += &one(
        "scribble",
        "scribble.py",
        "[task.expect]\nfiles = [\"ok.txt\"]\n",
    );
    text += &one("fails", "fails.py", "");
    write(dir.path(), "hostile.toml", &text);
    let (code, id, _) = submit_wait(&node, &dir.path().join("hostile.toml"));
    assert_ne!(code, 0, "a mission with failing tasks must not exit 0");
    let mission = node.mission(&id).unwrap();
    let last_violation = |id: &str| -> String {
        let t = task(&mission, id);
        t["violations"]
            .as_array()
            .and_then(|v| v.last())
            .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("task {id} has no violation: {t}"))
    };
    assert_eq!(last_violation("burn"), "out_of_fuel");
    assert_eq!(last_violation("bomb"), "memory_limit");
    assert!(
        last_violation("fails").starts_with("expectation_mismatch"),
        "{}",
        last_violation("fails")
    );
    // Reads outside what the sandbox mounts find nothing; writes outside
    // /output are refused; the scripts themselves succeed.
    for (task_id, forbidden) in [("escape", "READ"), ("scribble", "WROTE")] {
        let t = task(&mission, task_id);
        assert_eq!(t["state"], "succeeded", "{t}");
        let (code, body) = coditect_tests::http_request(
            "GET",
            &node.http,
            &format!(
                "/api/missions/{}/tasks/{task_id}/output/stdout",
                mission["id"].as_str().unwrap()
            ),
        )
        .unwrap();
        assert_eq!(code, 200);
        assert!(!body.contains(forbidden), "{task_id}: {body}");
        assert_eq!(body.matches("refused").count(), 3, "{task_id}: {body}");
    }
    // A wall-clock timeout counts against the node (fuel bounds the guest's
    // own work), so it runs last, alone: its retries must not pause the
    // node for the tasks above.
    let spin = format!(
        "name = \"spin\"\n{}",
        one(
            "spin",
            "spin.py",
            "[task.limits]\ntimeout_ms = 2000\nfuel = 10000000000000\n"
        )
    );
    write(dir.path(), "spin.toml", &spin);
    let (code, id, _) = submit_wait(&node, &dir.path().join("spin.toml"));
    assert_ne!(code, 0);
    let mission = node.mission(&id).unwrap();
    let spun = task(&mission, "spin");
    let kinds: Vec<&str> = spun["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| *k == "timeout"),
        "{spun}"
    );
}
