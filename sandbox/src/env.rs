//! The Env seam as guests see it: wall clock, monotonic clock and randomness.
//!
//! Guests never read the host's clock or entropy directly; WASI's clocks and
//! `random_get` are served from a [`GuestEnv`] the node passes in, so a
//! simulated node hands its guests simulated time and seeded randomness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{Rng, TryRng};
use sha2::{Digest, Sha256};

/// Clock and randomness shown to guests.
pub trait GuestEnv: Send + Sync + 'static {
    /// Wall-clock time as a duration since the Unix epoch.
    fn wall_clock(&self) -> Duration;
    /// A monotonic clock in nanoseconds from an arbitrary origin.
    fn monotonic_ns(&self) -> u64;
    /// A fresh 32-byte seed for one task's randomness; the sandbox expands it
    /// (SHA-256 in counter mode) into the guest's `random_get` stream.
    fn task_seed(&self) -> [u8; 32];
}

/// The production [`GuestEnv`]: the host's clocks and operating-system entropy.
#[derive(Debug)]
pub struct SystemGuestEnv {
    origin: Instant,
}

impl SystemGuestEnv {
    /// A system environment whose monotonic clock starts now.
    pub fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // the production end of the Env seam
        let origin = Instant::now();
        SystemGuestEnv { origin }
    }
}

impl Default for SystemGuestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestEnv for SystemGuestEnv {
    fn wall_clock(&self) -> Duration {
        #[allow(clippy::disallowed_methods)] // the production end of the Env seam
        let now = SystemTime::now();
        now.duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn task_seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        wasmtime_wasi::thread_rng().fill_bytes(&mut seed);
        seed
    }
}

/// A reproducible [`GuestEnv`] for tests and simulations: a fixed start time,
/// a clock that advances one microsecond per reading, and task seeds derived
/// from one seed and a counter.
#[derive(Debug)]
pub struct DeterministicGuestEnv {
    seed: u64,
    start: Duration,
    ticks: AtomicU64,
    tasks: AtomicU64,
}

impl DeterministicGuestEnv {
    /// Starts at 2026-01-01T00:00:00Z.
    pub fn new(seed: u64) -> Self {
        DeterministicGuestEnv {
            seed,
            start: Duration::from_secs(1_767_225_600),
            ticks: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
        }
    }
}

impl GuestEnv for DeterministicGuestEnv {
    fn wall_clock(&self) -> Duration {
        self.start + Duration::from_micros(self.ticks.fetch_add(1, Ordering::Relaxed))
    }

    fn monotonic_ns(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed) * 1000
    }

    fn task_seed(&self) -> [u8; 32] {
        let task = self.tasks.fetch_add(1, Ordering::Relaxed);
        let mut hasher = Sha256::new();
        hasher.update(b"coditect-deterministic-guest-env");
        hasher.update(self.seed.to_le_bytes());
        hasher.update(task.to_le_bytes());
        hasher.finalize().into()
    }
}

/// SHA-256 in counter mode over a 32-byte seed: a deterministic stream that
/// is unpredictable without the seed.
pub(crate) struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    pub(crate) fn new(seed: [u8; 32], domain: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(domain);
        hasher.update(seed);
        SeededRng {
            seed: hasher.finalize().into(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn fill(&mut self, dst: &mut [u8]) {
        let mut written = 0;
        while written < dst.len() {
            if self.used == self.block.len() {
                let mut hasher = Sha256::new();
                hasher.update(self.seed);
                hasher.update(self.counter.to_le_bytes());
                self.block = hasher.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            let take = (dst.len() - written).min(self.block.len() - self.used);
            dst[written..written + take].copy_from_slice(&self.block[self.used..self.used + take]);
            self.used += take;
            written += take;
        }
    }
}

impl TryRng for SeededRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

/// WASI wall clock backed by the node's [`GuestEnv`].
pub(crate) struct GuestWallClock(pub(crate) Arc<dyn GuestEnv>);

impl wasmtime_wasi::HostWallClock for GuestWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        self.0.wall_clock()
    }
}

/// WASI monotonic clock backed by the node's [`GuestEnv`].
pub(crate) struct GuestMonotonicClock(pub(crate) Arc<dyn GuestEnv>);

impl wasmtime_wasi::HostMonotonicClock for GuestMonotonicClock {
    fn resolution(&self) -> u64 {
        1000
    }

    fn now(&self) -> u64 {
        self.0.monotonic_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_is_reproducible_and_seed_dependent() {
        let mut a = SeededRng::new([7; 32], b"x");
        let mut b = SeededRng::new([7; 32], b"x");
        let mut c = SeededRng::new([8; 32], b"x");
        let (mut ba, mut bb, mut bc) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill_bytes(&mut ba);
        b.fill_bytes(&mut bb);
        c.fill_bytes(&mut bc);
        assert_eq!(ba, bb);
        assert_ne!(ba, bc);
        // Reading in pieces gives the same stream as reading at once.
        let mut d = SeededRng::new([7; 32], b"x");
        let mut pieces = [0u8; 100];
        d.fill_bytes(&mut pieces[..33]);
        d.fill_bytes(&mut pieces[33..]);
        assert_eq!(ba, pieces);
    }

    #[test]
    fn deterministic_env_gives_distinct_task_seeds() {
        let env = DeterministicGuestEnv::new(1);
        assert_ne!(env.task_seed(), env.task_seed());
        let again = DeterministicGuestEnv::new(1);
        assert_eq!(again.task_seed(), DeterministicGuestEnv::new(1).task_seed());
    }
}
