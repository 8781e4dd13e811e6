//! Black-box: a request a follower forwards to the leader comes back with
//! the leader's error kind, not a generic one: 404 for an unknown mission,
//! 409 for a control the mission's state refuses, 400 for bad input, and
//! 503 (nothing committed, safe to retry) when there is no leader at all.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::time::Duration;

use coditect_tests::{http_exchange, leader_index, wait_for, NodeProcess};
use serde_json::Value;

fn send(node: &NodeProcess, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, body) = http_exchange(method, &node.http, path, body.as_bytes()).unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (code, json)
}

const BUSY: &str = "(module (memory (export \"memory\") 1) (func (export \"_start\") (local $i i64) (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) (br_if $l (i64.lt_u (local.get $i) (i64.const 40000000000))))))";

#[test]
fn error_kinds_survive_a_forward_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| vec![]);
    let leader = leader_index(&nodes);
    let follower = (leader + 1) % nodes.len();
    let other = (leader + 2) % nodes.len();
    let via = &nodes[follower];

    // Bad input: 400 with the problem named, on the follower itself.
    let (code, body) = send(
        via,
        "POST",
        "/api/missions",
        "name = \"x\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\nneeds = [\"ghost\"]\n",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("ghost"), "{body}");

    // Unknown mission, answered by the leader: 404 through the follower.
    let (code, body) = send(via, "DELETE", "/api/missions/m999", "");
    assert_eq!(code, 404, "{body}");
    assert!(body.to_string().contains("m999"), "{body}");

    // A control the leader refuses for the mission's state: 409 through the follower.
    let (code, blob) = send(via, "POST", "/api/blobs", BUSY);
    assert_eq!(code, 201, "{blob}");
    let digest = blob["digest"].as_str().unwrap().to_string();
    let mission = format!("name = \"busy\"\n[[task]]\nid = \"spin\"\nmodule = \"{digest}\"\n[task.limits]\ntimeout_ms = 60000\n");
    let (code, created) = send(via, "POST", "/api/missions", &mission);
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (code, body) = send(via, "POST", &format!("/api/missions/{id}/retry"), "");
    assert_eq!(code, 409, "retrying a running mission: {body}");
    let (code, body) = send(via, "DELETE", &format!("/api/missions/{id}"), "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");

    // No leader at all: 503, and nothing stored.
    nodes[leader].kill();
    nodes[other].kill();
    let via = &nodes[follower];
    wait_for(
        Duration::from_secs(30),
        "the survivor to know no leader",
        || via.status()?["leader"].is_null().then_some(()),
    );
    let (code, body) = send(
        via,
        "POST",
        "/api/missions",
        "name = \"later\"\n[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\n",
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.to_string().contains("leader"), "{body}");
    let (code, body) = send(via, "DELETE", &format!("/api/missions/{id}"), "");
    assert_eq!(code, 503, "a control without a leader: {body}");
}
