//! The production [`Network`]: a libp2p swarm driven by one task.
//!
//! This file is the production side of the network seam, so it uses tokio's
//! clock directly; the simulation replaces the whole seam and never runs it.
#![allow(clippy::disallowed_methods)] // production network seam: tokio time is fine here

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::channel::{CallError, Channels};
use crate::inbound::{Admitted, Inbound, InboundPolicy};
use crate::wire::{WireCodec, WireRequest, CHANNEL_PROTOCOL, RPC_PROTOCOL};
use crate::{Identity, Network, NetworkEvent, NetworkMetrics, PeerName, RequestError};

const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/coditect/kad/1");
const IDENTIFY_PROTOCOL: &str = "/coditect/id/1";
/// Events waiting for the node at most. Past it a request is answered
/// busy at once (the caller retries); gossip is shed earlier, once fewer
/// than [`GOSSIP_HEADROOM`] places are left, so requests (Raft's among
/// them) keep the room.
const EVENT_QUEUE: usize = 16_384;
/// Free places in the event queue below which gossip is shed (adverts are
/// periodic: the next one replaces a lost one).
const GOSSIP_HEADROOM: usize = EVENT_QUEUE / 4;

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so a connection over the limits is denied before the others
    /// set anything up for it.
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    rpc: request_response::Behaviour<WireCodec>,
    /// Long-lived call channels ([`CHANNEL_PROTOCOL`]).
    channels: libp2p_stream::Behaviour,
}

/// Connections a node accepts: at most [`MAX_PENDING_INCOMING`] handshakes
/// under way, [`MAX_ESTABLISHED`] connections in all and
/// [`MAX_PER_PEER`] to one peer (QUIC and TCP, and a simultaneous dial,
/// fit), so a flood of dials costs a refused handshake each, not memory.
fn connection_limits() -> libp2p::connection_limits::ConnectionLimits {
    libp2p::connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established(Some(MAX_ESTABLISHED))
        .with_max_established_per_peer(Some(MAX_PER_PEER))
}

