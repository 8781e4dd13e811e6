//! Markdown tasklists as people write them: the seeds' format, spec-kit's
//! and Kiro's `tasks.md`, and plain checklists.
//!
//! Rules, in the order the reader applies them:
//!
//! - **Tasks** are checkbox list items: `- [ ] text`, `* [x] text`,
//!   `1. [ ] text` (`-`, `*`, `+` or `N.`/`N)` markers). `[x]`/`[X]` marks
//!   the task done; every other mark (`[ ]`, `[~]`, `[-]`, `[/]`, ...) means
//!   not done. `- [ ]*` is Kiro's optional task. Code fences and HTML
//!   comments are skipped; other lines that are not a checkbox, a heading
//!   or an indented continuation are ignored. A file without a single
//!   checkbox is refused with [`MissionError::NoMarkdownTasks`], which names
//!   the formats understood.
//! - **Head**: the item's text starts with its id and tags in any order:
//!   `T001 [P] [US1] Title`, `[T001] [P] Title`, `1. Title` (Kiro), `2.1 (P)
//!   Title` (cc-sdd), `Task 3: Title`. `[P]` and `(P)` mark a task that may
//!   run in parallel; `[US1]` and other bracket tags are labels (metadata:
//!   never ids, never dependencies); `[deps: T1, T2]` lists dependencies.
//!   The rest is the title (fitted to `caps::MAX_TASK_TITLE_BYTES`).
//! - **Ids**: a task id is upper-case letters, an optional `-`, digits, then
//!   `.digits` or `-digits` parts, a dotted part optionally ending in one
//!   lower-case letter (`T001.010`, `T3`, `TASK-001`, `I-1.2`, `T040.2a`),
//!   or dotted numbers (`1.1`, `2.3.1`, `10a.1`), or Kiro's `N.` (the id
//!   `N`; also `10a.`). `P`
//!   and one digit is never an id (`P0`-`P3` are priorities). Only declared
//!   ids are ids: a word of that shape that no item declares (`(JPEG2000)`,
//!   `(P50, P99)`, `SC-001`) is text.
//! - **Generated ids** for items without one: `<section>.<n>-<slug>`, where
//!   the section is the enclosing item's id and otherwise the slug of the
//!   nearest heading (`task` before any heading), `n` is the item's 1-based
//!   position among the checkboxes of that section, and the slug is made of
//!   the first words of its text (lower case, `a-z0-9` joined by `-`). Both
//!   parts are cut to 40 characters at a `-`. A clash gets `-2`, `-3`, ...
//!   appended. The same file always gives the same ids.
//! - **Outline numbers restart**: the seeds number work `1.1`, `1.2`, ...
//!   afresh in every phase, so the k-th declaration (k >= 2) of the same
//!   number is renamed `<number>-<k>` (`1.1-2`), and a numeric reference
//!   means the nearest declaration above the referring item (else the first
//!   one). Letter ids are never renamed: a repeated `T001.010` is a
//!   duplicate that `validate` refuses.
//! - **Nesting**: a checkbox indented under another belongs to it. Under a
//!   task it is a subtask: the parent needs all its subtasks (a checklist
//!   item is complete when its sub-items are), and each subtask inherits
//!   the parent's own dependencies, so it does not start before what the
//!   parent waits for. A subtask that names its own parent therefore makes
//!   a cycle, which `validate` reports.
//! - **Numbered groups**: `N.M` belongs to `N.` (and `T001.01` to `T001`),
//!   nested or at the same indent, until a heading, an unnumbered sibling or
//!   a sibling numbered elsewhere closes it. A group header is a group, not
//!   a task: its members are the tasks, they inherit its dependencies, and
//!   a reference to the group means its last members (those no other
//!   member waits for). A header with lines of work of its own (prose, not
//!   just `_Requirements:_` fields) is also a task, the group's first.
//! - **Continuation**: lines indented deeper than an item that are not
//!   checkboxes belong to it and are handed to the agent as input. A line
//!   read as a field, `Key: value` (with an optional `-`/`→` marker and
//!   emphasis: `_Depends: 2.1_`, `**Depends on**: T3`, `→ Blocked by: T4`),
//!   is sorted by its key: dependency keys (`deps`, `depends on`,
//!   `dependencies`, `blocked by`, `after`, `requires`, `prerequisites`,
//!   ...) list tasks this one needs, `blocks` lists tasks that need this
//!   one, and reference keys (`requirements`, `validates`, `property`,
//!   `files`, `boundary`, ...) never name dependencies. Other lines are
//!   prose.
//! - **Dependencies in prose** (the item's title and its prose lines): ids
//!   after "depends on", "blocked by", "after", "requires", "needs",
//!   "once", "waits for", "deps:", ... (optionally followed by ":" and
//!   "task"/"tasks", which lets plain numbers count: "after task 3"), as a
//!   list separated by `,` `&` `/` `+` `and` `or`; and the letter ids of
//!   every parenthesized group made only of ids (and priorities):
//!   "(T001.009)"; numbers in parentheses ("(5.3)") are sections or
//!   versions far more often than tasks, so they are text. A range
//!   `T004-T007` or `T009–T012` means every declared id from one end to the
//!   other in file order.
//! - **Undeclared references** are dropped with a warning (never a
//!   refusal) when the author clearly meant a task: any id in a dependency
//!   field, and, in prose, an id of a family the document declares (`T404`
//!   in a file of `T` ids). Numbers in prose and parenthesized acronyms are
//!   dropped silently.
//! - **Implied order** (spec-kit and Kiro files, see [`order`]): a file
//!   with `[P]`/`(P)` markers or story labels, two or more Kiro `N.`
//!   tasks, or spec-kit `T001` ids under `Phase` headings is ordered: phases
//!   (headings `Phase N`, `Stage N`, `Milestone N`, `Sprint N`, `Wave N`,
//!   and the headings at their level or above) run one after another, so do
//!   top-level groups and tasks, and inside a phase or group tasks follow
//!   file order except that a `[P]` task runs alongside its `[P]`
//!   neighbours, and nothing waits for an optional task. Written
//!   dependencies add to the implied ones; a task written to wait for a
//!   later one leaves the file order (nothing waits for it by position; a
//!   warning says so), so the two never make a cycle. A done task still
//!   shows where it stands, and what follows it also waits for the not-done
//!   tasks it followed. Other files (the seeds' format, plain checklists)
//!   have only the dependencies they write.
//! - **Priority**: the first standalone `P0`-`P3` in the item's line; else
//!   the enclosing item's; else the nearest heading's that names one (`##
//!   Phase 3: User Story 1 (Priority: P1)`); else P2.
//! - **Mission name**: the first `#` heading, else the first heading of any
//!   level, else "mission"; control characters become spaces and it is cut
//!   to `caps::MAX_MISSION_NAME_BYTES`.
//! - **Routing**: the item's title, then its enclosing items' titles, then
//!   its headings from the innermost out are tried against
//!   [`AgentConfig::route`]; the kind's module becomes the task's module
//!   (`ModuleRef::Path`) and its `requires` the task's requires.
//! - **Input**: the item's text, its continuation lines, a `Part of: ...`
//!   line naming the groups it belongs to, and a final `Context: H1 > H2 >
//!   ...` line of its headings.

