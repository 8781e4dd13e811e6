//! The markdown tasklist format of the seeds.
//!
//! Rules, in the order the reader applies them:
//!
//! - **Tasks** are checkbox list items: `- [ ] text`, `* [x] text`,
//!   `1. [ ] text` (`-`, `*`, `+` or `N.`/`N)` markers). `[x]`/`[X]` marks
//!   the task done. Fenced code blocks are skipped; everything else that is
//!   not a checkbox, a heading or an indented continuation is ignored.
//! - **Nesting**: a checkbox indented under another is its subtask. The
//!   parent needs all its subtasks (a checklist item is complete when its
//!   sub-items are), and each subtask inherits the parent's own
//!   dependencies, so it does not start before what the parent waits for.
//!   A subtask that names its own ancestor as a dependency therefore makes a
//!   cycle, which `validate` reports.
//! - **Continuation**: lines indented deeper than an item that are not
//!   checkboxes (`  - **Time**: 4 hours`, a description) belong to it: they
//!   are searched for dependencies and handed to the agent as input.
//! - **Ids**: the item's first word, with `**`/`__` emphasis and a trailing
//!   `:` removed, when it is a task id: capital letters then digits with
//!   optional `.digits` parts (`T001.010`, `E1`, `T3`), or dotted numbers
//!   (`1.1`, `2.3.1`). `P` and one digit (`P0`-`P3` are priorities, `P4`-`P9`
//!   look like mistyped ones) is never an id.
//! - **Generated ids** for items without one: `<section>.<n>-<slug>`, where
//!   the section is the parent task's id for a subtask and otherwise the slug
//!   of the nearest heading (`task` before any heading), `n` is the item's
//!   1-based position among the checkboxes of that section, and the slug is
//!   made of the first words of its text (lower case, `a-z0-9` joined by
//!   `-`). Both parts are cut to 40 characters at a `-`. A clash gets `-2`,
//!   `-3`, ... appended. The same file always gives the same ids, and an
//!   edit only renumbers items later in the same section.
//! - **Dependencies**: ids after "depends on", "depend on", "dependent on",
//!   "blocked by", "after", "requires", "require", "needs", "once"
//!   (optionally followed by ":" and "task"/"tasks"), as a list separated by
//!   `,` `&` `/` `+` `and` `or` ("depends on T1, T2 and T3"); and every
//!   parenthesized group made only of ids (and priorities): "(T001.009)".
//!   Dotted-number references (`2.5`) only count when the document declares
//!   that id, so a version or a duration is not taken for a task; a letter
//!   id that nobody declares is kept and reported by `validate`.
//! - **Outline numbers restart**: the seeds number work `1.1`, `1.2`, ...
//!   afresh in every phase, so the k-th declaration (k >= 2) of the same
//!   dotted number is renamed `<number>-<k>` (`1.1-2`), and a dotted-number
//!   reference means the nearest declaration above the referring item (else
//!   the first one). Letter ids are never renamed: a repeated `T001.010` is
//!   a duplicate that `validate` refuses.
//! - **Priority**: the first standalone `P0`-`P3` in the item's line; else
//!   the parent task's; else the nearest heading's that names one (`## Phase
//!   1 - P0 CRITICAL`); else P2.
//! - **Mission name**: the first `#` heading, else the first heading of any
//!   level, else "mission"; control characters become spaces and it is cut
//!   to `caps::MAX_MISSION_NAME_BYTES`. Headings are kept as routing context and input.
//! - **Routing**: the item's title, then its ancestors' titles, then its
//!   headings from the innermost out are tried against
//!   [`AgentConfig::route`]; the kind's module becomes the task's module
//!   (`ModuleRef::Path`) and its `requires` the task's requires.
//! - **Input**: the item's text, its continuation lines, and a final
//!   `Context: H1 > H2 > ...` line of its headings.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::agents::AgentConfig;
use super::error::MissionError;
use super::spec::{MissionSpec, ModuleRef, Priority, TaskSpec};

