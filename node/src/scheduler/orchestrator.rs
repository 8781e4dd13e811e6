//! The orchestrator's decisions beside placement, as plain functions: which
//! nodes lose their leases, what a node's heartbeat is answered with
//! (reconciliation), which Raft commands one placement round writes, and
//! what a cancel revokes.
//!
//! The leader's shell (`runtime/missions.rs`) gathers the inputs from the
//! replica and the heartbeats, calls these, and commits what they return;
//! the consensus state machine then checks every command again against
//! owner and attempt, so a decision taken on a stale view is refused there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coditect_consensus::{Command, NodeId};

use super::placement::PlacementPlan;
use super::view::TaskId;

/// Why a node's lease ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEnd {
    /// It drained and left the mesh.
    Left,
    /// It was silent for longer than the lease.
    Silent {
        /// How long it had been silent.
        silent_ms: u64,
    },
}

/// One node whose tasks go back to be placed again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The node.
    pub node: NodeId,
    /// Why.
    pub cause: LeaseEnd,
}

impl Expired {
    /// The reason recorded on each released task.
    pub fn reason(&self) -> String {
        match self.cause {
            LeaseEnd::Left => format!("node {} left the mesh", self.node),
            LeaseEnd::Silent { silent_ms } => format!(
                "node {} stopped heartbeating ({silent_ms} ms silent) and lost its lease",
                self.node
            ),
        }
    }
}

/// The holders (nodes that own a queued or running task) whose lease ended:
/// those that left, and those silent for longer than `lease`. A holder heard
/// within the lease always keeps its tasks.
pub fn expired_leases(
    holders: impl IntoIterator<Item = NodeId>,
    left: &BTreeSet<NodeId>,
    silent_for: impl Fn(NodeId) -> Duration,
    lease: Duration,
) -> Vec<Expired> {
    holders
        .into_iter()
        .filter_map(|node| {
            let silent = silent_for(node);
            let cause = if left.contains(&node) {
                LeaseEnd::Left
            } else if silent > lease {
                LeaseEnd::Silent {
                    silent_ms: silent.as_millis() as u64,
                }
            } else {
                return None;
            };
            Some(Expired { node, cause })
        })
        .collect()
}

/// A task the replicated state gives one node, as reconciliation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned {
    /// The attempt the node owns it at.
    pub attempt: u32,
    /// Whether the state already shows it running (not only assigned).
    pub started: bool,
}

/// What a heartbeat is answered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Tasks the state gives the node that it did not list at that attempt:
    /// the leader sends their assignments again.
    pub missing: Vec<TaskId>,
    /// Tasks the node listed that the state no longer gives it at that
    /// attempt: the node drops them (stopping their runs).
    pub revoked: Vec<(TaskId, u32)>,
    /// Tasks the node runs that the state still shows assigned: the leader
    /// commits their start.
    pub starts: Vec<(TaskId, u32)>,
}

/// Compares what the state gives a node (`owned`) with what the node says it
/// holds and runs. Applying the answer (taking the missing assignments,
/// dropping the revoked tasks) leaves the node holding exactly `owned`, so a
/// second reconciliation over the same state has nothing to say
/// (property-tested below, with the executor's own rules in
/// `runtime/state.rs`).
pub fn reconcile(
    owned: &BTreeMap<TaskId, Owned>,
    holding: &[(TaskId, u32)],
    running: &[(TaskId, u32)],
) -> Reconciliation {
    let listed: BTreeMap<&TaskId, u32> = holding.iter().map(|(id, a)| (id, *a)).collect();
    let current = |id: &TaskId, attempt: u32| owned.get(id).is_some_and(|o| o.attempt == attempt);
    Reconciliation {
        missing: owned
            .iter()
            .filter(|(id, owned)| listed.get(id) != Some(&owned.attempt))
            .map(|(id, _)| id.clone())
            .collect(),
        revoked: holding
            .iter()
            .filter(|(id, attempt)| !current(id, *attempt))
            .cloned()
            .collect(),
        starts: running
            .iter()
            .filter(|(id, attempt)| {
                owned
                    .get(id)
                    .is_some_and(|o| o.attempt == *attempt && !o.started)
            })
            .cloned()
            .collect(),
    }
}

/// The revocations a cancel of `mission` sends, by owner: every task that
/// has one (`(task, owner, attempt)`), at the attempt it holds it at, so a
/// node that already moved on to a newer attempt keeps it.
pub fn revocations<'a>(
    mission: &str,
    owned: impl IntoIterator<Item = (&'a str, NodeId, u32)>,
) -> BTreeMap<NodeId, Vec<(TaskId, u32)>> {
    let mut by_owner: BTreeMap<NodeId, Vec<(TaskId, u32)>> = BTreeMap::new();
    for (task, owner, attempt) in owned {
        by_owner
            .entry(owner)
            .or_default()
            .push((TaskId::new(mission, task), attempt));
    }
    by_owner
}

