//! The simulated network: an in-process message bus behind the node's
//! `Network` seam, with per-link latency, loss, duplication, partitions
//! (symmetric or one way) and crashes. libp2p does not run here; gossip and
//! request-response are modelled at message level.
//!
//! Everything is driven by the virtual clock and one seeded RNG, and every
//! send feeds a rolling trace hash, so a run replays exactly from its seed.
#![allow(clippy::disallowed_methods)] // the simulated network seam owns its timers

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_gossip::{Network, NetworkEvent, PeerName, RequestError};
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

/// How every link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Lowest one-way latency, ms.
    pub latency_min_ms: u64,
    /// Highest one-way latency, ms.
    pub latency_max_ms: u64,
    /// Messages lost, per thousand.
    pub loss_per_mille: u64,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency_min_ms: 1,
            latency_max_ms: 5,
            loss_per_mille: 0,
            duplicate_per_mille: 0,
        }
    }
}

struct Slot {
    events: mpsc::UnboundedSender<NetworkEvent>,
    up: bool,
}

/// The largest requests and responses the bus carried, for the size
/// checker, and the first it refused for exceeding the wire's frame cap
/// (`coditect_gossip::wire::MAX_FRAME_BYTES`), as the libp2p codec refuses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageSizes {
    /// Bytes of the largest Raft RPC, with "sender -> receiver".
    pub raft: (usize, String),
    /// Bytes of the largest other request (report batches, submissions, steals).
    pub node_request: (usize, String),
    /// Bytes of the largest request or response of any kind, with its link.
    pub any: (usize, String),
    /// The first message over the frame cap, described.
    pub over_frame_cap: Option<String>,
}

/// Whether an encoded node request is a Raft RPC: `NodeRequest::Raft` is
/// variant 0, whose encoding (a varint variant index) starts with byte 0
/// and no other variant's does (checked by a test below).
fn is_raft(data: &[u8]) -> bool {
    data.first() == Some(&0)
}

struct BusInner {
    rng: ChaCha8Rng,
    link: LinkConfig,
    nodes: BTreeMap<PeerName, Slot>,
    /// Directed cuts: messages from a peer to any peer in its set are dropped.
    cuts: BTreeMap<PeerName, BTreeSet<PeerName>>,
    trace: Sha256,
    sends: u64,
    /// Extra one-way latency of every message to or from a peer, ms.
    slow: BTreeMap<PeerName, u64>,
    /// Messages in flight, by (delivery time, sequence): one driver task
    /// delivers them, instead of a task and a timer per message.
    in_flight:
        BTreeMap<(tokio::time::Instant, u64), (mpsc::UnboundedSender<NetworkEvent>, NetworkEvent)>,
    next_seq: u64,
    /// Wakes the driver when an earlier delivery is queued.
    wake: Arc<tokio::sync::Notify>,
    sizes: MessageSizes,
}

/// One copy's delay: loss, duplication and latency drawn from the RNG with
/// integer arithmetic only, so any machine agrees.
fn draw_delays(rng: &mut ChaCha8Rng, link: LinkConfig, extra: u64) -> ([u64; 2], usize) {
    if rng.next_u64() % 1000 < link.loss_per_mille {
        return ([0, 0], 0);
    }
    let copies = if rng.next_u64() % 1000 < link.duplicate_per_mille {
        2
    } else {
        1
    };
    let span = link.latency_max_ms.saturating_sub(link.latency_min_ms) + 1;
    let mut delays = [0u64; 2];
    for delay in delays.iter_mut().take(copies) {
        *delay = link.latency_min_ms + extra + rng.next_u64() % span;
    }
    (delays, copies)
}

impl BusInner {
    fn record(&mut self, event: &str) {
        self.trace.update(event.as_bytes());
        self.trace.update(b"\n");
        self.sends += 1;
    }

    /// Records a message without formatting it (the hot path).
    fn record_message(&mut self, kind: u8, from: &str, to: &str, len: usize) {
        self.trace.update([kind]);
        self.trace.update(from.as_bytes());
        self.trace.update([0]);
        self.trace.update(to.as_bytes());
        self.trace.update((len as u64).to_le_bytes());
        self.sends += 1;
    }