mod order;
mod refs;
mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};

use super::agents::AgentConfig;
use super::error::MissionError;
use super::spec::{MissionSpec, ModuleRef, Priority, TaskSpec};
use refs::{Candidate, Field, Source, Token};
use scan::{strip_emphasis, Item};

/// Name of a mission whose markdown has no heading at all.
const DEFAULT_NAME: &str = "mission";
/// Section of items that come before any heading.
const DEFAULT_SECTION: &str = "task";
/// Longest section or title slug in a generated id.
const SLUG_MAX: usize = 40;
/// Words of a title used in its slug.
const SLUG_WORDS: usize = 6;
/// Longest bracket tag read as a label or marker (`[US1]`, `[deps: T1]`).
const TAG_MAX: usize = 80;
/// Most warnings kept; a file with more gets one line saying how many more.
const MAX_WARNINGS: usize = 200;
/// Words that start a phase heading, followed by a number.
const PHASE_WORDS: &[&str] = &["phase", "stage", "milestone", "sprint", "wave"];

/// A parsed tasklist and what the reader noticed on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct MarkdownMission {
    /// The mission, tasks in file order.
    pub spec: MissionSpec,
    /// One line each, in file order: references to ids nobody declares,
    /// and the like. They never stop a submission.
    pub warnings: Vec<String>,
    /// Whether the file's format implies an order (phases, groups, file
    /// order with `[P]` markers) on top of the dependencies it writes.
    pub implied_order: bool,
}

/// Parses a markdown tasklist into a mission, routing each task to an agent
/// kind with `agents`; [`read_markdown`] without the warnings.
pub fn parse_markdown(text: &str, agents: &AgentConfig) -> Result<MissionSpec, MissionError> {
    read_markdown(text, agents).map(|mission| mission.spec)
}

/// What an item's text declares before its title.
#[derive(Debug, Default, PartialEq)]
struct Head {
    /// The declared id, as written (before outline renaming).
    id: Option<String>,
    /// Declared in Kiro's `N.` form.
    outline_form: bool,
    title: String,
    /// `[P]` or `(P)`.
    parallel: bool,
    /// A story label such as `[US1]`.
    story: bool,
    /// Values of `[deps: ...]` tags.
    deps: Vec<String>,
}

/// A dependency before group references are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dep {
    /// A task item.
    Task(usize),
    /// A group header: its last members.
    Group(usize),
}

