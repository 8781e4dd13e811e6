//! Content-addressed trees: a code base as a manifest blob naming one blob
//! per file.
//!
//! A [`Tree`] maps relative paths to file entries (digest, size, executable
//! bit). Its encoding is canonical text, so identical trees have identical
//! bytes and therefore one digest, whatever order the files were found in:
//!
//! ```text
//! coditect-tree/1
//! 1234 - sha256:<64 hex> src/lib.rs
//! 88 x sha256:<64 hex> scripts/run.sh
//! ```
//!
//! One line per file, sorted by path bytes: size, `x` (executable) or `-`,
//! digest, path. A path is relative, `/`-separated, without empty, `.` or
//! `..` components, control characters or a trailing slash, and no file is
//! also the folder of another; [`check_path`] is the rule everything that
//! names a workspace path (uploads, task changes, `apply`) shares.
//!
//! A task's edit of a tree is a list of [`FileChange`]s: a file written (a
//! new entry) or deleted (no entry). [`Tree::apply`] applies them in order.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// First line of every encoded tree.
pub const TREE_HEADER: &str = "coditect-tree/1";

/// Most files a tree may hold.
pub const MAX_TREE_ENTRIES: usize = 100_000;

/// Longest path in a tree, bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Longest path component, bytes (what common file systems allow).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// One file of a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Digest of the file's bytes.
    pub digest: Digest,
    /// Its size, bytes.
    pub size: u64,
    /// Whether it is executable.
    pub exec: bool,
}

/// One change a task made to a tree: `path` now holds the file `digest`
/// (of `size` bytes, executable or not), or, with no digest, was deleted.
/// Digests are `sha256:<hex>` text like every digest the mesh replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// The path, in the grammar of [`check_path`].
    pub path: String,
    /// The new content; `None` for a deletion.
    pub digest: Option<String>,
    /// Size of the new content (0 for a deletion).
    pub size: u64,
    /// Whether the new file is executable.
    pub exec: bool,
}

impl FileChange {
    /// The change that makes `path` hold `entry` (or deletes it).
    pub fn new(path: &str, entry: Option<Entry>) -> Self {
        match entry {
            Some(entry) => FileChange {
                path: path.to_string(),
                digest: Some(entry.digest.to_string()),
                size: entry.size,
                exec: entry.exec,
            },
            None => FileChange {
                path: path.to_string(),
                digest: None,
                size: 0,
                exec: false,
            },
        }
    }

    /// The entry this change writes (`Ok(None)` for a deletion).
    pub fn entry(&self) -> Result<Option<Entry>, TreeError> {
        check_path(&self.path)?;
        match &self.digest {
            None => Ok(None),
            Some(text) => {
                let digest = text.parse().map_err(|_| TreeError::BadLine {
                    line: 0,
                    reason: format!("change of {:?} names {text:?}, not a digest", self.path),
                })?;
                Ok(Some(Entry {
                    digest,
                    size: self.size,
                    exec: self.exec,
                }))
            }
        }
    }
}

