//! Multi-process measurements of the mesh, recorded in BENCHMARKS.md:
//!
//!     cargo run -p coditect-tests --example mesh_bench -- election 10
//!     cargo run -p coditect-tests --example mesh_bench -- failover 20
//!     cargo run -p coditect-tests --example mesh_bench -- rss
//!     cargo run -p coditect-tests --example mesh_bench -- throughput 10000
//!     cargo run -p coditect-tests --example mesh_bench -- latency 200
//!     cargo run -p coditect-tests --example mesh_bench -- steal 24
//!     cargo run -p coditect-tests --example mesh_bench -- resume 10
//!     cargo run -p coditect-tests --example mesh_bench -- ray 2000 [--tuned]
//!     cargo run -p coditect-tests --example mesh_bench -- join 10
//!     cargo run -p coditect-tests --example mesh_bench -- sender-check 1000000
//!
//! `ray` compares with Ray in the same run: Ray runs when a Python with
//! `ray` importable is found (`RAY_PYTHON`, else `python3`); otherwise the
//! mesh runs alone and says so.
//!
//! Real `coditect node` processes on 127.0.0.1 (build the binary first:
//! `cargo build -p coditect-node`). Times are wall-clock from the test
//! process, polling `/api/status` every few milliseconds.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time on purpose

use std::time::{Duration, Instant};

use coditect_tests::{
    http_exchange, http_request, leader_index, string_list, wait_for, NodeProcess,
};

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

/// Mission benchmark timings: heartbeat 100 ms.
fn mission_flags(bootstrap: Option<&str>, extra: &[&str]) -> Vec<String> {
    coditect_tests::mesh_flags(100, bootstrap, extra)
}

/// `count` nodes agreed on a leader and min(count, 3) voters.
fn mesh(dir: &std::path::Path, count: usize, extra: &'static [&'static str]) -> Vec<NodeProcess> {
    coditect_tests::start_mesh(dir, count, 100, |_| extra.to_vec())
}

/// POSTs a TOML mission; returns its id.
fn post_mission(node: &NodeProcess, text: &str) -> String {
    let (code, body) = http_exchange("POST", &node.http, "/api/missions", text.as_bytes()).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// The mission without its task list.
fn mission_summary(node: &NodeProcess, id: &str) -> Option<serde_json::Value> {
    let (code, body) = http_request(
        "GET",
        &node.http,
        &format!("/api/missions/{id}?tasks=false"),
    )
    .ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn tasks_toml(count: usize, module: &str) -> String {
    let mut text = String::from("name = \"bench\"\n");
    for i in 0..count {
        text.push_str(&format!("[[task]]\nid = \"t{i}\"\nmodule = \"{module}\"\n"));
    }
    text
}

/// No-op tasks committed per second on 3 voters + 2 workers.
fn throughput(tasks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 5, &["--slots", "8", "--queue-depth", "32"]);
    let leader = leader_index(&nodes);
    let text = tasks_toml(tasks, "builtin:noop");
    let started = Instant::now();
    let id = post_mission(&nodes[leader], &text);
    let accepted = started.elapsed();
    let mut first_done = None;
    let done = loop {
        let m = mission_summary(&nodes[leader], &id).unwrap();
        let succeeded = m["counts"]["succeeded"].as_u64().unwrap_or(0);
        if succeeded > 0 && first_done.is_none() {
            first_done = Some(started.elapsed());
        }
        if m["state"] == "succeeded" {
            break started.elapsed();
        }
        assert!(m["state"] == "running", "{m}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let placed = nodes[leader].metric("coditect_tasks_placed_total");
    let secs = (done - accepted).as_secs_f64();
    println!(
        "throughput: {tasks} no-op tasks on 3 voters + 2 workers (8 slots each): accepted in {:.0} ms, all succeeded {:.0} ms later; {:.0} tasks/s placed, run and committed ({placed} placements)",
        accepted.as_secs_f64() * 1000.0,
        secs * 1000.0,
        tasks as f64 / secs
    );
}

/// One no-op task, submit to succeeded, seen through the API's long poll.
fn latency(trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), 3, &[]);
    let leader = &nodes[leader_index(&nodes)];
    let text = tasks_toml(1, "builtin:noop");
    let mut samples = Vec::new();
    for _ in 0..trials {
        let started = Instant::now();
        let id = post_mission(leader, &text);
        let mut version = String::new();
        loop {
            let (code, body) = http_request(
                "GET",
                &leader.http,
                &format!("/api/missions/{id}?tasks=false&after={version}&wait_ms=5000"),
            )
            .unwrap();
            assert_eq!(code, 200, "{body}");
            let m: serde_json::Value = serde_json::from_str(&body).unwrap();
            if m["state"] == "succeeded" {
                break;
            }
            version = m["version"].as_str().unwrap().to_string();
        }
        samples.push(started.elapsed());
    }
    summary_p99("one no-op task end to end (POST to succeeded)", samples);
}

fn summary_p99(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(0.99)),
        ms(*samples.last().unwrap()),
    );
}

