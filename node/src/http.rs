//! The HTTP API: health, readiness, metrics and status. Every handler answers
//! from the node's local view; none waits on consensus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::messages::MissionAction;
use crate::mission::MissionFormat;
use crate::runtime::{mission_json, Node, SubmitError};

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
}

/// The router of the HTTP API.
pub fn router(state: ApiState) -> Router {
    let max_blob = state.node.blobs().max_blob_bytes() as usize;
    Router::new()
        .route("/", get(index))
        .route(
            "/api/blobs",
            axum::routing::post(put_blob).layer(axum::extract::DefaultBodyLimit::max(max_blob)),
        )
        .route("/api/blobs/{digest}", get(get_blob))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route(
            "/api/missions",
            axum::routing::post(submit_mission)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_MISSION_BYTES)),
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
        .fallback(not_found)
        .with_state(state)
}

/// A status page that polls `/api/status` from the browser.
async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("web/index.html"),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> Response {
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

/// `POST /api/blobs`: stores the body under its sha256.
async fn put_blob(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    match state.node.blobs().put(&body) {
        Ok(digest) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"digest": digest.to_string()})),
        )
            .into_response(),
        Err(coditect_memory::BlobError::TooLarge { size, limit }) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("blob of {size} bytes exceeds the limit of {limit} bytes"),
        ),
        Err(other) => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
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
    }
}

/// `POST /api/missions`: a TOML mission, or markdown with `Content-Type: text/markdown`.
async fn submit_mission(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the mission file is not UTF-8");
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let format = MissionFormat::from_content_type(content_type);
    match state.node.submit_mission(text, format).await {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({"id": id}))).into_response(),
        Err(problem) => submit_error(problem),
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

fn version_of(json: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(json.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// `GET /api/missions/{id}`: the mission from this node's view. With
/// `after=VERSION&wait_ms=N` it answers as soon as the mission changed
/// (long poll: how `coditect submit --wait` streams progress).
async fn get_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<MissionQuery>,
) -> Response {
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let started = state.node.elapsed();
    loop {
        let mission = match state.node.mission(&id).await {
            Ok(Some(mission)) => mission,
            Ok(None) => return error(StatusCode::NOT_FOUND, format!("no mission {id}")),
            Err(problem) => return error(StatusCode::SERVICE_UNAVAILABLE, problem),
        };
        let mut json = mission_json(&mission, &state.node.peer_ids(), query.tasks != Some(false));
        let version = version_of(&json);
        let finished = mission.state != coditect_consensus::mission::MissionState::Running;
        let waited = state.node.elapsed().saturating_sub(started);
        if query.after.as_deref() != Some(version.as_str()) || finished || waited >= wait {
            json["version"] = serde_json::Value::String(version);
            return Json(json).into_response();
        }
        state.node.wait_for_change(wait - waited).await;
    }
}

async fn control(state: &ApiState, id: &str, action: MissionAction) -> Response {
    match state.node.control(id, action).await {
        Ok(()) => match state.node.mission(id).await {
            Ok(Some(mission)) => {
                Json(mission_json(&mission, &state.node.peer_ids(), true)).into_response()
            }
            _ => Json(serde_json::json!({"id": id})).into_response(),
        },
        Err(SubmitError::Invalid(message)) => error(StatusCode::CONFLICT, message),
        Err(problem) => submit_error(problem),
    }
}

/// `DELETE /api/missions/{id}`: cancel.
async fn cancel_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    control(&state, &id, MissionAction::Cancel).await
}

/// `POST /api/missions/{id}/retry`: re-run the failed and blocked tasks.
async fn retry_mission(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    control(&state, &id, MissionAction::Retry).await
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
