//! openraft's async runtime for the mesh: tokio, plus a per-node random
//! number generator.
//!
//! openraft draws its randomized election timeouts from
//! `AsyncRuntime::thread_rng`, an associated function with no `self`, so a
//! per-node seed cannot be passed in. The runtime reads it from a tokio
//! task-local instead: [`RaftContext::scope`] wraps `Raft::new`, and every
//! task openraft spawns through [`MeshRuntime::spawn`] inherits the context.
//! In production the context is seeded from the OS; the simulation seeds it
//! from its own RNG, so elections replay exactly. Outside any context the
//! runtime falls back to an OS-seeded generator.
//!
//! The context also carries the node's [`Offload`]: where the state machine
//! runs long synchronous work (building and installing snapshots) so it does
//! not stall the runtime that serves Raft. Production passes tokio's
//! blocking pool; the simulation passes nothing and the work runs in line.
//!
//! This file is the production Raft runtime seam, so it calls tokio's spawn
//! and clock directly.
#![allow(clippy::disallowed_methods)] // Raft runtime seam

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::async_runtime::{AsyncRuntime, TokioOneShotSender};
use openraft::{OptionalSend, TokioInstant};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

tokio::task_local! {
    static CONTEXT: RaftContext;
}

/// Runs a synchronous job off the async runtime and resolves when it ends.
pub type Offload = Arc<dyn Fn(Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The per-node context Raft tasks run in.
#[derive(Clone)]
pub struct RaftContext {
    rng: Arc<Mutex<ChaCha8Rng>>,
    offload: Option<Offload>,
}

impl std::fmt::Debug for RaftContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftContext")
            .field("offload", &self.offload.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs `job` through `offload` (in line without one) and returns its value.
pub(crate) async fn off_runtime<T: Send + 'static>(
    offload: Option<&Offload>,
    job: impl FnOnce() -> T + Send + 'static,
) -> T {
    let Some(offload) = offload else {
        return job();
    };
    let slot = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    offload(Box::new(move || {
        let value = job();
        *filled.lock().expect("offload slot") = Some(value);
    }))
    .await;
    let value = slot.lock().expect("offload slot").take();
    value.expect("the offloaded job ran to completion")
}

impl RaftContext {
    /// A context whose random numbers come from `seed`.
    pub fn seeded(seed: u64) -> Self {
        RaftContext {
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            offload: None,
        }
    }

    /// A context seeded from the operating system.
    pub fn from_entropy() -> Self {
        RaftContext {
            rng: Arc::new(Mutex::new(ChaCha8Rng::from_entropy())),
            offload: None,
        }
    }

    /// Runs the state machine's long synchronous work through `offload`.
    pub fn with_offload(mut self, offload: Offload) -> Self {
        self.offload = Some(offload);
        self
    }

    /// The offload this context carries, if any.
    pub fn offload(&self) -> Option<Offload> {
        self.offload.clone()
    }

    /// Runs `future` (and every task openraft spawns from it) in this context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CONTEXT.scope(self, future).await
    }

    fn next_rng(&self) -> ChaCha8Rng {
        let seed = self.rng.lock().expect("raft rng lock").next_u64();
        ChaCha8Rng::seed_from_u64(seed)
    }
}

/// The mesh's openraft runtime; see the module docs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MeshRuntime;

impl AsyncRuntime for MeshRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ChaCha8Rng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match CONTEXT.try_with(Clone::clone) {
            Ok(context) => tokio::spawn(CONTEXT.scope(context, future)), // Raft runtime seam
            Err(_) => tokio::spawn(future),                              // Raft runtime seam
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    #[rustfmt::skip]
    fn thread_rng() -> Self::ThreadLocalRng { // Raft runtime seam: the node's seeded RNG, not the thread's
        CONTEXT
            .try_with(RaftContext::next_rng)
            .unwrap_or_else(|_| ChaCha8Rng::from_entropy())
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(sender), receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn draws(seed: u64) -> Vec<u64> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(RaftContext::seeded(seed).scope(async {
            let mut values = vec![MeshRuntime::thread_rng().gen::<u64>()]; // Raft runtime seam
                                                                           // Tasks openraft spawns inherit the node's context.
            let spawned = MeshRuntime::spawn(async { MeshRuntime::thread_rng().gen::<u64>() }); // Raft runtime seam
            values.push(spawned.await.unwrap());
            values.push(MeshRuntime::thread_rng().gen::<u64>()); // Raft runtime seam
            values
        }))
    }

    #[test]
    fn the_same_seed_draws_the_same_election_randomness() {
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let values = draws(7);
        assert_ne!(values[0], values[2], "successive draws differ");
    }

    #[test]
    fn outside_a_context_the_runtime_still_works() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let value = runtime.block_on(async {
            MeshRuntime::spawn(async { MeshRuntime::thread_rng().gen::<u64>() }) // Raft runtime seam
                .await
                .unwrap()
        });
        let _ = value;
    }
}