/// Why a tree, a path or a change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A path outside the grammar.
    #[error("path {path:?} {reason}")]
    BadPath {
        /// The path (cut to a readable length).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file is also the folder of another file.
    #[error("{file:?} is a file and also the folder of {inner:?}")]
    FileAndFolder {
        /// The file.
        file: String,
        /// A path inside it.
        inner: String,
    },
    /// More files than [`MAX_TREE_ENTRIES`].
    #[error("more than {MAX_TREE_ENTRIES} files")]
    TooManyFiles,
    /// The encoding is not a tree.
    #[error("not a coditect tree (line {line}): {reason}")]
    BadLine {
        /// 1-based line number (0: not from an encoding).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn bad(path: &str, reason: &'static str) -> TreeError {
    let mut shown = path.to_string();
    if shown.len() > 120 {
        let mut end = 120;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    TreeError::BadPath {
        path: shown,
        reason,
    }
}

/// Checks that `path` is a plain relative path: not empty, at most
/// [`MAX_PATH_BYTES`], `/`-separated components that are neither empty nor
/// `.` nor `..`, at most [`MAX_COMPONENT_BYTES`] each, and no control
/// characters (a newline could not be encoded; a NUL is no file name).
pub fn check_path(path: &str) -> Result<(), TreeError> {
    if path.is_empty() {
        return Err(bad(path, "is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(path, "is longer than 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(bad(path, "is absolute"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad(path, "holds a control character"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(bad(path, "has an empty component")),
            "." | ".." => return Err(bad(path, "has a `.` or `..` component")),
            _ if component.len() > MAX_COMPONENT_BYTES => {
                return Err(bad(path, "has a component longer than 255 bytes"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A code base: relative path -> file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Tree::default()
    }

    /// Adds (or replaces) the file at `path`; refuses a path outside the
    /// grammar, a file that is also a folder, and growth past the cap.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), TreeError> {
        check_path(path)?;
        if !self.entries.contains_key(path) {
            if self.entries.len() >= MAX_TREE_ENTRIES {
                return Err(TreeError::TooManyFiles);
            }
            self.check_no_overlap(path)?;
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    /// Removes the file at `path`; whether it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        self.entries.remove(path).is_some()
    }

    /// A new path must not lie inside a file, nor be the folder of a file.
    fn check_no_overlap(&self, path: &str) -> Result<(), TreeError> {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            let folder = &path[..end];
            if self.entries.contains_key(folder) {
                return Err(TreeError::FileAndFolder {
                    file: folder.to_string(),
                    inner: path.to_string(),
                });
            }
            end += 1;
        }
        let prefix = format!("{path}/");
        if let Some((inner, _)) = self.entries.range(prefix.clone()..).next() {
            if inner.starts_with(&prefix) {
                return Err(TreeError::FileAndFolder {
                    file: path.to_string(),
                    inner: inner.clone(),
                });
            }
        }
        Ok(())
    }

    /// The file at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Every file, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(path, entry)| (path.as_str(), entry))
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|entry| entry.size).sum()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(TREE_HEADER.len() + 1 + self.entries.len() * 100);
        out.push_str(TREE_HEADER);
        out.push('\n');
        for (path, entry) in &self.entries {
            let mode = if entry.exec { 'x' } else { '-' };
            out.push_str(&format!("{} {mode} {} {path}\n", entry.size, entry.digest));
        }
        out.into_bytes()
    }

    /// The digest of the canonical encoding: the tree's name.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Parses an encoding; only the canonical form is accepted (sorted,
    /// no duplicates, a final newline), so a tree has exactly one name.
    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TreeError::BadLine {
            line: 0,
            reason: "not UTF-8".into(),
        })?;
        let body = text
            .strip_prefix(TREE_HEADER)
            .and_then(|rest| rest.strip_prefix('\n'))
            .ok_or_else(|| TreeError::BadLine {
                line: 1,
                reason: format!("the first line is not {TREE_HEADER}"),
            })?;
        let mut tree = Tree::new();
        let mut previous: Option<&str> = None;
        if !body.is_empty() && !body.ends_with('\n') {
            return Err(TreeError::BadLine {
                line: body.lines().count() + 1,
                reason: "the last line has no newline".into(),
            });
        }
        for (index, line) in body.lines().enumerate() {
            let number = index + 2;
            let fail = |reason: String| TreeError::BadLine {
                line: number,
                reason,
            };
            let mut fields = line.splitn(4, ' ');
            let (Some(size), Some(mode), Some(digest), Some(path)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(fail("expected `SIZE MODE DIGEST PATH`".into()));
            };
            let digits = !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit());
            if !digits || (size.len() > 1 && size.starts_with('0')) {
                return Err(fail(format!("size {size:?} is not a number")));
            }
            let size: u64 = size
                .parse()
                .map_err(|_| fail(format!("size {size:?} is too large")))?;
            let exec = match mode {
                "x" => true,
                "-" => false,
                other => return Err(fail(format!("mode {other:?} is not `x` or `-`"))),
            };
            let digest: Digest = digest
                .parse()
                .map_err(|_| fail(format!("{digest:?} is not a digest")))?;
            if let Some(previous) = previous {
                if previous >= path {
                    return Err(fail(format!("{path:?} is out of order or repeated")));
                }
            }
            tree.insert(path, Entry { digest, size, exec })
                .map_err(|error| fail(error.to_string()))?;
            previous = Some(path);
        }
        // The digest text must have been lower-case hex to re-encode the same.
        if tree.encode() != bytes {
            return Err(TreeError::BadLine {
                line: 0,
                reason: "not in canonical form".into(),
            });
        }
        Ok(tree)
    }

    /// Applies `changes` in order: writes replace or create files,
    /// deletions remove them (a deletion of an absent file is no change).
    pub fn apply(&mut self, changes: &[FileChange]) -> Result<(), TreeError> {
        for change in changes {
            match change.entry()? {
                Some(entry) => self.insert(&change.path, entry)?,
                None => {
                    self.remove(&change.path);
                }
            }
        }
        Ok(())
    }

    /// The changes that turn `self` into `after`, sorted by path.
    pub fn changes_to(&self, after: &Tree) -> Vec<FileChange> {
        let mut out = Vec::new();
        for (path, entry) in &after.entries {
            if self.entries.get(path) != Some(entry) {
                out.push(FileChange::new(path, Some(*entry)));
            }
        }
        for path in self.entries.keys() {
            if !after.entries.contains_key(path) {
                out.push(FileChange::new(path, None));
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files, {} bytes, {}",
            self.len(),
            self.total_bytes(),
            self.digest()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seed: u8, exec: bool) -> Entry {
        Entry {
            digest: Digest::of(&[seed]),
            size: u64::from(seed) * 7,
            exec,
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_. -]{1,12}".prop_filter("not . or ..", |c| c != "." && c != "..")
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(component(), 1..4).prop_map(|parts| parts.join("/"))
    }

    fn files() -> impl Strategy<Value = Vec<(String, u8, bool)>> {
        prop::collection::vec((path(), any::<u8>(), any::<bool>()), 0..40)
    }

    /// A tree from `files`, skipping paths that overlap an earlier file.
    fn build(files: &[(String, u8, bool)]) -> Tree {
        let mut tree = Tree::new();
        for (path, seed, exec) in files {
            let _ = tree.insert(path, entry(*seed, *exec));
        }
        tree
    }

    proptest! {
        /// A manifest from outside decodes to a tree that re-encodes to
        /// itself, or to an error; it never panics.
        #[test]
        fn any_bytes_decode_to_a_tree_or_an_error(
            files in files(),
            noise in proptest::collection::vec(any::<u8>(), 0..256),
            at in any::<usize>(),
        ) {
            let mut bytes = build(&files).encode();
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, noise.iter().copied());
            for input in [&bytes[..], &noise[..], &bytes[..at]] {
                if let Ok(tree) = Tree::decode(input) {
                    prop_assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
                }
            }
        }

        #[test]
        fn encoding_round_trips(files in files()) {
            let tree = build(&files);
            let decoded = Tree::decode(&tree.encode()).unwrap();
            prop_assert_eq!(&decoded, &tree);
            prop_assert_eq!(decoded.digest(), tree.digest());
        }

        #[test]
        fn identical_trees_have_identical_digests_in_any_order(files in files(), seed in any::<u64>()) {
            let tree = build(&files);
            // The same files inserted in another order.
            let mut kept: Vec<(String, u8, bool)> = files
                .iter()
                .filter(|(path, seed, exec)| tree.get(path) == Some(&entry(*seed, *exec)))
                .cloned()
                .collect();
            let mut state = seed;
            for i in (1..kept.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                kept.swap(i, (state >> 33) as usize % (i + 1));
            }
            let mut other = Tree::new();
            for (path, seed, exec) in &kept {
                other.insert(path, entry(*seed, *exec)).unwrap();
            }
            prop_assert_eq!(other.encode(), tree.encode());
            prop_assert_eq!(other.digest(), tree.digest());
        }

        #[test]
        fn a_changed_byte_of_any_file_changes_the_digest(files in files(), pick in any::<prop::sample::Index>()) {
            let tree = build(&files);
            prop_assume!(!tree.is_empty());
            let (path, old) = {
                let (path, old) = tree.iter().nth(pick.index(tree.len())).unwrap();
                (path.to_string(), *old)
            };
            let mut other = tree.clone();
            other.insert(&path, Entry { exec: !old.exec, ..old }).unwrap();
            prop_assert_ne!(other.digest(), tree.digest());
        }

        #[test]
        fn escaping_paths_are_refused(prefix in path(), suffix in path()) {
            let mut tree = Tree::new();
            for bad in [
                format!("/{prefix}"),
                format!("{prefix}/../{suffix}"),
                format!("../{suffix}"),
                format!("{prefix}/./{suffix}"),
                format!("{prefix}//{suffix}"),
                format!("{prefix}/"),
                "..".to_string(),
                format!("{prefix}\n{suffix}"),
                format!("{prefix}\0"),
            ] {
                prop_assert!(check_path(&bad).is_err(), "{:?} accepted", bad);
                prop_assert!(tree.insert(&bad, entry(1, false)).is_err());
                let change = FileChange::new(&bad, Some(entry(1, false)));
                prop_assert!(tree.apply(&[change]).is_err());
            }
            prop_assert!(tree.is_empty());
        }

        #[test]
        fn changes_to_then_apply_gives_the_other_tree(a in files(), b in files()) {
            let (before, after) = (build(&a), build(&b));
            let changes = before.changes_to(&after);
            let mut applied = before.clone();
            // Deletions first, so a file replaced by a folder can be applied.
            let (deletions, writes): (Vec<_>, Vec<_>) =
                changes.into_iter().partition(|change| change.digest.is_none());
            applied.apply(&deletions).unwrap();
            applied.apply(&writes).unwrap();
            prop_assert_eq!(applied, after);
        }
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let mut tree = Tree::new();
        tree.insert("b.txt", entry(2, false)).unwrap();
        tree.insert("a/x.sh", entry(3, true)).unwrap();
        let good = String::from_utf8(tree.encode()).unwrap();
        assert!(good.starts_with("coditect-tree/1\n"));
        let lines: Vec<&str> = good.lines().collect();
        let unsorted = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]);
        let upper = good.replace(
            &entry(2, false).digest.hex(),
            &entry(2, false).digest.hex().to_uppercase(),
        );
        for (bad, why) in [
            (unsorted.as_str(), "out of order"),
            (good.trim_end(), "no newline"),
            (&good.replacen(" - ", " r ", 1), "mode"),
            (&good.replacen("coditect-tree/1", "tree", 1), "first line"),
            (&good.replacen("14 -", "014 -", 1), "not a number"),
            (upper.as_str(), "canonical"),
        ] {
            let error = Tree::decode(bad.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(why), "{why}: {error}");
        }
        let repeated = format!("{good}{}\n", lines[2]);
        assert!(Tree::decode(repeated.as_bytes()).is_err());
        assert_eq!(Tree::decode(b"coditect-tree/1\n").unwrap(), Tree::new());
    }

    #[test]
    fn a_file_cannot_also_be_a_folder() {
        let mut tree = Tree::new();
        tree.insert("src/lib.rs", entry(1, false)).unwrap();
        let error = tree.insert("src", entry(2, false)).unwrap_err();
        assert!(matches!(error, TreeError::FileAndFolder { .. }), "{error}");
        let error = tree.insert("src/lib.rs/x", entry(2, false)).unwrap_err();
        assert!(error.to_string().contains("src/lib.rs"), "{error}");
        // `src-old` sorts after `src/` prefixes' neighbours and is fine.
        tree.insert("src-old", entry(3, false)).unwrap();
        tree.insert("sr", entry(3, false)).unwrap();
        assert_eq!(tree.len(), 3);
    }

    #[test]
    fn deletions_and_writes_apply_in_order() {
        let mut tree = Tree::new();
        tree.insert("a.py", entry(1, false)).unwrap();
        tree.insert("b.py", entry(2, false)).unwrap();
        tree.apply(&[
            FileChange::new("a.py", Some(entry(9, false))),
            FileChange::new("b.py", None),
            FileChange::new("gone.py", None),
            FileChange::new("new/c.py", Some(entry(3, true))),
        ])
        .unwrap();
        assert_eq!(tree.get("a.py"), Some(&entry(9, false)));
        assert_eq!(tree.get("b.py"), None);
        assert_eq!(tree.get("new/c.py"), Some(&entry(3, true)));
        let bad = FileChange {
            path: "x".into(),
            digest: Some("md5:00".into()),
            size: 1,
            exec: false,
        };
        assert!(tree.apply(&[bad]).is_err());
    }
}
