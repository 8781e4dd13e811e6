//! What one peer may make this node do: inbound requests per peer, as
//! plain synchronous bookkeeping the driver consults before it hands a
//! request to the node.
//!
//! Two classes of sender. A *member* (an admitted peer, or anyone on an open
//! mesh) gets a generous token bucket and a cap on requests in flight, so a
//! runaway peer cannot queue unbounded work while a busy mesh (heartbeats,
//! Raft appends, batched reports) never meets the limit. A *stranger* (not
//! admitted: it may only run the join exchange) gets a few requests a
//! second, a couple in flight, and all strangers together share a small
//! total, so fresh peer ids, which cost nothing, buy nothing either.
//!
//! A refused request is answered at once with the node's busy answer, so
//! the caller sees a reason and retries instead of waiting out a timeout.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// The limits of [`Inbound`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InboundPolicy {
    /// Requests per second one member may send, sustained.
    pub member_rate: f64,
    /// Requests one member may send in a burst.
    pub member_burst: f64,
    /// Requests of one member being served at once, at most.
    pub member_in_flight: u32,
    /// Requests per second one stranger may send, sustained.
    pub stranger_rate: f64,
    /// Requests one stranger may send in a burst.
    pub stranger_burst: f64,
    /// Requests of one stranger being served at once, at most.
    pub stranger_in_flight: u32,
    /// Requests of all strangers together being served at once, at most.
    pub strangers_in_flight: u32,
    /// Peers tracked at most; past it, idle entries are forgotten first, and
    /// a stranger that finds no room is refused.
    pub max_peers: usize,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        InboundPolicy {
            // A worker of a busy mesh sends a few hundred requests a second
            // to the leader; a leader appends to each follower as fast as
            // entries commit. Ten times that is still only a flood guard.
            member_rate: 10_000.0,
            member_burst: 20_000.0,
            member_in_flight: 1_024,
            // The join exchange is two requests; a pending joiner asks for
            // its admission now and then.
            stranger_rate: 5.0,
            stranger_burst: 10.0,
            stranger_in_flight: 4,
            strangers_in_flight: 64,
            max_peers: 8_192,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboundRefusal {
    /// The peer sent faster than its bucket allows.
    RateLimited,
    /// The peer has as many requests being served as it may.
    InFlight,
    /// Strangers together have as many requests being served as they may,
    /// or there is no room to track one more peer.
    StrangersFull,
}

impl InboundRefusal {
    /// Its label on `coditect_rpc_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            InboundRefusal::RateLimited => "rate_limited",
            InboundRefusal::InFlight => "in_flight",
            InboundRefusal::StrangersFull => "strangers_full",
        }
    }
}

/// A request being served: hand it back to [`Inbound::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Counted among the strangers' requests.
    stranger: bool,
}

#[derive(Clone, Debug)]
struct PeerState {
    tokens: f64,
    refilled: Duration,
    in_flight: u32,
    /// When a refusal of this peer was last logged.
    logged: Option<Duration>,
}

/// Inbound requests per peer. Times are offsets from any fixed start.
#[derive(Debug)]
pub struct Inbound<K> {
    policy: InboundPolicy,
    peers: HashMap<K, PeerState>,
    strangers_in_flight: u32,
}

