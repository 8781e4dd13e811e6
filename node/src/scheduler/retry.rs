//! Retry policy: after a violation, run the task again after an exponential
//! backoff, or fail it.
//!
//! Policy choices, each with its reason:
//! - Backoff doubles from `base_backoff_ms` per failed attempt and stops
//!   growing at `max_backoff_ms` (1 s, 2 s, 4 s ... 16 s by default). There
//!   is no jitter: retries are few and per task, and a deterministic delay
//!   keeps simulation traces reproducible from the seed alone.
//! - A node-specific violation (lost node, timeout; see
//!   [`ViolationKind::blame`]) asks placement to avoid the node it failed on.
//!   Task-intrinsic ones do not, since the node was not the problem.
//! - An invalid module is never retried: the module is content-addressed, so
//!   every attempt would load the same bytes and fail the same way. Nor is
//!   an invalid task (a name or limit every worker refuses).
//! - A model that could not be reached (`llm_unavailable`) gets
//!   [`LLM_UNAVAILABLE_ATTEMPTS`] attempts instead of the policy's: a
//!   provider's outage is usually seconds long, the node already retried
//!   inside the call, and it withdraws `llm` while its breaker is open, so
//!   the task mostly waits rather than spends attempts.
//! - A cancelled run is rerun at once and does not use up an attempt,
//!   because nothing was wrong with it; the runtime does not ask at all when
//!   the whole mission was cancelled.

use coditect_consensus::NodeId;
use serde::{Deserialize, Serialize};

use super::violation::{Blame, ViolationKind};

