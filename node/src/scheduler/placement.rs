//! Placement: which ready task goes to which node, decided by the leader in
//! one pass over a snapshot of the mesh.
//!
//! Policy choices, each with its reason:
//! - Only live nodes whose breaker is not open and whose capabilities offer
//!   every tag the task requires are candidates.
//! - Tasks are served most urgent first: P0 before P3, then the oldest, then
//!   by id so equal tasks still come out in one order.
//! - Each node is filled up to `slots + depth` tasks (running plus queued)
//!   and never beyond, so a burst leaves queued work that idle peers can
//!   steal instead of piling up on one node. `depth` is the node's own
//!   queue window when it advertises one (deep enough to cover the dispatch
//!   round trip, see [`super::window`]), else `queue_depth_beyond_slots`.
//!   A half-open breaker takes exactly one task, its probe.
//! - Load is spread: by default every task goes to the candidate with the
//!   lowest `(running + queued) / slots`, ties broken by a seeded hash of
//!   the node id so no node is always first, except that the task's home
//!   (the node holding its inputs) wins a tie: a small mission on a quiet
//!   mesh runs where it was submitted, without the hops of an assignment
//!   and a report between nodes. Power-of-two choices (two
//!   seeded random candidates, the less loaded wins) is there for large
//!   meshes.
//! - A task avoids the nodes in its avoid set whenever another candidate
//!   exists, even a full one: it failed there for a node-specific reason,
//!   and waiting for a slot elsewhere is cheaper than a likely second
//!   failure. It goes back to an avoided node only when no other candidate
//!   is left.
//! - A task that cannot be placed gets a [`Reason`]. Requirements no live
//!   node meets are named, so a mission does not wait silently; "full" and
//!   "paused" are just waiting and clear by themselves.

use std::collections::BTreeMap;
use std::fmt;

use coditect_consensus::NodeId;
use serde::{Deserialize, Serialize};

use super::breaker::BreakerGate;
use super::view::{NodeView, TaskId, TaskView};

/// How placement fills and spreads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConfig {
    /// Tasks a node may hold beyond its slots (queued, waiting for a slot)
    /// when it advertises no window of its own.
    pub queue_depth_beyond_slots: u32,
    /// How a node is chosen among the candidates with room.
    pub spread: Spread,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            queue_depth_beyond_slots: 2,
            spread: Spread::LeastLoaded,
        }
    }
}

/// How a node is chosen among the candidates with room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// The least loaded candidate; ties broken by a seeded hash.
    LeastLoaded,
    /// The less loaded of two seeded random candidates, the classic remedy
    /// for many deciders herding onto one node from slightly stale loads.
    PowerOfTwoChoices,
}

/// Why a ready task was not placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No node is live.
    NoLiveNode,
    /// No live node offers these required tags (in the task's order).
    Unmet {
        /// The tags nobody offers.
        tags: Vec<String>,
    },
    /// Every required tag is offered somewhere, but no live node offers them all.
    NoNodeOffersAll {
        /// The task's requirements.
        tags: Vec<String>,
    },
    /// Every live node that could run it has its circuit breaker open.
    CapableNodesPaused,
    /// Every node that could run it is full; it waits for a slot.
    CapableNodesFull,
}