/// How often a refusal of one peer is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl<K: Hash + Eq + Clone> Inbound<K> {
    /// No peer tracked yet.
    pub fn new(policy: InboundPolicy) -> Self {
        Inbound {
            policy,
            peers: HashMap::new(),
            strangers_in_flight: 0,
        }
    }

    /// Whether to serve a request from `peer` (`member`: admitted) at `now`.
    /// On `Ok`, the request counts as in flight until [`Inbound::finish`].
    pub fn start(
        &mut self,
        peer: &K,
        member: bool,
        now: Duration,
    ) -> Result<Admitted, InboundRefusal> {
        let policy = self.policy;
        let (rate, burst, in_flight) = if member {
            (
                policy.member_rate,
                policy.member_burst,
                policy.member_in_flight,
            )
        } else {
            (
                policy.stranger_rate,
                policy.stranger_burst,
                policy.stranger_in_flight,
            )
        };
        if !member && self.strangers_in_flight >= policy.strangers_in_flight {
            return Err(InboundRefusal::StrangersFull);
        }
        if !self.peers.contains_key(peer) && self.peers.len() >= policy.max_peers {
            self.forget_idle(now);
            if self.peers.len() >= policy.max_peers && !member {
                return Err(InboundRefusal::StrangersFull);
            }
        }
        let state = self.peers.entry(peer.clone()).or_insert(PeerState {
            tokens: burst,
            refilled: now,
            in_flight: 0,
            logged: None,
        });
        let elapsed = now.saturating_sub(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(burst);
        state.refilled = state.refilled.max(now);
        if state.in_flight >= in_flight {
            return Err(InboundRefusal::InFlight);
        }
        if state.tokens < 1.0 {
            return Err(InboundRefusal::RateLimited);
        }
        state.tokens -= 1.0;
        state.in_flight += 1;
        if !member {
            self.strangers_in_flight += 1;
        }
        Ok(Admitted { stranger: !member })
    }

    /// The request `admitted` from `peer` was answered (or given up).
    pub fn finish(&mut self, peer: &K, admitted: Admitted) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        if admitted.stranger {
            self.strangers_in_flight = self.strangers_in_flight.saturating_sub(1);
        }
    }

    /// Whether a refusal of `peer` at `now` should be logged (the first,
    /// then at most one per [`LOG_EVERY`]), so a flood does not flood the log.
    pub fn should_log(&mut self, peer: &K, now: Duration) -> bool {
        let Some(state) = self.peers.get_mut(peer) else {
            return true;
        };
        let due = state
            .logged
            .is_none_or(|last| now.saturating_sub(last) >= LOG_EVERY);
        if due {
            state.logged = Some(now);
        }
        due
    }

    /// Requests in flight from `peer`.
    pub fn in_flight(&self, peer: &K) -> u32 {
        self.peers.get(peer).map_or(0, |state| state.in_flight)
    }

    /// Requests in flight from strangers together.
    pub fn strangers_in_flight(&self) -> u32 {
        self.strangers_in_flight
    }

    /// Peers tracked.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Forgets peers with nothing in flight and a full bucket again (they
    /// would start over exactly where they are).
    fn forget_idle(&mut self, now: Duration) {
        let policy = self.policy;
        self.peers.retain(|_, state| {
            let elapsed = now.saturating_sub(state.refilled).as_secs_f64();
            // The smaller rate and burst: a forgotten member restarts with a
            // full bucket, which it would have had anyway by then.
            let full = state.tokens + elapsed * policy.stranger_rate.min(policy.member_rate)
                >= policy.stranger_burst.max(policy.member_burst);
            state.in_flight > 0 || !full
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn small() -> InboundPolicy {
        InboundPolicy {
            member_rate: 100.0,
            member_burst: 10.0,
            member_in_flight: 4,
            stranger_rate: 1.0,
            stranger_burst: 2.0,
            stranger_in_flight: 1,
            strangers_in_flight: 3,
            max_peers: 16,
        }
    }

    #[test]
    fn a_member_may_run_its_in_flight_cap_and_more_once_answers_come_back() {
        let mut inbound = Inbound::new(small());
        let held: Vec<_> = (0..4)
            .map(|_| inbound.start(&"a", true, ms(0)).unwrap())
            .collect();
        assert_eq!(
            inbound.start(&"a", true, ms(0)),
            Err(InboundRefusal::InFlight)
        );
        // Another member is not held up by the first.
        assert!(inbound.start(&"b", true, ms(0)).is_ok());
        inbound.finish(&"a", held[0]);
        assert!(inbound.start(&"a", true, ms(0)).is_ok());
    }

    #[test]
    fn a_burst_past_the_bucket_is_rate_limited_until_it_refills() {
        let mut inbound = Inbound::new(small());
        for _ in 0..10 {
            let admitted = inbound.start(&"a", true, ms(0)).unwrap();
            inbound.finish(&"a", admitted);
        }
        assert_eq!(
            inbound.start(&"a", true, ms(0)),
            Err(InboundRefusal::RateLimited)
        );
        // 100/s: one token every 10 ms.
        assert!(inbound.start(&"a", true, ms(11)).is_ok());
    }

    #[test]
    fn strangers_share_a_small_total_and_fresh_ids_buy_nothing() {
        let mut inbound = Inbound::new(small());
        for peer in 0..3u32 {
            inbound.start(&peer, false, ms(0)).unwrap();
        }
        assert_eq!(
            inbound.start(&99, false, ms(0)),
            Err(InboundRefusal::StrangersFull)
        );
        // Members are not counted against the strangers.
        assert!(inbound.start(&100, true, ms(0)).is_ok());
        assert_eq!(inbound.strangers_in_flight(), 3);
    }

    #[test]
    fn a_full_table_forgets_idle_peers_and_refuses_new_strangers_while_busy() {
        let mut inbound = Inbound::new(InboundPolicy {
            max_peers: 2,
            strangers_in_flight: 10,
            ..small()
        });
        let a = inbound.start(&1, true, ms(0)).unwrap();
        let _b = inbound.start(&2, true, ms(0)).unwrap();
        assert_eq!(
            inbound.start(&3, false, ms(0)),
            Err(InboundRefusal::StrangersFull)
        );
        // A member still gets in (the table bends for members only).
        let d = inbound.start(&4, true, ms(0)).unwrap();
        inbound.finish(&1, a);
        inbound.finish(&4, d);
        // Once peer 1 is idle and refilled, its entry is forgotten for a stranger.
        assert!(inbound.start(&5, false, Duration::from_secs(60)).is_ok());
        assert!(inbound.tracked() <= 3);
    }

    #[test]
    fn refusals_are_logged_first_and_then_seldom() {
        let mut inbound = Inbound::new(small());
        inbound.start(&"a", true, ms(0)).unwrap();
        assert!(inbound.should_log(&"a", ms(0)));
        assert!(!inbound.should_log(&"a", ms(5_000)));
        assert!(inbound.should_log(&"a", ms(10_000)));
    }

    proptest! {
        /// Whatever the sequence of starts and finishes, no peer ever has
        /// more in flight than its class allows, strangers together never
        /// exceed their total, and the counts go back to zero when every
        /// admitted request is finished.
        #[test]
        fn caps_hold_and_counts_return_to_zero(
            steps in proptest::collection::vec((0u8..6, any::<bool>(), 0u64..50), 1..400)
        ) {
            let policy = small();
            let mut inbound = Inbound::new(policy);
            let mut held: Vec<(u8, Admitted)> = Vec::new();
            let mut now = 0u64;
            for (peer, finish, advance) in steps {
                now += advance;
                // A peer's class is fixed per peer here, as in one admission view.
                let member = peer % 2 == 0;
                if finish && !held.is_empty() {
                    let (peer, admitted) = held.remove(0);
                    inbound.finish(&peer, admitted);
                } else if let Ok(admitted) = inbound.start(&peer, member, ms(now)) {
                    held.push((peer, admitted));
                }
                for peer in 0..6u8 {
                    let cap = if peer % 2 == 0 { policy.member_in_flight } else { policy.stranger_in_flight };
                    prop_assert!(inbound.in_flight(&peer) <= cap);
                }
                prop_assert!(inbound.strangers_in_flight() <= policy.strangers_in_flight);
            }
            for (peer, admitted) in held.drain(..) {
                inbound.finish(&peer, admitted);
            }
            for peer in 0..6u8 {
                prop_assert_eq!(inbound.in_flight(&peer), 0);
            }
            prop_assert_eq!(inbound.strangers_in_flight(), 0);
        }

        /// Over any window, a peer is served at most its burst plus its rate
        /// times the window.
        #[test]
        fn no_peer_is_served_faster_than_its_bucket(gaps in proptest::collection::vec(0u64..20, 1..500)) {
            let policy = small();
            let mut inbound = Inbound::new(policy);
            let mut now = 0u64;
            let mut served = 0u32;
            for gap in gaps {
                now += gap;
                if let Ok(admitted) = inbound.start(&"a", true, ms(now)) {
                    served += 1;
                    inbound.finish(&"a", admitted);
                }
            }
            let allowed = policy.member_burst + policy.member_rate * now as f64 / 1000.0;
            prop_assert!(f64::from(served) <= allowed + 1e-9, "{served} > {allowed}");
        }
    }
}