/// Parses a markdown tasklist into a mission (see the module docs for the
/// exact rules), with the warnings a reader should see. Fails on an
/// inconsistent `agents` and on a file without any checkbox.
pub fn read_markdown(text: &str, agents: &AgentConfig) -> Result<MarkdownMission, MissionError> {
    agents.validate()?;
    let scanned = scan::scan(text);
    let items = &scanned.items;
    if items.is_empty() {
        return Err(MissionError::NoMarkdownTasks);
    }
    let count = items.len();
    let heads: Vec<Head> = items.iter().map(|item| read_head(&item.text)).collect();
    let mut warnings: Vec<String> = Vec::new();

    // Structure: numbered groups, then every item's container (the group
    // or task it belongs to). Subtrees are contiguous in file order: item
    // `i` and what it contains are exactly `i..end[i]`.
    let header_of = numbering_headers(items, &heads);
    let container: Vec<Option<usize>> = (0..count)
        .map(|i| header_of[i].or(items[i].parent))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, c) in container.iter().enumerate() {
        if let Some(c) = *c {
            children[c].push(i);
        }
    }
    let is_group: Vec<bool> = (0..count)
        .map(|i| children[i].iter().any(|&c| header_of[c] == Some(i)))
        .collect();
    let is_task: Vec<bool> = (0..count)
        .map(|i| !is_group[i] || has_own_work(&items[i]))
        .collect();
    let mut end = vec![0; count];
    for i in (0..count).rev() {
        end[i] = children[i].last().map_or(i + 1, |&last| end[last]);
    }

    let (ids, outline) = assign_ids(items, &heads, &container);

    // Declared ids, for references: letter ids by their (first) item,
    // outline numbers by every declaration.
    let mut declared: HashMap<&str, usize> = HashMap::new();
    for (i, head) in heads.iter().enumerate() {
        if head.id.is_some() {
            declared.entry(ids[i].as_str()).or_insert(i);
        }
    }
    let shapes: HashSet<&str> = heads
        .iter()
        .filter_map(|h| h.id.as_deref())
        .map(refs::id_shape)
        .filter(|shape| !shape.is_empty())
        .collect();
    let lookup = |word: &str, at: usize, numbers: bool| -> Option<usize> {
        if refs::is_numeric(word) {
            if refs::is_plain_number(word) && !numbers {
                return None;
            }
            let declarations = outline.get(word)?;
            return declarations
                .iter()
                .rev()
                .find(|(item, _)| *item < at)
                .or(declarations.first())
                .map(|(item, _)| *item);
        }
        declared.get(word).copied()
    };
    // The items a candidate names, or `Err` when it names an undeclared id.
    let resolve = |candidate: &Candidate, at: usize| -> Result<Vec<usize>, ()> {
        if let Some(item) = lookup(&candidate.word, at, candidate.numbers) {
            return Ok(vec![item]);
        }
        for (first, last) in refs::range_ends(&candidate.word) {
            if let (Some(from), Some(to)) = (lookup(first, at, true), lookup(last, at, true)) {
                if from <= to {
                    return Ok((from..=to).filter(|&k| heads[k].id.is_some()).collect());
                }
            }
        }
        Err(())
    };

    // Written dependencies of each item, as the items they name.
    let mut explicit: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut blocked_by: Vec<(usize, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut needs: Vec<Candidate> = Vec::new();
        let mut blocks: Vec<Candidate> = Vec::new();
        let title = &heads[i].title;
        needs.extend(refs::phrase_candidates(&refs::tokens(title)));
        needs.extend(refs::paren_candidates(title));
        for value in &heads[i].deps {
            needs.extend(refs::field_candidates(value));
        }
        for line in &item.extra {
            match refs::field(line) {
                Some(Field::Needs(value)) => needs.extend(refs::field_candidates(value)),
                Some(Field::Blocks(value)) => blocks.extend(refs::field_candidates(value)),
                Some(Field::Reference) => {}
                None => {
                    needs.extend(refs::phrase_candidates(&refs::tokens(line)));
                    needs.extend(refs::paren_candidates(line));
                }
            }
        }
        let mut note_undeclared = |candidate: &Candidate| {
            let shape = refs::id_shape(&candidate.word);
            let meant = match candidate.source {
                Source::Field => true,
                Source::Phrase => !shape.is_empty() && shapes.contains(shape),
                Source::Paren => false,
            };
            if meant {
                warnings.push(format!(
                    "line {}: task `{}` names `{}` as a dependency, but no task declares that id; ignored",
                    item.line, ids[i], candidate.word
                ));
            }
        };
        for candidate in &needs {
            match resolve(candidate, i) {
                Ok(targets) => {
                    for target in targets {
                        if target != i && !explicit[i].contains(&target) {
                            explicit[i].push(target);
                        }
                    }
                }
                Err(()) => note_undeclared(candidate),
            }
        }
        for candidate in &blocks {
            match resolve(candidate, i) {
                Ok(targets) => blocked_by.extend(targets.into_iter().map(|t| (t, i))),
                Err(()) => note_undeclared(candidate),
            }
        }
    }
    for (target, blocker) in blocked_by {
        if target != blocker && !explicit[target].contains(&blocker) {
            explicit[target].push(blocker);
        }
    }
    // A task inside a group that names the group would wait for itself.
    for i in 0..count {
        let own: Vec<usize> = explicit[i]
            .iter()
            .copied()
            .filter(|&t| is_group[t] && t != i && (t..end[t]).contains(&i))
            .collect();
        for group in own {
            warnings.push(format!(
                "line {}: task `{}` names its own group `{}` as a dependency; ignored",
                items[i].line, ids[i], ids[group]
            ));
            explicit[i].retain(|&t| t != group);
        }
    }

    // The order the format implies.
    let implied_order = implies_order(items, &heads, &is_group);
    let implied: Vec<Vec<usize>> = if implied_order {
        let phase_level = items
            .iter()
            .flat_map(|item| &item.headings_before)
            .filter(|(_, title)| is_phase_heading(title))
            .map(|(level, _)| *level)
            .min()
            .unwrap_or(2);
        let nodes: Vec<order::Node> = (0..count)
            .map(|i| order::Node {
                task: is_task[i],
                members: if is_group[i] {
                    children[i].clone()
                } else {
                    Vec::new()
                },
                done: items[i].done,
                parallel: heads[i].parallel,
                optional: items[i].optional,
                boundary_before: items[i]
                    .headings_before
                    .iter()
                    .any(|(level, title)| *level <= phase_level || is_phase_heading(title)),
                floating: false,
                lead_floating: false,
            })
            .collect();
        let top: Vec<usize> = (0..count).filter(|&i| container[i].is_none()).collect();
        let mut nodes = nodes;
        // A task written to wait for a later one leaves the file order: it
        // still waits for its turn, but nothing waits for it by position
        // (else the later task, which follows it, would wait for itself).
        let reach = written_reach(&explicit, &container, &children, &is_group, &end);
        for (i, node) in nodes.iter_mut().enumerate() {
            node.floating = reach[i].is_some_and(|last| last >= end[i]);
            node.lead_floating = reach[i].is_some_and(|last| last > i);
            let later =
                explicit[i].iter().copied().find(
                    |&t| {
                        if is_group[i] {
                            t > i
                        } else {
                            t >= end[i]
                        }
                    },
                );
            if let (true, Some(later)) = (is_task[i], later) {
                warnings.push(format!(
                    "line {}: task `{}` is written to wait for `{}`, which comes later in the file; \
                     the tasks after it do not wait for it by file order",
                    items[i].line, ids[i], ids[later]
                ));
            }
        }
        order::implied_needs(&nodes, &top)
    } else {
        vec![Vec::new(); count]
    };

    // Every item's dependencies, computed container first. A member
    // inherits its container's written dependencies, except those inside
    // the container's own subtree (which would make it wait on itself or on
    // a sibling the container merely gathers); a subtask also starts when
    // its parent task could. A task gathers its subtasks.
    let as_dep = |item: usize| {
        if is_group[item] {
            Dep::Group(item)
        } else {
            Dep::Task(item)
        }
    };
    let mut inherited: Vec<Vec<usize>> = Vec::with_capacity(count);
    let mut base: Vec<Vec<Dep>> = Vec::with_capacity(count);
    for i in 0..count {
        let from_container = match container[i] {
            Some(c) => {
                let mut deps = inherited[c].clone();
                deps.extend(
                    explicit[c]
                        .iter()
                        .filter(|&&t| !(c..end[c]).contains(&t))
                        .copied(),
                );
                if !is_group[c] {
                    deps.extend(implied[c].iter().copied());
                }
                deps
            }
            None => Vec::new(),
        };
        let mut deps: Vec<Dep> = Vec::new();
        let mut push = |dep: Dep| {
            if dep != Dep::Task(i) && !deps.contains(&dep) {
                deps.push(dep);
            }
        };
        explicit[i]
            .iter()
            .chain(&from_container)
            .for_each(|&t| push(as_dep(t)));
        implied[i].iter().for_each(|&t| push(Dep::Task(t)));
        if !is_group[i] {
            children[i].iter().for_each(|&child| push(as_dep(child)));
        }
        inherited.push(from_container);
        base.push(deps);
    }

    // A reference to a group stands for its last members: the tasks no
    // not-done member waits for; nothing implicitly waits for an optional one.
    let mut sinks_of: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut sinks = |group: usize| -> Vec<usize> {
        sinks_of
            .entry(group)
            .or_insert_with(|| {
                let members: Vec<usize> = (group..end[group]).filter(|&k| is_task[k]).collect();
                let mut needed: HashSet<usize> = HashSet::new();
                for &k in &members {
                    if !items[k].done {
                        needed.extend(base[k].iter().filter_map(|dep| match dep {
                            Dep::Task(t) => Some(*t),
                            Dep::Group(_) => None,
                        }));
                    }
                }
                let last: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|k| !needed.contains(k) && !items[*k].optional)
                    .collect();
                if last.is_empty() {
                    members
                } else {
                    last
                }
            })
            .clone()
    };

    let mut priorities: Vec<Priority> = Vec::with_capacity(count);
    let mut kinds: Vec<String> = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for (i, item) in items.iter().enumerate() {
        let title = &heads[i].title;
        let priority = first_priority(&item.text)
            .or_else(|| container[i].map(|c| priorities[c]))
            .or_else(|| item.headings.iter().rev().find_map(|h| first_priority(h)))
            .unwrap_or_default();
        priorities.push(priority);

        // The item's own title decides first; else whatever decided for its
        // container (its titles, then the shared headings).
        let kind_name = match agents.match_text(title) {
            Some(kind) => kind.to_string(),
            None => match container[i] {
                Some(c) => kinds[c].clone(),
                None => {
                    let headings: Vec<&str> =
                        item.headings.iter().rev().map(String::as_str).collect();
                    agents.route(&headings).to_string()
                }
            },
        };
        kinds.push(kind_name.clone());
        if !is_task[i] {
            continue;
        }
        let kind = &agents.kinds[&kind_name];

        let mut needs: Vec<String> = Vec::new();
        for dep in &base[i] {
            let targets = match *dep {
                Dep::Task(t) => vec![t],
                Dep::Group(g) => sinks(g),
            };
            for target in targets {
                let id = &ids[target];
                if target != i && !needs.contains(id) {
                    needs.push(id.clone());
                }
            }
        }

        let mut input = strip_emphasis(&item.text);
        for line in &item.extra {
            input.push('\n');
            input.push_str(line);
        }
        let mut groups: Vec<String> = Vec::new();
        let mut up = container[i];
        while let Some(c) = up {
            if is_group[c] {
                groups.push(strip_emphasis(&items[c].text));
            }
            up = container[c];
        }
        if !groups.is_empty() {
            groups.reverse();
            input.push_str("\nPart of: ");
            input.push_str(&groups.join(" > "));
        }
        if !item.headings.is_empty() {
            input.push_str("\nContext: ");
            input.push_str(&item.headings.join(" > "));
        }

        let mut task = TaskSpec::new(ids[i].clone(), ModuleRef::Path(kind.module.clone()));
        task.needs = needs;
        task.requires = kind.requires.clone();
        task.priority = priority;
        task.input = Some(input);
        task.done = item.done;
        task.agent = Some(kind_name);
        task.title = Some(super::grammar::fit_task_title(title));
        tasks.push(task);
    }
    let spec = MissionSpec {
        max_fix_rounds: None,
        name: scanned
            .name
            .as_deref()
            .map(super::grammar::fit_mission_name)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_string()),
        tasks,
        workspace: None,
    };
    // In file order: every warning starts with the line it is about.
    warnings.sort_by_key(|warning| {
        warning
            .strip_prefix("line ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("... and {more} more warnings"));
    }
    Ok(MarkdownMission {
        spec,
        warnings,
        implied_order,
    })
}

/// For each item, the last item (in file order) it waits for through
/// written dependencies, transitively: its own, those its containers pass
/// down, and the subtasks it gathers; a reference to a group reaches the
/// group's whole subtree. `None` for an item that waits for nothing written.
fn written_reach(
    explicit: &[Vec<usize>],
    container: &[Option<usize>],
    children: &[Vec<usize>],
    is_group: &[bool],
    end: &[usize],
) -> Vec<Option<usize>> {
    let count = explicit.len();
    // Written dependencies passed down by containers, as in the needs.
    let mut passed: Vec<Vec<usize>> = Vec::with_capacity(count);
    for c in container {
        let mut deps = Vec::new();
        if let Some(c) = *c {
            deps.extend(passed[c].iter().copied());
            deps.extend(
                explicit[c]
                    .iter()
                    .copied()
                    .filter(|t| !(c..end[c]).contains(t)),
            );
            deps.sort_unstable();
            deps.dedup();
        }
        passed.push(deps);
    }
    let edges: Vec<Vec<usize>> = (0..count)
        .map(|i| {
            let mut out: Vec<usize> = explicit[i].iter().chain(&passed[i]).copied().collect();
            if !is_group[i] {
                out.extend(children[i].iter().copied());
            }
            out
        })
        .collect();
    // Iterative depth-first search; an edge back into the search (a
    // written cycle, which validation reports) counts as its target only.
    let mut reach: Vec<Option<usize>> = vec![None; count];
    let mut state = vec![0u8; count];
    for start in 0..count {
        if state[start] != 0 {
            continue;
        }
        state[start] = 1;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                if state[target] == 0 {
                    state[target] = 1;
                    stack.push((target, 0));
                }
                continue;
            }
            reach[node] = edges[node]
                .iter()
                .map(|&t| reach[t].map_or(end[t] - 1, |r| r.max(end[t] - 1)))
                .max();
            state[node] = 2;
            stack.pop();
        }
    }
    reach
}

