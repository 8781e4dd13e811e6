//! The one place a node is assembled from its parts. `coditect node`
//! (`start.rs`), the benchmarks (`bench.rs`) and the simulation's harness
//! all go through here, so each runs the same wiring: Raft over the
//! network seam with a shared address book, the election gate closed for a
//! node that restarts on old state, the timing Raft was started with.
//!
//! Two steps, because `coditect node` decides where to dial (its seeds)
//! only once it knows whether its Raft state is initialised: [`open_raft`],
//! then [`OpenedRaft::start`].

use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::kv::KvStore;
use coditect_consensus::runtime::RaftContext;
use coditect_consensus::{Capabilities, NodeId, RaftTiming, StartError};
use coditect_gossip::{Network, NetworkEvent};
use coditect_memory::BlobStore;
use tokio::sync::mpsc;

use super::{AddressBook, NetworkTransport, Node, NodeParts};
use crate::env::SharedEnv;
use crate::metrics::NodeMetrics;
use crate::mission::AgentConfig;
use crate::scheduler::retention::RetentionPolicy;
use crate::worker::TaskRunner;

/// A node's Raft, opened on its store and not yet driving a node.
pub struct OpenedRaft {
    node_id: NodeId,
    raft: coditect_consensus::MeshRaft,
    replica: coditect_consensus::SharedState,
    applied: tokio::sync::watch::Receiver<u64>,
    addresses: AddressBook,
    initialized: bool,
    election_timeout_max: Duration,
}

/// Opens Raft for `node_id` on `store`, talking over `network`.
pub async fn open_raft(
    node_id: NodeId,
    timing: &RaftTiming,
    store: Arc<dyn KvStore>,
    network: &Arc<dyn Network>,
    context: RaftContext,
) -> Result<OpenedRaft, StartError> {
    let addresses = AddressBook::new();
    let (raft, state_machine) = coditect_consensus::start_raft(
        node_id,
        timing,
        store,
        Arc::new(NetworkTransport::new(network.clone(), addresses.clone())),
        context,
    )
    .await?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|error| StartError::Raft(error.to_string()))?;
    Ok(OpenedRaft {
        node_id,
        replica: state_machine.shared_state(),
        applied: state_machine.applied_index(),
        raft,
        addresses,
        initialized,
        election_timeout_max: Duration::from_millis(timing.election_timeout_max_ms),
    })
}

/// How a node behaves: the settings `coditect node` takes as flags.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Human label.
    pub name: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Voter target.
    pub target_voters: usize,
    /// A voter silent this long is replaced.
    pub voter_grace: Duration,
    /// Heartbeat and advert period.
    pub heartbeat: Duration,
    /// A node silent this long loses its lease.
    pub lease: Duration,
    /// Tasks beyond its slots it asks to hold, fixed; `None`: measured.
    pub queue_depth: Option<u32>,
    /// Whether it steals when idle.
    pub steal: bool,
    /// How long finished missions are kept in full (when leading).
    pub retention: RetentionPolicy,
    /// Routing of markdown tasks to agent kinds.
    pub agents: AgentConfig,
    /// Join token and founding (default: an open mesh, no token).
    pub admission: super::AdmissionSettings,
}

/// What a node is wired to beside its Raft.
pub struct Wiring {
    /// Time, spawning, randomness.
    pub env: SharedEnv,
    /// The network seam Raft was opened on.
    pub network: Arc<dyn Network>,
    /// Its events.
    pub events: mpsc::Receiver<NetworkEvent>,
    /// Addresses to dial while it has no connection.
    pub seeds: Vec<String>,
    /// The blobs it holds and serves.
    pub blobs: BlobStore,
    /// Metrics.
    pub metrics: NodeMetrics,
    /// Runs the tasks it is assigned.
    pub runner: Arc<dyn TaskRunner>,
}

impl OpenedRaft {
    /// Whether this Raft state belongs to a mesh already (a restart).
    pub fn initialized(&self) -> bool {
        self.initialized
    }

    /// The applied replicated state, for a checker that reads it.
    pub fn replica(&self) -> coditect_consensus::SharedState {
        self.replica.clone()
    }

    /// Starts the node. A node on old Raft state keeps its elections off
    /// until it learns it is still a voter (see `roles::ElectionGate`).
    pub fn start(self, wiring: Wiring, settings: NodeSettings) -> Node {
        Node::start(
            NodeParts {
                env: wiring.env,
                network: wiring.network,
                raft: self.raft,
                replica: self.replica,
                applied: self.applied,
                node_id: self.node_id,
                name: settings.name,
                capabilities: settings.capabilities,
                target_voters: settings.target_voters,
                voter_grace: settings.voter_grace,
                heartbeat: settings.heartbeat,
                election_timeout_max: self.election_timeout_max,
                seeds: wiring.seeds,
                elect_at_start: !self.initialized,
                addresses: self.addresses,
                blobs: wiring.blobs,
                metrics: wiring.metrics,
                runner: wiring.runner,
                agents: settings.agents,
                lease: settings.lease,
                queue_depth: settings.queue_depth,
                steal: settings.steal,
                retention: settings.retention,
                admission: settings.admission,
            },
            wiring.events,
        )
    }
}
