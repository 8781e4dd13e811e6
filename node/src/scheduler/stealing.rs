//! Work stealing: an idle node asks the busiest peer for queued tasks that
//! have not started, and the peer decides what it gives up. Both sides run
//! the same rule, so with the same view they agree; the transfer itself is
//! committed through Raft as a compare-and-set on the task's owner, which
//! refuses it if the task started or moved in the meantime.
//!
//! Policy choices, each with its reason:
//! - A thief asks for as many tasks as it has free slots plus `prefetch`
//!   (default 1) so it does not sit idle between steals; one while its
//!   breaker is half-open, none while it is open. What it holds beyond its
//!   slots is then at most `prefetch`, and a lone surplus task is never
//!   stolen (below), so with the default the thief never becomes the next
//!   victim.
//! - The victim keeps the queued tasks its own free slots are about to start;
//!   only the rest, its surplus, is stealable, and at most half of it,
//!   rounded down. The victim therefore keeps at least as much waiting work
//!   as it gives, two nodes never ping-pong a task, and a victim never loses
//!   more than half its queue. A lone surplus task stays where it is.
//! - The most urgent surplus tasks go first: they would start next on the
//!   victim anyway, and on the thief they start now.
//! - Never a task the thief cannot run, and never one whose avoid set names
//!   the thief (it already failed there for a node-specific reason).
//! - The victim is the peer with the highest `(running + queued) / slots`
//!   that has something to give; ties go to the lower node id.

use std::collections::BTreeSet;

use coditect_consensus::{Capabilities, NodeId};
use serde::{Deserialize, Serialize};

use super::breaker::BreakerGate;
use super::view::{NodeView, TaskId, TaskView};

/// Limits on one steal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StealConfig {
    /// Most tasks moved by one request, whatever the free slots.
    pub max_tasks_per_steal: u32,
    /// Tasks asked for beyond the free slots (queued to start next).
    pub prefetch: u32,
}

impl Default for StealConfig {
    fn default() -> Self {
        StealConfig {
            max_tasks_per_steal: 8,
            prefetch: 1,
        }
    }
}

/// A peer's load as its adverts and the replicated state show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLoad {
    /// Which node.
    pub node: NodeId,
    /// Tasks assigned to it and not yet started; running tasks are never here.
    pub queued_tasks: Vec<TaskView>,
    /// Tasks running on it now.
    pub running: u32,
    /// Its task slots.
    pub slots: u32,
    /// What it offers.
    pub capabilities: Capabilities,
}

impl PeerLoad {
    /// Whether it is busier than `other` by `(running + queued) / slots`.
    fn busier_than(&self, other: &PeerLoad) -> bool {
        let holding = |peer: &PeerLoad| u128::from(peer.running) + peer.queued_tasks.len() as u128;
        let mine = holding(self) * u128::from(other.slots.max(1));
        let theirs = holding(other) * u128::from(self.slots.max(1));
        mine > theirs || (mine == theirs && self.node < other.node)
    }
}

/// What a thief asks a victim for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StealRequest {
    /// The node asking.
    pub thief: NodeId,
    /// The node asked.
    pub victim: NodeId,
    /// The tasks wanted, most urgent first.
    pub tasks: Vec<TaskId>,
}

/// The thief's side: whom to ask for which tasks, or nothing when the thief
/// has no free slot or no peer has work it can take.
pub fn choose_steal(
    thief: &NodeView,
    peers: &[PeerLoad],
    config: &StealConfig,
) -> Option<StealRequest> {
    let wanted = match thief.breaker {
        _ if !thief.live => 0,
        BreakerGate::Open => 0,
        BreakerGate::Probe => thief.free_slots().min(1),
        BreakerGate::Closed if thief.free_slots() == 0 => 0,
        BreakerGate::Closed => thief.free_slots().saturating_add(config.prefetch),
    }
    .min(config.max_tasks_per_steal) as usize;
    if wanted == 0 {
        return None;
    }
    let mut best: Option<(&PeerLoad, Vec<TaskId>)> = None;
    for peer in peers.iter().filter(|peer| peer.node != thief.id) {
        let tasks = surrender(peer, thief.id, &thief.capabilities, wanted, None);
        if tasks.is_empty() {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(current, _)| peer.busier_than(current))
        {
            best = Some((peer, tasks));
        }
    }
    best.map(|(victim, tasks)| StealRequest {
        thief: thief.id,
        victim: victim.node,
        tasks,
    })
}

/// The victim's side: which of the requested tasks it gives up, judged on
/// its own current queue (tasks that started or left since the thief looked
/// are refused), by the same rule the thief used.
pub fn approve_steal(
    victim: &PeerLoad,
    request: &StealRequest,
    thief_capabilities: &Capabilities,
    config: &StealConfig,
) -> Vec<TaskId> {
    if request.victim != victim.node || request.thief == victim.node {
        return Vec::new();
    }
    let requested: BTreeSet<&TaskId> = request.tasks.iter().collect();
    let limit = requested.len().min(config.max_tasks_per_steal as usize);
    surrender(
        victim,
        request.thief,
        thief_capabilities,
        limit,
        Some(&requested),
    )
}

