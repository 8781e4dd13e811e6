//! Words, the shape of task ids, and the places a line names other tasks.
//!
//! Nothing here knows which ids a document declares: it finds *candidates*
//! (words in a position where a task id would be a dependency) and the
//! caller keeps those that name a declared task.

/// Longest plain number taken for an outline task number (`3` of `3.`).
const MAX_NUMBER_DIGITS: usize = 9;

/// Longest upper-case prefix of a letter id (`TASK` of `TASK-001`).
const MAX_ID_LETTERS: usize = 12;

/// Dependency phrases of prose, as lower-case word sequences. Those of
/// [`COLON_PHRASES`] only count when a `:` follows them ("Depends: 4.1").
const PHRASES: &[&[&str]] = &[
    &["depends", "on"],
    &["depends", "upon"],
    &["depend", "on"],
    &["dependent", "on"],
    &["blocked", "by"],
    &["waits", "for"],
    &["wait", "for"],
    &["after"],
    &["requires"],
    &["require"],
    &["needs"],
    &["once"],
];

/// Words that name dependencies only as a label followed by `:`.
const COLON_PHRASES: &[&str] = &[
    "depends",
    "dependencies",
    "dependency",
    "deps",
    "prerequisites",
    "prerequisite",
    "prereqs",
];

/// Keys of a `Key: value` line whose value lists the tasks this one needs.
const DEPENDENCY_KEYS: &[&str] = &[
    "deps",
    "dep",
    "depends",
    "depends on",
    "depends upon",
    "depend on",
    "dependent on",
    "dependencies",
    "dependency",
    "blocked by",
    "blocker",
    "blockers",
    "after",
    "needs",
    "requires",
    "prerequisites",
    "prerequisite",
    "prereqs",
    "prereq",
    "waits for",
    "wait for",
    "predecessors",
    "upstream",
];

/// Keys whose value lists tasks that need this one.
const BLOCKS_KEYS: &[&str] = &["blocks", "blocking", "unblocks"];

/// Keys whose value refers to other things (requirements, properties,
/// files): such a line never names a dependency, even with task-like
/// numbers in it (Kiro's `_Requirements: 1.1, 2.3_`).
const REFERENCE_KEYS: &[&str] = &[
    "requirements",
    "requirement",
    "reqs",
    "req",
    "validates",
    "validate",
    "refs",
    "ref",
    "references",
    "reference",
    "related",
    "related to",
    "see",
    "see also",
    "files",
    "file",
    "boundary",
    "covers",
    "satisfies",
    "implements",
    "traces",
    "trace",
    "acceptance",
    "acceptance criteria",
    "leverage",
    "spec",
    "specs",
    "story",
    "user story",
    "stories",
    "labels",
    "tags",
    "links",
    "link",
    "source",
    "sources",
];

/// A word (letters, digits, inner dots, underscores and dashes) or one
/// punctuation character.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    Word(String),
    Punct(char),
}

/// Whether `c` joins two letters or digits into one word (`TASK-001`,
/// and the ranges `T001-T005`, `T009–T012`).
fn is_inner_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2013}' | '\u{2011}')
}

