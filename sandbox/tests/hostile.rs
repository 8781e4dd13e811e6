//! Hostile and broken guests: every one must end as the right outcome value.

mod common;

use std::fs;
use std::io::Read as _;
use std::time::Duration;

use coditect_sandbox::{
    CacheSource, CancelToken, Limits, OutcomeKind, TaskSpec, STDOUT_MEMORY_BYTES,
};
use common::{run, run_with_inputs, sandbox, task_dirs};
use tempfile::TempDir;

const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

/// A minimal valid binary module: one empty `_start`, no memory.
const TINY_BINARY: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section
    0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: empty body
];

fn limits(fuel: u64, timeout_ms: u64) -> Limits {
    Limits {
        fuel,
        timeout_ms,
        ..Limits::default()
    }
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let outcome = run(
        &sandbox,
        &dir,
        "spin",
        SPIN.as_bytes(),
        limits(10_000_000, 60_000),
    );
    assert_eq!(outcome.kind, OutcomeKind::OutOfFuel, "{outcome:?}");
    assert_eq!(outcome.fuel_used, 10_000_000);
    assert_eq!(outcome.exit_code, None);
}

#[test]
fn infinite_loop_times_out_when_fuel_is_plentiful() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let outcome = run(
        &sandbox,
        &dir,
        "spin",
        SPIN.as_bytes(),
        limits(100_000_000_000_000, 200),
    );
    assert_eq!(outcome.kind, OutcomeKind::TimedOut, "{outcome:?}");
    assert!(
        outcome.wall_ms >= 200,
        "stopped early: {} ms",
        outcome.wall_ms
    );
    assert!(
        outcome.wall_ms < 10_000,
        "stopped late: {} ms",
        outcome.wall_ms
    );
    // The fuel a loop without calls burned until its timeout is counted
    // (the guest yields its counter back every 10M units), not the fuel
    // of the loop's start (which was 0 here).
    assert!(
        outcome.fuel_used > 20_000_000,
        "fuel after a timeout: {}",
        outcome.fuel_used
    );
}

#[test]
fn cancellation_stops_a_running_guest() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let module = sandbox.prepare(SPIN.as_bytes()).unwrap();
    let (input, output) = task_dirs(dir.path(), "cancel", &[]);
    let cancel = CancelToken::new();
    let handle = sandbox
        .start(
            &module,
            TaskSpec::new(input, output, limits(100_000_000_000_000, 60_000)),
            cancel.clone(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    cancel.cancel();
    let outcome = handle.wait().unwrap();
    assert_eq!(outcome.kind, OutcomeKind::Cancelled, "{outcome:?}");
    assert!(outcome.wall_ms < 10_000);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let bomb = r#"(module (memory (export "memory") 1)
      (func (export "_start")
        (loop $more (drop (memory.grow (i32.const 16))) (br $more))))"#;
    let limits = Limits {
        memory_mb: 16,
        ..Limits::default()
    };
    let outcome = run(&sandbox, &dir, "bomb", bomb.as_bytes(), limits);
    assert_eq!(outcome.kind, OutcomeKind::MemoryLimit, "{outcome:?}");
    assert!(
        outcome.message.contains("memory limit"),
        "{}",
        outcome.message
    );
    assert!(outcome.peak_memory_bytes <= 16 << 20);
    assert!(
        outcome.peak_memory_bytes >= 15 << 20,
        "peak {}",
        outcome.peak_memory_bytes
    );

    // Declaring more initial memory than allowed fails at instantiation.
    let greedy = r#"(module (memory (export "memory") 1000) (func (export "_start")))"#;
    let outcome = run(&sandbox, &dir, "greedy", greedy.as_bytes(), limits);
    assert_eq!(outcome.kind, OutcomeKind::MemoryLimit, "{outcome:?}");
}

