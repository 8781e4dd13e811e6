//! Measurements of the `llm` capability and the coder, recorded in
//! BENCHMARKS.md, against the local TEST DOUBLE provider
//! (`coditect_tests::llm_double`, not a model):
//!
//!     cargo run -p coditect-tests --example llm_bench -- fib 5
//!     cargo run -p coditect-tests --example llm_bench -- overhead 200
//!     cargo run -p coditect-tests --example llm_bench -- throughput 8 20 100
//!
//! - `fib TRIALS`: the mission "add fib(n) with tests" (analyze, code,
//!   test) on 3 loopback nodes, one of them offering the model; submit to
//!   the mission's end, per trial.
//! - `overhead CALLS`: a Python task calls the model CALLS times in a row
//!   and times each call from inside the sandbox; the same request sent
//!   straight to the double from here is the provider's own latency.
//! - `throughput TASKS CALLS DELAY_MS`: TASKS Python tasks at once on one
//!   node (`--slots TASKS`, `max_concurrency` 8), each making CALLS calls,
//!   the double answering each after DELAY_MS; calls per second from the
//!   first call's start to the last one's end (guest clocks).
//!
//! Real `coditect node` processes (build the binary first).
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time on purpose

use std::path::Path;
use std::time::{Duration, Instant};

use coditect_tests::llm_double::LlmDouble;
use coditect_tests::{coditect_output, http_exchange_with, mesh_flags, wait_for, NodeProcess};
use serde_json::Value;

fn percentiles(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms max={:.2} ms min={:.2} ms",
        ms.len(),
        pick(0.5),
        pick(0.9),
        ms[ms.len() - 1],
        ms[0]
    );
}

fn llm_node(
    dir: &Path,
    name: &str,
    double: &LlmDouble,
    bootstrap: Option<&str>,
    extra: &[&str],
) -> NodeProcess {
    let config = dir.join(format!("{name}-llm.toml"));
    std::fs::write(
        &config,
        "[llm]\nmax_concurrency = 8\nrequests_per_minute = 1000000\n",
    )
    .unwrap();
    let mut flags: Vec<&str> = vec![
        "--llm-url",
        &double.base_url,
        "--llm-model",
        "bench-model",
        "--config",
        config.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    NodeProcess::start(&dir.join(name), name, &mesh_flags(100, bootstrap, &flags))
}

fn ready(node: &NodeProcess) {
    wait_for(Duration::from_secs(300), "python and llm ready", || {
        let status = node.status()?;
        let python = status["runtimes"]["python"]["state"] == "ready";
        let llm = status["capabilities"]["tags"].get("llm").is_some()
            || status["runtimes"].get("llm").is_none();
        (python && llm).then_some(())
    });
}

fn submit_wait(node: &NodeProcess, file: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<String> = vec!["submit".into(), file.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--wait".into(), "--api".into(), node.api()]);
    let (status, stdout, stderr) = coditect_output(&args, Duration::from_secs(600));
    let id = stdout.lines().next().unwrap_or("").trim().to_string();
    assert!(status.success(), "{stdout}\n{stderr}");
    node.mission(&id).unwrap()
}

fn fib(trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("bench-model");
    double.set_script(vec![(
        "fib(n)".into(),
        "```python path=mathx/fib.py\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```\n\n```python path=tests/test_fib.py\nimport unittest\n\nfrom mathx.fib import fib\n\n\nclass FibTest(unittest.TestCase):\n    def test_fib(self):\n        self.assertEqual([fib(i) for i in range(7)], [0, 1, 1, 2, 3, 5, 8])\n```\n".into(),
    )]);
    let first = llm_node(dir.path(), "n0", &double, None, &[]);
    let boot = first.bootstrap_addr();
    let others: Vec<NodeProcess> = (1..3)
        .map(|i| {
            NodeProcess::start(
                &dir.path().join(format!("n{i}")),
                &format!("n{i}"),
                &mesh_flags(100, Some(&boot), &[]),
            )
        })
        .collect();
    ready(&first);
    others.iter().for_each(ready);
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pyprojects/mathx");
    let file = dir.path().join("fib.toml");
    std::fs::write(
        &file,
        "name = \"fib\"\n[[task]]\nid = \"analyze\"\nmodule = \"builtin:analyzer\"\n\
         [[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\nneeds = [\"analyze\"]\n\
         input = \"Add a function fib(n) with tests\"\n\
         [[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"code\"]\n",
    )
    .unwrap();
    let mut samples = Vec::new();
    for trial in 0..trials {
        let started = Instant::now();
        let mission = submit_wait(
            &others[0],
            &file,
            &["--workspace", project.to_str().unwrap()],
        );
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(mission["state"], "succeeded", "{mission}");
        let walls: Vec<String> = mission["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{} {} ms",
                    t["id"].as_str().unwrap(),
                    t["result"]["wall_ms"]
                )
            })
            .collect();
        println!("trial {trial}: {took:.0} ms ({})", walls.join(", "));
        samples.push(took);
    }
    percentiles("fib mission, submit --wait to the end, 3 nodes", samples);
}

