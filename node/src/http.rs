//! The HTTP API: health, readiness, metrics and status. Every handler answers
//! from the node's local view; none waits on consensus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::messages::{AdmissionAction, MissionAction};
use crate::mission::MissionFormat;
use crate::runtime::{Node, SubmitError};

/// Largest mission file accepted.
const MAX_MISSION_BYTES: usize = 8 * 1024 * 1024;
/// Longest a mission query may wait for a change.
const MAX_WAIT_MS: u64 = 30_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The node.
    pub node: Node,
    /// The node's metrics registry.
    pub registry: Arc<Registry>,
    /// The node's language model, if it has one (`POST /api/plan`).
    pub llm: Option<Arc<crate::llm::service::LlmService>>,
    /// Which hosts it answers to and what is public (`http_auth`).
    pub policy: Arc<crate::http_auth::HttpPolicy>,
    /// Requests per client address (`--http-rate-limit`), if limited.
    pub limiter: Option<Arc<std::sync::Mutex<crate::rate::RateLimiter>>>,
}

/// Client addresses whose request rates are tracked at once.
pub const RATE_LIMITED_CLIENTS: usize = 10_000;

/// The router of the HTTP API.
pub fn router(state: ApiState) -> Router {
    let max_blob = state.node.blobs().max_blob_bytes() as usize;
    Router::new()
        .route("/", get(index))
        .route(
            "/api/blobs",
            axum::routing::post(put_blob).layer(axum::extract::DefaultBodyLimit::max(max_blob)),
        )
        .route(
            "/api/blobs/missing",
            axum::routing::post(missing_blobs).layer(axum::extract::DefaultBodyLimit::max(
                MAX_MISSING_QUERY_BYTES,
            )),
        )
        .route("/api/blobs/{digest}", get(get_blob))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route(
            "/api/plan",
            axum::routing::post(plan)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_PLAN_REQUEST_BYTES)),
        )
        .route(
            "/api/missions",
            axum::routing::post(submit_mission)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_MISSION_BYTES))
                .get(list_missions),
        )
        .route(
            "/api/missions/{id}",
            get(get_mission).delete(cancel_mission),
        )
        .route(
            "/api/missions/{id}/retry",
            axum::routing::post(retry_mission),
        )
        .route(
            "/api/missions/{id}/tasks/{task}/output/{*path}",
            get(task_output),
        )
        .route(
            "/api/tokens",
            axum::routing::post(create_token).layer(axum::extract::DefaultBodyLimit::max(
                MAX_TOKEN_REQUEST_BYTES,
            )),
        )
        .route("/api/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/admission/rotate", axum::routing::post(rotate_secret))
        .route(
            "/api/admission/api-token/rotate",
            axum::routing::post(rotate_api_token),
        )
        .route("/api/peers/{peer}", axum::routing::delete(revoke_peer))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The API guard (`http_auth::decide`) in front of every route: refused
/// requests get their status, a `{"error"}` body and, for a missing or
/// wrong token, `WWW-Authenticate: Bearer`; their body is never read.
async fn guard(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let host = text(header::HOST).or_else(|| request.uri().authority().map(|a| a.as_str()));
    let facts = crate::http_auth::RequestFacts {
        path: request.uri().path(),
        host,
        origin: text(header::ORIGIN),
        fetch_site: headers
            .get("sec-fetch-site")
            .and_then(|value| value.to_str().ok()),
        authorization: text(header::AUTHORIZATION),
    };
    if let (Some(limiter), Some(client)) = (
        &state.limiter,
        request
            .extensions()
            .get::<axum::extract::ConnectInfo<crate::http_limits::ClientAddr>>(),
    ) {
        let now_ms = state.node.elapsed().as_millis() as u64;
        let verdict = limiter
            .lock()
            .expect("rate limiter lock")
            .check(client.0 .0.ip(), now_ms);
        if let Err(wait_ms) = verdict {
            state.node.count_http_refusal("rate_limited");
            tracing::debug!(client = %client.0 .0.ip(), "HTTP request over the rate limit");
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from this address; retry in {wait_ms} ms"),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(wait_ms.div_ceil(1_000).max(1)),
            );
            return response;
        }
    }
    let access = state.node.api_access();
    match crate::http_auth::decide(&facts, &access, &state.policy) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state.node.count_http_refusal(refusal.label());
            let message = refusal.message(&facts);
            tracing::debug!(
                path = facts.path,
                reason = refusal.label(),
                "HTTP request refused"
            );
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
            let mut response =
                (status, Json(serde_json::json!({ "error": message }))).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"coditect\""),
                );
            }
            response
        }
    }
}

