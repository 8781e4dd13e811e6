//! The plain data the scheduler decides over: what it needs to know about a
//! task waiting to run and about a node that might run it. The runtime builds
//! these views from the replicated state and the latest heartbeats.

use std::collections::BTreeSet;
use std::fmt;

use coditect_consensus::{Capabilities, NodeId};
use serde::{Deserialize, Serialize};

use super::breaker::BreakerGate;

/// A task's identity across the mesh: task ids are only unique inside their
/// mission, so both parts are needed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The mission the task belongs to.
    pub mission: String,
    /// The task's id inside its mission.
    pub task: String,
}

impl TaskId {
    /// A task id from its mission and its id inside the mission.
    pub fn new(mission: impl Into<String>, task: impl Into<String>) -> Self {
        TaskId {
            mission: mission.into(),
            task: task.into(),
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mission, self.task)
    }
}

/// What the scheduler needs to know about a task that is ready, or queued on
/// a node and not yet started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    /// Which task.
    pub id: TaskId,
    /// 0 is P0, the most urgent; larger numbers wait behind smaller ones.
    pub priority: u8,
    /// Position in the order tasks became ready (a Raft log index works):
    /// among equal priorities the smaller, older one goes first.
    pub ready_seq: u64,
    /// Capability tags a node must offer to run it (see [`Capabilities::has`]).
    pub requires: Vec<String>,
    /// Nodes it should not run on again because it failed there for a
    /// node-specific reason; used only while another capable node exists.
    pub avoid_nodes: BTreeSet<NodeId>,
    /// The node that holds its inputs (the one that took the submission):
    /// among equally loaded candidates it is chosen first, so a task on a
    /// quiet mesh runs where its blobs are, without a hop to get there.
    pub home: Option<NodeId>,
}

impl TaskView {
    /// Whether a node with these capabilities can run the task.
    pub fn runs_on(&self, capabilities: &Capabilities) -> bool {
        self.requires.iter().all(|tag| capabilities.has(tag))
    }

    /// The order tasks are served in: priority, then age, then id so that
    /// equal tasks still come out in one deterministic order.
    pub(crate) fn urgency(&self) -> (u8, u64, &TaskId) {
        (self.priority, self.ready_seq, &self.id)
    }
}

/// What the scheduler needs to know about a node that might run tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Which node.
    pub id: NodeId,
    /// What it advertised; `capabilities.slots` is how many tasks it runs at once.
    pub capabilities: Capabilities,
    /// Tasks running on it now.
    pub running: u32,
    /// Tasks assigned to it and not yet started.
    pub queued: u32,
    /// It holds a current node lease (heartbeats arrive in time).
    pub live: bool,
    /// What its circuit breaker allows now (see [`super::breaker::Breaker::gate`]).
    pub breaker: BreakerGate,
    /// The tasks beyond its slots it asked to hold (its queue window, see
    /// [`super::window`]); `None` leaves it at the placement's default depth.
    pub window: Option<u32>,
}

impl NodeView {
    /// Tasks it holds, running or queued.
    pub fn holding(&self) -> u32 {
        self.running.saturating_add(self.queued)
    }

    /// Slots it has with nothing running and nothing queued to fill them.
    pub fn free_slots(&self) -> u32 {
        self.capabilities.slots.saturating_sub(self.holding())
    }
}

/// Capabilities with `slots` and bare `tags`, for the scheduler's tests.
#[cfg(test)]
pub(crate) fn test_capabilities(slots: u32, tags: &[&str]) -> Capabilities {
    Capabilities {
        slots,
        wasm: true,
        tags: tags
            .iter()
            .map(|tag| (tag.to_string(), String::new()))
            .collect(),
        ..Capabilities::default()
    }
}