/// Splits `text` into words and punctuation. A word's leading and trailing
/// dots and underscores are dropped: a dot ends a sentence ("after
/// T001.009.") and underscores are emphasis (`_Depends: 4.1_`).
pub(super) fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        let trimmed = word.trim_matches(['.', '_']);
        if !trimmed.is_empty() {
            out.push(Token::Word(trimmed.to_string()));
        }
        word.clear();
    };
    for (at, &c) in chars.iter().enumerate() {
        let joins = is_inner_dash(c)
            && at > 0
            && chars[at - 1].is_alphanumeric()
            && chars.get(at + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || c == '.' || c == '_' || joins {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `P` and one digit: `P0`-`P3` are priorities, and `P4`-`P9` look too
/// much like mistyped ones to be taken for task ids.
pub(super) fn is_priority_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes.len() == 2 && bytes[0] == b'P' && bytes[1].is_ascii_digit()
}

/// Whether `word` has the shape of a task id: upper-case letters, an
/// optional `-`, digits, then any number of `.digits` or `-digits` parts,
/// a dotted part optionally ending in one lower-case letter (`T001.010`,
/// `T3`, `E1`, `TASK-001`, `I-1.2`, `T040.2a`); or dotted numbers (`1.1`,
/// `2.3.1`). A priority word is never an id.
pub(crate) fn is_id(word: &str) -> bool {
    if is_priority_word(word) {
        return false;
    }
    let letters = word.bytes().take_while(u8::is_ascii_uppercase).count();
    if letters > MAX_ID_LETTERS {
        return false;
    }
    let mut rest = &word[letters..];
    if letters > 0 {
        rest = rest.strip_prefix('-').unwrap_or(rest);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let mut rest = &rest[digits..];
    // An outline number may carry a letter before its dots (`10a.1`).
    if letters == 0
        && rest.len() > 1
        && rest.as_bytes()[0].is_ascii_lowercase()
        && rest.as_bytes()[1] == b'.'
    {
        rest = &rest[1..];
    }
    let mut parts = 0;
    while let Some(separator) = rest.chars().next() {
        if separator != '.' && (separator != '-' || letters == 0) {
            return false;
        }
        let part = &rest[1..];
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &part[digits..];
        if separator == '.' && rest.starts_with(|c: char| c.is_ascii_lowercase()) {
            rest = &rest[1..];
        }
        parts += 1;
    }
    letters > 0 || parts > 0
}

/// A plain number short enough to be an outline task number (`3` of `3.`),
/// optionally with one letter (`10a` of `10a.`).
pub(super) fn is_plain_number(word: &str) -> bool {
    let digits = word
        .strip_suffix(|c: char| c.is_ascii_lowercase())
        .unwrap_or(word);
    !digits.is_empty()
        && digits.len() <= MAX_NUMBER_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether an id is an outline number (`1.1`, `3`) rather than a letter id.
pub(super) fn is_numeric(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
}

/// The family of an id, to tell a mistyped task id from an unrelated
/// acronym: its upper-case letters and a following `-` (`T`, `TASK-`),
/// empty for outline numbers.
pub(super) fn id_shape(word: &str) -> &str {
    let letters = word.bytes().take_while(u8::is_ascii_uppercase).count();
    let end = if word[letters..].starts_with('-') {
        letters + 1
    } else {
        letters
    };
    &word[..end]
}

/// The two ends of a range word (`T001-T005`, `T009–T012`, `2.1-2.3`), at
/// every dash that could separate them; the caller keeps the split whose
/// ends are both declared.
pub(super) fn range_ends(word: &str) -> Vec<(&str, &str)> {
    word.char_indices()
        .filter(|(_, c)| is_inner_dash(*c))
        .map(|(at, c)| (&word[..at], &word[at + c.len_utf8()..]))
        .filter(|(first, last)| is_id(first) && is_id(last))
        .collect()
}

/// Where a candidate was found, which decides what an undeclared one means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// After a dependency phrase of prose ("depends on T3").
    Phrase,
    /// In a parenthesized group made only of ids ("(T3, T4)").
    Paren,
    /// In the value of a dependency field ("Dependencies: T3, T4").
    Field,
}

/// A word in a position where a task id would name another task.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Candidate {
    pub word: String,
    pub source: Source,
    /// Plain numbers count too ("after task 3", `_Depends: 3_`).
    pub numbers: bool,
}

/// Whether `word` could name a task in a list: an id, a range of ids, or
/// (when `numbers`) a plain number.
fn could_name_task(word: &str, numbers: bool) -> bool {
    is_id(word) || !range_ends(word).is_empty() || (numbers && is_plain_number(word))
}

fn lower_words(tokens: &[Token]) -> Vec<Option<String>> {
    tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) => Some(w.to_lowercase()),
            Token::Punct(_) => None,
        })
        .collect()
}

