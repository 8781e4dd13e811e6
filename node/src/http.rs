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
    Router::new()
        .route("/", get(index))
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

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "no such endpoint"})),
    )
        .into_response()
}