/// Name of a mission whose markdown has no heading at all.
const DEFAULT_NAME: &str = "mission";
/// Section of items that come before any heading.
const DEFAULT_SECTION: &str = "task";
/// Longest section or title slug in a generated id.
const SLUG_MAX: usize = 40;
/// Words of a title used in its slug.
const SLUG_WORDS: usize = 6;

/// Dependency phrases, as lower-case word sequences.
const DEPENDENCY_PHRASES: &[&[&str]] = &[
    &["depends", "on"],
    &["depend", "on"],
    &["dependent", "on"],
    &["blocked", "by"],
    &["after"],
    &["requires"],
    &["require"],
    &["needs"],
    &["once"],
];

/// One checkbox item as read, before ids and dependencies are resolved.
struct Item {
    /// Column of its list marker; deeper items nest under shallower ones.
    indent: usize,
    done: bool,
    /// The text after the checkbox, as written.
    text: String,
    /// Indented non-checkbox lines that follow it.
    extra: Vec<String>,
    /// The enclosing item, for a nested checkbox.
    parent: Option<usize>,
    /// Headings above it, outermost first.
    headings: Vec<String>,
}

/// Parses a markdown tasklist into a mission, routing each task to an agent
/// kind with `agents`. See the module docs for the exact rules. A file
/// without checkboxes parses to a mission without tasks, which
/// [`super::validate`] then refuses.
pub fn parse_markdown(text: &str, agents: &AgentConfig) -> Result<MissionSpec, MissionError> {
    agents.validate()?;
    let (name, items) = read_items(text);

    // Ids: declared ones first, so generated ids can avoid every one of them.
    let parsed: Vec<(Option<String>, String)> = items.iter().map(|i| split_id(&i.text)).collect();
    let mut used: HashSet<String> = parsed.iter().filter_map(|(id, _)| id.clone()).collect();
    let mut positions: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    // Every declaration of each outline number, as (item, final id).
    let mut outline: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let section = match item.parent {
            Some(parent) => ids[parent].clone(),
            None => item
                .headings
                .last()
                .map(|h| slug(h, usize::MAX))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SECTION.to_string()),
        };
        let position = positions.entry(section.clone()).or_insert(0);
        *position += 1;
        let id = match &parsed[index].0 {
            Some(id) if is_numeric_id(id) => {
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
                let title_slug = slug(&parsed[index].1, SLUG_WORDS);
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

    // Explicit dependencies of each item, from its line and continuation.
    // An outline number means its nearest declaration above the referring
    // item (the same phase, in the seeds), else its first one.
    let resolve = |reference: String, at: usize| -> Option<String> {
        if !is_numeric_id(&reference) {
            return Some(reference);
        }
        let declarations = outline.get(&reference)?;
        declarations
            .iter()
            .rev()
            .find(|(item, _)| *item < at)
            .or(declarations.first())
            .map(|(_, id)| id.clone())
    };
    let explicit: Vec<Vec<String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let mut refs = Vec::new();
            for line in std::iter::once(&item.text).chain(&item.extra) {
                refs.extend(references(line));
            }
            let mut seen = HashSet::new();
            refs.into_iter()
                .filter_map(|r| resolve(r, index))
                .filter(|r| seen.insert(r.clone()))
                .collect()
        })
        .collect();

    // Subtrees are contiguous in document order: item `i` and its
    // descendants are exactly `i..end[i]`.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (index, item) in items.iter().enumerate() {
        if let Some(parent) = item.parent {
            children[parent].push(index);
        }
    }
    let mut end = vec![0; items.len()];
    for index in (0..items.len()).rev() {
        end[index] = children[index].last().map_or(index + 1, |&last| end[last]);
    }
    let position_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .rev()
        .map(|(index, id)| (id.as_str(), index))
        .collect();

    // Everything below is computed parent first, so each item reads its
    // parent's results instead of walking all its ancestors again.
    let mut inherited: Vec<Vec<String>> = Vec::with_capacity(items.len());
    let mut priorities: Vec<Priority> = Vec::with_capacity(items.len());
    let mut kinds: Vec<String> = Vec::with_capacity(items.len());
    let mut tasks = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let title = parsed[index].1.clone();

        // A subtask inherits its ancestors' dependencies, except those inside
        // the ancestor's own subtree, which would make it wait on itself or
        // on a sibling the ancestor merely gathers.
        let from_parent = match item.parent {
            Some(p) => {
                let mut deps = inherited[p].clone();
                deps.extend(
                    explicit[p]
                        .iter()
                        .filter(|dep| {
                            !position_of
                                .get(dep.as_str())
                                .is_some_and(|&at| (p..end[p]).contains(&at))
                        })
                        .cloned(),
                );
                deps
            }
            None => Vec::new(),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let needs: Vec<String> = explicit[index]
            .iter()
            .chain(&from_parent)
            .cloned()
            .chain(children[index].iter().map(|&child| ids[child].clone()))
            .filter(|dep| seen.insert(dep.clone()))
            .collect();
        inherited.push(from_parent);

        let priority = first_priority(&item.text)
            .or_else(|| item.parent.map(|p| priorities[p]))
            .or_else(|| item.headings.iter().rev().find_map(|h| first_priority(h)))
            .unwrap_or_default();
        priorities.push(priority);

        // The item's own title decides first; else whatever decided for its
        // parent (its ancestors' titles, then the shared headings).
        let kind_name = match agents.match_text(&title) {
            Some(kind) => kind.to_string(),
            None => match item.parent {
                Some(p) => kinds[p].clone(),
                None => {
                    let headings: Vec<&str> =
                        item.headings.iter().rev().map(String::as_str).collect();
                    agents.route(&headings).to_string()
                }
            },
        };
        kinds.push(kind_name.clone());
        let kind = &agents.kinds[&kind_name];

        let mut input = strip_emphasis(&item.text);
        for line in &item.extra {
            input.push('\n');
            input.push_str(line);
        }
        if !item.headings.is_empty() {
            input.push_str("\nContext: ");
            input.push_str(&item.headings.join(" > "));
        }

        let mut task = TaskSpec::new(ids[index].clone(), ModuleRef::Path(kind.module.clone()));
        task.needs = needs;
        task.requires = kind.requires.clone();
        task.priority = priority;
        task.input = Some(input);
        task.done = item.done;
        task.agent = Some(kind_name);
        task.title = Some(title);
        tasks.push(task);
    }
    Ok(MissionSpec {
        name: name
            .map(|heading| super::grammar::fit_mission_name(&heading))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_string()),
        tasks,
    })
}

