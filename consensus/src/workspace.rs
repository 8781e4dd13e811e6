//! How the changes tasks make to a mission's workspace combine: pure
//! functions over the task graph, used by apply (conflicts), by the leader
//! (what a task sees) and by readers (the final workspace).
//!
//! The rules:
//! - a task sees the submitted tree with the changes of all its
//!   (transitive) dependencies applied in dependency order, so a later task
//!   in a chain overrides an earlier one;
//! - two tasks of which neither depends on the other may not change the
//!   same path differently: the second to commit fails with a `conflict`
//!   violation naming the path (identical changes agree and are no conflict);
//! - the final workspace applies every succeeded task's changes in
//!   dependency order.
//!
//! Functions take the graph as plain data (id -> needs), so `mission.rs`
//! uses this module and not the other way round.

use std::collections::{BTreeMap, BTreeSet};

use coditect_memory::tree::FileChange;

/// Every task `task` depends on, directly or not.
pub fn ancestors<'a>(
    needs_of: impl Fn(&str) -> Option<&'a [String]>,
    task: &str,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut work: Vec<String> = needs_of(task).map(<[String]>::to_vec).unwrap_or_default();
    while let Some(next) = work.pop() {
        if seen.insert(next.clone()) {
            if let Some(needs) = needs_of(&next) {
                work.extend(needs.iter().cloned());
            }
        }
    }
    seen
}

/// The ids in dependency order (a task after everything it needs; among
/// tasks free at the same time, by id). Needs naming unknown ids are
/// ignored; tasks on a cycle (the validator refuses those) come last, by id.
pub fn topological<'a>(tasks: &BTreeMap<&'a str, &'a [String]>) -> Vec<&'a str> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (&id, needs) in tasks {
        let known: BTreeSet<&str> = needs
            .iter()
            .map(String::as_str)
            .filter(|need| tasks.contains_key(need))
            .collect();
        waiting.insert(id, known.len());
        for need in known {
            dependents.entry(need).or_default().push(id);
        }
    }
    let mut free: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(id) = free.pop_first() {
        order.push(id);
        waiting.remove(id);
        for dependent in dependents.get(id).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    free.insert(dependent);
                }
            }
        }
    }
    order.extend(waiting.keys());
    order
}

/// The net effect of change lists applied in the order given: one change
/// per path (the last one wins) with the task that made it; deletions
/// first, then writes, each sorted by path, so applying the list in order
/// works even where a file replaced a folder or the other way round.
pub fn collapse<'a>(
    lists: impl IntoIterator<Item = (&'a str, &'a [FileChange])>,
) -> Vec<(FileChange, String)> {
    let mut last: BTreeMap<&str, (&FileChange, &str)> = BTreeMap::new();
    for (task, changes) in lists {
        for change in changes {
            last.insert(change.path.as_str(), (change, task));
        }
    }
    let (deletions, writes): (Vec<_>, Vec<_>) = last
        .into_values()
        .map(|(change, task)| (change.clone(), task.to_string()))
        .partition(|(change, _)| change.digest.is_none());
    deletions.into_iter().chain(writes).collect()
}

/// The first path `changes` changes differently from one of `others` (task
/// id, its changes), with that task's id.
pub fn first_conflict<'a>(
    changes: &[FileChange],
    others: impl IntoIterator<Item = (&'a str, &'a [FileChange])>,
) -> Option<(String, String)> {
    if changes.is_empty() {
        return None;
    }
    let mine: BTreeMap<&str, &FileChange> = changes
        .iter()
        .map(|change| (change.path.as_str(), change))
        .collect();
    let mut found: Option<(String, String)> = None;
    for (task, theirs) in others {
        for change in theirs {
            if let Some(own) = mine.get(change.path.as_str()) {
                let agree = own.digest == change.digest && own.exec == change.exec;
                let earlier = found.as_ref().is_none_or(|(path, _)| change.path < *path);
                if !agree && earlier {
                    found = Some((change.path.clone(), task.to_string()));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(path: &str, seed: u8) -> FileChange {
        FileChange {
            path: path.into(),
            digest: Some(coditect_memory::Digest::of(&[seed]).to_string()),
            size: 1,
            exec: false,
        }
    }

    fn delete(path: &str) -> FileChange {
        FileChange {
            path: path.into(),
            digest: None,
            size: 0,
            exec: false,
        }
    }

    #[test]
    fn ancestors_are_transitive_and_exclude_the_task() {
        let graph: BTreeMap<&str, Vec<String>> = [
            ("a", vec![]),
            ("b", vec!["a".to_string()]),
            ("c", vec!["b".to_string()]),
            ("d", vec![]),
        ]
        .into_iter()
        .collect();
        let needs = |id: &str| graph.get(id).map(Vec::as_slice);
        assert_eq!(
            ancestors(needs, "c"),
            ["a", "b"].iter().map(|s| s.to_string()).collect()
        );
        assert!(ancestors(needs, "d").is_empty());
        assert!(ancestors(needs, "ghost").is_empty());
    }

    #[test]
    fn later_changes_in_a_chain_win_and_deletions_come_first() {
        let first = [write("a.py", 1), write("b.py", 1)];
        let second = [write("a.py", 2), delete("b.py"), write("b.py/inner", 3)];
        let net = collapse([("one", &first[..]), ("two", &second[..])]);
        let paths: Vec<(&str, &str)> = net
            .iter()
            .map(|(change, task)| (change.path.as_str(), task.as_str()))
            .collect();
        assert_eq!(
            paths,
            [("b.py", "two"), ("a.py", "two"), ("b.py/inner", "two")]
        );
        assert_eq!(net[1].0, write("a.py", 2));
        assert!(net[0].0.digest.is_none());
    }

    #[test]
    fn different_changes_to_one_path_conflict_and_identical_ones_agree() {
        let theirs = [write("x.py", 1), write("y.py", 1)];
        assert_eq!(
            first_conflict(&[write("y.py", 2)], [("other", &theirs[..])]),
            Some(("y.py".to_string(), "other".to_string()))
        );
        assert_eq!(
            first_conflict(&[write("y.py", 1)], [("other", &theirs[..])]),
            None
        );
        assert_eq!(
            first_conflict(&[delete("x.py")], [("other", &theirs[..])]),
            Some(("x.py".to_string(), "other".to_string()))
        );
        assert_eq!(
            first_conflict(&[write("z.py", 1)], [("other", &theirs[..])]),
            None
        );
        assert_eq!(first_conflict(&[], [("other", &theirs[..])]), None);
    }

    proptest! {
        #[test]
        fn topological_order_puts_every_task_after_its_needs(
            edges in prop::collection::vec((0usize..12, 0usize..12), 0..30)
        ) {
            // Only edges from higher to lower numbers: a DAG.
            let ids: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
            let mut needs: BTreeMap<&str, Vec<String>> =
                ids.iter().map(|id| (id.as_str(), Vec::new())).collect();
            for (a, b) in edges {
                if a > b {
                    needs.get_mut(ids[a].as_str()).unwrap().push(ids[b].clone());
                }
            }
            let graph: BTreeMap<&str, &[String]> =
                needs.iter().map(|(id, n)| (*id, n.as_slice())).collect();
            let order = topological(&graph);
            prop_assert_eq!(order.len(), ids.len());
            let position: BTreeMap<&str, usize> =
                order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            for (id, list) in &needs {
                for need in list {
                    prop_assert!(position[need.as_str()] < position[id]);
                }
            }
        }
    }
}
