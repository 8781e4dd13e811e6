//! `coditect bench`: measurements recorded in BENCHMARKS.md.
//!
//! `raft` runs three real nodes in this process (real libp2p sockets on
//! loopback, real RocksDB in temporary directories, the real node runtime)
//! and measures commits per second, one at a time and with many in flight.
//! The multi-process measurements (election, failover, RSS) live in the
//! `coditect-tests` crate's `mesh_bench` example, next to the process harness.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use coditect_consensus::kv::{KvStore, RocksKv};
use coditect_consensus::{Capabilities, Command, RaftTiming};
use coditect_gossip::{
    Identity, Libp2pNetwork, Network, NetworkConfig, NetworkMetrics, ADVERT_TOPIC, LEADER_TOPIC,
};
use coditect_node::datadir::node_id_for;
use coditect_node::env::{Env, TokioEnv};
use coditect_node::metrics::NodeMetrics;
use coditect_node::runtime::assembly::{open_raft, NodeSettings, Wiring};
use coditect_node::runtime::Node;
use coditect_node::start::NodeError;
use futures::FutureExt;

/// What to measure.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Raft commit throughput through RocksDB on loopback nodes in this process
    Raft {
        /// Voters
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Commits in the one-at-a-time run
        #[arg(long, default_value_t = 2_000)]
        single: usize,
        /// Commits in the batched run
        #[arg(long, default_value_t = 50_000)]
        batched: usize,
        /// Writes in flight in the batched run
        #[arg(long, default_value_t = 512)]
        in_flight: usize,
    },
}

/// Runs a benchmark and prints its results.
pub async fn run(command: BenchCommand) -> Result<(), NodeError> {
    match command {
        BenchCommand::Raft {
            nodes,
            single,
            batched,
            in_flight,
        } => raft_throughput(nodes, single, batched, in_flight).await,
    }
}

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time on purpose
fn wall_now() -> std::time::Instant {
    std::time::Instant::now() // a benchmark reads the wall clock, not the Env seam
}

async fn start_bench_node(
    env: Arc<TokioEnv>,
    dir: &std::path::Path,
    seeds: Vec<String>,
) -> Result<Node, NodeError> {
    let failed = |e: String| NodeError::Failed(e);
    let identity = Identity::generate();
    let node_id = node_id_for(&identity.peer_name());
    let registry = prometheus::Registry::new();
    let (network, events, driver) = Libp2pNetwork::start(
        NetworkConfig {
            identity,
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            external: vec![],
            topics: vec![ADVERT_TOPIC.into(), LEADER_TOPIC.into()],
            max_discovered_peers: 16,
            inbound: Default::default(),
            busy_answer: coditect_node::messages::busy_answer,
        },
        NetworkMetrics::register(&registry).map_err(|e| failed(e.to_string()))?,
    )
    .map_err(|e| failed(e.to_string()))?;
    env.spawn("network-driver", driver.boxed());
    let network: Arc<dyn Network> = Arc::new(network);
    let kv: Arc<dyn KvStore> = Arc::new(RocksKv::open(dir).map_err(|e| failed(e.to_string()))?);
    let timing = RaftTiming::default();
    let blobs = coditect_memory::BlobStore::open(dir.join("blobs"), 1 << 20)
        .map_err(|e| failed(e.to_string()))?;
    let opened = open_raft(
        node_id,
        &timing,
        kv,
        &network,
        coditect_node::start::raft_context(&env),
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    let node = opened.start(
        Wiring {
            env: env.clone(),
            network,
            events,
            seeds,
            blobs,
            metrics: NodeMetrics::register(&registry).map_err(|e| failed(e.to_string()))?,
            runner: Arc::new(coditect_node::worker::NoRunner),
        },
        NodeSettings {
            name: format!("bench-{node_id}"),
            // Raft only: these nodes run no tasks.
            capabilities: Capabilities::default(),
            target_voters: 3,
            voter_grace: Duration::from_secs(10),
            heartbeat: Duration::from_millis(200),
            lease: Duration::from_secs(3),
            queue_depth: None,
            steal: false,
            retention: Default::default(),
            agents: Default::default(),
            admission: Default::default(),
        },
    );
    for _ in 0..200 {
        if !node.listen_addrs().is_empty() {
            break;
        }
        env.sleep(Duration::from_millis(10)).await;
    }
    Ok(node)
}

async fn raft_throughput(
    nodes: usize,
    single: usize,
    batched: usize,
    in_flight: usize,
) -> Result<(), NodeError> {
    let env = TokioEnv::new();
    let dirs: Vec<tempfile::TempDir> = (0..nodes)
        .map(|_| tempfile::tempdir().map_err(|e| NodeError::Failed(e.to_string())))
        .collect::<Result<_, _>>()?;
    let first = start_bench_node(env.clone(), dirs[0].path(), vec![]).await?;
    first.initialize_mesh().await.map_err(NodeError::Failed)?;
    let seed = format!("{}/p2p/{}", first.listen_addrs()[0], first.status().peer_id);
    let mut all = vec![first.clone()];
    for dir in &dirs[1..] {
        all.push(start_bench_node(env.clone(), dir.path(), vec![seed.clone()]).await?);
    }
    eprintln!("waiting for {nodes} voters...");
    let started = wall_now();
    loop {
        let voters: BTreeSet<_> = first
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.len() >= nodes.min(3) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(NodeError::Failed(
                "the voters did not form within 60 s".into(),
            ));
        }
        env.sleep(Duration::from_millis(50)).await;
    }
    let t = wall_now();
    for _ in 0..single {
        first
            .write(Command::Noop)
            .await
            .map_err(|e| NodeError::Failed(e.to_string()))?;
    }
    let single_secs = t.elapsed().as_secs_f64();

    let t = wall_now();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut issued = 0usize;
    let mut done = 0usize;
    use futures::StreamExt;
    while done < batched {
        while issued < batched && pending.len() < in_flight {
            let node = first.clone();
            pending.push(async move { node.write(Command::Noop).await });
            issued += 1;
        }
        if let Some(result) = pending.next().await {
            result.map_err(|e| NodeError::Failed(e.to_string()))?;
            done += 1;
        }
    }
    let batched_secs = t.elapsed().as_secs_f64();
    println!(
        "raft commits through RocksDB, {nodes} loopback voters (fsync per append, group commit):\n  one at a time: {single} commits in {single_secs:.2} s = {:.0} commits/s ({:.2} ms each)\n  {in_flight} in flight: {batched} commits in {batched_secs:.2} s = {:.0} commits/s",
        single as f64 / single_secs,
        single_secs * 1000.0 / single as f64,
        batched as f64 / batched_secs,
    );
    for node in &all {
        node.stop().await;
    }
    Ok(())
}
