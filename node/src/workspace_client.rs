//! The CLI's side of workspaces: uploading a folder as a tree (only the
//! files the node lacks), `coditect mission ID --diff` and
//! `coditect apply ID DIR`.

use std::path::{Path, PathBuf};

use coditect_memory::tree::{check_path, FileChange, Tree};
use coditect_memory::Digest;
use coditect_node::start::NodeError;
use coditect_node::workspace::{scan, unified_diff};

use crate::api_client::{api_url, download, http, problem, unreachable, upload};

/// Digests asked about per `POST /api/blobs/missing`.
const MISSING_BATCH: usize = 5_000;

/// Uploads running at once.
const PARALLEL_UPLOADS: usize = 8;

/// Files uploaded between two progress lines.
const PROGRESS_EVERY: usize = 200;

/// Which of `digests` the node lacks.
async fn missing(
    client: &reqwest::Client,
    api: &str,
    digests: &[String],
) -> Result<Vec<String>, NodeError> {
    let url = api_url(api, "/api/blobs/missing")?;
    let mut out = Vec::new();
    for batch in digests.chunks(MISSING_BATCH) {
        let response = client
            .post(&url)
            .json(&serde_json::json!({ "digests": batch }))
            .send()
            .await
            .map_err(unreachable(api))?;
        if !response.status().is_success() {
            return Err(NodeError::Failed(format!(
                "asking which files the node lacks: {}",
                problem(response).await
            )));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))?;
        for digest in body["missing"].as_array().into_iter().flatten() {
            if let Some(digest) = digest.as_str() {
                out.push(digest.to_string());
            }
        }
    }
    Ok(out)
}

/// Uploads the folder `dir` as a tree: hashes every file, asks the node
/// which blobs it lacks, sends only those, then the manifest. Returns the
/// tree's digest. Progress goes to stderr.
pub async fn upload_workspace(
    client: &reqwest::Client,
    api: &str,
    dir: &Path,
) -> Result<String, NodeError> {
    use futures::StreamExt as _;
    // The CLI does nothing else meanwhile: hashing in line is fine.
    let scanned = scan(dir).map_err(NodeError::BadInput)?;
    for skipped in &scanned.skipped {
        eprintln!("workspace: skipped {skipped}");
    }
    let digests: Vec<String> = scanned
        .sources
        .iter()
        .map(|(d, _, _)| d.to_string())
        .collect();
    let lacking: std::collections::BTreeSet<String> =
        missing(client, api, &digests).await?.into_iter().collect();
    let to_send: Vec<(Digest, u64, PathBuf)> = scanned
        .sources
        .iter()
        .filter(|(digest, _, _)| lacking.contains(&digest.to_string()))
        .cloned()
        .collect();
    let bytes_to_send: u64 = to_send.iter().map(|(_, size, _)| size).sum();
    eprintln!(
        "workspace {}: {} files ({} bytes); the node lacks {} ({} bytes)",
        dir.display(),
        scanned.tree.len(),
        scanned.tree.total_bytes(),
        to_send.len(),
        bytes_to_send
    );
    let total = to_send.len();
    let mut sent = 0usize;
    let mut uploads =
        futures::stream::iter(to_send.into_iter().map(|(digest, _, path)| async move {
            let bytes = tokio::fs::read(&path).await.map_err(|error| {
                NodeError::BadInput(format!("cannot read {}: {error}", path.display()))
            })?;
            if Digest::of(&bytes) != digest {
                return Err(NodeError::BadInput(format!(
                    "{} changed while it was being uploaded; submit again",
                    path.display()
                )));
            }
            upload(client, api, bytes).await
        }))
        .buffer_unordered(PARALLEL_UPLOADS);
    while let Some(uploaded) = uploads.next().await {
        uploaded?;
        sent += 1;
        if sent.is_multiple_of(PROGRESS_EVERY) {
            eprintln!("workspace: uploaded {sent} of {total} files");
        }
    }
    let tree = scanned.tree.digest().to_string();
    let stored = upload(client, api, scanned.tree.encode()).await?;
    if stored != tree {
        return Err(NodeError::Failed(format!(
            "the node stored the tree as {stored}, not {tree}"
        )));
    }
    eprintln!("workspace: tree {tree}");
    Ok(tree)
}

/// The mission's JSON.
async fn mission_json(
    client: &reqwest::Client,
    api: &str,
    id: &str,
) -> Result<serde_json::Value, NodeError> {
    let url = api_url(api, &format!("/api/missions/{id}"))?;
    let response = client.get(&url).send().await.map_err(unreachable(api))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(NodeError::BadInput(problem(response).await));
    }
    if !response.status().is_success() {
        return Err(NodeError::Failed(problem(response).await));
    }
    response
        .json()
        .await
        .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))
}

