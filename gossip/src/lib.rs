//! The network of a Coditect node.
//!
//! This crate owns the message-level network seam ([`Network`] and
//! [`NetworkEvent`]): publish/subscribe on topics, request/response to a peer
//! with a deadline, and peer up/down events. Its production implementation,
//! [`Libp2pNetwork`], is a libp2p swarm over QUIC with TCP + noise + yamux as
//! fallback, identify and Kademlia for discovery (any one member's address is
//! enough), gossipsub for adverts, and a request-response protocol with our
//! own capped framing ([`wire`]). The node's ed25519 identity lives in
//! [`identity`].
//!
//! Depends on `coditect-memory` at most; never on `coditect-consensus` (its
//! sibling) or anything above. Peer ids cross the seam as base58 strings, so
//! node logic and the simulation never need libp2p types. libp2p never runs
//! inside the simulation (its timers, RNG and hash maps are not seedable);
//! this adapter is tested with real sockets instead.

mod channel;
pub mod identity;
pub mod inbound;
pub mod metrics;
mod swarm;
pub mod wire;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

pub use identity::Identity;
pub use metrics::NetworkMetrics;
pub use swarm::{
    check_listen_addr, parse_bootstrap_addr, parse_multiaddr, Libp2pNetwork, NetworkConfig,
    NetworkStartError,
};

/// A libp2p peer id in its base58 text form.
pub type PeerName = String;

/// Something that happened on the network.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A first connection to `peer` is up.
    PeerUp {
        /// The peer.
        peer: PeerName,
    },
    /// The last connection to `peer` closed.
    PeerDown {
        /// The peer.
        peer: PeerName,
    },
    /// We listen on a new address (`/p2p/` suffix not included).
    ListenAddr(String),
    /// An admitted peer subscribed to a topic we are on: what we publish
    /// there reaches it from now on (a first advert sent before this was
    /// lost on it).
    Subscribed {
        /// The peer.
        peer: PeerName,
        /// The topic.
        topic: String,
    },
    /// A message published on a topic we subscribe to.
    Message {
        /// Who published it.
        from: PeerName,
        /// The topic.
        topic: String,
        /// The payload.
        data: Vec<u8>,
    },
    /// A request from `from`; answer it through `reply` (dropping it answers nothing).
    Request {
        /// Who asks.
        from: PeerName,
        /// How long the caller waits, ms.
        budget_ms: u32,
        /// The payload.
        data: Vec<u8>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<u8>>,
    },
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// No connection could be made, or it broke before the answer.
    #[error("peer {peer} unreachable: {message}")]
    Unreachable {
        /// The peer.
        peer: PeerName,
        /// What went wrong.
        message: String,
    },
    /// No answer within the deadline.
    #[error("no answer from {peer} within {deadline:?}")]
    Timeout {
        /// The peer.
        peer: PeerName,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// The peer id or an address is not valid.
    #[error("invalid peer or address: {0}")]
    Invalid(String),
    /// The network is shut down.
    #[error("the network is shut down")]
    Closed,
}

/// The message-level network seam. See the crate docs.
pub trait Network: Send + Sync + 'static {
    /// Our own peer id.
    fn local_peer(&self) -> PeerName;
    /// Publishes `data` on `topic` (best effort; subscribers get it at most once).
    fn publish(&self, topic: &str, data: Vec<u8>);
    /// Sends a request to `peer` (dialing `addrs` if not connected) and waits
    /// for the answer, at most `deadline`.
    fn request(
        &self,
        peer: &str,
        addrs: &[String],
        data: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RequestError>>;
    /// [`Network::request`] over the long-lived call channel to `peer`, for
    /// small, frequent, latency-critical calls (Raft RPCs): one substream
    /// carries them all instead of a substream and its negotiation per
    /// call. The default (and a peer that does not speak the channel) is
    /// [`Network::request`].
    fn call(
        &self,
        peer: &str,
        addrs: &[String],
        data: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RequestError>> {
        self.request(peer, addrs, data, deadline)
    }
    /// Dials an address (a bootstrap peer, or a peer remembered from before).
    fn dial(&self, addr: &str) -> Result<(), RequestError>;
    /// Peers we hold a connection to.
    fn connected_peers(&self) -> Vec<PeerName>;
    /// Whether we hold a connection to `peer`.
    fn is_connected(&self, peer: &str) -> bool {
        self.connected_peers().iter().any(|p| p == peer)
    }
    /// Whom to hear from: with `allowed`, gossip from anyone else is
    /// rejected (gossipsub validation) and not delivered; peers in `banned`
    /// are disconnected now and whenever they connect again, and nothing of
    /// theirs is delivered. `None` hears everyone but the banned.
    fn admit_only(&self, allowed: Option<BTreeSet<PeerName>>, banned: BTreeSet<PeerName>) {
        let _ = (allowed, banned);
    }
    /// Whether we hold a connection to anyone.
    fn has_peers(&self) -> bool {
        !self.connected_peers().is_empty()
    }
}

/// The topic every node publishes its advert on.
pub const ADVERT_TOPIC: &str = "coditect/adverts/1";
/// The topic the leader announces itself on.
pub const LEADER_TOPIC: &str = "coditect/leader/1";