/// Ids after each dependency phrase of `tokens`, as lists separated by
/// `,` `&` `/` `+` `;` `and` `or` ("depends on T1, T2 and T3"), optionally
/// introduced by "task"/"tasks" (which lets plain numbers count).
pub(super) fn phrase_candidates(tokens: &[Token]) -> Vec<Candidate> {
    let lower = lower_words(tokens);
    let word_at = |i: usize| lower.get(i).and_then(|w| w.as_deref());
    let mut out = Vec::new();
    for start in 0..tokens.len() {
        let length = PHRASES
            .iter()
            .find(|p| {
                p.iter()
                    .enumerate()
                    .all(|(k, w)| word_at(start + k) == Some(w))
            })
            .map(|p| p.len())
            .or_else(|| {
                let colon = matches!(tokens.get(start + 1), Some(Token::Punct(':')));
                (colon && word_at(start).is_some_and(|w| COLON_PHRASES.contains(&w))).then_some(1)
            });
        let Some(length) = length else { continue };
        out.extend(list_after(tokens, &lower, start + length, Source::Phrase));
    }
    out
}

/// Punctuation that may decorate an id in a list: `#12`, `` `T3` ``, `*T3*`.
fn is_decoration(c: char) -> bool {
    matches!(c, '#' | '`' | '*' | '[' | ']' | '"' | '\'')
}

/// The list of ids starting at `i` (after a phrase), see [`phrase_candidates`].
fn list_after(
    tokens: &[Token],
    lower: &[Option<String>],
    mut i: usize,
    source: Source,
) -> Vec<Candidate> {
    let word_at = |i: usize| lower.get(i).and_then(|w| w.as_deref());
    let mut out = Vec::new();
    while matches!(tokens.get(i), Some(Token::Punct(c)) if *c == ':' || *c == '(' || is_decoration(*c))
    {
        i += 1;
    }
    let mut numbers = false;
    if matches!(word_at(i), Some("task" | "tasks" | "step" | "steps")) {
        numbers = true;
        i += 1;
    }
    let skip_decoration = |mut i: usize| {
        while matches!(tokens.get(i), Some(Token::Punct(c)) if is_decoration(*c)) {
            i += 1;
        }
        i
    };
    i = skip_decoration(i);
    let id_at = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) if could_name_task(w, numbers) => Some(w.clone()),
        _ => None,
    };
    while let Some(word) = id_at(i) {
        out.push(Candidate {
            word,
            source,
            numbers,
        });
        i = skip_decoration(i + 1);
        // Separators between ids: punctuation, "and", "or", in any mix.
        let mut j = i;
        loop {
            match (tokens.get(j), word_at(j)) {
                (Some(Token::Punct(',' | '&' | '/' | '+' | ';')), _) => j += 1,
                (_, Some("and" | "or" | "task" | "tasks")) => j += 1,
                (Some(Token::Punct(c)), _) if is_decoration(*c) => j += 1,
                _ => break,
            }
        }
        if j == i || id_at(j).is_none() {
            break;
        }
        i = j;
    }
    out
}

/// Letter ids of every `( ... )` group of `line` whose words are all ids,
/// ranges, numbers or priorities (joined by `,` `&` `/` `;` or "and"):
/// "(T001.009)", "(T3, T4)". A group with any other word ("(C4 model)",
/// "(see T5)") is text, and so are numbers in parentheses: "(5.3)" is far
/// more often a section, a version or a requirement than a task.
pub(super) fn paren_candidates(line: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
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
        let mut words = Vec::new();
        let mut only_ids = true;
        for token in tokens(inner) {
            match token {
                Token::Word(w) if is_numeric(&w) && could_name_task(&w, true) => {}
                Token::Word(w) if could_name_task(&w, false) => words.push(w),
                Token::Word(w) if is_priority_word(&w) || w.eq_ignore_ascii_case("and") => {}
                Token::Punct(c) if matches!(c, ',' | '&' | '/' | ';') || is_decoration(c) => {}
                _ => {
                    only_ids = false;
                    break;
                }
            }
        }
        if only_ids {
            out.extend(words.into_iter().map(|word| Candidate {
                word,
                source: Source::Paren,
                numbers: false,
            }));
        }
        rest = &after[close + 1..];
    }
    out
}

