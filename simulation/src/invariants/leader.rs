//! At most one leader per term: no two nodes ever act as leader in the
//! same term.

use std::collections::BTreeMap;

use coditect_consensus::NodeId;
use openraft::ServerState;

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct OneLeaderPerTerm {
    leaders: BTreeMap<u64, NodeId>,
    first: First,
}

impl Checker for OneLeaderPerTerm {
    fn name(&self) -> &'static str {
        "one_leader_per_term"
    }

    fn observe(&mut self, observation: &Observation<'_>) {
        for node in observation.nodes {
            if node.state != ServerState::Leader {
                continue;
            }
            let known = *self.leaders.entry(node.term).or_insert(node.node_id);
            if known != node.node_id {
                self.first.set(
                    Some(observation.at_ms),
                    format!(
                        "nodes {known} and {} both lead term {}",
                        node.node_id, node.term
                    ),
                );
            }
        }
    }

    fn finish(&mut self, _end: &Final<'_>) {}

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
