//! The HTTP API: health, readiness, metrics and status. Every handler answers
//! from the node's local view; none waits on consensus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::runtime::Node;

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

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}