/// A burst queued on the only node known at submission, then two idle
/// nodes join: makespan with and without stealing.
fn steal(tasks: usize) {
    for stealing in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--slots", "1", "--queue-depth", "256"];
        if !stealing {
            extra.push("--no-steal");
        }
        let first = NodeProcess::start(&dir.path().join("n0"), "n0", &mission_flags(None, &extra));
        wait_for(Duration::from_secs(30), "a leader", || {
            first.status()?["leader"].as_str().map(|_| ())
        });
        let busy = dir.path().join("busy.wat");
        std::fs::write(&busy, "(module (memory (export \"memory\") 1) (func (export \"_start\") (local $i i64) (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) (br_if $l (i64.lt_u (local.get $i) (i64.const 150000000))))))").unwrap();
        let (code, body) = http_exchange(
            "POST",
            &first.http,
            "/api/blobs",
            &std::fs::read(&busy).unwrap(),
        )
        .unwrap();
        assert_eq!(code, 201);
        let digest: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = tasks_toml(tasks, digest["digest"].as_str().unwrap());
        let started = Instant::now();
        let id = post_mission(&first, &text);
        wait_for(Duration::from_secs(30), "the burst queued", || {
            let m = mission_summary(&first, &id)?;
            (m["counts"]["ready"].as_u64().unwrap_or(0) == 0).then_some(())
        });
        let boot = first.bootstrap_addr();
        let mut extra_join = vec!["--slots", "1"];
        if !stealing {
            extra_join.push("--no-steal");
        }
        let others: Vec<NodeProcess> = (1..3)
            .map(|i| {
                NodeProcess::start(
                    &dir.path().join(format!("n{i}")),
                    &format!("n{i}"),
                    &mission_flags(Some(&boot), &extra_join),
                )
            })
            .collect();
        wait_for(Duration::from_secs(600), "the burst done", || {
            let m = mission_summary(&first, &id)?;
            (m["state"] == "succeeded").then_some(())
        });
        let makespan = started.elapsed();
        let steals: f64 = others
            .iter()
            .map(|n| n.metric("coditect_steals_total"))
            .sum();
        let (_, body) = http_request("GET", &first.http, &format!("/api/missions/{id}")).unwrap();
        let mission: serde_json::Value = serde_json::from_str(&body).unwrap();
        let walls: Vec<f64> = mission["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["result"]["wall_ms"].as_f64())
            .collect();
        let mean = walls.iter().sum::<f64>() / walls.len().max(1) as f64;
        println!(
            "steal: {tasks} busy tasks (mean run {mean:.0} ms) burst onto 1 node, 2 idle nodes join; stealing {}: makespan {:.2} s, {steals} tasks stolen",
            if stealing { "on " } else { "off" },
            makespan.as_secs_f64()
        );
    }
}

