//! The line-level reader: headings, checkbox items and the lines that
//! continue them; code fences and HTML comments are skipped.

/// One checkbox item as read, before ids and dependencies are resolved.
#[derive(Clone, Debug)]
pub(super) struct Item {
    /// Column of its list marker; deeper items nest under shallower ones.
    pub indent: usize,
    /// Checked `[x]`/`[X]`; every other mark (`[ ]`, `[~]`, `[-]`, `[/]`) is not done.
    pub done: bool,
    /// Kiro's optional task, `- [ ]*`.
    pub optional: bool,
    /// The text after the checkbox, as written.
    pub text: String,
    /// Indented non-checkbox lines that follow it, emphasis removed.
    pub extra: Vec<String>,
    /// The enclosing item, by indentation.
    pub parent: Option<usize>,
    /// Headings above it, outermost first.
    pub headings: Vec<String>,
    /// Headings met between the previous item and this one: (level, text).
    pub headings_before: Vec<(usize, String)>,
    /// 1-based line number, for warnings.
    pub line: usize,
}

/// What [`scan`] reads from a document.
pub(super) struct Scanned {
    /// The first `#` heading, else the first heading of any level.
    pub name: Option<String>,
    pub items: Vec<Item>,
}

/// Reads headings, checkbox items and their continuation lines.
pub(super) fn scan(text: &str) -> Scanned {
    let mut first_h1: Option<String> = None;
    let mut first_heading: Option<String> = None;
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut pending_headings: Vec<(usize, String)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    // Items that later lines may nest under or continue, shallowest first.
    let mut open: Vec<usize> = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut in_comment = false;

    for (number, line) in text.lines().enumerate() {
        let indent = indent_of(line);
        let body = line.trim();
        if in_comment {
            in_comment = !body.contains("-->");
            continue;
        }
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
        if let Some(comment) = body.strip_prefix("<!--") {
            in_comment = !comment.contains("-->");
            continue;
        }
        if indent < 4 {
            if let Some((level, title)) = heading(body) {
                headings.retain(|(l, _)| *l < level);
                headings.push((level, title.clone()));
                pending_headings.push((level, title.clone()));
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
        if let Some((done, optional, text)) = checkbox(body) {
            items.push(Item {
                indent,
                done,
                optional,
                text: text.to_string(),
                extra: Vec::new(),
                parent: open.last().copied(),
                headings: headings.iter().map(|(_, h)| h.clone()).collect(),
                headings_before: std::mem::take(&mut pending_headings),
                line: number + 1,
            });
            open.push(items.len() - 1);
        } else if let Some(&top) = open.last() {
            items[top].extra.push(strip_emphasis(body));
        }
    }
    Scanned {
        name: first_h1.or(first_heading),
        items,
    }
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

/// Marks inside `[ ]` that leave a task not done: in progress (`~`, `/`,
/// Kiro's `-`), and the forwarded, scheduled, important and question
/// marks of task-list plugins.
const NOT_DONE_MARKS: &[char] = &[' ', '~', '-', '/', '>', '<', '!', '?'];

/// A checkbox list item: whether it is checked, whether it is optional
/// (`[ ]*`), and its text.
fn checkbox(body: &str) -> Option<(bool, bool, &str)> {
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
    let rest = after_marker.trim_start().strip_prefix('[')?;
    let mark = rest.chars().next()?;
    let text = rest[mark.len_utf8()..].strip_prefix(']')?;
    let done = match mark {
        'x' | 'X' => true,
        _ if NOT_DONE_MARKS.contains(&mark) => false,
        _ => return None,
    };
    let (optional, text) = match text.strip_prefix('*') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !text.is_empty() && !text.starts_with([' ', '\t']) {
        return None;
    }
    let text = text.trim();
    (!text.is_empty()).then_some((done, optional, text))
}

/// Removes bold markers that only decorate the text.
pub(super) fn strip_emphasis(text: &str) -> String {
    text.replace("**", "").replace("__", "").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkbox_marks() {
        assert_eq!(checkbox("- [ ] a"), Some((false, false, "a")));
        assert_eq!(checkbox("- [x] a"), Some((true, false, "a")));
        assert_eq!(checkbox("* [X] a"), Some((true, false, "a")));
        for mark in ["~", "-", "/"] {
            assert_eq!(
                checkbox(&format!("- [{mark}] a")),
                Some((false, false, "a"))
            );
        }
        assert_eq!(checkbox("- [ ]* 2.2 a"), Some((false, true, "2.2 a")));
        assert_eq!(checkbox("- [x]* a"), Some((true, true, "a")));
        assert_eq!(checkbox("1. [ ] a"), Some((false, false, "a")));
        for not_one in [
            "- [] a", "- [ ]", "-[ ] a", "- [ ]a", "- [P] T1", "- [é]", "- [xx] a",
        ] {
            assert_eq!(checkbox(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn comments_and_fences_hide_items() {
        let scanned = scan(
            "# T\n<!-- - [ ] hidden\n- [ ] hidden too -->\n- [ ] one\n<!-- x --> \n```\n- [ ] no\n```\n- [ ] two\n",
        );
        let texts: Vec<&str> = scanned.items.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        assert_eq!(scanned.items[0].line, 4);
        assert_eq!(scanned.items[0].headings_before, [(1, "T".to_string())]);
        assert!(scanned.items[1].headings_before.is_empty());
    }
}
