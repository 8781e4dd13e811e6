//! The node runtime: wires Raft, the network and the local view together and
//! runs the periodic work (adverts, heartbeats, autopilot, reconnection).
//!
//! Everything here reaches time, spawning and randomness through [`Env`] and
//! the network through [`Network`], so the simulation can run it unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_consensus::network::{
    decode_rpc, refusal_reply, serve_rpc, RaftTransport, TransportError,
};
use coditect_consensus::{
    Capabilities, Command, CommandResponse, Load, MeshNode, MeshRaft, NodeId, NodeRecord,
    SharedState,
};
use coditect_gossip::{Network, NetworkEvent, PeerName, RequestError, ADVERT_TOPIC, LEADER_TOPIC};
use coditect_memory::{codec, BlobStore, Digest};
use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::{ChangeMembers, ServerState};
use tokio::sync::mpsc;

use crate::env::{jitter, timeout, SharedEnv};
use crate::messages::{
    BlobChunk, LeaderAdvert, LeaderHint, Member, NodeAdvert, NodeRequest, NodeResponse,
};
use crate::metrics::NodeMetrics;
use crate::mission::AgentConfig;
use crate::propose::{Proposer, WRITE_DEADLINE};
use crate::roles::{
    self, AnnouncedMembership, AutopilotAction, AutopilotInput, ElectionGate, GateInput, Health,
    Role,
};
use crate::worker::{BlobHint, TaskRunner};

mod admission;
pub mod assembly;
mod executor;
mod missions;
mod runtimes;
mod state;

pub use crate::admission::AdmissionSettings;
pub use crate::messages::{MissionView, SubmitError};
pub use missions::{MAX_WAITERS, MAX_WAITERS_PER_CLIENT};
pub use state::WaiterSlot;
use state::{ExecState, SchedState, Views};

/// How long a request to the leader may take.
const CONTROL_DEADLINE: Duration = Duration::from_secs(3);
/// Bytes of a blob per request, well under the wire's 16 MiB frame cap.
const BLOB_CHUNK_BYTES: u32 = 4 * 1024 * 1024;
/// Standby learners the leader keeps beside the voters.
const STANDBYS: usize = 2;
/// A learner within this many entries of the leader may be promoted.
const CAUGHT_UP_ENTRIES: u64 = 100;
/// How long a silent peer's advert is kept (idle nodes advert every 16
/// heartbeats; ten minutes covers any partition a node comes back from).
const ADVERT_TTL: Duration = Duration::from_secs(600);

/// What a node runtime needs, already opened and validated (built only by
/// [`assembly`], the one place a node is put together).
pub(crate) struct NodeParts {
    /// Time, spawning, randomness.
    pub env: SharedEnv,
    /// The network seam.
    pub network: Arc<dyn Network>,
    /// The Raft handle.
    pub raft: MeshRaft,
    /// The applied replicated state.
    pub replica: SharedState,
    /// The index of the last entry applied to it, updated as each batch applies.
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// Our Raft id.
    pub node_id: NodeId,
    /// Human label.
    pub name: String,
    /// What we offer.
    pub capabilities: Capabilities,
    /// Voter target.
    pub target_voters: usize,
    /// Voter grace period.
    pub voter_grace: Duration,
    /// Heartbeat and advert period.
    pub heartbeat: Duration,
    /// Raft's upper election timeout, for the election gate.
    pub election_timeout_max: Duration,
    /// Addresses to dial while we have no connection (bootstrap or remembered).
    pub seeds: Vec<String>,
    /// Whether elections may start right away (false when restarting on old state).
    pub elect_at_start: bool,
    /// Fresh peer addresses, shared with the Raft transport.
    pub addresses: AddressBook,
    /// Content-addressed blobs this node holds and serves to peers.
    pub blobs: BlobStore,
    /// Metrics.
    pub metrics: NodeMetrics,
    /// Runs the tasks this node is assigned.
    pub runner: Arc<dyn TaskRunner>,
    /// Routing of markdown tasks to agent kinds.
    pub agents: AgentConfig,
    /// A node silent this long loses its lease.
    pub lease: Duration,
    /// Tasks beyond its slots this node asks to hold, fixed; `None`:
    /// measured (its queue window).
    pub queue_depth: Option<u32>,
    /// Whether to steal when idle.
    pub steal: bool,
    /// How long finished missions are kept in full (when leading).
    pub retention: crate::scheduler::retention::RetentionPolicy,
    /// Join token and founding.
    pub admission: AdmissionSettings,
}

#[derive(Default)]
struct LocalView {
    listen_addrs: Vec<String>,
    adverts: BTreeMap<PeerName, (NodeAdvert, Duration)>,
    leader_advert: Option<(LeaderAdvert, Duration)>,
    /// Leader only: when each node last heartbeated, and its load.
    heard: BTreeMap<NodeId, (Duration, Load)>,
    /// Leader only: the queue window each node last asked for.
    windows: BTreeMap<NodeId, u32>,
    /// Leader only: loads to write into the registry at the next batch.
    pending_heartbeats: BTreeMap<NodeId, Load>,
    /// When this node became leader (to give everyone a fair grace period).
    leader_since: Option<Duration>,
    /// Leader only: each follower's replication progress.
    replication: roles::ReplicationWatch,
    /// Leader only: stalled voters already logged.
    stalled_reported: BTreeSet<NodeId>,
    /// When we last knew a leader.
    last_leader_seen: Duration,
    last_leader: Option<NodeId>,
    registered: bool,
    membership_change_in_flight: bool,
    next_seed_dial: Duration,
    /// When each unconnected member may be dialed again.
    member_dials: BTreeMap<PeerName, Duration>,
    seed_backoff: Duration,
    /// Whether this node may campaign (membership, split votes, leaving).
    gate: ElectionGate,
    /// The advert last published.
    last_advert: Option<NodeAdvert>,
    /// Send the advert at the next tick even if unchanged: a peer just
    /// subscribed to adverts, or admission changed (an advert sent before
    /// reached nobody, or was refused).
    advert_due: bool,
    /// How many of the adverts heard show queued tasks (nothing to steal at 0).
    adverts_with_queue: usize,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    env: SharedEnv,
    network: Arc<dyn Network>,
    raft: MeshRaft,
    replica: SharedState,
    /// Moves as soon as an entry is applied to `replica` (before openraft's
    /// metrics, which follow a hop later): what state waiters wake on.
    applied: tokio::sync::watch::Receiver<u64>,
    node_id: NodeId,
    peer_id: String,
    name: String,
    capabilities: Capabilities,
    /// Tags that come and go while the node runs (`python` once the runtime
    /// is compiled), merged over `capabilities.tags`.
    dynamic_tags: Mutex<BTreeMap<String, String>>,
    target_voters: usize,
    voter_grace: Duration,
    heartbeat: Duration,
    quiet_before_election: Duration,
    election_timeout_max: Duration,
    seeds: Vec<String>,
    metrics: NodeMetrics,
    proposer: Proposer,
    addresses: AddressBook,
    blobs: BlobStore,
    view: Mutex<LocalView>,
    stopped: AtomicBool,
    runner: Arc<dyn TaskRunner>,
    agents: AgentConfig,
    exec: Mutex<ExecState>,
    sched: Mutex<SchedState>,
    wake: tokio::sync::Notify,
    /// Outcomes are waiting in the outbox.
    reports_ready: tokio::sync::Notify,
    /// A node silent this long loses its lease (and its tasks).
    lease: Duration,
    queue_depth: Option<u32>,
    steal: bool,
    retention: crate::scheduler::retention::RetentionPolicy,
    /// Why this node's Raft core died, once it has (see [`crate::liveness`]).
    fatal: Mutex<Option<String>>,
    /// What `/api/status` shows under `runtimes`.
    runtimes: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Mission views shared by every reader of one version (long polls).
    views: Views,
    /// Who may take part, challenges, the join exchange.
    admission: Mutex<crate::admission::AdmissionShell>,
    admission_settings: AdmissionSettings,
}

/// The freshest known addresses of each peer, learned from gossip adverts.
/// Raft membership records a node's addresses when it joins; they go stale
/// when it restarts on other ports, so every dial merges both.
#[derive(Clone, Default)]
pub struct AddressBook(Arc<Mutex<BTreeMap<PeerName, Vec<String>>>>);

impl AddressBook {
    /// An empty book.
    pub fn new() -> Self {
        AddressBook::default()
    }