/// A Python task timing `calls` model calls from inside the sandbox.
fn caller_mission(dir: &Path, tasks: usize, calls: usize) -> std::path::PathBuf {
    std::fs::write(
        dir.join("coditect.py"),
        include_str!("../../agents/coditect.py"),
    )
    .unwrap();
    std::fs::write(
        dir.join("bench.py"),
        format!(
            "import json, sys, time\nsys.path.insert(0, '/input')\nimport coditect\n\
             lat = []\nfirst = time.time()\n\
             for i in range({calls}):\n    t = time.monotonic()\n    coditect.llm([{{'role': 'user', 'content': 'ping %d' % i}}], max_tokens=8)\n    lat.append((time.monotonic() - t) * 1000)\n\
             print(json.dumps({{'first': first, 'last': time.time(), 'lat': lat}}))\n"
        ),
    )
    .unwrap();
    let mut toml = String::from("name = \"llm calls\"\n");
    for i in 0..tasks {
        toml.push_str(&format!(
            "[[task]]\nid = \"call{i}\"\nmodule = \"builtin:python\"\nargs = [\"/input/bench.py\"]\n\
             inputs = [\"coditect.py\", \"bench.py\"]\nrequires = [\"wasm\", \"llm\"]\n\
             [task.limits]\nmax_llm_calls = {calls}\ntimeout_ms = 600000\nmax_tokens = 100000000\n"
        ));
    }
    let file = dir.join("calls.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// Each task's printed timings: (first start, last end, latencies).
fn timings(node: &NodeProcess, mission: &Value) -> Vec<(f64, f64, Vec<f64>)> {
    mission["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let digest = t["result"]["stdout_digest"].as_str().unwrap();
            let (_, body) =
                coditect_tests::http_request("GET", &node.http, &format!("/api/blobs/{digest}"))
                    .unwrap();
            let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{body}"));
            let lat = v["lat"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (
                v["first"].as_f64().unwrap(),
                v["last"].as_f64().unwrap(),
                lat,
            )
        })
        .collect()
}

fn overhead(calls: usize) {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("bench-model");
    let node = llm_node(dir.path(), "n0", &double, None, &[]);
    ready(&node);
    let file = caller_mission(dir.path(), 1, calls);
    let mission = submit_wait(&node, &file, &[]);
    let (_, _, guest) = timings(&node, &mission).remove(0);
    // The provider's own latency: the same request, straight from here.
    let addr = double
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let body = br#"{"model":"bench-model","messages":[{"role":"user","content":"ping 1"}],"max_tokens":8,"stream":false}"#;
    let mut direct = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        let (code, _) = http_exchange_with(
            "POST",
            &addr,
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            body,
        )
        .unwrap();
        assert_eq!(code, 200);
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (g, d) = (median(&guest), median(&direct));
    percentiles("one model call, timed inside the sandbox (Python)", guest);
    percentiles("the same request straight to the provider", direct);
    println!("overhead the node adds (p50 difference): {:.2} ms", g - d);
}

fn throughput(tasks: usize, calls: usize, delay_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let double = LlmDouble::start("bench-model");
    double.set_delay(Duration::from_millis(delay_ms));
    let slots = tasks.to_string();
    let node = llm_node(dir.path(), "n0", &double, None, &["--slots", &slots]);
    ready(&node);
    let file = caller_mission(dir.path(), tasks, calls);
    let mission = submit_wait(&node, &file, &[]);
    let runs = timings(&node, &mission);
    let first = runs.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let last = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    let total = tasks * calls;
    println!(
        "{total} calls by {tasks} tasks, provider latency {delay_ms} ms, max_concurrency 8: {:.1} calls/s over {:.2} s (ideal {:.1} calls/s); requests seen by the provider: {}",
        total as f64 / (last - first),
        last - first,
        8.0 * 1000.0 / delay_ms.max(1) as f64,
        double.chat_requests()
    );
    percentiles(
        "per call, inside the sandbox",
        runs.into_iter().flat_map(|r| r.2).collect(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("fib") => fib(arg(1, 5)),
        Some("overhead") => overhead(arg(1, 200)),
        Some("throughput") => throughput(arg(1, 8), arg(2, 20), arg(3, 100) as u64),
        _ => {
            eprintln!(
                "usage: llm_bench fib TRIALS | overhead CALLS | throughput TASKS CALLS DELAY_MS"
            );
            std::process::exit(2);
        }
    }
}
