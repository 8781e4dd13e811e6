//! The openraft type configuration and the commands of the replicated state.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id: derived once from the node's peer id, persisted in its
/// data dir and never reused (a new data dir means a new key, so a new id).
pub type NodeId = u64;

/// What Raft membership stores about a member: enough to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshNode {
    /// The libp2p peer id, base58.
    pub peer_id: String,
    /// Multiaddrs it listens on (without the `/p2p/` suffix).
    pub addrs: Vec<String>,
}

impl fmt::Display for MeshNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_id)
    }
}

/// What a node can do, as it advertises it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPU cores of the machine.
    pub cores: u32,
    /// Physical memory of the machine, MiB.
    pub memory_mb: u64,
    /// Tasks the node runs at once.
    pub slots: u32,
    /// The `coditect` version it runs.
    pub version: String,
    /// Whether it runs wasm tasks (every node does today).
    pub wasm: bool,
    /// What its sandbox allows, when it runs wasm tasks.
    pub wasm_limits: Option<WasmLimits>,
    /// Extra `--capability KEY[=VALUE]` tags; a bare key has an empty value.
    pub tags: BTreeMap<String, String>,
}

impl Capabilities {
    /// Whether the node offers capability `tag` (`wasm`, or a `--capability` key).
    pub fn has(&self, tag: &str) -> bool {
        (tag == "wasm" && self.wasm) || self.tags.contains_key(tag)
    }
}

/// What a node's wasm sandbox offers and enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmLimits {
    /// Host ABI version of the `coditect` import module.
    pub host_abi: String,
    /// WASI flavour (`preview1`).
    pub wasi: String,
    /// Largest linear memory a task may ask for, MiB.
    pub max_memory_mb: u64,
    /// Largest module accepted, bytes.
    pub max_module_bytes: u64,
    /// Instances at once (tasks plus nested calls).
    pub max_instances: u32,
    /// Default fuel of a task that names none.
    pub default_fuel: u64,
    /// Default memory cap, MiB.
    pub default_memory_mb: u64,
    /// Default wall-clock timeout, ms.
    pub default_timeout_ms: u64,
    /// Default cap of stdout, stderr and /output each, MiB.
    pub default_output_mb: u64,
}

/// How busy a node is, as reported in heartbeats and adverts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Tasks running now.
    pub running: u32,
    /// Tasks queued and not yet started.
    pub queued: u32,
    /// Task slots.
    pub slots: u32,
}

/// One node of the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Raft node id.
    pub node_id: NodeId,
    /// libp2p peer id, base58.
    pub peer_id: String,
    /// Human label.
    pub name: String,
    /// Multiaddrs it can be reached on.
    pub addrs: Vec<String>,
    /// What it offers.
    pub capabilities: Capabilities,
    /// When the leader first registered it (leader's clock, ms since the epoch).
    pub registered_ms: u64,
    /// Last heartbeat the leader recorded (ms since the epoch).
    pub last_heartbeat_ms: u64,
    /// Load in that heartbeat.
    pub load: Load,
    /// The node drained and left on purpose (SIGTERM); it may come back.
    pub left: bool,
}
