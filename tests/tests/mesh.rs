//! Black-box tests of mesh formation, failover, restart and drain, with real
//! `coditect node` processes on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use coditect_tests::{agreement, wait_for, NodeProcess};

/// Fast timings so the test runs in seconds: heartbeat 200 ms, a voter
/// silent for 3 s is replaced.
fn flags(bootstrap: Option<&str>) -> Vec<String> {
    coditect_tests::mesh_flags(200, bootstrap, &[])
}

#[test]
fn five_nodes_elect_fail_over_rejoin_and_drain() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(&dir.path().join("n0"), "n0", &flags(None));
    let bootstrap = first.bootstrap_addr();
    let mut nodes = vec![first];
    for index in 1..5 {
        let name = format!("n{index}");
        nodes.push(NodeProcess::start(
            &dir.path().join(&name),
            &name,
            &[
                flags(Some(&bootstrap)),
                vec!["--capability".into(), format!("zone=z{index}")],
            ]
            .concat(),
        ));
    }
    let peer_ids: BTreeSet<String> = nodes.iter().map(|node| node.peer_id.clone()).collect();
    assert_eq!(peer_ids.len(), 5, "every node has its own identity");

    // All five agree on one leader and the same three voters.
    let (leader, voters, statuses) = wait_for(
        Duration::from_secs(90),
        "5 nodes to agree on a leader and 3 voters",
        || agreement(&nodes.iter().collect::<Vec<_>>()).filter(|(_, voters, _)| voters.len() == 3),
    );
    assert!(
        voters.contains(&leader),
        "the leader {leader} is a voter {voters:?}"
    );
    assert!(voters.iter().all(|voter| peer_ids.contains(voter)));
    let roles: Vec<&str> = statuses
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "voter").count(),
        2,
        "{roles:?}"
    );

    // Capabilities travel: the leader sees every other node's tags and slots.
    let leader_index = nodes
        .iter()
        .position(|node| node.peer_id == leader)
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the leader to see 4 peers with capabilities",
        || {
            let status = nodes[leader_index].status()?;
            let peers = status["peers"].as_array()?.clone();
            let tagged = peers
                .iter()
                .filter(|peer| {
                    peer["capabilities"]["wasm"] == true
                        && peer["capabilities"]["slots"].as_u64() >= Some(1)
                })
                .count();
            (peers.len() == 4 && tagged == 4).then_some(())
        },
    );
    let status = nodes[leader_index].status().unwrap();
    assert!(status["commit_index"].as_u64().unwrap() > 0);
    let (code, page) = coditect_tests::http_request("GET", &nodes[leader_index].http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>Coditect node</title>") && page.contains("/api/status"));
    let (code, metrics) =
        coditect_tests::http_request("GET", &nodes[leader_index].http, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "coditect_raft_term",
        "coditect_raft_is_leader 1",
        "coditect_raft_commit_index",
        "coditect_connected_peers",
        "coditect_known_nodes",
        "coditect_rpc_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert!(status["term"].as_u64().unwrap() >= 1);
    let zones: BTreeSet<String> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|peer| {
            peer["capabilities"]["tags"]["zone"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let expected_zones = if leader_index == 0 { 4 } else { 3 };
    assert_eq!(
        zones.len(),
        expected_zones,
        "zone tags seen by the leader: {zones:?}"
    );

    // SIGKILL the leader: a different leader among the survivors, and the voter
    // set refilled to three live nodes.
    let killed_peer = nodes[leader_index].peer_id.clone();
    let killed_dir = nodes[leader_index].data_dir.clone();
    let killed_name = format!("n{leader_index}");
    nodes[leader_index].kill();
    let survivors: Vec<usize> = (0..5).filter(|i| *i != leader_index).collect();
    let (new_leader, new_voters, _) = wait_for(
        Duration::from_secs(90),
        "a new leader and 3 live voters",
        || {
            let view: Vec<&NodeProcess> = survivors.iter().map(|i| &nodes[*i]).collect();
            agreement(&view).filter(|(leader, voters, _)| {
                *leader != killed_peer && voters.len() == 3 && !voters.contains(&killed_peer)
            })
        },
    );
    assert!(new_voters.contains(&new_leader));

    // Restart the killed node on its data dir without --bootstrap: same peer
    // id, finds the mesh from what it persisted, agrees on the leader, and
    // does not depose it.
    let restarted = NodeProcess::start(&killed_dir, &killed_name, &flags(None));
    assert_eq!(
        restarted.peer_id, killed_peer,
        "identity survives a restart"
    );
    nodes[leader_index] = restarted;
    let (leader_after, voters_after, statuses) = wait_for(
        Duration::from_secs(90),
        "the restarted node to agree",
        || agreement(&nodes.iter().collect::<Vec<_>>()).filter(|(_, voters, _)| voters.len() == 3),
    );
    assert_eq!(
        leader_after, new_leader,
        "the rejoining node must not disrupt the leader"
    );
    assert!(
        !voters_after.contains(&killed_peer),
        "it rejoined as a worker or standby"
    );
    let rejoined_role = statuses[leader_index]["role"].as_str().unwrap().to_string();
    assert!(
        rejoined_role == "worker" || rejoined_role == "learner",
        "role {rejoined_role}"
    );

    // SIGTERM a voter that is not the leader: it drains, leaves the voter
    // set, exits 0, and the leader refills the set from the others.
    let drained_index = nodes
        .iter()
        .position(|node| voters_after.contains(&node.peer_id) && node.peer_id != leader_after)
        .unwrap();
    let drained_peer = nodes[drained_index].peer_id.clone();
    let status = nodes[drained_index].terminate(Duration::from_secs(30));
    assert!(status.success(), "drain exits 0, got {status}");
    let remaining: Vec<usize> = (0..5).filter(|i| *i != drained_index).collect();
    wait_for(
        Duration::from_secs(60),
        "the voter set refilled after the drain",
        || {
            let view: Vec<&NodeProcess> = remaining.iter().map(|i| &nodes[*i]).collect();
            agreement(&view)
                .filter(|(_, voters, _)| voters.len() == 3 && !voters.contains(&drained_peer))
        },
    );
}

#[test]
fn a_node_keeps_retrying_an_unreachable_bootstrap_and_joins_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = NodeProcess::start(&dir.path().join("a"), "a", &flags(None));
    let first_peer = first.peer_id.clone();
    let bootstrap = first.bootstrap_addr();
    let fixed_listen: Vec<String> = first
        .listen
        .iter()
        .flat_map(|addr| {
            let plain = addr.split("/p2p/").next().unwrap().to_string();
            ["--listen".to_string(), plain]
        })
        .collect();
    first.kill();

    let mut second = NodeProcess::start(&dir.path().join("b"), "b", &flags(Some(&bootstrap)));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        second.is_running(),
        "an unreachable bootstrap is retried, not fatal"
    );
    assert_eq!(second.get_code("/healthz"), Some(200));
    assert_eq!(second.get_code("/readyz"), Some(503));

    // The bootstrap peer comes back on the same address.
    let back = NodeProcess::start(
        &dir.path().join("a"),
        "a",
        &[fixed_listen, flags(None)].concat(),
    );
    assert_eq!(back.peer_id, first_peer);
    wait_for(Duration::from_secs(60), "the retrying node to join", || {
        let status = second.status()?;
        (status["leader"].as_str() == Some(first_peer.as_str())).then_some(())
    });
    assert_eq!(second.get_code("/readyz"), Some(200));
}

#[test]
fn a_draining_leader_hands_over_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start(&dir.path().join("a"), "a", &flags(None));
    let bootstrap = first.bootstrap_addr();
    let mut nodes = vec![first];
    for name in ["b", "c", "d"] {
        nodes.push(NodeProcess::start(
            &dir.path().join(name),
            name,
            &flags(Some(&bootstrap)),
        ));
    }
    let (leader, _, _) = wait_for(
        Duration::from_secs(90),
        "4 nodes to agree on 3 voters",
        || agreement(&nodes.iter().collect::<Vec<_>>()).filter(|(_, voters, _)| voters.len() == 3),
    );
    let index = nodes
        .iter()
        .position(|node| node.peer_id == leader)
        .unwrap();
    let status = nodes[index].terminate(Duration::from_secs(30));
    assert!(status.success(), "a draining leader exits 0, got {status}");
    let rest: Vec<&NodeProcess> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, n)| n)
        .collect();
    let (new_leader, voters, _) = wait_for(
        Duration::from_secs(60),
        "a new leader and a refilled voter set",
        || {
            agreement(&rest).filter(|(new_leader, voters, _)| {
                *new_leader != leader && voters.len() == 3 && !voters.contains(&leader)
            })
        },
    );
    assert!(voters.contains(&new_leader));
}
