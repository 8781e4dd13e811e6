//! The simulation's own tests: runs replay exactly from their seed (in two
//! separate processes), sweeps of seeds keep every invariant, and a
//! deliberately injected storage bug is caught, so the checkers can fail.

use std::process::Command;

use coditect_consensus::kv::InjectedBug;
use coditect_consensus::{MAX_APPEND_BYTES, MAX_ENTRY_BYTES};
use coditect_simulation::harness::{run, SimConfig, SimOutcome};
use coditect_simulation::scenario::Scenario;

fn config(seed: u64, nodes: usize, scenario: Scenario, virtual_secs: u64) -> SimConfig {
    SimConfig {
        seed,
        nodes,
        scenario,
        virtual_secs,
        bug: None,
    }
}

fn quiet_run(config: SimConfig) -> SimOutcome {
    run(config, &mut |_, _| {})
}

fn broken(outcome: &SimOutcome) -> Vec<String> {
    outcome
        .invariants
        .iter()
        .filter(|(_, verdict)| verdict != "ok")
        .map(|(name, verdict)| format!("{name}: {verdict}"))
        .collect()
}

/// `coditect-sim` in a child process; returns (exit code, stdout, report JSON).
fn sim_process(args: &[&str]) -> (i32, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_coditect-sim"))
        .args(args)
        .arg("--quiet")
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run coditect-sim");
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        json,
    )
}