    /// Records the size of a request or response; false (and the first
    /// such is noted) if it is over the wire's frame cap.
    fn measure(&mut self, from: &str, to: &str, data: &[u8], request: bool) -> bool {
        let len = data.len();
        let link = || format!("{from} -> {to}");
        if request && is_raft(data) && len > self.sizes.raft.0 {
            self.sizes.raft = (len, link());
        }
        if request && !is_raft(data) && len > self.sizes.node_request.0 {
            self.sizes.node_request = (len, link());
        }
        if len > self.sizes.any.0 {
            self.sizes.any = (len, link());
        }
        if len > coditect_gossip::wire::MAX_FRAME_BYTES {
            let kind = if request { "request" } else { "response" };
            self.sizes
                .over_frame_cap
                .get_or_insert_with(|| format!("a {kind} of {len} bytes from {from} to {to}"));
            return false;
        }
        true
    }

    fn cut(&mut self, from: &str, to: &str) {
        self.cuts
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string());
    }

    fn passes(&self, from: &str, to: &str) -> bool {
        self.nodes.get(to).is_some_and(|slot| slot.up)
            && self.nodes.get(from).is_some_and(|slot| slot.up)
            && !self.cuts.get(from).is_some_and(|cut| cut.contains(to))
    }

    /// How many copies of a message arrive (0 lost, 1, or 2 duplicated) and
    /// after how long each.
    fn fate(&mut self, from: &str, to: &str) -> Vec<Duration> {
        let extra = self.extra(from, to);
        let (delays, copies) = draw_delays(&mut self.rng, self.link, extra);
        delays[..copies]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect()
    }

    fn extra(&self, from: &str, to: &str) -> u64 {
        if self.slow.is_empty() {
            return 0;
        }
        self.slow.get(from).copied().unwrap_or(0) + self.slow.get(to).copied().unwrap_or(0)
    }

    /// Queues `event` for delivery to `to` after `delay`.
    fn deliver(
        &mut self,
        to: mpsc::UnboundedSender<NetworkEvent>,
        event: NetworkEvent,
        delay: Duration,
    ) {
        let due = tokio::time::Instant::now() + delay;
        let earliest = self.in_flight.keys().next().map(|(at, _)| *at);
        self.next_seq += 1;
        self.in_flight.insert((due, self.next_seq), (to, event));
        if earliest.is_none_or(|at| due < at) {
            self.wake.notify_one();
        }
    }
}

/// Delivers queued messages at their time, in (time, sequence) order.
async fn drive(bus: std::sync::Weak<Mutex<BusInner>>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(bus) = bus.upgrade() else { return };
            let mut inner = bus.lock().expect("bus lock");
            let now = tokio::time::Instant::now();
            while let Some(entry) = inner.in_flight.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (to, event) = entry.remove();
                let _ = to.send(event);
            }
            inner.in_flight.keys().next().map(|(at, _)| *at)
        };
        match next {
            Some(at) => {
                let woken = wake.notified();
                futures::future::select(Box::pin(woken), Box::pin(tokio::time::sleep_until(at)))
                    .await;
            }
            None => wake.notified().await,
        }
    }
}

/// The shared bus; cheap to clone.
#[derive(Clone)]
pub struct Bus(Arc<Mutex<BusInner>>);

