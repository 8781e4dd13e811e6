//! Black-box tests that the mesh holds under load and big inputs, with real
//! `coditect node` processes on 127.0.0.1: tasks that print a lot, missions
//! too large for one Raft entry, and resubmission with an idempotency key.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

use std::path::{Path, PathBuf};
use std::time::Duration;

use coditect_tests::{
    coditect_output, http_exchange_with, printer_wat, string_list, wait_for, NodeProcess,
};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A mission of `count` independent tasks running `module`.
fn flat_mission(module: &str, count: usize) -> String {
    let mut text = String::from("name = \"flat\"\n");
    for i in 0..count {
        text.push_str(&format!("[[task]]\nid = \"t{i}\"\nmodule = \"{module}\"\n"));
    }
    text
}

/// `coditect submit FILE` with extra arguments; exit code, stdout, stderr.
fn submit(
    node: &NodeProcess,
    file: &Path,
    extra: &[&str],
    limit: Duration,
) -> (i32, String, String) {
    let mut args = vec![
        "submit".to_string(),
        file.display().to_string(),
        "--api".into(),
        node.api(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (status, stdout, stderr) = coditect_output(&args, limit);
    (
        status.code().unwrap_or(-1),
        stdout.trim().to_string(),
        stderr,
    )
}

fn terms(nodes: &[NodeProcess]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.status().and_then(|s| s["term"].as_u64()).unwrap_or(0))
        .collect()
}

#[test]
fn thousands_of_tasks_printing_64_kib_complete_without_oversized_frames_or_elections() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| {
        vec!["--slots", "8", "--queue-depth", "32"]
    });
    let leader = nodes[0].status().unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let before = terms(&nodes);
    write(dir.path(), "print.wat", &printer_wat(64 * 1024));
    let count = 8_000;
    let file = write(dir.path(), "flat.toml", &flat_mission("print.wat", count));
    let started = std::time::Instant::now();
    let (code, id, stderr) = submit(&nodes[1], &file, &["--wait"], Duration::from_secs(900));
    assert_eq!(
        code,
        0,
        "submit --wait failed: {}",
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    eprintln!(
        "{count} tasks in {:?}: {}",
        started.elapsed(),
        stderr.lines().last().unwrap_or_default()
    );
    let mission = nodes[0].mission_summary(&id).expect("the mission");
    assert_eq!(mission["state"], "succeeded", "{mission}");
    assert_eq!(mission["counts"]["succeeded"], count, "{mission}");
    // Every result's head is kept (bounded), the whole stdout is a blob.
    let full = nodes[2].mission(&id).expect("the mission with its tasks");
    let task = &full["tasks"][0];
    let head = task["result"]["stdout"].as_str().unwrap();
    assert!(!head.is_empty() && head.len() < 64 * 1024, "{}", head.len());
    for node in &nodes {
        let log = node.log_text();
        assert!(
            !log.contains("exceeds the cap"),
            "a frame over the cap:\n{log}"
        );
    }
    // Replication kept up: no election happened, the leader stayed.
    assert_eq!(terms(&nodes), before, "the term moved under load");
    for node in &nodes {
        assert_eq!(
            node.status().unwrap()["leader"].as_str(),
            Some(leader.as_str())
        );
    }
}

