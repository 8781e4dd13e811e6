//! The runtime's plain state, shared by the shell's files: what this node
//! holds as a worker ([`ExecState`]), the leader's scheduling state
//! ([`SchedState`]) and the cache of mission views ([`Views`]). Data only;
//! the files that act on it (`executor.rs`, `missions.rs`) import it, and
//! nothing here imports them.

use std::collections::BTreeMap;
use std::time::Duration;

use coditect_consensus::NodeId;
use coditect_sandbox::CancelToken;

use crate::messages::MissionView;
use crate::scheduler::{Breaker, NodeView, QueueWindow, TaskId, TaskView};
use crate::worker::{Assignment, Report};

/// Where a held task is.
pub(super) enum Phase {
    /// Waiting for a slot.
    Queued,
    /// Being handed to a thief (the transfer is being committed).
    Giving,
    /// Running; the token stops it.
    Running(CancelToken),
    /// Ran; the outcome is on its way to the leader.
    Reporting,
}

pub(super) struct HeldTask {
    pub(super) assignment: Assignment,
    pub(super) phase: Phase,
}

/// The tasks this node holds.
#[derive(Default)]
pub(super) struct ExecState {
    pub(super) tasks: BTreeMap<TaskId, HeldTask>,
    pub(super) draining: bool,
    pub(super) steal_in_flight: bool,
    /// Outcomes waiting to be sent to the leader (sent in batches).
    pub(super) outbox: Vec<(TaskId, u32, Report)>,
    /// Service and refill times, for the queue window this node asks for.
    pub(super) window: QueueWindow,
}

impl ExecState {
    pub(super) fn running(&self) -> u32 {
        self.tasks
            .values()
            .filter(|t| matches!(t.phase, Phase::Running(_)))
            .count() as u32
    }

    pub(super) fn queued(&self) -> u32 {
        self.tasks
            .values()
            .filter(|t| matches!(t.phase, Phase::Queued | Phase::Giving))
            .count() as u32
    }

    pub(super) fn queued_views(&self) -> Vec<TaskView> {
        let mut views: Vec<TaskView> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Queued))
            .map(|(id, t)| TaskView {
                id: id.clone(),
                priority: t.assignment.task.priority,
                ready_seq: t.assignment.ready_seq,
                requires: t.assignment.task.requires.clone(),
                avoid_nodes: t.assignment.avoid.iter().copied().collect(),
            })
            .collect();
        views.sort_by(|a, b| {
            (a.priority, a.ready_seq, &a.id).cmp(&(b.priority, b.ready_seq, &b.id))
        });
        views
    }
}

/// A view's key: (mission id, with its task list).
pub(super) type ViewKey = (String, bool);
/// A cached view: (the mission's revision it shows, last read, the view).
pub(super) type CachedView = (u64, u64, MissionView);

/// Cached views by (mission, with tasks), each at the mission's revision,
/// plus the count of waiting long polls.
#[derive(Default)]
pub(super) struct Views {
    pub(super) cache: std::sync::Mutex<BTreeMap<ViewKey, CachedView>>,
    /// Only one view is built at a time; the others wait and share it.
    pub(super) build: tokio::sync::Mutex<()>,
    /// Reads so far, to evict the least recently read.
    pub(super) reads: std::sync::atomic::AtomicU64,
    pub(super) waiters: Waiters,
}

/// Long polls waiting on this node, by client.
pub(super) type Waiters = std::sync::Arc<std::sync::Mutex<BTreeMap<String, usize>>>;

/// A long poll's place among the waiters; leaving frees it.
pub struct WaiterSlot {
    pub(super) waiters: Waiters,
    pub(super) client: String,
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if let Some(count) = waiters.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                waiters.remove(&self.client);
            }
        }
    }
}

/// Leader-local scheduling state (rebuilt from scratch by a new leader).
#[derive(Default)]
pub(super) struct SchedState {
    pub(super) breakers: BTreeMap<NodeId, Breaker>,
    /// The node views of the last round, for placing a new mission's ready
    /// tasks in its submission entry (kept current by every round).
    pub(super) last_views: Vec<NodeView>,
    /// When finished missions were last considered for compaction.
    pub(super) last_compaction: Option<Duration>,
    /// When a round last looked at every task rather than each mission's
    /// ready/held index (a safety net, once a second).
    pub(super) last_full_scan: Option<Duration>,
}