/// Reads headings, checkbox items and their continuation lines.
fn read_items(text: &str) -> (Option<String>, Vec<Item>) {
    let mut first_h1: Option<String> = None;
    let mut first_heading: Option<String> = None;
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    // Items that later lines may nest under or continue, shallowest first.
    let mut open: Vec<usize> = Vec::new();
    let mut fence: Option<(char, usize)> = None;

    for line in text.lines() {
        let indent = indent_of(line);
        let body = line.trim();
        if let Some((marker, len)) = fence_marker(body) {
            match fence {
                None => {
                    fence = Some((marker, len));
                    continue;
                }
                Some((open_marker, open_len)) if marker == open_marker && len >= open_len => {
                    fence = None;
                    continue;
                }
                Some(_) => continue,
            }
        }
        if fence.is_some() || body.is_empty() {
            continue;
        }
        if indent < 4 {
            if let Some((level, title)) = heading(body) {
                headings.retain(|(l, _)| *l < level);
                headings.push((level, title.clone()));
                if level == 1 && first_h1.is_none() {
                    first_h1 = Some(title.clone());
                }
                if first_heading.is_none() {
                    first_heading = Some(title);
                }
                open.clear();
                continue;
            }
        }
        while open.last().is_some_and(|&top| items[top].indent >= indent) {
            open.pop();
        }
        if let Some((done, text)) = checkbox(body) {
            items.push(Item {
                indent,
                done,
                text: text.to_string(),
                extra: Vec::new(),
                parent: open.last().copied(),
                headings: headings.iter().map(|(_, h)| h.clone()).collect(),
            });
            open.push(items.len() - 1);
        } else if let Some(&top) = open.last() {
            items[top].extra.push(strip_emphasis(body));
        }
    }
    (first_h1.or(first_heading), items)
}