    /// Records `addrs` as the current addresses of `peer`.
    pub fn learn(&self, peer: &str, addrs: &[String]) {
        if addrs.is_empty() {
            return;
        }
        let mut book = self.0.lock().expect("address book lock");
        match book.get_mut(peer) {
            Some(known) if known.as_slice() == addrs => {}
            Some(known) => *known = addrs.to_vec(),
            None => {
                book.insert(peer.to_string(), addrs.to_vec());
            }
        }
    }

    /// The book's addresses of `peer` first, then the `known` ones not among them.
    pub fn merged(&self, peer: &str, known: &[String]) -> Vec<String> {
        let mut addrs = self
            .0
            .lock()
            .expect("address book lock")
            .get(peer)
            .cloned()
            .unwrap_or_default();
        for addr in known {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        addrs
    }
}

/// The Raft transport over the node's network: Raft RPCs ride in
/// [`NodeRequest::Raft`], over each peer's long-lived call channel
/// ([`Network::call`]).
pub struct NetworkTransport {
    network: Arc<dyn Network>,
    addresses: AddressBook,
}

impl NetworkTransport {
    /// A transport over `network`, dialing with the addresses in `addresses`.
    pub fn new(network: Arc<dyn Network>, addresses: AddressBook) -> Self {
        NetworkTransport { network, addresses }
    }
}

impl RaftTransport for NetworkTransport {
    fn call(
        &self,
        _target: NodeId,
        node: &MeshNode,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let request = codec::encode(&NodeRequest::Raft(payload));
        let addrs = self.addresses.merged(&node.peer_id, &node.addrs);
        let future = request.map(|bytes| self.network.call(&node.peer_id, &addrs, bytes, deadline));
        async move {
            let reply = match future {
                Ok(future) => future.await,
                Err(error) => return Err(TransportError::Other(error.to_string())),
            };
            let bytes = reply.map_err(|error| match error {
                RequestError::Timeout { deadline, .. } => TransportError::Timeout(deadline),
                RequestError::Unreachable { .. } | RequestError::Closed => {
                    TransportError::Unreachable(error.to_string())
                }
                RequestError::Invalid(_) => TransportError::Other(error.to_string()),
            })?;
            match codec::decode::<NodeResponse>(&bytes) {
                Ok(NodeResponse::Raft(reply)) => Ok(reply),
                Ok(other) => Err(TransportError::Other(format!(
                    "unexpected answer {other:?}"
                ))),
                Err(error) => Err(TransportError::Other(error.to_string())),
            }
        }
        .boxed()
    }
}

/// A snapshot of what this node believes, for `/api/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusView {
    /// Our peer id.
    pub peer_id: String,
    /// Our Raft id.
    pub node_id: NodeId,
    /// Our label.
    pub name: String,
    /// Our role.
    pub role: Role,
    /// The leader's peer id, if known.
    pub leader: Option<String>,
    /// The leader's Raft id, if known.
    pub leader_node_id: Option<NodeId>,
    /// Raft term (ours, or the leader's as announced).
    pub term: u64,
    /// Voters' peer ids.
    pub voters: Vec<String>,
    /// Standby learners' peer ids.
    pub learners: Vec<String>,
    /// Other nodes as their adverts describe them.
    pub peers: Vec<PeerStatus>,
    /// Last applied log index (ours, or the leader's as announced).
    pub commit_index: u64,
    /// Peers we hold a connection to.
    pub connected_peers: usize,
    /// Nodes in the registry (members) or seen in adverts (workers).
    pub known_nodes: usize,
    /// Our capabilities.
    pub capabilities: serde_json::Value,
    /// Our listen addresses, with `/p2p/`.
    pub listen: Vec<String>,
    /// Whether elections are enabled on this node (see the election gate).
    pub elections_enabled: bool,
    /// The binary's version.
    pub version: String,
    /// Why this node's Raft core died (it is leaving the mesh and the
    /// process exits); `None` while it runs.
    pub fatal: Option<String>,
    /// Language runtimes (`python`): loading, fetching, compiling, ready.
    pub runtimes: serde_json::Value,
    /// The tasks beyond its slots this node asks the leader to hold, and
    /// what they were measured from: `{"tasks", "fixed", "service_us",
    /// "refill_us"}` (`tasks` null until measured).
    pub queue_window: serde_json::Value,
    /// `"open"` (anyone may join), `"token"` (join tokens), or `"pending"`
    /// (this node has not heard yet).
    pub admission: &'static str,
    /// Why the mesh refused this node's join token, if it did.
    pub admission_error: Option<String>,
}

/// One peer in `/api/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer_id: String,
    /// Raft id.
    pub node_id: NodeId,
    /// Label.
    pub name: String,
    /// Addresses.
    pub addrs: Vec<String>,
    /// What it offers.
    pub capabilities: serde_json::Value,
    /// How busy it is.
    pub load: Load,
    /// Whether we hold a connection to it.
    pub connected: bool,
}

/// Capabilities as JSON: the fixed keys plus `tags`.
pub fn capabilities_json(capabilities: &Capabilities) -> serde_json::Value {
    serde_json::json!({
        "cores": capabilities.cores,
        "memory_mb": capabilities.memory_mb,
        "slots": capabilities.slots,
        "version": capabilities.version,
        "wasm": capabilities.wasm,
        "wasm_limits": capabilities.wasm_limits,
        "tags": capabilities.tags,
    })
}

fn membership_sets(
    metrics: &openraft::RaftMetrics<NodeId, MeshNode>,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let membership = metrics.membership_config.membership();
    (
        membership.voter_ids().collect(),
        membership.learner_ids().collect(),
    )
}

impl Node {
    /// Starts the node's loops. `events` is the network's event stream.
    pub(crate) fn start(parts: NodeParts, events: mpsc::Receiver<NetworkEvent>) -> Node {
        let peer_id = parts.network.local_peer();
        let now = parts.env.elapsed();
        let inner = Arc::new(Inner {
            env: parts.env.clone(),
            network: parts.network,
            raft: parts.raft.clone(),
            replica: parts.replica,
            applied: parts.applied,
            node_id: parts.node_id,
            peer_id,
            name: parts.name,
            capabilities: parts.capabilities,
            dynamic_tags: Mutex::new(BTreeMap::new()),
            target_voters: parts.target_voters,
            voter_grace: parts.voter_grace,
            heartbeat: parts.heartbeat,
            quiet_before_election: parts.election_timeout_max * 3 + parts.heartbeat * 4,
            election_timeout_max: parts.election_timeout_max,
            seeds: parts.seeds,
            metrics: parts.metrics,
            proposer: Proposer::start(parts.env.as_ref(), parts.raft.clone()),
            addresses: parts.addresses,
            blobs: parts.blobs,
            view: Mutex::new(LocalView {
                last_leader_seen: now,
                seed_backoff: Duration::from_millis(250),
                gate: ElectionGate::new(parts.elect_at_start),
                ..LocalView::default()
            }),
            stopped: AtomicBool::new(false),
            runner: parts.runner,
            agents: parts.agents,
            exec: Mutex::new(ExecState::default()),
            sched: Mutex::new(SchedState::default()),
            wake: tokio::sync::Notify::new(),
            reports_ready: tokio::sync::Notify::new(),
            lease: parts.lease,
            queue_depth: parts.queue_depth,
            retention: parts.retention,
            steal: parts.steal,
            fatal: Mutex::new(None),
            runtimes: Mutex::new(BTreeMap::new()),
            views: Views::default(),
            admission: Mutex::new(crate::admission::AdmissionShell::default()),
            admission_settings: parts.admission,
        });
        inner.raft.runtime_config().elect(parts.elect_at_start);
        let node = Node { inner };
        let events_node = node.clone();
        parts
            .env
            .spawn("network-events", events_node.event_loop(events).boxed());
        let tick_node = node.clone();
        parts.env.spawn("tick", tick_node.tick_loop().boxed());
        let autopilot_node = node.clone();
        parts
            .env
            .spawn("autopilot", autopilot_node.autopilot_loop().boxed());
        let reporter_node = node.clone();
        parts
            .env
            .spawn("reporter", reporter_node.report_loop().boxed());
        let scheduler_node = node.clone();
        parts
            .env
            .spawn("scheduler", scheduler_node.scheduling_loop().boxed());
        node
    }

    fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Why this node's Raft core died (a storage error or a panic), or
    /// `None` while it runs or after a deliberate stop. A dead core never
    /// comes back: the node stops heartbeating and advertising, reports
    /// itself not ready, and production exits so a supervisor restarts it.
    pub fn fatal(&self) -> Option<String> {
        let mut fatal = self.inner.fatal.lock().expect("fatal lock");
        if fatal.is_none() && !self.is_stopped() {
            let reason = crate::liveness::raft_core_failure(&self.inner.raft.metrics())?;
            tracing::error!("{reason}; this node takes itself out of the mesh");
            *fatal = Some(reason);
        }
        fatal.clone()
    }

    /// Our Raft id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The Raft handle.
    pub fn raft(&self) -> &MeshRaft {
        &self.inner.raft
    }

    /// Records a listen address the network reported (without `/p2p/`).
    pub fn add_listen_addr(&self, addr: String) {
        let mut view = self.inner.view.lock().expect("view lock");
        if !view.listen_addrs.contains(&addr) {
            view.listen_addrs.push(addr);
        }
    }

    /// Our listen addresses (without `/p2p/`).
    pub fn listen_addrs(&self) -> Vec<String> {
        self.inner
            .view
            .lock()
            .expect("view lock")
            .listen_addrs
            .clone()
    }

    fn self_member(&self) -> MeshNode {
        MeshNode {
            peer_id: self.inner.peer_id.clone(),
            addrs: self.listen_addrs(),
        }
    }

    /// Initializes a new single-voter mesh with this node as its only member.
    pub async fn initialize_mesh(&self) -> Result<(), String> {
        let members = BTreeMap::from([(self.inner.node_id, self.self_member())]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|error| format!("cannot initialize the mesh: {error}"))
    }

    /// Reads the applied replicated state.
    fn state<T>(&self, read: impl FnOnce(&coditect_consensus::MeshState) -> T) -> T {
        read(&self.inner.replica.read().expect("replica lock").state)
    }

    /// Reads this node's applied copy of the replicated state (empty outside
    /// Raft membership); for checkers and tools.
    pub fn with_state<T>(&self, read: impl FnOnce(&coditect_consensus::MeshState) -> T) -> T {
        self.state(read)
    }

    /// Whether this node leads now.
    pub fn leads(&self) -> bool {
        self.is_leader()
    }