/// Final ids: declared ones (outline numbers renamed when repeated), and
/// generated ones for the rest. Also every declaration of each outline
/// number, as (item, final id).
#[allow(clippy::type_complexity)]
fn assign_ids(
    items: &[Item],
    heads: &[Head],
    container: &[Option<usize>],
) -> (Vec<String>, HashMap<String, Vec<(usize, String)>>) {
    // Declared ids first, so generated ids can avoid every one of them.
    let mut used: HashSet<String> = heads.iter().filter_map(|h| h.id.clone()).collect();
    let mut positions: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    let mut outline: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let section = match container[index] {
            Some(c) => ids[c].clone(),
            None => item
                .headings
                .last()
                .map(|h| slug(h, usize::MAX))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SECTION.to_string()),
        };
        let position = positions.entry(section.clone()).or_insert(0);
        *position += 1;
        let id = match &heads[index].id {
            Some(id) if refs::is_numeric(id) => {
                // Outline numbers restart per phase in the seeds, so a
                // repeated one is renamed rather than refused.
                let earlier = outline.entry(id.clone()).or_default();
                let mut final_id = id.clone();
                if !earlier.is_empty() {
                    let mut k = earlier.len() + 1;
                    final_id = format!("{id}-{k}");
                    while used.contains(&final_id) {
                        k += 1;
                        final_id = format!("{id}-{k}");
                    }
                    used.insert(final_id.clone());
                }
                earlier.push((index, final_id.clone()));
                final_id
            }
            Some(id) => id.clone(),
            None => {
                let title_slug = slug(&heads[index].title, SLUG_WORDS);
                let mut base = format!("{}.{}", cut(&section, SLUG_MAX), position);
                if !title_slug.is_empty() {
                    base = format!("{base}-{title_slug}");
                }
                let mut id = base.clone();
                let mut n = 1;
                while used.contains(&id) {
                    n += 1;
                    id = format!("{base}-{n}");
                }
                used.insert(id.clone());
                id
            }
        };
        ids.push(id);
    }
    (ids, outline)
}

