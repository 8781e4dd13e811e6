//! Consensus for the Coditect mesh: the openraft type configuration, the
//! replicated state (node registry) with its pure apply function, the log
//! store and state machine over a storage seam ([`kv::KvStore`]: RocksDB in
//! production, memory in the simulation), and Raft RPCs over a transport seam
//! ([`network::RaftTransport`]).
//!
//! Depends on `coditect-memory` (for the codec) only; it must not depend on
//! `coditect-gossip` (its sibling) nor on anything above it. It never reads a
//! clock: commands carry the leader's timestamps.

pub mod admission;
pub mod command;
pub mod kv;
pub mod limits;
pub mod mission;
pub mod network;
pub mod runtime;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod types;
pub mod workspace;

use std::sync::Arc;

pub use command::{Command, CommandResponse, MeshRaft, TypeConfig};
pub use limits::{MAX_APPEND_BYTES, MAX_ENTRY_BYTES};
pub use state::MeshState;
pub use storage::SharedState;
pub use types::{Capabilities, Load, MeshNode, NodeId, NodeRecord, WasmLimits};

/// Timing of the Raft group. Elections are tuned for LAN latencies: a lost
/// leader is noticed within `election_timeout_min..max` ms.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    /// Leader heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, ms.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, ms.
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries since the last; the log
    /// keeps a tenth of that behind a snapshot, so a member further behind
    /// catches up from the snapshot.
    pub snapshot_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs: 10_000,
        }
    }
}

/// openraft's configuration for the mesh.
pub fn raft_config(timing: &RaftTiming) -> Result<openraft::Config, String> {
    let config = openraft::Config {
        cluster_name: "coditect".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        install_snapshot_timeout: 2_000,
        // Well under the wire cap, so snapshots travel in several requests.
        snapshot_max_chunk_size: 1024 * 1024,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_logs.max(1)),
        max_in_snapshot_log_to_keep: timing.snapshot_logs / 10,
        // Entries per AppendEntries; the log reader also stops at
        // MAX_APPEND_BYTES, whichever comes first.
        max_payload_entries: 1_000,
        ..Default::default()
    };
    config.validate().map_err(|error| error.to_string())
}

/// Opens storage and starts the Raft node `node_id` over `store` and `transport`.
pub async fn start_raft(
    node_id: NodeId,
    timing: &RaftTiming,
    store: Arc<dyn kv::KvStore>,
    transport: Arc<dyn network::RaftTransport>,
    context: runtime::RaftContext,
) -> Result<(MeshRaft, storage::StateMachineStore), StartError> {
    storage::check_format(store.as_ref()).map_err(StartError::Storage)?;
    let config = Arc::new(raft_config(timing).map_err(StartError::Config)?);
    let (log_store, mut state_machine) =
        storage::open_storage(store).map_err(|e| StartError::Storage(e.to_string()))?;
    state_machine.set_offload(context.offload());
    let network = network::NetworkFactory::new(node_id, transport);
    // openraft spawns its tasks inside Raft::new: they inherit the context.
    let raft = context
        .scope(openraft::Raft::new(
            node_id,
            config,
            network,
            log_store,
            state_machine.clone(),
        ))
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok((raft, state_machine))
}

/// Why Raft could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    /// The storage is unusable (corrupt, foreign, unreadable).
    #[error("Raft storage: {0}")]
    Storage(String),
    /// openraft refused to start.
    #[error("Raft failed to start: {0}")]
    Raft(String),
}