/// Gossipsub peer scoring for our topics. What counts is P4, invalid
/// messages: a peer that keeps sending or relaying messages validation
/// rejects (a stranger's adverts) drops below the gossip threshold after a
/// handful, and a flood puts it under the graylist, where its gossip is not
/// even processed; the counter decays to nothing within about 10 s, so a
/// relay that forwarded a just-revoked peer's advert, or a joiner whose
/// adverts were refused until it was admitted, recovers at once.
///
/// Off on purpose: the IP colocation penalty (P6: a mesh on one host, or
/// behind one NAT, is normal here; admission is what stops Sybils) and the
/// mesh delivery penalties (P3, P3b: adverts are sparse, so an honest quiet
/// peer would look like a withholding one). Time in mesh and first
/// deliveries (P1, P2) earn a little, capped, so long standing cannot buy a
/// flood.
pub fn peer_scoring(
    topics: &[String],
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let decay = gossipsub::score_parameter_decay(Duration::from_secs(10));
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 600.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(60)),
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -1.0,
        invalid_message_deliveries_decay: decay,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: topics
            .iter()
            .map(|name| (IdentTopic::new(name.clone()).hash(), topic.clone()))
            .collect(),
        topic_score_cap: 20.0,
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Largest gossip message sent or accepted, bytes: an advert (capabilities
/// and at most 32 queued task ids) or a leader advert is a few KiB.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;

/// Incoming connection handshakes under way at once, at most.
pub const MAX_PENDING_INCOMING: u32 = 256;
/// Established connections, at most (a mesh of 1,000 nodes stays well under:
/// each node keeps a few dozen).
pub const MAX_ESTABLISHED: u32 = 2_048;
/// Established connections to one peer, at most.
pub const MAX_PER_PEER: u32 = 8;

/// How to start the network.
#[derive(Clone)]
pub struct NetworkConfig {
    /// Who we are.
    pub identity: Identity,
    /// Addresses to listen on (multiaddr text).
    pub listen: Vec<String>,
    /// Addresses to advertise besides the ones we listen on (NAT, containers).
    pub external: Vec<String>,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Peers found through discovery we dial on our own, at most.
    pub max_discovered_peers: usize,
    /// What one peer may make this node do (requests per second, in flight).
    pub inbound: InboundPolicy,
    /// The answer to a request refused for load, given the refusal's label
    /// (`rate_limited`, `in_flight`, `strangers_full`, `queue_full`): the
    /// node encodes it in its own protocol, so the caller reads a reason.
    pub busy_answer: fn(&str) -> Vec<u8>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkStartError {
    /// A listen address could not be bound (in use, not local, unsupported).
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// An address is not a valid multiaddr.
    #[error("{0}")]
    BadAddress(String),
    /// The transport or a behaviour could not be built.
    #[error("cannot build the libp2p swarm: {0}")]
    Build(String),
}

enum Command {
    Publish(String, Vec<u8>),
    Request {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: WireRequest,
        reply: oneshot::Sender<Result<Vec<u8>, RequestError>>,
    },
    Dial(Multiaddr),
    /// Addresses of a peer a call channel is about to be opened to; the
    /// sender is told once the swarm knows them.
    Addresses(PeerId, Vec<Multiaddr>, oneshot::Sender<()>),
    /// A request to this peer got no answer in time.
    TimedOut(PeerId),
    /// Whom to hear from (see [`Network::admit_only`]).
    AdmitOnly {
        allowed: Option<HashSet<PeerId>>,
        banned: HashSet<PeerId>,
    },
}

/// Handle to the libp2p network; cheap to clone.
#[derive(Clone)]
pub struct Libp2pNetwork {
    local: PeerName,
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<Mutex<BTreeSet<PeerName>>>,
    channels: Arc<Channels>,
    /// Inbound call channels open per peer (shared with the driver).
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests
    inbound_channels: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Libp2pNetwork {
    /// Inbound call channels `peer` holds open to us.
    #[cfg(test)]
    fn channels_from(&self, peer: &PeerId) -> usize {
        let open = self.inbound_channels.lock().expect("channel count lock");
        open.get(peer).copied().unwrap_or(0)
    }
}

impl Libp2pNetwork {
    /// Builds the swarm and binds every listen address. Returns the handle,
    /// the event stream, and the driver future the caller must spawn.
    pub fn start(
        config: NetworkConfig,
        metrics: NetworkMetrics,
    ) -> Result<
        (
            Self,
            mpsc::Receiver<NetworkEvent>,
            impl Future<Output = ()> + Send + 'static,
        ),
        NetworkStartError,
    > {
        let keypair = config.identity.keypair().clone();
        let local_peer_id = keypair.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetworkStartError::Build(e.to_string()))?
            // A killed peer sends no close; notice within seconds, not quinn's default 10 s.
            .with_quic_config(|mut quic| {
                quic.max_idle_timeout = 3_000;
                quic.keep_alive_interval = Duration::from_millis(1_000);
                quic
            })
            .with_behaviour(|key| {
                let identify = identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_push_listen_addr_updates(true),
                );
                let mut kad_config = kad::Config::new(KAD_PROTOCOL);
                kad_config.set_query_timeout(Duration::from_secs(10));
                let kad = kad::Behaviour::with_config(
                    local_peer_id,
                    MemoryStore::new(local_peer_id),
                    kad_config,
                );
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    .validation_mode(ValidationMode::Strict)
                    // The node decides whose messages count (admission):
                    // each is validated before it is delivered or forwarded.
                    .validate_messages()
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut gossipsub = gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                let (params, thresholds) = peer_scoring(&config.topics);
                gossipsub.with_peer_score(params, thresholds)?;
                let rpc = request_response::Behaviour::with_codec(
                    WireCodec,
                    [(RPC_PROTOCOL, ProtocolSupport::Full)],
                    // One timeout for the whole behaviour; each caller also
                    // enforces its own, shorter deadline.
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60))
                        .with_max_concurrent_streams(4_096),
                );
                Ok(Behaviour {
                    limits: libp2p::connection_limits::Behaviour::new(connection_limits()),
                    identify,
                    kad,
                    gossipsub,
                    rpc,
                    channels: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| NetworkStartError::Build(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(300))
                    // A stream that offers one protocol sends its first
                    // bytes with the negotiation instead of after the
                    // listener's echo: every request saves a round trip.
                    // Same wire protocol as V1, so any libp2p listener
                    // understands it; a refused protocol surfaces as the
                    // stream's first read failing.
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();

        // Loopback and private networks never confirm an external address, so
        // Kademlia would stay a client and answer nobody; we serve on purpose.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        for topic in &config.topics {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(topic.clone()))
                .map_err(|e| NetworkStartError::Build(e.to_string()))?;
        }
        let listen = config
            .listen
            .iter()
            .map(|text| parse_multiaddr(text).map_err(NetworkStartError::BadAddress))
            .collect::<Result<Vec<_>, _>>()?;
        let external = config
            .external
            .iter()
            .map(|text| parse_multiaddr(text).map_err(NetworkStartError::BadAddress))
            .collect::<Result<Vec<_>, _>>()?;
        for addr in &listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkStartError::Listen {
                    addr: addr.to_string(),
                    message: listen_error_text(&e),
                })?;
        }
        for addr in external {
            swarm.add_external_address(addr);
        }

        let mut control = swarm.behaviour().channels.new_control();
        let incoming = control
            .accept(CHANNEL_PROTOCOL)
            .map_err(|e| NetworkStartError::Build(e.to_string()))?;
        let channels = Channels::new(control, metrics.clone());
        let (channel_requests_tx, channel_requests) = mpsc::channel(CHANNEL_QUEUE);
        let inbound_channels = Arc::new(Mutex::new(HashMap::new()));
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let connected = Arc::new(Mutex::new(BTreeSet::new()));
        let driver = Driver {
            swarm,
            commands: command_rx,
            events: event_tx,
            pending: HashMap::new(),
            replies: FuturesUnordered::new(),
            connected: connected.clone(),
            metrics,
            max_discovered_peers: config.max_discovered_peers,
            silent_requests: HashMap::new(),
            connections: HashMap::new(),
            allowed: None,
            banned: HashSet::new(),
            inbound: Inbound::new(config.inbound),
            started: Instant::now(), // production network seam
            busy_answer: config.busy_answer,
            incoming,
            channel_requests,
            channel_requests_tx,
            channel_streams: inbound_channels.clone(),
        };
        let handle = Libp2pNetwork {
            local: local_peer_id.to_base58(),
            commands: command_tx,
            connected,
            channels,
            inbound_channels,
        };
        Ok((handle, event_rx, driver.run()))
    }
}