/// For each item, the group header it is numbered under (`2.1` under `2.`),
/// among its siblings or as its indentation parent. A group stays open
/// until a heading, an unnumbered sibling, or a sibling numbered elsewhere.
fn numbering_headers(items: &[Item], heads: &[Head]) -> Vec<Option<usize>> {
    let mut header_of = vec![None; items.len()];
    // Per indentation parent, the numbered siblings still open, outermost first.
    let mut open: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if !item.headings_before.is_empty() {
            open.clear();
        }
        let siblings = open.entry(item.parent).or_default();
        let Some(id) = heads[i].id.as_deref() else {
            siblings.clear();
            continue;
        };
        while let Some(&top) = siblings.last() {
            if heads[top]
                .id
                .as_deref()
                .is_some_and(|header| numbered_under(id, header))
            {
                break;
            }
            siblings.pop();
        }
        header_of[i] = siblings.last().copied().or_else(|| {
            item.parent.filter(|&p| {
                heads[p]
                    .id
                    .as_deref()
                    .is_some_and(|header| numbered_under(id, header))
            })
        });
        siblings.push(i);
    }
    header_of
}

/// Whether `id` is numbered under `header`: `2.1` under `2`, `T001.01` under `T001`.
fn numbered_under(id: &str, header: &str) -> bool {
    id.len() > header.len() + 1 && id.starts_with(header) && id[header.len()..].starts_with('.')
}

/// Whether an item has lines of work of its own: continuation lines that
/// are prose, not fields such as `_Requirements: 1.1_` or `Depends: 2`.
fn has_own_work(item: &Item) -> bool {
    item.extra.iter().any(|line| refs::field(line).is_none())
}

/// Whether the file is in a format that implies an order (module docs).
fn implies_order(items: &[Item], heads: &[Head], is_group: &[bool]) -> bool {
    let markers = heads.iter().any(|h| h.parallel || h.story);
    let kiro = heads.iter().filter(|h| h.outline_form).count() >= 2
        || heads
            .iter()
            .zip(is_group)
            .any(|(h, &group)| group && h.outline_form);
    let speckit_ids = heads.iter().any(|h| {
        h.id.as_deref().is_some_and(|id| {
            id.len() >= 4 && id.starts_with('T') && id[1..].bytes().all(|b| b.is_ascii_digit())
        })
    });
    let phases = items
        .iter()
        .any(|item| item.headings.iter().any(|h| is_phase_heading(h)));
    markers || kiro || (speckit_ids && phases)
}