/// A status page that polls `/api/status` from the browser.
async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("web/index.html"),
    )
        .into_response()
}

/// A node whose Raft core died is neither healthy nor ready; the reason is
/// in the body (and in `/api/status` as `fatal`) until the process exits.
async fn healthz(State(state): State<ApiState>) -> Response {
    match state.node.fatal() {
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {reason}\n"),
        )
            .into_response(),
        None => "ok\n".into_response(),
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if let Some(reason) = state.node.fatal() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response();
    }
    match state.node.leader() {
        Some(leader) => (
            StatusCode::OK,
            format!("ready: leader {}\n", leader.peer_id),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let families = state.registry.gather();
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&families, &mut buffer) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            buffer,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn status(State(state): State<ApiState>) -> Response {
    Json(state.node.status()).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// Bytes of an upload gathered before they are written and hashed (off
/// the runtime): the memory one upload holds.
const UPLOAD_BUFFER_BYTES: usize = 1024 * 1024;

/// `POST /api/blobs`: stores the body under its sha256, streamed to disk
/// while hashing (bounded memory per upload; the disk work runs off the
/// runtime that serves Raft).
async fn put_blob(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    use futures::StreamExt;
    let node = state.node.clone();
    let blobs = node.blobs().clone();
    // A declared length over the limit is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > blobs.max_blob_bytes()) {
        return blob_error(coditect_memory::BlobError::TooLarge {
            size,
            limit: blobs.max_blob_bytes(),
        });
    }
    let mut writer = match node.off_runtime(move || blobs.writer()).await {
        Ok(writer) => writer,
        Err(other) => return blob_error(other),
    };
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::with_capacity(UPLOAD_BUFFER_BYTES);
    loop {
        let chunk = stream.next().await;
        let done = match chunk {
            Some(Ok(bytes)) => {
                pending.extend_from_slice(&bytes);
                if pending.len() < UPLOAD_BUFFER_BYTES {
                    continue;
                }
                false
            }
            Some(Err(problem)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off: {problem}"),
                )
            }
            None => true,
        };
        let buffer = std::mem::replace(&mut pending, Vec::with_capacity(UPLOAD_BUFFER_BYTES));
        let (back, written) = node
            .off_runtime(move || {
                let written = writer.write(&buffer);
                (writer, written)
            })
            .await;
        writer = back;
        if let Err(problem) = written {
            return blob_error(problem);
        }
        if done {
            break;
        }
    }
    match node.off_runtime(move || writer.finish()).await {
        Ok(digest) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"digest": digest.to_string()})),
        )
            .into_response(),
        Err(problem) => blob_error(problem),
    }
}

fn blob_error(problem: coditect_memory::BlobError) -> Response {
    match problem {
        coditect_memory::BlobError::TooLarge { size, limit } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("blob of {size} bytes or more exceeds the limit of {limit} bytes"),
        ),
        // No host paths in answers: the log has the details.
        other => {
            tracing::warn!("storing an uploaded blob failed: {other}");
            error(
                StatusCode::INSUFFICIENT_STORAGE,
                "this node could not store the blob (see its log)",
            )
        }
    }
}

/// Most digests one `POST /api/blobs/missing` asks about.
pub const MAX_MISSING_QUERY: usize = 10_000;

/// Largest body of `POST /api/blobs/missing` (10,000 digests in JSON).
const MAX_MISSING_QUERY_BYTES: usize = 1024 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MissingQuery {
    digests: Vec<String>,
}

