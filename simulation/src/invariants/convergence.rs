//! All live replicas converge: once faults stop, every live Raft member (as
//! the leader's membership says: a node removed while it was down may still
//! believe it is one) has applied the same index and holds the same
//! state-machine digest.

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct Convergence {
    first: First,
}

impl Checker for Convergence {
    fn name(&self) -> &'static str {
        "replicas_converge"
    }

    fn observe(&mut self, _observation: &Observation<'_>) {}

    fn finish(&mut self, end: &Final<'_>) {
        let Some(leader) = end.leader() else {
            self.first.set(None, "no leader at the end".into());
            return;
        };
        let members: Vec<_> = end
            .nodes
            .iter()
            .filter(|n| leader.voters.contains(&n.node_id) || leader.learners.contains(&n.node_id))
            .collect();
        if members.is_empty() {
            self.first
                .set(None, "no live node holds the replicated state".into());
            return;
        }
        let reference = members[0];
        for node in &members[1..] {
            if node.applied != reference.applied {
                self.first.set(
                    None,
                    format!(
                        "{} applied {:?} but {} applied {:?}",
                        reference.name, reference.applied, node.name, node.applied
                    ),
                );
                return;
            }
            if node.digest.as_ref().map(|d| &d.1) != reference.digest.as_ref().map(|d| &d.1) {
                self.first.set(
                    None,
                    format!(
                        "{} and {} hold different states at the same applied index",
                        reference.name, node.name
                    ),
                );
                return;
            }
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