impl Bus {
    /// A bus whose randomness comes from `seed`.
    pub fn new(seed: u64, link: LinkConfig) -> Bus {
        let wake = Arc::new(tokio::sync::Notify::new());
        let bus = Bus(Arc::new(Mutex::new(BusInner {
            rng: ChaCha8Rng::seed_from_u64(seed),
            link,
            nodes: BTreeMap::new(),
            cuts: BTreeMap::new(),
            trace: Sha256::new(),
            sends: 0,
            slow: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            wake: wake.clone(),
            sizes: MessageSizes::default(),
        })));
        tokio::spawn(drive(Arc::downgrade(&bus.0), wake));
        bus
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusInner> {
        self.0.lock().expect("bus lock")
    }

    /// Attaches (or re-attaches after a crash) `peer`; everyone up sees it come up.
    pub fn join(&self, peer: &str) -> (SimNetwork, mpsc::UnboundedReceiver<NetworkEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.record(&format!("join {peer}"));
        for (other, slot) in &inner.nodes {
            if slot.up {
                let _ = slot.events.send(NetworkEvent::PeerUp {
                    peer: peer.to_string(),
                });
                let _ = events.send(NetworkEvent::PeerUp {
                    peer: other.clone(),
                });
            }
        }
        inner
            .nodes
            .insert(peer.to_string(), Slot { events, up: true });
        (
            SimNetwork {
                me: peer.to_string(),
                bus: self.clone(),
            },
            receiver,
        )
    }

    /// `peer` stops: its messages and requests vanish; the others see it go.
    pub fn crash(&self, peer: &str) {
        let mut inner = self.lock();
        inner.record(&format!("crash {peer}"));
        if let Some(slot) = inner.nodes.get_mut(peer) {
            slot.up = false;
        }
        for (other, slot) in &inner.nodes {
            if slot.up && other != peer {
                let _ = slot.events.send(NetworkEvent::PeerDown {
                    peer: peer.to_string(),
                });
            }
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        let mut inner = self.lock();
        for a in side_a {
            for b in side_b {
                inner.cut(a, b);
                inner.cut(b, a);
            }
        }
        inner.record(&format!("partition {side_a:?} | {side_b:?}"));
    }

    /// Drops messages from `from` to `to` only (asymmetric partition).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        let mut inner = self.lock();
        inner.cut(from, to);
        inner.record(&format!("cut {from} -> {to}"));
    }

    /// Restores every link (cuts and slowness).
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.cuts.clear();
        inner.slow.clear();
        inner.record("heal");
    }

    /// Adds `extra_ms` to every message to or from `peer` (0 restores it).
    pub fn slow(&self, peer: &str, extra_ms: u64) {
        let mut inner = self.lock();
        if extra_ms == 0 {
            inner.slow.remove(peer);
        } else {
            inner.slow.insert(peer.to_string(), extra_ms);
        }
        inner.record(&format!("slow {peer} {extra_ms}"));
    }

    /// Feeds an observation of the harness into the trace.
    pub fn note(&self, text: &str) {
        self.lock().record(text);
    }

    /// Cuts every link of `peer`, both ways.
    pub fn isolate(&self, peer: &str) {
        let mut inner = self.lock();
        let others: Vec<PeerName> = inner.nodes.keys().filter(|p| *p != peer).cloned().collect();
        for other in others {
            inner.cut(peer, &other);
            inner.cut(&other, peer);
        }
        inner.record(&format!("isolate {peer}"));
    }

    /// A digest of everything sent so far, in order.
    pub fn trace_hash(&self) -> String {
        hex::encode(self.lock().trace.clone().finalize())
    }

    /// How many events the trace holds.
    pub fn events(&self) -> u64 {
        self.lock().sends
    }

    /// The largest messages so far (see [`MessageSizes`]).
    pub fn sizes(&self) -> MessageSizes {
        self.lock().sizes.clone()
    }
}

/// One node's view of the bus.
#[derive(Clone)]
pub struct SimNetwork {
    me: PeerName,
    bus: Bus,
}

impl Network for SimNetwork {
    fn local_peer(&self) -> PeerName {
        self.me.clone()
    }

    fn publish(&self, topic: &str, data: Vec<u8>) {
        let mut guard = self.bus.lock();
        let inner = &mut *guard;
        if !inner.nodes.get(&self.me).is_some_and(|slot| slot.up) {
            return;
        }
        let my_cuts = inner.cuts.get(&self.me).cloned();
        let targets: Vec<(&PeerName, &Slot)> = inner
            .nodes
            .iter()
            .filter(|(peer, slot)| {
                slot.up
                    && **peer != self.me
                    && !my_cuts.as_ref().is_some_and(|cut| cut.contains(*peer))
            })
            .collect();
        let mut deliveries = Vec::with_capacity(targets.len());
        for (peer, slot) in targets {
            inner.trace.update([b'p']);
            inner.trace.update(self.me.as_bytes());
            inner.trace.update([0]);
            inner.trace.update(peer.as_bytes());
            inner.trace.update((data.len() as u64).to_le_bytes());
            inner.sends += 1;
            let extra = if inner.slow.is_empty() {
                0
            } else {
                inner.slow.get(&self.me).copied().unwrap_or(0)
                    + inner.slow.get(peer).copied().unwrap_or(0)
            };
            let (delays, copies) = draw_delays(&mut inner.rng, inner.link, extra);
            for delay in &delays[..copies] {
                deliveries.push((slot.events.clone(), Duration::from_millis(*delay)));
            }
        }
        for (events, delay) in deliveries {
            let event = NetworkEvent::Message {
                from: self.me.clone(),
                topic: topic.to_string(),
                data: data.clone(),
            };
            inner.deliver(events, event, delay);
        }
    }

