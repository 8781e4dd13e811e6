//! Multi-process measurements of the mesh, recorded in BENCHMARKS.md:
//!
//!     cargo run -p coditect-tests --example mesh_bench -- election 10
//!     cargo run -p coditect-tests --example mesh_bench -- failover 20
//!     cargo run -p coditect-tests --example mesh_bench -- rss
//!
//! Real `coditect node` processes on 127.0.0.1 (build the binary first:
//! `cargo build -p coditect-node`). Times are wall-clock from the test
//! process, polling `/api/status` every few milliseconds.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time on purpose

use std::time::{Duration, Instant};

use coditect_tests::{string_list, wait_for, NodeProcess};

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} p50={:.0} ms p90={:.0} ms max={:.0} ms min={:.0} ms",
        samples.len(),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(*samples.last().unwrap()),
        ms(samples[0]),
    );
}

fn agreed_leader(nodes: &[&NodeProcess], voters_wanted: usize) -> Option<String> {
    let mut leader: Option<String> = None;
    let mut voters: Option<Vec<String>> = None;
    for node in nodes {
        let status = node.status()?;
        let this_leader = status["leader"].as_str()?.to_string();
        let this_voters = string_list(&status, "voters");
        if leader.get_or_insert(this_leader.clone()) != &this_leader {
            return None;
        }
        if voters.get_or_insert(this_voters.clone()) != &this_voters {
            return None;
        }
    }
    (voters?.len() >= voters_wanted).then(|| leader.unwrap())
}

fn poll_fast<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(value) = probe() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn election(trials: usize) {
    let mut first_leader = Vec::new();
    let mut full_mesh = Vec::new();
    for _ in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let first = NodeProcess::start(&dir.path().join("n1"), "n1", &[]);
        poll_fast(Duration::from_secs(30), || {
            (first.get_code("/readyz") == Some(200)).then_some(())
        })
        .expect("first leader");
        first_leader.push(started.elapsed());
        let boot = first.bootstrap_addr();
        let second = NodeProcess::start(
            &dir.path().join("n2"),
            "n2",
            &["--bootstrap".into(), boot.clone()],
        );
        let third = NodeProcess::start(&dir.path().join("n3"), "n3", &["--bootstrap".into(), boot]);
        poll_fast(Duration::from_secs(60), || {
            agreed_leader(&[&first, &second, &third], 3)
        })
        .expect("3 voters");
        full_mesh.push(started.elapsed());
    }
    summary("first leader (process start to /readyz 200)", first_leader);
    summary(
        "3 voters agreed by all (first process start to agreement)",
        full_mesh,
    );
}

fn settle_ms() -> u64 {
    std::env::var("BENCH_SETTLE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(3_000)
}

fn failover(trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    eprintln!("node data and logs in {}", dir.path().display());
    let first = NodeProcess::start(&dir.path().join("n0"), "n0", &[]);
    let boot = first.bootstrap_addr();
    let mut nodes = vec![first];
    for index in 1..3 {
        let name = format!("n{index}");
        nodes.push(NodeProcess::start(
            &dir.path().join(&name),
            &name,
            &["--bootstrap".into(), boot.clone()],
        ));
    }
    let mut samples = Vec::new();
    for trial in 0..trials {
        wait_for(Duration::from_secs(60), "3 voters", || {
            agreed_leader(&nodes.iter().collect::<Vec<_>>(), 3)
        });
        // Let the mesh settle (a node restarted by the previous trial has just
        // rejoined); BENCH_SETTLE_MS=0 measures back-to-back failures.
        std::thread::sleep(Duration::from_millis(settle_ms()));
        let leader = wait_for(Duration::from_secs(60), "3 voters", || {
            agreed_leader(&nodes.iter().collect::<Vec<_>>(), 3)
        });
        let index = nodes
            .iter()
            .position(|node| node.peer_id == leader)
            .unwrap();
        let data_dir = nodes[index].data_dir.clone();
        nodes[index].kill();
        let killed = Instant::now();
        let survivors: Vec<&NodeProcess> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, n)| n)
            .collect();
        poll_fast(Duration::from_secs(30), || {
            agreed_leader(&survivors, 1).filter(|new_leader| *new_leader != leader)
        })
        .unwrap_or_else(|| {
            for node in &survivors {
                let log = node.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {} ({})", node.peer_id, node.data_dir.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
                eprintln!("status: {:?}", node.status());
            }
            // Keep the logs for a post-mortem.
            std::process::Command::new("cp")
                .args([
                    "-r",
                    &dir.path().display().to_string(),
                    "/tmp/coditect-failover-logs",
                ])
                .status()
                .ok();
            panic!("no new leader in trial {trial}; logs copied to /tmp/coditect-failover-logs")
        });
        samples.push(killed.elapsed());
        eprintln!("trial {trial}: {:?}", killed.elapsed());
        nodes[index] = NodeProcess::start(&data_dir, &format!("n{index}"), &[]);
    }
    summary(
        "failover (SIGKILL of the leader to a new leader known to all survivors)",
        samples,
    );
    if let Some(keep) = std::env::var_os("KEEP_LOGS") {
        std::process::Command::new("cp")
            .arg("-r")
            .arg(dir.path())
            .arg(keep)
            .status()
            .ok();
    }
}

fn rss() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("n1"), "n1", &[]);
    std::thread::sleep(Duration::from_secs(10));
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    for line in status.lines() {
        if line.starts_with("VmRSS") || line.starts_with("VmHWM") {
            println!("idle node after 10 s: {line}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |default: usize| args.get(1).and_then(|n| n.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("election") => election(count(10)),
        Some("failover") => failover(count(20)),
        Some("rss") => rss(),
        _ => {
            eprintln!("usage: mesh_bench election [TRIALS] | failover [TRIALS] | rss");
            std::process::exit(2);
        }
    }
}
