//! The order that ordered tasklists (spec-kit's `tasks.md`, Kiro's
//! `tasks.md`) imply without writing it down: phases and groups run one
//! after another, and inside them tasks follow file order except those
//! marked parallel.
//!
//! A *block* is a list of entries in file order: the top level of the
//! document, or the members of a numbered group. An entry is a task or a
//! group (whose members form a block of their own). Walking a block:
//!
//! - a sequential entry waits for everything before it in the block: the
//!   previous sequential entry and the parallel entries since;
//! - a parallel entry (`[P]`, `(P)`) waits only for the previous
//!   sequential entry, so a run of parallel entries starts together;
//! - an optional entry (Kiro's `- [ ]*`) waits like the others, but
//!   nothing waits for it; so does a floating entry, one written to wait
//!   for a later task (else that task would wait for itself);
//! - a phase boundary (at the top level) waits for everything before it.
//!
//! Dependencies are expressed minimally: an entry names the last tasks it
//! must follow, not all of them. A done task waits for nothing, so it
//! cannot carry an order: what follows it names it (so the listing shows
//! the order) and also the not-done tasks it followed.

/// What the walk needs to know about one item.
#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    /// A task of its own (a group header with work of its own is both).
    pub task: bool,
    /// Members of the group it heads, in file order (empty for a task).
    pub members: Vec<usize>,
    pub done: bool,
    pub parallel: bool,
    pub optional: bool,
    /// A phase boundary comes right before it (top-level entries only).
    pub boundary_before: bool,
    /// Written to wait for something after it: it waits for its turn, but
    /// nothing waits for it by position (as an entry of its block).
    pub floating: bool,
    /// The same for a group's lead task, inside its group.
    pub lead_floating: bool,
}

/// The tasks each item must follow by the order alone, for the top-level
/// entries `top`; items that are not entries (subtasks) get nothing.
pub(super) fn implied_needs(nodes: &[Node], top: &[usize]) -> Vec<Vec<usize>> {
    let mut needs = vec![Vec::new(); nodes.len()];
    let entries: Vec<Entry> = top.iter().map(|&item| entry(nodes, item)).collect();
    walk_block(nodes, &entries, Vec::new(), true, &mut needs);
    needs
}

/// One entry of a block: a task, or a group (with or without a lead task).
#[derive(Clone, Copy)]
enum Entry {
    Task(usize),
    Group(usize),
}

fn entry(nodes: &[Node], item: usize) -> Entry {
    if nodes[item].members.is_empty() {
        Entry::Task(item)
    } else {
        Entry::Group(item)
    }
}

/// The tasks a sequential successor must wait for, given the last barrier
/// and the exits of the parallel entries since it. A not-done task among
/// `since` that is not in the barrier waited for all of the barrier itself,
/// so then the barrier is implied and left out.
fn frontier(nodes: &[Node], barrier: &[usize], since: &[usize], any_parallel: bool) -> Vec<usize> {
    if !any_parallel || since.is_empty() {
        return barrier.to_vec();
    }
    let mut out: Vec<usize> = Vec::new();
    for &task in since {
        if !out.contains(&task) {
            out.push(task);
        }
    }
    if out
        .iter()
        .any(|task| !nodes[*task].done && !barrier.contains(task))
    {
        out.retain(|task| !barrier.contains(task));
    }
    out
}

