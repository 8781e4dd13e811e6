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

/// The API token every request of this process sends, once set.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Longest API token file read, bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The API token to send: `--api-token` (or `CODITECT_API_TOKEN`), else
/// the contents of `--api-token-file`, else `./coditect-data/api-token`
/// when it exists (the default data dir of `coditect node`), else none.
pub(crate) fn token_from(
    token: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    if let Some(token) = token {
        let token = token.trim();
        if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "invalid --api-token: expected the token text (printable, no spaces)".into(),
            );
        }
        return Ok(Some(token.to_string()));
    }
    let (path, named) = match file {
        Some(path) => (path.to_path_buf(), true),
        None => (std::path::PathBuf::from("coditect-data/api-token"), false),
    };
    let read = std::fs::File::open(&path).and_then(|file| {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_TOKEN_FILE_BYTES + 1),
            &mut text,
        )?;
        Ok(text)
    });
    match read {
        Ok(text) if text.len() as u64 > MAX_TOKEN_FILE_BYTES => Err(format!(
            "--api-token-file {} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token file",
            path.display()
        )),
        Ok(text) => match text.trim() {
            "" if named => Err(format!("--api-token-file {} is empty", path.display())),
            "" => Ok(None),
            token => token_from(Some(token), None),
        },
        Err(_) if !named => Ok(None),
        Err(error) => Err(format!(
            "cannot read --api-token-file {}: {error}",
            path.display()
        )),
    }
}

/// The one certificate HTTPS may present (`--tls-fingerprint`), if pinned.
static PIN: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Pins the API's certificate for every [`http`] client of this process.
pub(crate) fn set_pin(pin: [u8; 32]) {
    let _ = PIN.set(pin);
}

/// Sets the token [`http`] clients send (once per process).
pub(crate) fn set_token(token: Option<String>) {
    let _ = TOKEN.set(token);
}

/// An HTTP client with a generous timeout (long polls wait up to 30 s)
/// that sends the API token, if one is set.
pub(crate) fn http() -> Result<reqwest::Client, NodeError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = TOKEN.get().and_then(Option::as_deref) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| NodeError::BadInput("invalid --api-token".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .default_headers(headers);
    if let Some(pin) = PIN.get() {
        let config = coditect_node::tls::pinned_client(*pin).map_err(NodeError::Failed)?;
        builder = builder.use_preconfigured_tls(config);
    }
    builder
        .build()
        .map_err(|error| NodeError::Failed(format!("cannot build an HTTP client: {error}")))
}

pub(crate) fn unreachable(api: &str) -> impl FnOnce(reqwest::Error) -> NodeError + '_ {
    // The causes say what went wrong (refused, TLS, a pinned certificate).
    move |error| {
        NodeError::Failed(format!(
            "cannot reach the node at {api}: {}",
            coditect_node::error_chain(&error)
        ))
    }
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