#[test]
fn a_mission_larger_than_one_raft_entry_is_staged_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| {
        vec!["--slots", "8", "--queue-depth", "64"]
    });
    // Long task ids make each task's submission a few hundred bytes, so
    // 6,000 of them are several MiB: more than one Raft entry carries.
    let count = 6_000;
    let mut text = String::from("name = \"wide\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[task]]\nid = \"task-with-a-long-descriptive-identifier-number-{i:05}\"\nmodule = \"builtin:noop\"\npriority = \"P{}\"\n",
            i % 4
        ));
    }
    let file = write(dir.path(), "wide.toml", &text);
    let leader_before = nodes[0].status().unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    // Submitted through a follower: forwarded to the leader, then staged.
    let follower = nodes
        .iter()
        .find(|n| n.peer_id != leader_before)
        .expect("a follower");
    let (code, id, stderr) = submit(follower, &file, &["--wait"], Duration::from_secs(900));
    assert_eq!(code, 0, "{}", &stderr[stderr.len().saturating_sub(4000)..]);
    let mission = nodes[0].mission_summary(&id).unwrap();
    assert_eq!(mission["counts"]["succeeded"], count, "{mission}");
    let leader_log = nodes
        .iter()
        .find(|n| n.peer_id == leader_before)
        .unwrap()
        .log_text();
    assert!(
        leader_log.contains("staging part"),
        "the submission was split over entries"
    );
    for node in &nodes {
        assert_eq!(
            node.status().unwrap()["leader"].as_str(),
            Some(leader_before.as_str())
        );
    }
}

#[test]
fn the_same_idempotency_key_returns_the_same_mission_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = coditect_tests::start_mesh(dir.path(), 4, 100, |_| vec![]);
    let file = write(dir.path(), "flat.toml", &flat_mission("builtin:noop", 5));
    let body = std::fs::read_to_string(&file).unwrap();
    let post = |node: &NodeProcess, key: &str| -> (u16, String) {
        let (code, answer) = http_exchange_with(
            "POST",
            &node.http,
            "/api/missions",
            &[
                ("Content-Type", "application/toml"),
                ("Idempotency-Key", key),
            ],
            body.as_bytes(),
        )
        .expect("an answer");
        (code, String::from_utf8_lossy(&answer).into_owned())
    };
    let status = nodes[0].status().unwrap();
    let leader = status["leader"].as_str().unwrap().to_string();
    let voters = string_list(&status, "voters");
    let worker = nodes
        .iter()
        .position(|n| !voters.contains(&n.peer_id))
        .expect("a node outside the voters");
    let (code, answer) = post(&nodes[worker], "key-1");
    assert_eq!(code, 201, "{answer}");
    let first: Value = serde_json::from_str(&answer).unwrap();
    let id = first["id"].as_str().unwrap().to_string();

    // The leader dies; a new one is elected from the replicated state.
    let leader_index = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    nodes[leader_index].kill();
    let survivor = (0..nodes.len()).find(|i| *i != leader_index).unwrap();
    wait_for(Duration::from_secs(60), "a new leader", || {
        let status = nodes[survivor].status()?;
        let now = status["leader"].as_str()?;
        (now != leader).then_some(())
    });
    let again = wait_for(Duration::from_secs(60), "the resubmission answered", || {
        let (code, answer) = post(&nodes[worker], "key-1");
        (code == 201).then_some(answer)
    });
    let second: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        second["id"].as_str(),
        Some(id.as_str()),
        "same key, same mission"
    );
    // A different key is a different mission.
    let (code, answer) = post(&nodes[worker], "key-2");
    assert_eq!(code, 201, "{answer}");
    assert!(!answer.contains(&format!("\"{id}\"")), "{answer}");
    // The mission ran once: five tasks, each committed once.
    let mission = wait_for(Duration::from_secs(120), "the mission succeeded", || {
        nodes[worker]
            .mission(&id)
            .filter(|m| m["state"] == "succeeded")
    });
    let tasks = mission["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 5);
    assert!(
        tasks.iter().all(|t| t["results_committed"] == 1),
        "{mission}"
    );
    // A bad key is refused with a reason.
    let (code, answer) = post(&nodes[worker], "bad key");
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("Idempotency-Key"), "{answer}");
}

