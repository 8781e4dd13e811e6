//! `coditect plan --api URL`: asks the node's model for the mission
//! (`POST /api/plan` with the goal and the workspace's paths).

use std::path::Path;

use coditect_node::start::NodeError;

use crate::api_client::{api_url, http, problem};

/// The planned mission (TOML without a workspace), the model and the tries;
/// `Err` says why there is none, for the fallback's message.
pub(crate) async fn ask(
    api: &str,
    goal: &str,
    folder: &Path,
) -> Result<(String, String, u64), String> {
    let scanned = coditect_node::workspace::scan(folder)?;
    let files: Vec<&str> = scanned.tree.iter().map(|(path, _)| path).collect();
    let url = api_url(api, "/api/plan").map_err(|e| match e {
        NodeError::BadInput(m) | NodeError::Failed(m) => m,
    })?;
    let client = http().map_err(|e| match e {
        NodeError::BadInput(m) | NodeError::Failed(m) => m,
    })?;
    eprintln!("asking the model of {api} for a plan...");
    let response = client
        .post(url)
        .json(&serde_json::json!({"goal": goal, "files": files}))
        .timeout(std::time::Duration::from_secs(660))
        .send()
        .await
        .map_err(|error| format!("cannot reach the node at {api}: {error}"))?;
    if !response.status().is_success() {
        return Err(problem(response).await);
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|error| format!("the node's answer is not JSON: {error}"))?;
    let mission = body["mission"]
        .as_str()
        .ok_or("the node's answer has no mission")?
        .to_string();
    Ok((
        mission,
        body["model"].as_str().unwrap_or("the model").to_string(),
        body["tries"].as_u64().unwrap_or(1),
    ))
}