/// `POST /api/blobs/missing` with `{"digests": [...]}`: which of them this
/// node does not hold (`{"missing": [...]}`, in the order asked), so a
/// client uploads only those.
async fn missing_blobs(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let query: MissingQuery = match serde_json::from_slice(&body) {
        Ok(query) => query,
        Err(problem) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"digests\": [\"sha256:...\"]}}: {problem}"),
            )
        }
    };
    if query.digests.len() > MAX_MISSING_QUERY {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} digests asked at once; at most {MAX_MISSING_QUERY}",
                query.digests.len()
            ),
        );
    }
    let mut digests = Vec::with_capacity(query.digests.len());
    for text in &query.digests {
        match text.parse::<coditect_memory::Digest>() {
            Ok(digest) => digests.push(digest),
            Err(problem) => return error(StatusCode::BAD_REQUEST, problem.to_string()),
        }
    }
    let blobs = state.node.blobs().clone();
    let missing: Vec<String> = state
        .node
        .off_runtime(move || {
            digests
                .iter()
                .filter(|digest| !blobs.contains(digest))
                .map(ToString::to_string)
                .collect()
        })
        .await;
    Json(serde_json::json!({ "missing": missing })).into_response()
}

/// `GET /api/blobs/{digest}`: the bytes, from this node or fetched from a peer.
async fn get_blob(
    State(state): State<ApiState>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Response {
    let digest = match digest.parse::<coditect_memory::Digest>() {
        Ok(digest) => digest,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem.to_string()),
    };
    match state.node.fetch_blob(&digest).await {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no node reachable from here holds {digest}"),
        ),
        Err(problem) => error(StatusCode::INTERNAL_SERVER_ERROR, problem),
    }
}

fn submit_error(problem: SubmitError) -> Response {
    match problem {
        SubmitError::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        SubmitError::Unavailable(message) => error(StatusCode::SERVICE_UNAVAILABLE, message),
        SubmitError::NotFound(message) => error(StatusCode::NOT_FOUND, message),
        SubmitError::Conflict(message) => error(StatusCode::CONFLICT, message),
        SubmitError::MaybeCommitted(message) => error(StatusCode::GATEWAY_TIMEOUT, message),
        SubmitError::Forbidden(message) => error(StatusCode::FORBIDDEN, message),
    }
}

/// Longest admission request body (`POST /api/tokens`), bytes.
const MAX_TOKEN_REQUEST_BYTES: usize = 4 * 1024;

/// `POST /api/tokens` body: `{"ttl_secs": 3600, "uses": 1}`, both optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    ttl_secs: Option<u64>,
    uses: Option<u32>,
}

/// A token lives at most this long (ten years), seconds.
const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

async fn create_token(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(problem) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the token request is not {{\"ttl_secs\": N, \"uses\": N}}: {problem}"),
                )
            }
        }
    };
    if request.ttl_secs == Some(0) || request.ttl_secs.is_some_and(|ttl| ttl > MAX_TOKEN_TTL_SECS) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("ttl_secs must be 1..={MAX_TOKEN_TTL_SECS}"),
        );
    }
    if request.uses == Some(0) {
        return error(StatusCode::BAD_REQUEST, "uses must be at least 1");
    }
    let action = AdmissionAction::CreateToken {
        ttl_ms: request.ttl_secs.map(|ttl| ttl * 1000),
        uses: request.uses,
    };
    match state.node.admission(action).await {
        Ok(Some(token)) => {
            let id = token.split('.').nth(1).unwrap_or_default().to_string();
            (
                StatusCode::CREATED,
                Json(serde_json::json!({"token": token, "id": id, "ttl_secs": request.ttl_secs, "uses": request.uses})),
            )
                .into_response()
        }
        Ok(None) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the leader made no token",
        ),
        Err(problem) => submit_error(problem),
    }
}

async fn admission_done(state: &ApiState, action: AdmissionAction) -> Response {
    match state.node.admission(action).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(problem) => submit_error(problem),
    }
}

async fn revoke_token(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    admission_done(&state, AdmissionAction::RevokeToken(id)).await
}

async fn rotate_secret(State(state): State<ApiState>) -> Response {
    admission_done(&state, AdmissionAction::Rotate).await
}

/// `POST /api/admission/api-token/rotate`: a new API token for the whole
/// mesh, in the answer (`{"api_token": ...}`); the one this request used
/// is refused from now on.
async fn rotate_api_token(State(state): State<ApiState>) -> Response {
    match state.node.admission(AdmissionAction::RotateApiToken).await {
        Ok(Some(token)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "api_token": token })),
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the leader made no API token",
        ),
        Err(problem) => submit_error(problem),
    }
}