/// Words that may sit between the ids of a dependency field's list.
const LIST_WORDS: &[&str] = &[
    "and", "or", "task", "tasks", "step", "steps", "none", "n/a", "na",
];

/// Every id or range in the value of a dependency field, and its plain
/// numbers when the value is a bare list ("3, 4" or "task 3"), so that
/// "Requires: Redis 7" never names task 7.
pub(super) fn field_candidates(value: &str) -> Vec<Candidate> {
    let mut outside = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    let bare_list = tokens(&outside).iter().all(|token| match token {
        Token::Word(w) => {
            could_name_task(w, true) || LIST_WORDS.contains(&w.to_lowercase().as_str())
        }
        Token::Punct(_) => true,
    });
    tokens(value)
        .into_iter()
        .filter_map(|token| match token {
            Token::Word(word) if could_name_task(&word, bare_list) => Some(Candidate {
                word,
                source: Source::Field,
                numbers: bare_list,
            }),
            _ => None,
        })
        .collect()
}

/// What a `Key: value` continuation line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field<'a> {
    /// Tasks this one needs.
    Needs(&'a str),
    /// Tasks that need this one.
    Blocks(&'a str),
    /// Requirements, properties, files...: never dependencies.
    Reference,
}

/// Reads a continuation line as a `Key: value` field: an optional list
/// marker or arrow (`-`, `*`, `→`, `->`), emphasis around it (`_Requirements:
/// 1.1_`, `**Depends on**: T3`), a key of at most four words, a colon.
/// `None` for prose and for keys that are none of the three kinds.
pub(super) fn field(line: &str) -> Option<Field<'_>> {
    let mut body = line.trim();
    for marker in ["- ", "* ", "+ ", "→", "->", "=>", "⇒", "> "] {
        if let Some(rest) = body.strip_prefix(marker) {
            body = rest.trim_start();
            break;
        }
    }
    let body = body.trim_matches(['_', '*', ' ']);
    let (key, value) = body.split_once(':')?;
    let key = key
        .trim()
        .trim_matches(['_', '*', '`'])
        .trim()
        .to_lowercase();
    let words: Vec<&str> = key.split_whitespace().collect();
    if words.is_empty()
        || words.len() > 4
        || !key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '/' | '&' | '(' | ')'))
    {
        return None;
    }
    let key = words.join(" ");
    let value = value.trim().trim_end_matches(['_', '*']).trim();
    if DEPENDENCY_KEYS.contains(&key.as_str()) {
        Some(Field::Needs(value))
    } else if BLOCKS_KEYS.contains(&key.as_str()) {
        Some(Field::Blocks(value))
    } else if REFERENCE_KEYS.contains(&key.as_str())
        || words[0] == "property"
        || words[0] == "requirements"
    {
        Some(Field::Reference)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(candidates: Vec<Candidate>) -> Vec<String> {
        candidates.into_iter().map(|c| c.word).collect()
    }

    #[test]
    fn id_grammar() {
        for id in [
            "T001.010", "T1", "E001", "1.1", "2.3.1", "AB12.3", "T040.2a", "I-1.2", "TASK-001",
            "T001.01", "FR-1", "US1", "10a.1", "2.1a",
        ] {
            assert!(is_id(id), "{id}");
        }
        for word in [
            "P0",
            "P3",
            "t1",
            "1",
            "T",
            "T1.",
            "1..2",
            "v1.0",
            "C4x",
            "",
            "T1-T3",
            "1-2",
            "T1a",
            "-T1",
            "2024-01-15",
            "10a",
            "1a.b",
        ] {
            assert!(!is_id(word), "{word}");
        }
    }

    #[test]
    fn dashes_join_words_and_ranges_split_them() {
        assert_eq!(
            tokens("TASK-001 and T009–T012, x - y _Depends: 4.1_"),
            vec![
                Token::Word("TASK-001".into()),
                Token::Word("and".into()),
                Token::Word("T009–T012".into()),
                Token::Punct(','),
                Token::Word("x".into()),
                Token::Punct('-'),
                Token::Word("y".into()),
                Token::Word("Depends".into()),
                Token::Punct(':'),
                Token::Word("4.1".into()),
            ]
        );
        assert_eq!(range_ends("T009–T012"), [("T009", "T012")]);
        assert_eq!(range_ends("TASK-001-TASK-003"), [("TASK-001", "TASK-003")]);
        assert!(range_ends("TASK-001").is_empty());
    }

    #[test]
    fn phrases_read_lists_of_ids() {
        let found = |text: &str| words(phrase_candidates(&tokens(text)));
        assert_eq!(found("depends on T1, T2 and T3"), ["T1", "T2", "T3"]);
        assert_eq!(found("Depends on: **T3**"), ["T3"]);
        assert_eq!(found("deps: T001.00"), ["T001.00"]);
        assert_eq!(
            found("blocked by #TASK-101, #TASK-102"),
            ["TASK-101", "TASK-102"]
        );
        assert_eq!(found("after task 3 and 4"), ["3", "4"]);
        assert!(found("after 3 days").is_empty());
        assert!(found("the depends list").is_empty());
        assert_eq!(found("Depends on T009–T012."), ["T009–T012"]);
    }

    #[test]
    fn parentheses_count_only_when_made_of_ids() {
        let found = |text: &str| words(paren_candidates(text));
        assert_eq!(found("x (T3, T4) y (P1)"), ["T3", "T4"]);
        assert_eq!(
            found("(JPEG2000) and (P50, P99)"),
            ["JPEG2000", "P50", "P99"]
        );
        assert!(found("(C4 model) (see T5) (P)").is_empty());
        assert_eq!(found("nonce (5.2), AAD (5.4) and (T7, 1.1)"), ["T7"]);
    }

    #[test]
    fn fields_are_told_apart_by_key() {
        assert_eq!(field("deps: T001.00"), Some(Field::Needs("T001.00")));
        assert_eq!(
            field("- Dependencies: T1, T2"),
            Some(Field::Needs("T1, T2"))
        );
        assert_eq!(field("→ Blocked by: T4"), Some(Field::Needs("T4")));
        assert_eq!(field("_Depends: 2.1, 2.2_"), Some(Field::Needs("2.1, 2.2")));
        assert_eq!(field("**Depends on**: T3"), Some(Field::Needs("T3")));
        assert_eq!(field("Blocks: T9"), Some(Field::Blocks("T9")));
        assert_eq!(field("_Requirements: 1.1, 2.3_"), Some(Field::Reference));
        assert_eq!(
            field("- **Validates: Requirements 1.2**"),
            Some(Field::Reference)
        );
        assert_eq!(field("**Property 4: Stability**"), Some(Field::Reference));
        assert_eq!(field("Description: after T1"), None);
        assert_eq!(field("Run it: now, with a very long key here"), None);
        assert_eq!(field("no colon here"), None);
        assert_eq!(
            words(field_candidates("T1, T2 (and 3.1), none")),
            ["T1", "T2", "3.1"]
        );
        assert_eq!(words(field_candidates("3, 4 and task 5")), ["3", "4", "5"]);
        assert_eq!(words(field_candidates("Redis 7 and T2")), ["T2"]);
    }

    #[test]
    fn shapes_tell_families_apart() {
        assert_eq!(id_shape("T404"), "T");
        assert_eq!(id_shape("TASK-009"), "TASK-");
        assert_eq!(id_shape("2.5"), "");
        assert_eq!(id_shape("JPEG2000"), "JPEG");
    }
}