#[test]
fn a_hundred_thousand_task_mission_is_refused_with_a_reason_and_the_leader_stays() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| vec![]);
    let leader = nodes[0].status().unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let before = terms(&nodes);
    let file = write(
        dir.path(),
        "huge.toml",
        &flat_mission("builtin:noop", 100_000),
    );
    let (code, stdout, stderr) = submit(&nodes[2], &file, &[], Duration::from_secs(300));
    assert_eq!(code, 2, "bad input exits 2: {stdout} {stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(
        line.contains("10000") || line.contains("10,000"),
        "names the cap: {line}"
    );
    // The same file sent straight to a follower's API (no client-side
    // check): the mesh parses it off its runtime and refuses it by name.
    let follower = nodes.iter().find(|n| n.peer_id != leader).unwrap();
    let body = std::fs::read(&file).unwrap();
    let (code, answer) =
        coditect_tests::http_exchange("POST", &follower.http, "/api/missions", &body).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer.contains("10000") || answer.contains("10,000"),
        "{answer}"
    );
    // A chain of 10,000 tasks, each waiting on the one before: refused by
    // the CLI and by the API, with the cap named.
    let mut deep = String::from("name = \"deep\"\n");
    for i in 0..10_000 {
        deep.push_str(&format!(
            "[[task]]\nid = \"c{i}\"\nmodule = \"builtin:noop\"\n"
        ));
        if i > 0 {
            deep.push_str(&format!("needs = [\"c{}\"]\n", i - 1));
        }
    }
    let deep_file = write(dir.path(), "deep.toml", &deep);
    let (code, stdout, stderr) = submit(&nodes[2], &deep_file, &[], Duration::from_secs(120));
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert!(stderr.contains("chain of 2001 dependent tasks"), "{stderr}");
    let (code, answer) =
        coditect_tests::http_exchange("POST", &follower.http, "/api/missions", deep.as_bytes())
            .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("cap of 2000"), "{answer}");
    // Nothing was stored, nobody was deposed.
    let (code, _) =
        coditect_tests::http_request("GET", &nodes[0].http, "/api/missions/m1").unwrap();
    assert_eq!(code, 404);
    assert_eq!(terms(&nodes), before);
    // And a normal mission on the same node still runs to the end.
    let small = write(dir.path(), "small.toml", &flat_mission("builtin:noop", 3));
    let (code, stdout, stderr) = submit(&nodes[2], &small, &["--wait"], Duration::from_secs(60));
    assert_eq!(code, 0, "{stdout} {stderr}");
    for node in &nodes {
        assert_eq!(
            node.status().unwrap()["leader"].as_str(),
            Some(leader.as_str())
        );
    }
}

