//! The CLI's HTTP plumbing: URLs of a node's API, one client, error
//! texts from answers, and blob upload and download.

use coditect_node::start::NodeError;

pub(crate) fn api_url(api: &str, path: &str) -> Result<String, NodeError> {
    let base = api.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(NodeError::BadInput(format!(
            "invalid --api {api:?}: expected a URL like http://127.0.0.1:7070"
        )));
    }
    Ok(format!("{base}{path}"))
}

/// An HTTP client with a generous timeout (long polls wait up to 30 s).
pub(crate) fn http() -> Result<reqwest::Client, NodeError> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|error| NodeError::Failed(format!("cannot build an HTTP client: {error}")))
}

pub(crate) fn unreachable(api: &str) -> impl FnOnce(reqwest::Error) -> NodeError + '_ {
    move |error| NodeError::Failed(format!("cannot reach the node at {api}: {error}"))
}

/// The `error` field of a JSON error answer, or the status line.
pub(crate) async fn problem(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<serde_json::Value>().await {
        Ok(body) => body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string()),
        Err(_) => status.to_string(),
    }
}

/// Uploads `bytes` through `POST /api/blobs`; returns the digest.
pub(crate) async fn upload(
    client: &reqwest::Client,
    api: &str,
    bytes: Vec<u8>,
) -> Result<String, NodeError> {
    let url = api_url(api, "/api/blobs")?;
    let response = client
        .post(&url)
        .body(bytes)
        .send()
        .await
        .map_err(unreachable(api))?;
    if !response.status().is_success() {
        return Err(NodeError::Failed(format!(
            "upload refused: {}",
            problem(response).await
        )));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|error| NodeError::Failed(format!("{url} answered no JSON: {error}")))?;
    body["digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| NodeError::Failed(format!("{url} answered no digest")))
}

/// Largest blob the CLI downloads, bytes (the node's own cap is lower).
const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// The bytes of blob `digest` through `GET /api/blobs/{digest}`, checked
/// against the digest.
pub(crate) async fn download(
    client: &reqwest::Client,
    api: &str,
    digest: &str,
) -> Result<Vec<u8>, NodeError> {
    let expected: coditect_memory::Digest = digest
        .parse()
        .map_err(|error| NodeError::Failed(format!("the node named {digest:?}: {error}")))?;
    let url = api_url(api, &format!("/api/blobs/{digest}"))?;
    let mut response = client.get(&url).send().await.map_err(unreachable(api))?;
    if !response.status().is_success() {
        return Err(NodeError::Failed(format!(
            "blob {digest}: {}",
            problem(response).await
        )));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| NodeError::Failed(format!("blob {digest}: {error}")))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_DOWNLOAD_BYTES {
            return Err(NodeError::Failed(format!(
                "blob {digest} is larger than {} MiB",
                MAX_DOWNLOAD_BYTES >> 20
            )));
        }
    }
    if coditect_memory::Digest::of(&bytes) != expected {
        return Err(NodeError::Failed(format!(
            "blob {digest} arrived with other contents"
        )));
    }
    Ok(bytes)
}