/// A mission's submitted tree and its final changes (net, in the order
/// to apply them).
async fn mission_workspace(
    client: &reqwest::Client,
    api: &str,
    id: &str,
) -> Result<(Tree, Vec<FileChange>, String), NodeError> {
    let mission = mission_json(client, api, id).await?;
    let workspace = &mission["workspace"];
    let Some(tree_digest) = workspace["tree"].as_str() else {
        return Err(NodeError::BadInput(format!(
            "mission {id} has no workspace (submit it with `workspace = \"DIR\"` or --workspace DIR)"
        )));
    };
    let base = Tree::decode(&download(client, api, tree_digest).await?)
        .map_err(|error| NodeError::Failed(format!("the mission's tree: {error}")))?;
    let changes: Vec<FileChange> = serde_json::from_value(workspace["changes"].clone())
        .map_err(|error| NodeError::Failed(format!("the mission's changes: {error}")))?;
    for change in &changes {
        check_path(&change.path).map_err(|error| {
            NodeError::Failed(format!(
                "the mission names a change outside the tree: {error}"
            ))
        })?;
    }
    let state = mission["state"].as_str().unwrap_or("?").to_string();
    Ok((base, changes, state))
}

/// `coditect mission ID --diff`: the unified diff of the final workspace
/// against the submitted one.
pub async fn diff(api: &str, id: &str) -> Result<u8, NodeError> {
    let client = http()?;
    let (base, changes, state) = mission_workspace(&client, api, id).await?;
    if state == "running" {
        eprintln!("mission {id} is still running: the diff shows the changes committed so far");
    }
    let mut changes = changes;
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    for change in &changes {
        let before = match base.get(&change.path) {
            Some(entry) => Some(download(&client, api, &entry.digest.to_string()).await?),
            None => None,
        };
        let after = match &change.digest {
            Some(digest) => Some(download(&client, api, digest).await?),
            None => None,
        };
        if before.is_none() && after.is_none() {
            continue;
        }
        print!(
            "{}",
            unified_diff(&change.path, before.as_deref(), after.as_deref())
        );
    }
    if changes.is_empty() {
        eprintln!("mission {id} changed nothing in its workspace");
    }
    Ok(0)
}

/// The digest of the local file at `path`, `None` if there is none.
fn local_digest(path: &Path) -> Result<Option<Digest>, NodeError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Digest::of(&bytes))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(NodeError::Failed(format!(
            "cannot read {}: {error}",
            path.display()
        ))),
    }
}

/// Refuses a path of `dir` that runs through a symlink (writing through
/// it could land outside the checkout).
fn check_no_symlink(dir: &Path, relative: &str) -> Result<(), NodeError> {
    let mut at = dir.to_path_buf();
    for component in relative.split('/') {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(NodeError::Failed(format!(
                    "{} is a symlink; not writing through it",
                    at.display()
                )))
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// `coditect apply ID DIR`: writes the mission's final workspace changes
/// into the checkout `DIR`. A file that differs from what was submitted
/// (changed locally since) is refused, and then nothing is written. A file
/// that already holds the result is left alone, so applying twice is safe.
pub async fn apply(api: &str, id: &str, dir: &Path) -> Result<u8, NodeError> {
    let client = http()?;
    if !dir.is_dir() {
        return Err(NodeError::BadInput(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let (base, changes, state) = mission_workspace(&client, api, id).await?;
    if state == "running" {
        return Err(NodeError::BadInput(format!(
            "mission {id} is still running; apply it once it has ended"
        )));
    }
    let mut refused = Vec::new();
    let mut todo = Vec::new();
    for change in &changes {
        check_no_symlink(dir, &change.path)?;
        let local = local_digest(&dir.join(&change.path))?;
        let submitted = base.get(&change.path).map(|entry| entry.digest);
        let wanted: Option<Digest> = match &change.digest {
            Some(text) => Some(text.parse().map_err(|error| {
                NodeError::Failed(format!("the mission names {text:?}: {error}"))
            })?),
            None => None,
        };
        if local == wanted {
            continue;
        }
        if local != submitted {
            refused.push(change.path.clone());
            continue;
        }
        todo.push(change.clone());
    }
    if !refused.is_empty() {
        for path in &refused {
            eprintln!("refused: {path} changed locally since the mission was submitted");
        }
        return Err(NodeError::Failed(format!(
            "{} file(s) changed locally since submission; nothing was written",
            refused.len()
        )));
    }
    // Fetch everything first, so a failure leaves the checkout untouched.
    let mut contents = Vec::with_capacity(todo.len());
    for change in &todo {
        let bytes = match &change.digest {
            Some(digest) => Some(download(&client, api, digest).await?),
            None => None,
        };
        contents.push(bytes);
    }
    let (mut written, mut deleted) = (0, 0);
    for (change, bytes) in todo.iter().zip(contents) {
        let path = dir.join(&change.path);
        let fail = |error: std::io::Error| {
            NodeError::Failed(format!("writing {}: {error}", path.display()))
        };
        match bytes {
            Some(bytes) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(fail)?;
                }
                let temporary = path.with_file_name(format!(
                    ".{}.coditect-apply",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
                ));
                std::fs::write(&temporary, &bytes).map_err(fail)?;
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = if change.exec { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
                        .map_err(fail)?;
                }
                std::fs::rename(&temporary, &path).map_err(fail)?;
                written += 1;
            }
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(fail(error)),
                }
                deleted += 1;
            }
        }
    }
    println!(
        "applied mission {id} to {}: {written} file(s) written, {deleted} deleted, {} already up to date",
        dir.display(),
        changes.len() - written - deleted
    );
    Ok(0)
}
