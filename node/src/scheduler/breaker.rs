//! A per-node circuit breaker: a node whose runs keep failing for reasons
//! that are the node's fault gets no new placements for a cooldown, then one
//! probe task; the probe's ending closes the breaker or opens it again.
//!
//! Only node-specific failures count (see [`Blame`]): a task that traps on
//! every node must not take the nodes out of service one after another.
//! Time comes in as `now_ms`; an open breaker whose cooldown has passed is
//! half-open without anyone having to tick it.

use serde::{Deserialize, Serialize};

use super::violation::{Blame, ViolationKind};

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive node-specific failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker keeps new placements away, ms.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown_ms: 30_000,
        }
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Placements flow normally.
    Closed,
    /// No placements until `until_ms`; from then on the breaker is half-open.
    Open {
        /// End of the cooldown (leader's clock, ms).
        until_ms: u64,
    },
    /// The cooldown is over: one probe task may be placed, and its ending decides.
    HalfOpen {
        /// The probe was placed and has not ended yet.
        probe_in_flight: bool,
    },
}

/// What a breaker lets placement do right now; this is all placement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerGate {
    /// Any number of placements.
    Closed,
    /// Exactly one placement, the probe.
    Probe,
    /// No placements.
    Open,
}

/// One node's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Node-specific failures since the last success or since the breaker closed.
    pub consecutive_node_failures: u32,
    /// Where it stands, as of the last event (an expired `Open` reads as half-open).
    pub state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            consecutive_node_failures: 0,
            state: BreakerState::Closed,
        }
    }
}

impl Breaker {
    /// A closed breaker with no failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state at `now_ms`: an open breaker whose cooldown has passed is
    /// half-open with no probe out yet.
    pub fn state_at(&self, now_ms: u64) -> BreakerState {
        match self.state {
            BreakerState::Open { until_ms } if now_ms >= until_ms => BreakerState::HalfOpen {
                probe_in_flight: false,
            },
            state => state,
        }
    }

    /// What placement may do on this node at `now_ms`.
    pub fn gate(&self, now_ms: u64) -> BreakerGate {
        match self.state_at(now_ms) {
            BreakerState::Closed => BreakerGate::Closed,
            BreakerState::Open { .. } => BreakerGate::Open,
            BreakerState::HalfOpen {
                probe_in_flight: false,
            } => BreakerGate::Probe,
            BreakerState::HalfOpen {
                probe_in_flight: true,
            } => BreakerGate::Open,
        }
    }

    /// Whether a task may be placed on this node at `now_ms`.
    pub fn allows_placement(&self, now_ms: u64) -> bool {
        self.gate(now_ms) != BreakerGate::Open
    }

    /// A task was placed on the node. When half-open, that task is the
    /// probe, and no other placement is allowed until it ends.
    pub fn record_placement(&mut self, now_ms: u64) {
        if let BreakerState::HalfOpen { .. } = self.state_at(now_ms) {
            self.state = BreakerState::HalfOpen {
                probe_in_flight: true,
            };
        }
    }

    /// A run on the node succeeded: the node works, so a half-open breaker
    /// closes and the failure count starts over. An open breaker keeps its
    /// cooldown (the success belongs to a task placed before it opened), so
    /// a flapping node still gets its pause.
    pub fn record_success(&mut self, now_ms: u64) {
        self.consecutive_node_failures = 0;
        if let BreakerState::HalfOpen { .. } = self.state_at(now_ms) {
            self.state = BreakerState::Closed;
        }
    }

    /// A run on the node ended in a violation of `kind`. Node-specific
    /// failures count and open the breaker at the threshold, or at once when
    /// the probe failed. Any other ending says nothing about the node: it
    /// only frees the probe slot so another probe can go.
    pub fn record_failure(&mut self, kind: ViolationKind, config: &BreakerConfig, now_ms: u64) {
        let state = self.state_at(now_ms);
        if kind.blame() != Blame::Node {
            if let BreakerState::HalfOpen { .. } = state {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: false,
                };
            }
            return;
        }
        self.consecutive_node_failures = self.consecutive_node_failures.saturating_add(1);
        let open = BreakerState::Open {
            until_ms: now_ms.saturating_add(config.cooldown_ms),
        };
        match state {
            BreakerState::Closed => {
                if self.consecutive_node_failures >= config.failure_threshold.max(1) {
                    self.state = open;
                }
            }
            BreakerState::HalfOpen { .. } => self.state = open,
            // A straggler from before the breaker opened does not extend the
            // cooldown; the probe after it decides.
            BreakerState::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::violation::ExpectedField;
    use super::*;
    use proptest::prelude::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        cooldown_ms: 30_000,
    };

