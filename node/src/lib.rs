//! The Coditect node: the `coditect` binary's library. It owns the node
//! runtime (Raft leader = orchestrator, every node a worker), the role logic
//! and autopilot, the HTTP API, the configuration and the data dir, and it
//! wires the seams together: [`env::Env`] (time, spawning, randomness), the
//! network seam of `coditect-gossip`, and the storage seam of
//! `coditect-consensus`.
//!
//! It depends on `coditect-memory`, `coditect-gossip` and
//! `coditect-consensus`; nothing in production depends on it except the
//! binary, and it never depends on `coditect-simulation`.

pub mod admission;
pub mod builtin;
pub mod config;
pub mod datadir;
pub mod env;
pub mod http;
pub mod http_auth;
pub mod http_limits;
pub mod liveness;
pub mod llm;
pub mod messages;
pub mod metrics;
pub mod mission;
pub mod places;
pub mod plan;
pub mod plan_model;
pub mod propose;
pub mod python;
pub mod rate;
pub mod roles;
pub mod runtime;
pub mod scheduler;
pub mod start;
pub mod tls;
pub mod worker;
pub mod workspace;

/// An error's text followed by each cause that adds something (`a: b: c`),
/// as reqwest and rustls nest them.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