#[test]
fn deep_recursion_traps_with_stack_overflow() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let recurse = r#"(module (memory (export "memory") 1)
      (func $down (param i32) (result i32)
        (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
      (func (export "_start") (drop (call $down (i32.const 0)))))"#;
    let outcome = run(
        &sandbox,
        &dir,
        "recurse",
        recurse.as_bytes(),
        Limits::default(),
    );
    assert_eq!(outcome.kind, OutcomeKind::Trapped, "{outcome:?}");
    assert_eq!(outcome.trap.as_deref(), Some("stack_overflow"));
}

#[test]
fn printing_a_gibibyte_is_truncated_at_the_cap() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    // Writes 1024 x 1 MiB to stdout, then exits 0 only if every write
    // reported all its bytes written (truncation is invisible to the guest).
    let chatty = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 17)
      (func (export "_start") (local $i i32) (local $total i64)
        (memory.fill (i32.const 65536) (i32.const 120) (i32.const 1048576))
        (loop $more
          (i32.store (i32.const 0) (i32.const 65536))
          (i32.store (i32.const 4) (i32.const 1048576))
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (i32.load (i32.const 8)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 1024))))
        (call $exit (i64.ne (local.get $total) (i64.const 1073741824)))))"#;
    let limits = Limits {
        output_mb: 1,
        ..Limits::default()
    };
    let outcome = run(&sandbox, &dir, "chatty", chatty.as_bytes(), limits);
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{}", outcome.message);
    assert_eq!(
        outcome.exit_code,
        Some(0),
        "the guest saw a failed or short write"
    );
    assert_eq!(outcome.stdout.len(), 1 << 20);
    assert!(outcome.stdout.bytes().all(|b| b == b'x'));
    assert!(outcome.stdout_truncated && outcome.truncated());
    assert!(!outcome.stderr_truncated);
}

/// A guest that prints `blocks` 64 KiB blocks of printable ASCII, each
/// starting with its index (little-endian, so ASCII while below 128), then
/// `NEEDLE-PAST-THE-BUFFER`.
fn printer(blocks: u32) -> String {
    format!(
        r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (data (i32.const 16) "NEEDLE-PAST-THE-BUFFER")
      (func (export "_start") (local $i i32) (local $k i32)
        (loop $fill
          (i32.store8 (i32.add (i32.const 65536) (local.get $i))
            (i32.add (i32.const 33) (i32.rem_u (local.get $i) (i32.const 94))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $fill (i32.lt_u (local.get $i) (i32.const 65536))))
        (loop $more
          (i32.store (i32.const 65536) (local.get $k))
          (i32.store (i32.const 0) (i32.const 65536))
          (i32.store (i32.const 4) (i32.const 65536))
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $k) (i32.const {blocks}))))
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 22))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

/// What [`printer`] prints.
fn printed(blocks: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for block in 0..blocks {
        let start = bytes.len();
        bytes.extend((0..65536u32).map(|i| 33 + (i % 94) as u8));
        bytes[start..start + 4].copy_from_slice(&block.to_le_bytes());
    }
    bytes.extend_from_slice(b"NEEDLE-PAST-THE-BUFFER");
    bytes
}

