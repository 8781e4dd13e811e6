//! The example agents, the `coditect` host ABI, the Env seam and `run-task`.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use coditect_sandbox::{
    run_task_command, Capability, DeterministicGuestEnv, Limits, LogLevel, OutcomeKind, Progress,
    Sandbox, SandboxConfig, SandboxError, TaskSpec,
};
use common::{agent, run, run_with_inputs, sandbox, task_dirs};
use serde_json::{json, Value};
use tempfile::TempDir;

fn fixture(path: &str) -> std::path::PathBuf {
    common::manifest_dir().join("tests/fixtures").join(path)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn analyzer_counts_files_lines_functions_and_todos() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let (input, output) = task_dirs(dir.path(), "analyze", &[]);
    copy_tree(&fixture("analyzer"), &input);
    let module = sandbox.prepare(&agent("analyzer")).unwrap();
    let outcome = sandbox
        .run(&module, TaskSpec::new(input, &output, Limits::default()))
        .unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let report: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let expected = json!({
        "files": 4, "lines": 36, "functions": 7, "todos": 5,
        "per_file": [
            {"path": "notes.txt", "lines": 2, "functions": 0, "todos": 2},
            {"path": "src/lib.rs", "lines": 11, "functions": 3, "todos": 2},
            {"path": "src/main.c", "lines": 14, "functions": 2, "todos": 1},
            {"path": "tools/script.py", "lines": 9, "functions": 2, "todos": 0},
        ]
    });
    assert_eq!(report, expected);
    // The same report is in /output/report.json, listed with its digest.
    let written = std::fs::read_to_string(output.join("report.json")).unwrap();
    assert_eq!(written, outcome.stdout);
    assert_eq!(outcome.files.len(), 1);
    assert_eq!(outcome.files[0].path, "report.json");
    assert_eq!(outcome.files[0].size, written.len() as u64);
    // It reported progress and one summary log line through the host ABI.
    assert_eq!(outcome.progress, Some(Progress { done: 4, total: 4 }));
    assert_eq!(outcome.logs.len(), 1);
    assert!(outcome.logs[0].message.contains("analyzed 4 files"));
}

#[test]
fn tester_reports_pass_and_fail_per_case() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let math = std::fs::read(common::agents_dir().join("math.wat")).unwrap();
    let cases = std::fs::read(fixture("tester_cases.txt")).unwrap();
    let limits = Limits {
        fuel: 200_000_000,
        ..Limits::default()
    };
    let outcome = run_with_inputs(
        &sandbox,
        &dir,
        "tester",
        &agent("tester"),
        limits,
        &[("math.wat", &math), ("input.txt", &cases)],
    );
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{outcome:?}");
    assert_eq!(
        outcome.exit_code,
        Some(1),
        "some cases fail, so the exit code is 1"
    );
    let report: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(report["module"], "math.wat");
    assert_eq!(report["passed"], 3);
    assert_eq!(report["failed"], 6);
    let summary: Vec<(Value, Value, Value)> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            (
                case["line"].clone(),
                case["status"].clone(),
                case["pass"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(3), json!("ok"), json!(true)),
            (json!(4), json!("ok"), json!(true)),
            (json!(5), json!("ok"), json!(true)),
            (json!(6), json!("ok"), json!(false)),
            (json!(7), json!("trapped"), json!(false)),
            (json!(8), json!("out_of_fuel"), json!(false)),
            (json!(9), json!("bad_call"), json!(false)),
            (json!(10), json!("bad_call"), json!(false)),
            (json!(11), json!("unparsable_case"), json!(false)),
        ]
    );
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(
        cases[3]["actual"], 202,
        "add_buggy's wrong answer is reported"
    );
    assert_eq!(cases[1]["args"], json!([-4, 5]));
    assert!(cases[4]["actual"].is_null());
    // The spinning case burned fuel that counts against the tester's budget.
    assert!(
        outcome.fuel_used > 50_000_000,
        "fuel used {}",
        outcome.fuel_used
    );
}

