//! The dependency rules of ARCHITECTURE.md, checked on the source: crates
//! depend one way (memory, sandbox <- gossip, consensus <- node <-
//! simulation), and no two files of one crate import each other, directly
//! or around a circle.
//!
//! A file imports another when it names a path into it: `crate::a::b`,
//! `super::x`, `self::x`, or `child::x` for a module `child` it declares.
//! Test modules (from the first `#[cfg(test)]` on) do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 7] = [
    "memory",
    "sandbox",
    "gossip",
    "consensus",
    "node",
    "simulation",
    "tests",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `runtime/mod.rs` is `runtime`, `lib.rs` the
/// root; `main.rs` (the root of the binary) is named `main` so it does not
/// take the library root's place.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code without comments, string and character literals, and test modules.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (rest.starts_with("r#") || rest.starts_with("r\""))
            && !text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            if rest[1 + hashes..].starts_with('"') {
                let close = format!("\"{}", "#".repeat(hashes));
                let body = 2 + hashes;
                i += body
                    + rest[body..]
                        .find(&close)
                        .map_or(rest.len() - body, |e| e + close.len());
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if rest.starts_with('"') {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if let Some(tail) = rest.strip_prefix('\'') {
            // A character literal ('x', '\n', '"'), or a lifetime ('a).
            let literal = if tail.starts_with('\\') {
                tail[2..].find('\'').map(|e| e + 4)
            } else {
                let c = tail.chars().next().map_or(0, char::len_utf8);
                tail[c..].starts_with('\'').then_some(c + 2)
            };
            match literal {
                Some(len) => {
                    i += len;
                    out.push_str("' '");
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Each `a::b::c` path in `code`, as its segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = chars[i].is_alphabetic() || chars[i] == '_';
        let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let after_path = i > 1 && chars[i - 1] == ':' && chars[i - 2] == ':';
        if !starts_word || after_word || after_path {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        loop {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            segments.push(chars[start..i].iter().collect::<String>());
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            if j + 1 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' {
                j += 2;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if j < chars.len() && (chars[j].is_alphabetic() || chars[j] == '_') {
                    i = j;
                    continue;
                }
            }
            break;
        }
        if segments.len() > 1 {
            out.push(segments);
        }
    }
    out
}

fn declared_modules(code: &str) -> BTreeSet<String> {
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = BTreeSet::new();
    for pair in words.windows(2) {
        if pair[0] == "mod" && pair[1].ends_with(';') {
            out.insert(pair[1].trim_end_matches(';').to_string());
        }
    }
    out
}

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

/// The file-level import graph of the crate whose sources are in `src`.
fn import_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|file| (module_of(src, file), file.clone()))
        .collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|prefix| modules.contains_key(prefix))
    };
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let is_dir_module = matches!(
            file.file_stem().and_then(|s| s.to_str()),
            Some("mod" | "lib" | "main")
        );
        // The module `super` and `self` name from this file.
        let here = if file.file_name().is_some_and(|f| f == "main.rs") {
            Vec::new()
        } else {
            module.clone()
        };
        let parent = here[..here.len().saturating_sub(1)].to_vec();
        let children = declared_modules(&code);
        let mut targets = BTreeSet::new();
        for path in paths(&code) {
            let (mut base, mut rest) = match path[0].as_str() {
                "crate" => (Vec::new(), &path[1..]),
                "super" => (parent.clone(), &path[1..]),
                "self" => (here.clone(), &path[1..]),
                child if is_dir_module && children.contains(child) => (here.clone(), &path[..]),
                _ => continue,
            };
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            if let Some(target) = resolve(&base) {
                if target != *module {
                    targets.insert(target);
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(graph: &Graph) -> Vec<Vec<Vec<String>>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, v: &'a Vec<String>) {
        let n = walk.index.len();
        walk.index.insert(v, n);
        walk.low.insert(v, n);
        walk.stack.push(v);
        walk.on_stack.insert(v);
        for w in &walk.graph[v] {
            if !walk.index.contains_key(w) {
                visit(walk, w);
                let low = walk.low[v].min(walk.low[w]);
                walk.low.insert(v, low);
            } else if walk.on_stack.contains(w) {
                let low = walk.low[v].min(walk.index[w]);
                walk.low.insert(v, low);
            }
        }
        if walk.low[v] == walk.index[v] {
            let mut component = Vec::new();
            loop {
                let w = walk.stack.pop().unwrap();
                walk.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                walk.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

#[test]
fn the_checker_sees_a_circle_and_ignores_comments_strings_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "mod inner;\npub struct A;\nfn f() { let _ = inner::X; }\n",
    )
    .unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::A;\npub struct X;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// crate::a::A\nconst S: &str = \"crate::a::A\";\nconst C: char = '\"';\n#[cfg(test)]\nmod tests { use crate::a::A; }\n",
    )
    .unwrap();
    let graph = import_graph(src);
    assert!(graph[&vec!["b".to_string()]].is_empty(), "{graph:?}");
    let found = circles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut members: Vec<String> = found[0].iter().map(|m| name(m)).collect();
    members.sort();
    assert_eq!(members, vec!["a", "a::inner"]);
}

#[test]
fn no_file_of_a_crate_imports_itself_around_a_circle() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let graph = import_graph(&src);
        assert!(
            graph.len() > 1 || krate == "tests",
            "{krate}: no files found"
        );
        for circle in circles(&graph) {
            let names: Vec<String> = circle.iter().map(|m| name(m)).collect();
            problems.push(format!("{krate}: {}", names.join(" <-> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn crates_depend_one_way() {
    // Layers: a crate may depend only on crates of lower layers.
    let layer = |krate: &str| match krate {
        "memory" | "sandbox" => 0,
        "gossip" | "consensus" => 1,
        "node" => 2,
        "simulation" | "tests" => 3,
        other => panic!("unknown crate {other}"),
    };
    let mut seen = 0;
    for krate in CRATES {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let mut section = String::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            if section != "[dependencies]" {
                continue;
            }
            let Some(dep) = line.strip_prefix("coditect-") else {
                continue;
            };
            let dep: String = dep
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-')
                .collect();
            seen += 1;
            assert!(
                layer(&dep) < layer(krate),
                "{krate} depends on {dep}, against the one-way rule"
            );
        }
    }
    assert!(
        seen >= 10,
        "only {seen} dependencies between our crates found"
    );
}