/// Leading whitespace width, a tab counting as four columns.
fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// A code fence line: its character and length.
fn fence_marker(body: &str) -> Option<(char, usize)> {
    let first = body.chars().next()?;
    if first != '`' && first != '~' {
        return None;
    }
    let len = body.chars().take_while(|&c| c == first).count();
    (len >= 3).then_some((first, len))
}

/// An ATX heading: its level and text without `#`s or emphasis.
fn heading(body: &str) -> Option<(usize, String)> {
    let level = body.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &body[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    Some((level, strip_emphasis(title)))
}

/// A checkbox list item: whether it is checked, and its text.
fn checkbox(body: &str) -> Option<(bool, &str)> {
    let after_marker = if let Some(rest) = body
        .strip_prefix("- ")
        .or_else(|| body.strip_prefix("* "))
        .or_else(|| body.strip_prefix("+ "))
    {
        rest
    } else {
        let digits = body.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let rest = &body[digits..];
        rest.strip_prefix(". ")
            .or_else(|| rest.strip_prefix(") "))?
    };
    let rest = after_marker.trim_start();
    let (done, text) = if let Some(text) = rest.strip_prefix("[ ]") {
        (false, text)
    } else if let Some(text) = rest
        .strip_prefix("[x]")
        .or_else(|| rest.strip_prefix("[X]"))
    {
        (true, text)
    } else {
        return None;
    };
    if !text.is_empty() && !text.starts_with([' ', '\t']) {
        return None;
    }
    let text = text.trim();
    (!text.is_empty()).then_some((done, text))
}

/// Removes bold/italic markers that only decorate the text.
fn strip_emphasis(text: &str) -> String {
    text.replace("**", "").replace("__", "").trim().to_string()
}

/// Splits an item's text into its declared id (if its first word is one) and its title.
fn split_id(text: &str) -> (Option<String>, String) {
    let plain = strip_emphasis(text);
    let mut parts = plain.splitn(2, char::is_whitespace);
    let first = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("").trim();
    let candidate = first
        .trim_start_matches('[')
        .trim_end_matches([':', ']', ',', ';']);
    if is_id(candidate) {
        let title = rest
            .trim_start_matches([':', '-', '\u{2014}', '\u{2013}'])
            .trim()
            .to_string();
        let title = if title.is_empty() {
            candidate.to_string()
        } else {
            title
        };
        (Some(candidate.to_string()), title)
    } else {
        (None, plain)
    }
}

/// Whether `word` is a task id of the markdown grammar (see the module docs).
pub(crate) fn is_id(word: &str) -> bool {
    if is_priority_word(word) {
        return false;
    }
    let letters = word.chars().take_while(char::is_ascii_uppercase).count();
    let rest = &word[letters..];
    if letters > 0 {
        dotted_digits(rest, 0)
    } else {
        dotted_digits(rest, 1)
    }
}

/// `digits(.digits)*` with at least `min_dots` dots.
fn dotted_digits(text: &str, min_dots: usize) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() > min_dots
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn is_numeric_id(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_digit())
}

/// `P` and one digit: `P0`-`P3` are priorities, and `P4`-`P9` look too
/// much like mistyped ones to be taken for task ids.
fn is_priority_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes.len() == 2 && bytes[0] == b'P' && bytes[1].is_ascii_digit()
}

/// The first standalone `P0`..`P3` in `text`.
fn first_priority(text: &str) -> Option<Priority> {
    words(text).into_iter().find_map(|token| match token {
        Token::Word(w) if is_priority_word(&w) => w.parse::<Priority>().ok(),
        _ => None,
    })
}

