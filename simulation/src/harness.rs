//! The harness: many real nodes (`coditect_node::runtime::Node` with real
//! openraft, registry, placement, stealing and retries) in one process, on
//! the simulated seams: [`SimEnv`] for time and randomness, the [`Bus`] for
//! the network, [`SimDisk`] (`MemKv` with a modelled device time) for
//! storage and [`SimRunner`] for task runs. It
//! forms a mesh, submits a task workload, applies the seeded nemesis,
//! samples every live node for the invariant checkers, heals everything for
//! the last fifth of the run and then checks liveness and convergence.
#![allow(clippy::disallowed_methods)] // the harness drives virtual time itself

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::kv::{InjectedBug, KvStore};
use coditect_consensus::runtime::RaftContext;
use coditect_consensus::{Capabilities, MeshState, NodeId, RaftTiming, SharedState};
use coditect_gossip::NetworkEvent;
use coditect_memory::{codec, BlobStore};
use coditect_node::datadir::node_id_for;
use coditect_node::env::{Env, SharedEnv};
use coditect_node::metrics::NodeMetrics;
use coditect_node::mission::MissionFormat;
use coditect_node::runtime::assembly::{open_raft, NodeSettings, Wiring};
use coditect_node::runtime::Node;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use crate::disk::SimDisk;
use crate::env::SimEnv;
use crate::invariants::{self, Checker, Final, NodeObs, Observation};
use crate::network::{Bus, LinkConfig};
use crate::runner::{SimRunner, TaskModel};
use crate::scenario::{disk_model, schedule, DiskTarget, Fault, Scenario};

/// What to run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Everything random derives from it.
    pub seed: u64,
    /// Nodes at the start.
    pub nodes: usize,
    /// What to exercise.
    pub scenario: Scenario,
    /// Virtual run time, seconds; the last fifth is fault-free.
    pub virtual_secs: u64,
    /// A deliberate bug, to prove the checkers catch it.
    pub bug: Option<InjectedBug>,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct SimOutcome {
    /// Digest of the full event trace.
    pub trace_hash: String,
    /// Events in the trace.
    pub trace_events: u64,
    /// Checker name -> "ok" or the first violation.
    pub invariants: Vec<(String, String)>,
    /// Tasks submitted.
    pub tasks_submitted: usize,
    /// Tasks that ended succeeded (in the leader's state).
    pub tasks_succeeded: usize,
    /// Virtual ms from each leader loss to the next leader.
    pub failovers: Vec<u64>,
    /// The faults as they were applied, with virtual times.
    pub fault_log: Vec<String>,
    /// Nodes that existed during the run (joins included).
    pub nodes_total: usize,
    /// Virtual ms from the first submission until every task had succeeded.
    pub busy_virtual_ms: Option<u64>,
    /// Encoded bytes of the largest Raft log entry any node stored.
    pub largest_raft_entry_bytes: usize,
    /// Bytes of the largest Raft RPC sent.
    pub largest_raft_message_bytes: usize,
    /// Bytes of the largest other node request (a report batch, say).
    pub largest_node_request_bytes: usize,
    /// Bytes of the largest request or response of any kind.
    pub largest_message_bytes: usize,
    /// Model calls recorded in the leader's state (results and
    /// violations), those answered, and `llm_unavailable` violations.
    pub model_calls: (usize, usize, usize),
}

impl SimOutcome {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|(_, verdict)| verdict == "ok")
    }
}

/// Heartbeat of simulated nodes.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often the harness samples nodes for the checkers.
const SAMPLE_EVERY_MS: u64 = 100;
/// How often replica digests are taken (they cost a full encode).
const DIGEST_EVERY_MS: u64 = 2_000;
/// The same in `disk`, whose state holds tens of MB of results: digests
/// would take half of its run time at the usual pace.
const DISK_DIGEST_EVERY_MS: u64 = 4_000;
/// The harness's time step.
const STEP: Duration = Duration::from_millis(10);

struct Slot {
    name: String,
    node_id: NodeId,
    disk: SimDisk,
    env: Arc<SimEnv>,
    runner: Arc<SimRunner>,
    /// The node's language model (the `llm` scenario).
    llm: Option<Arc<coditect_node::llm::service::LlmService>>,
    node: Option<Node>,
    /// The running node's replicated state with the index it reflects.
    replica: Option<SharedState>,
    seed: u64,
    /// When to start it again, if it is down.
    restart_at: Option<u64>,
}

