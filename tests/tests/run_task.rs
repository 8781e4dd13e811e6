//! `coditect run-task` as a user runs it: exit 0 when the guest ran to any
//! outcome, 2 when the module or the arguments are unusable.

use std::time::Duration;

use coditect_tests::run_coditect;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdout");
    let mut full: Vec<String> = vec!["run-task".into()];
    full.extend(args.iter().map(|s| s.to_string()));
    // run_coditect discards stdout; capture it through a shell redirect instead.
    let script = format!(
        "{} {} > {}",
        coditect_tests::coditect_bin().display(),
        full.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" "),
        out.display()
    );
    let (status, stderr) = run_coditect_shell(&script);
    (
        status,
        std::fs::read_to_string(out).unwrap_or_default(),
        stderr,
    )
}

fn run_coditect_shell(script: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("run bash");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn outcomes_exit_zero_and_print_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let hello = write(
        dir.path(),
        "hello.wat",
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let (code, stdout, stderr) = run(&[&hello, "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let outcome: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcome["outcome"], "succeeded");
    assert_eq!(outcome["exit_code"], 0);
    assert_eq!(outcome["stdout"], "ok\n");
    assert_eq!(outcome["truncated"], false);
    assert!(outcome["fuel_used"].as_u64().unwrap() > 0);
    assert!(outcome["wall_ms"].is_u64());

    let spin = write(
        dir.path(),
        "spin.wat",
        r#"(module (func (export "_start") (loop (br 0))))"#,
    );
    let (code, stdout, _) = run(&[&spin, "--fuel", "100000", "--json"]);
    assert_eq!(code, Some(0));
    let outcome: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcome["outcome"], "out_of_fuel");
    assert_eq!(outcome["exit_code"], serde_json::Value::Null);

    let (code, stdout, _) = run(&[&spin, "--timeout-ms", "200", "--json"]);
    assert_eq!(code, Some(0));
    let outcome: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcome["outcome"], "timed_out");
}

#[test]
fn unusable_modules_and_arguments_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, [0u8, 97, 115, 109, 1, 0, 0, 0, 0xff, 0xff]).unwrap();
    let (code, stdout, _) = run(&[garbage.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(2));
    let outcome: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcome["outcome"], "invalid_module");
    assert!(!outcome["message"].as_str().unwrap().is_empty());

    let (status, stderr) = run_coditect(
        &[
            "run-task".into(),
            dir.path().join("missing.wasm").display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("missing.wasm"), "{stderr}");

    let noop = write(
        dir.path(),
        "noop.wat",
        r#"(module (func (export "_start")))"#,
    );
    let (status, stderr) = run_coditect(
        &["run-task".into(), noop, "--memory-mb".into(), "0".into()],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("memory_mb"), "{stderr}");
}