/// Walks one block from `start`, filling `needs`; returns its exit (the
/// tasks a successor of the whole block waits for).
fn walk_block(
    nodes: &[Node],
    entries: &[Entry],
    start: Vec<usize>,
    top_level: bool,
    needs: &mut [Vec<usize>],
) -> Vec<usize> {
    let mut barrier = start;
    let mut since: Vec<usize> = Vec::new();
    let mut any_parallel = false;
    for &entry in entries {
        let (item, floating) = match entry {
            Entry::Task(item) if !nodes[item].members.is_empty() => {
                (item, nodes[item].lead_floating)
            }
            Entry::Task(item) | Entry::Group(item) => (item, nodes[item].floating),
        };
        let node = &nodes[item];
        if top_level && node.boundary_before {
            barrier = frontier(nodes, &barrier, &since, any_parallel);
            since.clear();
            any_parallel = false;
        }
        let begin = if node.parallel {
            barrier.clone()
        } else {
            frontier(nodes, &barrier, &since, any_parallel)
        };
        let exit = match entry {
            Entry::Task(item) => walk_task(nodes, item, begin, needs),
            Entry::Group(item) => {
                // A lead task (the header's own work) runs first in the group.
                let mut members: Vec<Entry> = Vec::with_capacity(node.members.len() + 1);
                if node.task {
                    members.push(Entry::Task(item));
                }
                members.extend(node.members.iter().map(|&m| self::entry(nodes, m)));
                walk_block(nodes, &members, begin, false, needs)
            }
        };
        if node.optional || floating {
            continue;
        }
        if node.parallel {
            any_parallel = true;
            since.extend(exit);
        } else {
            barrier = exit;
            since.clear();
            any_parallel = false;
        }
    }
    frontier(nodes, &barrier, &since, any_parallel)
}

/// A task's exit: itself, and when it is done also the not-done tasks it
/// followed (it carries no order for them).
fn walk_task(
    nodes: &[Node],
    item: usize,
    begin: Vec<usize>,
    needs: &mut [Vec<usize>],
) -> Vec<usize> {
    let mut exit = vec![item];
    if nodes[item].done {
        exit.extend(begin.iter().copied().filter(|t| !nodes[*t].done));
    }
    needs[item] = begin;
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Node {
        Node {
            task: true,
            ..Node::default()
        }
    }

    fn parallel() -> Node {
        Node {
            parallel: true,
            ..task()
        }
    }

    #[test]
    fn sequential_tasks_chain_and_parallel_runs_start_together() {
        // 0, 1 [P], 2 [P], 3, 4 [P]
        let nodes = vec![task(), parallel(), parallel(), task(), parallel()];
        let needs = implied_needs(&nodes, &[0, 1, 2, 3, 4]);
        assert_eq!(needs, vec![vec![], vec![0], vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn a_boundary_waits_for_everything_before_it() {
        let mut nodes = vec![task(), parallel(), parallel(), parallel(), task()];
        nodes[3].boundary_before = true;
        let needs = implied_needs(&nodes, &[0, 1, 2, 3, 4]);
        assert_eq!(needs[3], [1, 2], "a parallel task of the next phase");
        assert_eq!(needs[4], [3]);
    }

    #[test]
    fn done_and_optional_tasks_carry_no_order() {
        let mut nodes = vec![task(), task(), task(), task()];
        nodes[1].done = true;
        nodes[2].optional = true;
        let needs = implied_needs(&nodes, &[0, 1, 2, 3]);
        assert_eq!(needs, vec![vec![], vec![0], vec![1, 0], vec![1, 0]]);
        // Done all along: the order stays visible.
        let mut nodes = vec![task(), parallel(), parallel(), task()];
        nodes.iter_mut().for_each(|n| n.done = true);
        let needs = implied_needs(&nodes, &[0, 1, 2, 3]);
        assert_eq!(needs, vec![vec![], vec![0], vec![0], vec![1, 2]]);
    }

    #[test]
    fn groups_run_in_order_and_their_members_in_file_order() {
        // Group 0 (members 1, 2) and group 3 (lead task, members 4 [P], 5 [P]), then 6.
        let mut nodes = vec![
            Node::default(),
            task(),
            task(),
            task(),
            parallel(),
            parallel(),
            task(),
        ];
        nodes[0].task = false;
        nodes[0].members = vec![1, 2];
        nodes[3].members = vec![4, 5];
        let needs = implied_needs(&nodes, &[0, 3, 6]);
        assert_eq!(needs[1], Vec::<usize>::new());
        assert_eq!(needs[2], [1]);
        assert_eq!(needs[3], [2], "the lead task of the next group");
        assert_eq!(needs[4], [3]);
        assert_eq!(needs[5], [3]);
        assert_eq!(needs[6], [4, 5]);
    }
}