async fn revoke_peer(
    State(state): State<ApiState>,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Response {
    if peer.is_empty() || peer.len() > coditect_consensus::admission::MAX_PEER_ID_BYTES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{peer:?} is not a peer id"),
        );
    }
    admission_done(&state, AdmissionAction::RevokePeer(peer)).await
}

/// The request's `Idempotency-Key`: visible ASCII, at most
/// [`coditect_consensus::state::MAX_IDEMPOTENCY_KEY_BYTES`] bytes.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, Box<Response>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let max = coditect_consensus::state::MAX_IDEMPOTENCY_KEY_BYTES;
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > max || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("the Idempotency-Key header must be 1 to {max} visible ASCII characters"),
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Largest `POST /api/plan` body.
const MAX_PLAN_REQUEST_BYTES: usize = 1 << 20;

/// `POST /api/plan` `{"goal", "files": [paths]}`: a mission planned by
/// this node's model, `{"mission": TOML, "model", "tries"}`; 409 when the
/// node has no model, 422 when its plans were invalid, 503 when it could
/// not be asked.
async fn plan(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PlanRequest {
        goal: String,
        #[serde(default)]
        files: Vec<String>,
    }
    let request: PlanRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a plan request: {e}")),
    };
    if request.goal.trim().is_empty() || request.goal.len() > 64 * 1024 {
        return error(StatusCode::BAD_REQUEST, "the goal must be 1 byte to 64 KiB");
    }
    let Some(llm) = state.llm.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this node has no language model ([llm]); ask a node that offers llm",
        );
    };
    if let Some(reason) = llm.open_reason() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the model is unavailable: {reason}"),
        );
    }
    let files: Vec<String> = request
        .files
        .into_iter()
        .take(10_000)
        .map(|f| f.chars().take(4096).collect())
        .collect();
    match crate::plan_model::plan_with_model(&llm, request.goal.trim(), &files).await {
        Ok((mission, tries)) => Json(serde_json::json!({
            "mission": mission,
            "model": llm.config().model,
            "tries": tries,
        }))
        .into_response(),
        Err(why) if why.starts_with("the model could not") => {
            error(StatusCode::SERVICE_UNAVAILABLE, why)
        }
        Err(why) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
    }
}

/// `POST /api/missions`: a TOML mission, or markdown with `Content-Type: text/markdown`.
#[derive(serde::Deserialize)]
struct SubmitQuery {
    /// The `sha256:` digest of the workspace tree (uploaded first).
    workspace: Option<String>,
}

async fn submit_mission(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<SubmitQuery>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the mission file is not UTF-8");
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let format = MissionFormat::from_content_type(content_type);
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    match state
        .node
        .submit_mission(text, format, key, query.workspace)
        .await
    {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({"id": id}))).into_response(),
        Err(problem) => submit_error(problem),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    /// Missions numbered after this one (`m17` or `17`).
    after: Option<String>,
    /// Page size (at most 500; 100 when absent).
    limit: Option<usize>,
}

/// `GET /api/missions?after=m17&limit=100`: mission summaries, oldest
/// first, paged; `next` is the `after` of the next page (null at the end).
async fn list_missions(
    State(state): State<ApiState>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Response {
    let after = match query
        .after
        .as_deref()
        .map(|text| text.trim_start_matches('m').parse::<u64>())
    {
        None => 0,
        Some(Ok(number)) => number,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "after must be a mission id such as m17",
            )
        }
    };
    match state
        .node
        .missions_page(after, query.limit.unwrap_or(100))
        .await
    {
        Ok(mut page) => {
            if let Some(next) = page["next"].as_u64() {
                page["next"] = serde_json::Value::String(format!("m{next}"));
            }
            Json(page).into_response()
        }
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem),
    }
}

#[derive(serde::Deserialize)]
struct MissionQuery {
    /// Answer once the mission's `version` differs from this one.
    after: Option<String>,
    /// How long to wait for that, ms (at most 30 s).
    wait_ms: Option<u64>,
    /// `false`: leave out the task list (counts and state only).
    tasks: Option<bool>,
}

