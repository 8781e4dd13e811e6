//! Bad input and faults at startup: each is a one-line error naming the
//! problem and exit code 2, and nothing already stored is touched.

use std::time::Duration;

use coditect_tests::{loopback_args, run_coditect, NodeProcess};

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
