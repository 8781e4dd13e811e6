//! `coditect-sandbox`: the wasmtime host that runs every Coditect task under
//! hard limits.
//!
//! # What this crate owns
//! - One wasmtime [`Engine`](wasmtime::Engine) per [`Sandbox`], tuned for many
//!   short instances: pooling allocator, copy-on-write memory images,
//!   `InstancePre` per module, fuel metering and epoch interruption.
//! - The compiled-module cache: keyed by the module's SHA-256
//!   ([`ModuleDigest`]), persisted under [`SandboxConfig::cache_dir`], each
//!   artifact verified against a keyed digest before `Module::deserialize`.
//!   A corrupted or foreign artifact is deleted and recompiled, never loaded.
//!   Compiling happens in [`Sandbox::prepare`], never in [`Sandbox::run`].
//! - Per-task limits ([`Limits`]): fuel, wall-clock timeout (epoch ticks),
//!   linear memory and table caps (a resource limiter), capped stdout,
//!   stderr and `/output`, and a maximum module size. Stdout past
//!   [`STDOUT_MEMORY_BYTES`] spills to disk, so it costs no memory.
//! - WASI preview 1 with two preopened directories, `/input`
//!   (read-only, fd 3) and `/output` (read-write, fd 4), then `/workspace`
//!   (read-only) and `/coditect` (the capability channel) for tasks given
//!   them; no environment
//!   variables, no network, one argument (`task`). Guest clocks and
//!   randomness come from the node's [`GuestEnv`] (the Env seam), so
//!   simulated runs are reproducible.
//! - Guest threads: guests run on threads the sandbox owns, never on the
//!   caller's async runtime. [`Sandbox::run`] blocks; [`Sandbox::start`]
//!   returns a [`RunHandle`] that can be waited on, `.await`ed (it is a
//!   `Future` woken by the guest thread; no `spawn_blocking` needed) or
//!   cancelled through a [`CancelToken`].
//! - [`Outcome`]: every run ends as a value (succeeded, trapped, out of
//!   fuel, timed out, memory limit, invalid module, cancelled) with exit
//!   code, captured output, files produced with digests, fuel used, peak
//!   memory and wall time. [`Outcome::to_cli_json`] is the object of
//!   `coditect run-task --json`; [`run_task_command`] is that command's body.
//!
//! It depends on no other Coditect crate (it is a leaf: `node` depends on it).
//!
//! # Use
//! ```no_run
//! use coditect_sandbox::{CancelToken, Limits, Sandbox, SandboxConfig, TaskSpec};
//!
//! # async fn example(module_bytes: Vec<u8>) -> Result<(), coditect_sandbox::SandboxError> {
//! let sandbox = Sandbox::new(SandboxConfig::new("data/modules"))?; // once per node
//! let module = sandbox.prepare(&module_bytes)?; // when the module arrives: compiles or loads
//! let task = TaskSpec::new("task/input", "task/output", Limits::default());
//! let cancel = CancelToken::new(); // keep a clone to stop the run on mission cancel
//! let outcome = sandbox.start(&module, task, cancel.clone())?.await?; // guest thread, not ours
//! println!("{}", outcome.summary());
//! # Ok(()) }
//! ```
//! The node advertises [`Sandbox::capability`] as its `wasm` capability.
//! Memory limits trap: growing linear memory or a table past the cap stops the
//! guest at once with outcome `memory_limit` (instead of `memory.grow`
//! returning -1). Every pooled memory slot reserves `max_memory_mb` plus a
//! guard region of virtual address space (not resident memory).
//!
//! # The `coditect` host ABI (import module `coditect`, version [`HOST_ABI_VERSION`])
//! All pointers are offsets into the guest's exported `memory`; a buffer
//! that falls outside it traps the guest (`host_error`).
//!
//! | import | signature | meaning |
//! | --- | --- | --- |
//! | `log` | `(level: i32, ptr: i32, len: i32)` | one structured log line; level 0 trace, 1 debug, 2 info, 3 warn, 4 error; kept in [`Outcome::logs`] (4 KiB per line, [`SandboxConfig::max_log_lines`] per task) and emitted through `tracing` |
//! | `progress` | `(done: i64, total: i64)` | progress report; the last one is in [`Outcome::progress`] and each is passed to [`TaskSpec::on_progress`] |
//! | `capability` | `(name_ptr, name_len, req_ptr, req_len, resp_ptr, resp_cap: i32) -> i64` | calls the capability the node granted under `name` ([`TaskSpec::grant`]); returns the full response length (only `resp_cap` bytes are written; call again with a larger buffer if needed), `-1` not granted, `-2` the capability failed |
//! | `run_module` | `(mod_ptr, mod_len, fn_ptr, fn_len, args_ptr, args_count, result_ptr: i32) -> i32` | runs the exported function `fn` of the module given as bytes (binary or WAT) in a fresh sandboxed instance with no preopens (its stdout and stderr are discarded; an `_initialize` export is called first); `args` are `args_count` (at most 16) little-endian i64 values, converted to the function's i32/i64 parameters; on status 0 the i32/i64 result is written as a little-endian i64 at `result_ptr`. Statuses: 0 ok, 1 invalid module, 2 bad call (no such export, other signature, wrong argument count), 3 trapped, 4 out of fuel, 5 timed out, 6 memory limit, 7 cancelled, -1 not granted (nested modules cannot nest again). The nested instance has the task's memory cap, shares its deadline and cancellation, and it may burn at most half of the caller's remaining fuel, and what it burns (plus 10 000 per call) is taken from the caller. |
//!
//! New capabilities are added by granting names, not by changing this ABI.
//!
//! # The capability channel (for guests that cannot import, like CPython)
//! A task with a [`TaskSpec::channel_dir`] sees it read-write as
//! `/coditect` (preopened after the others) and its stdin is the channel:
//! the guest writes a request to `/coditect/NAME.request`, then reads from
//! stdin one frame, `ok LEN\n` or `error LEN\n` followed by `LEN` bytes.
//! Reading takes the request away and calls the capability granted under
//! `NAME` on the guest's thread (requests at most [`MAX_REQUEST_BYTES`]);
//! with no request waiting, stdin is at its end. `agents/coditect.py` is
//! the Python side.
//!
//! # Invariants
//! - A guest never sees a host path other than its two directories, the
//!   host's environment, the network, or the host's clock and entropy.
//! - Output is bounded: stdout and stderr keep their first `output_mb`
//!   (stdout at most [`STDOUT_MEMORY_BYTES`] of it in memory, the rest in an
//!   unnamed file in [`TaskSpec::spill_dir`]);
//!   `/output` is checked while the guest runs (every 128 ticks) and after
//!   it ends; entries past the cap and anything that is not a regular file
//!   or directory (symlinks) are removed and flagged.
//! - A task's fuel covers the nested modules it runs.
//! - Only artifacts whose keyed digest verifies are deserialized.