/// How often and how soon a task is run again after a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Runs in total, the first included; at least 1.
    pub max_attempts: u32,
    /// Wait before the second attempt, ms; each later wait doubles.
    pub base_backoff_ms: u64,
    /// The longest wait, ms.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff_ms: 1_000,
            max_backoff_ms: 16_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts_so_far`-th failed attempt: base for the
    /// first, doubling each time, capped.
    pub fn backoff_ms(&self, attempts_so_far: u32) -> u64 {
        let doublings = attempts_so_far.saturating_sub(1).min(63);
        self.base_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms)
    }
}

/// Attempts a task gets when its model keeps being unreachable.
pub const LLM_UNAVAILABLE_ATTEMPTS: u32 = 10;

/// What to do with a task after a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryDecision {
    /// Put it back to `ready`, placeable from `not_before_ms` on.
    Retry {
        /// Leader's clock, ms, before which it is not placed.
        not_before_ms: u64,
        /// A node placement should avoid while another capable node exists.
        avoid: Option<NodeId>,
        /// Whether the failed run used up one of its attempts.
        counts_as_attempt: bool,
    },
    /// Mark it `failed`; its dependents become blocked with this reason.
    Fail {
        /// One line naming why.
        reason: String,
    },
}

/// Decides what happens after attempt number `attempts_so_far` (1 for the
/// first run) ended in a violation of `violation` on node `failed_on`.
pub fn decide(
    policy: &RetryPolicy,
    attempts_so_far: u32,
    violation: ViolationKind,
    failed_on: NodeId,
    now_ms: u64,
) -> RetryDecision {
    if violation == ViolationKind::InvalidModule {
        return RetryDecision::Fail {
            reason: "invalid module; retrying would load the same bytes".to_string(),
        };
    }
    if violation == ViolationKind::InvalidTask {
        return RetryDecision::Fail {
            reason: "invalid task; every node would refuse it the same way".to_string(),
        };
    }
    if violation == ViolationKind::TestsFailed {
        return RetryDecision::Fail {
            reason: "tests failed; running them again would run the same code".to_string(),
        };
    }
    match violation.blame() {
        Blame::Neither => RetryDecision::Retry {
            not_before_ms: now_ms,
            avoid: None,
            counts_as_attempt: false,
        },
        blame => {
            let max_attempts = if violation == ViolationKind::LlmUnavailable {
                policy.max_attempts.max(LLM_UNAVAILABLE_ATTEMPTS)
            } else {
                policy.max_attempts.max(1)
            };
            if attempts_so_far >= max_attempts {
                return RetryDecision::Fail {
                    reason: format!(
                        "out of attempts ({attempts_so_far} of {max_attempts}); last violation: {violation} on node {failed_on}"
                    ),
                };
            }
            RetryDecision::Retry {
                not_before_ms: now_ms.saturating_add(policy.backoff_ms(attempts_so_far)),
                avoid: (blame == Blame::Node).then_some(failed_on),
                counts_as_attempt: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::violation::ExpectedField;
    use super::*;
    use proptest::prelude::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base_backoff_ms: 1_000,
        max_backoff_ms: 16_000,
    };

    #[test]
    fn backoff_doubles_and_caps() {
        let waits: Vec<u64> = (1..=8).map(|attempt| POLICY.backoff_ms(attempt)).collect();
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 16_000, 16_000, 16_000]
        );
        assert_eq!(POLICY.backoff_ms(u32::MAX), 16_000);
        assert_eq!(RetryPolicy::default(), POLICY);
    }

    #[test]
    fn node_specific_failure_retries_elsewhere_after_backoff() {
        assert_eq!(
            decide(&POLICY, 1, ViolationKind::Timeout, 4, 10_000),
            RetryDecision::Retry {
                not_before_ms: 11_000,
                avoid: Some(4),
                counts_as_attempt: true
            }
        );
        assert_eq!(
            decide(&POLICY, 2, ViolationKind::LostNode, 4, 10_000),
            RetryDecision::Retry {
                not_before_ms: 12_000,
                avoid: Some(4),
                counts_as_attempt: true
            }
        );
    }

    #[test]
    fn task_intrinsic_failure_retries_anywhere() {
        let mismatch = ViolationKind::ExpectationMismatch {
            what: ExpectedField::Stdout,
        };
        for kind in [
            ViolationKind::Trap,
            ViolationKind::OutOfFuel,
            ViolationKind::MemoryLimit,
            mismatch,
        ] {
            assert_eq!(
                decide(&POLICY, 1, kind, 4, 0),
                RetryDecision::Retry {
                    not_before_ms: 1_000,
                    avoid: None,
                    counts_as_attempt: true
                },
                "{kind}"
            );
        }
    }

    #[test]
    fn third_failure_fails_the_task_with_the_last_violation() {
        let RetryDecision::Fail { reason } = decide(&POLICY, 3, ViolationKind::Trap, 9, 0) else {
            panic!("expected fail");
        };
        assert_eq!(
            reason,
            "out of attempts (3 of 3); last violation: trap on node 9"
        );
    }

    #[test]
    fn invalid_module_is_never_retried() {
        assert!(matches!(
            decide(&POLICY, 1, ViolationKind::InvalidModule, 1, 0),
            RetryDecision::Fail { .. }
        ));
    }

    #[test]
    fn invalid_task_is_never_retried() {
        let RetryDecision::Fail { reason } = decide(&POLICY, 1, ViolationKind::InvalidTask, 1, 0)
        else {
            panic!("expected fail");
        };
        assert!(reason.contains("invalid task"), "{reason}");
    }

    #[test]
    fn an_unreachable_model_gets_more_attempts_elsewhere() {
        assert!(matches!(
            decide(&POLICY, 3, ViolationKind::LlmUnavailable, 4, 0),
            RetryDecision::Retry { avoid: Some(4), .. }
        ));
        assert!(matches!(
            decide(
                &POLICY,
                LLM_UNAVAILABLE_ATTEMPTS,
                ViolationKind::LlmUnavailable,
                4,
                0
            ),
            RetryDecision::Fail { .. }
        ));
        assert!(matches!(
            decide(&POLICY, 1, ViolationKind::BadModelOutput, 4, 0),
            RetryDecision::Retry { avoid: None, .. }
        ));
    }

    #[test]
    fn cancelled_run_is_rerun_at_once_for_free() {
        assert_eq!(
            decide(&POLICY, 3, ViolationKind::Cancelled, 1, 500),
            RetryDecision::Retry {
                not_before_ms: 500,
                avoid: None,
                counts_as_attempt: false
            }
        );
    }

    proptest! {
        /// Retries never run past the attempt budget, never wait longer than
        /// the cap, and never wait less than the base.
        #[test]
        fn retry_respects_budget_and_bounds(
            attempts in 0u32..12,
            max_attempts in 0u32..6,
            base in 1u64..5_000,
            cap in 1u64..100_000,
            now_ms in 0u64..1_000_000,
        ) {
            let policy = RetryPolicy { max_attempts, base_backoff_ms: base, max_backoff_ms: cap };
            for kind in [ViolationKind::Trap, ViolationKind::Timeout, ViolationKind::LostNode] {
                match decide(&policy, attempts, kind, 1, now_ms) {
                    RetryDecision::Retry { not_before_ms, counts_as_attempt, .. } => {
                        prop_assert!(attempts < max_attempts.max(1));
                        prop_assert!(counts_as_attempt);
                        prop_assert!(not_before_ms - now_ms <= cap);
                        prop_assert!(not_before_ms - now_ms >= base.min(cap));
                    }
                    RetryDecision::Fail { .. } => prop_assert!(attempts >= max_attempts.max(1)),
                }
            }
        }
    }
}