#[test]
fn the_same_seed_gives_the_same_trace_in_two_processes() {
    for (scenario, seed) in [
        ("failover", "11"),
        ("partition", "12"),
        ("churn", "13"),
        ("disk", "14"),
    ] {
        let args = [
            "--nodes",
            "7",
            "--seed",
            seed,
            "--scenario",
            scenario,
            "--virtual-secs",
            "30",
        ];
        let (code_a, out_a, first) = sim_process(&args);
        let (code_b, _, second) = sim_process(&args);
        assert_eq!(code_a, 0, "{out_a}");
        assert_eq!(code_b, 0);
        let hash = first["trace_hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64, "{first}");
        assert_eq!(Some(hash), second["trace_hash"].as_str(), "{scenario}");
        assert_eq!(first["tasks_submitted"], second["tasks_submitted"]);
        assert_eq!(first["failovers"], second["failovers"]);
        // A different seed is a different run.
        let mut other = args;
        other[3] = "99";
        let (_, _, third) = sim_process(&other);
        assert_ne!(third["trace_hash"], first["trace_hash"], "{scenario}");
    }
}

#[test]
fn the_report_has_every_field_of_the_interface() {
    let (code, stdout, report) = sim_process(&[
        "--nodes",
        "5",
        "--seed",
        "3",
        "--scenario",
        "failover",
        "--virtual-secs",
        "20",
    ]);
    assert_eq!(code, 0, "{stdout}");
    for key in [
        "seed",
        "nodes",
        "scenario",
        "virtual_secs",
        "trace_hash",
        "invariants",
        "tasks_submitted",
        "tasks_succeeded",
        "failovers",
        "wall_ms",
    ] {
        assert!(!report[key].is_null(), "{key} missing from {report}");
    }
    assert_eq!(report["seed"], 3);
    assert_eq!(report["scenario"], "failover");
    let invariants = report["invariants"].as_object().unwrap();
    assert_eq!(invariants.len(), 9, "{report}");
    assert_eq!(invariants["sizes_within_caps"], "ok", "{report}");
    assert!(
        report["largest_raft_entry_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(invariants["no_panics"], "ok", "{report}");
    assert!(invariants.values().all(|v| v == "ok"), "{report}");
    assert_eq!(report["tasks_submitted"], report["tasks_succeeded"]);
    assert!(!report["failovers"].as_array().unwrap().is_empty());
    assert!(stdout.contains("invariants:"), "{stdout}");
}

#[test]
fn a_sweep_of_seeds_keeps_every_invariant() {
    let mut failures = Vec::new();
    for seed in 0..32u64 {
        for scenario in [Scenario::Failover, Scenario::Partition] {
            let outcome = quiet_run(config(seed, 7, scenario, 40));
            let broken = broken(&outcome);
            if !broken.is_empty() || outcome.tasks_submitted == 0 {
                failures.push(format!(
                    "coditect sim --nodes 7 --seed {seed} --scenario {scenario} --virtual-secs 40: {broken:?}"
                ));
            }
        }
    }
    for seed in 0..8u64 {
        for scenario in [Scenario::Churn, Scenario::Scale, Scenario::Steal] {
            let outcome = quiet_run(config(seed, 7, scenario, 40));
            let broken = broken(&outcome);
            if !broken.is_empty() {
                failures.push(format!(
                    "coditect sim --nodes 7 --seed {seed} --scenario {scenario} --virtual-secs 40: {broken:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Large outputs on slow and failing disks: every invariant holds, and the
/// results are large enough that the byte bounds are reached: entries
/// filled close to the cap, AppendEntries requests cut at the append bound,
/// report requests carrying several results.
#[test]
fn a_sweep_of_disk_seeds_keeps_every_invariant_and_reaches_the_byte_bounds() {
    let mut failures = Vec::new();
    let (mut entry, mut raft, mut request) = (0, 0, 0);
    let mut disk_faults = 0;
    for seed in 0..8u64 {
        let outcome = quiet_run(config(seed, 7, Scenario::Disk, 40));
        let broken = broken(&outcome);
        if !broken.is_empty() || outcome.tasks_submitted == 0 {
            failures.push(format!(
                "coditect sim --nodes 7 --seed {seed} --scenario disk --virtual-secs 40: {broken:?}"
            ));
        }
        entry = entry.max(outcome.largest_raft_entry_bytes);
        raft = raft.max(outcome.largest_raft_message_bytes);
        request = request.max(outcome.largest_node_request_bytes);
        disk_faults += outcome
            .fault_log
            .iter()
            .filter(|line| line.contains("storage error"))
            .count();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(entry > MAX_ENTRY_BYTES * 7 / 8, "largest entry {entry}");
    assert!(raft > MAX_APPEND_BYTES, "largest Raft RPC {raft}");
    assert!(request > 1024 * 1024, "largest report request {request}");
    assert!(disk_faults > 0, "no Raft core stopped on a failing disk");
}

#[test]
fn an_injected_storage_bug_is_caught_and_the_run_exits_one() {
    let mut caught = 0;
    for seed in 0..4u64 {
        let mut with_bug = config(seed, 5, Scenario::Failover, 30);
        with_bug.bug = Some(InjectedBug::ForgetStateWrites);
        let outcome = quiet_run(with_bug);
        let broken = broken(&outcome);
        if broken.iter().any(|b| {
            b.starts_with("committed_entries_never_change") || b.starts_with("replicas_converge")
        }) {
            caught += 1;
        }
        // The same seeds without the bug are clean.
        assert!(broken_is_empty(seed), "seed {seed} fails without the bug");
    }
    assert_eq!(caught, 4, "the checkers missed the injected bug");
    let (code, stdout, report) = sim_process(&[
        "--nodes",
        "5",
        "--seed",
        "1",
        "--virtual-secs",
        "30",
        "--inject-bug",
        "forget-state-writes",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("coditect sim --nodes 5 --seed 1 --scenario failover --virtual-secs 30 --inject-bug forget-state-writes"),
        "{stdout}"
    );
    assert_ne!(report["invariants"]["replicas_converge"], "ok", "{report}");
}

fn broken_is_empty(seed: u64) -> bool {
    broken(&quiet_run(config(seed, 5, Scenario::Failover, 30))).is_empty()
}

#[test]
fn bad_arguments_exit_two_with_one_line() {
    for args in [
        &["--scenario", "chaos"][..],
        &["--nodes", "0"][..],
        &["--virtual-secs", "1"][..],
        &["--inject-bug", "nope"][..],
        &["--bogus"][..],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_coditect-sim"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

/// A modelled language model on a third of the nodes, slow, rate-limiting
/// and down for seconds at a time, half the tasks asking it: every
/// invariant holds (model tasks only where a model is, each task done
/// exactly once), the outages really cost calls, and the node's own call
/// policy (retries, breaker, withdrawing `llm`) carries every task through.
#[test]
fn a_sweep_of_llm_seeds_keeps_every_invariant_through_model_outages() {
    let mut failures = Vec::new();
    let (mut recorded, mut answered, mut unavailable) = (0, 0, 0);
    for seed in 0..8u64 {
        let outcome = quiet_run(config(seed, 7, Scenario::Llm, 40));
        let broken = broken(&outcome);
        if !broken.is_empty() || outcome.tasks_submitted == 0 {
            failures.push(format!(
                "coditect sim --nodes 7 --seed {seed} --scenario llm --virtual-secs 40: {broken:?}"
            ));
        }
        recorded += outcome.model_calls.0;
        answered += outcome.model_calls.1;
        unavailable += outcome.model_calls.2;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        answered >= 8 * 20,
        "half of 40 tasks per seed ask the model: {answered}"
    );
    assert!(
        unavailable > 0 && recorded > answered,
        "outages cost calls: {recorded} recorded, {answered} answered, {unavailable} unavailable"
    );
    let again = quiet_run(config(3, 7, Scenario::Llm, 40));
    assert_eq!(
        again.trace_hash,
        quiet_run(config(3, 7, Scenario::Llm, 40)).trace_hash,
        "deterministic"
    );
}