mod cache;
mod channel;
mod cli;
mod config;
mod env;
mod error;
mod host;
mod outcome;
mod pipe;
mod sandbox;
mod threads;

pub use cache::ModuleDigest;
pub use channel::MAX_REQUEST_BYTES;
pub use cli::{run_task_command, run_task_command_with, RunOptions};
pub use config::{
    Capability, Limits, ProgressCallback, SandboxConfig, TaskSpec, MAX_FUEL, MAX_OUTPUT_MB,
    MAX_TIMEOUT_MS, STDOUT_MEMORY_BYTES, WASM32_MAX_MEMORY_MB,
};
pub use env::{DeterministicGuestEnv, GuestEnv, SystemGuestEnv};
pub use error::SandboxError;
pub use host::{
    STATUS_BAD_CALL, STATUS_CANCELLED, STATUS_CAPABILITY_FAILED, STATUS_INVALID_MODULE,
    STATUS_MEMORY_LIMIT, STATUS_NOT_GRANTED, STATUS_OK, STATUS_OUT_OF_FUEL, STATUS_TIMED_OUT,
    STATUS_TRAPPED,
};
pub use outcome::{CapturedStdout, LogLevel, LogLine, Outcome, OutcomeKind, OutputFile, Progress};
pub use sandbox::{CacheSource, PreparedModule, Sandbox, WasmCapability, HOST_ABI_VERSION};
pub use threads::{at_lowest_priority, CancelToken, RunHandle};