    fn request(
        &self,
        peer: &str,
        _addrs: &[String],
        data: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RequestError>> {
        let me = self.me.clone();
        let peer = peer.to_string();
        let bus = self.bus.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let delivered = {
                let mut inner = bus.lock();
                if !inner.nodes.get(&peer).is_some_and(|slot| slot.up) {
                    inner.record(&format!("request {me} -> {peer} unreachable"));
                    return Err(RequestError::Unreachable {
                        peer,
                        message: "peer is down".into(),
                    });
                }
                inner.record_message(b'q', &me, &peer, data.len());
                if !inner.measure(&me, &peer, &data, true) {
                    return Err(RequestError::Unreachable {
                        peer,
                        message: "the request is over the frame cap".into(),
                    });
                }
                let fate = if inner.passes(&me, &peer) {
                    inner.fate(&me, &peer)
                } else {
                    Vec::new()
                };
                match fate.first() {
                    Some(delay) => {
                        let events = inner.nodes[&peer].events.clone();
                        let budget_ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
                        let event = NetworkEvent::Request {
                            from: me.clone(),
                            budget_ms,
                            data,
                            reply,
                        };
                        let delay = *delay;
                        inner.deliver(events, event, delay);
                        true
                    }
                    None => false,
                }
            };
            let round_trip = async {
                if !delivered {
                    return futures::future::pending::<Result<Vec<u8>, RequestError>>().await;
                }
                let bytes = answer.await.map_err(|_| RequestError::Closed)?;
                // The answer travels back over the reverse link.
                let back = {
                    let mut inner = bus.lock();
                    inner.record_message(b'r', &peer, &me, bytes.len());
                    if !inner.measure(&peer, &me, &bytes, false) {
                        return Err(RequestError::Unreachable {
                            peer: peer.clone(),
                            message: "the response is over the frame cap".into(),
                        });
                    }
                    if inner.passes(&peer, &me) {
                        inner.fate(&peer, &me).first().copied()
                    } else {
                        None
                    }
                };
                match back {
                    Some(delay) => {
                        tokio::time::sleep(delay).await;
                        Ok(bytes)
                    }
                    None => futures::future::pending().await,
                }
            };
            match tokio::time::timeout(deadline, round_trip).await {
                Ok(result) => result,
                Err(_) => Err(RequestError::Timeout { peer, deadline }),
            }
        }
        .boxed()
    }

    fn dial(&self, _addr: &str) -> Result<(), RequestError> {
        // Every live node is reachable unless a partition says otherwise.
        Ok(())
    }

    fn is_connected(&self, peer: &str) -> bool {
        let inner = self.bus.lock();
        peer != self.me && inner.passes(&self.me, peer) && inner.passes(peer, &self.me)
    }

    fn has_peers(&self) -> bool {
        let inner = self.bus.lock();
        if inner.cuts.is_empty() && inner.nodes.get(&self.me).is_some_and(|s| s.up) {
            return inner
                .nodes
                .iter()
                .any(|(peer, slot)| slot.up && *peer != self.me);
        }
        inner.nodes.keys().any(|peer| {
            *peer != self.me && inner.passes(&self.me, peer) && inner.passes(peer, &self.me)
        })
    }