/// What a request or a call sends: the peer (or why its id is not one),
/// the addresses that parse, and the request with its budget.
fn outbound(
    peer: &str,
    addrs: &[String],
    data: Vec<u8>,
    deadline: Duration,
) -> (Result<PeerId, RequestError>, Vec<Multiaddr>, WireRequest) {
    let parsed = peer
        .parse::<PeerId>()
        .map_err(|e| RequestError::Invalid(format!("peer id {peer}: {e}")));
    let addrs = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let request = WireRequest {
        budget_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
        payload: data,
    };
    (parsed, addrs, request)
}

/// One request over request-response: a substream of its own.
async fn request_response_call(
    commands: mpsc::UnboundedSender<Command>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    request: WireRequest,
    deadline: Duration,
) -> Result<Vec<u8>, RequestError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::Request {
            peer,
            addrs,
            request,
            reply,
        })
        .map_err(|_| RequestError::Closed)?;
    match tokio::time::timeout(deadline, answer).await {
        Err(_) => {
            let _ = commands.send(Command::TimedOut(peer));
            Err(RequestError::Timeout {
                peer: peer.to_base58(),
                deadline,
            })
        }
        Ok(Err(_)) => Err(RequestError::Closed),
        Ok(Ok(result)) => result,
    }
}

/// Parses a multiaddr, with an error that names the text.
pub fn parse_multiaddr(text: &str) -> Result<Multiaddr, String> {
    text.parse::<Multiaddr>()
        .map_err(|error| format!("invalid multiaddr {text:?}: {error}"))
}

/// Splits a bootstrap address into the address to dial and the peer id its
/// `/p2p/` suffix names; an address without that suffix is an error.
pub fn parse_bootstrap_addr(text: &str) -> Result<(String, PeerName), String> {
    let addr = parse_multiaddr(text)?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((text.to_string(), peer.to_base58())),
        _ => Err(format!(
            "bootstrap address {text:?} has no /p2p/<peer id> suffix (copy it from the node's log line or node.json)"
        )),
    }
}

/// Checks that `text` is an address this node can listen on (TCP or QUIC over IP).
pub fn check_listen_addr(text: &str) -> Result<(), String> {
    let addr = parse_multiaddr(text)?;
    let mut protocols = addr.iter();
    let ip = protocols.next();
    let transport = protocols.next();
    let ok = matches!(ip, Some(Protocol::Ip4(_)) | Some(Protocol::Ip6(_)))
        && match transport {
            Some(Protocol::Tcp(_)) => protocols.next().is_none(),
            Some(Protocol::Udp(_)) => {
                matches!(protocols.next(), Some(Protocol::QuicV1)) && protocols.next().is_none()
            }
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "listen address {text:?} is not /ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1"
        ))
    }
}

fn listen_error_text(error: &libp2p::TransportError<std::io::Error>) -> String {
    match error {
        libp2p::TransportError::MultiaddrNotSupported(addr) => {
            format!(
                "address {addr} is not supported (use /ip4/../tcp/.. or /ip4/../udp/../quic-v1)"
            )
        }
        libp2p::TransportError::Other(error) => error.to_string(),
    }
}

impl Network for Libp2pNetwork {
    fn local_peer(&self) -> PeerName {
        self.local.clone()
    }

