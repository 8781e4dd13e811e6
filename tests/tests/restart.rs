//! Black-box tests of restarts without `--bootstrap`: a data dir that was
//! told to join a mesh rejoins it and never founds a second one, whether it
//! was killed right after joining or the whole mesh was killed at once.

use std::time::Duration;

use coditect_tests::{agreement, mesh_flags, start_mesh, string_list, wait_for, NodeProcess};

/// What the founder logs once, when it initializes the mesh.
const NEW_MESH_LINE: &str = "started a new mesh";

/// If every node answers, names the same leader and the same voters, and
/// exactly one of them says it leads, returns the leader's peer id.
fn one_agreed_leader(nodes: &[&NodeProcess]) -> Option<String> {
    let (leader, voters, statuses) = agreement(nodes)?;
    let leaders = statuses
        .iter()
        .filter(|status| status["role"] == "leader")
        .count();
    (leaders == 1 && voters.contains(&leader)).then_some(leader)
}

fn new_mesh_lines(node: &NodeProcess) -> usize {
    node.log_text().matches(NEW_MESH_LINE).count()
}

/// The founder logged a new mesh once; nobody else ever did.
fn assert_one_mesh_ever_started(nodes: &[&NodeProcess]) {
    for (index, node) in nodes.iter().enumerate() {
        let expected = usize::from(index == 0);
        assert_eq!(
            new_mesh_lines(node),
            expected,
            "node {index} logged {NEW_MESH_LINE:?} {} time(s); log:\n{}",
            new_mesh_lines(node),
            node.log_text()
        );
    }
}

#[test]
fn a_node_killed_right_after_joining_rejoins_the_same_mesh_without_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_mesh(dir.path(), 3, 200, |_| Vec::new());
    let bootstrap = nodes[0].bootstrap_addr();
    let leader = wait_for(Duration::from_secs(60), "3 nodes to agree", || {
        one_agreed_leader(&nodes.iter().collect::<Vec<_>>())
    });

    // n3 dies the moment its node.json appears: it has not remembered any
    // peer yet, only that it was told to join.
    let n3_dir = dir.path().join("n3");
    let mut n3 = NodeProcess::start(&n3_dir, "n3", &mesh_flags(200, Some(&bootstrap), &[]));
    n3.kill();
    let record = std::fs::read_to_string(n3_dir.join("mesh.json"))
        .expect("mesh.json is written before the first join attempt");
    assert!(record.contains(&bootstrap), "{record}");

    // n4 dies as soon as the leader lists it.
    let n4_dir = dir.path().join("n4");
    let mut n4 = NodeProcess::start(&n4_dir, "n4", &mesh_flags(200, Some(&bootstrap), &[]));
    let n4_peer = n4.peer_id.clone();
    let leader_index = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    wait_for(Duration::from_secs(60), "the leader to list n4", || {
        let status = nodes[leader_index].status()?;
        status["peers"]
            .as_array()?
            .iter()
            .any(|peer| peer["peer_id"] == n4_peer.as_str())
            .then_some(())
    });
    n4.kill();

    // Both come back on their data dirs without --bootstrap.
    let n3 = NodeProcess::start(&n3_dir, "n3", &mesh_flags(200, None, &[]));
    let n4 = NodeProcess::start(&n4_dir, "n4", &mesh_flags(200, None, &[]));
    nodes.push(n3);
    nodes.push(n4);
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let agreed = wait_for(
        Duration::from_secs(120),
        "all 5 nodes, the restarted ones included, to agree on one leader",
        || one_agreed_leader(&all),
    );
    for restarted in &all[3..] {
        let status = restarted.status().expect("a restarted node answers");
        assert_eq!(status["leader"].as_str(), Some(agreed.as_str()));
        assert_eq!(status["fatal"], serde_json::Value::Null);
        assert_eq!(restarted.get_code("/readyz"), Some(200));
    }
    // n3 died before any Raft state reached it: only mesh.json told it
    // which mesh it belongs to. (n4 may have become a standby first, and
    // then resumes on its Raft state.)
    assert!(
        all[3].log_text().contains("rejoining it"),
        "n3 says it rejoins its mesh; log:\n{}",
        all[3].log_text()
    );
    // Still one mesh a while later (a second mesh would show a second
    // leader or a split voter set).
    std::thread::sleep(Duration::from_secs(3));
    wait_for(Duration::from_secs(60), "the mesh to still agree", || {
        one_agreed_leader(&all)
    });
    assert_one_mesh_ever_started(&all);
}

#[test]
fn a_whole_mesh_killed_at_once_comes_back_to_one_leader_without_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_mesh(dir.path(), 4, 200, |_| Vec::new());
    wait_for(Duration::from_secs(60), "4 nodes to agree", || {
        one_agreed_leader(&nodes.iter().collect::<Vec<_>>())
    });
    // Long enough for every node to have remembered its peers once.
    std::thread::sleep(Duration::from_secs(4));
    for node in &mut nodes {
        node.kill();
    }
    let restarted: Vec<NodeProcess> = (0..4)
        .map(|index| {
            let name = format!("n{index}");
            NodeProcess::start(&dir.path().join(&name), &name, &mesh_flags(200, None, &[]))
        })
        .collect();
    let all: Vec<&NodeProcess> = restarted.iter().collect();
    let leader = wait_for(
        Duration::from_secs(180),
        "the restarted mesh to agree on one leader",
        || one_agreed_leader(&all),
    );
    for node in &all {
        let status = node.status().expect("a restarted node answers");
        assert_eq!(status["leader"].as_str(), Some(leader.as_str()));
        assert_eq!(string_list(&status, "voters").len(), 3, "{status}");
    }
    assert_one_mesh_ever_started(&all);
}
