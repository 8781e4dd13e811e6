//! Deterministic simulation of many Coditect nodes in one process.
//!
//! This crate will own the simulated implementations of the node's seams
//! (virtual clock and seeded RNG behind `coditect_node::env::Env`, an
//! in-process message bus behind `coditect_gossip::Network`, and
//! `coditect_consensus::kv::MemKv` for storage), the fault nemesis, the
//! invariant checkers and `coditect sim`. It depends on `coditect-node` and
//! nothing in production depends on it.
//!
//! Today it checks that the seams it will plug into exist with the shapes it
//! needs, so a change that breaks them fails here first.

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
