//! Sandbox benchmark: `cargo run -p coditect-sandbox --example sandbox_bench`
//! (add `--release` for release numbers; the dev profile already builds
//! wasmtime at opt-level 2). Prints a markdown table for BENCHMARKS.md.
//!
//! Measures: instantiate-from-cache latency, first compile vs cached load of
//! each example agent, a no-op task end to end through the sandbox API, fuel
//! metering overhead on a compute loop, and memory per idle instance.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time and starts its own threads

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coditect_sandbox::{CacheSource, Limits, PreparedModule, Sandbox, SandboxConfig, TaskSpec};

const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// 200 million rounds of xorshift: pure compute, no host calls.
const COMPUTE: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32) (local $x i64)
    (local.set $x (i64.const 88172645463325252))
    (loop $more
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 200000000))))
    (i64.store (i32.const 0) (local.get $x))))"#;

/// Naive recursive fib(32): 7 million calls, where fuel is saved and
/// reloaded around every call.
const CALLS: &str = r#"(module (memory (export "memory") 1)
  (func $fib (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func (export "_start") (i32.store (i32.const 0) (call $fib (i32.const 32)))))"#;

/// Sleeps 1.5 s in `poll_oneoff`: an instance that exists but does nothing.
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1500000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn config(dir: &Path, fuel_metering: bool) -> SandboxConfig {
    let mut config = SandboxConfig::new(dir.join("cache"));
    config.fuel_metering = fuel_metering;
    config.max_instances = 1100;
    config
}

fn task(dir: &Path, name: &str) -> TaskSpec {
    let input = dir.join(name).join("input");
    let output = dir.join(name).join("output");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    TaskSpec::new(input, output, Limits::default())
}

fn build_agents(out: &Path) -> Vec<(String, PathBuf)> {
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents");
    let status = Command::new("bash")
        .arg(agents.join("build.sh"))
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run agents/build.sh");
    assert!(status.success(), "agents/build.sh failed");
    vec![
        ("analyzer (C)".into(), out.join("analyzer.wasm")),
        ("tester (C)".into(), out.join("tester.wasm")),
        ("echo (WAT)".into(), agents.join("echo.wat")),
        ("noop (WAT)".into(), agents.join("noop.wat")),
        ("math (WAT)".into(), agents.join("math.wat")),
    ]
}

fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    println!("| measurement | result |\n| --- | --- |");

    // Instantiate from cache.
    let sandbox = Sandbox::new(config(dir, true)).unwrap();
    let noop = sandbox.prepare(NOOP.as_bytes()).unwrap();
    for _ in 0..1000 {
        sandbox.instantiate_check(&noop).unwrap();
    }
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            sandbox.instantiate_check(&noop).unwrap();
            start.elapsed()
        })
        .collect();
    println!(
        "| instantiate from cache (store + limiter + WASI ctx + instance), p50 / p99 | {} / {} |",
        micros(percentile(&mut samples, 0.5)),
        micros(percentile(&mut samples, 0.99))
    );
    let mut samples = raw_wasmtime_instantiate();
    println!(
        "| bare wasmtime instantiate (same engine settings, no WASI), p50 / p99 | {} / {} |",
        micros(percentile(&mut samples, 0.5)),
        micros(percentile(&mut samples, 0.99))
    );

    // No-op task end to end: guest thread hand-off, WASI with both
    // directories, instantiate, `_start`, output scan, outcome.
    let noop_task = task(dir, "noop");
    for _ in 0..500 {
        assert!(sandbox.run(&noop, noop_task.clone()).unwrap().is_success());
    }
    let mut samples: Vec<Duration> = (0..5000)
        .map(|_| {
            let start = Instant::now();
            let outcome = sandbox.run(&noop, noop_task.clone()).unwrap();
            let elapsed = start.elapsed();
            assert!(outcome.is_success());
            elapsed
        })
        .collect();
    println!(
        "| no-op task end to end through `Sandbox::run`, p50 / p99 | {} / {} |",
        micros(percentile(&mut samples, 0.5)),
        micros(percentile(&mut samples, 0.99))
    );

    // First compile vs cached load of each agent.
    for (name, path) in build_agents(&dir.join("agents")) {
        let bytes = std::fs::read(&path).unwrap();
        let cache_dir = dir.join(format!("cache-{}", name.split(' ').next().unwrap()));
        let mut cold = SandboxConfig::new(&cache_dir);
        cold.max_instances = 4;
        let fresh = Sandbox::new(cold.clone()).unwrap();
        let start = Instant::now();
        let prepared = fresh.prepare(&bytes).unwrap();
        let compile = start.elapsed();
        assert_eq!(prepared.source(), CacheSource::Compiled);
        drop(fresh);
        let warm = Sandbox::new(cold).unwrap();
        let start = Instant::now();
        let prepared = warm.prepare(&bytes).unwrap();
        let load = start.elapsed();
        assert_eq!(prepared.source(), CacheSource::Disk);
        let start = Instant::now();
        let again = warm.prepare(&bytes).unwrap();
        let memory = start.elapsed();
        assert_eq!(again.source(), CacheSource::Memory);
        println!(
            "| {name}, {} KiB: first compile / cached load from disk / in memory | {} / {} / {} |",
            bytes.len() / 1024,
            millis(compile),
            millis(load),
            micros(memory)
        );
    }

    // Fuel metering overhead.
    let unmetered_sandbox = Sandbox::new(config(&dir.join("nofuel"), false)).unwrap();
    let once = |sandbox: &Sandbox, module: &PreparedModule| {
        let outcome = sandbox.run(module, task(dir, "compute")).unwrap();
        assert!(outcome.is_success(), "{outcome:?}");
        Duration::from_micros(outcome.wall_us)
    };
    for (name, source) in [
        ("compute loop (200M xorshift rounds)", COMPUTE),
        ("call-heavy (recursive fib(32))", CALLS),
    ] {
        let metered = sandbox.prepare(source.as_bytes()).unwrap();
        let unmetered = unmetered_sandbox.prepare(source.as_bytes()).unwrap();
        // Alternate the two so background load hits both alike; keep the best.
        let (mut with_fuel, mut without_fuel) = (Duration::MAX, Duration::MAX);
        for _ in 0..9 {
            with_fuel = with_fuel.min(once(&sandbox, &metered));
            without_fuel = without_fuel.min(once(&unmetered_sandbox, &unmetered));
        }
        println!(
            "| {name}, fuel on / off, best of 9 alternating | {} / {} ({:+.1}%) |",
            millis(with_fuel),
            millis(without_fuel),
            (with_fuel.as_secs_f64() / without_fuel.as_secs_f64() - 1.0) * 100.0
        );
    }
    drop(unmetered_sandbox);

    // Memory per idle instance.
    let per_instance = raw_idle_instance_bytes(1000);
    println!(
        "| memory per idle instance (bare wasmtime, 1000 instances held) | {:.1} KiB |",
        per_instance / 1024.0
    );
    let sleeper = sandbox.prepare(SLEEPER.as_bytes()).unwrap();
    let count = 200;
    let before = rss_bytes();
    let handles: Vec<_> = (0..count)
        .map(|i| {
            sandbox
                .start(
                    &sleeper,
                    task(dir, &format!("sleep-{i}")),
                    Default::default(),
                )
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let during = rss_bytes();
    for handle in handles {
        assert!(handle.wait().unwrap().is_success());
    }
    println!(
        "| memory per waiting task (200 tasks blocked in poll_oneoff, incl. guest thread) | {:.1} KiB |",
        during.saturating_sub(before) as f64 / count as f64 / 1024.0
    );
}

/// Bare wasmtime with the sandbox's engine settings, to show the floor.
fn wasmtime_engine() -> wasmtime::Engine {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_core_instances(1100)
        .total_memories(1100)
        .total_tables(1100);
    let mut config = wasmtime::Config::new();
    config
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
        .consume_fuel(true)
        .epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

fn raw_wasmtime_instantiate() -> Vec<Duration> {
    let engine = wasmtime_engine();
    let module = wasmtime::Module::new(&engine, NOOP).unwrap();
    let linker = wasmtime::Linker::<()>::new(&engine);
    let pre = linker.instantiate_pre(&module).unwrap();
    let once = || {
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_fuel(1_000_000).unwrap();
        pre.instantiate(&mut store).unwrap();
    };
    for _ in 0..1000 {
        once();
    }
    (0..20_000)
        .map(|_| {
            let start = Instant::now();
            once();
            start.elapsed()
        })
        .collect()
}

fn raw_idle_instance_bytes(count: usize) -> f64 {
    let engine = wasmtime_engine();
    let module = wasmtime::Module::new(&engine, NOOP).unwrap();
    let linker = wasmtime::Linker::<()>::new(&engine);
    let pre = linker.instantiate_pre(&module).unwrap();
    let before = rss_bytes();
    let stores: Vec<_> = (0..count)
        .map(|_| {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_fuel(1_000_000).unwrap();
            let instance = pre.instantiate(&mut store).unwrap();
            (store, instance)
        })
        .collect();
    let after = rss_bytes();
    drop(stores);
    after.saturating_sub(before) as f64 / count as f64
}