impl Reason {
    /// Whether the task just waits for capacity that frees itself, as
    /// opposed to needing a node the mesh does not have.
    pub fn is_waiting_for_capacity(&self) -> bool {
        matches!(self, Reason::CapableNodesPaused | Reason::CapableNodesFull)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |tags: &[String]| {
            tags.iter()
                .map(|tag| format!("`{tag}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Reason::NoLiveNode => f.write_str("no live node"),
            Reason::Unmet { tags } => write!(f, "no live node offers {}", quoted(tags)),
            Reason::NoNodeOffersAll { tags } => {
                write!(f, "no live node offers {} together", quoted(tags))
            }
            Reason::CapableNodesPaused => {
                f.write_str("every capable node is paused by its circuit breaker")
            }
            Reason::CapableNodesFull => f.write_str("all capable nodes are full"),
        }
    }
}

/// The outcome of one placement round; the runtime commits the assignments
/// through Raft as compare-and-set and writes the reasons into the tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementPlan {
    /// Task to node, in the order they were decided (most urgent first).
    pub assignments: Vec<(TaskId, NodeId)>,
    /// Tasks left ready, with why.
    pub unplaceable: Vec<(TaskId, Reason)>,
}

/// A node as placement tracks it during one round.
struct Room {
    id: NodeId,
    slots: u64,
    holding: u64,
    remaining: u32,
    tie_break: u64,
}

impl Room {
    /// Whether this node is less loaded than `other` by `holding / slots`,
    /// compared by cross-multiplying so no floats are involved; on equal
    /// load the task's `home` wins, then the seeded tie-break.
    fn lighter_than(&self, other: &Room, home: Option<NodeId>) -> bool {
        let mine = u128::from(self.holding) * u128::from(other.slots.max(1));
        let theirs = u128::from(other.holding) * u128::from(self.slots.max(1));
        let away = |room: &Room| home != Some(room.id);
        (mine, away(self), self.tie_break, self.id)
            < (theirs, away(other), other.tie_break, other.id)
    }
}

/// How many more tasks `node` may take now: up to slots plus its depth
/// (its window, else the default), none while it is not live, drains or has
/// its breaker open, one (the probe) while the breaker is half open.
pub fn room_left(node: &NodeView, config: &PlacementConfig) -> u32 {
    let capacity = node
        .capabilities
        .slots
        .saturating_add(node.window.unwrap_or(config.queue_depth_beyond_slots));
    let room = capacity.saturating_sub(node.holding());
    match node.breaker {
        _ if !node.live || node.capabilities.slots == 0 => 0,
        BreakerGate::Open => 0,
        BreakerGate::Probe => room.min(1),
        BreakerGate::Closed => room,
    }
}

/// Decides where the ready tasks go. `rng_seed` drives tie-breaking and
/// power-of-two choices; the same inputs and seed give the same plan.
///
/// `ready` lists each task once. When the plan sends a task to a node whose
/// breaker gate is [`BreakerGate::Probe`], the runtime records it with
/// [`super::breaker::Breaker::record_placement`], so the next round sees no
/// second probe.
pub fn place(
    ready: &[TaskView],
    nodes: &[NodeView],
    config: &PlacementConfig,
    rng_seed: u64,
) -> PlacementPlan {
    let mut rooms: Vec<Room> = nodes
        .iter()
        .map(|node| {
            let remaining = room_left(node, config);
            Room {
                id: node.id,
                slots: u64::from(node.capabilities.slots),
                holding: u64::from(node.holding()),
                remaining,
                tie_break: split_mix(rng_seed ^ split_mix(node.id)),
            }
        })
        .collect();

    let mut order: Vec<&TaskView> = ready.iter().collect();
    order.sort_by(|a, b| a.urgency().cmp(&b.urgency()));

    let mut candidates_by_requirements: BTreeMap<&[String], Result<Vec<usize>, Reason>> =
        BTreeMap::new();
    let mut rng = rng_seed;
    let mut plan = PlacementPlan::default();
    for task in order {
        let candidates = candidates_by_requirements
            .entry(task.requires.as_slice())
            .or_insert_with(|| candidates(task, nodes));
        let candidates = match candidates {
            Ok(candidates) => candidates,
            Err(reason) => {
                plan.unplaceable.push((task.id.clone(), reason.clone()));
                continue;
            }
        };
        let preferred: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&index| !task.avoid_nodes.contains(&nodes[index].id))
            .collect();
        let allowed = if preferred.is_empty() {
            candidates.as_slice()
        } else {
            preferred.as_slice()
        };
        let with_room: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|&index| rooms[index].remaining > 0)
            .collect();
        let chosen = match config.spread {
            Spread::LeastLoaded => least_loaded(&rooms, &with_room, task.home),
            Spread::PowerOfTwoChoices => two_choices(&rooms, &with_room, task.home, &mut rng),
        };
        match chosen {
            Some(index) => {
                let room = &mut rooms[index];
                room.remaining -= 1;
                room.holding += 1;
                plan.assignments.push((task.id.clone(), room.id));
            }
            None => plan
                .unplaceable
                .push((task.id.clone(), Reason::CapableNodesFull)),
        }
    }
    plan
}

