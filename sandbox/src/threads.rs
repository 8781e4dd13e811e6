//! Guest threads, the epoch ticker, cancellation and result hand-off.
//!
//! Guests run on threads owned by the sandbox, never on the caller's async
//! runtime. Threads are kept warm and reused; when every warm thread is busy a
//! new one starts, so N tasks submitted together run N-way concurrently (the
//! node bounds N with its slot count).

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasmtime::Engine;

use crate::error::SandboxError;
use crate::outcome::Outcome;

/// How long a warm guest thread waits for work before it exits.
const IDLE_THREAD_LINGER: Duration = Duration::from_secs(30);

/// Ticks the epoch ticker goes on for with no guest running before it
/// waits for one (see [`EpochTicker`]): 20 ms at the default 1 ms tick.
const TICKER_LINGER_TICKS: u32 = 20;

/// The nice value of guest threads: guests yield the CPU to the node's own
/// threads (Raft heartbeats, the network, the API), so a node whose slots
/// are all busy still answers its peers in time. The epoch ticker keeps the
/// normal priority, so time limits stay exact.
pub const GUEST_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`GUEST_NICE`] (Linux: nice is
/// per thread). Failing only costs fairness, so it is logged, not fatal.
fn lower_own_priority() {
    lower_own_priority_to(GUEST_NICE);
}

fn lower_own_priority_to(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(me), nice) {
            tracing::warn!("cannot lower a sandbox thread's priority: {error}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Runs `job` on a thread of its own at the lowest priority (nice 19) and
/// waits for it: background work such as compiling or loading a large
/// module, which must not take the CPU from the node's Raft and network
/// threads. Runs it on the caller's thread if no thread can be started.
pub fn at_lowest_priority<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    let job = Arc::new(Mutex::new(Some(job)));
    let theirs = Arc::clone(&job);
    let (slot, filled) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("coditect-background".into())
        .spawn(move || {
            lower_own_priority_to(19);
            if let Some(job) = lock(&theirs).take() {
                let _ = slot.send(job());
            }
        });
    if let Err(error) = spawned {
        tracing::warn!("cannot start a background thread ({error}); running in line");
    }
    match filled.recv() {
        Ok(value) => value,
        // Not started (or it panicked): run it here if it is still there.
        Err(_) => match lock(&job).take() {
            Some(job) => job(),
            None => panic!("the background job panicked"),
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside these locks and panics inside them are caught, so a
    // poisoned lock still guards consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cancels a run from any thread: the guest stops at its next epoch tick
/// (within `epoch_tick_ms`) with outcome `cancelled`. Cheap to clone; clones
/// share the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every run holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    shutdown: bool,
}

pub(crate) struct GuestThreads {
    state: Mutex<PoolState>,
    work: Condvar,
    stack_bytes: usize,
    max_idle: usize,
}

impl GuestThreads {
    pub(crate) fn new(stack_bytes: usize, max_idle: usize) -> Arc<Self> {
        Arc::new(GuestThreads {
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
            stack_bytes,
            max_idle,
        })
    }

    pub(crate) fn submit(self: &Arc<Self>, job: Job) -> Result<(), SandboxError> {
        let mut state = lock(&self.state);
        state.queue.push_back(job);
        // Every queued job needs a thread that will pick it up: wake an idle
        // one if there are enough, otherwise start another.
        if state.idle >= state.queue.len() {
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        let pool = Arc::clone(self);
        // Guests need threads of their own (see the crate docs): this is the
        // one place the sandbox starts them.
        let spawned = std::thread::Builder::new()
            .name("coditect-guest".into())
            .stack_size(self.stack_bytes)
            .spawn(move || pool.worker());
        if let Err(error) = spawned {
            let mut state = lock(&self.state);
            state.threads -= 1;
            // Take the job back out so it is not left without a thread.
            state.queue.pop_back();
            return Err(SandboxError::Exhausted(format!(
                "cannot start a guest thread: {error}"
            )));
        }
        Ok(())
    }

    fn worker(self: Arc<Self>) {
        lower_own_priority();
        loop {
            let job = {
                let mut state = lock(&self.state);
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break job;
                    }
                    if state.shutdown || state.idle >= self.max_idle {
                        state.threads -= 1;
                        return;
                    }
                    state.idle += 1;
                    let (guard, waited) = self
                        .work
                        .wait_timeout(state, IDLE_THREAD_LINGER)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    state = guard;
                    state.idle -= 1;
                    if waited.timed_out() && state.queue.is_empty() {
                        state.threads -= 1;
                        return;
                    }
                }
            };
            // A panic in a job must not take the warm thread with it; the
            // job's result slot reports it to the waiter.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }

    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.work.notify_all();
    }
}

#[derive(Default)]
struct TickerState {
    running_guests: usize,
    /// Whether the ticker waits on `wake` (only then is a notify, a
    /// system call, needed).
    waiting: bool,
    shutdown: bool,
}

/// Advances the engine's epoch every tick while at least one guest runs (and
/// [`TICKER_LINGER_TICKS`] after the last one ended), and sleeps on a
/// condition variable while none does.
pub(crate) struct EpochTicker {
    state: Mutex<TickerState>,
    wake: Condvar,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Arc<Self>, SandboxError> {
        let ticker = Arc::new(EpochTicker {
            state: Mutex::new(TickerState::default()),
            wake: Condvar::new(),
        });
        let shared = Arc::clone(&ticker);
        std::thread::Builder::new()
            .name("coditect-epoch".into())
            .spawn(move || shared.run(engine, tick))
            .map_err(|e| SandboxError::Exhausted(format!("cannot start the epoch thread: {e}")))?;
        Ok(ticker)
    }

    fn run(&self, engine: Engine, tick: Duration) {
        // Ticks in a row with no guest running. Short tasks back to back
        // leave gaps between guests; waiting in each would cost a wake (a
        // system call and a context switch) per task, so the ticker waits
        // only once the node has been without guests for a while.
        let mut idle_ticks = 0u32;
        loop {
            {
                let mut state = lock(&self.state);
                if state.running_guests == 0 {
                    idle_ticks = idle_ticks.saturating_add(1);
                } else {
                    idle_ticks = 0;
                }
                if idle_ticks > TICKER_LINGER_TICKS {
                    while state.running_guests == 0 && !state.shutdown {
                        state.waiting = true;
                        state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                        state.waiting = false;
                    }
                    idle_ticks = 0;
                }
                if state.shutdown {
                    return;
                }
            }
            std::thread::sleep(tick);
            engine.increment_epoch();
        }
    }

    /// Marks a guest as running until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> RunningGuard {
        let mut state = lock(&self.state);
        state.running_guests += 1;
        // Busy guests keep it ticking; only a waiting ticker needs a wake.
        if state.waiting {
            state.waiting = false;
            self.wake.notify_all();
        }
        RunningGuard(Arc::clone(self))
    }

    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.wake.notify_all();
    }
}

pub(crate) struct RunningGuard(Arc<EpochTicker>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        lock(&self.0.state).running_guests -= 1;
    }
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Outcome, SandboxError>>,
    filled: bool,
    waker: Option<Waker>,
}

/// One-shot hand-off of a run's result from its guest thread.
#[derive(Default)]
pub(crate) struct ResultSlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

impl ResultSlot {
    pub(crate) fn fill(&self, result: Result<Outcome, SandboxError>) {
        let waker = {
            let mut state = lock(&self.state);
            state.result = Some(result);
            state.filled = true;
            state.waker.take()
        };
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Fills the slot with an error if the job is dropped or panics before
/// producing a result, so a waiter never hangs.
pub(crate) struct FillOnDrop(pub(crate) Arc<ResultSlot>);

impl Drop for FillOnDrop {
    fn drop(&mut self) {
        let filled = lock(&self.0.state).filled;
        if !filled {
            self.0.fill(Err(SandboxError::Host(
                "the guest thread stopped without a result".into(),
            )));
        }
    }
}

/// A run in progress on a guest thread. Block with [`RunHandle::wait`], or
/// `.await` it from async code (it is a `Future` that is woken by the guest
/// thread, so no `spawn_blocking` is needed).
pub struct RunHandle {
    pub(crate) slot: Arc<ResultSlot>,
    pub(crate) cancel: CancelToken,
}

impl RunHandle {
    /// Blocks until the run ends.
    pub fn wait(self) -> Result<Outcome, SandboxError> {
        let mut state = lock(&self.slot.state);
        loop {
            if let Some(result) = state.result.take() {
                return result;
            }
            state = self
                .slot
                .ready
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks the guest to stop; the run then ends `cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The token that cancels this run.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
}

impl Future for RunHandle {
    type Output = Result<Outcome, SandboxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.slot.state);
        match state.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn pool_runs_many_jobs_concurrently() {
        let pool = GuestThreads::new(256 << 10, 4);
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..16 {
            let barrier = Arc::clone(&barrier);
            let done_tx = done_tx.clone();
            // All 16 must be running at once to pass the barrier.
            pool.submit(Box::new(move || {
                barrier.wait();
                done_tx.send(()).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..16 {
            done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        pool.shutdown();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guests_run_below_the_node_s_priority() {
        let pool = GuestThreads::new(256 << 10, 4);
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || {
            let me = rustix::thread::gettid();
            tx.send(rustix::process::getpriority_process(Some(me)).unwrap())
                .unwrap();
        }))
        .unwrap();
        let guest = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let caller = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        // (A test run already niced past GUEST_NICE cannot be lowered to it.)
        if caller < GUEST_NICE {
            assert_eq!(guest, GUEST_NICE, "the guest thread kept nice {guest}");
        }
        pool.shutdown();
    }

    #[test]
    fn a_panicking_job_reports_an_error_not_a_hang() {
        let pool = GuestThreads::new(256 << 10, 4);
        let slot = Arc::new(ResultSlot::default());
        let guard = FillOnDrop(Arc::clone(&slot));
        pool.submit(Box::new(move || {
            let _guard = guard;
            panic!("boom");
        }))
        .unwrap();
        let handle = RunHandle {
            slot,
            cancel: CancelToken::new(),
        };
        assert!(matches!(handle.wait(), Err(SandboxError::Host(_))));
        pool.shutdown();
    }
}
