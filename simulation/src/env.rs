//! The simulated Env: virtual time from a paused tokio runtime, a per-node
//! seeded RNG, and an optional clock offset per node (drift).
#![allow(clippy::disallowed_methods)] // this is the simulated Env seam

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_node::env::Env;
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Virtual wall-clock time at which every simulation starts (2026-01-01).
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// One simulated node's Env. Must be used on a current-thread tokio runtime
/// with paused time, so that `sleep` advances virtual time only.
pub struct SimEnv {
    started: tokio::time::Instant,
    rng: Mutex<ChaCha8Rng>,
    clock_offset_ms: i64,
}

impl SimEnv {
    /// An Env whose randomness comes from `seed` and whose wall clock is off
    /// by `clock_offset_ms` (drift between machines).
    pub fn new(seed: u64, clock_offset_ms: i64) -> Arc<Self> {
        Arc::new(SimEnv {
            started: tokio::time::Instant::now(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            clock_offset_ms,
        })
    }
}

impl Env for SimEnv {
    fn now_ms(&self) -> u64 {
        let virtual_ms = SIM_EPOCH_MS + self.started.elapsed().as_millis() as u64;
        virtual_ms.saturating_add_signed(self.clock_offset_ms)
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }

    fn spawn(&self, _name: &'static str, task: BoxFuture<'static, ()>) {
        // On a current-thread runtime tasks run in a fixed order.
        tokio::spawn(task);
    }

    fn random_u64(&self) -> u64 {
        self.rng.lock().expect("sim rng lock").next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_virtual_and_randomness_is_seeded() {
        let (elapsed, now, draws) = crate::runtime(1).unwrap().block_on(async {
            let env = SimEnv::new(42, -250);
            env.sleep(Duration::from_secs(3600)).await;
            (
                env.elapsed(),
                env.now_ms(),
                [env.random_u64(), env.random_u64()],
            )
        });
        assert_eq!(elapsed, Duration::from_secs(3600), "an hour passes at once");
        assert_eq!(now, SIM_EPOCH_MS + 3_600_000 - 250);
        let again = crate::runtime(1).unwrap().block_on(async {
            let env = SimEnv::new(42, 0);
            [env.random_u64(), env.random_u64()]
        });
        assert_eq!(draws, again);
        assert_ne!(draws[0], draws[1]);
    }

    #[test]
    fn spawned_tasks_run_on_virtual_time() {
        let order = crate::runtime(1).unwrap().block_on(async {
            let env = SimEnv::new(1, 0);
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
            for (delay, label) in [(30u64, "c"), (10, "a"), (20, "b")] {
                let sender = sender.clone();
                let sleep = env.sleep(Duration::from_millis(delay));
                env.spawn(
                    "test",
                    async move {
                        sleep.await;
                        let _ = sender.send(label);
                    }
                    .boxed(),
                );
            }
            drop(sender);
            let mut order = Vec::new();
            while let Some(label) = receiver.recv().await {
                order.push(label);
            }
            order
        });
        assert_eq!(order, vec!["a", "b", "c"]);
    }
}
