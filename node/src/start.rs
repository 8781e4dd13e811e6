//! Starting a production node: config, data dir, RocksDB, HTTP, libp2p,
//! Raft, then the runtime, until SIGTERM or SIGINT drains it.

use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::kv::{KvStore, RocksKv};
use coditect_consensus::{Capabilities, RaftTiming};
use coditect_gossip::{
    Libp2pNetwork, Network, NetworkConfig, NetworkMetrics, ADVERT_TOPIC, LEADER_TOPIC,
};
use futures::FutureExt;
use prometheus::Registry;

use crate::config::{host_name, memory_mb, NodeConfig, RawNodeConfig};
use crate::datadir::{sticky_listen, DataDir, DataDirError, MeshRecord, NodeJson};
use crate::env::{Env, TokioEnv};
use crate::http::{router, ApiState};
use crate::metrics::NodeMetrics;
use crate::runtime::assembly::{open_raft, NodeSettings, Wiring};
use crate::runtime::{AdmissionSettings, Node};

/// The largest blob (module, input or output) a node stores: 256 MiB.
pub const MAX_BLOB_BYTES: u64 = 256 * 1024 * 1024;
/// How long a node whose Raft core died keeps answering (503, with the
/// reason) before it exits, so monitoring can scrape why.
const FATAL_GRACE: Duration = Duration::from_secs(3);
/// How often the node checks whether its Raft core died.
const FATAL_CHECK_EVERY: Duration = Duration::from_millis(250);

/// How a node comes into its mesh at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshStart {
    /// Never told to join one and no Raft state: found a new single-voter mesh.
    NewMesh,
    /// Raft state on disk: resume in the mesh it records.
    Resume,
    /// Join through the `--bootstrap` addresses given now.
    Join,
    /// No `--bootstrap` now, but this data dir was told to join (or took
    /// part in) a mesh before: dial what it knows, never found another.
    Rejoin,
}