    fn connected_peers(&self) -> Vec<PeerName> {
        let inner = self.bus.lock();
        inner
            .nodes
            .keys()
            .filter(|peer| {
                **peer != self.me && inner.passes(&self.me, peer) && inner.passes(peer, &self.me)
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request with its payload reversed.
    fn serve(
        mut events: mpsc::UnboundedReceiver<NetworkEvent>,
    ) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
        let (seen, seen_receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NetworkEvent::Request { data, reply, .. } => {
                        let mut answer = data;
                        answer.reverse();
                        let _ = reply.send(answer);
                    }
                    NetworkEvent::Message { from, data, .. } => {
                        let _ = seen.send((from, data));
                    }
                    _ => {}
                }
            }
        });
        seen_receiver
    }

    async fn expect_timeout(from: &SimNetwork) {
        let answer = from
            .request("b", &[], vec![1], Duration::from_millis(100))
            .await;
        assert!(
            matches!(answer, Err(RequestError::Timeout { .. })),
            "{answer:?}"
        );
    }

    #[test]
    fn requests_and_gossip_respect_partitions_and_crashes() {
        crate::runtime(1).unwrap().block_on(async {
            let bus = Bus::new(7, LinkConfig::default());
            let (a, _a_events) = bus.join("a");
            let (_b, b_events) = bus.join("b");
            let mut b_seen = serve(b_events);
            assert_eq!(a.connected_peers(), vec!["b".to_string()]);
            let answer = a
                .request("b", &[], vec![1, 2, 3], Duration::from_millis(100))
                .await;
            assert_eq!(answer, Ok(vec![3, 2, 1]));
            a.publish("t", vec![9]);
            assert_eq!(b_seen.recv().await, Some(("a".to_string(), vec![9])));

            bus.partition(&["a"], &["b"]);
            assert!(a.connected_peers().is_empty());
            expect_timeout(&a).await;
            bus.heal();
            // One way only: the request arrives but its answer is lost.
            bus.cut_one_way("b", "a");
            expect_timeout(&a).await;
            bus.heal();

            bus.crash("b");
            let answer = a
                .request("b", &[], vec![1], Duration::from_millis(100))
                .await;
            assert!(
                matches!(answer, Err(RequestError::Unreachable { .. })),
                "{answer:?}"
            );
        });
    }

    fn scripted_run(seed: u64) -> (String, u64) {
        crate::runtime(1).unwrap().block_on(async {
            let link = LinkConfig {
                latency_min_ms: 1,
                latency_max_ms: 50,
                loss_per_mille: 200,
                duplicate_per_mille: 100,
            };
            let bus = Bus::new(seed, link);
            let mut nets = Vec::new();
            for name in ["a", "b", "c"] {
                let (net, events) = bus.join(name);
                let _ = serve(events);
                nets.push(net);
            }
            for round in 0..20u8 {
                for (index, net) in nets.iter().enumerate() {
                    net.publish("t", vec![round]);
                    let target = ["a", "b", "c"][(index + 1) % 3];
                    let _ = net
                        .request(target, &[], vec![round], Duration::from_millis(30))
                        .await;
                }
            }
            (bus.trace_hash(), bus.events())
        })
    }

    #[test]
    fn raft_rpcs_are_told_apart_by_their_first_byte() {
        use coditect_node::messages::NodeRequest;
        let raft = coditect_memory::codec::encode(&NodeRequest::Raft(vec![7; 300])).unwrap();
        assert!(is_raft(&raft));
        let other = NodeRequest::GetTaskResult {
            mission: "m1".into(),
            task: "a".into(),
        };
        assert!(!is_raft(&coditect_memory::codec::encode(&other).unwrap()));
    }

    #[test]
    fn the_largest_messages_are_measured_and_frames_over_the_cap_refused() {
        crate::runtime(1).unwrap().block_on(async {
            let bus = Bus::new(7, LinkConfig::default());
            let (a, _a_events) = bus.join("a");
            let (_b, b_events) = bus.join("b");
            let _seen = serve(b_events);
            let deadline = Duration::from_secs(1);
            let answer = a.request("b", &[], vec![0; 5_000], deadline).await;
            assert_eq!(answer.map(|bytes| bytes.len()), Ok(5_000));
            assert!(a.request("b", &[], vec![9; 9_000], deadline).await.is_ok());
            let sizes = bus.sizes();
            assert_eq!(sizes.raft, (5_000, "a -> b".to_string()));
            assert_eq!(sizes.node_request, (9_000, "a -> b".to_string()));
            assert_eq!(sizes.any.0, 9_000);
            assert_eq!(sizes.over_frame_cap, None);
            let huge = vec![1; coditect_gossip::wire::MAX_FRAME_BYTES + 1];
            let refused = a.request("b", &[], huge, deadline).await;
            assert!(
                matches!(refused, Err(RequestError::Unreachable { .. })),
                "{refused:?}"
            );
            assert!(bus.sizes().over_frame_cap.is_some());
        });
    }

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let first = scripted_run(11);
        assert_eq!(first, scripted_run(11));
        assert_ne!(first.0, scripted_run(12).0);
        assert!(first.1 > 100);
    }
}
