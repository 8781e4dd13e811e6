//! Deterministic simulation of many Coditect nodes in one process.
//!
//! This crate owns the simulated implementations of the node's seams:
//! [`env::SimEnv`] (virtual clock from a paused current-thread tokio runtime,
//! a seeded RNG and clock offset per node) behind `coditect_node::env::Env`,
//! and [`network::Bus`] (an in-process message bus with latency, loss,
//! duplication, partitions and crashes, feeding a trace hash) behind
//! `coditect_gossip::Network`. Storage is [`disk::SimDisk`] behind
//! `coditect_consensus::kv::KvStore`: a `MemKv`, whose `crash()` loses
//! unsynced writes and whose writes can be made to fail, with a modelled
//! device time per write on the virtual clock; Raft's randomness comes from a
//! seeded `coditect_consensus::runtime::RaftContext`; tasks run through
//! [`runner::SimRunner`] on the real executor and orchestrator path, and the
//! language model of the `llm` scenario is [`model::SimModel`] behind
//! `coditect_node::llm::ModelProvider` (the node's own call policy on top).
//! [`harness::run`] runs a whole mesh under a [`scenario`]'s seeded nemesis
//! and the [`invariants`] checkers; the `coditect-sim` binary (also
//! `coditect sim`) prints the [`report`].
//!
//! It depends on `coditect-node` and nothing in production depends on it.
//! Runs need a tokio built with `--cfg tokio_unstable` (see
//! `.cargo/config.toml`) for `Builder::rng_seed`.

pub mod disk;
pub mod env;
pub mod harness;
pub mod invariants;
pub mod model;
pub mod network;
pub mod report;
pub mod runner;
pub mod scenario;

/// The runtime every simulated node runs on: one thread, virtual time that
/// only moves when every task waits, and a scheduler seeded from `seed`.
pub fn runtime(seed: u64) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use coditect_consensus::kv::{KvStore, MemKv};

    #[test]
    fn memory_storage_fits_the_storage_seam() {
        let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
        assert!(coditect_consensus::storage::check_format(store.as_ref()).is_ok());
    }
}