/// A running simulation.
pub struct Sim {
    config: SimConfig,
    bus: Bus,
    slots: Vec<Slot>,
    _scratch: tempfile::TempDir,
    rng: ChaCha8Rng,
    checkers: Vec<Box<dyn Checker>>,
    fault_log: Vec<String>,
    failovers: Vec<u64>,
    /// (virtual ms of the leader loss, term then).
    pending_failover: Option<PendingFailover>,
    submitted: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    /// The live nodes' handles, for background submitters.
    handles: Arc<std::sync::Mutex<BTreeMap<usize, Node>>>,
    heals: Vec<(u64, Heal)>,
    blobs: BlobStore,
    target_voters: usize,
    /// `SIM_DEBUG_SAMPLES`: print every sample's roles and terms.
    debug_samples: bool,
    /// `SIM_DEBUG_FAILOVER`: print the voters every 250 ms while leadership is lost.
    debug_failover: bool,
    /// The last 250 ms step of the failover timeline printed.
    debug_bucket: Option<u64>,
}

/// A leader loss waiting for leadership to come back.
#[derive(Clone, Copy, Debug)]
struct PendingFailover {
    /// Virtual ms of the loss.
    at: u64,
    /// The lost leader's term.
    term: u64,
    /// The lost leader.
    node: NodeId,
    /// Killed (it may come back and resume its term) or cut off (it still
    /// believes it leads, so only a higher term counts).
    killed: bool,
}

#[derive(Clone, Debug)]
enum Heal {
    Links,
    Slow(usize),
    /// The disk of a slot accepts writes again.
    Disk(usize),
    /// The disk of a slot stops stalling.
    Stall(usize),
}

fn peer_name(index: usize) -> String {
    format!("sim-{index:04}")
}

fn address(name: &str) -> String {
    format!("/sim/{name}")
}

impl Sim {
    fn now_ms(&self) -> u64 {
        self.slots[0].env.elapsed().as_millis() as u64
    }

    fn new_slot(&mut self, index: usize) -> Slot {
        let name = peer_name(index);
        let seed = self.rng.gen::<u64>();
        let drift = self.rng.gen_range(-300i64..=300);
        let slowdown = if self.config.scenario == Scenario::Steal && index == 1 {
            8
        } else {
            1
        };
        let disk = SimDisk::new(
            disk_model(self.config.scenario, self.config.seed, index),
            seed,
        );
        if let Some(bug) = self.config.bug {
            disk.kv().inject_bug(bug);
        }
        // `disk` tasks print 192-960 KiB each and all take 1.5 s, so a
        // node's tasks of a wave finish together: a few results fill a Raft
        // entry, and a node's results overflow one report request.
        let model = if self.config.scenario == Scenario::Disk {
            TaskModel {
                min_ms: 1_500,
                max_ms: 1_500,
                slowdown,
                min_output_bytes: 192 * 1024,
                max_output_bytes: 960 * 1024,
            }
        } else {
            TaskModel {
                min_ms: 50,
                max_ms: 600,
                slowdown,
                min_output_bytes: 0,
                max_output_bytes: 0,
            }
        };
        let env = SimEnv::new(seed, drift);
        // In `llm`, every third node has a (modelled) language model.
        let llm = (self.config.scenario == Scenario::Llm && index.is_multiple_of(3)).then(|| {
            let fault_free_from = self.config.virtual_secs.max(5) * 1000 * 4 / 5;
            let provider = crate::model::SimModel::new(seed, env.clone(), fault_free_from);
            let config = coditect_node::llm::RawLlmConfig {
                base_url: Some("http://model.sim/v1".into()),
                model: Some(crate::model::SIM_MODEL.into()),
                max_concurrency: Some(2),
                timeout_ms: Some(5_000),
                requests_per_minute: Some(120),
                probe_ms: Some(2_000),
                ..Default::default()
            }
            .validate()
            .expect("a valid config")
            .expect("a provider");
            let metrics =
                coditect_node::llm::service::LlmMetrics::register(&prometheus::Registry::new())
                    .expect("metrics");
            Arc::new(coditect_node::llm::service::LlmService::new(
                config,
                Arc::new(provider),
                env.clone(),
                metrics,
            ))
        });
        let runner = match &llm {
            Some(llm) => SimRunner::with_llm(seed, model, llm.clone()),
            None => SimRunner::new(seed, model),
        };
        Slot {
            node_id: node_id_for(&name),
            name,
            disk,
            env,
            runner,
            llm,
            node: None,
            replica: None,
            seed,
            restart_at: None,
        }
    }