#[test]
fn stdout_past_the_memory_buffer_spills_to_disk_exactly() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let spill = dir.path().join("spill");
    fs::create_dir(&spill).unwrap();
    let (input, output) = task_dirs(dir.path(), "printer", &[]);
    let limits = Limits {
        output_mb: 8,
        ..Limits::default()
    };
    let task = TaskSpec::new(input, output, limits).spill_dir(&spill);
    let outcome = sandbox
        .run_bytes(printer(80).as_bytes(), task, &CancelToken::new())
        .unwrap();
    assert!(outcome.is_success(), "{}", outcome.message);
    let expected = printed(80);
    // Memory holds the buffer, not the 5 MiB.
    assert_eq!(outcome.stdout.len(), STDOUT_MEMORY_BYTES);
    assert!(outcome.stdout.capacity() <= STDOUT_MEMORY_BYTES);
    assert_eq!(outcome.stdout.as_bytes(), &expected[..STDOUT_MEMORY_BYTES]);
    assert!(outcome.stdout_capture.is_spilled());
    assert_eq!(
        outcome.stdout_capture.spilled_bytes(),
        (expected.len() - STDOUT_MEMORY_BYTES) as u64
    );
    assert!(!outcome.stdout_truncated);
    assert_eq!(outcome.stdout_len(), expected.len() as u64);
    let mut all = Vec::new();
    outcome.stdout_reader().read_to_end(&mut all).unwrap();
    assert!(
        all == expected,
        "the spilled stdout differs from what was printed"
    );
    assert!(!outcome.stdout.contains("NEEDLE"));
    assert!(outcome.stdout_contains(b"NEEDLE-PAST-THE-BUFFER").unwrap());
    assert!(!outcome.stdout_contains(b"NEEDLE-NOT-PRINTED").unwrap());
    // The spill file never has a name in the directory.
    assert_eq!(fs::read_dir(&spill).unwrap().count(), 0);
    assert!(outcome
        .summary()
        .contains("only the first 1048576 are shown"));

    // Capped across head and spill: 3 MiB kept of the 5.
    let (input, output) = task_dirs(dir.path(), "capped", &[]);
    let limits = Limits {
        output_mb: 3,
        ..Limits::default()
    };
    let task = TaskSpec::new(input, output, limits).spill_dir(&spill);
    let outcome = sandbox
        .run_bytes(printer(80).as_bytes(), task, &CancelToken::new())
        .unwrap();
    assert!(outcome.stdout_truncated);
    assert_eq!(outcome.stdout_len(), 3 << 20);
    let mut all = Vec::new();
    outcome.stdout_reader().read_to_end(&mut all).unwrap();
    assert!(
        all == expected[..3 << 20],
        "the kept stdout is not the first 3 MiB"
    );
    assert!(!outcome.stdout_contains(b"NEEDLE-PAST-THE-BUFFER").unwrap());
}

/// A guest that calls `path_open(fd, path, oflags, rights)` and exits with the errno.
fn open_probe(fd: u32, path: &str, oflags: u32, rights: u64) -> String {
    format!(
        r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 64) "{path}")
      (func (export "_start")
        (call $exit (call $open (i32.const {fd}) (i32.const 1) (i32.const 64) (i32.const {len})
          (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 16)))))"#,
        len = path.len()
    )
}

const READ: u64 = 2;
const WRITE: u64 = 64;
const CREATE: u32 = 1 | 8;

#[test]
fn guests_see_only_their_own_directories() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let inputs: &[(&str, &[u8])] = &[("input.txt", b"hi")];
    let probe = |name: &str, fd: u32, path: &str, oflags: u32, rights: u64| {
        let module = open_probe(fd, path, oflags, rights);
        let outcome = run_with_inputs(
            &sandbox,
            &dir,
            name,
            module.as_bytes(),
            Limits::default(),
            inputs,
        );
        assert_eq!(
            outcome.kind,
            OutcomeKind::Succeeded,
            "{name}: {}",
            outcome.message
        );
        (outcome.exit_code.unwrap(), outcome)
    };

    // Controls: the guest's own files open fine (errno 0).
    assert_eq!(probe("read-input", 3, "input.txt", 0, READ).0, 0);
    let (errno, outcome) = probe("write-output", 4, "made.txt", CREATE, WRITE);
    assert_eq!(errno, 0);
    assert_eq!(outcome.files.len(), 1);
    assert_eq!(outcome.files[0].path, "made.txt");

    // Reading host files fails, by absolute path or by climbing out.
    for (name, fd, path) in [
        ("passwd-absolute", 3, "/etc/passwd"),
        ("passwd-climb", 3, "../../../../../../../../etc/passwd"),
        (
            "passwd-from-output",
            4,
            "../../../../../../../../etc/passwd",
        ),
        ("sibling-climb", 3, "../output/../input/input.txt"),
        ("no-such-preopen", 5, "etc/passwd"),
    ] {
        let (errno, _) = probe(name, fd, path, 0, READ);
        assert_ne!(errno, 0, "{name}: {path} opened");
    }

    // Writing anywhere but /output fails, and nothing appears on the host.
    let (errno, _) = probe("write-input", 3, "new.txt", CREATE, WRITE);
    assert_ne!(errno, 0, "wrote into read-only /input");
    assert!(!dir.path().join("write-input/input/new.txt").exists());
    let (errno, _) = probe("write-escape", 4, "../escape.txt", CREATE, WRITE);
    assert_ne!(errno, 0, "escaped /output");
    assert!(!dir.path().join("write-escape/escape.txt").exists());
    let (errno, _) = probe(
        "write-absolute",
        4,
        "/tmp/coditect-escape.txt",
        CREATE,
        WRITE,
    );
    assert_ne!(errno, 0, "wrote an absolute path");

    // A hard link from /input into /output would let the guest write the
    // node's copy of its input: refused.
    let link = r#"(module
      (import "wasi_snapshot_preview1" "path_link"
        (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 64) "input.txt")
      (data (i32.const 96) "alias.txt")
      (func (export "_start")
        (call $exit (call $link (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 9)
          (i32.const 4) (i32.const 96) (i32.const 9)))))"#;
    let outcome = run_with_inputs(
        &sandbox,
        &dir,
        "link",
        link.as_bytes(),
        Limits::default(),
        inputs,
    );
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{}", outcome.message);
    assert_ne!(
        outcome.exit_code,
        Some(0),
        "hard-linked /input into /output"
    );
    assert!(outcome.files.is_empty());
}