/// The indices of the nodes that may take `task` now (live, breaker not
/// open, every tag offered), whatever their room; or why there are none.
fn candidates(task: &TaskView, nodes: &[NodeView]) -> Result<Vec<usize>, Reason> {
    let live: Vec<&NodeView> = nodes.iter().filter(|node| node.live).collect();
    if live.is_empty() {
        return Err(Reason::NoLiveNode);
    }
    let mut unmet: Vec<String> = Vec::new();
    for tag in &task.requires {
        if !unmet.contains(tag) && !live.iter().any(|node| node.capabilities.has(tag)) {
            unmet.push(tag.clone());
        }
    }
    if !unmet.is_empty() {
        return Err(Reason::Unmet { tags: unmet });
    }
    if !live.iter().any(|node| task.runs_on(&node.capabilities)) {
        return Err(Reason::NoNodeOffersAll {
            tags: task.requires.clone(),
        });
    }
    let open: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| {
            node.live && node.breaker != BreakerGate::Open && task.runs_on(&node.capabilities)
        })
        .map(|(index, _)| index)
        .collect();
    if open.is_empty() {
        return Err(Reason::CapableNodesPaused);
    }
    Ok(open)
}

fn least_loaded(rooms: &[Room], with_room: &[usize], home: Option<NodeId>) -> Option<usize> {
    with_room.iter().copied().reduce(|best, next| {
        if rooms[next].lighter_than(&rooms[best], home) {
            next
        } else {
            best
        }
    })
}

fn two_choices(
    rooms: &[Room],
    with_room: &[usize],
    home: Option<NodeId>,
    rng: &mut u64,
) -> Option<usize> {
    match with_room.len() {
        0 => None,
        1 => Some(with_room[0]),
        count => {
            let first = next_below(rng, count);
            let mut second = next_below(rng, count - 1);
            if second >= first {
                second += 1;
            }
            let (first, second) = (with_room[first], with_room[second]);
            Some(if rooms[second].lighter_than(&rooms[first], home) {
                second
            } else {
                first
            })
        }
    }
}

