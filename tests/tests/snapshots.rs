//! Black-box test that a state spread over many snapshot chunks reaches a
//! new standby through a snapshot and survives a restart of every node,
//! with real processes: snapshots are built every 50 entries
//! (`--raft-snapshot-logs`), so the leader's log no longer holds what a
//! newcomer misses and the chunked snapshot path carries it.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::Path;
use std::time::Duration;

use coditect_tests::{agreement, coditect_output, mesh_flags, printer_wat, wait_for, NodeProcess};

/// Often enough that the mission below spans several snapshots: group
/// commit packs its 2,500 results into a hundred-odd entries.
const SNAPSHOT_FLAGS: [&str; 2] = ["--raft-snapshot-logs", "50"];

fn start(dir: &Path, index: usize, bootstrap: Option<&str>) -> NodeProcess {
    let name = format!("n{index}");
    NodeProcess::start(
        &dir.join(&name),
        &name,
        &mesh_flags(100, bootstrap, &SNAPSHOT_FLAGS),
    )
}

#[test]
fn a_large_state_reaches_a_new_standby_by_snapshot_and_survives_a_restart_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| {
        vec![
            "--slots",
            "8",
            "--queue-depth",
            "32",
            SNAPSHOT_FLAGS[0],
            SNAPSHOT_FLAGS[1],
        ]
    });
    std::fs::write(dir.path().join("print.wat"), printer_wat(4096)).unwrap();
    // 2,500 results of 4 KiB heads: about 12 MiB of state, a dozen chunks.
    let count = 2_500;
    let mut text = String::from("name = \"wide\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[task]]\nid = \"t{i}\"\nmodule = \"print.wat\"\n"
        ));
    }
    let file = dir.path().join("wide.toml");
    std::fs::write(&file, text).unwrap();
    let args: Vec<String> = vec![
        "submit".into(),
        file.display().to_string(),
        "--wait".into(),
        "--api".into(),
        nodes[0].api(),
    ];
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(600));
    assert!(
        status.success(),
        "{}",
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    let id = stdout.trim().to_string();

    // Two newcomers: the autopilot makes them standbys, which catch up.
    let boot = nodes[0].bootstrap_addr();
    nodes.push(start(dir.path(), 3, Some(&boot)));
    nodes.push(start(dir.path(), 4, Some(&boot)));
    wait_for(
        Duration::from_secs(120),
        "a newcomer installing a snapshot",
        || {
            nodes[3..]
                .iter()
                .any(|n| n.log_text().contains("snapshot installed"))
                .then_some(())
        },
    );
    let newcomer = nodes[3..]
        .iter()
        .find(|n| n.log_text().contains("snapshot installed"))
        .unwrap();
    let mission = wait_for(Duration::from_secs(60), "the newcomer's replica", || {
        newcomer
            .mission_summary(&id)
            .filter(|m| m["counts"]["succeeded"] == count)
    });
    assert_eq!(mission["state"], "succeeded");
    let log = newcomer.log_text();
    let installed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("snapshot installed"))
        .collect();
    let bytes: u64 = installed
        .iter()
        .filter_map(|line| {
            line.split("bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        bytes > 4 * 1024 * 1024,
        "a multi-chunk snapshot: {installed:?}"
    );

    // Every node killed at once, restarted without --bootstrap.
    std::thread::sleep(Duration::from_secs(3));
    for node in &mut nodes {
        node.kill();
    }
    let restarted: Vec<NodeProcess> = (0..5).map(|i| start(dir.path(), i, None)).collect();
    let all: Vec<&NodeProcess> = restarted.iter().collect();
    let leader = wait_for(Duration::from_secs(180), "one agreed leader", || {
        agreement(&all)
            .filter(|(_, voters, _)| voters.len() == 3)
            .map(|(leader, _, _)| leader)
    });
    for node in &restarted {
        let mission = wait_for(
            Duration::from_secs(60),
            "the mission after the restart",
            || {
                node.mission_summary(&id)
                    .filter(|m| m["counts"]["succeeded"] == count)
            },
        );
        assert_eq!(mission["state"], "succeeded", "{mission}");
        assert_eq!(
            node.status().unwrap()["leader"].as_str(),
            Some(leader.as_str())
        );
    }
}