#[test]
fn a_full_instance_pool_is_a_retryable_error() {
    let dir = TempDir::new().unwrap();
    let mut config = coditect_sandbox::SandboxConfig::new(dir.path().join("cache"));
    config.max_instances = 1;
    let sandbox = coditect_sandbox::Sandbox::new(config).unwrap();
    // The hog marks /output/started once it holds its slot, then spins.
    let hog_module = r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "started")
      (func (export "_start")
        (drop (call $open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 7)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0)))
        (loop $forever (br $forever))))"#;
    let spin = sandbox.prepare(hog_module.as_bytes()).unwrap();
    let noop = sandbox.prepare(TINY_BINARY).unwrap();
    let (input, output) = task_dirs(dir.path(), "hog", &[]);
    let marker = output.join("started");
    let hog_task = TaskSpec::new(input, output, limits(100_000_000_000_000, 60_000));
    let hog = sandbox.start(&spin, hog_task, CancelToken::new()).unwrap();
    // Only once the hog runs is the pool known to be full (a load-dependent
    // race otherwise: a no-op could hold the slot when the hog asks for it).
    let mut polls = 0;
    while !marker.exists() {
        polls += 1;
        assert!(polls < 6_000, "the hog never started (30 s)");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (input, output) = task_dirs(dir.path(), "second", &[]);
    let error = sandbox
        .run(&noop, TaskSpec::new(&input, &output, Limits::default()))
        .expect_err("the only slot is taken");
    assert!(
        matches!(error, coditect_sandbox::SandboxError::Exhausted(_)),
        "{error}"
    );
    assert!(error.is_retryable());
    hog.cancel();
    assert_eq!(hog.wait().unwrap().kind, OutcomeKind::Cancelled);
    // The slot is free again.
    let task = TaskSpec::new(&input, &output, Limits::default());
    assert!(sandbox.run(&noop, task).unwrap().is_success());
}

