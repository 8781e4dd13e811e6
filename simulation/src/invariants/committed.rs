//! A committed entry is never lost or changed: every node that applies log
//! index i applied the same entry (same term) and reached the same state
//! (same digest) there, and the mesh never applies less than it once did.

use std::collections::BTreeMap;

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct CommittedNeverChanges {
    terms: BTreeMap<u64, (u64, String)>,
    digests: BTreeMap<u64, (String, String)>,
    highest_applied: u64,
    first: First,
}

impl Checker for CommittedNeverChanges {
    fn name(&self) -> &'static str {
        "committed_entries_never_change"
    }

    fn observe(&mut self, observation: &Observation<'_>) {
        for node in observation.nodes {
            if let Some((term, index)) = node.applied {
                self.highest_applied = self.highest_applied.max(index);
                let (known, by) = self.terms.entry(index).or_insert((term, node.name.clone()));
                if *known != term {
                    let message = format!(
                        "log index {index} applied with term {known} on {by} but term {term} on {}",
                        node.name
                    );
                    self.first.set(Some(observation.at_ms), message);
                }
            }
            if let Some((index, digest)) = &node.digest {
                let (known, by) = self
                    .digests
                    .entry(*index)
                    .or_insert((digest.clone(), node.name.clone()));
                if known != digest {
                    let message = format!(
                        "state at applied index {index} differs between {by} and {}",
                        node.name
                    );
                    self.first.set(Some(observation.at_ms), message);
                }
            }
        }
    }

    fn finish(&mut self, end: &Final<'_>) {
        let now = end
            .nodes
            .iter()
            .filter_map(|n| n.applied.map(|(_, index)| index))
            .max()
            .unwrap_or(0);
        if now < self.highest_applied {
            self.first.set(
                None,
                format!(
                    "entries lost: index {} was applied during the run, the mesh ends at {now}",
                    self.highest_applied
                ),
            );
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
