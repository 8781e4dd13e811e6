//! CLI commands that talk to a node's HTTP API.

use coditect_node::start::NodeError;

use crate::api_client::{api_url, http, problem, unreachable, upload};

/// `coditect status`.
pub async fn status(api: &str, json: bool) -> Result<(), NodeError> {
    let url = api_url(api, "/api/status")?;
    let response = http()?.get(&url).send().await.map_err(unreachable(api))?;
    if !response.status().is_success() {
        return Err(NodeError::Failed(format!(
            "{url}: {}",
            problem(response).await
        )));
    }
    let status: serde_json::Value = response.json().await.map_err(|error| {
        NodeError::Failed(format!("{url} sent something that is not JSON: {error}"))
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return Ok(());
    }
    let text = |key: &str| status[key].as_str().unwrap_or("-").to_string();
    println!("node     {} ({})", text("name"), text("peer_id"));
    println!("role     {}", text("role"));
    println!(
        "leader   {}  term {}  commit index {}",
        status["leader"].as_str().unwrap_or("none known"),
        status["term"],
        status["commit_index"]
    );
    let list = |key: &str| {
        status[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("voters   {}", list("voters"));
    println!("standbys {}", list("learners"));
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    println!(
        "peers    {} ({} connected)",
        peers.len(),
        status["connected_peers"]
    );
    for peer in peers {
        println!(
            "  {:<20} {}  slots {}  tags {}",
            peer["name"].as_str().unwrap_or("-"),
            peer["peer_id"].as_str().unwrap_or("-"),
            peer["capabilities"]["slots"],
            peer["capabilities"]["tags"]
        );
    }
    Ok(())
}

/// Every file under `path` (itself if a file), with its path relative to `base`.
fn files_under(
    base: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            out.extend(files_under(base, &entry.path())?);
        }
    } else {
        let relative = path
            .strip_prefix(base)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        out.push((relative, path.to_path_buf()));
    }
    Ok(out)
}

/// Reads a TOML mission, checks it against the disk, uploads every module
/// and input it names, and returns the mission with paths rewritten to
/// digests (`inputs` entries become `path=sha256:<hex>`, one per file).
async fn prepare_toml(
    client: &reqwest::Client,
    api: &str,
    file: &std::path::Path,
    text: &str,
    workspace: Option<&std::path::Path>,
) -> Result<String, NodeError> {
    use coditect_node::mission::{parse_toml, validate, ModuleRef};
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let spec = parse_toml(text).map_err(|e| NodeError::BadInput(e.to_string()))?;
    validate(&spec, Some(base)).map_err(|e| NodeError::BadInput(e.to_string()))?;
    let folder = match (&spec.workspace, workspace) {
        (Some(_), Some(_)) => {
            return Err(NodeError::BadInput(format!(
                "{} names a workspace and so does --workspace; name one",
                file.display()
            )))
        }
        (Some(named), None) if !named.starts_with("sha256:") => Some(base.join(named)),
        (_, given) => given.map(std::path::Path::to_path_buf),
    };
    // Nothing local to upload (builtins and digests only, no folder): the
    // file goes as it is, without a second parse and a rewrite.
    let local = |task: &coditect_node::mission::TaskSpec| {
        (matches!(task.module, ModuleRef::Path(_)) && !task.module.is_builtin())
            || task
                .inputs
                .iter()
                .any(|input| !(input.starts_with("sha256:") || input.contains("=sha256:")))
    };
    if folder.is_none() && !spec.tasks.iter().any(local) {
        return Ok(text.to_string());
    }
    let mut document: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| NodeError::BadInput(e.message().to_string()))?;
    if let Some(folder) = folder {
        let tree = crate::workspace_client::upload_workspace(client, api, &folder).await?;
        document.insert("workspace".into(), toml::Value::String(tree));
    }
    let Some(toml::Value::Array(tasks)) = document.get_mut("task") else {
        return Ok(text.to_string());
    };
    let mut uploaded: std::collections::BTreeMap<std::path::PathBuf, String> = Default::default();
    for (table, task) in tasks.iter_mut().zip(&spec.tasks) {
        let Some(table) = table.as_table_mut() else {
            continue;
        };
        if let ModuleRef::Path(path) = &task.module {
            if !task.module.is_builtin() {
                let full = base.join(path);
                let digest = match uploaded.get(&full) {
                    Some(digest) => digest.clone(),
                    None => {
                        let bytes = std::fs::read(&full).map_err(|error| {
                            NodeError::BadInput(format!("cannot read {}: {error}", full.display()))
                        })?;
                        let digest = upload(client, api, bytes).await?;
                        uploaded.insert(full.clone(), digest.clone());
                        digest
                    }
                };
                table.insert("module".into(), toml::Value::String(digest));
            }
        }
        let mut inputs = Vec::new();
        for input in &task.inputs {
            if input.starts_with("sha256:") || input.contains("=sha256:") {
                inputs.push(toml::Value::String(input.clone()));
                continue;
            }
            let full = base.join(input);
            let files = files_under(base, &full).map_err(|error| {
                NodeError::BadInput(format!("cannot read {}: {error}", full.display()))
            })?;
            for (relative, path) in files {
                let bytes = std::fs::read(&path).map_err(|error| {
                    NodeError::BadInput(format!("cannot read {}: {error}", path.display()))
                })?;
                let digest = upload(client, api, bytes).await?;
                inputs.push(toml::Value::String(format!("{relative}={digest}")));
            }
        }
        if !task.inputs.is_empty() {
            table.insert("inputs".into(), toml::Value::Array(inputs));
        }
    }
    toml::to_string(&document).map_err(|error| NodeError::Failed(error.to_string()))
}

