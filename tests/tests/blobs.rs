//! The blob API: `POST /api/blobs` stores bytes under their sha256 and any
//! node serves them, fetching from the peer that holds them.

use std::time::Duration;

use coditect_tests::{http_exchange, wait_for, NodeProcess};

fn flags(bootstrap: Option<&str>) -> Vec<String> {
    let mut flags = vec!["--heartbeat-ms".to_string(), "200".to_string()];
    if let Some(addr) = bootstrap {
        flags.extend(["--bootstrap".to_string(), addr.to_string()]);
    }
    flags
}

fn post(node: &NodeProcess, body: &[u8]) -> String {
    let (code, answer) = http_exchange("POST", &node.http, "/api/blobs", body).unwrap();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    answer["digest"].as_str().unwrap().to_string()
}

#[test]
fn blobs_are_stored_by_digest_and_fetched_from_peers_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(&dir.path().join("a"), "a", &flags(None));
    let second = NodeProcess::start(
        &dir.path().join("b"),
        "b",
        &flags(Some(&first.bootstrap_addr())),
    );
    wait_for(Duration::from_secs(60), "b to join", || {
        let status = second.status()?;
        (status["leader"].as_str() == Some(first.peer_id.as_str())).then_some(())
    });

    let small = b"hello".to_vec();
    let digest = post(&first, &small);
    assert_eq!(
        digest,
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        post(&first, &small),
        digest,
        "storing twice gives the same name"
    );
    let (code, bytes) =
        http_exchange("GET", &first.http, &format!("/api/blobs/{digest}"), &[]).unwrap();
    assert_eq!((code, bytes), (200, small.clone()));

    // 20 MiB is above the wire's 16 MiB frame cap: it travels in chunks.
    let large: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let large_digest = post(&first, &large);
    let (code, fetched) = http_exchange(
        "GET",
        &second.http,
        &format!("/api/blobs/{large_digest}"),
        &[],
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(
        fetched == large,
        "the peer's copy differs ({} bytes)",
        fetched.len()
    );
    // b now holds its own verified copy.
    let stored = second.data_dir.join("blobs");
    assert!(walk_size(&stored) >= large.len() as u64);

    let (code, _) = http_exchange(
        "GET",
        &second.http,
        "/api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &[],
    )
    .unwrap();
    assert_eq!(code, 404);
    let (code, answer) = http_exchange("GET", &second.http, "/api/blobs/md5:abc", &[]).unwrap();
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&answer).contains("sha256:"));
}

/// Submits `mission` to `node` and returns its view once it succeeded.
fn run_to_success(node: &NodeProcess, mission: &str) -> serde_json::Value {
    let (code, body) =
        http_exchange("POST", &node.http, "/api/missions", mission.as_bytes()).unwrap();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(60), "the mission to succeed", || {
        let view = node.mission(&id)?;
        (view["state"] == "succeeded").then_some(view)
    })
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        walk_size(&path)
                    } else {
                        entry.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A submission's blobs go from the node that took it to the workers, not
/// through the leader first: the mission names that node as its origin,
/// its tasks run, and the leader ends up with its own copy (taken after the
/// commit), so the blobs outlive the origin.
#[test]
fn a_submissions_blobs_come_from_the_node_that_took_it_and_outlive_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| vec![]);
    let leader = coditect_tests::leader_index(&nodes);
    let origin = (leader + 1) % nodes.len();
    // A module only the origin holds (the comment makes its digest new).
    let module =
        b"(module (memory (export \"memory\") 1) (func (export \"_start\")) (func $origin_test))";
    let digest = post(&nodes[origin], module);
    let blob_file = |node: &NodeProcess| {
        let hex = digest.trim_start_matches("sha256:").to_string();
        node.data_dir.join("blobs").join(&hex[..2]).join(hex)
    };
    assert!(
        !blob_file(&nodes[leader]).exists(),
        "the leader starts without it"
    );

    let tasks: String = (0..6)
        .map(|i| format!("[[task]]\nid = \"t{i}\"\nmodule = \"{digest}\"\n"))
        .collect();
    let mission = format!("name = \"origin\"\n{tasks}");
    let done = run_to_success(&nodes[origin], &mission);
    assert_eq!(
        done["origin"].as_str(),
        Some(nodes[origin].peer_id.as_str()),
        "{done}"
    );
    let owners: std::collections::BTreeSet<&str> = done["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["result"]["node"].as_str())
        .collect();
    assert!(
        owners.iter().any(|node| *node != nodes[origin].peer_id),
        "every task ran on the origin, so no worker fetched the blob: {owners:?}"
    );
    wait_for(Duration::from_secs(20), "the leader's own copy", || {
        blob_file(&nodes[leader]).exists().then_some(())
    });

    // The origin is gone; the leader still takes a mission naming its blob.
    nodes[origin].kill();
    let again = format!("name = \"after\"\n[[task]]\nid = \"a\"\nmodule = \"{digest}\"\n");
    let done = run_to_success(&nodes[leader], &again);
    assert!(done["origin"].is_null(), "the leader took it: {done}");
}
