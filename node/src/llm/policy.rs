//! The decisions around model calls, as synchronous code over plain data
//! (times are milliseconds on the node's clock): how long to wait before
//! trying a call again, when to stop calling a failing provider (the
//! circuit breaker), and when the next call may start (the rate limit).

use std::time::Duration;

/// Tries of one call, the first included.
pub const MAX_TRIES: u32 = 4;

/// The wait before try `tries + 1` after `tries` failed ones: the
/// provider's `Retry-After` when it gave one, else 500 ms doubling per
/// try up to 8 s, scaled by `jitter` in `[0.5, 1]` so callers that failed
/// together do not come back together.
pub fn backoff(tries: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if let Some(wait) = retry_after {
        return wait;
    }
    let doublings = tries.saturating_sub(1).min(4);
    let full = Duration::from_millis(500u64 << doublings);
    full.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A circuit breaker over calls to one provider: `threshold` failed calls
/// in a row open it for `cool_down_ms`; then one call is let through (half
/// open), and its outcome closes or reopens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    threshold: u32,
    cool_down_ms: u64,
    failures: u32,
    open_until_ms: Option<u64>,
    probing: bool,
    last_failure: Option<String>,
}

/// Why the breaker refuses a call now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// Failed calls in a row.
    pub failures: u32,
    /// When a call is let through again (node clock, ms).
    pub until_ms: u64,
    /// The last failure's message.
    pub last: String,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_down_ms: u64) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down_ms,
            failures: 0,
            open_until_ms: None,
            probing: false,
            last_failure: None,
        }
    }

    /// Whether a call may start at `now_ms`; `Ok` reserves the half-open
    /// probe when that is what it is.
    pub fn admit(&mut self, now_ms: u64) -> Result<(), Open> {
        let Some(until_ms) = self.open_until_ms else {
            return Ok(());
        };
        if now_ms >= until_ms && !self.probing {
            self.probing = true;
            return Ok(());
        }
        Err(Open {
            failures: self.failures,
            until_ms: until_ms.max(now_ms),
            last: self.last_failure.clone().unwrap_or_default(),
        })
    }

    /// The outcome of a call that was admitted.
    pub fn record(&mut self, now_ms: u64, failure: Option<&str>) {
        self.probing = false;
        match failure {
            None => {
                self.failures = 0;
                self.open_until_ms = None;
                self.last_failure = None;
            }
            Some(message) => {
                self.failures = self.failures.saturating_add(1);
                self.last_failure = Some(message.to_string());
                if self.failures >= self.threshold {
                    self.open_until_ms = Some(now_ms.saturating_add(self.cool_down_ms));
                }
            }
        }
    }

    /// Whether it is open at `now_ms` (no call would be admitted, except
    /// the probe once the cool-down is over).
    pub fn open(&self, now_ms: u64) -> Option<Open> {
        let until_ms = self.open_until_ms?;
        (now_ms < until_ms || self.probing).then(|| Open {
            failures: self.failures,
            until_ms,
            last: self.last_failure.clone().unwrap_or_default(),
        })
    }
}

/// Starts of calls limited to `per_minute`, with bursts of at most
/// `burst`: a token bucket that hands out reservations, so each caller
/// learns at once how long to wait and callers are served in order.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimiter {
    per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl RateLimiter {
    /// A full bucket at time `now_ms`.
    pub fn new(per_minute: u32, burst: u32, now_ms: u64) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_ms: f64::from(per_minute.max(1)) / 60_000.0,
            burst,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Reserves the next start: how long from `now_ms` the caller must wait.
    pub fn reserve(&mut self, now_ms: u64) -> Duration {
        if now_ms > self.last_ms {
            let refill = (now_ms - self.last_ms) as f64 * self.per_ms;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last_ms = now_ms;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_millis((-self.tokens / self.per_ms).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_honours_retry_after_and_grows_otherwise() {
        assert_eq!(
            backoff(1, Some(Duration::from_secs(3)), 0.7),
            Duration::from_secs(3)
        );
        assert_eq!(backoff(1, None, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, None, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(9, None, 1.0), Duration::from_millis(8000));
        assert_eq!(backoff(1, None, 0.0), Duration::from_millis(250));
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_probes_once() {
        let mut breaker = Breaker::new(3, 1_000);
        for t in 0..3 {
            breaker.admit(t).unwrap();
            breaker.record(t, Some("500"));
        }
        let open = breaker.admit(10).unwrap_err();
        assert_eq!(
            (open.failures, open.until_ms, open.last.as_str()),
            (3, 1_002, "500")
        );
        assert!(breaker.open(10).is_some());
        breaker.admit(1_002).expect("the probe");
        assert!(breaker.admit(1_003).is_err(), "one probe at a time");
        breaker.record(1_010, Some("500 again"));
        assert!(breaker.admit(1_500).is_err(), "reopened");
        breaker.admit(2_010).expect("the next probe");
        breaker.record(2_020, None);
        assert!(breaker.open(2_020).is_none());
        assert!(breaker.admit(2_021).is_ok());
    }

    proptest! {
        /// However calls arrive, the reserved start times never put more
        /// than `burst + per_minute * window` starts into any window.
        #[test]
        fn the_rate_limit_holds_in_every_window(
            per_minute in 1u32..600,
            burst in 1u32..10,
            gaps in proptest::collection::vec(0u64..3_000, 1..60),
        ) {
            let mut limiter = RateLimiter::new(per_minute, burst, 0);
            let mut now = 0u64;
            let mut starts = Vec::new();
            for gap in gaps {
                now += gap;
                starts.push(now + limiter.reserve(now).as_millis() as u64);
            }
            starts.sort_unstable();
            for (i, first) in starts.iter().enumerate() {
                for (j, last) in starts.iter().enumerate().skip(i) {
                    let window = (last - first) as f64;
                    let allowed = f64::from(burst) + window * f64::from(per_minute) / 60_000.0 + 1.0;
                    prop_assert!((j - i + 1) as f64 <= allowed, "{} starts in {} ms", j - i + 1, window);
                }
            }
        }

        /// The breaker never admits a call while open before its cool-down
        /// ends, and a success always closes it.
        #[test]
        fn the_breaker_keeps_its_word(events in proptest::collection::vec((0u64..500, any::<bool>()), 1..80)) {
            let mut breaker = Breaker::new(3, 1_000);
            let mut now = 0;
            for (gap, fails) in events {
                now += gap;
                let was_open = breaker.open(now).map(|o| o.until_ms);
                match breaker.admit(now) {
                    Ok(()) => {
                        if let Some(until) = was_open {
                            prop_assert!(now >= until);
                        }
                        breaker.record(now, fails.then_some("x"));
                        if !fails {
                            prop_assert!(breaker.open(now).is_none());
                        }
                    }
                    Err(open) => prop_assert!(open.failures >= 3),
                }
            }
        }
    }
}