/// A word (letters, digits and inner dots) or one punctuation character.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Punct(char),
}

fn words(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, tokens: &mut Vec<Token>| {
        // A trailing dot ends a sentence, not an id ("after T001.009.").
        let trimmed = word.trim_matches('.');
        if !trimmed.is_empty() {
            tokens.push(Token::Word(trimmed.to_string()));
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '.' || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut tokens);
            if !c.is_whitespace() {
                tokens.push(Token::Punct(c));
            }
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

/// Every task id `line` names as a dependency, in order of appearance
/// (keyword lists first, then parenthesized groups), possibly repeated.
fn references(line: &str) -> Vec<String> {
    let mut refs = keyword_references(&words(line));
    refs.extend(parenthesized_references(line));
    refs
}

fn keyword_references(tokens: &[Token]) -> Vec<String> {
    let lower: Vec<Option<String>> = tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) => Some(w.to_lowercase()),
            Token::Punct(_) => None,
        })
        .collect();
    let word_at = |i: usize| lower.get(i).and_then(|w| w.as_deref());
    let id_at = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) if is_id(w) => Some(w.clone()),
        _ => None,
    };
    let mut refs = Vec::new();
    for start in 0..tokens.len() {
        let Some(phrase) = DEPENDENCY_PHRASES.iter().find(|p| {
            p.iter()
                .enumerate()
                .all(|(k, w)| word_at(start + k) == Some(w))
        }) else {
            continue;
        };
        let mut i = start + phrase.len();
        while matches!(tokens.get(i), Some(Token::Punct(':' | '('))) {
            i += 1;
        }
        if matches!(word_at(i), Some("task" | "tasks")) {
            i += 1;
        }
        while let Some(id) = id_at(i) {
            refs.push(id);
            i += 1;
            // Separators between ids: punctuation, "and", "or", in any mix.
            let mut j = i;
            loop {
                match (tokens.get(j), word_at(j)) {
                    (Some(Token::Punct(',' | '&' | '/' | '+' | ';')), _) => j += 1,
                    (_, Some("and" | "or")) => j += 1,
                    _ => break,
                }
            }
            if j == i || id_at(j).is_none() {
                break;
            }
            i = j;
        }
    }
    refs
}

/// Ids of every `( ... )` group whose words are all ids or priorities.
fn parenthesized_references(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('(') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(')') else { break };
        let inner = &after[..close];
        // A nested "(" means this group is not a plain list; retry from it.
        if let Some(nested) = inner.find('(') {
            rest = &after[nested..];
            continue;
        }
        let mut ids = Vec::new();
        let mut only_ids = true;
        for token in words(inner) {
            match token {
                Token::Word(w) if is_id(&w) => ids.push(w),
                Token::Word(w) if is_priority_word(&w) => {}
                Token::Word(w) if w.eq_ignore_ascii_case("and") => {}
                Token::Punct(',' | '&' | '/' | ';') => {}
                _ => {
                    only_ids = false;
                    break;
                }
            }
        }
        if only_ids {
            refs.extend(ids);
        }
        rest = &after[close + 1..];
    }
    refs
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
        // which the document declares itself.
        let spec = parse("- [ ] 1.1 parent\n  - [ ] ...\n- [ ] 1.1.1 declared\n");
        assert_eq!(ids(&spec), ["1.1", "1.1.1-2", "1.1.1"]);
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
    fn unknown_letter_ids_are_kept_for_validation_to_report() {
        let spec = parse("- [ ] T1 after T404\n");
        assert_eq!(task(&spec, "T1").needs, ["T404"]);
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

    #[test]
    fn id_grammar() {
        for id in ["T001.010", "T1", "E001", "1.1", "2.3.1", "AB12.3"] {
            assert!(is_id(id), "{id}");
        }
        for word in ["P0", "P3", "t1", "1", "T", "T1.", "1..2", "v1.0", "C4x", ""] {
            assert!(!is_id(word), "{word}");
        }
    }
}