/// `coditect submit FILE [--workspace DIR] [--wait]`.
pub async fn submit(
    api: &str,
    file: &std::path::Path,
    workspace: Option<&std::path::Path>,
    wait: bool,
) -> Result<u8, NodeError> {
    use coditect_node::mission::MissionFormat;
    let text = std::fs::read_to_string(file)
        .map_err(|error| NodeError::BadInput(format!("cannot read {}: {error}", file.display())))?;
    let client = http()?;
    let mut query = String::new();
    let (body, content_type) = match MissionFormat::from_path(file) {
        MissionFormat::Markdown => {
            // The mesh parses it too (with its own agent routing); reading it
            // here shows the warnings and refuses a file with no tasks early.
            let agents = coditect_node::mission::AgentConfig::default();
            let mission = coditect_node::mission::read_markdown(&text, &agents)
                .map_err(|error| NodeError::BadInput(error.to_string()))?;
            for warning in &mission.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(folder) = workspace {
                let tree = crate::workspace_client::upload_workspace(&client, api, folder).await?;
                query = format!("?workspace={tree}");
            }
            (text, "text/markdown")
        }
        MissionFormat::Toml => (
            prepare_toml(&client, api, file, &text, workspace).await?,
            "application/toml",
        ),
    };
    let url = api_url(api, &format!("/api/missions{query}"))?;
    // One key for every attempt: a retry after a lost answer (a leader that
    // died after committing, say) returns the same mission, never a copy.
    let key = idempotency_key();
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("Idempotency-Key", &key)
            .body(body.clone())
            .send()
            .await;
        let retryable = match &sent {
            Ok(response) => matches!(
                response.status(),
                reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::GATEWAY_TIMEOUT
            ),
            Err(_) => true,
        };
        if !retryable || attempt >= SUBMIT_ATTEMPTS {
            break sent.map_err(unreachable(api))?;
        }
        let why = match sent {
            Ok(response) => problem(response).await,
            Err(error) => format!("cannot reach {api}: {error}"),
        };
        eprintln!("submit: {why}; trying again with the same Idempotency-Key ({attempt}/{SUBMIT_ATTEMPTS})");
        pause().await;
    };
    let status = response.status();
    if status == reqwest::StatusCode::BAD_REQUEST {
        return Err(NodeError::BadInput(problem(response).await));
    }
    if !status.is_success() {
        return Err(NodeError::Failed(format!(
            "mission not accepted: {}",
            problem(response).await
        )));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))?;
    let id = body["id"]
        .as_str()
        .ok_or_else(|| NodeError::Failed(format!("{url} answered no mission id")))?
        .to_string();
    println!("{id}");
    if !wait {
        return Ok(0);
    }
    watch(&client, api, &id).await
}

/// Tries of one submission while the mesh answers 503/504 or cannot be reached.
const SUBMIT_ATTEMPTS: u32 = 20;

/// A fresh idempotency key: 128 random bits, hex.
#[allow(clippy::disallowed_methods)] // the CLI is not node code: no seam
fn idempotency_key() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn count(mission: &serde_json::Value, state: &str) -> u64 {
    mission["counts"][state].as_u64().unwrap_or(0)
}

/// How many tasks a mission summary counts, in every state.
fn total(mission: &serde_json::Value) -> u64 {
    mission["counts"]
        .as_object()
        .map(|counts| counts.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0)
}