#[test]
fn symlinks_left_in_output_are_removed() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    // Creates /output/link -> /etc/passwd (if WASI allows it), then tries to open it.
    let linker = r#"(module
      (import "wasi_snapshot_preview1" "path_symlink"
        (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 64) "../../../../../../../etc/passwd")
      (data (i32.const 128) "link")
      (func (export "_start")
        (local $made i32)
        (local.set $made
          (call $symlink (i32.const 64) (i32.const 31) (i32.const 4) (i32.const 128) (i32.const 4)))
        (call $exit (i32.add (i32.mul (local.get $made) (i32.const 1000))
          (call $open (i32.const 4) (i32.const 1) (i32.const 128) (i32.const 4)
            (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))))))"#;
    let outcome = run(
        &sandbox,
        &dir,
        "symlink",
        linker.as_bytes(),
        Limits::default(),
    );
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{}", outcome.message);
    let code = outcome.exit_code.unwrap();
    // Creating the link is allowed (its target is just text); following it is not.
    assert_eq!(
        code / 1000,
        0,
        "path_symlink failed, so this test proves nothing"
    );
    assert_ne!(code % 1000, 0, "opened a symlink out of /output");
    assert!(outcome.files.is_empty());
    assert!(outcome.output_truncated, "the symlink was not flagged");
    let link = dir.path().join("symlink/output/link");
    assert!(fs::symlink_metadata(&link).is_err(), "symlink left behind");
}

#[test]
fn unusable_modules_are_invalid_with_a_clear_message() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let limits = Limits::default();

    // Control: the tiny binary module is fine.
    let outcome = run(&sandbox, &dir, "tiny", TINY_BINARY, limits);
    assert!(outcome.is_success(), "{outcome:?}");

    let unknown = r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#;
    let outcome = run(&sandbox, &dir, "unknown", unknown.as_bytes(), limits);
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(
        outcome.message.contains("unknown import"),
        "{}",
        outcome.message
    );
    assert!(
        outcome.message.contains("launch_missiles"),
        "{}",
        outcome.message
    );
    assert_eq!(outcome.cli_exit_code(), 2);

    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let outcome = run(&sandbox, &dir, "garbage", &garbage, limits);
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(
        outcome.message.contains("not a WebAssembly module"),
        "{}",
        outcome.message
    );

    let truncated = &TINY_BINARY[..TINY_BINARY.len() - 3];
    let outcome = run(&sandbox, &dir, "truncated", truncated, limits);
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(
        outcome.message.contains("invalid WebAssembly binary"),
        "{}",
        outcome.message
    );

    let outcome = run(
        &sandbox,
        &dir,
        "bad-wat",
        b"(module (func $f (i32.add)))",
        limits,
    );
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(
        outcome.message.contains("invalid WAT text"),
        "{}",
        outcome.message
    );

    let library = r#"(module (func (export "add") (param i32 i32) (result i32) (local.get 0)))"#;
    let outcome = run(&sandbox, &dir, "library", library.as_bytes(), limits);
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(outcome.message.contains("_start"), "{}", outcome.message);

    let mut config = coditect_sandbox::SandboxConfig::new(dir.path().join("small-cache"));
    config.max_module_bytes = 16;
    config.max_instances = 4;
    let small = coditect_sandbox::Sandbox::new(config).unwrap();
    let outcome = run(&small, &dir, "too-big", TINY_BINARY, limits);
    assert_eq!(outcome.kind, OutcomeKind::InvalidModule);
    assert!(outcome.message.contains("limit"), "{}", outcome.message);
}