    /// Starts (or restarts, on its persisted state) the node in slot `index`;
    /// false if it could not start (its disk refuses writes): it exits as
    /// the process would, and is tried again a second later, as its
    /// supervisor would.
    async fn boot(&mut self, index: usize, initialize: bool) -> bool {
        // Real machines never start in the same millisecond: a few ms apart,
        // so Raft's timers are not all in phase (in-phase timers make equal
        // election timeouts collide forever).
        let gap = self.rng.gen_range(0..4u64);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let slot = &self.slots[index];
        let (network, mut unbounded) = self.bus.join(&slot.name);
        let (events_tx, events) = tokio::sync::mpsc::channel::<NetworkEvent>(4096);
        tokio::spawn(async move {
            while let Some(event) = unbounded.recv().await {
                if events_tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        let network: Arc<dyn coditect_gossip::Network> = Arc::new(network);
        let store: Arc<dyn KvStore> = Arc::new(slot.disk.clone());
        let timing = RaftTiming::default();
        let context = RaftContext::seeded(slot.seed ^ self.rng.gen::<u64>());
        let started = open_raft(slot.node_id, &timing, store, &network, context).await;
        let opened = match started {
            Ok(opened) => opened,
            Err(error) => {
                let name = slot.name.clone();
                self.bus.crash(&name);
                let now = self.now_ms();
                let line = format!(
                    "t={:.1}s {name} cannot start ({error}); its supervisor tries again in 1 s",
                    now as f64 / 1000.0
                );
                self.bus.note(&line);
                self.fault_log.push(line);
                self.slots[index].restart_at = Some(now + 1_000);
                return false;
            }
        };
        let initialized = opened.initialized();
        let replica = opened.replica();
        let env: SharedEnv = slot.env.clone();
        let seeds = if index == 0 {
            Vec::new()
        } else {
            vec![format!(
                "{}/p2p/{}",
                address(&self.slots[0].name),
                self.slots[0].name
            )]
        };
        let node = opened.start(
            Wiring {
                env,
                network,
                events,
                seeds,
                // One store for every node: simulated tasks read no blobs,
                // and submissions only need the built-in modules.
                blobs: self.blobs.clone(),
                metrics: NodeMetrics::register(&prometheus::Registry::new()).expect("metrics"),
                runner: slot.runner.clone(),
            },
            NodeSettings {
                name: slot.name.clone(),
                capabilities: Capabilities {
                    cores: 2,
                    memory_mb: 4096,
                    // `disk` nodes run more at once, so more results
                    // finish together.
                    slots: if self.config.scenario == Scenario::Disk {
                        4
                    } else {
                        2
                    },
                    version: "sim".into(),
                    wasm: true,
                    wasm_limits: None,
                    tags: BTreeMap::new(),
                },
                target_voters: self.target_voters,
                voter_grace: Duration::from_secs(10),
                heartbeat: HEARTBEAT,
                lease: HEARTBEAT * 12,
                queue_depth: None,
                steal: true,
                retention: Default::default(),
                agents: Default::default(),
                admission: Default::default(),
            },
        );
        node.add_listen_addr(address(&slot.name));
        if initialize && !initialized {
            node.initialize_mesh()
                .await
                .expect("the first node initializes the mesh");
        }
        self.handles
            .lock()
            .expect("handles lock")
            .insert(index, node.clone());
        if let Some(llm) = self.slots[index].llm.clone() {
            // As `coditect node` does: offered while the provider answers.
            tokio::spawn(node.clone().watch_llm(llm));
        }
        self.slots[index].node = Some(node);
        self.slots[index].replica = Some(replica);
        self.slots[index].restart_at = None;
        true
    }

    /// Kills the node in slot `index` (unsynced writes are lost).
    async fn kill(&mut self, index: usize, down_ms: u64) {
        let now = self.now_ms();
        let slot = &mut self.slots[index];
        let Some(node) = slot.node.take() else {
            return;
        };
        slot.replica = None;
        self.handles.lock().expect("handles lock").remove(&index);
        self.bus.crash(&slot.name);
        node.stop().await;
        slot.disk.kv().crash();
        slot.restart_at = Some(now + down_ms);
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, n)))
    }

    /// The index of the node that leads now (Raft state Leader), if one does.
    fn leader_index(&self) -> Option<usize> {
        self.live()
            .filter(|(_, node)| node.leads())
            .max_by_key(|(_, node)| node.raft().metrics().borrow().current_term)
            .map(|(i, _)| i)
    }