/// Whether a mission summary counts only succeeded tasks (and at least
/// one), so its task list has nothing that did not succeed.
fn every_task_succeeded(mission: &serde_json::Value) -> bool {
    let total = total(mission);
    total > 0 && count(mission, "succeeded") == total
}

/// Waits before asking again after an error.
#[allow(clippy::disallowed_methods)] // the CLI is not node code: no seam
async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
}

/// Waits `secs` seconds (a 429's `Retry-After`).
#[allow(clippy::disallowed_methods)] // the CLI is not node code: no seam
async fn pause_secs(secs: u64) {
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
}

/// Waits before asking again for a mission the node has not applied yet:
/// 20 ms, doubling to 500 ms.
#[allow(clippy::disallowed_methods)] // the CLI is not node code: no seam
async fn pause_for_apply(failures: u32) {
    let ms = (20u64 << failures.min(5)).min(500);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// Follows a mission until it ends, one progress line per change on stderr.
async fn watch(client: &reqwest::Client, api: &str, id: &str) -> Result<u8, NodeError> {
    let mut version = String::new();
    let mut failures = 0;
    // After a 429 (the node holds as many long polls as it may, or this
    // address sent too much): plain reads at the pace the node asks for,
    // which hold no place, until one succeeds.
    let mut throttled = false;
    loop {
        let wait_ms = if throttled { 0 } else { 20_000 };
        let url = api_url(
            api,
            &format!("/api/missions/{id}?after={version}&wait_ms={wait_ms}&tasks=false"),
        )?;
        let response = match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                throttled = false;
                response
            }
            Ok(response) if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 30);
                if !throttled {
                    eprintln!(
                        "waiting: {} (polling every {after} s meanwhile)",
                        problem(response).await
                    );
                }
                throttled = true;
                pause_secs(after).await;
                continue;
            }
            // Just created on the leader: this node applies it a moment later.
            Ok(response)
                if response.status() == reqwest::StatusCode::NOT_FOUND
                    && version.is_empty()
                    && failures < 10 =>
            {
                pause_for_apply(failures).await;
                failures += 1;
                continue;
            }
            Ok(response) if failures < 30 => {
                eprintln!("waiting: {}", problem(response).await);
                failures += 1;
                pause().await;
                continue;
            }
            Err(error) if failures < 30 => {
                eprintln!("waiting: cannot reach {api}: {error}");
                failures += 1;
                pause().await;
                continue;
            }
            Ok(response) => return Err(NodeError::Failed(problem(response).await)),
            Err(error) => return Err(unreachable(api)(error)),
        };
        failures = 0;
        let mission: serde_json::Value = response
            .json()
            .await
            .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))?;
        let next = mission["version"].as_str().unwrap_or_default().to_string();
        let state = mission["state"].as_str().unwrap_or("?").to_string();
        if next != version {
            let total = total(&mission);
            eprintln!(
                "{id} {state}: {}/{total} succeeded, {} running, {} queued, {} ready, {} failed, {} blocked",
                count(&mission, "succeeded"),
                count(&mission, "running"),
                count(&mission, "assigned"),
                count(&mission, "ready"),
                count(&mission, "failed"),
                count(&mission, "blocked"),
            );
            version = next;
        }
        if state != "running" {
            // The task list once, at the end, for what did not succeed; not
            // read when nothing would be listed (megabytes for a large
            // mission, built by the node and parsed here).
            if !every_task_succeeded(&mission) {
                let url = api_url(api, &format!("/api/missions/{id}"))?;
                let full: serde_json::Value = match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        response.json().await.unwrap_or_default()
                    }
                    _ => serde_json::Value::Null,
                };
                for task in full["tasks"].as_array().into_iter().flatten() {
                    if task["state"] != "succeeded" {
                        eprintln!(
                            "  {} {}: {}",
                            task["id"].as_str().unwrap_or("?"),
                            task["state"].as_str().unwrap_or("?"),
                            task["reason"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            return Ok(if state == "succeeded" { 0 } else { 1 });
        }
    }
}

/// `coditect mission ID [--json]`.
pub async fn mission(api: &str, id: &str, json: bool) -> Result<u8, NodeError> {
    let url = api_url(api, &format!("/api/missions/{id}"))?;
    let response = http()?.get(&url).send().await.map_err(unreachable(api))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(NodeError::BadInput(problem(response).await));
    }
    if !response.status().is_success() {
        return Err(NodeError::Failed(problem(response).await));
    }
    let mission: serde_json::Value = response
        .json()
        .await
        .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&mission).unwrap_or_default()
        );
        return Ok(0);
    }
    println!(
        "mission {} ({}): {}",
        mission["id"].as_str().unwrap_or("?"),
        mission["name"].as_str().unwrap_or(""),
        mission["state"].as_str().unwrap_or("?")
    );
    println!(
        "{:<24} {:<10} {:>8} {:<14} reason / result",
        "task", "state", "attempts", "owner"
    );
    for task in mission["tasks"].as_array().into_iter().flatten() {
        let owner = task["owner"]
            .as_str()
            .or_else(|| task["result"]["node"].as_str())
            .map(|peer| {
                peer.chars()
                    .rev()
                    .take(12)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect()
            })
            .unwrap_or_else(|| "-".to_string());
        let detail = match task["result"]["exit_code"].as_i64() {
            Some(code) if task["state"] == "succeeded" => format!(
                "exit {code}, {} output file(s)",
                task["result"]["outputs"]
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or(0)
            ),
            _ => task["reason"].as_str().unwrap_or("").to_string(),
        };
        println!(
            "{:<24} {:<10} {:>8} {:<14} {}",
            task["id"].as_str().unwrap_or("?"),
            task["state"].as_str().unwrap_or("?"),
            task["attempts"],
            owner,
            detail
        );
        if let Some(by) = task["spawned_by"].as_str() {
            println!("{:<24}   added by `{by}`", "");
        }
        if let Some(heir) = task["superseded_by"].as_str() {
            println!("{:<24}   replaced by `{heir}` (a fix round)", "");
        }
        for violation in task["violations"].as_array().into_iter().flatten() {
            println!(
                "{:<24}   violation (attempt {}): {}: {}",
                "",
                violation["attempt"],
                violation["kind"].as_str().unwrap_or("?"),
                violation["detail"].as_str().unwrap_or("")
            );
            print_model_calls(&violation["llm_calls"]);
        }
        print_model_calls(&task["result"]["llm_calls"]);
    }
    Ok(0)
}