/// A shared view body as response bytes, without copying it.
struct SharedBody(Arc<String>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// `GET /api/missions/{id}`: the mission from this node's view. With
/// `after=VERSION&wait_ms=N` it answers as soon as the mission changed
/// (long poll: how `coditect submit --wait` streams progress). Every
/// waiter shares one view per version of the mission, built once; waiters
/// are capped per client address and in total (429 beyond).
async fn get_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<MissionQuery>,
    // Absent when the router is served without connection info (tests).
    client: Option<axum::Extension<axum::extract::ConnectInfo<crate::http_limits::ClientAddr>>>,
) -> Response {
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let with_tasks = query.tasks != Some(false);
    let _slot = if wait.is_zero() {
        None
    } else {
        let client = client
            .map(|info| info.0 .0 .0.ip().to_string())
            .unwrap_or_default();
        match state.node.wait_slot(&client) {
            Ok(slot) => Some(slot),
            Err(problem) => {
                // Without `wait_ms` the same read holds no place: say so.
                state.node.count_http_refusal("long_polls");
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("{problem}; read without wait_ms, or retry in a second"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(1u64));
                return response;
            }
        }
    };
    let started = state.node.elapsed();
    let mut last: Option<crate::runtime::MissionView> = None;
    loop {
        let known = last.as_ref().map(|view| view.version.clone());
        // Before the view: a change after this is waited for, none missed.
        let seen = state.node.mission_revision(&id);
        let view = match state
            .node
            .mission_view(&id, with_tasks, known.as_deref())
            .await
        {
            // An empty body from the leader: the version this node has.
            Ok(Some(view)) if view.body.is_empty() && last.is_some() => {
                last.clone().expect("a known view")
            }
            Ok(Some(view)) => view,
            Ok(None) => return error(StatusCode::NOT_FOUND, format!("no mission {id}")),
            Err(problem) => return error(StatusCode::SERVICE_UNAVAILABLE, problem),
        };
        let waited = state.node.elapsed().saturating_sub(started);
        if query.after.as_deref() != Some(view.version.as_str()) || view.finished || waited >= wait
        {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from(axum::body::Bytes::from_owner(SharedBody(view.body))),
            )
                .into_response();
        }
        last = Some(view);
        state.node.wait_for_change(wait - waited, &id, seen).await;
    }
}

async fn control(
    state: &ApiState,
    id: &str,
    action: MissionAction,
    headers: &axum::http::HeaderMap,
) -> Response {
    let key = match idempotency_key(headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    // A repeated cancel (same key, after a lost answer) finds the mission
    // cancelled already: that is the answer the first one would have had.
    if key.is_some() && action == MissionAction::Cancel {
        if let Ok(Some(summary)) = state.node.mission_view(id, false, None).await {
            let cancelled = serde_json::from_str::<serde_json::Value>(&summary.body)
                .ok()
                .is_some_and(|view| view["state"] == "cancelled");
            if cancelled {
                return full_view(state, id).await;
            }
        }
    }
    match state.node.control(id, action).await {
        Ok(()) => full_view(state, id).await,
        Err(SubmitError::Invalid(message)) => error(StatusCode::CONFLICT, message),
        Err(problem) => submit_error(problem),
    }
}

/// The mission's view with its tasks, as `GET /api/missions/{id}` shows it
/// (shared with the long polls' cache; relayed by the leader outside Raft).
async fn full_view(state: &ApiState, id: &str) -> Response {
    match state.node.mission_view(id, true, None).await {
        Ok(Some(view)) => (
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from(axum::body::Bytes::from_owner(SharedBody(view.body))),
        )
            .into_response(),
        _ => Json(serde_json::json!({"id": id})).into_response(),
    }
}

/// `DELETE /api/missions/{id}`: cancel.
async fn cancel_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    control(&state, &id, MissionAction::Cancel, &headers).await
}

/// `POST /api/missions/{id}/retry`: re-run the failed and blocked tasks.
async fn retry_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    control(&state, &id, MissionAction::Retry, &headers).await
}

/// `GET /api/missions/{id}/tasks/{task}/output/{path}`: a produced file
/// (`stdout` names the task's standard output when it produced no file of
/// that name).
async fn task_output(
    State(state): State<ApiState>,
    axum::extract::Path((id, task, path)): axum::extract::Path<(String, String, String)>,
) -> Response {
    match state.node.task_output(&id, &task, &path).await {
        Ok(Some(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("mission {id} has no output {path:?} of task {task:?} (yet)"),
        ),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}
