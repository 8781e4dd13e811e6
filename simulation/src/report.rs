//! The report of a run: the JSON of interfaces.md and a human summary.

use crate::harness::{SimConfig, SimOutcome};

/// The JSON report (`--report FILE`).
pub fn json(config: &SimConfig, outcome: &SimOutcome, wall_ms: u64) -> serde_json::Value {
    let invariants: serde_json::Map<String, serde_json::Value> = outcome
        .invariants
        .iter()
        .map(|(name, verdict)| (name.clone(), serde_json::Value::String(verdict.clone())))
        .collect();
    serde_json::json!({
        "seed": config.seed,
        "nodes": config.nodes,
        "nodes_total": outcome.nodes_total,
        "scenario": config.scenario.name(),
        "virtual_secs": config.virtual_secs,
        "trace_hash": outcome.trace_hash,
        "trace_events": outcome.trace_events,
        "invariants": invariants,
        "tasks_submitted": outcome.tasks_submitted,
        "tasks_succeeded": outcome.tasks_succeeded,
        "failovers": outcome.failovers,
        "busy_virtual_ms": outcome.busy_virtual_ms,
        "tasks_per_virtual_sec": outcome.busy_virtual_ms.filter(|ms| *ms > 0).map(|ms| {
            (outcome.tasks_succeeded as f64 * 1000.0 / ms as f64 * 10.0).round() / 10.0
        }),
        "largest_raft_entry_bytes": outcome.largest_raft_entry_bytes,
        "largest_raft_message_bytes": outcome.largest_raft_message_bytes,
        "largest_node_request_bytes": outcome.largest_node_request_bytes,
        "largest_message_bytes": outcome.largest_message_bytes,
        "model_calls": {
            "recorded": outcome.model_calls.0,
            "answered": outcome.model_calls.1,
            "llm_unavailable": outcome.model_calls.2,
        },
        "faults": outcome.fault_log,
        "wall_ms": wall_ms,
        "injected_bug": config.bug.map(|bug| format!("{bug:?}")),
    })
}

/// The command line that reproduces a run.
pub fn command_line(config: &SimConfig) -> String {
    let mut line = format!(
        "coditect sim --nodes {} --seed {} --scenario {} --virtual-secs {}",
        config.nodes, config.seed, config.scenario, config.virtual_secs
    );
    if config.bug.is_some() {
        line.push_str(" --inject-bug forget-state-writes");
    }
    line
}

/// The human summary.
pub fn summary(config: &SimConfig, outcome: &SimOutcome, wall_ms: u64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "simulation: {} nodes ({} over the run), scenario {}, seed {}, {} virtual s in {:.1} wall s\n",
        config.nodes,
        outcome.nodes_total,
        config.scenario,
        config.seed,
        config.virtual_secs,
        wall_ms as f64 / 1000.0
    ));
    if outcome.model_calls.0 > 0 {
        out.push_str(&format!(
            "model calls: {} recorded, {} answered, {} llm_unavailable violations\n",
            outcome.model_calls.0, outcome.model_calls.1, outcome.model_calls.2
        ));
    }
    out.push_str(&format!(
        "tasks: {} submitted, {} succeeded",
        outcome.tasks_submitted, outcome.tasks_succeeded
    ));
    match outcome.busy_virtual_ms {
        Some(ms) if ms > 0 => out.push_str(&format!(
            ", all done {:.1} virtual s after the first submission ({:.1} tasks per virtual s)\n",
            ms as f64 / 1000.0,
            outcome.tasks_succeeded as f64 * 1000.0 / ms as f64
        )),
        _ => out.push('\n'),
    }
    if !outcome.failovers.is_empty() {
        let mut sorted = outcome.failovers.clone();
        sorted.sort_unstable();
        out.push_str(&format!(
            "failovers: {} (virtual ms: min {}, p50 {}, max {})\n",
            sorted.len(),
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        ));
    }
    out.push_str(&format!(
        "largest: Raft entry {} bytes (cap {}), Raft RPC {}, other request {}, any message {}\n",
        outcome.largest_raft_entry_bytes,
        coditect_consensus::MAX_ENTRY_BYTES,
        outcome.largest_raft_message_bytes,
        outcome.largest_node_request_bytes,
        outcome.largest_message_bytes
    ));
    out.push_str("faults:\n");
    for line in &outcome.fault_log {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("invariants:\n");
    for (name, verdict) in &outcome.invariants {
        out.push_str(&format!("  {name}: {verdict}\n"));
    }
    out.push_str(&format!(
        "trace hash: {} ({} events)\n",
        outcome.trace_hash, outcome.trace_events
    ));
    out
}
