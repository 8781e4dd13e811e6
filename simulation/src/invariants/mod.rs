//! Invariant checkers, one per file. The harness samples every live node
//! into an [`Observation`] during the run and hands each checker the
//! [`Final`] view after the fault-free recovery phase. A checker keeps the
//! first violation it sees (with the virtual time), which the report shows
//! and which makes the run exit 1.

use std::collections::BTreeMap;

use coditect_consensus::{MeshState, NodeId};
use coditect_node::messages::Held;
use openraft::ServerState;

use crate::network::MessageSizes;

mod committed;
mod convergence;
mod leader;
mod liveness;
mod model;
mod ownership;
mod sizes;
mod voters;

pub use sizes::RAFT_ENVELOPE_BYTES;

/// One live node as sampled.
#[derive(Clone, Debug)]
pub struct NodeObs {
    /// Its label.
    pub name: String,
    /// Raft id.
    pub node_id: NodeId,
    /// Raft role.
    pub state: ServerState,
    /// Raft term.
    pub term: u64,
    /// The leader it knows through Raft.
    pub leader: Option<NodeId>,
    /// Last applied log id (term, index).
    pub applied: Option<(u64, u64)>,
    /// Voters in its membership.
    pub voters: Vec<NodeId>,
    /// Learners (standbys) in its membership.
    pub learners: Vec<NodeId>,
    /// Whether it is a Raft member (holds the replicated state).
    pub member: bool,
    /// The tasks it holds.
    pub held: Vec<Held>,
    /// Digest of its replicated state with the applied index it belongs to
    /// (sampled now and then, members only).
    pub digest: Option<(u64, String)>,
    /// Most results committed for any one task in its replica.
    pub max_results_per_task: u32,
}

/// Every live node at one instant.
pub struct Observation<'a> {
    /// Virtual ms since the start.
    pub at_ms: u64,
    /// The nodes.
    pub nodes: &'a [NodeObs],
}

/// The end of the run, after the recovery phase.
pub struct Final<'a> {
    /// The last observation.
    pub nodes: &'a [NodeObs],
    /// The leader's replicated state, if there is a leader.
    pub leader_state: Option<&'a MeshState>,
    /// Voter target.
    pub target_voters: usize,
    /// Ids of the nodes alive at the end.
    pub live: Vec<NodeId>,
    /// Tasks submitted during the run, by mission id.
    pub submitted: &'a BTreeMap<String, usize>,
    /// Missions the workload tried to submit (each must have been accepted).
    pub waves_expected: usize,
    /// Encoded bytes of the largest Raft log entry any disk stored, and whose.
    pub largest_log_entry: (usize, String),
    /// The largest messages the network carried.
    pub messages: &'a MessageSizes,
}

/// A checker of one invariant.
pub trait Checker {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// Looks at one sample.
    fn observe(&mut self, observation: &Observation<'_>);
    /// Looks at the end of the run.
    fn finish(&mut self, end: &Final<'_>);
    /// The first violation, if any.
    fn violation(&self) -> Option<&str>;
}

/// Every checker, in report order.
pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(leader::OneLeaderPerTerm::default()),
        Box::new(committed::CommittedNeverChanges::default()),
        Box::new(convergence::Convergence::default()),
        Box::new(ownership::OneLiveOwner::default()),
        Box::new(liveness::ExactlyOnceResults::default()),
        Box::new(voters::VotersRestored::default()),
        Box::new(sizes::SizesWithinCaps::default()),
        Box::new(model::ModelTasksOnModelNodes::default()),
    ]
}

impl Final<'_> {
    /// The node that leads at the end, if one does.
    pub fn leader(&self) -> Option<&NodeObs> {
        self.nodes.iter().find(|n| n.state == ServerState::Leader)
    }
}

/// Keeps the first violation of a checker.
#[derive(Default)]
pub(crate) struct First(Option<String>);

impl First {
    pub(crate) fn set(&mut self, at_ms: Option<u64>, message: String) {
        if self.0.is_none() {
            self.0 = Some(match at_ms {
                Some(at) => format!("at {at} ms: {message}"),
                None => format!("at the end: {message}"),
            });
        }
    }

    pub(crate) fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}
