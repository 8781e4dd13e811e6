//! `coditect-sim`: the deterministic simulation, also reachable as
//! `coditect sim` (the main binary runs this one, installed beside it).
//! Exit codes: 0 every invariant held, 1 an invariant broke (the line that
//! reproduces the run is printed), 2 bad usage.
#![allow(clippy::disallowed_methods)] // a CLI measuring its own wall time

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use coditect_consensus::kv::InjectedBug;
use coditect_simulation::harness::{run, SimConfig};
use coditect_simulation::report;
use coditect_simulation::scenario::Scenario;

/// Runs many real nodes in one process on simulated time, network and
/// storage, with seeded faults, and checks invariants throughout.
#[derive(Parser)]
#[command(name = "coditect sim", version)]
struct Args {
    /// Nodes at the start
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Seed of everything random in the run
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// failover, partition, churn, scale, steal or disk
    #[arg(long, default_value = "failover")]
    scenario: String,
    /// Virtual seconds to run (the last fifth is fault-free)
    #[arg(long, default_value_t = 60)]
    virtual_secs: u64,
    /// Write the JSON report here
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Turn on a deliberate storage bug (to see the checkers catch it): forget-state-writes
    #[arg(long, value_name = "BUG")]
    inject_bug: Option<String>,
    /// No progress line on stderr
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let bad = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let scenario: Scenario = match args.scenario.parse() {
        Ok(scenario) => scenario,
        Err(message) => return bad(message),
    };
    if args.nodes == 0 || args.nodes > 5_000 {
        return bad(format!("--nodes {} must be between 1 and 5000", args.nodes));
    }
    if args.virtual_secs < 5 {
        return bad(format!(
            "--virtual-secs {} must be at least 5",
            args.virtual_secs
        ));
    }
    let bug = match args.inject_bug.as_deref() {
        None => None,
        Some("forget-state-writes") => Some(InjectedBug::ForgetStateWrites),
        Some(other) => {
            return bad(format!(
                "unknown --inject-bug {other:?} (expected forget-state-writes)"
            ))
        }
    };
    if let Some(path) = &args.report {
        if let Err(error) = std::fs::write(path, b"") {
            return bad(format!(
                "cannot write the report to {}: {error}",
                path.display()
            ));
        }
    }
    let config = SimConfig {
        seed: args.seed,
        nodes: args.nodes,
        scenario,
        virtual_secs: args.virtual_secs,
        bug,
    };
    // Node logs, for digging into one run: CODITECT_LOG=coditect_node=info.
    if let Ok(filter) = std::env::var("CODITECT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let started = Instant::now();
    let quiet = args.quiet;
    let mut last_shown = 0u64;
    let mut progress = |now: u64, total: u64| {
        if quiet || (now < total && now < last_shown + 5_000) {
            return;
        }
        last_shown = now;
        eprint!(
            "\r  virtual {:>6.1} / {} s   wall {:>6.1} s",
            now as f64 / 1000.0,
            total / 1000,
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        if now >= total {
            eprintln!();
        }
    };
    let outcome = run(config.clone(), &mut progress);
    let wall_ms = started.elapsed().as_millis() as u64;
    print!("{}", report::summary(&config, &outcome, wall_ms));
    if let Some(path) = &args.report {
        let json = report::json(&config, &outcome, wall_ms);
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        if let Err(error) = std::fs::write(path, text + "\n") {
            eprintln!(
                "error: cannot write the report to {}: {error}",
                path.display()
            );
            return ExitCode::from(1);
        }
    }
    if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        println!("an invariant broke; reproduce with:");
        println!("  {}", report::command_line(&config));
        ExitCode::from(1)
    }
}