/// One line per recorded model call (prompt and completion are blobs:
/// `GET /api/blobs/{digest}`).
fn print_model_calls(calls: &serde_json::Value) {
    for call in calls.as_array().into_iter().flatten() {
        let digest = |key: &str| call[key].as_str().unwrap_or("-").to_string();
        println!(
            "{:<24}   model call: {} ({}) {}: {} tokens in, {} out, {} ms, {} tries; prompt {}, completion {}",
            "",
            call["model"].as_str().unwrap_or("?"),
            call["purpose"].as_str().unwrap_or("-"),
            call["outcome"].as_str().unwrap_or("?"),
            call["tokens_in"],
            call["tokens_out"],
            call["latency_ms"],
            call["tries"],
            digest("prompt"),
            digest("completion"),
        );
    }
}

/// `coditect cancel ID` and `coditect retry ID`.
pub async fn control(api: &str, id: &str, retry: bool) -> Result<u8, NodeError> {
    let client = http()?;
    let request = if retry {
        client.post(api_url(api, &format!("/api/missions/{id}/retry"))?)
    } else {
        client
            .delete(api_url(api, &format!("/api/missions/{id}"))?)
            .header("Idempotency-Key", idempotency_key())
    };
    let response = request.send().await.map_err(unreachable(api))?;
    let status = response.status();
    if status.is_success() {
        eprintln!(
            "mission {id} {}",
            if retry { "retried" } else { "cancelled" }
        );
        return Ok(0);
    }
    let message = problem(response).await;
    if status == reqwest::StatusCode::NOT_FOUND {
        Err(NodeError::BadInput(message))
    } else {
        Err(NodeError::Failed(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mission_whose_every_task_succeeded_skips_the_task_list() {
        let summary = |counts: serde_json::Value| serde_json::json!({ "counts": counts });
        assert!(every_task_succeeded(&summary(
            serde_json::json!({"succeeded": 20000})
        )));
        // A superseded failure (a fix round) still counts as failed: listed.
        assert!(!every_task_succeeded(&summary(
            serde_json::json!({"succeeded": 3, "failed": 1})
        )));
        assert!(!every_task_succeeded(&summary(
            serde_json::json!({"succeeded": 0, "cancelled": 2})
        )));
        assert!(!every_task_succeeded(&summary(serde_json::json!({}))));
        assert!(!every_task_succeeded(
            &serde_json::json!({"state": "succeeded"})
        ));
    }
}
