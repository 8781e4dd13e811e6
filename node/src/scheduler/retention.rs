//! Which finished missions to compact: the retention policy, a pure
//! function over plain data. A finished mission is kept in full (every
//! task, result and violation) while it is among the newest
//! [`RetentionPolicy::keep_finished`] finished missions and was submitted
//! less than [`RetentionPolicy::keep_finished_ms`] ago; past either, the
//! leader compacts it to a summary (its header and how many tasks ended in
//! each state), so the replicated state stays bounded.

/// How many finished missions are kept whole, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Finished missions kept in full, at most (the newest).
    pub keep_finished: usize,
    /// A finished mission submitted longer ago than this is compacted, ms.
    pub keep_finished_ms: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_finished: 1_000,
            keep_finished_ms: 7 * 24 * 3_600 * 1_000,
        }
    }
}

/// What the policy needs to know of one mission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissionAge {
    /// Mission id.
    pub id: String,
    /// Its sequence number (`m17` is 17): newer missions have larger ones.
    pub sequence: u64,
    /// Submitted at (leader clock, ms).
    pub submitted_ms: u64,
    /// It is over (succeeded, failed or cancelled).
    pub finished: bool,
    /// It was compacted already.
    pub compacted: bool,
}

/// The finished, not yet compacted missions past the policy at `now_ms`,
/// oldest first, at most `limit` of them (one Raft entry's worth).
pub fn to_compact(
    missions: &[MissionAge],
    policy: &RetentionPolicy,
    now_ms: u64,
    limit: usize,
) -> Vec<String> {
    let mut finished: Vec<&MissionAge> = missions.iter().filter(|m| m.finished).collect();
    // Newest first: the first `keep_finished` are kept (compacted ones count,
    // since they were finished missions too, but are never compacted again).
    finished.sort_by_key(|m| std::cmp::Reverse(m.sequence));
    let mut chosen: Vec<&MissionAge> = finished
        .iter()
        .enumerate()
        .filter(|(rank, mission)| {
            !mission.compacted
                && (*rank >= policy.keep_finished
                    || now_ms.saturating_sub(mission.submitted_ms) > policy.keep_finished_ms)
        })
        .map(|(_, mission)| *mission)
        .collect();
    chosen.sort_by_key(|m| m.sequence);
    chosen.truncate(limit);
    chosen.into_iter().map(|m| m.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mission(sequence: u64, submitted_ms: u64, finished: bool) -> MissionAge {
        MissionAge {
            id: format!("m{sequence}"),
            sequence,
            submitted_ms,
            finished,
            compacted: false,
        }
    }

    #[test]
    fn the_newest_finished_are_kept_and_running_ones_never_compacted() {
        let policy = RetentionPolicy {
            keep_finished: 2,
            keep_finished_ms: 1_000_000,
        };
        let missions = vec![
            mission(1, 0, true),
            mission(2, 0, false),
            mission(3, 0, true),
            mission(4, 0, true),
            mission(5, 0, true),
        ];
        assert_eq!(to_compact(&missions, &policy, 10, 100), vec!["m1", "m3"]);
        assert_eq!(to_compact(&missions, &policy, 10, 1), vec!["m1"]);
    }

    #[test]
    fn old_finished_missions_are_compacted_whatever_their_count() {
        let policy = RetentionPolicy {
            keep_finished: 100,
            keep_finished_ms: 1_000,
        };
        let missions = vec![
            mission(1, 0, true),
            mission(2, 5_000, true),
            mission(3, 0, false),
        ];
        assert_eq!(to_compact(&missions, &policy, 5_500, 100), vec!["m1"]);
    }

    proptest! {
        #[test]
        fn compaction_respects_the_policy(
            specs in proptest::collection::vec((0u64..10_000, any::<bool>(), any::<bool>()), 0..60),
            keep in 0usize..20,
            keep_ms in 0u64..10_000,
            now in 0u64..20_000,
        ) {
            let missions: Vec<MissionAge> = specs
                .iter()
                .enumerate()
                .map(|(i, (submitted_ms, finished, compacted))| MissionAge {
                    id: format!("m{}", i + 1),
                    sequence: i as u64 + 1,
                    submitted_ms: *submitted_ms,
                    finished: *finished,
                    compacted: *compacted && *finished,
                })
                .collect();
            let policy = RetentionPolicy { keep_finished: keep, keep_finished_ms: keep_ms };
            let chosen = to_compact(&missions, &policy, now, usize::MAX);
            let mut newer_finished = 0;
            for mission in missions.iter().rev() {
                let picked = chosen.contains(&mission.id);
                if !mission.finished || mission.compacted {
                    prop_assert!(!picked, "{:?}", mission);
                } else {
                    let expired = now.saturating_sub(mission.submitted_ms) > keep_ms;
                    prop_assert_eq!(picked, newer_finished >= keep || expired, "{:?}", mission);
                }
                if mission.finished {
                    newer_finished += 1;
                }
            }
        }
    }
}