/// Leader SIGKILL mid-mission to the first task placed by the new leader.
fn resume(trials: usize) {
    let mut samples = Vec::new();
    for _ in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = mesh(dir.path(), 5, &["--slots", "2"]);
        let leader = leader_index(&nodes);
        let api = (leader + 1) % nodes.len();
        let busy = "(module (memory (export \"memory\") 1) (func (export \"_start\") (local $i i64) (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) (br_if $l (i64.lt_u (local.get $i) (i64.const 20000000))))))";
        let (code, body) =
            http_exchange("POST", &nodes[api].http, "/api/blobs", busy.as_bytes()).unwrap();
        assert_eq!(code, 201);
        let digest: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = post_mission(
            &nodes[api],
            &tasks_toml(2000, digest["digest"].as_str().unwrap()),
        );
        wait_for(Duration::from_secs(30), "work under way", || {
            let m = mission_summary(&nodes[api], &id)?;
            (m["counts"]["succeeded"].as_u64().unwrap_or(0) >= 50).then_some(())
        });
        let before: Vec<f64> = nodes
            .iter()
            .map(|n| n.metric("coditect_tasks_placed_total"))
            .collect();
        let killed = Instant::now();
        nodes[leader].kill();
        let resumed = poll_fast(Duration::from_secs(30), || {
            nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leader)
                .any(|(i, n)| n.metric("coditect_tasks_placed_total") > before[i])
                .then_some(())
        });
        match resumed {
            Some(()) => samples.push(killed.elapsed()),
            None => println!("resume: a trial never resumed within 30 s"),
        }
    }
    summary_p99(
        "leader SIGKILL to first placement by the new leader",
        samples,
    );
}

