//! Snapshot build, transfer and install time and peak memory on RocksDB at
//! several state sizes (a benchmark, not a test).
//!
//!     cargo run -p coditect-consensus --example snapshot_bench -- 64 256 1024
//!
//! Each size (MiB of state) gets a fresh RocksDB holding missions of 100
//! tasks with large input names, applied as the state machine applies Raft
//! entries; then a snapshot is built, copied chunk by chunk into a second
//! RocksDB as openraft's transfer does, and installed there. Peak RSS is
//! the process's VmHWM after each phase (it only grows: sizes run in the
//! order given).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::sync::Arc;
use std::time::Instant;

use coditect_consensus::kv::{KvStore, RocksKv};
use coditect_consensus::mission::{TaskExpect, TaskLimits, TaskSubmission};
use coditect_consensus::storage::StateMachineStore;
use coditect_consensus::{Command, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn task(mission: u64, index: u64, name_bytes: usize) -> TaskSubmission {
    TaskSubmission {
        spawned_by: None,
        id: format!("t{index}"),
        module: format!("sha256:{:064x}", mission),
        needs: Vec::new(),
        requires: Vec::new(),
        priority: 2,
        input: None,
        inputs: vec![(
            format!("{index}-{}", "n".repeat(name_bytes)),
            format!("sha256:{:064x}", index),
        )],
        limits: TaskLimits {
            max_llm_calls: coditect_consensus::mission::DEFAULT_MAX_LLM_CALLS,
            max_tokens: coditect_consensus::mission::DEFAULT_MAX_TOKENS,
            fuel: 1_000_000,
            memory_mb: 64,
            timeout_ms: 10_000,
            output_mb: 1,
        },
        expect: TaskExpect::default(),
        done: false,
        title: None,
        agent: None,
        args: vec![],
        workspace: None,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().expect("sizes in MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![64, 256, 1024]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| state | entries | build | transfer | install | snapshot bytes | peak RSS after install |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for size_mib in sizes {
        runtime.block_on(async {
            let source_dir = tempfile::tempdir().unwrap();
            let target_dir = tempfile::tempdir().unwrap();
            let source: Arc<dyn KvStore> = Arc::new(RocksKv::open(source_dir.path()).unwrap());
            let mut machine = StateMachineStore::open(source.clone()).unwrap();
            // 100 tasks of about 10 KiB each per mission: about 1 MiB per entry.
            let name_bytes = 10 * 1024;
            let missions = size_mib;
            for m in 0..missions {
                let tasks = (0..100).map(|t| task(m, t, name_bytes)).collect();
                let entry = Entry::<TypeConfig> {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), m + 1),
                    payload: EntryPayload::Normal(Command::SubmitMission {
                        max_fix_rounds: None,
                        origin: None,
                        name: format!("bench{m}"),
                        tasks,
                        at_ms: m,
                        assign: Vec::new(),
                        staged: None,
                        idempotency_key: None,
                    }),
                };
                machine.apply(vec![entry]).await.unwrap();
            }
            // The state column caught up, so the build times the export alone.
            machine.write_state().unwrap();
            let started = Instant::now();
            let mut builder = machine.get_snapshot_builder().await;
            let mut built = builder.build_snapshot().await.unwrap();
            let build = started.elapsed();
            let bytes = built.snapshot.len();

            let target: Arc<dyn KvStore> = Arc::new(RocksKv::open(target_dir.path()).unwrap());
            let mut fresh = StateMachineStore::open(target.clone()).unwrap();
            let started = Instant::now();
            let mut receiving = fresh.begin_receiving_snapshot().await.unwrap();
            let mut buffer = vec![0u8; coditect_consensus::snapshot::CHUNK_BYTES];
            loop {
                let n = built.snapshot.read_some(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                let mut rest = &buffer[..n];
                while !rest.is_empty() {
                    let taken = receiving.write_some(rest).unwrap();
                    rest = &rest[taken..];
                }
            }
            let transfer = started.elapsed();
            let started = Instant::now();
            fresh.install_snapshot(&built.meta, receiving).await.unwrap();
            let install = started.elapsed();
            let installed = fresh.shared_state();
            let tasks: usize = installed
                .read()
                .unwrap()
                .state
                .missions
                .values()
                .map(|m| m.tasks.len())
                .sum();
            assert_eq!(tasks as u64, missions * 100);
            println!(
                "| {size_mib} MiB | {missions} | {:.2} s | {:.2} s | {:.2} s | {:.0} MiB | {:.0} MiB |",
                build.as_secs_f64(),
                transfer.as_secs_f64(),
                install.as_secs_f64(),
                bytes as f64 / 1048576.0,
                peak_rss_mib()
            );
        });
    }
}
