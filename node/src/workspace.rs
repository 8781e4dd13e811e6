//! Workspaces on the host side: reading a local folder into a tree (what
//! `coditect submit` uploads), turning a run's `/output/workspace/` into
//! changes (what the worker reports), and showing or applying a mission's
//! changes (`coditect mission ID --diff`, `coditect apply ID DIR`).
//!
//! The tree format and the path grammar are `coditect_memory::tree`'s; how
//! tasks' changes combine is `coditect_consensus::workspace`'s.
//!
//! What a task writes:
//! - `/output/workspace/<path>`: the new content of `<path>` (a file equal
//!   to what the task saw is no change);
//! - `/output/workspace.deleted`: paths to delete, one per line (blank
//!   lines and lines starting with `#` are ignored).
//!
//! WASI has no file modes, so a changed file keeps its executable bit and
//! a new file is not executable.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use coditect_memory::tree::{check_path, Entry, FileChange, Tree};
use coditect_memory::Digest;
use sha2::Digest as _;

/// The folder under `/output` that holds a task's changed files.
pub const CHANGES_DIR: &str = "workspace";

/// The `/output` file listing a task's deletions.
pub const DELETIONS_FILE: &str = "workspace.deleted";

/// Largest file a workspace may hold, bytes.
pub const MAX_WORKSPACE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest workspace, bytes in all.
pub const MAX_WORKSPACE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Largest deletions file, bytes.
const MAX_DELETIONS_BYTES: u64 = 1024 * 1024;

/// A local folder read as a tree.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The tree.
    pub tree: Tree,
    /// One local file per distinct digest, to upload from: digest, size, path.
    pub sources: Vec<(Digest, u64, PathBuf)>,
    /// What was left out and why (symlinks to folders, special files).
    pub skipped: Vec<String>,
}

/// The sha256 and size of the file at `path`, read in pieces.
fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        if size > MAX_WORKSPACE_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "larger than the {} MiB a workspace file may be",
                MAX_WORKSPACE_FILE_BYTES >> 20
            )));
        }
        hasher.update(&buffer[..read]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let digest: Digest = format!("sha256:{}", hex::encode(digest))
        .parse()
        .expect("a sha256 is a digest");
    Ok((digest, size))
}

/// Whether the file at `path` has an executable bit.
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    metadata.permissions().mode() & 0o111 != 0
}