    #[test]
    fn opens_after_threshold_then_probes_once_and_closes_on_success() {
        let mut breaker = Breaker::new();
        breaker.record_failure(ViolationKind::LostNode, &CONFIG, 1_000);
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 2_000);
        assert_eq!(breaker.gate(2_000), BreakerGate::Closed);
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 3_000);
        assert_eq!(breaker.state, BreakerState::Open { until_ms: 33_000 });
        assert!(!breaker.allows_placement(32_999));

        assert_eq!(breaker.gate(33_000), BreakerGate::Probe);
        breaker.record_placement(33_000);
        assert_eq!(breaker.gate(33_001), BreakerGate::Open, "one probe only");
        breaker.record_success(40_000);
        assert_eq!(breaker.state, BreakerState::Closed);
        assert_eq!(breaker.consecutive_node_failures, 0);
        assert_eq!(breaker.gate(40_000), BreakerGate::Closed);
    }

    #[test]
    fn failed_probe_opens_again_for_a_full_cooldown() {
        let mut breaker = Breaker::new();
        for at in 0..3 {
            breaker.record_failure(ViolationKind::LostNode, &CONFIG, at);
        }
        breaker.record_placement(30_002);
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 31_000);
        assert_eq!(breaker.state, BreakerState::Open { until_ms: 61_000 });
        assert_eq!(breaker.gate(60_999), BreakerGate::Open);
        assert_eq!(breaker.gate(61_000), BreakerGate::Probe);
    }

    #[test]
    fn task_intrinsic_failures_neither_count_nor_reset() {
        let mut breaker = Breaker::new();
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 0);
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 0);
        for kind in [
            ViolationKind::Trap,
            ViolationKind::OutOfFuel,
            ViolationKind::MemoryLimit,
            ViolationKind::InvalidModule,
            ViolationKind::InvalidTask,
            ViolationKind::Cancelled,
            ViolationKind::ExpectationMismatch {
                what: ExpectedField::ExitCode,
            },
        ] {
            breaker.record_failure(kind, &CONFIG, 0);
        }
        assert_eq!(breaker.consecutive_node_failures, 2);
        assert_eq!(breaker.gate(0), BreakerGate::Closed);
        breaker.record_failure(ViolationKind::Timeout, &CONFIG, 0);
        assert_eq!(breaker.gate(0), BreakerGate::Open);
    }

    #[test]
    fn success_between_failures_resets_the_count() {
        let mut breaker = Breaker::new();
        breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        breaker.record_success(0);
        breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        assert_eq!(breaker.gate(0), BreakerGate::Closed);
    }

    #[test]
    fn inconclusive_probe_frees_the_probe_slot() {
        let mut breaker = Breaker::new();
        for _ in 0..3 {
            breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        }
        breaker.record_placement(30_000);
        assert_eq!(breaker.gate(30_000), BreakerGate::Open);
        breaker.record_failure(ViolationKind::Cancelled, &CONFIG, 30_500);
        assert_eq!(breaker.gate(30_500), BreakerGate::Probe);
    }

    #[test]
    fn success_while_open_keeps_the_cooldown() {
        let mut breaker = Breaker::new();
        for _ in 0..3 {
            breaker.record_failure(ViolationKind::LostNode, &CONFIG, 0);
        }
        breaker.record_success(10);
        assert_eq!(breaker.gate(10), BreakerGate::Open);
        assert_eq!(breaker.gate(30_000), BreakerGate::Probe);
    }

    #[test]
    fn breaker_round_trips_through_the_codec() {
        let breaker = Breaker {
            consecutive_node_failures: 4,
            state: BreakerState::Open { until_ms: 9 },
        };
        let bytes = coditect_memory::codec::encode(&breaker).unwrap();
        let back: Breaker = coditect_memory::codec::decode(&bytes).unwrap();
        assert_eq!(back, breaker);
    }

    #[derive(Clone, Debug)]
    enum Event {
        Advance(u64),
        PlaceIfAllowed,
        Success,
        Failure(ViolationKind),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..40_000).prop_map(Event::Advance),
            Just(Event::PlaceIfAllowed),
            Just(Event::Success),
            Just(Event::Failure(ViolationKind::LostNode)),
            Just(Event::Failure(ViolationKind::Timeout)),
            Just(Event::Failure(ViolationKind::Trap)),
            Just(Event::Failure(ViolationKind::Cancelled)),
        ]
    }

    proptest! {
        /// Whatever happens, a half-open breaker lets at most one probe out
        /// until that probe (or any run) ends, and failures that are not the
        /// node's fault never open it.
        #[test]
        fn half_open_lets_one_probe_through(events in proptest::collection::vec(event(), 0..80)) {
            let mut breaker = Breaker::new();
            let mut now_ms = 0u64;
            let mut probe_out = false;
            let mut node_failures_seen = false;
            for event in events {
                match event {
                    Event::Advance(ms) => now_ms += ms,
                    Event::PlaceIfAllowed => {
                        let gate = breaker.gate(now_ms);
                        if gate == BreakerGate::Probe {
                            prop_assert!(!probe_out, "a second probe before the first ended");
                            probe_out = true;
                        }
                        if gate != BreakerGate::Open {
                            breaker.record_placement(now_ms);
                        }
                    }
                    Event::Success => {
                        breaker.record_success(now_ms);
                        probe_out = false;
                    }
                    Event::Failure(kind) => {
                        node_failures_seen |= kind.blame() == Blame::Node;
                        breaker.record_failure(kind, &CONFIG, now_ms);
                        probe_out = false;
                    }
                }
                if !node_failures_seen {
                    prop_assert_eq!(breaker.state, BreakerState::Closed);
                }
            }
        }
    }
}