/// A heading that starts a phase: `Phase 1: Setup`, `Phase 3.1`, `Phase N:
/// Polish`, `Stage II`, `Milestone 2 - Beta`, `Sprint 4`, `Wave 1`.
fn is_phase_heading(title: &str) -> bool {
    let lower = title
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    PHASE_WORDS.iter().any(|word| {
        let Some(rest) = lower.strip_prefix(word) else {
            return false;
        };
        let rest = rest.trim_start();
        let label: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
        !label.is_empty()
            && (label.chars().all(|c| c.is_ascii_digit())
                || label == "n"
                || label.chars().all(|c| matches!(c, 'i' | 'v' | 'x')))
    })
}

/// Reads an item's head: its id and tags in any order, then its title.
fn read_head(text: &str) -> Head {
    let plain = strip_emphasis(text);
    let mut head = Head::default();
    let mut rest = plain.as_str();
    let mut at_start = true;
    loop {
        rest = rest.trim_start();
        if let Some((tag, after)) = leading_tag(rest) {
            let tag = tag.trim();
            if at_start && head.id.is_none() && refs::is_id(tag) && !is_story_label(tag) {
                head.id = Some(tag.to_string());
            } else if tag == "P" {
                head.parallel = true;
            } else if let Some(Field::Needs(value)) = refs::field(tag) {
                head.deps.push(value.to_string());
            } else if is_story_label(tag) {
                head.story = true;
            }
            at_start = false;
            rest = after;
            continue;
        }
        if head.id.is_none() {
            if let Some((id, outline_form, after)) = declared_id(rest) {
                head.id = Some(id);
                head.outline_form = outline_form;
                at_start = false;
                rest = after;
                continue;
            }
        }
        break;
    }
    let title = rest
        .trim_start_matches([':', '-', '.', '\u{2014}', '\u{2013}'])
        .trim();
    head.title = if !title.is_empty() {
        title.to_string()
    } else if let Some(id) = &head.id {
        id.clone()
    } else {
        plain.clone()
    };
    head
}

/// A leading `[tag]` (not a link `[text](url)`) or `(P)`, and what follows.
fn leading_tag(text: &str) -> Option<(&str, &str)> {
    if let Some(after) = text.strip_prefix("(P)") {
        return Some(("P", after));
    }
    let inner = text.strip_prefix('[')?;
    let close = inner.find(']')?;
    let tag = &inner[..close];
    let after = &inner[close + 1..];
    let fits = !tag.trim().is_empty() && tag.len() <= TAG_MAX && !tag.contains('[');
    (fits && !after.starts_with('(')).then_some((tag, after))
}

/// A user-story label: `US1`, `US-2`, `Story 3`.
fn is_story_label(tag: &str) -> bool {
    let lower = tag.to_ascii_lowercase();
    lower.starts_with("story")
        || lower
            .strip_prefix("us")
            .map(|rest| rest.trim_start_matches('-'))
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

/// The id the first word of `text` declares, whether it is Kiro's `N.`
/// form, and the text after it. `Task 3:` and `Step 2.1` declare `3` and `2.1`.
fn declared_id(text: &str) -> Option<(String, bool, &str)> {
    let (word, after) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if word.eq_ignore_ascii_case("task") || word.eq_ignore_ascii_case("step") {
        let after = after.trim_start();
        let (number, rest) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        let core = number.trim_end_matches([':', ',', ';', '.', ')', ']']);
        if refs::is_id(core) || refs::is_plain_number(core) {
            return Some((core.to_string(), false, rest));
        }
        return None;
    }
    let trimmed = word
        .trim_start_matches(['[', '#'])
        .trim_end_matches([':', ',', ';', ']']);
    if refs::is_id(trimmed) {
        return Some((trimmed.to_string(), false, after));
    }
    let core = trimmed.trim_end_matches(['.', ')']);
    if core.len() < trimmed.len() {
        if refs::is_plain_number(core) {
            return Some((core.to_string(), true, after));
        }
        if refs::is_id(core) {
            return Some((core.to_string(), false, after));
        }
    }
    None
}

/// The first standalone `P0`..`P3` in `text`.
fn first_priority(text: &str) -> Option<Priority> {
    refs::tokens(text)
        .into_iter()
        .find_map(|token| match token {
            Token::Word(w) if refs::is_priority_word(&w) => w.parse::<Priority>().ok(),
            _ => None,
        })
}

/// Lower-case `a-z0-9` words joined by `-`: the first `max_words` of them,
/// cut to [`SLUG_MAX`] characters at a `-`.
fn slug(text: &str, max_words: usize) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(max_words)
        .map(str::to_ascii_lowercase)
        .collect();
    cut(&words.join("-"), SLUG_MAX)
}