    fn sample(&self, with_digests: bool) -> Vec<NodeObs> {
        self.live()
            .map(|(i, node)| {
                let metrics = node.raft().metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                let member = membership.get_node(&node.node_id()).is_some();
                let applied = metrics.last_applied.map(|id| (id.leader_id.term, id.index));
                // The state and the index it reflects, read together: Raft's
                // metrics lag the state machine (the more so while a slow
                // disk holds the core up), so their index would not do.
                let replica = self.slots[i]
                    .replica
                    .as_ref()
                    .expect("a live node has a replica");
                let (digest, max_results) = {
                    let replica = replica.read().expect("replica lock");
                    let state = &replica.state;
                    let max_results = state
                        .missions
                        .values()
                        .flat_map(|m| m.tasks.values())
                        .map(|t| t.results_committed)
                        .max()
                        .unwrap_or(0);
                    let digest = (with_digests && member).then(|| {
                        let bytes = codec::encode(state).expect("state encodes");
                        (
                            replica.last_applied_index(),
                            hex::encode(Sha256::digest(&bytes)),
                        )
                    });
                    (digest, max_results)
                };
                NodeObs {
                    name: self.slots[i].name.clone(),
                    node_id: node.node_id(),
                    state: metrics.state,
                    term: metrics.current_term,
                    leader: metrics.current_leader,
                    applied,
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    member,
                    held: node.holding(),
                    digest,
                    max_results_per_task: max_results,
                }
            })
            .collect()
    }

    fn note_sample(&self, at_ms: u64, nodes: &[NodeObs]) {
        if self.debug_samples {
            let line: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:{:?}:t{}:v{:?}", n.name, n.state, n.term, n.voters.len()))
                .collect();
            eprintln!("{at_ms} {}", line.join(" "));
        }
        let mut line = format!("sample {at_ms}");
        for node in nodes {
            line.push_str(&format!(
                " {}:{:?}:{}:{:?}",
                node.name, node.state, node.term, node.applied
            ));
        }
        self.bus.note(&line);
    }

