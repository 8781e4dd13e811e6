//! The voter set returns to its target: after recovery the leader's
//! membership has min(target, live nodes) voters, every one of them alive.

use super::{Checker, Final, First, Observation};

/// See the module docs.
#[derive(Default)]
pub struct VotersRestored {
    first: First,
}

impl Checker for VotersRestored {
    fn name(&self) -> &'static str {
        "voter_set_restored"
    }

    fn observe(&mut self, _observation: &Observation<'_>) {}

    fn finish(&mut self, end: &Final<'_>) {
        let Some(leader) = end.leader() else {
            self.first.set(None, "no leader at the end".into());
            return;
        };
        let want = end.target_voters.min(end.live.len());
        if leader.voters.len() != want {
            self.first.set(
                None,
                format!(
                    "{} voters ({:?}), the target is {want}",
                    leader.voters.len(),
                    leader.voters
                ),
            );
            return;
        }
        if let Some(dead) = leader.voters.iter().find(|v| !end.live.contains(v)) {
            self.first
                .set(None, format!("voter {dead} is not a live node"));
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