/// `text` cut to at most `max` characters, at a `-` when it has to be cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let head = &text[..max];
    if text.as_bytes()[max] == b'-' {
        return head.to_string();
    }
    match head.rfind('-') {
        Some(at) if at > 0 => head[..at].to_string(),
        _ => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MissionSpec {
        parse_markdown(text, &AgentConfig::default()).unwrap()
    }

    fn task<'a>(spec: &'a MissionSpec, id: &str) -> &'a TaskSpec {
        spec.tasks
            .iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("no task {id} in {:?}", ids(spec)))
    }

    fn ids(spec: &MissionSpec) -> Vec<&str> {
        spec.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn reads_the_interfaces_example_line() {
        let spec = parse(
            "# Queue work\n\
             - [x] T001.009 Deploy message bus (P0)\n\
             - [ ] T001.010 Implement queue (P1) ... depends on T001.009\n",
        );
        assert_eq!(spec.name, "Queue work");
        assert_eq!(ids(&spec), ["T001.009", "T001.010"]);
        let queue = task(&spec, "T001.010");
        assert_eq!(queue.needs, ["T001.009"]);
        assert_eq!(queue.priority, Priority::P1);
        assert!(!queue.done);
        assert_eq!(
            queue.title.as_deref(),
            Some("Implement queue (P1) ... depends on T001.009")
        );
        assert_eq!(queue.agent.as_deref(), Some("coder"));
        assert_eq!(queue.module, ModuleRef::Path("builtin:coder".into()));
        assert_eq!(queue.requires, ["wasm", "llm"]);
        let bus = task(&spec, "T001.009");
        assert!(bus.done);
        assert_eq!(bus.priority, Priority::P0);
        assert!(bus.needs.is_empty());
    }

    #[test]
    fn every_dependency_phrase_and_list_form_is_read() {
        let spec = parse(
            "- [ ] T1 one\n- [ ] T2 two\n- [ ] T3 three\n\
             - [ ] T4 four, after T1\n\
             - [ ] T5 requires T1, T2 and T3\n\
             - [ ] T6 blocked by: T2 & T3\n\
             - [ ] T7 Depends on tasks T1/T2\n\
             - [ ] T8 something (T3, T4)\n\
             - [ ] T9 once T8 is done, needs T7 or T6.\n\
             - [ ] T10 requires Redis (P1) and (C4 model), not after lunch\n",
        );
        assert_eq!(task(&spec, "T4").needs, ["T1"]);
        assert_eq!(task(&spec, "T5").needs, ["T1", "T2", "T3"]);
        assert_eq!(task(&spec, "T6").needs, ["T2", "T3"]);
        assert_eq!(task(&spec, "T7").needs, ["T1", "T2"]);
        assert_eq!(task(&spec, "T8").needs, ["T3", "T4"]);
        assert_eq!(task(&spec, "T9").needs, ["T8", "T7", "T6"]);
        assert!(task(&spec, "T10").needs.is_empty());
        assert_eq!(task(&spec, "T10").priority, Priority::P1);
    }

    #[test]
    fn checkbox_forms_and_done_marks() {
        let spec = parse(
            "* [X] T1 starred\n+ [ ] T2 plus\n1. [x] T3 numbered\n2) [ ] T4 paren\n\
             - [] not a checkbox\n- [ ]\n-[ ] no space\n- plain item\n",
        );
        assert_eq!(ids(&spec), ["T1", "T2", "T3", "T4"]);
        let done: Vec<bool> = spec.tasks.iter().map(|t| t.done).collect();
        assert_eq!(done, [true, false, true, false]);
    }

    #[test]
    fn code_fences_and_tables_are_not_tasks() {
        let spec = parse(
            "# M\n```\n- [ ] T9 inside a fence\n```\n| - [ ] T8 | table |\n~~~~\n- [ ] T7\n~~~~\n- [ ] T1 real\n",
        );
        assert_eq!(ids(&spec), ["T1"]);
    }

    #[test]
    fn generated_ids_are_stable_and_sectioned() {
        let text = "# Plan\n## Day 1: Project Setup (4 tasks)\n\
                    - [ ] Initialize Python project structure with Poetry\n\
                    - [ ] Setup development environment (NATS, Redis, Docker)\n\
                    ## Day 2\n- [ ] Initialize Python project structure with Poetry\n\
                    - [ ] Write tests\n- [ ] Write tests\n";
        let spec = parse(text);
        assert_eq!(
            ids(&spec),
            [
                "day-1-project-setup-4-tasks.1-initialize-python-project-structure-with",
                "day-1-project-setup-4-tasks.2-setup-development-environment-nats-redis",
                "day-2.1-initialize-python-project-structure-with",
                "day-2.2-write-tests",
                "day-2.3-write-tests",
            ]
        );
        assert_eq!(parse(text), spec, "same text, same mission");
        let no_heading = parse("- [ ] Do a thing\n- [ ] Do a thing\n");
        assert_eq!(ids(&no_heading), ["task.1-do-a-thing", "task.2-do-a-thing"]);
        assert_eq!(no_heading.name, "mission");
    }

    #[test]
    fn generated_ids_never_clash_with_declared_ones() {
        // The child of 1.1 has no words to slug, so its base id is 1.1.1,
        // which the document declares itself (under a heading, so that 1.1
        // stays a task rather than the header of a numbered group).
        let spec = parse("- [ ] 1.1 parent\n  - [ ] ...\n# Later\n- [ ] 1.1.1 declared\n");
        assert_eq!(ids(&spec), ["1.1", "1.1.1-2", "1.1.1"]);
        let grouped = parse("- [ ] 1.1 parent\n  - [ ] ...\n- [ ] 1.1.1 declared\n");
        assert_eq!(ids(&grouped), ["1.1.1-2", "1.1.1"]);
    }

    #[test]
    fn nested_items_are_subtasks_of_their_parent() {
        let spec = parse(
            "# M\n- [ ] **1.1 Project Setup**\n\
             \x20 - [ ] Initialize Rust workspace\n\
             \x20 - [x] Setup linting (clippy, rustfmt)\n\
             \x20 - **Time**: 4 hours | **Owner**: DevOps\n\n\
             - [ ] **1.2 Mission Planner** (P0) depends on 1.1\n\
             \x20 - [ ] Define data structures\n\
             \x20   - [ ] Write unit tests\n",
        );
        assert_eq!(
            ids(&spec),
            [
                "1.1",
                "1.1.1-initialize-rust-workspace",
                "1.1.2-setup-linting-clippy-rustfmt",
                "1.2",
                "1.2.1-define-data-structures",
                "1.2.1-define-data-structures.1-write-unit-tests",
            ]
        );
        let setup = task(&spec, "1.1");
        assert_eq!(setup.title.as_deref(), Some("Project Setup"));
        assert_eq!(
            setup.needs,
            [
                "1.1.1-initialize-rust-workspace",
                "1.1.2-setup-linting-clippy-rustfmt"
            ]
        );
        assert!(setup.input.as_deref().unwrap().contains("Time: 4 hours"));
        assert!(task(&spec, "1.1.2-setup-linting-clippy-rustfmt").done);
        let planner = task(&spec, "1.2");
        assert_eq!(planner.needs, ["1.1", "1.2.1-define-data-structures"]);
        assert_eq!(planner.priority, Priority::P0);
        let define = task(&spec, "1.2.1-define-data-structures");
        assert_eq!(
            define.needs,
            ["1.1", "1.2.1-define-data-structures.1-write-unit-tests"],
            "a subtask inherits its parent's dependencies"
        );
        assert_eq!(define.priority, Priority::P0, "and its priority");
        let tests = task(&spec, "1.2.1-define-data-structures.1-write-unit-tests");
        assert_eq!(tests.needs, ["1.1"]);
        assert_eq!(tests.agent.as_deref(), Some("tester"));
    }

    #[test]
    fn repeated_outline_numbers_are_renamed_and_resolved_locally() {
        let spec = parse(
            "# M\n## Phase 1\n- [ ] 1.1 Setup\n- [ ] 1.2 Build after 1.1\n\
             ## Phase 2\n- [ ] 1.1 Cluster\n  - [ ] sub\n- [ ] 1.2 Tune, after 1.1\n\
             - [ ] T1 x\n- [ ] T1 y\n",
        );
        assert_eq!(
            ids(&spec),
            ["1.1", "1.2", "1.1-2", "1.1-2.1-sub", "1.2-2", "T1", "T1"]
        );
        assert_eq!(task(&spec, "1.2").needs, ["1.1"]);
        assert_eq!(task(&spec, "1.2-2").needs, ["1.1-2"]);
    }

    #[test]
    fn numeric_references_need_a_declared_id() {
        let spec =
            parse("- [ ] T1 upgrade (2.0) after 2.5 hours\n- [ ] 3.1 real\n- [ ] T2 after 3.1\n");
        assert!(task(&spec, "T1").needs.is_empty());
        assert_eq!(task(&spec, "T2").needs, ["3.1"]);
    }

    #[test]
    fn outline_numbers_may_carry_a_letter() {
        let spec = parse("- [ ] 10. A\n- [ ] 10a. Inserted later\n- [ ] 10a.1 Step\n- [ ] 11. D\n");
        let graph: Vec<(&str, &Vec<String>)> = spec
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), &t.needs))
            .collect();
        assert_eq!(
            graph,
            [
                ("10", &vec![]),
                ("10a.1", &vec!["10".to_string()]),
                ("11", &vec!["10a.1".to_string()]),
            ]
        );
    }

    #[test]
    fn unknown_ids_are_dropped_with_a_warning() {
        let mission = read_markdown(
            "- [ ] T1 after T404 and (JPEG2000)\n  - Dependencies: T2, X-9\n- [ ] T2 x\n",
            &AgentConfig::default(),
        )
        .unwrap();
        assert_eq!(task(&mission.spec, "T1").needs, ["T2"]);
        assert_eq!(
            mission.warnings,
            [
                "line 1: task `T1` names `T404` as a dependency, but no task declares that id; ignored",
                "line 1: task `T1` names `X-9` as a dependency, but no task declares that id; ignored",
            ]
        );
    }

    #[test]
    fn priority_comes_from_line_then_parent_then_heading() {
        let spec = parse(
            "# M\n## Phase 1: Foundation - P0 CRITICAL\n### Week 1\n\
             - [ ] T1 plain\n- [ ] T2 later P3 and P1\n\
             ## Phase 2\n- [ ] T3 plain\n",
        );
        assert_eq!(task(&spec, "T1").priority, Priority::P0);
        assert_eq!(task(&spec, "T2").priority, Priority::P3);
        assert_eq!(task(&spec, "T3").priority, Priority::P2);
    }

    #[test]
    fn mission_name_prefers_the_first_h1() {
        assert_eq!(parse("## Sub\n# Title #\n- [ ] T1 x\n").name, "Title");
        assert_eq!(parse("## Only sub\n- [ ] T1 x\n").name, "Only sub");
    }

    #[test]
    fn routing_uses_context_when_the_title_has_no_keyword() {
        let spec =
            parse("# M\n## Security audit\n- [ ] T1 Deploy probes\n- [ ] T2 Write the fix\n");
        assert_eq!(task(&spec, "T1").agent.as_deref(), Some("analyzer"));
        assert_eq!(task(&spec, "T1").requires, ["wasm"]);
        assert_eq!(task(&spec, "T2").agent.as_deref(), Some("coder"));
        let input = task(&spec, "T1").input.clone().unwrap();
        assert_eq!(input, "T1 Deploy probes\nContext: M > Security audit");
    }

    #[test]
    fn a_custom_agent_config_is_used_and_checked() {
        let mut agents = AgentConfig::default();
        agents
            .keywords
            .insert(0, ("deploy".into(), "general".into()));
        let spec = parse_markdown("- [ ] T1 Deploy and test\n", &agents).unwrap();
        assert_eq!(spec.tasks[0].agent.as_deref(), Some("general"));
        agents.fallback = "missing".into();
        assert!(matches!(
            parse_markdown("- [ ] T1 x\n", &agents),
            Err(MissionError::InvalidAgents(_))
        ));
    }
}