#[test]
fn a_corrupted_cache_file_is_detected_and_recompiled() {
    let dir = TempDir::new().unwrap();
    let module = SPIN.replace("(loop $forever (br $forever))", "");
    let bytes = module.as_bytes();
    let (digest, path) = {
        let sandbox = sandbox(&dir);
        let prepared = sandbox.prepare(bytes).unwrap();
        assert_eq!(prepared.source(), CacheSource::Compiled);
        assert_eq!(
            sandbox.prepare(bytes).unwrap().source(),
            CacheSource::Memory
        );
        (prepared.digest(), sandbox.cache_path(&prepared.digest()))
    };
    assert!(path.exists());
    {
        // A new process (here: a new sandbox) loads it from disk, without compiling.
        let sandbox = sandbox(&dir);
        assert_eq!(
            sandbox.prepared(&digest).unwrap().source(),
            CacheSource::Disk
        );
    }

    // Flip one byte in the middle of the artifact.
    let mut artifact = fs::read(&path).unwrap();
    let middle = artifact.len() / 2;
    artifact[middle] ^= 0x5a;
    fs::write(&path, &artifact).unwrap();
    {
        let sandbox = sandbox(&dir);
        assert!(
            sandbox.prepared(&digest).is_none(),
            "corrupted artifact was loaded"
        );
        assert!(!path.exists(), "corrupted artifact was kept");
        let prepared = sandbox.prepare(bytes).unwrap();
        assert_eq!(prepared.source(), CacheSource::Compiled);
        let outcome = run(&sandbox, &dir, "after-corruption", bytes, Limits::default());
        assert!(outcome.is_success(), "{outcome:?}");
    }

    // An artifact written under another cache key (another node, another
    // hand) is rejected the same way.
    fs::write(dir.path().join("cache/cache.key"), [9u8; 32]).unwrap();
    {
        let sandbox = sandbox(&dir);
        assert!(
            sandbox.prepared(&digest).is_none(),
            "foreign artifact was loaded"
        );
        assert_eq!(
            sandbox.prepare(bytes).unwrap().source(),
            CacheSource::Compiled
        );
    }

    // A truncated file is rejected too.
    fs::write(&path, b"coditect").unwrap();
    let sandbox = sandbox(&dir);
    assert!(sandbox.prepared(&digest).is_none());
    assert_eq!(
        sandbox.prepare(bytes).unwrap().source(),
        CacheSource::Compiled
    );
}

#[test]
fn two_hundred_concurrent_instances_all_finish_correctly() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    let echo = sandbox.prepare(&common::agent("echo.wat")).unwrap();
    let handles: Vec<_> = (0..200)
        .map(|index| {
            let text = format!("task number {index}\n");
            let (input, output) = task_dirs(
                dir.path(),
                &format!("echo-{index}"),
                &[("input.txt", text.as_bytes())],
            );
            let task = TaskSpec::new(input, output, Limits::default());
            (
                text,
                sandbox.start(&echo, task, CancelToken::new()).unwrap(),
            )
        })
        .collect();
    for (text, handle) in handles {
        let outcome = handle.wait().unwrap();
        assert!(outcome.is_success(), "{outcome:?}");
        assert_eq!(outcome.stdout, text);
        assert_eq!(outcome.files.len(), 1);
        assert_eq!(outcome.files[0].path, "echo.txt");
        assert_eq!(outcome.files[0].size, text.len() as u64);
    }
}

#[test]
fn output_beyond_its_cap_is_removed_and_flagged() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    // Writes three 768 KiB files; with a 1 MiB cap only the first (by path) stays.
    let writer = r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 13)
      (data (i32.const 64) "a.bin")
      (data (i32.const 72) "b.bin")
      (data (i32.const 80) "c.bin")
      (func $file (param $name i32)
        (drop (call $open (i32.const 4) (i32.const 0) (local.get $name) (i32.const 5)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 786432))
        (drop (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func (export "_start")
        (call $file (i32.const 64)) (call $file (i32.const 72)) (call $file (i32.const 80))))"#;
    let limits = Limits {
        output_mb: 1,
        ..Limits::default()
    };
    let outcome = run(&sandbox, &dir, "big-output", writer.as_bytes(), limits);
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(outcome.output_truncated);
    let names: Vec<_> = outcome.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["a.bin"]);
    assert!(!dir.path().join("big-output/output/b.bin").exists());
}

#[test]
fn guests_get_no_environment_and_one_argument() {
    let dir = TempDir::new().unwrap();
    let sandbox = sandbox(&dir);
    // Exits with 10 * (environment variables) + (arguments); the test process
    // itself has plenty of environment variables (PATH, HOME, ...).
    let counter = r#"(module
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $args (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $env (i32.const 0) (i32.const 4)))
        (drop (call $args (i32.const 8) (i32.const 12)))
        (call $exit (i32.add (i32.mul (i32.load (i32.const 0)) (i32.const 10))
                             (i32.load (i32.const 8))))))"#;
    let outcome = run(&sandbox, &dir, "env", counter.as_bytes(), Limits::default());
    assert_eq!(outcome.exit_code, Some(1), "{outcome:?}");
}