    fn publish(&self, topic: &str, data: Vec<u8>) {
        let _ = self
            .commands
            .send(Command::Publish(topic.to_string(), data));
    }

    fn request(
        &self,
        peer: &str,
        addrs: &[String],
        data: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RequestError>> {
        let (parsed, addrs, request) = outbound(peer, addrs, data, deadline);
        let commands = self.commands.clone();
        async move { request_response_call(commands, parsed?, addrs, request, deadline).await }
            .boxed()
    }

    fn call(
        &self,
        peer: &str,
        addrs: &[String],
        data: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RequestError>> {
        let peer_name = peer.to_string();
        let (parsed, addrs, request) = outbound(peer, addrs, data, deadline);
        let commands = self.commands.clone();
        let channels = self.channels.clone();
        async move {
            let peer = parsed?;
            if !channels.is_open(&peer) {
                // Opening may dial: the swarm needs the addresses first.
                let (known, learned) = oneshot::channel();
                commands
                    .send(Command::Addresses(peer, addrs.clone(), known))
                    .map_err(|_| RequestError::Closed)?;
                learned.await.map_err(|_| RequestError::Closed)?;
            }
            match channels.call(peer, request, deadline).await {
                Ok(answer) => Ok(answer),
                Err(CallError::Unsupported(request)) => {
                    request_response_call(commands, peer, addrs, request, deadline).await
                }
                Err(CallError::TimedOut) => {
                    let _ = commands.send(Command::TimedOut(peer));
                    Err(RequestError::Timeout {
                        peer: peer_name,
                        deadline,
                    })
                }
                Err(CallError::Unreachable(message)) => Err(RequestError::Unreachable {
                    peer: peer_name,
                    message,
                }),
                Err(CallError::Invalid(message)) => Err(RequestError::Invalid(message)),
            }
        }
        .boxed()
    }

    fn dial(&self, addr: &str) -> Result<(), RequestError> {
        let addr: Multiaddr = addr
            .parse()
            .map_err(|e| RequestError::Invalid(format!("{addr}: {e}")))?;
        self.commands
            .send(Command::Dial(addr))
            .map_err(|_| RequestError::Closed)
    }

    fn admit_only(&self, allowed: Option<BTreeSet<PeerName>>, banned: BTreeSet<PeerName>) {
        let parse = |names: BTreeSet<PeerName>| -> HashSet<PeerId> {
            names.iter().filter_map(|name| name.parse().ok()).collect()
        };
        let _ = self.commands.send(Command::AdmitOnly {
            allowed: allowed.map(parse),
            banned: parse(banned),
        });
    }

    fn connected_peers(&self) -> Vec<PeerName> {
        self.connected
            .lock()
            .expect("connected set lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// An outbound request waiting for its answer: who to tell, since when, whom we asked.
type PendingRequest = (
    oneshot::Sender<Result<Vec<u8>, RequestError>>,
    Instant,
    PeerId,
);

/// An inbound request the node is serving: where the answer goes, the
/// answer (none if the node dropped it), who asked, and its place in
/// [`Inbound`].
type PendingReply = BoxFuture<'static, (ReplyTo, Option<Vec<u8>>, PeerId, Admitted)>;

/// Where the answer to an inbound request goes.
enum ReplyTo {
    /// Its request-response substream.
    Substream(ResponseChannel<Vec<u8>>),
    /// The call channel it came on, tagged with its id.
    Channel { id: u64, writer: ChannelWriter },
}

/// The writing side of an inbound call channel, shared by its answers.
type ChannelWriter = Arc<tokio::sync::Mutex<futures::io::WriteHalf<libp2p::Stream>>>;

/// An inbound call read off a channel, for the driver to admit and deliver.
struct ChannelRequest {
    peer: PeerId,
    id: u64,
    request: WireRequest,
    writer: ChannelWriter,
}

/// Inbound calls read off channels and not yet taken by the driver, at
/// most; past it the channels' readers wait (the peers' writes back up).
const CHANNEL_QUEUE: usize = 256;
/// Inbound call channels one peer may hold open at once.
const MAX_CHANNELS_PER_PEER: usize = 4;

struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    pending: HashMap<OutboundRequestId, PendingRequest>,
    replies: FuturesUnordered<PendingReply>,
    connected: Arc<Mutex<BTreeSet<PeerName>>>,
    metrics: NetworkMetrics,
    max_discovered_peers: usize,
    /// Requests in a row that got no answer, per peer.
    silent_requests: HashMap<PeerId, u32>,
    /// Open connections per peer, oldest first.
    connections: HashMap<PeerId, Vec<libp2p::swarm::ConnectionId>>,
    /// Peers whose gossip is delivered (`None`: everyone's).
    allowed: Option<HashSet<PeerId>>,
    /// Peers disconnected on sight.
    banned: HashSet<PeerId>,
    /// Inbound requests per peer.
    inbound: Inbound<PeerId>,
    /// The clock of `inbound`.
    started: Instant,
    /// See [`NetworkConfig::busy_answer`].
    busy_answer: fn(&str) -> Vec<u8>,
    /// Call channels peers open to us.
    incoming: libp2p_stream::IncomingStreams,
    /// Calls read off them.
    channel_requests: mpsc::Receiver<ChannelRequest>,
    channel_requests_tx: mpsc::Sender<ChannelRequest>,
    /// Inbound call channels open per peer.
    channel_streams: Arc<Mutex<HashMap<PeerId, usize>>>,
}

/// After this many unanswered requests in a row, a peer's connections are
/// presumed half-open (the process died without closing them) and dropped,
/// so the next request dials afresh.
const SILENT_REQUESTS_BEFORE_REDIAL: u32 = 3;

impl Driver {
    async fn run(mut self) {
        let mut bootstrap_tick = tokio::time::interval(Duration::from_secs(5));
        bootstrap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((reply_to, answer, peer, admitted)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.inbound.finish(&peer, admitted);
                    match (reply_to, answer) {
                        // The caller may have given up already; nothing to do then.
                        (ReplyTo::Substream(channel), Some(answer)) => {
                            let _ = self.swarm.behaviour_mut().rpc.send_response(channel, answer);
                        }
                        // Dropping the substream tells the caller at once.
                        (ReplyTo::Substream(_), None) => {}
                        // A channel call must be answered, or its caller waits out its deadline.
                        (ReplyTo::Channel { id, writer }, answer) => {
                            let answer = answer.unwrap_or_else(|| (self.busy_answer)("dropped"));
                            answer_on_channel(id, writer, answer);
                        }
                    }
                }
                Some((peer, stream)) = self.incoming.next() => self.on_channel_opened(peer, stream),
                Some(call) = self.channel_requests.recv() => self.on_channel_request(call),
                _ = bootstrap_tick.tick() => {
                    if !self.connected.lock().expect("connected set lock").is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        tracing::debug!("network driver stopped");
    }

    fn emit(&self, event: NetworkEvent) {
        if let Err(error) = self.events.try_send(event) {
            tracing::warn!("network event dropped: {error}");
        }
    }

    /// Answers a request at once with the node's busy answer, counted and
    /// (now and then per peer) logged.
    fn refuse_request(&mut self, peer: PeerId, reply_to: ReplyTo, reason: &str) {
        self.metrics.rpc_refused.with_label_values(&[reason]).inc();
        if self.inbound.should_log(&peer, self.started.elapsed()) {
            tracing::warn!(
                "{peer}: request refused ({reason}); further refusals of this peer are logged at most every 10 s"
            );
        }
        let answer = (self.busy_answer)(reason);
        match reply_to {
            ReplyTo::Substream(channel) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, answer);
            }
            ReplyTo::Channel { id, writer } => answer_on_channel(id, writer, answer),
        }
    }

    /// A peer opened a call channel to us: its calls are read off it by a
    /// task of its own and admitted here, one by one, like requests.
    fn on_channel_opened(&mut self, peer: PeerId, stream: libp2p::Stream) {
        if self.banned.contains(&peer) {
            return;
        }
        {
            let mut open = self.channel_streams.lock().expect("channel count lock");
            let count = open.entry(peer).or_default();
            if *count >= MAX_CHANNELS_PER_PEER {
                tracing::debug!("{peer}: refusing another call channel ({count} open)");
                return;
            }
            *count += 1;
        }
        let (reader, writer) = futures::AsyncReadExt::split(stream);
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let calls = self.channel_requests_tx.clone();
        let open = self.channel_streams.clone();
        tokio::spawn(read_calls(peer, reader, writer, calls, open));
    }

    fn on_channel_request(&mut self, call: ChannelRequest) {
        let ChannelRequest {
            peer,
            id,
            request,
            writer,
        } = call;
        if self.banned.contains(&peer) {
            // Its connections are being closed; the channel goes with them.
            return;
        }
        let reply_to = ReplyTo::Channel { id, writer };
        self.deliver_request(peer, request, reply_to);
    }

    /// Admits an inbound request and hands it to the node, or answers it
    /// busy at once.
    fn deliver_request(&mut self, peer: PeerId, request: WireRequest, reply_to: ReplyTo) {
        let member = self.hears(&peer);
        let now = self.started.elapsed();
        let admitted = match self.inbound.start(&peer, member, now) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.refuse_request(peer, reply_to, refusal.as_str());
                return;
            }
        };
        let (reply, answer) = oneshot::channel();
        let event = NetworkEvent::Request {
            from: peer.to_base58(),
            budget_ms: request.budget_ms,
            data: request.payload,
            reply,
        };
        if self.events.try_send(event).is_err() {
            self.inbound.finish(&peer, admitted);
            self.refuse_request(peer, reply_to, "queue_full");
            return;
        }
        self.replies
            .push(async move { (reply_to, answer.await.ok(), peer, admitted) }.boxed());
    }

    fn hears(&self, peer: &PeerId) -> bool {
        !self.banned.contains(peer) && self.allowed.as_ref().is_none_or(|set| set.contains(peer))
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::AdmitOnly { allowed, banned } => {
                let newly_banned: Vec<PeerId> = banned.difference(&self.banned).copied().collect();
                self.allowed = allowed;
                self.banned = banned;
                for peer in newly_banned {
                    if self.swarm.is_connected(&peer) {
                        tracing::info!("{peer} was revoked; disconnecting it");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
            Command::Publish(topic, data) => {
                // InsufficientPeers while alone is normal; anything else is worth a trace.
                if let Err(error) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(topic), data)
                {
                    tracing::trace!("publish: {error}");
                }
            }
            Command::Request {
                peer,
                addrs,
                request,
                reply,
            } => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
                self.pending.insert(id, (reply, Instant::now(), peer)); // production network seam
            }
            Command::TimedOut(peer) => {
                // request-response spreads requests over a peer's connections;
                // when the peer restarted, the older ones are dead (no close
                // arrives from a killed process). Keep only the newest.
                if let Some(connections) = self.connections.get(&peer) {
                    if connections.len() > 1 {
                        let stale: Vec<_> = connections[..connections.len() - 1].to_vec();
                        tracing::debug!(
                            "{peer}: request timed out; closing {} older connection(s)",
                            stale.len()
                        );
                        for id in stale {
                            self.swarm.close_connection(id);
                        }
                    }
                }
                let count = self.silent_requests.entry(peer).or_default();
                *count += 1;
                if *count >= SILENT_REQUESTS_BEFORE_REDIAL {
                    self.silent_requests.remove(&peer);
                    if self.swarm.is_connected(&peer) {
                        tracing::info!(
                            "{peer} stopped answering; dropping its connections to redial"
                        );
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
            Command::Addresses(peer, addrs, known) => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                let _ = known.send(());
            }
            Command::Dial(addr) => {
                if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                }
                if let Err(error) = self.swarm.dial(addr.clone()) {
                    tracing::info!("dial {addr}: {error}");
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.emit(NetworkEvent::ListenAddr(address.to_string()));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if self.banned.contains(&peer_id) {
                    tracing::debug!("{peer_id} is revoked; closing its connection");
                    self.swarm.close_connection(connection_id);
                    return;
                }
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push(connection_id);
                if num_established.get() > 1 {
                    return;
                }
                let first = {
                    let mut connected = self.connected.lock().expect("connected set lock");
                    connected.insert(peer_id.to_base58());
                    self.metrics.connected_peers.set(connected.len() as i64);
                    connected.len() == 1
                };
                if first {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                self.emit(NetworkEvent::PeerUp {
                    peer: peer_id.to_base58(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(connections) = self.connections.get_mut(&peer_id) {
                    connections.retain(|id| *id != connection_id);
                    if connections.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if num_established > 0 {
                    return;
                }
                {
                    let mut connected = self.connected.lock().expect("connected set lock");
                    connected.remove(&peer_id.to_base58());
                    self.metrics.connected_peers.set(connected.len() as i64);
                }
                self.emit(NetworkEvent::PeerDown {
                    peer: peer_id.to_base58(),
                });
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!("outgoing connection to {peer_id:?} failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                let connected = self.connected.lock().expect("connected set lock").len();
                if peer != *self.swarm.local_peer_id()
                    && !self.swarm.is_connected(&peer)
                    && connected < self.max_discovered_peers
                {
                    let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                        .addresses(addresses.into_vec())
                        .build();
                    if let Err(error) = self.swarm.dial(opts) {
                        tracing::debug!("dial discovered peer {peer}: {error}");
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic })
                if self.hears(&peer_id) =>
            {
                self.emit(NetworkEvent::Subscribed {
                    peer: peer_id.to_base58(),
                    topic: topic.into_string(),
                });
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                message_id,
                propagation_source,
            }) => {
                // Judged by its signed source, not by who relayed it: a
                // rejected id is remembered, so refusing an admitted peer's
                // message because a stranger relayed it first would lose it.
                let accepted = message.source.is_some_and(|source| self.hears(&source));
                let verdict = if accepted {
                    gossipsub::MessageAcceptance::Accept
                } else {
                    gossipsub::MessageAcceptance::Reject
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
                if !accepted {
                    self.metrics.gossip_rejected.inc();
                    return;
                }
                let Some(source) = message.source else { return };
                if self.events.capacity() < GOSSIP_HEADROOM {
                    // The node is behind: keep the room for requests.
                    self.metrics.gossip_shed.inc();
                    return;
                }
                self.emit(NetworkEvent::Message {
                    from: source.to_base58(),
                    topic: message.topic.into_string(),
                    data: message.data,
                });
            }
            BehaviourEvent::Rpc(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request { .. } if self.banned.contains(&peer) => {
                        // Dropping the channel answers nothing.
                    }
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.deliver_request(peer, request, ReplyTo::Substream(channel)),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some((reply, started, _)) = self.pending.remove(&request_id) {
                            self.metrics
                                .rpc_latency
                                .observe(started.elapsed().as_secs_f64());
                            self.metrics.rpc_requests.with_label_values(&["ok"]).inc();
                            let _ = reply.send(Ok(response));
                        }
                    }
                }
            }
            BehaviourEvent::Rpc(request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            }) => {
                if let Some((reply, _, _)) = self.pending.remove(&request_id) {
                    let outcome = match error {
                        request_response::OutboundFailure::Timeout => "timeout",
                        _ => "unreachable",
                    };
                    self.metrics
                        .rpc_requests
                        .with_label_values(&[outcome])
                        .inc();
                    let _ = reply.send(Err(RequestError::Unreachable {
                        peer: peer.to_base58(),
                        message: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }
}

/// Writes `answer` to call `id` on an inbound channel, off the driver.
fn answer_on_channel(id: u64, writer: ChannelWriter, answer: Vec<u8>) {
    tokio::spawn(async move {
        let frame = match crate::wire::channel_answer(id, &answer) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!("cannot answer call {id}: {error}");
                return;
            }
        };
        let mut writer = writer.lock().await;
        // A failed write ends the channel; its reader notices.
        let _ = futures::AsyncWriteExt::write_all(&mut *writer, &frame).await;
        let _ = futures::AsyncWriteExt::flush(&mut *writer).await;
    });
}

/// Reads calls off an inbound channel until it ends, handing each to the
/// driver (waiting while the driver's queue is full).
async fn read_calls(
    peer: PeerId,
    mut reader: futures::io::ReadHalf<libp2p::Stream>,
    writer: ChannelWriter,
    calls: mpsc::Sender<ChannelRequest>,
    open: Arc<Mutex<HashMap<PeerId, usize>>>,
) {
    loop {
        match crate::wire::read_channel_request(&mut reader).await {
            Ok((id, request)) => {
                let call = ChannelRequest {
                    peer,
                    id,
                    request,
                    writer: writer.clone(),
                };
                if calls.send(call).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                if error.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!("call channel from {peer} ended: {error}");
                }
                break;
            }
        }
    }
    let mut open = open.lock().expect("channel count lock");
    if let Some(count) = open.get_mut(&peer) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            open.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_scoring_is_valid_and_graylists_a_flood_but_not_a_refused_joiner() {
        let topics = vec![
            crate::ADVERT_TOPIC.to_string(),
            crate::LEADER_TOPIC.to_string(),
        ];
        let (params, thresholds) = peer_scoring(&topics);
        params.validate().unwrap();
        thresholds.validate().unwrap();
        let topic = &params.topics[&IdentTopic::new(crate::ADVERT_TOPIC).hash()];
        let decay = topic.invalid_message_deliveries_decay;
        // P4 is the square of a counter that decays once a second.
        let steady = |per_second: f64| {
            let counter = per_second / (1.0 - decay);
            counter * counter * topic.invalid_message_deliveries_weight * topic.topic_weight
        };
        // A pending joiner publishing an advert every 4 s stays above the graylist
        // (and, with nothing else against it, near zero)...
        assert!(
            steady(0.25) > thresholds.graylist_threshold / 10.0,
            "{}",
            steady(0.25)
        );
        // ...a peer flooding 50 rejected messages a second is graylisted, even
        // with the most its standing can earn.
        assert!(steady(50.0) + params.topic_score_cap < thresholds.graylist_threshold);
        // One stray relay recovers within seconds.
        assert!(decay.powi(10) < 0.2);
        assert_eq!(params.ip_colocation_factor_weight, 0.0);
    }

    #[test]
    fn bootstrap_addresses_need_a_peer_id() {
        let peer = Identity::from_seed([1; 32]).peer_name();
        let (addr, parsed) =
            parse_bootstrap_addr(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")).unwrap();
        assert_eq!(parsed, peer);
        assert!(addr.ends_with(&peer));
        let error = parse_bootstrap_addr("/ip4/127.0.0.1/tcp/4001").unwrap_err();
        assert!(error.contains("/p2p/"), "{error}");
        let error = parse_bootstrap_addr("not-an-address").unwrap_err();
        assert!(error.contains("invalid multiaddr"), "{error}");
    }

    #[test]
    fn listen_addresses_must_be_tcp_or_quic() {
        check_listen_addr("/ip4/0.0.0.0/tcp/0").unwrap();
        check_listen_addr("/ip4/127.0.0.1/udp/0/quic-v1").unwrap();
        check_listen_addr("/ip6/::1/tcp/9").unwrap();
        assert!(check_listen_addr("/ip4/127.0.0.1/udp/0").is_err());
        assert!(check_listen_addr("/dns4/example.com/tcp/1").is_err());
        assert!(check_listen_addr("/ip4/1.2.3.4").is_err());
        assert!(check_listen_addr("garbage").is_err());
    }

    fn busy(reason: &str) -> Vec<u8> {
        format!("busy: {reason}").into_bytes()
    }

    async fn loopback_network() -> (Libp2pNetwork, mpsc::Receiver<NetworkEvent>, String) {
        let (network, mut events, driver) = Libp2pNetwork::start(
            NetworkConfig {
                identity: Identity::generate(),
                listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
                external: vec![],
                topics: vec![],
                max_discovered_peers: 0,
                inbound: Default::default(),
                busy_answer: busy,
            },
            NetworkMetrics::register(&prometheus::Registry::new()).unwrap(),
        )
        .unwrap();
        tokio::spawn(driver);
        let addr = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(NetworkEvent::ListenAddr(addr))) => break addr,
                Ok(Some(_)) => {}
                other => panic!("no listen address: {other:?}"),
            }
        };
        (network, events, addr)
    }

    /// Serves every request on `events`: the answer is the payload with
    /// "re: " before it, sent after `delay(payload)`; a payload of "drop"
    /// gets no answer at all.
    fn serve(mut events: mpsc::Receiver<NetworkEvent>, delay: fn(&[u8]) -> Duration) {
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let NetworkEvent::Request { data, reply, .. } = event {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay(&data)).await;
                        if data != b"drop" {
                            let _ = reply.send([b"re: ".as_slice(), &data].concat());
                        }
                    });
                }
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_share_one_channel_and_get_their_own_answers_in_any_order() {
        let (a, _a_events, _) = loopback_network().await;
        let (b, b_events, b_addr) = loopback_network().await;
        // Later calls are answered first: the first waits longest.
        serve(b_events, |data| {
            let n: u64 = std::str::from_utf8(data).unwrap().parse().unwrap_or(0);
            Duration::from_millis(200u64.saturating_sub(n * 4))
        });
        let b_peer: PeerId = b.local_peer().parse().unwrap();
        let first = a
            .call(
                &b.local_peer(),
                std::slice::from_ref(&b_addr),
                b"0".to_vec(),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(first, b"re: 0");
        assert!(
            a.channels.is_open(&b_peer),
            "the channel stays open after a call"
        );
        let calls: Vec<_> = (1..=40u64)
            .map(|n| {
                a.call(
                    &b.local_peer(),
                    std::slice::from_ref(&b_addr),
                    n.to_string().into_bytes(),
                    Duration::from_secs(10),
                )
            })
            .collect();
        let answers = futures::future::join_all(calls).await;
        for (n, answer) in (1..=40u64).zip(answers) {
            assert_eq!(answer.unwrap(), format!("re: {n}").into_bytes());
        }
        assert_eq!(
            b.channels_from(&a.local_peer().parse().unwrap()),
            1,
            "every call rode the one channel"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_call_is_answered_busy_and_a_banned_caller_is_not_served() {
        let (a, _a_events, _) = loopback_network().await;
        let (b, b_events, b_addr) = loopback_network().await;
        serve(b_events, |_| Duration::ZERO);
        let started = Instant::now();
        let dropped = a
            .call(
                &b.local_peer(),
                std::slice::from_ref(&b_addr),
                b"drop".to_vec(),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert_eq!(dropped, busy("dropped"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered, not timed out"
        );

        b.admit_only(None, BTreeSet::from([a.local_peer()]));
        let mut refused = false;
        for _ in 0..50 {
            match a
                .call(
                    &b.local_peer(),
                    std::slice::from_ref(&b_addr),
                    b"1".to_vec(),
                    Duration::from_millis(500),
                )
                .await
            {
                Ok(answer) => assert_eq!(answer, b"re: 1", "served before the ban took"),
                Err(_) => {
                    refused = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "a banned caller is still served");
    }
}
