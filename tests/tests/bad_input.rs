//! Bad input and faults at startup: each is a one-line error naming the
//! problem and exit code 2, and nothing already stored is touched. Poison
//! missions (bad names, paths and limits) are refused at submission with a
//! 400 naming the problem, and leave nothing behind.

use std::time::Duration;

use coditect_tests::{
    http_exchange, http_request, loopback_args, run_coditect, wait_for, NodeProcess,
};

fn node_args(data_dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "node".to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    // Loopback defaults, minus the flags the case sets itself.
    let defaults = loopback_args();
    for pair in defaults.chunks(2) {
        if !extra.contains(&pair[0].as_str()) {
            args.extend(pair.iter().cloned());
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn assert_bad_input(args: &[String], needle: &str) {
    let (status, stderr) = run_coditect(args, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(2),
        "exit code for {args:?}; stderr: {stderr}"
    );
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(
        error_lines.len(),
        1,
        "one error line for {args:?}; stderr: {stderr}"
    );
    assert!(
        error_lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        error_lines[0]
    );
}

#[test]
fn invalid_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_bad_input(
        &node_args(dir.path(), &["--listen", "not/a/multiaddr"]),
        "invalid multiaddr",
    );
    assert_bad_input(
        &node_args(dir.path(), &["--bootstrap", "/ip4/127.0.0.1/tcp/4001"]),
        "/p2p/",
    );
    assert_bad_input(
        &node_args(dir.path(), &["--bootstrap", "garbage"]),
        "invalid multiaddr",
    );
    assert_bad_input(
        &[
            "status".to_string(),
            "--api".into(),
            "localhost:7070".into(),
        ],
        "invalid --api",
    );
}

#[test]
fn ports_in_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_bad_input(
        &node_args(
            &dir.path().join("http"),
            &["--http", &format!("127.0.0.1:{port}")],
        ),
        "cannot listen on HTTP address",
    );
    assert_bad_input(
        &node_args(
            &dir.path().join("p2p"),
            &["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")],
        ),
        "cannot listen on",
    );
}

#[test]
fn foreign_corrupt_and_locked_data_dirs_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"years of work").unwrap();
    assert_bad_input(&node_args(&foreign, &[]), "not a coditect data dir");
    assert_eq!(
        std::fs::read(foreign.join("thesis.tex")).unwrap(),
        b"years of work"
    );
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing was added"
    );

    // A real data dir whose RocksDB files were damaged.
    let damaged = dir.path().join("damaged");
    let mut node = NodeProcess::start(&damaged, "damaged", &[]);
    node.kill();
    std::fs::write(damaged.join("raft").join("CURRENT"), b"MANIFEST-garbage\n").unwrap();
    assert_bad_input(&node_args(&damaged, &[]), "refusing to start");
    assert_eq!(
        std::fs::read(damaged.join("raft").join("CURRENT")).unwrap(),
        b"MANIFEST-garbage\n"
    );

    let corrupt = dir.path().join("corrupt");
    let mut node = NodeProcess::start(&corrupt, "corrupt", &[]);
    node.kill();
    std::fs::write(corrupt.join("identity.key"), b"not a key").unwrap();
    assert_bad_input(&node_args(&corrupt, &[]), "corrupt");
    assert_eq!(
        std::fs::read(corrupt.join("identity.key")).unwrap(),
        b"not a key"
    );

    // A data dir held by a running node; a SIGKILLed one is free again at once.
    let held = dir.path().join("held");
    let mut running = NodeProcess::start(&held, "held", &[]);
    assert_bad_input(
        &node_args(&held, &[]),
        "in use by another running coditect node",
    );
    let peer = running.peer_id.clone();
    running.kill();
    let again = NodeProcess::start(&held, "held", &[]);
    assert_eq!(
        again.peer_id, peer,
        "restart after SIGKILL needs no cleanup"
    );
}

/// `POST /api/missions` with `text`; the status code and the `error` field.
fn post_mission(node: &NodeProcess, text: &str) -> (u16, String) {
    let (code, body) =
        http_exchange("POST", &node.http, "/api/missions", text.as_bytes()).expect("POST mission");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (code, error)
}

#[test]
fn poison_names_and_limits_are_refused_at_submission_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n0"), "n0", &[]);
    wait_for(Duration::from_secs(60), "a single-node leader", || {
        node.status().filter(|s| s["role"] == "leader")
    });
    let (code, body) = http_exchange("POST", &node.http, "/api/blobs", b"data").unwrap();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let digest = body["digest"].as_str().unwrap().to_string();

    let long = "x".repeat(5000);
    let with_inputs = |inputs: &[&str]| {
        let list: Vec<String> = inputs
            .iter()
            .map(|path| format!("\"{path}={digest}\""))
            .collect();
        format!(
            "name = \"poison\"\n[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\ninputs = [{}]\n",
            list.join(", ")
        )
    };
    let with_limit = |key: &str, value: &str| {
        format!("[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\n[task.limits]\n{key} = {value}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (with_inputs(&["./x"]), "invalid input \"./x=sha256:"),
        (with_inputs(&["./x"]), "`.` component"),
        // TOML's \u0000 escape puts a NUL in the path.
        (with_inputs(&["a\\u0000b"]), "NUL byte"),
        (
            with_inputs(&[long.as_str()]),
            "5000 bytes long, more than the cap of 1024",
        ),
        (
            with_inputs(&["a", "a/b"]),
            "\"a/b\" lies inside input path \"a\"",
        ),
        (with_inputs(&["input.txt"]), "reserved"),
        (
            format!("name = \"{long}\"\n[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\n"),
            "invalid `name` in the mission: it is 5000 bytes long",
        ),
        (
            "name = \"a\\u0000b\"\n[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\n".to_string(),
            "control character",
        ),
        (
            format!("[[task]]\nid = \"{long}\"\nmodule = \"builtin:noop\"\n"),
            "5000 bytes long, longer than the cap of 128",
        ),
        (
            with_limit("fuel", "9223372036854775807"),
            "fuel must be between 1 and 100000000000000",
        ),
        (
            with_limit("timeout_ms", "9223372036854775807"),
            "timeout_ms must be between 1 and 86400000",
        ),
        (
            with_limit("output_mb", "1048576"),
            "output_mb must be between 1 and 1024",
        ),
    ];
    for (text, needle) in &cases {
        let (code, error) = post_mission(&node, text);
        assert_eq!(code, 400, "{needle}: {error}");
        assert!(
            error.contains(needle),
            "{error:?} should mention {needle:?}"
        );
        assert!(
            !error.contains('\n') && error.len() < 400,
            "one short line: {error:?}"
        );
    }

    // The CLI refuses the same before uploading anything: exit 2, one line.
    let file = dir.path().join("poison.toml");
    std::fs::write(
        &file,
        "[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\ninputs = [\"./x\"]\n",
    )
    .unwrap();
    assert_bad_input(
        &[
            "submit".to_string(),
            file.display().to_string(),
            "--api".into(),
            node.api(),
        ],
        "`.` component",
    );

    // Nothing was stored: no mission m1, and the next good mission is m1.
    let (code, _) = http_request("GET", &node.http, "/api/missions/m1").unwrap();
    assert_eq!(code, 404);
    let good = "[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\n";
    let (code, body) = http_exchange("POST", &node.http, "/api/missions", good.as_bytes()).unwrap();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], "m1", "the refused missions left no trace");
}