/// SplitMix64: a tiny, fixed mixing function. Owning it (rather than a
/// library RNG) keeps placements, and so simulation traces, identical across
/// dependency upgrades.
fn split_mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The next value of the SplitMix64 sequence reduced below `bound` (> 0);
/// the tiny modulo bias does not matter for spreading load.
fn next_below(state: &mut u64, bound: usize) -> usize {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (split_mix(*state) % bound as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn node(id: NodeId, slots: u32, tags: &[&str]) -> NodeView {
        NodeView {
            id,
            capabilities: crate::scheduler::view::test_capabilities(slots, tags),
            running: 0,
            queued: 0,
            live: true,
            breaker: BreakerGate::Closed,
            window: None,
        }
    }

    fn task(name: &str, priority: u8, ready_seq: u64, requires: &[&str]) -> TaskView {
        TaskView {
            id: TaskId::new("m", name),
            priority,
            ready_seq,
            requires: requires.iter().map(|tag| tag.to_string()).collect(),
            avoid_nodes: BTreeSet::new(),
            home: None,
        }
    }

    fn counts(plan: &PlacementPlan) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for (_, node) in &plan.assignments {
            *counts.entry(*node).or_default() += 1;
        }
        counts
    }

    fn reason_of<'a>(plan: &'a PlacementPlan, name: &str) -> Option<&'a Reason> {
        plan.unplaceable
            .iter()
            .find(|(id, _)| id.task == name)
            .map(|(_, reason)| reason)
    }

    #[test]
    fn spreads_evenly_and_fills_to_slots_plus_depth() {
        let nodes = [node(1, 2, &[]), node(2, 2, &[])];
        let ready: Vec<TaskView> = (0..10)
            .map(|i| task(&format!("t{i}"), 1, i, &["wasm"]))
            .collect();
        let plan = place(&ready, &nodes, &PlacementConfig::default(), 7);
        assert_eq!(counts(&plan), BTreeMap::from([(1, 4), (2, 4)]));
        assert_eq!(plan.unplaceable.len(), 2);
        assert_eq!(reason_of(&plan, "t8"), Some(&Reason::CapableNodesFull));
        assert!(Reason::CapableNodesFull.is_waiting_for_capacity());
    }

    #[test]
    fn a_nodes_own_window_replaces_the_default_depth() {
        let mut deep = node(1, 2, &[]);
        deep.window = Some(10);
        let mut shallow = node(2, 2, &[]);
        shallow.window = Some(0);
        let nodes = [deep, shallow, node(3, 2, &[])];
        let ready: Vec<TaskView> = (0..40).map(|i| task(&format!("t{i}"), 1, i, &[])).collect();
        let plan = place(&ready, &nodes, &PlacementConfig::default(), 3);
        // 2 + 10, 2 + 0, and 2 + the default 2.
        assert_eq!(counts(&plan), BTreeMap::from([(1, 12), (2, 2), (3, 4)]));
        assert_eq!(plan.unplaceable.len(), 40 - 18);
    }

    #[test]
    fn home_wins_a_tie_of_load_and_nothing_more() {
        let nodes = [node(1, 2, &[]), node(2, 2, &[]), node(3, 2, &[])];
        for seed in 0..32 {
            let homed = |home| TaskView {
                home: Some(home),
                ..task("t0", 1, 0, &[])
            };
            // A quiet mesh: the task runs where its inputs are, whatever the seed.
            for home in [1, 2, 3] {
                let plan = place(&[homed(home)], &nodes, &PlacementConfig::default(), seed);
                assert_eq!(plan.assignments[0].1, home, "seed {seed}");
            }
            // A busier home does not win: load comes first.
            let mut busy = nodes.clone();
            busy[1].running = 1;
            let plan = place(&[homed(2)], &busy, &PlacementConfig::default(), seed);
            assert_ne!(plan.assignments[0].1, 2, "seed {seed}");
            // Many tasks of one home still spread evenly.
            let many: Vec<TaskView> = (0..12)
                .map(|i| TaskView {
                    home: Some(1),
                    ..task(&format!("t{i}"), 1, i, &[])
                })
                .collect();
            let plan = place(&many, &nodes, &PlacementConfig::default(), seed);
            assert_eq!(counts(&plan), BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        }
    }

    #[test]
    fn busier_node_gets_fewer_tasks() {
        let mut busy = node(1, 4, &[]);
        busy.running = 4;
        let nodes = [busy, node(2, 4, &[])];
        let ready: Vec<TaskView> = (0..4).map(|i| task(&format!("t{i}"), 1, i, &[])).collect();
        let plan = place(&ready, &nodes, &PlacementConfig::default(), 0);
        assert_eq!(counts(&plan), BTreeMap::from([(2, 4)]));
    }

    #[test]
    fn urgent_tasks_go_first_then_oldest() {
        let nodes = [node(1, 1, &[])];
        let config = PlacementConfig {
            queue_depth_beyond_slots: 1,
            ..PlacementConfig::default()
        };
        let ready = [
            task("p3", 3, 0, &[]),
            task("p0-young", 0, 9, &[]),
            task("p1", 1, 1, &[]),
            task("p0-old", 0, 5, &[]),
        ];
        let plan = place(&ready, &nodes, &config, 0);
        let placed: Vec<&str> = plan
            .assignments
            .iter()
            .map(|(id, _)| id.task.as_str())
            .collect();
        assert_eq!(placed, vec!["p0-old", "p0-young"]);
    }

    #[test]
    fn requirement_nobody_meets_is_named() {
        let nodes = [node(1, 2, &["gpu"]), node(2, 2, &["fast"])];
        let ready = [
            task("agent", 1, 0, &["wasm", "llm"]),
            task("both", 1, 1, &["gpu", "fast"]),
            task("gpu", 1, 2, &["gpu"]),
        ];
        let plan = place(&ready, &nodes, &PlacementConfig::default(), 0);
        let unmet = reason_of(&plan, "agent").unwrap();
        assert_eq!(unmet.to_string(), "no live node offers `llm`");
        assert!(!unmet.is_waiting_for_capacity());
        assert_eq!(
            reason_of(&plan, "both").unwrap().to_string(),
            "no live node offers `gpu`, `fast` together"
        );
        assert_eq!(plan.assignments, vec![(TaskId::new("m", "gpu"), 1)]);
    }

    #[test]
    fn dead_nodes_do_not_count_as_offering() {
        let mut gpu = node(1, 2, &["gpu"]);
        gpu.live = false;
        let plan = place(
            &[task("t", 0, 0, &["gpu"])],
            &[gpu.clone(), node(2, 2, &[])],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(
            reason_of(&plan, "t").unwrap().to_string(),
            "no live node offers `gpu`"
        );
        let plan = place(
            &[task("t", 0, 0, &[])],
            &[gpu],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(reason_of(&plan, "t"), Some(&Reason::NoLiveNode));
    }

    #[test]
    fn open_breaker_pauses_and_half_open_takes_one_probe() {
        let mut paused = node(1, 4, &["gpu"]);
        paused.breaker = BreakerGate::Open;
        let plan = place(
            &[task("t", 0, 0, &["gpu"])],
            &[paused.clone()],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(reason_of(&plan, "t"), Some(&Reason::CapableNodesPaused));

        paused.breaker = BreakerGate::Probe;
        let ready = [task("a", 0, 0, &["gpu"]), task("b", 0, 1, &["gpu"])];
        let plan = place(&ready, &[paused], &PlacementConfig::default(), 0);
        assert_eq!(plan.assignments, vec![(TaskId::new("m", "a"), 1)]);
        assert_eq!(reason_of(&plan, "b"), Some(&Reason::CapableNodesFull));
    }

    #[test]
    fn avoided_node_is_used_only_when_nothing_else_can_run_it() {
        let mut retried = task("t", 0, 0, &[]);
        retried.avoid_nodes.insert(1);
        let plan = place(
            &[retried.clone()],
            &[node(1, 4, &[]), node(2, 4, &[])],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(plan.assignments, vec![(TaskId::new("m", "t"), 2)]);

        let mut full = node(2, 1, &[]);
        full.running = 3;
        let plan = place(
            &[retried.clone()],
            &[node(1, 4, &[]), full],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(reason_of(&plan, "t"), Some(&Reason::CapableNodesFull));

        let plan = place(
            &[retried],
            &[node(1, 4, &[])],
            &PlacementConfig::default(),
            0,
        );
        assert_eq!(plan.assignments, vec![(TaskId::new("m", "t"), 1)]);
    }

    #[test]
    fn ties_are_broken_by_the_seed_not_by_node_id() {
        let nodes: Vec<NodeView> = (1..=8).map(|id| node(id, 1, &[])).collect();
        let firsts: BTreeSet<NodeId> = (0..64)
            .map(|seed| {
                place(
                    &[task("t", 0, 0, &[])],
                    &nodes,
                    &PlacementConfig::default(),
                    seed,
                )
                .assignments[0]
                    .1
            })
            .collect();
        assert!(firsts.len() > 1, "every seed chose the same node");
    }

    fn arbitrary_nodes() -> impl Strategy<Value = Vec<NodeView>> {
        proptest::collection::vec(
            (
                0u32..4,
                0u32..5,
                0u32..4,
                proptest::bool::weighted(0.8),
                prop_oneof![
                    Just(BreakerGate::Closed),
                    Just(BreakerGate::Probe),
                    Just(BreakerGate::Open)
                ],
                proptest::collection::btree_set(prop_oneof![Just("gpu"), Just("llm")], 0..3),
                any::<bool>(),
                proptest::option::of(0u32..6),
            ),
            0..7,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(
                    |(index, (slots, running, queued, live, breaker, tags, wasm, window))| {
                        let mut view = node(
                            index as NodeId + 1,
                            slots,
                            &tags.into_iter().collect::<Vec<_>>(),
                        );
                        view.capabilities.wasm = wasm;
                        view.running = running;
                        view.queued = queued;
                        view.window = window;
                        view.live = live;
                        view.breaker = breaker;
                        view
                    },
                )
                .collect()
        })
    }

    fn arbitrary_tasks() -> impl Strategy<Value = Vec<TaskView>> {
        proptest::collection::vec(
            (
                0u8..4,
                0u64..50,
                proptest::collection::btree_set(
                    prop_oneof![Just("gpu"), Just("llm"), Just("wasm")],
                    0..3,
                ),
                proptest::collection::btree_set(1u64..8, 0..3),
                proptest::option::of(1u64..8),
            ),
            0..24,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(
                    |(index, (priority, ready_seq, requires, avoid_nodes, home))| TaskView {
                        avoid_nodes,
                        home,
                        ..task(
                            &format!("t{index}"),
                            priority,
                            ready_seq,
                            &requires.into_iter().collect::<Vec<_>>(),
                        )
                    },
                )
                .collect()
        })
    }

    fn arbitrary_config() -> impl Strategy<Value = PlacementConfig> {
        (0u32..4, any::<bool>()).prop_map(|(depth, two)| PlacementConfig {
            queue_depth_beyond_slots: depth,
            spread: if two {
                Spread::PowerOfTwoChoices
            } else {
                Spread::LeastLoaded
            },
        })
    }

    fn can_take(node: &NodeView, task: &TaskView) -> bool {
        node.live && node.breaker != BreakerGate::Open && task.runs_on(&node.capabilities)
    }

    proptest! {
        /// The placement invariants: capacity, capability, liveness and
        /// breaker are never violated; every ready task is accounted for
        /// exactly once; reasons are true; the avoid set is honoured when it
        /// can be; and the result depends only on the inputs and the seed.
        #[test]
        fn placement_is_safe(
            nodes in arbitrary_nodes(),
            ready in arbitrary_tasks(),
            config in arbitrary_config(),
            seed in any::<u64>(),
        ) {
            let plan = place(&ready, &nodes, &config, seed);
            let by_id: HashMap<NodeId, &NodeView> = nodes.iter().map(|n| (n.id, n)).collect();
            let tasks: HashMap<&TaskId, &TaskView> = ready.iter().map(|t| (&t.id, t)).collect();

            let placed = counts(&plan);
            for (node_id, count) in &placed {
                let node = by_id[node_id];
                let limit = node.capabilities.slots
                    + node.window.unwrap_or(config.queue_depth_beyond_slots);
                prop_assert!(node.holding() + *count as u32 <= limit, "node {} over capacity", node_id);
                if node.breaker == BreakerGate::Probe {
                    prop_assert_eq!(*count, 1);
                }
            }
            for (task_id, node_id) in &plan.assignments {
                let node = by_id[node_id];
                let task = tasks[task_id];
                prop_assert!(can_take(node, task), "{} placed on node {} that cannot take it", task_id, node_id);
                if task.avoid_nodes.contains(node_id) {
                    prop_assert!(nodes.iter().filter(|n| can_take(n, task)).all(|n| task.avoid_nodes.contains(&n.id)));
                }
            }

            let mut seen: Vec<&TaskId> = plan.assignments.iter().map(|(id, _)| id)
                .chain(plan.unplaceable.iter().map(|(id, _)| id)).collect();
            seen.sort();
            let mut expected: Vec<&TaskId> = ready.iter().map(|t| &t.id).collect();
            expected.sort();
            prop_assert_eq!(seen, expected);

            for (task_id, reason) in &plan.unplaceable {
                let task = tasks[task_id];
                match reason {
                    Reason::NoLiveNode => prop_assert!(nodes.iter().all(|n| !n.live)),
                    Reason::Unmet { tags } => {
                        prop_assert!(!tags.is_empty());
                        for tag in tags {
                            prop_assert!(task.requires.contains(tag));
                            prop_assert!(nodes.iter().all(|n| !n.live || !n.capabilities.has(tag)));
                        }
                    }
                    Reason::NoNodeOffersAll { .. } => {
                        prop_assert!(nodes.iter().all(|n| !n.live || !task.runs_on(&n.capabilities)));
                    }
                    Reason::CapableNodesPaused => {
                        prop_assert!(nodes.iter().any(|n| n.live && task.runs_on(&n.capabilities)));
                        prop_assert!(!nodes.iter().any(|n| can_take(n, task)));
                    }
                    Reason::CapableNodesFull => prop_assert!(nodes.iter().any(|n| can_take(n, task))),
                }
            }

            prop_assert_eq!(place(&ready, &nodes, &config, seed), plan);
        }

        /// No less urgent task is placed while a more urgent one with the
        /// same requirements and avoid set waits for room.
        #[test]
        fn priority_order_is_respected(
            nodes in arbitrary_nodes(),
            ready in arbitrary_tasks(),
            config in arbitrary_config(),
            seed in any::<u64>(),
        ) {
            let plan = place(&ready, &nodes, &config, seed);
            let tasks: HashMap<&TaskId, &TaskView> = ready.iter().map(|t| (&t.id, t)).collect();
            for (waiting_id, reason) in &plan.unplaceable {
                if *reason != Reason::CapableNodesFull {
                    continue;
                }
                let waiting = tasks[waiting_id];
                for (placed_id, _) in &plan.assignments {
                    let placed = tasks[placed_id];
                    if placed.requires == waiting.requires && placed.avoid_nodes == waiting.avoid_nodes {
                        prop_assert!(
                            placed.urgency() < waiting.urgency(),
                            "{} placed before more urgent {}", placed_id, waiting_id
                        );
                    }
                }
            }
        }
    }
}