/// The queued tasks `victim` can give `thief`, most urgent first, at most
/// `limit` and at most half its surplus; only those in `requested` if given.
fn surrender(
    victim: &PeerLoad,
    thief: NodeId,
    thief_capabilities: &Capabilities,
    limit: usize,
    requested: Option<&BTreeSet<&TaskId>>,
) -> Vec<TaskId> {
    let kept_for_own_slots = victim.slots.saturating_sub(victim.running) as usize;
    let surplus = victim.queued_tasks.len().saturating_sub(kept_for_own_slots);
    let limit = limit.min(surplus / 2);
    if limit == 0 {
        return Vec::new();
    }
    let mut queue: Vec<&TaskView> = victim.queued_tasks.iter().collect();
    queue.sort_by(|a, b| a.urgency().cmp(&b.urgency()));
    queue
        .into_iter()
        .skip(kept_for_own_slots)
        .filter(|task| {
            task.runs_on(thief_capabilities)
                && !task.avoid_nodes.contains(&thief)
                && requested.is_none_or(|requested| requested.contains(&task.id))
        })
        .take(limit)
        .map(|task| task.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    use crate::scheduler::view::test_capabilities as capabilities;

    fn thief(slots: u32, running: u32, tags: &[&str]) -> NodeView {
        NodeView {
            id: 100,
            capabilities: capabilities(slots, tags),
            running,
            queued: 0,
            live: true,
            breaker: BreakerGate::Closed,
            window: None,
        }
    }

    fn queued(name: &str, priority: u8, requires: &[&str]) -> TaskView {
        TaskView {
            id: TaskId::new("m", name),
            priority,
            ready_seq: 0,
            requires: requires.iter().map(|tag| tag.to_string()).collect(),
            avoid_nodes: BTreeSet::new(),
            home: None,
        }
    }

    fn peer(node: NodeId, slots: u32, running: u32, queue: Vec<TaskView>) -> PeerLoad {
        PeerLoad {
            node,
            queued_tasks: queue,
            running,
            slots,
            capabilities: capabilities(slots, &[]),
        }
    }

    fn names(count: usize, priority: u8) -> Vec<TaskView> {
        (0..count)
            .map(|i| queued(&format!("p{priority}-{i}"), priority, &[]))
            .collect()
    }

    fn task_names(ids: &[TaskId]) -> Vec<&str> {
        ids.iter().map(|id| id.task.as_str()).collect()
    }

    #[test]
    fn idle_node_takes_half_the_surplus_of_the_busiest_peer() {
        let peers = [peer(1, 2, 2, names(2, 1)), peer(2, 2, 2, names(6, 1))];
        let request = choose_steal(&thief(8, 0, &[]), &peers, &StealConfig::default()).unwrap();
        assert_eq!(request.victim, 2);
        assert_eq!(request.tasks.len(), 3);
        assert_eq!(
            approve_steal(
                &peers[1],
                &request,
                &capabilities(8, &[]),
                &StealConfig::default()
            ),
            request.tasks
        );
    }

    #[test]
    fn busy_thief_does_not_steal() {
        let peers = [peer(1, 1, 1, names(6, 1))];
        assert_eq!(
            choose_steal(&thief(2, 2, &[]), &peers, &StealConfig::default()),
            None
        );
        let mut paused = thief(2, 0, &[]);
        paused.breaker = BreakerGate::Open;
        assert_eq!(choose_steal(&paused, &peers, &StealConfig::default()), None);
        paused.breaker = BreakerGate::Probe;
        let request = choose_steal(&paused, &peers, &StealConfig::default()).unwrap();
        assert_eq!(request.tasks.len(), 1, "a half-open thief takes one probe");
    }

    #[test]
    fn thief_takes_at_most_its_free_slots_most_urgent_first() {
        let mut queue = names(4, 2);
        queue.extend(names(4, 0));
        let peers = [peer(1, 1, 1, queue)];
        let exact = StealConfig {
            prefetch: 0,
            ..StealConfig::default()
        };
        let request = choose_steal(&thief(4, 2, &[]), &peers, &exact).unwrap();
        assert_eq!(task_names(&request.tasks), vec!["p0-0", "p0-1"]);
        // By default one more, queued to start next.
        let request = choose_steal(&thief(4, 2, &[]), &peers, &StealConfig::default()).unwrap();
        assert_eq!(task_names(&request.tasks), vec!["p0-0", "p0-1", "p0-2"]);
    }

    #[test]
    fn victim_keeps_the_tasks_its_free_slots_will_start() {
        // Two free slots on the victim absorb the two most urgent; two are surplus.
        let peers = [peer(1, 4, 2, names(4, 1))];
        let request = choose_steal(&thief(4, 0, &[]), &peers, &StealConfig::default()).unwrap();
        assert_eq!(task_names(&request.tasks), vec!["p1-2"]);
        let lone = [peer(1, 1, 1, names(1, 1))];
        assert_eq!(
            choose_steal(&thief(4, 0, &[]), &lone, &StealConfig::default()),
            None
        );
    }

    #[test]
    fn never_a_task_the_thief_cannot_run_or_must_avoid() {
        let mut avoided = queued("avoided", 0, &[]);
        avoided.avoid_nodes.insert(100);
        let queue = vec![
            queued("gpu", 0, &["gpu"]),
            avoided,
            queued("plain-a", 1, &[]),
            queued("plain-b", 1, &[]),
            queued("plain-c", 1, &[]),
            queued("plain-d", 1, &[]),
        ];
        let peers = [peer(1, 1, 1, queue)];
        let request = choose_steal(&thief(8, 0, &[]), &peers, &StealConfig::default()).unwrap();
        assert_eq!(
            task_names(&request.tasks),
            vec!["plain-a", "plain-b", "plain-c"]
        );
    }

    #[test]
    fn victim_refuses_tasks_that_started_or_moved() {
        let victim_before = peer(1, 1, 1, names(5, 1));
        let request =
            choose_steal(&thief(8, 0, &[]), &[victim_before], &StealConfig::default()).unwrap();
        assert_eq!(task_names(&request.tasks), vec!["p1-0", "p1-1"]);
        // p1-0 started in the meantime; the queue shrank by one.
        let victim_now = peer(1, 1, 1, names(5, 1).split_off(1));
        assert_eq!(
            task_names(&approve_steal(
                &victim_now,
                &request,
                &capabilities(8, &[]),
                &StealConfig::default()
            )),
            vec!["p1-1"]
        );
        let elsewhere = peer(2, 1, 1, names(5, 1));
        assert!(approve_steal(
            &elsewhere,
            &request,
            &capabilities(8, &[]),
            &StealConfig::default()
        )
        .is_empty());
    }

    fn arbitrary_peers() -> impl Strategy<Value = Vec<PeerLoad>> {
        proptest::collection::vec(
            (
                0u32..4,
                0u32..5,
                proptest::collection::vec(
                    (
                        0u8..4,
                        proptest::collection::btree_set(
                            prop_oneof![Just("gpu"), Just("wasm")],
                            0..2,
                        ),
                        any::<bool>(),
                    ),
                    0..10,
                ),
            ),
            0..5,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(index, (slots, running, queue))| {
                    let node = index as NodeId + 1;
                    let queue = queue
                        .into_iter()
                        .enumerate()
                        .map(|(i, (priority, requires, avoid_thief))| {
                            let mut task = queued(
                                &format!("n{node}-t{i}"),
                                priority,
                                &requires.into_iter().collect::<Vec<_>>(),
                            );
                            if avoid_thief {
                                task.avoid_nodes.insert(100);
                            }
                            task
                        })
                        .collect();
                    peer(node, slots, running, queue)
                })
                .collect()
        })
    }

    proptest! {
        /// A steal only takes queued tasks of the victim, at most half its
        /// queue, at most the thief's free slots, only tasks the thief can
        /// run and need not avoid; and the victim, seeing what the thief saw,
        /// approves exactly that.
        #[test]
        fn steals_are_safe(
            peers in arbitrary_peers(),
            thief_slots in 0u32..6,
            thief_running in 0u32..6,
            thief_has_gpu in any::<bool>(),
            max_tasks in 1u32..6,
            prefetch in 0u32..3,
        ) {
            let tags: &[&str] = if thief_has_gpu { &["gpu"] } else { &[] };
            let thief = thief(thief_slots, thief_running, tags);
            let config = StealConfig { max_tasks_per_steal: max_tasks, prefetch };
            let Some(request) = choose_steal(&thief, &peers, &config) else {
                return Ok(());
            };
            prop_assert_ne!(request.victim, thief.id);
            let victim = peers.iter().find(|p| p.node == request.victim).unwrap();
            let queue: HashMap<&TaskId, &TaskView> = victim.queued_tasks.iter().map(|t| (&t.id, t)).collect();
            prop_assert!(!request.tasks.is_empty());
            prop_assert!(request.tasks.len() * 2 <= victim.queued_tasks.len());
            prop_assert!(thief.free_slots() > 0);
            prop_assert!(request.tasks.len() <= (thief.free_slots() + prefetch) as usize);
            prop_assert!(request.tasks.len() <= max_tasks as usize);
            for id in &request.tasks {
                let task = queue.get(id);
                prop_assert!(task.is_some(), "{} is not queued on the victim", id);
                let task = task.unwrap();
                prop_assert!(task.runs_on(&thief.capabilities));
                prop_assert!(!task.avoid_nodes.contains(&thief.id));
            }
            let approved = approve_steal(victim, &request, &thief.capabilities, &config);
            prop_assert_eq!(&approved, &request.tasks);
        }
    }
}
