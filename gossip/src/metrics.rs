//! Metrics of the network layer, registered into a registry the node passes in.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The network's metrics.
#[derive(Clone)]
pub struct NetworkMetrics {
    /// Peers with at least one open connection.
    pub connected_peers: IntGauge,
    /// Duration of outbound requests that got an answer, seconds.
    pub rpc_latency: Histogram,
    /// Outbound requests by outcome (`ok`, `timeout`, `unreachable`).
    pub rpc_requests: IntCounterVec,
    /// Gossip messages rejected because their source or forwarder is not admitted.
    pub gossip_rejected: IntCounter,
    /// Gossip messages not delivered because the node was behind.
    pub gossip_shed: IntCounter,
    /// Inbound requests answered busy, by reason (`rate_limited`,
    /// `in_flight`, `strangers_full`, `queue_full`).
    pub rpc_refused: IntCounterVec,
}

impl NetworkMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = NetworkMetrics {
            connected_peers: IntGauge::new(
                "coditect_connected_peers",
                "Peers with at least one open libp2p connection",
            )?,
            rpc_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "coditect_rpc_latency_seconds",
                    "Round trip of node-to-node requests that got an answer",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            )?,
            rpc_requests: IntCounterVec::new(
                Opts::new(
                    "coditect_rpc_requests_total",
                    "Node-to-node requests by outcome",
                ),
                &["outcome"],
            )?,
            gossip_rejected: IntCounter::new(
                "coditect_gossip_rejected_total",
                "Gossip messages rejected: their source or forwarder is not admitted",
            )?,
            gossip_shed: IntCounter::new(
                "coditect_gossip_shed_total",
                "Gossip messages not delivered because the node's event queue was nearly full",
            )?,
            rpc_refused: IntCounterVec::new(
                Opts::new(
                    "coditect_rpc_refused_total",
                    "Inbound node-to-node requests answered busy (per-peer rate, in flight, strangers' total, full queue)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(metrics.connected_peers.clone()))?;
        registry.register(Box::new(metrics.rpc_latency.clone()))?;
        registry.register(Box::new(metrics.rpc_requests.clone()))?;
        registry.register(Box::new(metrics.gossip_rejected.clone()))?;
        registry.register(Box::new(metrics.gossip_shed.clone()))?;
        registry.register(Box::new(metrics.rpc_refused.clone()))?;
        Ok(metrics)
    }
}
