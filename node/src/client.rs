//! CLI commands that talk to a node's HTTP API.

use coditect_node::start::NodeError;

fn api_url(api: &str, path: &str) -> Result<String, NodeError> {
    let base = api.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(NodeError::BadInput(format!(
            "invalid --api {api:?}: expected a URL like http://127.0.0.1:7070"
        )));
    }
    Ok(format!("{base}{path}"))
}

/// `coditect status`.
pub async fn status(api: &str, json: bool) -> Result<(), NodeError> {
    let url = api_url(api, "/api/status")?;
    let response = reqwest::get(&url)
        .await
        .map_err(|error| NodeError::Failed(format!("cannot reach the node at {api}: {error}")))?;
    if !response.status().is_success() {
        return Err(NodeError::Failed(format!(
            "{url} answered {}",
            response.status()
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