#[test]
fn echo_and_noop_agents_work() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let outcome = run_with_inputs(
        &sandbox,
        &dir,
        "echo",
        &agent("echo.wat"),
        Limits::default(),
        &[("input.txt", b"hello mesh")],
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.stdout, "hello mesh");
    assert_eq!(outcome.files.len(), 1);
    assert_eq!(
        outcome.files[0].sha256,
        format!("sha256:{}", sha256_hex(b"hello mesh"))
    );

    let outcome = run(
        &sandbox,
        &dir,
        "noop",
        &agent("noop.wat"),
        Limits::default(),
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(outcome.stdout.is_empty() && outcome.files.is_empty());
    assert!(outcome.fuel_used < 100);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Calls `coditect.capability("upper", "ping")`, logs, reports progress, prints
/// the response and exits with 100 + the call's return value.
const CAPABILITY_GUEST: &str = r#"(module
  (import "coditect" "capability" (func $cap (param i32 i32 i32 i32 i32 i32) (result i64)))
  (import "coditect" "log" (func $log (param i32 i32 i32)))
  (import "coditect" "progress" (func $progress (param i64 i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "upper")
  (data (i32.const 80) "ping")
  (data (i32.const 96) "careful now")
  (func (export "_start") (local $n i64)
    (call $log (i32.const 3) (i32.const 96) (i32.const 11))
    (call $progress (i64.const 5) (i64.const 10))
    (local.set $n (call $cap (i32.const 64) (i32.const 5) (i32.const 80) (i32.const 4)
      (i32.const 256) (i32.const 64)))
    (if (i64.gt_s (local.get $n) (i64.const 0))
      (then
        (i32.store (i32.const 0) (i32.const 256))
        (i32.store (i32.const 4) (i32.wrap_i64 (local.get $n)))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
    (call $exit (i32.add (i32.const 100) (i32.wrap_i64 (local.get $n))))))"#;

struct Upper;

impl Capability for Upper {
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        Ok(request.to_ascii_uppercase())
    }
}

#[test]
fn host_abi_logs_progress_and_capabilities() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let module = sandbox.prepare(CAPABILITY_GUEST.as_bytes()).unwrap();

    // Not granted: -1, and nothing printed.
    let (input, output) = task_dirs(dir.path(), "denied", &[]);
    let outcome = sandbox
        .run(&module, TaskSpec::new(input, output, Limits::default()))
        .unwrap();
    assert_eq!(outcome.exit_code, Some(99), "{outcome:?}");
    assert!(outcome.stdout.is_empty());
    assert_eq!(outcome.logs.len(), 1);
    assert_eq!(outcome.logs[0].level, LogLevel::Warn);
    assert_eq!(outcome.logs[0].message, "careful now");
    assert_eq!(outcome.progress, Some(Progress { done: 5, total: 10 }));

    // Granted: the response comes back, and progress reaches the callback.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let (input, output) = task_dirs(dir.path(), "granted", &[]);
    let task = TaskSpec::new(input, output, Limits::default())
        .grant("upper", Arc::new(Upper))
        .on_progress(Arc::new(move |progress| {
            sink.lock().unwrap().push(progress)
        }));
    let outcome = sandbox.run(&module, task).unwrap();
    assert_eq!(outcome.exit_code, Some(104), "{outcome:?}");
    assert_eq!(outcome.stdout, "PING");
    assert_eq!(*seen.lock().unwrap(), [Progress { done: 5, total: 10 }]);
}

/// Writes 32 random bytes and the realtime clock to /output/entropy.bin.
const ENTROPY_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "entropy.bin")
  (func (export "_start")
    (drop (call $random (i32.const 256) (i32.const 32)))
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 288)))
    (drop (call $open (i32.const 4) (i32.const 0) (i32.const 64) (i32.const 11)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 40))
    (drop (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn entropy_digest(dir: &TempDir, name: &str, config: SandboxConfig) -> String {
    let sandbox = Sandbox::new(config).unwrap();
    let outcome = run(
        &sandbox,
        dir,
        name,
        ENTROPY_GUEST.as_bytes(),
        Limits::default(),
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.files[0].size, 40);
    outcome.files[0].sha256.clone()
}

#[test]
fn guest_clock_and_randomness_come_from_the_env_seam() {
    let dir = TempDir::new().unwrap();
    let config = |seed: Option<u64>| {
        let mut config = SandboxConfig::new(dir.path().join("cache"));
        config.max_instances = 4;
        if let Some(seed) = seed {
            config.guest_env = Arc::new(DeterministicGuestEnv::new(seed));
        }
        config
    };
    let first = entropy_digest(&dir, "seeded-1", config(Some(7)));
    let second = entropy_digest(&dir, "seeded-2", config(Some(7)));
    let other_seed = entropy_digest(&dir, "seeded-3", config(Some(8)));
    assert_eq!(
        first, second,
        "same seed, same guest-visible entropy and time"
    );
    assert_ne!(first, other_seed);
    let system_a = entropy_digest(&dir, "system-1", config(None));
    let system_b = entropy_digest(&dir, "system-2", config(None));
    assert_ne!(system_a, system_b);
}

#[test]
fn a_run_handle_can_be_awaited() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let module = sandbox.prepare(&agent("noop.wat")).unwrap();
    let (input, output) = task_dirs(dir.path(), "await", &[]);
    let handle = sandbox
        .start(
            &module,
            TaskSpec::new(input, output, Limits::default()),
            Default::default(),
        )
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = runtime.block_on(handle).unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
}

#[test]
fn run_task_command_accepts_wat_and_wasm() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "from the command line").unwrap();
    let out = dir.path().join("out");

    let echo = common::agents_dir().join("echo.wat");
    let outcome = run_task_command(&echo, Some(&input), Some(&out), Limits::default()).unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.cli_exit_code(), 0);
    assert_eq!(
        std::fs::read_to_string(out.join("echo.txt")).unwrap(),
        "from the command line"
    );
    let printed = outcome.to_cli_json();
    assert_eq!(printed["outcome"], "succeeded");
    assert_eq!(printed["exit_code"], 0);
    assert_eq!(printed["stdout"], "from the command line");
    assert_eq!(printed["truncated"], false);
    assert!(printed["fuel_used"].as_u64().unwrap() > 0);
    assert!(printed["wall_ms"].is_u64());
    assert!(printed["message"].is_string());

    let analyzer = common::built_agents().join("analyzer.wasm");
    let outcome = run_task_command(&analyzer, Some(&input), None, Limits::default()).unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(
        outcome.stdout.starts_with("{\"files\": 1, \"lines\": 1,"),
        "{}",
        outcome.stdout
    );

    let spin = dir.path().join("spin.wat");
    std::fs::write(
        &spin,
        r#"(module (func (export "_start") (loop $l (br $l))))"#,
    )
    .unwrap();
    let limits = Limits {
        fuel: 1000,
        ..Limits::default()
    };
    let outcome = run_task_command(&spin, None, None, limits).unwrap();
    assert_eq!(outcome.kind, OutcomeKind::OutOfFuel);
    assert_eq!(
        outcome.cli_exit_code(),
        0,
        "a guest that ran to an outcome exits 0"
    );
    assert_eq!(outcome.to_cli_json()["outcome"], "out_of_fuel");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\xff\xff").unwrap();
    let outcome = run_task_command(&garbage, None, None, Limits::default()).unwrap();
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert_eq!(outcome.cli_exit_code(), 2);
    assert!(outcome.summary().starts_with("outcome: invalid_module"));

    let missing = dir.path().join("missing.wasm");
    let error = run_task_command(&missing, None, None, Limits::default()).unwrap_err();
    assert!(matches!(error, SandboxError::Io { .. }), "{error}");
    assert!(error.to_string().contains("missing.wasm"));
    let error = run_task_command(&echo, Some(&missing), None, Limits::default()).unwrap_err();
    assert!(error.to_string().contains("missing.wasm"), "{error}");
    let bad_limits = Limits {
        memory_mb: 0,
        ..Limits::default()
    };
    let error = run_task_command(&echo, None, None, bad_limits).unwrap_err();
    assert!(matches!(error, SandboxError::InvalidConfig(_)), "{error}");
}