/// Decides how a node comes into its mesh, from what it was given and what
/// its data dir holds. Only a data dir that was never told to join a mesh,
/// never took part in one and holds no Raft state founds a new mesh.
pub fn mesh_start(
    bootstrap_given: bool,
    raft_initialized: bool,
    recorded: Option<&MeshRecord>,
    remembered_peers: usize,
) -> MeshStart {
    if raft_initialized {
        MeshStart::Resume
    } else if bootstrap_given {
        MeshStart::Join
    } else if recorded.is_some() || remembered_peers > 0 {
        MeshStart::Rejoin
    } else {
        MeshStart::NewMesh
    }
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad usage or input: a flag, the config file, the data dir, a port in use.
    #[error("{0}")]
    BadInput(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<DataDirError> for NodeError {
    fn from(error: DataDirError) -> Self {
        NodeError::BadInput(error.to_string())
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Validates `raw` into a configuration.
pub fn load_config(raw: RawNodeConfig) -> Result<NodeConfig, NodeError> {
    raw.merge_file()
        .and_then(|raw| raw.validate(&host_name(), cores()))
        .map_err(|error| NodeError::BadInput(error.to_string()))
}

/// Runs `coditect node` until a signal; returns after a clean drain.
pub async fn run_node(config: NodeConfig) -> Result<(), NodeError> {
    let data = DataDir::open(&config.data_dir)?;
    let peer_id = data.identity.peer_name();
    // Every line this node logs carries its id, so logs of many nodes split apart.
    let span = tracing::info_span!("node", node = %&peer_id[peer_id.len().saturating_sub(6)..]);
    tracing::Instrument::instrument(run_opened(config, data), span).await
}

async fn run_opened(config: NodeConfig, data: DataDir) -> Result<(), NodeError> {
    let node_id = data.node_id;
    let peer_id = data.identity.peer_name();

    let kv: Arc<dyn KvStore> = Arc::new(RocksKv::open(&data.raft_dir()).map_err(|error| {
        NodeError::BadInput(format!(
            "data dir {}: {error}; refusing to start (nothing was changed)",
            data.root().display()
        ))
    })?);
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|error| {
            NodeError::BadInput(format!(
                "cannot listen on HTTP address {}: {error}",
                config.http
            ))
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|error| NodeError::Failed(error.to_string()))?;
    let tls = match &config.tls {
        None => None,
        Some(source) => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            if !config.http.ip().is_unspecified() {
                names.push(config.http.ip().to_string());
            }
            let host = crate::config::host_name();
            names.extend(
                config
                    .http_hosts
                    .iter()
                    .chain(std::iter::once(&host))
                    .filter(|name| {
                        *name != "*"
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
                    })
                    .cloned(),
            );
            let mut seen = std::collections::BTreeSet::new();
            names.retain(|name| seen.insert(name.clone()));
            let server = crate::tls::server(source, data.root(), &names)
                .map_err(|error| NodeError::BadInput(format!("TLS: {error}")))?;
            tracing::info!(
                fingerprint = %server.fingerprint,
                "the HTTP API speaks TLS; clients pin this certificate with --tls-fingerprint {}",
                server.fingerprint
            );
            Some(server)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    let registry = Arc::new(Registry::new());
    let network_metrics =
        NetworkMetrics::register(&registry).map_err(|e| NodeError::Failed(e.to_string()))?;
    let node_metrics =
        NodeMetrics::register(&registry).map_err(|e| NodeError::Failed(e.to_string()))?;

    let network_config = |listen: Vec<String>| NetworkConfig {
        identity: data.identity.clone(),
        listen,
        external: config.external.clone(),
        topics: vec![ADVERT_TOPIC.to_string(), LEADER_TOPIC.to_string()],
        max_discovered_peers: 64,
        inbound: Default::default(),
        busy_answer: crate::messages::busy_answer,
    };
    // Prefer last run's ports so peers find a restarted node where they saw it.
    let sticky = sticky_listen(&config.listen, &data.last_listen());
    let started = if sticky != config.listen {
        match Libp2pNetwork::start(network_config(sticky), network_metrics.clone()) {
            Ok(started) => Ok(started),
            Err(error) => {
                tracing::info!(
                    "previous ports unavailable ({error}); listening on the configured ones"
                );
                Libp2pNetwork::start(network_config(config.listen.clone()), network_metrics)
            }
        }
    } else {
        Libp2pNetwork::start(network_config(config.listen.clone()), network_metrics)
    };
    let (network, events, driver) =
        started.map_err(|error| NodeError::BadInput(error.to_string()))?;
    let env = TokioEnv::new();
    env.spawn("network-driver", driver.boxed());
    let network: Arc<dyn Network> = Arc::new(network);

    let timing = RaftTiming {
        snapshot_logs: config.raft_snapshot_logs,
        ..RaftTiming::default()
    };
    let opened = open_raft(node_id, &timing, kv, &network, raft_context(&env))
        .await
        .map_err(|error| match error {
            coditect_consensus::StartError::Storage(message) => NodeError::BadInput(format!(
                "data dir {}: {message}; refusing to start (nothing was changed)",
                data.root().display()
            )),
            other => NodeError::Failed(other.to_string()),
        })?;
    let initialized = opened.initialized();

    // The sandbox every task runs in: one engine per node, modules compiled
    // once into the data dir's cache.
    let module_cache = config
        .module_cache
        .clone()
        .unwrap_or_else(|| data.root().join("module-cache"));
    let mut sandbox_config = coditect_sandbox::SandboxConfig::new(module_cache);
    sandbox_config.max_instances = config.slots.saturating_mul(2).saturating_add(4);
    let sandbox = coditect_sandbox::Sandbox::new(sandbox_config)
        .map_err(|error| NodeError::Failed(format!("cannot start the wasm sandbox: {error}")))?;
    let wasm_limits = wasm_limits(&sandbox.capability());
    let sandbox = Arc::new(sandbox);

    let blobs = coditect_memory::BlobStore::open(data.blob_dir(), MAX_BLOB_BYTES)
        .map_err(|error| NodeError::BadInput(error.to_string()))?;
    crate::builtin::seed(&blobs).map_err(NodeError::Failed)?;
    // The Python runtime: a file the user named must be the pinned one (or
    // the node refuses to start); one found at the default place is used
    // if it is, and otherwise this node fetches it from a peer.
    let python_file = match config.python_wasm.clone() {
        Some((path, explicit)) => {
            let checked = path.clone();
            match crate::env::off_runtime(env.as_ref(), move || crate::python::verify(&checked))
                .await
            {
                Ok(()) => Some(path),
                Err(problem) if explicit => {
                    return Err(NodeError::BadInput(format!("--python-wasm: {problem}")))
                }
                Err(problem) if path.exists() => {
                    tracing::warn!("{problem}; this node will fetch the runtime from a peer");
                    None
                }
                Err(_) => None,
            }
        }
        None => None,
    };
    // The language model, when the node has one: granted to the tasks that
    // require `llm`, and probed in the background (below).
    let llm = match &config.llm {
        Some(llm) => {
            let provider = crate::llm::OpenAiProvider::new(llm).map_err(NodeError::BadInput)?;
            let metrics = crate::llm::service::LlmMetrics::register(&registry)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            Some(Arc::new(crate::llm::service::LlmService::new(
                llm.clone(),
                Arc::new(provider),
                env.clone(),
                metrics,
            )))
        }
        None => None,
    };
    let mut runner =
        crate::worker::SandboxRunner::new(sandbox.clone(), blobs.clone(), data.root().join("work"));
    if let Some(llm) = &llm {
        runner = runner.with_llm(llm.clone());
    }
    let runner = Arc::new(runner);

    let remembered = data.remembered_peers();
    let bootstrap: Vec<String> = config
        .bootstrap
        .iter()
        .map(|(addr, _)| addr.clone())
        .collect();
    let mut record = data.mesh_record()?;
    let start = mesh_start(
        !bootstrap.is_empty(),
        initialized,
        record.as_ref(),
        remembered.len(),
    );
    // Recorded durably before the first join attempt (the runtime dials as
    // soon as it starts): a node killed right after joining must come back
    // knowing it belongs to that mesh, not found a second one.
    if !bootstrap.is_empty() {
        let mut updated = record.clone().unwrap_or_default();
        if updated.add_bootstrap(&bootstrap) || record.is_none() {
            data.record_mesh(&updated)?;
        }
        record = Some(updated);
    }
    let mut seeds = bootstrap.clone();
    for addr in record
        .iter()
        .flat_map(|record| &record.bootstrap)
        .chain(&remembered)
    {
        if !seeds.contains(addr) {
            seeds.push(addr.clone());
        }
    }
    let capabilities = Capabilities {
        cores: cores(),
        memory_mb: memory_mb(),
        slots: config.slots,
        version: env!("CARGO_PKG_VERSION").to_string(),
        wasm: true,
        wasm_limits: Some(wasm_limits),
        tags: config.tags.clone(),
    };
    let guard_new_mesh = !config.open
        && (start == MeshStart::NewMesh || record.as_ref().is_some_and(|r| r.founded && !r.open));
    let api_token_file = config.api_token_file.clone();
    let mut api_token = crate::datadir::read_secret(&api_token_file);
    if api_token.is_none() && guard_new_mesh {
        let token: String = (0..4)
            .map(|_| format!("{:016x}", env.random_u64()))
            .collect();
        crate::datadir::write_secret(&api_token_file, token.as_bytes())?;
        api_token = Some(token);
    }
    let node = opened.start(
        Wiring {
            env: env.clone(),
            network: network.clone(),
            events,
            seeds: seeds.clone(),
            blobs,
            metrics: node_metrics,
            runner,
        },
        NodeSettings {
            name: config.name.clone(),
            capabilities,
            target_voters: config.voters,
            voter_grace: config.voter_grace,
            heartbeat: config.heartbeat,
            lease: config.lease,
            queue_depth: config.queue_depth,
            steal: config.steal,
            retention: config.retention,
            agents: config.agents.clone(),
            admission: AdmissionSettings {
                join_token: config.join_token.clone(),
                guard_new_mesh,
                api_token,
                api_token_file: Some(api_token_file.clone()),
                open: config.open,
            },
        },
    );

    // Wait for the sockets to be bound so node.json holds real ports.
    for _ in 0..100 {
        if node.listen_addrs().len() >= config.listen.len() {
            break;
        }
        env.sleep(Duration::from_millis(20)).await;
    }
    if node.listen_addrs().is_empty() {
        return Err(NodeError::Failed(
            "the network reported no listen address".into(),
        ));
    }

    // In the background: the node serves its API and Raft meanwhile, and
    // advertises `python` once the runtime is compiled.
    env.spawn(
        "python-runtime",
        node.clone()
            .provide_python(python_file, sandbox.clone())
            .boxed(),
    );

    // In the background: the language model, offered while it answers.
    if let Some(llm) = &llm {
        env.spawn("llm-probe", node.clone().watch_llm(llm.clone()).boxed());
    }

    let new_mesh = start == MeshStart::NewMesh;
    match start {
        MeshStart::NewMesh => {
            node.initialize_mesh().await.map_err(NodeError::Failed)?;
            // After initializing: a crash before this line leaves Raft
            // state, which is enough to never found a second mesh.
            data.record_mesh(&MeshRecord {
                founded: true,
                open: config.open,
                ..MeshRecord::default()
            })?;
            if config.open {
                tracing::warn!(
                    "started a new mesh, OPEN (--open): any peer that can reach it joins and is served; for local development only"
                );
            } else {
                tracing::info!("started a new mesh; it admits only peers with a join token");
            }
        }
        MeshStart::Rejoin => tracing::info!(
            known_addresses = seeds.len(),
            "this data dir belongs to a mesh: rejoining it through the addresses it knows, not starting a new mesh"
        ),
        MeshStart::Resume | MeshStart::Join => {}
    }

    let listen: Vec<String> = node
        .listen_addrs()
        .iter()
        .map(|addr| format!("{addr}/p2p/{peer_id}"))
        .collect();
    data.remember_listen(&node.listen_addrs())?;
    data.write_node_json(&NodeJson {
        peer_id: peer_id.clone(),
        http: http_addr.to_string(),
        listen: listen.clone(),
        api_token_file: api_token_file.display().to_string(),
        tls_fingerprint: tls.as_ref().map(|tls| tls.fingerprint.clone()),
    })?;
    let shareable = listen
        .iter()
        .find(|addr| !addr.contains("/0.0.0.0/") && !addr.contains("/::/"))
        .unwrap_or(&listen[0]);
    if config.open && !new_mesh {
        tracing::info!("--open only matters when a node founds a mesh; the mesh decides admission");
    }
    if config.open && new_mesh {
        tracing::info!(node_id, http = %http_addr, "listening; others join with: coditect node --bootstrap {shareable}");
    } else {
        tracing::info!(
            node_id,
            http = %http_addr,
            "listening; others join with: coditect node --bootstrap {shareable} --join-token TOKEN (TOKEN from `coditect token create --api {scheme}://{http_addr} --api-token-file {}` on any member)",
            api_token_file.display()
        );
        tracing::info!(
            "the HTTP API needs the mesh's token, kept in {} once this node knows it (clients: --api-token-file FILE, or CODITECT_API_TOKEN)",
            api_token_file.display()
        );
    }
    if config.open && !config.http.ip().is_loopback() {
        tracing::warn!(
            http = %http_addr,
            "the HTTP API of an open mesh needs no token and listens beyond this machine"
        );
    }
    if !seeds.is_empty() && !new_mesh {
        tracing::info!("joining through {} known address(es)", seeds.len());
    }

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(ApiState {
        node: node.clone(),
        registry: registry.clone(),
        llm: llm.clone(),
        policy: Arc::new(crate::http_auth::HttpPolicy {
            hosts: config.http_hosts.clone(),
            public_metrics: config.public_metrics,
        }),
        limiter: config.http_rate_limit.map(|rate| {
            Arc::new(std::sync::Mutex::new(crate::rate::RateLimiter::new(
                rate,
                rate.saturating_mul(2),
                crate::http::RATE_LIMITED_CLIENTS,
            )))
        }),
    });
    let tls_config = tls.as_ref().map(|tls| tls.config.clone());
    let counting = node.clone();
    env.spawn(
        "http",
        async move {
            let app = app.into_make_service_with_connect_info::<crate::http_limits::ClientAddr>();
            let listener = crate::http_limits::GuardedListener::new(http_listener, tls_config)
                .on_refusal(move |reason| counting.count_http_refusal(reason));
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            });
            if let Err(error) = server.await {
                tracing::error!("HTTP server stopped: {error}");
            }
        }
        .boxed(),
    );

    let persist_node = node.clone();
    let persist_env = env.clone();
    let data = Arc::new(data);
    let persist_data = data.clone();
    let mut persist_record = data.mesh_record()?.unwrap_or_default();
    env.spawn(
        "remember-peers",
        async move {
            let mut last = Vec::new();
            loop {
                persist_env.sleep(Duration::from_secs(3)).await;
                let peers = persist_node.peers_to_remember();
                if !peers.is_empty() && peers != last {
                    if let Err(error) = persist_data.remember_peers(&peers) {
                        tracing::warn!("cannot remember peers: {error}");
                    }
                    last = peers;
                }
                // The leader and voters this node learned, written only
                // when they change.
                let status = persist_node.status();
                if let Some(leader) = status.leader {
                    let mut voters = status.voters;
                    voters.sort();
                    if persist_record.leader.as_ref() != Some(&leader)
                        || persist_record.voters != voters
                    {
                        persist_record.leader = Some(leader);
                        persist_record.voters = voters;
                        if let Err(error) = persist_data.record_mesh(&persist_record) {
                            tracing::warn!("cannot record the mesh: {error}");
                        }
                    }
                }
            }
        }
        .boxed(),
    );

    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        reason = raft_core_died(&node, env.as_ref()) => Some(reason),
    };
    if let Some(reason) = fatal {
        tracing::error!(
            grace_ms = FATAL_GRACE.as_millis() as u64,
            "{reason}; answering 503 for a moment, then exiting so a supervisor restarts this node"
        );
        env.sleep(FATAL_GRACE).await;
        let _ = stop_http.send(());
        return Err(NodeError::Failed(format!(
            "{reason}; exited so a supervisor can restart the node"
        )));
    }
    tracing::info!("draining: leaving the voter set and stopping");
    let drain = node.drain(config.drain_grace);
    tokio::select! {
        _ = drain => {}
        _ = wait_for_signal() => tracing::warn!("second signal: stopping without finishing the drain"),
    }
    let _ = stop_http.send(());
    drop(sandbox);
    drop(data);
    tracing::info!("stopped");
    Ok(())
}

/// The sandbox's offer as the registry records it.
pub fn wasm_limits(offer: &coditect_sandbox::WasmCapability) -> coditect_consensus::WasmLimits {
    coditect_consensus::WasmLimits {
        host_abi: offer.host_abi.clone(),
        wasi: offer.wasi.clone(),
        max_memory_mb: offer.max_memory_mb,
        max_module_bytes: offer.max_module_bytes,
        max_instances: offer.max_instances,
        default_fuel: offer.default_limits.fuel,
        default_memory_mb: offer.default_limits.memory_mb,
        default_timeout_ms: offer.default_limits.timeout_ms,
        default_output_mb: offer.default_limits.output_mb,
    }
}

/// Resolves with the reason once the node's Raft core has died.
async fn raft_core_died(node: &Node, env: &dyn Env) -> String {
    loop {
        if let Some(reason) = node.fatal() {
            return reason;
        }
        env.sleep(FATAL_CHECK_EVERY).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// The Raft context of a production node: OS-seeded, and snapshot builds and
/// installs on the blocking pool through the node's [`Env`].
pub fn raft_context(env: &Arc<TokioEnv>) -> coditect_consensus::runtime::RaftContext {
    let env = env.clone();
    coditect_consensus::runtime::RaftContext::from_entropy()
        .with_offload(Arc::new(move |job| env.run_blocking(job)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told_to_join() -> MeshRecord {
        MeshRecord {
            bootstrap: vec!["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/leader".into()],
            ..MeshRecord::default()
        }
    }

    #[test]
    fn only_a_data_dir_never_told_to_join_founds_a_mesh() {
        assert_eq!(mesh_start(false, false, None, 0), MeshStart::NewMesh);
    }

    #[test]
    fn a_node_killed_before_it_remembered_peers_rejoins_instead_of_founding() {
        // The reported bug: joined with --bootstrap, killed before peers.json
        // existed, restarted without --bootstrap.
        assert_eq!(
            mesh_start(false, false, Some(&told_to_join()), 0),
            MeshStart::Rejoin
        );
        assert_eq!(mesh_start(false, false, None, 3), MeshStart::Rejoin);
        let founder = MeshRecord {
            founded: true,
            ..MeshRecord::default()
        };
        assert_eq!(
            mesh_start(false, false, Some(&founder), 0),
            MeshStart::Rejoin
        );
    }

    #[test]
    fn raft_state_resumes_and_a_bootstrap_joins() {
        for recorded in [None, Some(told_to_join())] {
            for remembered in [0, 2] {
                for bootstrap in [false, true] {
                    assert_eq!(
                        mesh_start(bootstrap, true, recorded.as_ref(), remembered),
                        MeshStart::Resume
                    );
                }
                assert_eq!(
                    mesh_start(true, false, recorded.as_ref(), remembered),
                    MeshStart::Join
                );
            }
        }
    }
}
