//! The node's metrics, registered into a registry passed in (never the
//! global one: the simulation runs many nodes in one process).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of the node runtime.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Current Raft term.
    pub raft_term: IntGauge,
    /// 1 while this node leads.
    pub raft_is_leader: IntGauge,
    /// Last log index applied to the state machine.
    pub raft_commit_index: IntGauge,
    /// Voters in the current membership.
    pub raft_voters: IntGauge,
    /// Nodes this node knows of (registry, or adverts outside Raft).
    pub known_nodes: IntGauge,
    /// Leader changes seen.
    pub leader_changes: IntCounter,
    /// Membership changes the autopilot made while leading.
    pub autopilot_changes: IntCounter,
    /// Tasks this node stole from busy peers.
    pub steals: IntCounter,
    /// Tasks running on this node now.
    pub tasks_running: IntGauge,
    /// Runs on this node that met every expectation.
    pub tasks_succeeded: IntCounter,
    /// Runs on this node that ended in a violation.
    pub task_violations: IntCounter,
    /// Assignments this node committed while leading.
    pub tasks_placed: IntCounter,
    /// Outcomes (results and violations) this node committed while leading.
    pub results_committed: IntCounter,
    /// Requests and gossip refused by the sender check, by kind and reason.
    pub requests_refused: IntCounterVec,
    /// HTTP requests refused by the API guard, by reason.
    pub http_refused: IntCounterVec,
}

impl NodeMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = NodeMetrics {
            raft_term: IntGauge::new("coditect_raft_term", "Current Raft term")?,
            raft_is_leader: IntGauge::new(
                "coditect_raft_is_leader",
                "1 while this node is the Raft leader",
            )?,
            raft_commit_index: IntGauge::new(
                "coditect_raft_commit_index",
                "Last Raft log index applied on this node",
            )?,
            raft_voters: IntGauge::new("coditect_raft_voters", "Voters in the Raft membership")?,
            known_nodes: IntGauge::new("coditect_known_nodes", "Nodes this node knows of")?,
            leader_changes: IntCounter::new(
                "coditect_leader_changes_total",
                "Leader changes this node observed",
            )?,
            autopilot_changes: IntCounter::new(
                "coditect_autopilot_changes_total",
                "Membership changes made by this node's autopilot",
            )?,
            requests_refused: IntCounterVec::new(
                Opts::new(
                    "coditect_requests_refused_total",
                    "Requests and gossip messages refused by the sender check",
                ),
                &["kind", "reason"],
            )?,
            http_refused: IntCounterVec::new(
                Opts::new(
                    "coditect_http_refused_total",
                    "HTTP requests refused by the API guard (token, Host, Origin)",
                ),
                &["reason"],
            )?,
            steals: IntCounter::new(
                "coditect_steals_total",
                "Queued tasks this node stole from busy peers",
            )?,
            tasks_running: IntGauge::new("coditect_tasks_running", "Tasks running on this node")?,
            tasks_succeeded: IntCounter::new(
                "coditect_task_runs_succeeded_total",
                "Runs on this node that met every expectation",
            )?,
            task_violations: IntCounter::new(
                "coditect_task_violations_total",
                "Runs on this node that ended in a consistency violation",
            )?,
            tasks_placed: IntCounter::new(
                "coditect_tasks_placed_total",
                "Task assignments committed by this node while leading",
            )?,
            results_committed: IntCounter::new(
                "coditect_task_outcomes_committed_total",
                "Task outcomes committed by this node while leading",
            )?,
        };
        registry.register(Box::new(metrics.steals.clone()))?;
        registry.register(Box::new(metrics.requests_refused.clone()))?;
        registry.register(Box::new(metrics.http_refused.clone()))?;
        registry.register(Box::new(metrics.tasks_running.clone()))?;
        registry.register(Box::new(metrics.tasks_succeeded.clone()))?;
        registry.register(Box::new(metrics.task_violations.clone()))?;
        registry.register(Box::new(metrics.tasks_placed.clone()))?;
        registry.register(Box::new(metrics.results_committed.clone()))?;
        registry.register(Box::new(metrics.raft_term.clone()))?;
        registry.register(Box::new(metrics.raft_is_leader.clone()))?;
        registry.register(Box::new(metrics.raft_commit_index.clone()))?;
        registry.register(Box::new(metrics.raft_voters.clone()))?;
        registry.register(Box::new(metrics.known_nodes.clone()))?;
        registry.register(Box::new(metrics.leader_changes.clone()))?;
        registry.register(Box::new(metrics.autopilot_changes.clone()))?;
        Ok(metrics)
    }
}