/// Reads the folder `root` as git would see it: `.gitignore` files (also
/// outside a git repository), `.git/info/exclude`, and never `.git/`
/// itself. A symlink to a file inside the folder counts as a copy of that
/// file; one that points outside is refused; one to a folder is skipped
/// (and named in [`Scanned::skipped`]). Paths outside the tree grammar
/// (not UTF-8, control characters) are refused by name.
pub fn scan(root: &Path) -> Result<Scanned, String> {
    let root = root
        .canonicalize()
        .map_err(|error| format!("workspace {}: {error}", root.display()))?;
    if !root.is_dir() {
        return Err(format!("workspace {} is not a folder", root.display()));
    }
    let walker = ignore::WalkBuilder::new(&root)
        .hidden(false)
        .ignore(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    let mut scanned = Scanned::default();
    let mut seen: std::collections::BTreeSet<Digest> = Default::default();
    let mut total = 0u64;
    for entry in walker {
        let entry = entry.map_err(|error| format!("workspace {}: {error}", root.display()))?;
        let path = entry.path();
        if path == root {
            continue;
        }
        let relative = path.strip_prefix(&root).expect("walked under the root");
        let shown = relative.display().to_string();
        let Some(name) = relative.to_str() else {
            return Err(format!(
                "workspace file {shown:?} has a name that is not UTF-8"
            ));
        };
        let file_type = entry
            .file_type()
            .ok_or_else(|| format!("workspace file {name}: no file type"))?;
        let (real, metadata) = if file_type.is_symlink() {
            let target = path
                .canonicalize()
                .map_err(|error| format!("workspace symlink {name}: {error}"))?;
            if !target.starts_with(&root) {
                return Err(format!(
                    "workspace symlink {name} points outside the workspace ({})",
                    target.display()
                ));
            }
            let metadata = std::fs::metadata(&target)
                .map_err(|error| format!("workspace symlink {name}: {error}"))?;
            if !metadata.is_file() {
                scanned
                    .skipped
                    .push(format!("{name}: a symlink to a folder"));
                continue;
            }
            (target, metadata)
        } else if file_type.is_dir() {
            continue;
        } else if file_type.is_file() {
            let metadata = entry
                .metadata()
                .map_err(|error| format!("workspace file {name}: {error}"))?;
            (path.to_path_buf(), metadata)
        } else {
            scanned.skipped.push(format!("{name}: not a regular file"));
            continue;
        };
        let (digest, size) =
            hash_file(&real).map_err(|error| format!("workspace file {name}: {error}"))?;
        total += size;
        if total > MAX_WORKSPACE_BYTES {
            return Err(format!(
                "workspace {} holds more than {} GiB",
                root.display(),
                MAX_WORKSPACE_BYTES >> 30
            ));
        }
        scanned
            .tree
            .insert(
                name,
                Entry {
                    digest,
                    size,
                    exec: is_executable(&metadata),
                },
            )
            .map_err(|error| format!("workspace: {error}"))?;
        if seen.insert(digest) {
            scanned.sources.push((digest, size, real));
        }
    }
    Ok(scanned)
}

/// What a run changed in the workspace `seen` (the tree it saw), from the
/// files it left (`outputs`: path under `/output`, digest, size) and its
/// deletions file under `output_dir`. `Err` is the task's fault, one line.
pub fn changes_of_run(
    seen: &Tree,
    outputs: &[(String, String, u64)],
    output_dir: &Path,
) -> Result<Vec<FileChange>, String> {
    let mut changes = Vec::new();
    let prefix = format!("{CHANGES_DIR}/");
    for (path, digest, size) in outputs {
        let Some(relative) = path.strip_prefix(&prefix) else {
            continue;
        };
        check_path(relative).map_err(|error| format!("/output/{path}: {error}"))?;
        let digest: Digest = digest
            .parse()
            .map_err(|_| format!("/output/{path} has no digest"))?;
        let before = seen.get(relative);
        let entry = Entry {
            digest,
            size: *size,
            exec: before.is_some_and(|entry| entry.exec),
        };
        if before != Some(&entry) {
            changes.push(FileChange::new(relative, Some(entry)));
        }
    }
    if outputs.iter().any(|(path, _, _)| path == DELETIONS_FILE) {
        let file = output_dir.join(DELETIONS_FILE);
        let size = std::fs::metadata(&file)
            .map(|meta| meta.len())
            .map_err(|error| format!("/output/{DELETIONS_FILE}: {error}"))?;
        if size > MAX_DELETIONS_BYTES {
            return Err(format!(
                "/output/{DELETIONS_FILE} is larger than {} KiB",
                MAX_DELETIONS_BYTES >> 10
            ));
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|error| format!("/output/{DELETIONS_FILE}: {error}"))?;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            check_path(line).map_err(|error| format!("/output/{DELETIONS_FILE}: {error}"))?;
            if changes.iter().any(|change| change.path == line) {
                return Err(format!(
                    "/output/{DELETIONS_FILE} deletes {line:?}, which the run also wrote"
                ));
            }
            if seen.get(line).is_some() {
                changes.push(FileChange::new(line, None));
            }
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes.dedup_by(|a, b| a.path == b.path);
    // The result must still be a tree (no file where a folder is needed).
    let mut after = seen.clone();
    let (deletions, writes): (Vec<_>, Vec<_>) =
        changes.iter().cloned().partition(|c| c.digest.is_none());
    after
        .apply(&deletions)
        .and_then(|()| after.apply(&writes))
        .map_err(|error| format!("the changes to the workspace do not form a tree: {error}"))?;
    Ok(changes)
}

/// A unified diff of one file: `before` and `after` are `None` when the
/// file does not exist on that side. Binary content (a NUL byte, or not
/// UTF-8) is named, not shown.
pub fn unified_diff(path: &str, before: Option<&[u8]>, after: Option<&[u8]>) -> String {
    let text = |bytes: Option<&[u8]>| -> Option<Option<String>> {
        match bytes {
            None => Some(Some(String::new())),
            Some(bytes) if bytes.contains(&0) => None,
            Some(bytes) => std::str::from_utf8(bytes).ok().map(|s| Some(s.to_string())),
        }
    };
    let old_name = if before.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_string()
    };
    let new_name = if after.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".to_string()
    };
    let (Some(Some(old)), Some(Some(new))) = (text(before), text(after)) else {
        return format!(
            "diff --coditect a/{path} b/{path}\nBinary files {old_name} and {new_name} differ\n"
        );
    };
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = format!("diff --coditect a/{path} b/{path}\n");
    if before.is_none() {
        out.push_str("new file\n");
    } else if after.is_none() {
        out.push_str("deleted file\n");
    }
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &new_name)
        .to_string();
    out.push_str(&body);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8], exec: bool) -> Entry {
        Entry {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            exec,
        }
    }

    #[test]
    fn scanning_respects_gitignore_skips_git_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::create_dir_all(root.join("build")).unwrap();
        std::fs::write(root.join(".gitignore"), "build/\n*.log\n").unwrap();
        std::fs::write(root.join("src/lib.py"), "x = 1\n").unwrap();
        std::fs::write(root.join("src/copy.py"), "x = 1\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(root.join("debug.log"), "noise").unwrap();
        std::fs::write(root.join("build/out.o"), "obj").unwrap();
        std::fs::write(root.join(".git/objects/x"), "git").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mut mode = std::fs::metadata(root.join("run.sh"))
                .unwrap()
                .permissions();
            mode.set_mode(0o755);
            std::fs::set_permissions(root.join("run.sh"), mode).unwrap();
        }
        std::os::unix::fs::symlink("src/lib.py", root.join("link.py")).unwrap();
        std::os::unix::fs::symlink("src", root.join("src-link")).unwrap();
        let scanned = scan(&root).unwrap();
        let paths: Vec<&str> = scanned.tree.iter().map(|(path, _)| path).collect();
        assert_eq!(
            paths,
            [
                ".gitignore",
                "link.py",
                "run.sh",
                "src/copy.py",
                "src/lib.py"
            ]
        );
        assert!(scanned.tree.get("run.sh").unwrap().exec);
        assert!(!scanned.tree.get("src/lib.py").unwrap().exec);
        assert_eq!(scanned.tree.get("link.py"), scanned.tree.get("src/lib.py"));
        // Identical files are uploaded once.
        assert_eq!(scanned.sources.len(), 3);
        assert_eq!(scanned.skipped.len(), 1, "{:?}", scanned.skipped);
        std::fs::write(dir.path().join("secret"), "key").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        let error = scan(&root).unwrap_err();
        assert!(
            error.contains("escape") && error.contains("outside"),
            "{error}"
        );
    }

    #[test]
    fn a_run_changes_written_files_that_differ_and_listed_deletions() {
        let mut seen = Tree::new();
        seen.insert("a.py", entry(b"a", false)).unwrap();
        seen.insert("tool.sh", entry(b"t", true)).unwrap();
        seen.insert("old.py", entry(b"o", false)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DELETIONS_FILE),
            "# gone\nold.py\n\nnever-there.py\n",
        )
        .unwrap();
        let out = |path: &str, bytes: &[u8]| {
            (
                path.to_string(),
                Digest::of(bytes).to_string(),
                bytes.len() as u64,
            )
        };
        let outputs = vec![
            out("report.json", b"{}"),
            out("workspace/a.py", b"a"),
            out("workspace/tool.sh", b"t2"),
            out("workspace/new/b.py", b"b"),
            out(DELETIONS_FILE, b"ignored"),
        ];
        let changes = changes_of_run(&seen, &outputs, dir.path()).unwrap();
        assert_eq!(
            changes,
            vec![
                FileChange::new("new/b.py", Some(entry(b"b", false))),
                FileChange::new("old.py", None),
                FileChange::new("tool.sh", Some(entry(b"t2", true))),
            ]
        );
        std::fs::write(dir.path().join(DELETIONS_FILE), "a.py\n../x\n").unwrap();
        let error = changes_of_run(&seen, &outputs, dir.path()).unwrap_err();
        assert!(error.contains("workspace.deleted"), "{error}");
        std::fs::write(dir.path().join(DELETIONS_FILE), "new/b.py\n").unwrap();
        let error = changes_of_run(&seen, &outputs, dir.path()).unwrap_err();
        assert!(error.contains("also wrote"), "{error}");
        // A file where the tree has a folder.
        let outputs = vec![out("workspace/a.py/inner", b"x")];
        let error = changes_of_run(&seen, &outputs, dir.path()).unwrap_err();
        assert!(error.contains("a.py"), "{error}");
    }

    #[test]
    fn diffs_show_changed_new_deleted_and_binary_files() {
        let diff = unified_diff("a.py", Some(b"x = 1\ny = 2\n"), Some(b"x = 1\ny = 3\n"));
        assert!(diff.contains("--- a/a.py\n+++ b/a.py\n"), "{diff}");
        assert!(diff.contains("-y = 2\n+y = 3\n"), "{diff}");
        let diff = unified_diff("n.py", None, Some(b"new\n"));
        assert!(
            diff.contains("--- /dev/null") && diff.contains("+new"),
            "{diff}"
        );
        let diff = unified_diff("d.py", Some(b"old\n"), None);
        assert!(
            diff.contains("+++ /dev/null") && diff.contains("-old"),
            "{diff}"
        );
        let diff = unified_diff("x.bin", Some(b"\0\x01"), Some(b"\0\x02"));
        assert!(diff.contains("Binary files"), "{diff}");
    }
}