    async fn wait_formed(&mut self, limit_ms: u64) -> bool {
        let want = self.target_voters.min(self.slots.len());
        let deadline = self.now_ms() + limit_ms;
        while self.now_ms() < deadline {
            if let Some(leader) = self.leader_index() {
                let node = self.slots[leader].node.as_ref().expect("leader is live");
                let voters = node
                    .raft()
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count();
                let registered = node.with_state(|s| s.nodes.len());
                if voters == want && registered == self.slots.len() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A mission of `count` modelled tasks with layered dependencies.
    fn mission_text(&self, wave: usize, count: usize) -> String {
        let mut text = format!("name = \"wave {wave}\"\n");
        for i in 0..count {
            text.push_str(&format!(
                "[[task]]\nid = \"t{i:04}\"\nmodule = \"builtin:noop\"\n"
            ));
            // In `llm`, every other task asks the model.
            if self.config.scenario == Scenario::Llm && i % 2 == 1 {
                text.push_str("requires = [\"wasm\", \"llm\"]\n");
            }
            // Chains as wide as the mesh's slots, so dependencies cross
            // nodes without capping how many tasks can run at once.
            let width = (self.slots.len() * 2).max(8);
            if i >= width {
                text.push_str(&format!("needs = [\"t{:04}\"]\n", i - width));
            }
        }
        text
    }

    /// Submits a wave in the background, through any live node as a client
    /// would, retrying until the mesh accepts it; the run goes on meanwhile
    /// (a submission must not hold back faults, samples or recovery).
    fn submit(&mut self, wave: usize, count: usize) {
        let text = self.mission_text(wave, count);
        let handles = self.handles.clone();
        let submitted = self.submitted.clone();
        let bus = self.bus.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(self.rng.gen());
        tokio::spawn(async move {
            loop {
                let node = {
                    let live = handles.lock().expect("handles lock");
                    if live.is_empty() {
                        None
                    } else {
                        let pick = rng.gen_range(0..live.len());
                        live.values().nth(pick).cloned()
                    }
                };
                if let Some(node) = node {
                    // One key per wave: a retry after an answer lost in a
                    // failover returns the mission already committed.
                    let key = Some(format!("wave-{wave}"));
                    match node
                        .submit_mission(&text, MissionFormat::Toml, key, None)
                        .await
                    {
                        Ok(id) => {
                            bus.note(&format!("submitted {id} ({count} tasks)"));
                            submitted.lock().expect("submitted lock").insert(id, count);
                            return;
                        }
                        Err(error) => bus.note(&format!("submission refused: {error:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Notes that the leader in slot `index` is lost at `at` (killed, or cut
    /// off while it still believes it leads), unless a loss is pending.
    fn leader_lost(&mut self, index: usize, at: u64, killed: bool) {
        let term = self.slots[index]
            .node
            .as_ref()
            .map(|n| n.raft().metrics().borrow().current_term)
            .unwrap_or(0);
        let node = self.slots[index].node_id;
        self.pending_failover.get_or_insert(PendingFailover {
            at,
            term,
            node,
            killed,
        });
    }

    async fn apply(&mut self, at: u64, fault: Fault) {
        let leader = self.leader_index();
        let text = match &fault {
            Fault::KillLeader { down_ms } => match leader {
                Some(index) => {
                    self.leader_lost(index, at, true);
                    self.kill(index, *down_ms).await;
                    format!("kill leader {} for {down_ms} ms", self.slots[index].name)
                }
                None => "kill the leader: no leader now, skipped".to_string(),
            },
            Fault::Kill { node, down_ms } => {
                let index = node % self.slots.len();
                if Some(index) == leader {
                    self.leader_lost(index, at, true);
                }
                self.kill(index, *down_ms).await;
                format!("kill {} for {down_ms} ms", self.slots[index].name)
            }
            Fault::IsolateLeader { ms } => match leader {
                Some(index) => {
                    self.leader_lost(index, at, false);
                    self.bus.isolate(&self.slots[index].name);
                    self.heals.push((at + ms, Heal::Links));
                    format!("isolate leader {} for {ms} ms", self.slots[index].name)
                }
                None => "isolate the leader: no leader now, skipped".to_string(),
            },
            Fault::Split { minority, ms } => {
                let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
                let side_a: Vec<&str> = minority
                    .iter()
                    .map(|i| names[i % names.len()].as_str())
                    .collect();
                let side_b: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| !side_a.contains(n))
                    .collect();
                self.bus.partition(&side_a, &side_b);
                self.heals.push((at + ms, Heal::Links));
                format!("split {side_a:?} from the rest for {ms} ms")
            }
            Fault::OneWay { from, to, ms } => {
                let from = &self.slots[from % self.slots.len()].name;
                let to = &self.slots[to % self.slots.len()].name;
                self.bus.cut_one_way(from, to);
                self.heals.push((at + ms, Heal::Links));
                format!("drop {from} -> {to} for {ms} ms")
            }
            Fault::SlowLinks { node, extra_ms, ms } => {
                let index = node % self.slots.len();
                self.bus.slow(&self.slots[index].name, *extra_ms);
                self.heals.push((at + ms, Heal::Slow(index)));
                format!(
                    "slow {}'s links by {extra_ms} ms for {ms} ms",
                    self.slots[index].name
                )
            }
            Fault::Join => {
                let index = self.slots.len();
                let slot = self.new_slot(index);
                self.slots.push(slot);
                self.boot(index, false).await;
                format!("{} joins", self.slots[index].name)
            }
            Fault::Leave { node, down_ms } => {
                let index = node % self.slots.len();
                match self.slots[index].node.take() {
                    Some(leaving) => {
                        self.slots[index].replica = None;
                        self.handles.lock().expect("handles lock").remove(&index);
                        // Drain as on SIGTERM, within a grace period.
                        leaving.drain(Duration::from_secs(3)).await;
                        self.bus.crash(&self.slots[index].name);
                        self.slots[index].restart_at = Some(self.now_ms() + down_ms);
                        format!(
                            "{} drains and leaves for {down_ms} ms",
                            self.slots[index].name
                        )
                    }
                    None => format!("{} would leave but is down", self.slots[index].name),
                }
            }
            Fault::FailDisk { target, ms } => match self.disk_target(*target) {
                Some(index) => {
                    if Some(index) == leader {
                        // It leads on until its next write fails, and cannot
                        // lead again before its disk heals: only a later
                        // term brings leadership back.
                        self.leader_lost(index, at, false);
                    }
                    let slot = &self.slots[index];
                    slot.disk
                        .fail_writes(Some("No space left on device (os error 28)".into()));
                    self.heals.push((at + ms, Heal::Disk(index)));
                    format!("{}'s disk refuses writes for {ms} ms", slot.name)
                }
                None => format!("fail {target}: none now, skipped"),
            },
            Fault::StallDisk {
                target,
                extra_ms,
                ms,
            } => match self.disk_target(*target) {
                Some(index) => {
                    let slot = &self.slots[index];
                    slot.disk.stall(*extra_ms);
                    self.heals.push((at + ms, Heal::Stall(index)));
                    format!(
                        "{}'s disk flushes {extra_ms} ms slower for {ms} ms",
                        slot.name
                    )
                }
                None => format!("stall {target}: none now, skipped"),
            },
        };
        let line = format!("t={:.1}s {text}", at as f64 / 1000.0);
        self.bus.note(&line);
        self.fault_log.push(line);
    }

    async fn restart_due(&mut self, now: u64) {
        for index in 0..self.slots.len() {
            if self.slots[index].restart_at.is_some_and(|at| at <= now)
                && self.boot(index, false).await
            {
                let line = format!(
                    "t={:.1}s {} restarts on its persisted state",
                    now as f64 / 1000.0,
                    self.slots[index].name
                );
                self.bus.note(&line);
                self.fault_log.push(line);
            }
        }
    }

    /// A node whose Raft core died (a storage error, a panic) exits in
    /// production and its supervisor starts it again; the harness sees the
    /// same signal, `Node::fatal`, and does the same.
    async fn restart_dead_cores(&mut self, now: u64) {
        let dead: Vec<(usize, String)> = self
            .live()
            .filter_map(|(index, node)| node.fatal().map(|reason| (index, reason)))
            .collect();
        for (index, reason) in dead {
            let line = format!(
                "t={:.1}s {}: {reason}; restarted as a supervisor would",
                now as f64 / 1000.0,
                self.slots[index].name
            );
            self.bus.note(&line);
            self.fault_log.push(line);
            self.kill(index, 1_000).await;
        }
    }

    fn heal_due(&mut self, now: u64) {
        let (due, later): (Vec<_>, Vec<_>) = self.heals.drain(..).partition(|(at, _)| *at <= now);
        self.heals = later;
        for (_, heal) in due {
            match heal {
                Heal::Links => self.bus.heal(),
                Heal::Slow(index) => self.bus.slow(&self.slots[index].name, 0),
                Heal::Disk(index) => self.heal_disk(index),
                Heal::Stall(index) => self.slots[index].disk.stall(0),
            }
        }
    }

    fn heal_disk(&self, index: usize) {
        let slot = &self.slots[index];
        if slot.disk.is_failing() {
            slot.disk.fail_writes(None);
            self.bus
                .note(&format!("{}'s disk accepts writes", slot.name));
        }
    }

    /// The slot whose disk a disk fault hits now, if any.
    fn disk_target(&self, target: DiskTarget) -> Option<usize> {
        match target {
            DiskTarget::Leader => self.leader_index(),
            DiskTarget::Node(node) => Some(node % self.slots.len()),
            DiskTarget::Follower(n) => {
                let leader = self.leader_index()?;
                let node = self.slots[leader].node.as_ref()?;
                let membership = node.raft().metrics().borrow().membership_config.clone();
                let members: Vec<NodeId> =
                    membership.membership().nodes().map(|(id, _)| *id).collect();
                let followers: Vec<usize> = (0..self.slots.len())
                    .filter(|i| *i != leader && members.contains(&self.slots[*i].node_id))
                    .collect();
                (!followers.is_empty()).then(|| followers[n % followers.len()])
            }
        }
    }

    /// Tasks of the submitted missions that succeeded, in the leader's state.
    fn succeeded_now(&self) -> usize {
        let Some(leader) = self.leader_index() else {
            return 0;
        };
        let node = self.slots[leader].node.as_ref().expect("leader is live");
        let submitted = self.submitted.lock().expect("submitted lock").clone();
        node.with_state(|state| {
            submitted
                .keys()
                .filter_map(|id| state.missions.get(id))
                .map(|m| {
                    m.tasks
                        .values()
                        .filter(|t| t.state == coditect_consensus::mission::TaskState::Succeeded)
                        .count()
                })
                .sum()
        })
    }

    fn track_failover(&mut self, now: u64) {
        let Some(lost) = self.pending_failover else {
            return;
        };
        let lost_at = lost.at;
        let bucket = (now - lost_at) / 250;
        if self.debug_failover && self.debug_bucket.replace(bucket) != Some(bucket) {
            // A timeline of the voters while leadership is lost, for digging.
            for (_, node) in self.live() {
                let status = node.status();
                let metrics = node.raft().metrics().borrow().clone();
                let voters: Vec<NodeId> =
                    metrics.membership_config.membership().voter_ids().collect();
                if voters.contains(&node.node_id()) {
                    eprintln!(
                        "  +{} ms {} {:?} term {} elect {} leader {:?} voters {:?}",
                        now - lost_at,
                        status.name,
                        metrics.state,
                        metrics.current_term,
                        status.elections_enabled,
                        metrics.current_leader,
                        voters
                    );
                }
            }
        }
        // Leadership is back when a live node leads a later term, or the
        // killed leader restarted and resumed its own term (openraft keeps a
        // committed vote across restarts; followers that had not timed out
        // yet simply follow it again).
        let new_leader = self.live().any(|(_, node)| {
            let term = node.raft().metrics().borrow().current_term;
            node.leads() && (term > lost.term || (lost.killed && node.node_id() == lost.node))
        });
        if new_leader {
            self.failovers.push(now - lost_at);
            self.bus
                .note(&format!("new leader {} ms after the loss", now - lost_at));
            self.pending_failover = None;
        }
    }
}

/// Panics seen in this process since it started (any thread or task); a
/// panic inside a node (say openraft's core) leaves the run going but that
/// node broken, so the report counts it as a broken invariant.
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PANIC_HOOK: std::sync::Once = std::sync::Once::new();

fn count_panics() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs one simulation to its end. Must be called outside any tokio runtime:
/// it builds its own (one thread, paused time, seeded scheduler).
pub fn run(config: SimConfig, progress: &mut dyn FnMut(u64, u64)) -> SimOutcome {
    count_panics();
    let panics_before = PANICS.load(std::sync::atomic::Ordering::SeqCst);
    let runtime = crate::runtime(config.seed).expect("tokio runtime");
    runtime.block_on(async move {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let bus = Bus::new(rng.gen(), LinkConfig::default());
        let scratch = tempfile::tempdir().expect("scratch dir");
        let blobs = BlobStore::open(scratch.path().join("blobs"), 1 << 20)
            .expect("blob store in the scratch dir");
        coditect_node::builtin::seed(&blobs).expect("built-in modules");
        let mut sim = Sim {
            bus,
            slots: Vec::new(),
            blobs,
            _scratch: scratch,
            debug_samples: std::env::var_os("SIM_DEBUG_SAMPLES").is_some(),
            debug_failover: std::env::var_os("SIM_DEBUG_FAILOVER").is_some(),
            debug_bucket: None,
            rng,
            checkers: invariants::all(),
            fault_log: Vec::new(),
            failovers: Vec::new(),
            pending_failover: None,
            submitted: Default::default(),
            handles: Default::default(),
            heals: Vec::new(),
            target_voters: 3,
            config: config.clone(),
        };
        for index in 0..config.nodes.max(1) {
            let slot = sim.new_slot(index);
            sim.slots.push(slot);
        }
        sim.boot(0, true).await;
        for index in 1..sim.slots.len() {
            sim.boot(index, false).await;
        }
        let virtual_ms = config.virtual_secs.max(5) * 1000;
        let formed = sim.wait_formed(30_000).await;
        if !formed {
            sim.fault_log
                .push("the mesh did not form within 30 virtual seconds".into());
        }
        let faults = schedule(config.scenario, config.seed, config.nodes, virtual_ms);
        // The workload: tasks proportional to nodes for `scale`, else a fixed
        // amount, in waves over the fault phase.
        // `scale` submits one burst of 20 tasks per node at the start, to
        // measure tasks per virtual second; the others submit in waves.
        let (total_tasks, waves) = match config.scenario {
            Scenario::Scale => (config.nodes * 20, 1),
            // Two large waves: every node finishes several large results at
            // about the same time, more than one report request carries.
            Scenario::Disk => (48.max(config.nodes), 2),
            _ => (40.max(config.nodes), 4),
        };
        let first_submit = sim.now_ms();
        let mut all_done_at: Option<u64> = None;
        let wave_times: Vec<u64> = (0..waves)
            .map(|w| sim.now_ms() + w as u64 * (virtual_ms * 3 / 5) / waves as u64)
            .collect();
        let mut next_wave = 0;
        let mut next_fault = 0;
        let mut next_sample = 0;
        let mut next_digest = 0;
        let recovery_at = virtual_ms * 4 / 5;
        let mut recovered = false;
        while sim.now_ms() < virtual_ms {
            let now = sim.now_ms();
            progress(now, virtual_ms);
            while next_wave < waves && wave_times[next_wave] <= now {
                let count = total_tasks / waves + usize::from(next_wave < total_tasks % waves);
                sim.submit(next_wave, count.max(1));
                next_wave += 1;
            }
            while next_fault < faults.len() && faults[next_fault].0 <= now && now < recovery_at {
                let (at, fault) = faults[next_fault].clone();
                sim.apply(at, fault).await;
                next_fault += 1;
            }
            if now >= recovery_at && !recovered {
                recovered = true;
                sim.bus.heal();
                sim.heals.clear();
                for index in 0..sim.slots.len() {
                    sim.slots[index].disk.stall(0);
                    sim.heal_disk(index);
                }
                for slot in &mut sim.slots {
                    if slot.node.is_none() {
                        slot.restart_at = Some(now);
                    }
                }
                let line = format!(
                    "t={:.1}s recovery: every link healed, every node restarted",
                    now as f64 / 1000.0
                );
                sim.bus.note(&line);
                sim.fault_log.push(line);
            }
            sim.restart_due(sim.now_ms()).await;
            sim.restart_dead_cores(sim.now_ms()).await;
            sim.heal_due(sim.now_ms());
            sim.track_failover(sim.now_ms());
            let now = sim.now_ms();
            if now >= next_sample {
                let digests = now >= next_digest;
                if digests {
                    next_digest = now
                        + if config.scenario == Scenario::Disk {
                            DISK_DIGEST_EVERY_MS
                        } else {
                            DIGEST_EVERY_MS
                        };
                }
                let nodes = sim.sample(digests);
                sim.note_sample(now, &nodes);
                if all_done_at.is_none() && next_wave == waves {
                    let done = sim.succeeded_now();
                    if done >= total_tasks {
                        all_done_at = Some(now);
                    }
                }
                let observation = Observation {
                    at_ms: now,
                    nodes: &nodes,
                };
                for checker in &mut sim.checkers {
                    checker.observe(&observation);
                }
                next_sample = now + SAMPLE_EVERY_MS;
            }
            tokio::time::sleep(STEP).await;
        }
        progress(virtual_ms, virtual_ms);
        // The end: writes never stop (heartbeat batches), so give replication
        // a moment to bring every member to the same applied index (up to 5
        // virtual s), then every checker sees the final state.
        let mut nodes = sim.sample(false);
        for _ in 0..500 {
            let leader = nodes
                .iter()
                .find(|n| n.state == openraft::ServerState::Leader);
            let settled = leader.is_some_and(|leader| {
                nodes
                    .iter()
                    .filter(|n| {
                        leader.voters.contains(&n.node_id) || leader.learners.contains(&n.node_id)
                    })
                    .all(|n| n.applied == leader.applied)
            });
            if settled {
                break;
            }
            tokio::time::sleep(STEP).await;
            nodes = sim.sample(false);
        }
        let end_at = sim.now_ms();
        let nodes = sim.sample(true);
        sim.note_sample(end_at, &nodes);
        let leader_state: Option<MeshState> = sim
            .leader_index()
            .and_then(|i| sim.slots[i].node.as_ref())
            .map(|node| node.with_state(|s| s.clone()));
        let live: Vec<NodeId> = sim.live().map(|(_, n)| n.node_id()).collect();
        let observation = Observation {
            at_ms: end_at,
            nodes: &nodes,
        };
        let submitted = sim.submitted.lock().expect("submitted lock").clone();
        let largest_log_entry = sim
            .slots
            .iter()
            .map(|slot| (slot.disk.largest_log_entry(), slot.name.clone()))
            .max_by_key(|(bytes, _)| *bytes)
            .unwrap_or_default();
        let messages = sim.bus.sizes();
        let end = Final {
            nodes: &nodes,
            leader_state: leader_state.as_ref(),
            target_voters: sim.target_voters,
            live,
            submitted: &submitted,
            waves_expected: waves,
            largest_log_entry: largest_log_entry.clone(),
            messages: &messages,
        };
        for checker in &mut sim.checkers {
            checker.observe(&observation);
            checker.finish(&end);
        }
        let mut invariants: Vec<(String, String)> = sim
            .checkers
            .iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    c.violation()
                        .map(str::to_string)
                        .unwrap_or_else(|| "ok".into()),
                )
            })
            .collect();
        let panics = PANICS.load(std::sync::atomic::Ordering::SeqCst) - panics_before;
        invariants.push((
            "no_panics".to_string(),
            if panics == 0 {
                "ok".to_string()
            } else {
                format!("{panics} panic(s) inside the run (see stderr)")
            },
        ));
        let tasks_succeeded = leader_state
            .as_ref()
            .map(|state| {
                submitted
                    .keys()
                    .filter_map(|id| state.missions.get(id))
                    .flat_map(|m| m.tasks.values())
                    .filter(|t| t.state == coditect_consensus::mission::TaskState::Succeeded)
                    .count()
            })
            .unwrap_or(0);
        let model_calls = leader_state
            .as_ref()
            .map(|state| {
                let tasks = state.missions.values().flat_map(|m| m.tasks.values());
                let mut counts = (0, 0, 0);
                for task in tasks {
                    let calls = task
                        .result
                        .iter()
                        .flat_map(|r| &r.llm_calls)
                        .chain(task.violations.iter().flat_map(|v| &v.llm_calls));
                    for call in calls {
                        counts.0 += 1;
                        counts.1 += usize::from(call.outcome == "ok");
                    }
                    counts.2 += task
                        .violations
                        .iter()
                        .filter(|v| v.kind == "llm_unavailable")
                        .count();
                }
                counts
            })
            .unwrap_or_default();
        for (_, node) in sim.live() {
            node.stop().await;
        }
        let outcome = SimOutcome {
            model_calls,
            trace_hash: sim.bus.trace_hash(),
            trace_events: sim.bus.events(),
            invariants,
            tasks_submitted: submitted.values().sum(),
            tasks_succeeded,
            failovers: sim.failovers.clone(),
            fault_log: sim.fault_log.clone(),
            nodes_total: sim.slots.len(),
            // Throughput only means something for a single burst (`scale`).
            busy_virtual_ms: all_done_at
                .filter(|_| waves == 1)
                .map(|at| at - first_submit),
            largest_raft_entry_bytes: largest_log_entry.0,
            largest_raft_message_bytes: messages.raft.0,
            largest_node_request_bytes: messages.node_request.0,
            largest_message_bytes: messages.any.0,
        };
        outcome
    })
}