/// What a ready task carried into the round: its attempt (the fencing token
/// its assignment is committed at) and the reason it last waited.
pub type ReadyFacts<'a> = BTreeMap<&'a TaskId, (u32, Option<&'a str>)>;

/// The commands of one placement round, in one Raft entry: first the
/// reasons that changed (at most `max_reasons`, grouped by mission), then
/// one assignment per placement. Returns them with the index of the first
/// assignment, so the caller can match the entry's answers to placements.
pub fn round_commands(
    plan: &PlacementPlan,
    ready: &ReadyFacts<'_>,
    now_ms: u64,
    max_reasons: usize,
) -> (Vec<Command>, usize) {
    let mut reasons: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, reason) in plan.unplaceable.iter().take(max_reasons) {
        let text = reason.to_string();
        if ready.get(id).and_then(|(_, r)| *r) != Some(text.as_str()) {
            reasons
                .entry(id.mission.clone())
                .or_default()
                .push((id.task.clone(), text));
        }
    }
    let mut commands: Vec<Command> = reasons
        .into_iter()
        .map(|(mission, reasons)| Command::NoteReasons { mission, reasons })
        .collect();
    let first_assignment = commands.len();
    commands.extend(
        plan.assignments
            .iter()
            .map(|(id, node)| Command::AssignTask {
                mission: id.mission.clone(),
                task: id.task.clone(),
                node: *node,
                attempt: ready.get(id).map(|(a, _)| *a).unwrap_or(0),
                at_ms: now_ms,
            }),
    );
    (commands, first_assignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Reason;
    use proptest::prelude::*;

    fn id(task: &str) -> TaskId {
        TaskId::new("m", task)
    }

    #[test]
    fn a_lease_ends_for_a_node_that_left_or_fell_silent_and_only_for_them() {
        let silent = |node: NodeId| Duration::from_millis(node * 1000);
        let left = BTreeSet::from([1]);
        let ended = expired_leases([1, 2, 3, 4], &left, silent, Duration::from_secs(3));
        assert_eq!(
            ended,
            vec![
                Expired {
                    node: 1,
                    cause: LeaseEnd::Left
                },
                Expired {
                    node: 4,
                    cause: LeaseEnd::Silent { silent_ms: 4000 }
                },
            ]
        );
        assert!(
            ended[1].reason().contains("4000 ms silent"),
            "{}",
            ended[1].reason()
        );
    }

    #[test]
    fn reconciliation_resends_the_missing_revokes_the_stale_and_commits_starts() {
        let owned = BTreeMap::from([
            (
                id("a"),
                Owned {
                    attempt: 1,
                    started: false,
                },
            ),
            (
                id("b"),
                Owned {
                    attempt: 2,
                    started: true,
                },
            ),
            (
                id("c"),
                Owned {
                    attempt: 1,
                    started: false,
                },
            ),
        ]);
        // `b` is held at an old attempt, `d` is not ours any more, `c` runs.
        let holding = vec![(id("b"), 1), (id("c"), 1), (id("d"), 3)];
        let running = vec![(id("c"), 1), (id("d"), 3)];
        let answer = reconcile(&owned, &holding, &running);
        assert_eq!(answer.missing, vec![id("a"), id("b")]);
        assert_eq!(answer.revoked, vec![(id("b"), 1), (id("d"), 3)]);
        assert_eq!(answer.starts, vec![(id("c"), 1)]);
    }

    #[test]
    fn a_cancel_revokes_each_owned_task_from_its_owner_at_its_attempt() {
        let by_owner = revocations("m", [("a", 1, 3), ("b", 2, 1), ("c", 1, 1)]);
        assert_eq!(
            by_owner,
            BTreeMap::from([
                (1, vec![(id("a"), 3), (id("c"), 1)]),
                (2, vec![(id("b"), 1)]),
            ])
        );
    }

    #[test]
    fn a_round_writes_changed_reasons_then_assignments_at_their_attempts() {
        let plan = PlacementPlan {
            assignments: vec![(id("a"), 7)],
            unplaceable: vec![
                (
                    id("same"),
                    Reason::Unmet {
                        tags: vec!["gpu".into()],
                    },
                ),
                (
                    id("new"),
                    Reason::Unmet {
                        tags: vec!["gpu".into()],
                    },
                ),
            ],
        };
        let text = Reason::Unmet {
            tags: vec!["gpu".into()],
        }
        .to_string();
        let (a, same, new) = (id("a"), id("same"), id("new"));
        let ready: ReadyFacts<'_> = BTreeMap::from([
            (&a, (3, None)),
            (&same, (0, Some(text.as_str()))),
            (&new, (0, None)),
        ]);
        let (commands, first) = round_commands(&plan, &ready, 99, 16);
        assert_eq!(first, 1);
        assert_eq!(
            commands,
            vec![
                Command::NoteReasons {
                    mission: "m".into(),
                    reasons: vec![("new".into(), text.clone())],
                },
                Command::AssignTask {
                    mission: "m".into(),
                    task: "a".into(),
                    node: 7,
                    attempt: 3,
                    at_ms: 99,
                },
            ]
        );
        let (capped, first) = round_commands(&plan, &ready, 99, 1);
        assert_eq!(first, 0, "the one reason allowed was unchanged: {capped:?}");
    }

    /// One step of the lease model: the leader's view of the mesh over time.
    #[derive(Clone, Debug)]
    enum Step {
        /// Time passes.
        Wait(u64),
        /// A node heartbeats.
        Heard(NodeId),
        /// The leader assigns a free task to a node.
        Assign(usize, NodeId),
        /// A node leaves.
        Leave(NodeId),
        /// A round: leases are checked and the releases applied.
        Round,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..2_000).prop_map(Step::Wait),
            (1u64..5).prop_map(Step::Heard),
            ((0usize..8), (1u64..5)).prop_map(|(t, n)| Step::Assign(t, n)),
            (1u64..5).prop_map(Step::Leave),
            Just(Step::Round),
        ]
    }

    proptest! {
        /// A lease never expires a task twice (each (task, attempt) at most
        /// once), never expires a task of a node heard within the lease,
        /// and always expires those of a node past it.
        #[test]
        fn a_lease_never_expires_a_task_twice(steps in prop::collection::vec(step(), 1..120)) {
            let lease = Duration::from_millis(3_000);
            let mut now = 0u64;
            let mut heard: BTreeMap<NodeId, u64> = BTreeMap::new();
            let mut left: BTreeSet<NodeId> = BTreeSet::new();
            // Per task: (owner, attempt), as the replicated state keeps it.
            let mut tasks: Vec<(Option<NodeId>, u32)> = vec![(None, 0); 8];
            let mut expired: BTreeSet<(usize, u32)> = BTreeSet::new();
            for step in steps {
                match step {
                    Step::Wait(ms) => now += ms,
                    Step::Heard(node) => { heard.insert(node, now); }
                    Step::Leave(node) => { left.insert(node); }
                    Step::Assign(task, node) => {
                        if tasks[task].0.is_none() && !left.contains(&node) {
                            tasks[task].0 = Some(node);
                            // Assigning counts as hearing of it (it was live).
                            heard.entry(node).or_insert(now);
                        }
                    }
                    Step::Round => {
                        let holders: BTreeSet<NodeId> = tasks.iter().filter_map(|t| t.0).collect();
                        let silent = |n: NodeId| Duration::from_millis(now - heard.get(&n).copied().unwrap_or(0));
                        let ended = expired_leases(holders.iter().copied(), &left, silent, lease);
                        for holder in &holders {
                            let past = left.contains(holder) || silent(*holder) > lease;
                            prop_assert_eq!(past, ended.iter().any(|e| e.node == *holder));
                        }
                        // `ReleaseNode` as the state machine applies it:
                        // the task loses its owner and moves to the next attempt.
                        for end in &ended {
                            for (index, task) in tasks.iter_mut().enumerate() {
                                if task.0 == Some(end.node) {
                                    prop_assert!(expired.insert((index, task.1)), "task {} expired twice at attempt {}", index, task.1);
                                    *task = (None, task.1 + 1);
                                }
                            }
                        }
                    }
                }
            }
        }

        /// Reconciliation converges: after the node applies the answer, it
        /// holds exactly what the state gives it and a second heartbeat gets
        /// an empty answer.
        #[test]
        fn reconciliation_converges(
            owned in prop::collection::btree_map(0u8..12, (0u32..4, any::<bool>()), 0..12),
            holding in prop::collection::btree_map(0u8..12, 0u32..4, 0..12),
        ) {
            let owned: BTreeMap<TaskId, Owned> = owned
                .into_iter()
                .map(|(t, (attempt, started))| (id(&t.to_string()), Owned { attempt, started }))
                .collect();
            let mut node: BTreeMap<TaskId, u32> =
                holding.into_iter().map(|(t, a)| (id(&t.to_string()), a)).collect();
            let listed: Vec<(TaskId, u32)> = node.iter().map(|(i, a)| (i.clone(), *a)).collect();
            let answer = reconcile(&owned, &listed, &listed);
            for (task, attempt) in &answer.revoked {
                if node.get(task) == Some(attempt) {
                    node.remove(task);
                }
            }
            for task in &answer.missing {
                node.insert(task.clone(), owned[task].attempt);
            }
            let wanted: BTreeMap<TaskId, u32> = owned.iter().map(|(i, o)| (i.clone(), o.attempt)).collect();
            prop_assert_eq!(&node, &wanted);
            let listed: Vec<(TaskId, u32)> = node.iter().map(|(i, a)| (i.clone(), *a)).collect();
            let again = reconcile(&owned, &listed, &[]);
            prop_assert!(again.missing.is_empty() && again.revoked.is_empty(), "{:?}", again);
            // Starts are only ever asked for tasks the node owns at that attempt.
            for (task, attempt) in &answer.starts {
                prop_assert_eq!(owned.get(task).map(|o| o.attempt), Some(*attempt));
            }
        }
    }
}