/// The Python that has `ray`: `RAY_PYTHON`, else `python3` if it imports it.
fn ray_python() -> Option<String> {
    let candidates = std::env::var("RAY_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = std::process::Command::new(&python)
            .args(["-c", "import ray"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    None
}

/// Ray's rate for `tasks` no-op remote calls on a local Ray with 2 CPUs:
/// (first batch, with its worker processes starting, and a second batch).
fn ray_rates(python: &str, tasks: usize) -> Option<(f64, f64)> {
    let script = format!(
        r#"
import time, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
@ray.remote
def noop():
    return None
rates = []
for _ in range(2):
    started = time.perf_counter()
    ray.get([noop.remote() for _ in range({tasks})])
    rates.append({tasks} / (time.perf_counter() - started))
print("RATES", rates[0], rates[1])
ray.shutdown()
"#
    );
    let output = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("RATES "))?;
    let mut parts = line.split_whitespace().skip(1).map(|p| p.parse::<f64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
        _ => {
            eprintln!(
                "ray printed: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
    }
}

/// `coditect submit --wait` of `tasks` no-op tasks on a 3-node mesh, the
/// clock around the whole command (parse, upload, every task, the end).
fn submit_wait_rate(node: &NodeProcess, dir: &std::path::Path, tasks: usize) -> f64 {
    let file = dir.join(format!("noop-{tasks}.toml"));
    std::fs::write(&file, tasks_toml(tasks, "builtin:noop")).unwrap();
    let started = Instant::now();
    let output = std::process::Command::new(coditect_tests::coditect_bin())
        .args(["submit", "--wait", "--api"])
        .arg(format!("http://{}", node.http))
        .arg(&file)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "submit --wait failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tasks as f64 / took.as_secs_f64()
}

/// The mesh against Ray in one run: 3 nodes with default flags (or
/// `--slots 8 --queue-depth 32` with `--tuned`), 2 CPUs for Ray.
fn ray(tasks: usize, tuned: bool) {
    let python = ray_python();
    let ray = match &python {
        Some(python) => ray_rates(python, tasks),
        None => {
            println!("ray: no Python with `ray` found (set RAY_PYTHON); the mesh runs alone");
            None
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<String> = if tuned {
        ["--slots", "8", "--queue-depth", "32"]
            .map(String::from)
            .to_vec()
    } else {
        Vec::new()
    };
    let first = NodeProcess::start(&dir.path().join("n0"), "n0", &flags);
    let boot = first.bootstrap_addr();
    let mut nodes = vec![first];
    for i in 1..3 {
        let mut with_boot = flags.clone();
        with_boot.extend(["--bootstrap".to_string(), boot.clone()]);
        nodes.push(NodeProcess::start(
            &dir.path().join(format!("n{i}")),
            &format!("n{i}"),
            &with_boot,
        ));
    }
    let refs: Vec<&NodeProcess> = nodes.iter().collect();
    wait_for(Duration::from_secs(90), "3 voters and a leader", || {
        agreed_leader(&refs, 3)
    });
    // Through a follower, as a client that does not know the leader would.
    let leader = leader_index(&nodes);
    let api = (leader + 1) % nodes.len();
    let cpu = |nodes: &[NodeProcess]| -> Vec<Option<f64>> {
        nodes
            .iter()
            .map(|node| coditect_tests::proc_cpu_seconds(&node.pid().to_string()))
            .collect()
    };
    let before = cpu(&nodes);
    let first = submit_wait_rate(&nodes[api], dir.path(), tasks);
    let between = cpu(&nodes);
    let second = submit_wait_rate(&nodes[api], dir.path(), tasks);
    let after = cpu(&nodes);
    // Where the CPU went, per task: the leader, the follower the client
    // talks to, the other follower.
    let per_task = |from: &[Option<f64>], to: &[Option<f64>], i: usize| match (from[i], to[i]) {
        (Some(from), Some(to)) => format!("{:.0}", (to - from) * 1e6 / tasks as f64),
        _ => "?".to_string(),
    };
    let other = (0..nodes.len())
        .find(|i| *i != leader && *i != api)
        .unwrap();
    println!(
        "cpu per task, first / second mission (us): leader {} / {}, the client's follower {} / {}, the other follower {} / {}",
        per_task(&before, &between, leader),
        per_task(&between, &after, leader),
        per_task(&before, &between, api),
        per_task(&between, &after, api),
        per_task(&before, &between, other),
        per_task(&between, &after, other),
    );
    let flags = if tuned {
        "--slots 8 --queue-depth 32"
    } else {
        "default flags"
    };
    println!(
        "mesh ({flags}, 3 nodes): submit --wait of {tasks} no-op tasks: first {first:.0} tasks/s, second {second:.0} tasks/s"
    );
    if let Some((cold, warm)) = ray {
        println!(
            "ray (num_cpus=2): ray.get of {tasks} no-op tasks: first {cold:.0} tasks/s, second {warm:.0} tasks/s"
        );
        println!(
            "ratio mesh/ray: first {:.2}x, second {:.2}x",
            first / cold,
            second / warm
        );
    }
}

/// Seconds from starting a joiner to the founder listing it (and to it
/// being a Raft member), open mesh against guarded mesh with a token, in
/// one run, default heartbeat.
fn join(trials: usize) {
    for guarded in [false, true] {
        let (mut listed, mut member) = (Vec::new(), Vec::new());
        for _ in 0..trials {
            let dir = tempfile::tempdir().unwrap();
            let founder = if guarded {
                NodeProcess::start_guarded(&dir.path().join("n0"), "n0", &[])
            } else {
                NodeProcess::start(&dir.path().join("n0"), "n0", &[])
            };
            wait_for(Duration::from_secs(30), "a leader", || {
                let status = founder.status()?;
                (status["leader"].is_string() && (!guarded || status["admission"] == "token"))
                    .then_some(())
            });
            let mut extra = vec!["--bootstrap".to_string(), founder.bootstrap_addr()];
            if guarded {
                let mut args: Vec<String> = ["token", "create", "--api", &founder.api()]
                    .map(String::from)
                    .to_vec();
                args.extend(founder.auth_args());
                let (status, token, stderr) =
                    coditect_tests::coditect_output(&args, Duration::from_secs(30));
                assert!(status.success(), "{stderr}");
                extra.extend(["--join-token".to_string(), token.trim().to_string()]);
            }
            let started = Instant::now();
            let joiner = if guarded {
                NodeProcess::start_guarded(&dir.path().join("n1"), "n1", &extra)
            } else {
                NodeProcess::start(&dir.path().join("n1"), "n1", &extra)
            };
            let peer = joiner.peer_id.clone();
            let mut seen_listed = None;
            poll_fast(Duration::from_secs(60), || {
                let status = founder.status()?;
                let is_listed = status["peers"]
                    .as_array()?
                    .iter()
                    .any(|p| p["peer_id"] == peer.as_str());
                if is_listed && seen_listed.is_none() {
                    seen_listed = Some(started.elapsed());
                }
                let is_member = string_list(&status, "voters").contains(&peer)
                    || string_list(&status, "learners").contains(&peer);
                (is_listed && is_member).then_some(())
            })
            .expect("the joiner joined");
            member.push(started.elapsed());
            listed.push(seen_listed.expect("listed"));
        }
        let mode = if guarded { "token" } else { "open" };
        summary(
            &format!("join ({mode}): start to listed by the founder"),
            listed,
        );
        summary(&format!("join ({mode}): start to Raft member"), member);
    }
}

/// The sender check on its own: nanoseconds per call, against a view of
/// 1,000 admitted peers (heartbeats name their node, so each check also
/// derives the node id from the peer id).
fn sender_check(calls: usize) {
    use coditect_node::admission::{check, AdmissionView, Knowledge, RequestKind, Sender};
    let peers: Vec<String> = (0..1_000)
        .map(|i| format!("12D3KooW{:0>44}", format!("{i:x}")))
        .collect();
    let view = AdmissionView {
        api_token: None,
        version: 1,
        membership: 1,
        open: false,
        admitted: peers.iter().cloned().collect(),
        revoked: Default::default(),
        members: peers[..5].iter().cloned().collect(),
        voters: peers[..3].iter().cloned().collect(),
    };
    let knows = Knowledge {
        view: Some(&view),
        leader: Some(&peers[0]),
    };
    let ids: Vec<_> = peers
        .iter()
        .map(|p| coditect_node::datadir::node_id_for(p))
        .collect();
    for (label, kind, claims) in [
        ("heartbeat (node id derived)", RequestKind::Heartbeat, true),
        ("raft rpc (membership)", RequestKind::Raft, false),
        ("blob read (allowlist only)", RequestKind::Blob, false),
    ] {
        let started = Instant::now();
        let mut served = 0usize;
        for i in 0..calls {
            let peer = &peers[i % peers.len()];
            let sender = Sender {
                peer,
                kind,
                claims: claims.then(|| ids[i % ids.len()]),
            };
            served += usize::from(check(sender, knows).is_ok());
        }
        let per = started.elapsed().as_nanos() as f64 / calls as f64;
        println!(
            "sender check, {label}: {per:.0} ns per call over {calls} calls ({served} served)"
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Nodes log as a user's do (the node's default filter), not with the
    // tests' debug filter; `--debug-log` keeps the tests' filter.
    if !args.iter().any(|a| a == "--debug-log") {
        coditect_tests::use_node_default_log();
    }
    let count = |default: usize| args.get(1).and_then(|n| n.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("election") => election(count(10)),
        Some("failover") => failover(count(20)),
        Some("rss") => rss(),
        Some("throughput") => throughput(count(10_000)),
        Some("latency") => latency(count(200)),
        Some("steal") => steal(count(24)),
        Some("resume") => resume(count(10)),
        Some("ray") => ray(count(2000), args.iter().any(|a| a == "--tuned")),
        Some("join") => join(count(10)),
        Some("sender-check") => sender_check(count(1_000_000)),
        _ => {
            eprintln!(
                "usage: mesh_bench election|failover|rss|throughput|latency|steal|resume|ray|join|sender-check [N] [--tuned]"
            );
            std::process::exit(2);
        }
    }
}
