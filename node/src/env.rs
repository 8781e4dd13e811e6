//! The Env seam: time, timers, task spawning and randomness.
//!
//! Node code never calls `tokio::spawn`, `tokio::time`, `Instant::now`,
//! `SystemTime::now` or `thread_rng` (clippy's `disallowed_methods` enforces
//! it); it asks its [`Env`]. [`TokioEnv`] is the production implementation;
//! the simulation supplies one over virtual time and a seeded RNG, so the
//! same node code runs there unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Time, timers, spawning and randomness for one node.
pub trait Env: Send + Sync + 'static {
    /// Wall-clock milliseconds since the Unix epoch (virtual in the simulation).
    fn now_ms(&self) -> u64;
    /// Monotonic time since this Env was created.
    fn elapsed(&self) -> Duration;
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// Runs `task` concurrently; `name` labels it in logs.
    fn spawn(&self, name: &'static str, task: BoxFuture<'static, ()>);
    /// The next number of this node's RNG.
    fn random_u64(&self) -> u64;
    /// Runs a blocking or CPU-heavy `job` where it cannot stall the async
    /// runtime; completes when the job is done. By default in line (the
    /// simulation: deterministic); production uses tokio's blocking pool.
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()> {
        job();
        Box::pin(async {})
    }
}

/// Runs `job` through [`Env::run_blocking`] and returns its value.
pub async fn off_runtime<T: Send + 'static>(
    env: &dyn Env,
    job: impl FnOnce() -> T + Send + 'static,
) -> T {
    let slot = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    env.run_blocking(Box::new(move || {
        let value = job();
        *filled.lock().expect("off-runtime slot") = Some(value);
    }))
    .await;
    let value = slot.lock().expect("off-runtime slot").take();
    value.expect("the blocking job ran to completion")
}

/// A shared Env handle.
pub type SharedEnv = Arc<dyn Env>;

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} passed")]
pub struct Elapsed(pub Duration);

/// Runs `future` for at most `limit` of the Env's time.
pub async fn timeout<T>(
    env: &dyn Env,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    let sleep = env.sleep(limit);
    futures::pin_mut!(future);
    match futures::future::select(future, sleep).await {
        futures::future::Either::Left((value, _)) => Ok(value),
        futures::future::Either::Right(((), _)) => Err(Elapsed(limit)),
    }
}

/// A random duration in `[low, high]`, from the Env's RNG (for jitter).
pub fn jitter(env: &dyn Env, low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    if span == 0 {
        return low;
    }
    low + Duration::from_millis(env.random_u64() % (span + 1))
}

/// The production Env: tokio's clock and executor, the OS clock, and a
/// ChaCha RNG seeded from the OS.
pub struct TokioEnv {
    started: std::time::Instant,
    rng: Mutex<ChaCha20Rng>,
    /// The node's runtime: tasks spawned from any thread (a guest's, for
    /// one) run there.
    runtime: tokio::runtime::Handle,
}

impl TokioEnv {
    /// A new Env on the tokio runtime it is created in (it panics outside one).
    #[allow(clippy::disallowed_methods)] // this is the production Env seam
    pub fn new() -> Arc<Self> {
        Arc::new(TokioEnv {
            started: std::time::Instant::now(), // production Env seam
            rng: Mutex::new(ChaCha20Rng::from_entropy()),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Env for TokioEnv {
    #[allow(clippy::disallowed_methods)] // this is the production Env seam
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now() // production Env seam
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or(0)
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    #[allow(clippy::disallowed_methods)] // this is the production Env seam
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }

    #[allow(clippy::disallowed_methods)] // this is the production Env seam
    fn spawn(&self, name: &'static str, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let span = tracing::Span::current();
        let task = tracing::Instrument::instrument(
            async move {
                task.await;
                tracing::trace!(task = name, "task ended");
            },
            span,
        );
        self.runtime.spawn(task); // production Env seam
    }

    fn random_u64(&self) -> u64 {
        self.rng.lock().expect("rng lock").next_u64()
    }

    #[allow(clippy::disallowed_methods)] // this is the production Env seam
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()> {
        let span = tracing::Span::current();
        let handle = self.runtime.spawn_blocking(move || span.in_scope(job)); // production Env seam
        async move {
            match handle.await {
                // A panic in the job is a bug; surface it where it was awaited.
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                _ => {}
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedEnv;

    impl Env for FixedEnv {
        fn now_ms(&self) -> u64 {
            0
        }
        fn elapsed(&self) -> Duration {
            Duration::ZERO
        }
        fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
            futures::future::ready(()).boxed()
        }
        fn spawn(&self, _: &'static str, _: BoxFuture<'static, ()>) {}
        fn random_u64(&self) -> u64 {
            7
        }
    }

    #[test]
    fn timeout_fires_when_the_sleep_wins() {
        let result = futures::executor::block_on(timeout(
            &FixedEnv,
            Duration::from_millis(5),
            futures::future::pending::<()>(),
        ));
        assert_eq!(result, Err(Elapsed(Duration::from_millis(5))));
        let result = futures::executor::block_on(timeout(
            &FixedEnv,
            Duration::from_millis(5),
            futures::future::ready(3),
        ));
        assert_eq!(result, Ok(3));
    }

    #[test]
    fn jitter_stays_in_range() {
        let low = Duration::from_millis(100);
        let high = Duration::from_millis(150);
        let value = jitter(&FixedEnv, low, high);
        assert_eq!(value, Duration::from_millis(107));
        assert_eq!(jitter(&FixedEnv, high, high), high);
    }
}