#[test]
fn a_200_mb_upload_to_the_leader_keeps_it_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| vec![]);
    let status = nodes[0].status().unwrap();
    let leader_peer = status["leader"].as_str().unwrap().to_string();
    let before = terms(&nodes);
    let leader = nodes.iter().find(|n| n.peer_id == leader_peer).unwrap();
    // 200 MB of bytes that do not repeat in any short period.
    let mut body = vec![0u8; 200 * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let expected = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
    };
    // While the upload streams in, /api/status keeps answering.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (http, done) = (leader.http.clone(), done.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let answered = coditect_tests::http_request("GET", &http, "/api/status")
                    .is_ok_and(|(code, _)| code == 200);
                latencies.push((started.elapsed(), answered));
                std::thread::sleep(Duration::from_millis(20));
            }
            latencies
        })
    };
    let (code, answer) =
        coditect_tests::http_exchange("POST", &leader.http, "/api/blobs", &body).unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = probe.join().unwrap();
    assert!(
        latencies.iter().all(|(_, answered)| *answered),
        "status failed during the upload"
    );
    latencies.sort();
    if let Some((p99, _)) = latencies.get(latencies.len() * 99 / 100) {
        eprintln!(
            "/api/status during a 200 MB upload: {} samples, p99 {p99:?}",
            latencies.len()
        );
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert_eq!(code, 201, "{answer}");
    assert!(answer.contains(&expected), "{answer} vs {expected}");
    drop(body);
    assert_eq!(terms(&nodes), before, "the upload cost an election");
    for node in &nodes {
        assert_eq!(
            node.status().unwrap()["leader"].as_str(),
            Some(leader_peer.as_str())
        );
    }
    // An upload over the store's limit is refused with 413, and nothing is kept.
    let big = vec![1u8; 257 * 1024 * 1024];
    let (code, answer) = coditect_tests::http_exchange("POST", &leader.http, "/api/blobs", &big)
        .unwrap_or((0, Vec::new()));
    assert!(
        code == 413 || code == 0,
        "{code} {}",
        String::from_utf8_lossy(&answer)
    );
    let leftovers = std::fs::read_dir(leader.data_dir.join("blobs").join("tmp"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a refused upload leaves no temporary file");
}

#[test]
fn two_hundred_long_polls_on_a_5000_task_mission_leave_the_node_answering() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 3, 100, |_| {
        vec!["--slots", "2", "--queue-depth", "4"]
    });
    // Tasks that take a while, so the mission runs during the polls.
    let busy = "(module (memory (export \"memory\") 1)\n  (func (export \"_start\") (local $i i64)\n    (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))\n      (br_if $l (i64.lt_u (local.get $i) (i64.const 2000000))))))\n";
    write(dir.path(), "busy.wat", busy);
    let file = write(dir.path(), "wide.toml", &flat_mission("busy.wat", 5_000));
    let (code, id, stderr) = submit(&nodes[0], &file, &[], Duration::from_secs(300));
    assert_eq!(code, 0, "{stderr}");
    let target = nodes[0].http.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts: std::sync::Arc<Vec<std::sync::atomic::AtomicU32>> =
        std::sync::Arc::new((0..200).map(|_| Default::default()).collect());
    let pollers: Vec<_> = (0..200)
        .map(|i| {
            let target = target.clone();
            let id = id.clone();
            let stop = stop.clone();
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut version = String::new();
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Half follow the full view, half the summary, as clients do.
                    let tasks = if i % 2 == 0 { "true" } else { "false" };
                    let path =
                        format!("/api/missions/{id}?after={version}&wait_ms=2000&tasks={tasks}");
                    match coditect_tests::http_request("GET", &target, &path) {
                        Ok((200, body)) => {
                            answered += 1;
                            counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // The version without parsing megabytes of JSON.
                            version = body
                                .rsplit("\"version\":\"")
                                .next()
                                .and_then(|rest| rest.split('"').next())
                                .unwrap_or_default()
                                .to_string();
                        }
                        Ok((429, _)) => std::thread::sleep(Duration::from_millis(100)),
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
                answered
            })
        })
        .collect();
    // While they wait, the status API and the mission keep moving.
    std::thread::sleep(Duration::from_secs(2));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let status = nodes[0]
            .status()
            .expect("/api/status answers under 200 long polls");
        slowest = slowest.max(started.elapsed());
        assert!(status["leader"].is_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest /api/status under 200 long polls: {slowest:?}");
    wait_for(
        Duration::from_secs(120),
        "tasks completing under the polls",
        || {
            let m = nodes[1].mission_summary(&id)?;
            (m["counts"]["succeeded"].as_u64()? >= 50).then_some(())
        },
    );
    // Every poller is served in its turn, however loaded the machine is.
    wait_for(
        Duration::from_secs(180),
        "an answer for every poller",
        || {
            counts
                .iter()
                .all(|n| n.load(std::sync::atomic::Ordering::Relaxed) >= 1)
                .then_some(())
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: Vec<u32> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(
        answered.iter().all(|n| *n >= 1),
        "every poller got answers: {answered:?}"
    );
    // The node is still fine once the clients are gone.
    let status = nodes[0].status().expect("status after the polls");
    assert!(status["leader"].is_string());
}

#[test]
fn a_node_outside_raft_reads_a_view_larger_than_a_frame_part_by_part() {
    let dir = tempfile::tempdir().unwrap();
    // One voter and two standbys hold the replica; the fourth node does not,
    // so it asks the leader for everything it shows.
    let extra = ["--voters", "1", "--slots", "8", "--queue-depth", "32"];
    let first = NodeProcess::start(
        &dir.path().join("n0"),
        "n0",
        &coditect_tests::mesh_flags(100, None, &extra),
    );
    let boot = first.bootstrap_addr();
    let mut nodes = vec![first];
    for i in 1..4 {
        nodes.push(NodeProcess::start(
            &dir.path().join(format!("n{i}")),
            &format!("n{i}"),
            &coditect_tests::mesh_flags(100, Some(&boot), &extra),
        ));
    }
    let worker = wait_for(
        Duration::from_secs(90),
        "two standbys and a node outside Raft",
        || {
            let statuses: Vec<Value> = nodes.iter().map(|n| n.status()).collect::<Option<_>>()?;
            let roles: Vec<&str> = statuses.iter().filter_map(|s| s["role"].as_str()).collect();
            let count = |role: &str| roles.iter().filter(|r| **r == role).count();
            if (count("leader"), count("learner"), count("worker")) != (1, 2, 1) {
                return None;
            }
            nodes
                .iter()
                .zip(&statuses)
                .find(|(_, s)| s["role"] == "worker")
                .map(|(n, _)| n)
        },
    );
    // 4,500 results with a 4 KiB stdout head each: a view of about 19 MB,
    // more than one frame (16 MiB) carries, so it travels in 4 MiB parts.
    write(dir.path(), "print.wat", &printer_wat(4096));
    let count = 4_500;
    let file = write(dir.path(), "flat.toml", &flat_mission("print.wat", count));
    let (code, id, stderr) = submit(worker, &file, &["--wait"], Duration::from_secs(600));
    assert_eq!(code, 0, "{}", &stderr[stderr.len().saturating_sub(4000)..]);
    let leader = nodes
        .iter()
        .find(|n| n.status().is_some_and(|s| s["role"] == "leader"))
        .expect("a leader");
    let (code, relayed) =
        coditect_tests::http_request("GET", &worker.http, &format!("/api/missions/{id}")).unwrap();
    assert_eq!(code, 200, "{}", &relayed[..relayed.len().min(400)]);
    assert!(relayed.len() > 16 * 1024 * 1024, "{} bytes", relayed.len());
    let (_, direct) =
        coditect_tests::http_request("GET", &leader.http, &format!("/api/missions/{id}")).unwrap();
    let relayed: Value = serde_json::from_str(&relayed).expect("the relayed view is whole JSON");
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(
        relayed, direct,
        "the relayed view differs from the leader's"
    );
    assert_eq!(relayed["tasks"].as_array().unwrap().len(), count);
    // A task's output, through the leader's copy of just that result.
    let (code, stdout) = coditect_tests::http_request(
        "GET",
        &worker.http,
        &format!("/api/missions/{id}/tasks/t7/output/stdout"),
    )
    .unwrap();
    assert_eq!((code, stdout.len()), (200, 4096));
    assert!(stdout.bytes().all(|b| b == b'x'));
    // Cancelling a finished mission is a conflict, also across the hop;
    // an unknown mission is not found.
    let (code, body) =
        coditect_tests::http_request("DELETE", &worker.http, &format!("/api/missions/{id}"))
            .unwrap();
    assert_eq!(code, 409, "{body}");
    let (code, _) =
        coditect_tests::http_request("DELETE", &worker.http, "/api/missions/m999999").unwrap();
    assert_eq!(code, 404);
}

/// The node's resident set now and at its peak, KiB (`/proc/PID/status`).
fn rss_kib(pid: u32) -> (u64, u64) {
    let pid = pid.to_string();
    (
        coditect_tests::proc_memory_kib(&pid, "VmRSS"),
        coditect_tests::proc_memory_kib(&pid, "VmHWM"),
    )
}

/// One long poll from `source` (a loopback address of its own, as a
/// distinct client); the status code, or 0 if the exchange failed.
async fn long_poll(source: std::net::Ipv4Addr, server: std::net::SocketAddr, path: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let mut stream = socket.connect(server).await?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(90), exchange).await {
        Ok(Ok(answer)) => String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn a_gigabyte_body_and_two_thousand_long_polls_are_bounded_while_a_mission_completes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = coditect_tests::start_mesh(dir.path(), 1, 100, |_| vec![]);
    let node = &nodes[0];
    // A mission that stays as it is: its task needs what no node offers.
    let stuck = write(
        dir.path(),
        "stuck.toml",
        "name = \"stuck\"\n[[task]]\nid = \"t\"\nmodule = \"builtin:noop\"\nrequires = [\"no-such-capability\"]\n",
    );
    let (code, id, stderr) = submit(node, &stuck, &[], Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let version = wait_for(Duration::from_secs(20), "the stuck mission's view", || {
        node.mission_summary(&id)?["version"]
            .as_str()
            .map(str::to_string)
    });
    let (_, baseline) = rss_kib(node.pid());

    // 2,000 long polls at once from eight client addresses (250 each, under
    // the per-client caps, so the node-wide caps are what holds them).
    let server: std::net::SocketAddr = node.http.parse().unwrap();
    let path = format!("/api/missions/{id}?after={version}&wait_ms=15000&tasks=false");
    let polls = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let calls = (0..2_000u32).map(|i| {
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
                tokio::spawn(long_poll(source, server, path.clone()))
            });
            let mut codes = Vec::new();
            for call in futures::future::join_all(calls).await {
                codes.push(call.unwrap_or(0));
            }
            codes
        })
    });
    std::thread::sleep(Duration::from_secs(3));

    // Meanwhile a normal mission runs to the end through the CLI, whose own
    // long poll finds no place and falls back to plain reads.
    let small = write(dir.path(), "small.toml", &flat_mission("builtin:noop", 3));
    let (code, stdout, stderr) = submit(node, &small, &["--wait"], Duration::from_secs(90));
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert_eq!(node.get_code("/api/status"), Some(200));

    // A 1 GiB body, declared and sent: refused on its header, long before
    // the node could have read it, and nothing is kept.
    let declared = 1u64 << 30;
    let mut stream = std::net::TcpStream::connect(&node.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    use std::io::{Read as _, Write as _};
    write!(
        stream,
        "POST /api/blobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    let mut sender = stream.try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0u64;
        while sent < declared && sender.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut answer = vec![0u8; 4096];
    let read = stream.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("exceeds the limit"), "{answer}");
    drop(stream);
    let sent = pusher.join().unwrap();
    assert!(
        sent < declared / 2,
        "the node read {sent} bytes of a refused body"
    );
    let leftovers = std::fs::read_dir(node.data_dir.join("blobs").join("tmp"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a refused upload leaves no temporary file");
    // The same on the mission endpoint, whose cap is 8 MiB.
    let (code, _) = coditect_tests::http_exchange(
        "POST",
        &node.http,
        "/api/missions",
        &vec![b' '; 9 * 1024 * 1024],
    )
    .unwrap_or((0, Vec::new()));
    assert!(code == 413 || code == 0, "{code}");

    let codes = polls.join().unwrap();
    let waited = codes.iter().filter(|code| **code == 200).count();
    let refused = codes.iter().filter(|code| **code == 429).count();
    let (now, peak) = rss_kib(node.pid());
    eprintln!(
        "2,000 long polls: {waited} waited, {refused} refused (429), {} failed; RSS {baseline} KiB before, {now} KiB after, peak {peak} KiB",
        codes.len() - waited - refused
    );
    assert_eq!(waited + refused, codes.len(), "every poll got an answer");
    assert!(
        (1..=coditect_node::runtime::MAX_WAITERS).contains(&waited),
        "{waited} polls waited"
    );
    assert!(
        node.metric("coditect_http_refused_total{reason=\"long_polls\"}") >= refused as f64,
        "the refusals are counted"
    );
    // Bounded: the whole run held no more than a few hundred MiB.
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
    // And the node still answers and runs work afterwards.
    let (code, stdout, stderr) = submit(node, &small, &["--wait"], Duration::from_secs(60));
    assert_eq!(code, 0, "{stdout} {stderr}");
}