    /// Commits a membership change and waits for it.
    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, MeshNode>,
    ) -> Result<(), String> {
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// Nodes this node knows of: the registry if it holds Raft state, else
    /// the adverts it has heard (plus itself).
    fn known_nodes(&self) -> usize {
        let registry = self.state(|state| state.nodes.len());
        let adverts = self.inner.view.lock().expect("view lock").adverts.len() + 1;
        registry.max(adverts)
    }

    fn raft_metrics(&self) -> openraft::RaftMetrics<NodeId, MeshNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The leader as this node knows it: from Raft if we are a member that
    /// hears one, else from the freshest leader advert.
    pub fn leader(&self) -> Option<LeaderHint> {
        let metrics = self.raft_metrics();
        if let Some(leader) = metrics.current_leader {
            if leader == self.inner.node_id {
                return Some(LeaderHint {
                    node_id: leader,
                    peer_id: self.inner.peer_id.clone(),
                    addrs: self.listen_addrs(),
                });
            }
            if let Some(node) = metrics.membership_config.membership().get_node(&leader) {
                return Some(LeaderHint {
                    node_id: leader,
                    peer_id: node.peer_id.clone(),
                    addrs: node.addrs.clone(),
                });
            }
        }
        let view = self.inner.view.lock().expect("view lock");
        let fresh = self.inner.heartbeat * 5;
        view.leader_advert
            .as_ref()
            .filter(|(_, at)| self.inner.env.elapsed().saturating_sub(*at) <= fresh)
            .map(|(advert, _)| advert.leader.clone())
    }

    /// Whether this node is in the Raft membership (voter or learner).
    fn is_member(&self) -> bool {
        self.raft_metrics()
            .membership_config
            .membership()
            .get_node(&self.inner.node_id)
            .is_some()
    }

    fn is_leader(&self) -> bool {
        let metrics = self.raft_metrics();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.node_id)
    }

    /// What this node offers now: its configured capabilities and the tags
    /// set since it started.
    pub fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities.clone();
        let dynamic = self.inner.dynamic_tags.lock().expect("tags lock");
        for (key, value) in dynamic.iter() {
            capabilities.tags.insert(key.clone(), value.clone());
        }
        capabilities
    }

    /// Starts (`Some`) or stops (`None`) offering capability tag `key`: the
    /// next advert says so, and the leader's registry learns it at once
    /// (members re-register; workers re-join), so placement follows.
    pub fn set_capability_tag(&self, key: &str, value: Option<&str>) {
        let changed = {
            let mut dynamic = self.inner.dynamic_tags.lock().expect("tags lock");
            let before = dynamic.get(key).cloned();
            match value {
                Some(value) => {
                    dynamic.insert(key.to_string(), value.to_string());
                }
                None => {
                    dynamic.remove(key);
                }
            }
            before.as_deref() != value
        };
        if changed {
            tracing::info!(tag = key, offered = value.is_some(), "capabilities changed");
            self.inner.view.lock().expect("view lock").registered = false;
            self.publish_advert(true);
        }
    }

    fn record(&self) -> NodeRecord {
        let now = self.inner.env.now_ms();
        NodeRecord {
            node_id: self.inner.node_id,
            peer_id: self.inner.peer_id.clone(),
            name: self.inner.name.clone(),
            addrs: self.listen_addrs(),
            capabilities: self.capabilities(),
            registered_ms: now,
            last_heartbeat_ms: now,
            load: self.load(),
            left: false,
        }
    }

    /// What `/api/status` shows.
    pub fn status(&self) -> StatusView {
        let metrics = self.raft_metrics();
        let leader = self.leader();
        // Before taking the view lock, which known_nodes takes too.
        let known_nodes = self.known_nodes();
        let queue_window = self.window_status();
        let admission = self.admission_view();
        let view = self.inner.view.lock().expect("view lock");
        let (mut voters, mut learners) = membership_sets(&metrics);
        let mut term = metrics.current_term;
        let mut commit_index = metrics.last_applied.map(|id| id.index).unwrap_or(0);
        let mut peer_of: BTreeMap<NodeId, String> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.peer_id.clone()))
            .collect();
        peer_of.insert(self.inner.node_id, self.inner.peer_id.clone());
        // Outside Raft (or holding stale membership), the leader's word wins.
        if metrics.current_leader.is_none()
            || !voters.contains(&self.inner.node_id) && !learners.contains(&self.inner.node_id)
        {
            if let Some((advert, _)) = &view.leader_advert {
                if advert.term >= term || metrics.current_leader.is_none() {
                    voters = advert.voters.iter().map(|m| m.node_id).collect();
                    learners = advert.learners.iter().map(|m| m.node_id).collect();
                    for member in advert.voters.iter().chain(&advert.learners) {
                        peer_of.insert(member.node_id, member.peer_id.clone());
                    }
                    term = term.max(advert.term);
                    commit_index = commit_index.max(advert.commit_index);
                }
            }
        }
        let leader_id = leader.as_ref().map(|hint| hint.node_id);
        let role = if self.is_leader() {
            Role::Leader
        } else {
            roles::role_of(self.inner.node_id, leader_id, &voters, &learners)
        };
        let connected: BTreeSet<String> =
            self.inner.network.connected_peers().into_iter().collect();
        let now = self.inner.env.elapsed();
        let peers: Vec<PeerStatus> = view
            .adverts
            .values()
            .filter(|(_, at)| now.saturating_sub(*at) <= self.inner.heartbeat * 20)
            .filter(|(advert, _)| admission.as_ref().is_none_or(|a| a.allows(&advert.peer_id)))
            .map(|(advert, _)| PeerStatus {
                peer_id: advert.peer_id.clone(),
                node_id: advert.node_id,
                name: advert.name.clone(),
                addrs: advert.addrs.clone(),
                capabilities: capabilities_json(&advert.capabilities),
                load: advert.load,
                connected: connected.contains(&advert.peer_id),
            })
            .collect();
        let name_of = |ids: &BTreeSet<NodeId>| -> Vec<String> {
            ids.iter()
                .map(|id| {
                    peer_of
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| format!("node-{id}"))
                })
                .collect()
        };
        StatusView {
            peer_id: self.inner.peer_id.clone(),
            node_id: self.inner.node_id,
            name: self.inner.name.clone(),
            role,
            leader: leader.as_ref().map(|hint| hint.peer_id.clone()),
            leader_node_id: leader_id,
            term,
            voters: name_of(&voters),
            learners: name_of(&learners),
            peers,
            commit_index,
            connected_peers: connected.len(),
            known_nodes,
            capabilities: capabilities_json(&self.capabilities()),
            listen: view
                .listen_addrs
                .iter()
                .map(|addr| format!("{addr}/p2p/{}", self.inner.peer_id))
                .collect(),
            elections_enabled: view.gate.allowed(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            fatal: self.inner.fatal.lock().expect("fatal lock").clone(),
            runtimes: serde_json::to_value(&*self.inner.runtimes.lock().expect("runtimes lock"))
                .unwrap_or_default(),
            queue_window,
            admission: match admission.as_deref() {
                Some(view) if view.open => "open",
                Some(_) => "token",
                None => "pending",
            },
            admission_error: self.admission_refusal(),
        }
    }

    /// Peer addresses worth remembering for the next start (`.../p2p/<peer>`).
    pub fn peers_to_remember(&self) -> Vec<String> {
        let view = self.inner.view.lock().expect("view lock");
        let mut out: Vec<String> = view
            .adverts
            .values()
            .flat_map(|(advert, _)| {
                advert
                    .addrs
                    .iter()
                    .map(move |addr| format!("{addr}/p2p/{}", advert.peer_id))
            })
            .collect();
        out.sort();
        out.dedup();
        out.truncate(64);
        out
    }

    async fn event_loop(self, mut events: mpsc::Receiver<NetworkEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                NetworkEvent::ListenAddr(addr) => self.add_listen_addr(addr),
                NetworkEvent::PeerUp { .. } | NetworkEvent::PeerDown { .. } => {}
                NetworkEvent::Subscribed { topic, .. } => {
                    if topic == ADVERT_TOPIC {
                        self.inner.view.lock().expect("view lock").advert_due = true;
                    }
                }
                NetworkEvent::Message { from, topic, data } => {
                    self.on_message(&from, &topic, &data)
                }
                NetworkEvent::Request {
                    from,
                    budget_ms,
                    data,
                    reply,
                } => {
                    let node = self.clone();
                    self.inner.env.spawn(
                        "request",
                        async move {
                            let budget = Duration::from_millis(u64::from(budget_ms.max(1)));
                            let answer = timeout(
                                node.inner.env.as_ref(),
                                budget,
                                node.on_request(&from, &data),
                            )
                            .await
                            .unwrap_or_else(|elapsed| {
                                NodeResponse::Error(format!("request {elapsed}"))
                            });
                            if let Ok(bytes) = codec::encode(&answer) {
                                let _ = reply.send(bytes);
                            }
                        }
                        .boxed(),
                    );
                }
            }
        }
    }

    fn on_message(&self, from: &str, topic: &str, data: &[u8]) {
        let now = self.inner.env.elapsed();
        match topic {
            ADVERT_TOPIC => {
                if self
                    .refuse(from, crate::admission::RequestKind::Advert, None)
                    .is_some()
                {
                    return;
                }
                let Ok(advert) = codec::decode::<NodeAdvert>(data) else {
                    tracing::debug!("undecodable advert from {from}");
                    return;
                };
                if advert.peer_id != from {
                    return;
                }
                self.inner.addresses.learn(from, &advert.addrs);
                let mut view = self.inner.view.lock().expect("view lock");
                let queued = !advert.queued.is_empty();
                let was_queued = match view.adverts.get_mut(from) {
                    Some(entry) => {
                        let was = !entry.0.queued.is_empty();
                        *entry = (advert, now);
                        was
                    }
                    None => {
                        view.adverts.insert(from.to_string(), (advert, now));
                        false
                    }
                };
                match (was_queued, queued) {
                    (false, true) => view.adverts_with_queue += 1,
                    (true, false) => view.adverts_with_queue -= 1,
                    _ => {}
                }
            }
            LEADER_TOPIC => {
                if self
                    .refuse(from, crate::admission::RequestKind::LeaderAdvert, None)
                    .is_some()
                {
                    return;
                }
                let Ok(advert) = codec::decode::<LeaderAdvert>(data) else {
                    tracing::debug!("undecodable leader advert from {from}");
                    return;
                };
                if advert.leader.peer_id != from {
                    return;
                }
                self.inner.addresses.learn(from, &advert.leader.addrs);
                let mut view = self.inner.view.lock().expect("view lock");
                let held = view
                    .leader_advert
                    .as_ref()
                    .map(|(current, at)| (current.term, now.saturating_sub(*at)));
                let fresh = self.inner.heartbeat * 5;
                if crate::admission::replaces_leader_advert(held, advert.term, fresh) {
                    view.leader_advert = Some((advert, now));
                }
            }
            _ => {}
        }
    }

    async fn on_request(&self, from: &str, data: &[u8]) -> NodeResponse {
        let request = match codec::decode::<NodeRequest>(data) {
            Ok(request) => request,
            Err(error) => return NodeResponse::Error(format!("bad request from {from}: {error}")),
        };
        // One check of who sent it, then one guard for every request only
        // the leader serves.
        if let Some(refusal) = self.refuse_request(from, &request) {
            return refusal;
        }
        if request.leader_only() && !self.is_leader() {
            return NodeResponse::NotLeader {
                leader: self.leader(),
            };
        }
        match request {
            NodeRequest::Raft(payload) => {
                let rpc = match decode_rpc(&payload) {
                    Ok(rpc) => rpc,
                    Err(error) => return NodeResponse::Raft(refusal_reply(&error)),
                };
                // The vote inside names the leader or candidate; it must be
                // the sender's own id, or a member could speak for another.
                let refused = match rpc.speaker() {
                    Some(speaker) => {
                        self.refuse(from, crate::admission::RequestKind::Raft, Some(speaker))
                    }
                    None => Some(crate::admission::Refusal::WrongNode.as_str()),
                };
                if let Some(reason) = refused {
                    return NodeResponse::Forbidden(reason.to_string());
                }
                NodeResponse::Raft(serve_rpc(&self.inner.raft, rpc).await)
            }
            NodeRequest::Join(mut record) => {
                if record.peer_id != from {
                    return NodeResponse::Error("a node may only register itself".into());
                }
                record.registered_ms = self.inner.env.now_ms();
                record.last_heartbeat_ms = record.registered_ms;
                self.note_heard(record.node_id, record.load);
                match self.write(Command::RegisterNode(record)).await {
                    Ok(CommandResponse::Ok) => NodeResponse::Ack,
                    Ok(CommandResponse::Rejected(reason)) => NodeResponse::Error(reason),
                    Ok(other) => NodeResponse::Error(format!("unexpected answer {other:?}")),
                    Err(error) => NodeResponse::Error(error.to_string()),
                }
            }
            NodeRequest::Heartbeat {
                node_id,
                load,
                holding,
                running,
                window,
                admission,
            } => {
                self.note_heard(node_id, load);
                self.note_window(node_id, window);
                let registered = self.state(|state| {
                    state
                        .nodes
                        .get(&node_id)
                        .is_some_and(|node| node.peer_id == from && !node.left)
                });
                if !registered {
                    // Not (yet) this peer's registered id: no tasks to reconcile.
                    return NodeResponse::HeartbeatAck {
                        registered,
                        missing: Vec::new(),
                        revoked: Vec::new(),
                        admission: self.view_for(admission),
                    };
                }
                let (missing, revoked) = self.reconcile(node_id, &holding, &running);
                NodeResponse::HeartbeatAck {
                    registered,
                    missing,
                    revoked,
                    admission: self.view_for(admission),
                }
            }
            NodeRequest::Submit {
                name,
                tasks,
                idempotency_key,
                max_fix_rounds,
                budget_ms,
            } => {
                let hint = (from.to_string(), self.inner.addresses.merged(from, &[]));
                let budget =
                    Duration::from_millis(budget_ms).min(crate::messages::MAX_LEADER_SUBMIT_BUDGET);
                let submitted = timeout(
                    self.inner.env.as_ref(),
                    budget,
                    self.leader_submit(Some(hint), name, tasks, idempotency_key, max_fix_rounds),
                )
                .await;
                match submitted {
                    Ok(Ok(id)) => NodeResponse::MissionCreated(id),
                    Ok(Err(error)) => NodeResponse::Refused(error),
                    Err(elapsed) => NodeResponse::Refused(SubmitError::MaybeCommitted(format!(
                        "the leader did not finish within {elapsed}; the mission may have been \
                         committed: resubmit with the same Idempotency-Key"
                    ))),
                }
            }
            NodeRequest::ListMissions { after, limit } => {
                match self.missions_page(after, limit as usize).await {
                    Ok(page) => NodeResponse::MissionList(page.to_string()),
                    Err(error) => NodeResponse::Error(error),
                }
            }
            NodeRequest::GetMissionView {
                id,
                with_tasks,
                known,
                offset,
            } => self.relay_view(&id, with_tasks, known, offset).await,
            NodeRequest::GetTaskResult { mission, task } => {
                NodeResponse::TaskResult(self.state(|state| {
                    state
                        .missions
                        .get(&mission)
                        .and_then(|m| m.tasks.get(task.as_str()))
                        .and_then(|t| t.files())
                        .map(Box::new)
                }))
            }
            NodeRequest::Control { mission, action } => {
                match self.leader_control(&mission, action).await {
                    Ok(()) => NodeResponse::Ack,
                    Err(SubmitError::NotFound(_)) => NodeResponse::NoMission,
                    Err(error) => NodeResponse::Refused(error),
                }
            }
            NodeRequest::Assign(assignments) => {
                self.accept_assignments(assignments);
                NodeResponse::Ack
            }
            NodeRequest::Revoke(held) => {
                self.revoke(&held);
                NodeResponse::Ack
            }
            NodeRequest::Reports {
                node_id,
                reports,
                window,
            } => {
                if !self.node_is(node_id, from) {
                    return NodeResponse::Error(format!("node {node_id} is not {from}"));
                }
                self.note_window(node_id, window);
                NodeResponse::Answers(self.on_reports(node_id, reports).await)
            }
            NodeRequest::StealAsk {
                request,
                capabilities,
            } => {
                // The thief must be who it says: its advert ties id and peer.
                let genuine = self
                    .inner
                    .view
                    .lock()
                    .expect("view lock")
                    .adverts
                    .get(from)
                    .is_some_and(|(advert, _)| advert.node_id == request.thief);
                if !genuine {
                    return NodeResponse::Stolen(Vec::new());
                }
                self.on_steal_ask(request, capabilities).await
            }
            NodeRequest::CommitSteal {
                from: victim,
                to,
                tasks,
            } => {
                if !self.node_is(victim, from) {
                    return NodeResponse::Error(format!("node {victim} is not {from}"));
                }
                let (from, to) = (victim, to);
                NodeResponse::StealCommitted(self.commit_steal(from, to, &tasks).await)
            }
            NodeRequest::GetBlob {
                digest,
                offset,
                len,
            } => self.blob_chunk(&digest, offset, len),
            NodeRequest::Leave { node_id } => match self.remove_member(node_id).await {
                Ok(()) => NodeResponse::Ack,
                Err(error) => NodeResponse::Error(error),
            },
            NodeRequest::AdmitChallenge => self.admit_challenge(from),
            NodeRequest::AdmitProve {
                token,
                challenge,
                proof,
            } => self.admit_prove(from, token, challenge, proof).await,
            NodeRequest::Admission(action) => self.admission_action(action).await,
        }
    }

    fn blob_chunk(&self, digest: &str, offset: u64, len: u32) -> NodeResponse {
        let Ok(digest) = digest.parse::<Digest>() else {
            return NodeResponse::Error(format!("not a digest: {digest}"));
        };
        match self.inner.blobs.get(&digest) {
            Ok(None) => NodeResponse::BlobChunk(None),
            Ok(Some(bytes)) => {
                let start = (offset as usize).min(bytes.len());
                let end = start
                    .saturating_add(len.min(BLOB_CHUNK_BYTES) as usize)
                    .min(bytes.len());
                NodeResponse::BlobChunk(Some(BlobChunk {
                    total: bytes.len() as u64,
                    bytes: bytes[start..end].to_vec(),
                }))
            }
            Err(error) => NodeResponse::Error(error.to_string()),
        }
    }

    /// The blob store of this node.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The bytes of `digest`: from this node's store, else fetched in
    /// chunks from a connected peer that holds it, verified and kept.
    pub async fn fetch_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, String> {
        self.fetch_blob_from(digest, &[]).await
    }

    /// Like [`Node::fetch_blob`], asking the `hints` (dialed if need be) before
    /// the connected peers.
    pub async fn fetch_blob_from(
        &self,
        digest: &Digest,
        hints: &[BlobHint],
    ) -> Result<Option<Vec<u8>>, String> {
        if let Some(bytes) = self.inner.blobs.get(digest).map_err(|e| e.to_string())? {
            return Ok(Some(bytes));
        }
        let mut peers: Vec<LeaderHint> = hints
            .iter()
            .filter(|(peer, _)| *peer != self.inner.peer_id)
            .map(|(peer, addrs)| LeaderHint {
                node_id: 0,
                peer_id: peer.clone(),
                addrs: addrs.clone(),
            })
            .collect();
        for peer in self.inner.network.connected_peers() {
            if !peers.iter().any(|hint| hint.peer_id == peer) {
                peers.push(LeaderHint {
                    node_id: 0,
                    peer_id: peer,
                    addrs: Vec::new(),
                });
            }
        }
        for hint in peers {
            let mut bytes = Vec::new();
            let complete = loop {
                let request = NodeRequest::GetBlob {
                    digest: digest.to_string(),
                    offset: bytes.len() as u64,
                    len: BLOB_CHUNK_BYTES,
                };
                match self.ask(&hint, &request).await {
                    Ok(NodeResponse::BlobChunk(Some(chunk))) => {
                        if chunk.total > self.inner.blobs.max_blob_bytes() {
                            break false;
                        }
                        let done = chunk.bytes.is_empty();
                        bytes.extend_from_slice(&chunk.bytes);
                        if bytes.len() as u64 >= chunk.total {
                            break true;
                        }
                        if done {
                            break false;
                        }
                    }
                    _ => break false,
                }
            };
            if complete && Digest::of(&bytes) == *digest {
                self.inner.blobs.put(&bytes).map_err(|e| e.to_string())?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// Leader: the queue window `node_id` asks for, bounded.
    fn note_window(&self, node_id: NodeId, window: Option<u32>) {
        let mut view = self.inner.view.lock().expect("view lock");
        match window {
            Some(window) => {
                let bounded = window.min(crate::scheduler::window::MAX_ADVERTISED);
                view.windows.insert(node_id, bounded);
            }
            None => {
                view.windows.remove(&node_id);
            }
        }
    }

    fn note_heard(&self, node_id: NodeId, load: Load) {
        let now = self.inner.env.elapsed();
        let mut view = self.inner.view.lock().expect("view lock");
        view.heard.insert(node_id, (now, load));
        view.pending_heartbeats.insert(node_id, load);
    }

    /// Commits `command` through Raft (batched with concurrent writes) and
    /// returns its answer. Only the leader can write.
    pub async fn write(
        &self,
        command: Command,
    ) -> Result<CommandResponse, crate::propose::WriteError> {
        timeout(
            self.inner.env.as_ref(),
            WRITE_DEADLINE,
            self.inner.proposer.propose(command),
        )
        .await
        .map_err(|elapsed| {
            crate::propose::WriteError::Uncertain(format!("write not committed: {elapsed}"))
        })?
    }

    /// Runs `job` off the async runtime that serves Raft and the network
    /// (parsing, validation, hashing, building large answers), through the
    /// Env seam so the simulation runs it in line.
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        crate::env::off_runtime(self.inner.env.as_ref(), job).await
    }

    /// Runs `job` in line when `small` (a job of microseconds costs less
    /// than the hop to a blocking thread and back), else [`Node::off_runtime`].
    pub async fn off_runtime_unless<T: Send + 'static>(
        &self,
        small: bool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        if small {
            job()
        } else {
            self.off_runtime(job).await
        }
    }

    /// Leader: records that `node_id` left and takes it out of the membership.
    async fn remove_member(&self, node_id: NodeId) -> Result<(), String> {
        let at_ms = self.inner.env.now_ms();
        // An unknown node (rejected) may still hold a membership slot: go on.
        self.write(Command::NodeLeft { node_id, at_ms }).await?;
        let metrics = self.raft_metrics();
        let (voters, learners) = membership_sets(&metrics);
        if voters.contains(&node_id) && voters.len() > 1 {
            let remaining: BTreeSet<NodeId> =
                voters.iter().copied().filter(|id| *id != node_id).collect();
            self.change_membership(ChangeMembers::ReplaceAllVoters(remaining))
                .await?;
        } else if learners.contains(&node_id) {
            self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])))
                .await?;
        }
        Ok(())
    }

    /// The leader's autopilot runs more often than the tick so a new mesh
    /// forms its voter set quickly; it is a pure decision over local data.
    async fn autopilot_loop(self) {
        let period = (self.inner.heartbeat / 5).max(Duration::from_millis(50));
        while !self.inner.stopped.load(Ordering::SeqCst) {
            let nap = jitter(self.inner.env.as_ref(), period * 9 / 10, period * 11 / 10);
            self.inner.env.sleep(nap).await;
            let metrics = self.raft_metrics();
            self.break_split_votes(&metrics, self.inner.env.elapsed());
            if metrics.state == ServerState::Leader
                && metrics.current_leader == Some(self.inner.node_id)
            {
                self.run_autopilot(&metrics, self.inner.env.elapsed());
            }
        }
    }

    /// Split votes: a node a candidate for two election timeouts pauses
    /// its own elections for a random while ([`ElectionGate`]).
    fn break_split_votes(&self, metrics: &openraft::RaftMetrics<NodeId, MeshNode>, now: Duration) {
        let max = self.inner.election_timeout_max;
        let mut pause_ms = None;
        let change = self
            .inner
            .view
            .lock()
            .expect("view lock")
            .gate
            .on_candidacy(
                now,
                metrics.state == ServerState::Candidate,
                max * 2,
                || {
                    let pause = jitter(self.inner.env.as_ref(), max / 2, max * 2);
                    pause_ms = Some(pause.as_millis() as u64);
                    pause
                },
            );
        if let Some(pause_ms) = pause_ms {
            tracing::info!(pause_ms, "split vote: pausing elections");
        }
        if let Some(elect) = change {
            self.inner.raft.runtime_config().elect(elect);
        }
    }

    /// Forgets adverts of peers silent for [`ADVERT_TTL`] and of peers the
    /// mesh does not admit (revoked, or off the allowlist), so the map holds
    /// the live mesh, not everyone ever heard.
    fn prune_adverts(&self, now: Duration) {
        let admission = self.admission_view();
        let heard = |peer: &str| {
            admission.as_deref().is_none_or(|view| {
                !view.revoked.contains(peer) && (view.open || view.admitted.contains(peer))
            })
        };
        let mut view = self.inner.view.lock().expect("view lock");
        let before = view.adverts.len();
        view.adverts
            .retain(|peer, (_, at)| now.saturating_sub(*at) < ADVERT_TTL && heard(peer));
        if view.adverts.len() != before {
            view.adverts_with_queue = view
                .adverts
                .values()
                .filter(|(advert, _)| !advert.queued.is_empty())
                .count();
        }
    }

    async fn tick_loop(self) {
        let mut tick: u64 = 0;
        while !self.inner.stopped.load(Ordering::SeqCst) {
            let period = jitter(
                self.inner.env.as_ref(),
                self.inner.heartbeat * 9 / 10,
                self.inner.heartbeat * 11 / 10,
            );
            self.inner.env.sleep(period).await;
            tick += 1;
            self.tick(tick);
        }
    }

    fn tick(&self, tick: u64) {
        // A node whose Raft core died sends nothing that looks healthy: no
        // heartbeats, adverts or announcements, so the leader replaces it.
        if self.fatal().is_some() {
            return;
        }
        let metrics = self.raft_metrics();
        let now = self.inner.env.elapsed();
        let leading = metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.inner.node_id);
        self.update_metrics(&metrics);
        self.track_leader(&metrics, leading, now);
        self.refresh_admission();
        if leading {
            self.guard_new_mesh();
        }
        self.gate_elections(&metrics, now);
        // Adverts carry load and queued tasks: sent when they change, else
        // every 4th tick while tasks wait here (thieves need a fresh view)
        // and every 16th when idle (peers only need to know the node is up;
        // this bounds the all-to-all gossip of a large mesh).
        let refresh = if self.load().queued > 0 { 4 } else { 16 };
        let due = std::mem::take(&mut self.inner.view.lock().expect("view lock").advert_due);
        self.publish_advert(due || tick.is_multiple_of(refresh));
        if leading {
            self.publish_leader_advert(&metrics);
            if tick.is_multiple_of(10) {
                self.flush_heartbeats();
                // The leader holds tasks too; reconcile them like anyone's.
                let (missing, revoked) =
                    self.reconcile(self.inner.node_id, &self.holding(), &self.running_tasks());
                self.revoke(&revoked);
                if !missing.is_empty() {
                    self.accept_assignments(missing);
                }
            }
            self.ensure_self_registered();
        } else if let Some(leader) = self.leader() {
            self.send_heartbeat(leader);
        }
        if tick.is_multiple_of(20) {
            self.prune_adverts(now);
        }
        self.reconnect_if_alone(now);
        self.keep_members_connected(&metrics, now);
        if self.inner.steal {
            self.try_steal();
        }
    }

    /// Holds a connection to every Raft member (ours and the leader's view),
    /// so elections never depend on a connection through the dead leader.
    fn keep_members_connected(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, MeshNode>,
        now: Duration,
    ) {
        let mut members: BTreeMap<PeerName, Vec<String>> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.inner.node_id)
            .map(|(_, node)| (node.peer_id.clone(), node.addrs.clone()))
            .collect();
        {
            let view = self.inner.view.lock().expect("view lock");
            if let Some((advert, _)) = &view.leader_advert {
                for member in advert.voters.iter().chain(&advert.learners) {
                    if member.node_id != self.inner.node_id {
                        members.entry(member.peer_id.clone()).or_default();
                    }
                }
            }
        }
        let mut view = self.inner.view.lock().expect("view lock");
        for (peer, known) in members {
            if self.inner.network.is_connected(&peer) {
                continue;
            }
            let due = view.member_dials.get(&peer).is_none_or(|at| now >= *at);
            if !due {
                continue;
            }
            view.member_dials
                .insert(peer.clone(), now + Duration::from_secs(2));
            for addr in self.inner.addresses.merged(&peer, &known) {
                if let Err(error) = self.inner.network.dial(&format!("{addr}/p2p/{peer}")) {
                    tracing::debug!("cannot dial member {peer} at {addr}: {error}");
                }
            }
        }
    }

    fn update_metrics(&self, metrics: &openraft::RaftMetrics<NodeId, MeshNode>) {
        let m = &self.inner.metrics;
        m.raft_term.set(metrics.current_term as i64);
        m.raft_is_leader
            .set(i64::from(metrics.state == ServerState::Leader));
        m.raft_commit_index
            .set(metrics.last_applied.map(|id| id.index).unwrap_or(0) as i64);
        m.raft_voters
            .set(metrics.membership_config.membership().voter_ids().count() as i64);
        m.known_nodes.set(self.known_nodes() as i64);
    }

    fn track_leader(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, MeshNode>,
        leading: bool,
        now: Duration,
    ) {
        let leader = self.leader().map(|hint| hint.node_id);
        let mut view = self.inner.view.lock().expect("view lock");
        if leader.is_some() {
            view.last_leader_seen = now;
        }
        if leader != view.last_leader {
            if leader.is_some() {
                self.inner.metrics.leader_changes.inc();
                tracing::info!(leader = ?leader, term = metrics.current_term, "leader changed");
            }
            view.last_leader = leader;
            view.registered = false;
        }
        match (leading, view.leader_since) {
            (true, None) => {
                view.leader_since = Some(now);
                view.heard.clear();
                view.replication.reset();
                view.membership_change_in_flight = false;
                // Scheduling starts now rather than at the next idle wake-up.
                self.inner.wake.notify_one();
            }
            (false, Some(_)) => view.leader_since = None,
            _ => {}
        }
    }

    fn gate_elections(&self, metrics: &openraft::RaftMetrics<NodeId, MeshNode>, now: Duration) {
        let (voters, _) = membership_sets(metrics);
        let mut view = self.inner.view.lock().expect("view lock");
        let announced = view
            .leader_advert
            .as_ref()
            .map(|(advert, _)| AnnouncedMembership {
                term: advert.term,
                voters: advert.voters.iter().map(|m| m.node_id).collect(),
                learners: advert.learners.iter().map(|m| m.node_id).collect(),
            });
        let input = GateInput {
            me: self.inner.node_id,
            term: metrics.current_term,
            locally_voter: voters.contains(&self.inner.node_id),
            leader_known: metrics.current_leader.is_some(),
            announced: announced.as_ref(),
            ms_without_leader: now.saturating_sub(view.last_leader_seen).as_millis() as u64,
            quiet_ms: self.inner.quiet_before_election.as_millis() as u64,
        };
        let before = view.gate.allowed();
        let change = view.gate.on_membership(&input);
        let allowed = view.gate.allowed();
        if allowed != before {
            tracing::info!(
                allowed,
                "elections {}",
                if allowed {
                    "enabled"
                } else {
                    "held back: the leader does not list this node as a voter"
                }
            );
        }
        if let Some(elect) = change {
            self.inner.raft.runtime_config().elect(elect);
        }
    }

    fn publish_advert(&self, even_if_unchanged: bool) {
        let advert = NodeAdvert {
            node_id: self.inner.node_id,
            peer_id: self.inner.peer_id.clone(),
            name: self.inner.name.clone(),
            addrs: self.listen_addrs(),
            capabilities: self.capabilities(),
            load: self.load(),
            queued: self.advertised_queue(),
        };
        {
            let mut view = self.inner.view.lock().expect("view lock");
            if !even_if_unchanged && view.last_advert.as_ref() == Some(&advert) {
                return;
            }
            view.last_advert = Some(advert.clone());
        }
        if let Ok(bytes) = codec::encode(&advert) {
            self.inner.network.publish(ADVERT_TOPIC, bytes);
        }
    }

    fn publish_leader_advert(&self, metrics: &openraft::RaftMetrics<NodeId, MeshNode>) {
        let membership = metrics.membership_config.membership();
        let member = |id: NodeId| Member {
            node_id: id,
            peer_id: membership
                .get_node(&id)
                .map(|node| node.peer_id.clone())
                .unwrap_or_default(),
        };
        let advert = LeaderAdvert {
            leader: LeaderHint {
                node_id: self.inner.node_id,
                peer_id: self.inner.peer_id.clone(),
                addrs: self.listen_addrs(),
            },
            term: metrics.current_term,
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
            commit_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
        };
        if let Ok(bytes) = codec::encode(&advert) {
            self.inner.network.publish(LEADER_TOPIC, bytes);
        }
        let now = self.inner.env.elapsed();
        self.inner.view.lock().expect("view lock").leader_advert = Some((advert, now));
    }

    fn run_autopilot(&self, metrics: &openraft::RaftMetrics<NodeId, MeshNode>, now: Duration) {
        let (voters, learners) = membership_sets(metrics);
        // A leader that is leaving, or that already removed itself from the
        // voters (it steps down once that commits), changes nothing more:
        // openraft 0.9 panics on a membership change in that window.
        if !voters.contains(&self.inner.node_id)
            || self.inner.view.lock().expect("view lock").gate.leaving()
        {
            return;
        }
        let last_index = metrics.last_log_index.unwrap_or(0);
        let matched: BTreeMap<NodeId, u64> = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| (*id, matched.map(|id| id.index).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let caught_up: BTreeSet<NodeId> = matched
            .iter()
            .filter(|(_, index)| *index + CAUGHT_UP_ENTRIES >= last_index)
            .map(|(id, _)| *id)
            .collect();
        let registry: BTreeMap<NodeId, (bool, MeshNode)> = self.state(|state| {
            state
                .nodes
                .values()
                .map(|node| {
                    let member = MeshNode {
                        peer_id: node.peer_id.clone(),
                        addrs: node.addrs.clone(),
                    };
                    // A revoked peer counts as gone: it is never added back.
                    let gone = node.left || !state.admission.allows(&node.peer_id);
                    (node.node_id, (gone, member))
                })
                .collect()
        });
        // Membership records addresses at join time; when a member's registry
        // entry says it now listens elsewhere (a restart on new ports), the
        // leader rewrites them so every member can reach it again.
        let stale: BTreeMap<NodeId, MeshNode> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(id, node)| {
                let (_, fresh) = registry.get(id)?;
                (!fresh.addrs.is_empty()
                    && fresh.addrs != node.addrs
                    && fresh.peer_id == node.peer_id)
                    .then(|| (*id, fresh.clone()))
            })
            .collect();
        let action = {
            let mut view = self.inner.view.lock().expect("view lock");
            // Until the tick has noted our leadership (and forgotten what an
            // earlier term heard), silence means nothing.
            let Some(since) = view.leader_since else {
                return;
            };
            let now_ms = now.as_millis() as u64;
            view.replication
                .observe(now_ms, last_index, CAUGHT_UP_ENTRIES, &matched);
            let grace_ms = self.inner.voter_grace.as_millis() as u64;
            let stalled: BTreeSet<NodeId> = view
                .replication
                .stalled(now_ms, grace_ms)
                .intersection(&voters)
                .copied()
                .collect();
            if view.membership_change_in_flight {
                return;
            }
            for id in &stalled {
                if view.stalled_reported.insert(*id) {
                    tracing::warn!(
                        node = id,
                        "voter {id}'s log has not advanced for {} s while behind the leader; replacing it if a standby is ready",
                        grace_ms / 1000
                    );
                }
            }
            view.stalled_reported.retain(|id| stalled.contains(id));
            let mut health = BTreeMap::new();
            for id in registry.keys().chain(voters.iter()).chain(learners.iter()) {
                let heard_at = view
                    .heard
                    .get(id)
                    .map(|(at, _)| *at)
                    .unwrap_or(since)
                    .max(since);
                let left = registry.get(id).is_some_and(|(left, _)| *left);
                health.insert(
                    *id,
                    Health {
                        silent_ms: Some(now.saturating_sub(heard_at).as_millis() as u64),
                        left,
                    },
                );
            }
            // A node the registry does not know cannot be added: we lack its address.
            let input = AutopilotInput {
                leader: self.inner.node_id,
                target_voters: self.inner.target_voters,
                target_standbys: STANDBYS,
                voters,
                learners,
                caught_up,
                stalled,
                health: health
                    .into_iter()
                    .filter(|(id, _)| {
                        registry.contains_key(id)
                            || metrics
                                .membership_config
                                .membership()
                                .get_node(id)
                                .is_some()
                    })
                    .map(|(id, mut health)| {
                        // Nodes we never heard from since leading count as heard at
                        // `since`; nodes we heard from are live only if recent.
                        if !view.heard.contains_key(&id) && id != self.inner.node_id {
                            health.silent_ms = health.silent_ms.map(|ms| ms.max(1));
                        }
                        (id, health)
                    })
                    .collect(),
                live_ms: (self.inner.heartbeat * 6).as_millis() as u64,
                grace_ms,
            };
            let action = roles::autopilot(&input);
            if action.is_some() || !stale.is_empty() {
                view.membership_change_in_flight = true;
            }
            action
        };
        let change = match action {
            Some(AutopilotAction::AddLearners(ids)) => ChangeMembers::AddNodes(
                ids.iter()
                    .filter_map(|id| registry.get(id).map(|(_, member)| (*id, member.clone())))
                    .collect(),
            ),
            Some(AutopilotAction::SetVoters(voters)) => ChangeMembers::ReplaceAllVoters(voters),
            Some(AutopilotAction::RemoveLearners(ids)) => ChangeMembers::RemoveNodes(ids),
            None if !stale.is_empty() => ChangeMembers::SetNodes(stale),
            None => return,
        };
        self.spawn_membership_change(change);
    }

    /// Commits one autopilot membership change in the background; the next
    /// may start when it ends.
    fn spawn_membership_change(&self, change: ChangeMembers<NodeId, MeshNode>) {
        let node = self.clone();
        self.inner.env.spawn(
            "autopilot",
            async move {
                let what = format!("{change:?}");
                tracing::info!(change = %what, "autopilot");
                match node.change_membership(change).await {
                    Ok(()) => node.inner.metrics.autopilot_changes.inc(),
                    Err(error) => {
                        tracing::warn!(change = %what, "autopilot change failed: {error}")
                    }
                }
                node.inner
                    .view
                    .lock()
                    .expect("view lock")
                    .membership_change_in_flight = false;
            }
            .boxed(),
        );
    }

    fn flush_heartbeats(&self) {
        let nodes: Vec<(NodeId, Load)> = {
            let mut view = self.inner.view.lock().expect("view lock");
            std::mem::take(&mut view.pending_heartbeats)
                .into_iter()
                .collect()
        };
        if nodes.is_empty() {
            return;
        }
        let at_ms = self.inner.env.now_ms();
        let node = self.clone();
        self.inner.env.spawn(
            "heartbeat-batch",
            async move {
                if let Err(error) = node.write(Command::Heartbeats { at_ms, nodes }).await {
                    tracing::debug!("heartbeat batch not committed: {error}");
                }
            }
            .boxed(),
        );
    }

    fn ensure_self_registered(&self) {
        let addrs = self.listen_addrs();
        let capabilities = self.capabilities();
        let known = self.state(|state| {
            state.nodes.get(&self.inner.node_id).is_some_and(|node| {
                !node.left && node.addrs == addrs && node.capabilities == capabilities
            })
        });
        let mut view = self.inner.view.lock().expect("view lock");
        if known || view.registered || view.listen_addrs.is_empty() {
            return;
        }
        view.registered = true;
        drop(view);
        let node = self.clone();
        let record = self.record();
        self.inner.env.spawn(
            "register-self",
            async move {
                if let Err(error) = node.write(Command::RegisterNode(Box::new(record))).await {
                    tracing::debug!("self registration not committed: {error}");
                    node.inner.view.lock().expect("view lock").registered = false;
                }
            }
            .boxed(),
        );
    }

    async fn ask(&self, to: &LeaderHint, request: &NodeRequest) -> Result<NodeResponse, String> {
        self.ask_within(to, request, CONTROL_DEADLINE).await
    }

    /// [`Node::ask`] with its own deadline.
    async fn ask_within(
        &self,
        to: &LeaderHint,
        request: &NodeRequest,
        deadline: Duration,
    ) -> Result<NodeResponse, String> {
        let bytes = codec::encode(request).map_err(|e| e.to_string())?;
        let addrs = self.inner.addresses.merged(&to.peer_id, &to.addrs);
        let network = &self.inner.network;
        let reply = if request.rides_channel() {
            network.call(&to.peer_id, &addrs, bytes, deadline)
        } else {
            network.request(&to.peer_id, &addrs, bytes, deadline)
        };
        let reply = reply.await.map_err(|e| e.to_string())?;
        codec::decode(&reply).map_err(|e| e.to_string())
    }

    fn send_heartbeat(&self, leader: LeaderHint) {
        let node = self.clone();
        self.inner.env.spawn(
            "heartbeat",
            async move {
                let request = NodeRequest::Heartbeat {
                    node_id: node.inner.node_id,
                    load: node.load(),
                    holding: node.holding(),
                    running: node.running_tasks(),
                    window: node.window(),
                    admission: node.admission_stamp(),
                };
                let mut answer = node.ask(&leader, &request).await;
                if let Ok(NodeResponse::HeartbeatAck { admission, .. }) = &mut answer {
                    // Raft members read admission from their replica.
                    if let Some(view) = admission.take() {
                        if !node.is_member() {
                            node.install_view(*view);
                        }
                    }
                }
                if let Ok(NodeResponse::Forbidden(reason)) = &answer {
                    if reason == crate::admission::Refusal::NotAdmitted.as_str() {
                        node.on_not_admitted(leader.clone());
                    }
                }
                if let Ok(NodeResponse::HeartbeatAck {
                    missing, revoked, ..
                }) = &answer
                {
                    if !revoked.is_empty() {
                        node.revoke(revoked);
                    }
                    if !missing.is_empty() {
                        tracing::info!(tasks = missing.len(), "the leader restored assignments");
                        node.accept_assignments(missing.clone());
                    }
                }
                match answer {
                    Ok(NodeResponse::HeartbeatAck { registered, .. }) => {
                        // Unknown to the leader: join (at once the first
                        // time, then now and then). Known, but with
                        // capabilities that changed since (`set_capability_tag`):
                        // join again so its registry, and placement, follow.
                        let stale = {
                            let mut view = node.inner.view.lock().expect("view lock");
                            !std::mem::replace(&mut view.registered, true)
                        };
                        let join =
                            stale || (!registered && node.inner.env.random_u64().is_multiple_of(4));
                        if join {
                            match node
                                .ask(&leader, &NodeRequest::Join(Box::new(node.record())))
                                .await
                            {
                                Ok(NodeResponse::Ack) => {
                                    tracing::info!(leader = %leader.peer_id, "joined the mesh")
                                }
                                other => {
                                    tracing::debug!("join answered {other:?}");
                                    node.inner.view.lock().expect("view lock").registered = false;
                                }
                            }
                        }
                    }
                    Ok(other) => tracing::debug!("heartbeat answered {other:?}"),
                    Err(error) => tracing::debug!("heartbeat to {}: {error}", leader.peer_id),
                }
            }
            .boxed(),
        );
    }

    fn reconnect_if_alone(&self, now: Duration) {
        if self.inner.network.has_peers() {
            let mut view = self.inner.view.lock().expect("view lock");
            view.seed_backoff = Duration::from_millis(250);
            return;
        }
        let mut candidates: Vec<String> = self.inner.seeds.clone();
        let metrics = self.raft_metrics();
        for (id, node) in metrics.membership_config.membership().nodes() {
            if *id != self.inner.node_id {
                candidates.extend(
                    node.addrs
                        .iter()
                        .map(|addr| format!("{addr}/p2p/{}", node.peer_id)),
                );
            }
        }
        if candidates.is_empty() {
            return;
        }
        let mut view = self.inner.view.lock().expect("view lock");
        if now < view.next_seed_dial {
            return;
        }
        let backoff = view.seed_backoff;
        view.next_seed_dial = now + jitter(self.inner.env.as_ref(), backoff, backoff * 3 / 2);
        view.seed_backoff = (backoff * 2).min(Duration::from_secs(10));
        drop(view);
        tracing::info!(
            retry_in_ms = backoff.as_millis() as u64,
            "no peer connected; dialing {} known address(es)",
            candidates.len()
        );
        for addr in candidates {
            if let Err(error) = self.inner.network.dial(&addr) {
                tracing::warn!("cannot dial {addr}: {error}");
            }
        }
    }

    /// Drains: leaves the voter set (the leader refills it) within `grace`,
    /// then stops Raft. Called on SIGTERM.
    pub async fn drain(&self, grace: Duration) {
        self.drain_tasks(grace / 2).await;
        if let Some(elect) = self.inner.view.lock().expect("view lock").gate.leave() {
            self.inner.raft.runtime_config().elect(elect);
        }
        let env = self.inner.env.clone();
        let node = self.clone();
        let leave = async move {
            loop {
                let metrics = node.raft_metrics();
                let (voters, learners) = membership_sets(&metrics);
                let member =
                    voters.contains(&node.inner.node_id) || learners.contains(&node.inner.node_id);
                if node.is_leader() && !voters.contains(&node.inner.node_id) {
                    // Handed over already; the new voters elect a leader
                    // once this change commits. Nothing more to change.
                    return;
                } else if node.is_leader() {
                    match node.hand_over_leadership(&voters).await {
                        Ok(()) => return,
                        Err(error) => tracing::warn!("hand-over failed: {error}"),
                    }
                } else if let Some(leader) = node.leader() {
                    match node
                        .ask(
                            &leader,
                            &NodeRequest::Leave {
                                node_id: node.inner.node_id,
                            },
                        )
                        .await
                    {
                        // The leader answers once the membership change committed.
                        Ok(NodeResponse::Ack) => return,
                        other => tracing::info!("leave answered {other:?}"),
                    }
                } else if !member {
                    // A worker that knows no leader has nothing to hand over.
                    return;
                }
                node.inner.env.sleep(Duration::from_millis(200)).await;
            }
        };
        if timeout(env.as_ref(), grace, leave).await.is_err() {
            tracing::warn!("drain grace period passed; stopping anyway");
        }
        self.stop().await;
    }

    async fn hand_over_leadership(&self, voters: &BTreeSet<NodeId>) -> Result<(), String> {
        let at_ms = self.inner.env.now_ms();
        let _ = self
            .write(Command::NodeLeft {
                node_id: self.inner.node_id,
                at_ms,
            })
            .await;
        let metrics = self.raft_metrics();
        let (_, learners) = membership_sets(&metrics);
        let mut remaining: BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|id| *id != self.inner.node_id)
            .collect();
        if let Some(standby) = learners.iter().next() {
            remaining.insert(*standby);
        }
        if remaining.is_empty() {
            // The last voter cannot leave its own mesh; it just stops.
            return Ok(());
        }
        self.change_membership(ChangeMembers::ReplaceAllVoters(remaining))
            .await
    }

    /// Stops the loops and Raft.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {error}");
        }
    }
}
