//! The engine, the prepared-module table and running guests.

use std::collections::HashMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap, UpdateDeadline, Val, ValType,
};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::{Miss, ModuleCache, ModuleDigest};
use crate::config::{Limits, SandboxConfig, TaskSpec, STDOUT_MEMORY_BYTES};
use crate::env::{GuestMonotonicClock, GuestWallClock, SeededRng};
use crate::error::SandboxError;
use crate::host::{
    self, GuestServices, HostState, NestedCall, NestedResult, NestedRunner, Stop, TaskLimiter,
};
use crate::outcome::{CapturedStdout, Outcome, OutcomeKind, OutputFile};
use crate::pipe::CappedPipe;
use crate::threads::{CancelToken, EpochTicker, FillOnDrop, GuestThreads, ResultSlot, RunHandle};

/// Epoch ticks between two checks of the size of `/output` while a guest runs.
const OUTPUT_CHECK_TICKS: u64 = 128;
/// Stack of a guest thread on top of the wasm stack limit, for host frames.
const HOST_STACK_BYTES: usize = 2 << 20;
/// Fuel between two yields of a task's guest to its driver. A guest runs
/// as a future (on a fiber) so that its fuel counter is written back at
/// every yield: wasmtime keeps the counter in a register inside call-free
/// code and writes it back only at calls, returns and yields, so a run
/// stopped by its timeout in a tight loop would otherwise report the fuel
/// of the loop's start. 10M units is about a millisecond of guest work.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;
/// Captured stdout/stderr of a nested instance (`coditect.run_module`).
const NESTED_OUTPUT_BYTES: usize = 64 << 10;
/// Most entries walked in `/output`; beyond it the rest is removed and flagged.
const MAX_OUTPUT_ENTRIES: usize = 100_000;
/// Longest message kept in an outcome.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Version of the `coditect` import module; bumped only if an import changes meaning.
pub const HOST_ABI_VERSION: &str = "coditect/1";

/// The `wasm` capability a node advertises: what its sandbox accepts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WasmCapability {
    /// Host ABI version ([`HOST_ABI_VERSION`]).
    pub host_abi: String,
    /// WASI flavour offered (`preview1`).
    pub wasi: String,
    /// Largest `memory_mb` a task may ask for here.
    pub max_memory_mb: u64,
    /// Largest module accepted.
    pub max_module_bytes: u64,
    /// Instance slots (running tasks plus nested instances).
    pub max_instances: u32,
    /// Whether fuel limits are enforced (always, outside benchmarks).
    pub fuel_metering: bool,
    /// Limits applied when a task names none.
    pub default_limits: Limits,
}

/// Where a prepared module came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSource {
    /// Already prepared in this process.
    Memory,
    /// Loaded (and verified) from the on-disk cache.
    Disk,
    /// Compiled now (and written to the on-disk cache).
    Compiled,
}

struct PreparedInner {
    digest: ModuleDigest,
    pre: InstancePre<HostState>,
    has_start: bool,
    source: CacheSource,
}

/// A compiled and linked module, ready to instantiate in microseconds. Cheap to clone.
#[derive(Clone)]
pub struct PreparedModule {
    inner: Arc<PreparedInner>,
}

impl PreparedModule {
    /// SHA-256 of the module bytes as submitted.
    pub fn digest(&self) -> ModuleDigest {
        self.inner.digest
    }

    /// Where this handle came from (memory, disk cache, fresh compile).
    pub fn source(&self) -> CacheSource {
        self.inner.source
    }

    /// The module has a WASI `_start` and can run as a task.
    pub fn is_command(&self) -> bool {
        self.inner.has_start
    }

    fn with_source(&self, source: CacheSource) -> Self {
        PreparedModule {
            inner: Arc::new(PreparedInner {
                digest: self.inner.digest,
                pre: self.inner.pre.clone(),
                has_start: self.inner.has_start,
                source,
            }),
        }
    }
}

impl std::fmt::Debug for PreparedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedModule")
            .field("digest", &self.inner.digest)
            .field("source", &self.inner.source)
            .finish()
    }
}

pub(crate) struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: SandboxConfig,
    cache: ModuleCache,
    modules: Mutex<HashMap<ModuleDigest, PreparedModule>>,
    threads: Arc<GuestThreads>,
    ticker: Arc<EpochTicker>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.threads.shutdown();
        self.ticker.shutdown();
    }
}

/// One node's wasmtime host. Cheap to clone; clones share the engine, the
/// module cache and the guest threads.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn engine_config(config: &SandboxConfig) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memory_size((config.max_memory_mb << 20) as usize)
        .table_elements(config.max_table_elements)
        .max_memories_per_module(1)
        .max_tables_per_module(4)
        // Keeping a little of each slot resident makes reuse cheaper than
        // zeroing it through page faults again.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10)
        // One fiber stack per running task (see `FUEL_YIELD_INTERVAL`),
        // its hot top kept resident between tasks like memories.
        .total_stacks(config.max_instances)
        .async_stack_keep_resident(256 << 10);
    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .consume_fuel(config.fuel_metering)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack_bytes)
        // A task's guest runs on a fiber stack: the wasm stack and host frames.
        .async_stack_size(config.max_wasm_stack_bytes + HOST_STACK_BYTES)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
        // One thread: a large module (the Python runtime) compiles once per
        // machine in the background at the lowest priority, and must not
        // take every core from the node's Raft threads meanwhile.
        .parallel_compilation(false);
    wasm
}

fn message_of(error: &wasmtime::Error) -> String {
    let mut text = format!("{error:#}");
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (index, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if index > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// How a guest call ended, before outputs are collected.
struct Ending {
    kind: OutcomeKind,
    exit_code: Option<i32>,
    trap: Option<String>,
    message: String,
}

fn classify(error: &wasmtime::Error) -> Ending {
    let ending = |kind, trap: Option<&str>, message: String| Ending {
        kind,
        exit_code: None,
        trap: trap.map(str::to_string),
        message,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ending {
            kind: OutcomeKind::Succeeded,
            exit_code: Some(exit.0),
            trap: None,
            message: format!("exited with code {}", exit.0),
        };
    }
    if let Some(stop) = error.downcast_ref::<Stop>() {
        let message = stop.to_string();
        return match stop {
            Stop::Cancelled => ending(OutcomeKind::Cancelled, None, message),
            Stop::TimedOut(_) => ending(OutcomeKind::TimedOut, None, message),
            Stop::OutputLimit(_) => ending(OutcomeKind::Trapped, Some("output_limit"), message),
            Stop::MemoryLimit { .. } | Stop::TableLimit { .. } => {
                ending(OutcomeKind::MemoryLimit, None, message)
            }
        };
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => ending(OutcomeKind::OutOfFuel, None, "all fuel consumed".into()),
            Trap::Interrupt => ending(OutcomeKind::TimedOut, None, message_of(error)),
            other => {
                let kind = snake_case(&format!("{other:?}"));
                ending(OutcomeKind::Trapped, Some(&kind), message_of(error))
            }
        };
    }
    ending(OutcomeKind::Trapped, Some("host_error"), message_of(error))
}

/// Settings for one store, shared by task runs and nested runs.
struct StoreSetup<'a> {
    limits: Limits,
    deadline: Instant,
    cancel: CancelToken,
    depth: u32,
    input_dir: Option<&'a Path>,
    output_dir: Option<&'a Path>,
    stdout: CappedPipe,
    stderr: CappedPipe,
    task: Option<&'a TaskSpec>,
    max_log_lines: usize,
}

impl Inner {
    fn new_store(
        self: &Arc<Self>,
        setup: StoreSetup<'_>,
    ) -> Result<Store<HostState>, SandboxError> {
        let env = Arc::clone(&self.config.guest_env);
        let seed = env.task_seed();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(setup.stdout)
            .stderr(setup.stderr)
            .allow_blocking_current_thread(true)
            .arg(
                setup
                    .task
                    .map(|task| task.program.as_str())
                    .unwrap_or("task"),
            )
            .wall_clock(GuestWallClock(Arc::clone(&env)))
            .monotonic_clock(GuestMonotonicClock(Arc::clone(&env)))
            .secure_random(SeededRng::new(seed, b"secure"))
            .insecure_random(SeededRng::new(seed, b"insecure"))
            .insecure_random_seed(u128::from_le_bytes(
                Sha256::digest([&seed[..], b"seed"].concat())[..16]
                    .try_into()
                    .unwrap_or([0; 16]),
            ));
        if let Some(task) = setup.task {
            wasi.args(&task.args);
            for (key, value) in &task.env {
                wasi.env(key, value);
            }
        }
        // Preopen order is part of the ABI: fd 3 is /input, fd 4 is /output,
        // fd 5 /workspace when there is one.
        if let Some(input) = setup.input_dir {
            wasi.preopened_dir(input, "/input", FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Io {
                    context: format!("opening input dir {}", input.display()),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
        }
        if let Some(output) = setup.output_dir {
            wasi.preopened_dir(output, "/output", FsPerms::ReadWrite)
                .map_err(|e| SandboxError::Io {
                    context: format!("opening output dir {}", output.display()),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
        }
        if let Some(workspace) = setup.task.and_then(|task| task.workspace_dir.as_deref()) {
            wasi.preopened_dir(workspace, "/workspace", FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Io {
                    context: format!("opening workspace dir {}", workspace.display()),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
        }
        if let Some(channel) = setup.task.and_then(|task| task.channel_dir.as_deref()) {
            wasi.preopened_dir(channel, "/coditect", FsPerms::ReadWrite)
                .map_err(|e| SandboxError::Io {
                    context: format!("opening channel dir {}", channel.display()),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
            let granted = setup
                .task
                .map(|task| task.capabilities.clone())
                .unwrap_or_default();
            wasi.stdin(crate::channel::Channel::new(channel, granted));
        }
        let (capabilities, on_progress) = match setup.task {
            Some(task) => (task.capabilities.clone(), task.on_progress.clone()),
            None => (Default::default(), None),
        };
        let state = HostState {
            wasi: wasi.build_p1(),
            limiter: TaskLimiter::new(&setup.limits, self.config.max_table_elements),
            services: GuestServices {
                sandbox: Some(Arc::clone(self) as Arc<dyn NestedRunner>),
                depth: setup.depth,
                limits: setup.limits,
                deadline: setup.deadline,
                cancel: setup.cancel.clone(),
                capabilities,
                on_progress,
                progress: None,
                logs: Vec::new(),
                logs_dropped: 0,
                max_log_lines: setup.max_log_lines,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.config.fuel_metering {
            store
                .set_fuel(setup.limits.fuel)
                .map_err(|e| SandboxError::Host(format!("{e:#}")))?;
        }
        let timeout_ms = setup.limits.timeout_ms;
        let deadline = setup.deadline;
        let cancel = setup.cancel;
        // The channel directory counts against the same cap as /output.
        let output_watch: Vec<(PathBuf, u64)> = setup
            .output_dir
            .into_iter()
            .chain(setup.task.and_then(|task| task.channel_dir.as_deref()))
            .map(|dir| (dir.to_path_buf(), setup.limits.output_bytes()))
            .collect();
        let mut ticks: u64 = 0;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks += 1;
            if cancel.is_cancelled() {
                return Err(Stop::Cancelled.into());
            }
            #[allow(clippy::disallowed_methods)] // the host's own timeout; guests never see it
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::TimedOut(timeout_ms).into());
            }
            if ticks.is_multiple_of(OUTPUT_CHECK_TICKS) {
                for (dir, cap) in &output_watch {
                    if directory_size(dir) > *cap {
                        return Err(Stop::OutputLimit(*cap).into());
                    }
                }
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(store)
    }

    fn lookup_memory(&self, digest: &ModuleDigest) -> Option<PreparedModule> {
        let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        modules
            .get(digest)
            .map(|prepared| prepared.with_source(CacheSource::Memory))
    }

    fn remember(&self, prepared: &PreparedModule) {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if modules.len() >= self.config.max_cached_modules {
            // Any victim will do: a dropped module is reloaded from disk on demand.
            if let Some(victim) = modules.keys().next().copied() {
                modules.remove(&victim);
            }
        }
        modules.insert(prepared.inner.digest, prepared.clone());
    }

    fn link(
        &self,
        digest: ModuleDigest,
        module: Module,
        source: CacheSource,
    ) -> Result<PreparedModule, SandboxError> {
        let has_start = module.get_export("_start").is_some();
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::InvalidModule(message_of(&e)))?;
        let prepared = PreparedModule {
            inner: Arc::new(PreparedInner {
                digest,
                pre,
                has_start,
                source,
            }),
        };
        self.remember(&prepared);
        Ok(prepared)
    }

    fn prepare(&self, bytes: &[u8]) -> Result<PreparedModule, SandboxError> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(SandboxError::InvalidModule(format!(
                "module is {} bytes; the limit is {} bytes",
                bytes.len(),
                self.config.max_module_bytes
            )));
        }
        let digest = ModuleDigest::of(bytes);
        if let Some(prepared) = self.lookup_memory(&digest) {
            return Ok(prepared);
        }
        match self.cache.load(&self.engine, &digest) {
            Ok(module) => return self.link(digest, module, CacheSource::Disk),
            Err(Miss::Absent) => {}
            Err(Miss::Rejected(reason)) => {
                tracing::warn!(%digest, %reason, "recompiling module after rejecting its cached artifact");
            }
        }
        // One compile per machine: wait for anyone compiling it now, then
        // use their artifact if it appeared meanwhile.
        let _compiling = self.cache.compile_lock(&digest);
        if let Ok(module) = self.cache.load(&self.engine, &digest) {
            return self.link(digest, module, CacheSource::Disk);
        }
        let module = compile(&self.engine, bytes)?;
        match module.serialize() {
            Ok(artifact) => {
                if let Err(error) = self.cache.store(&digest, &artifact) {
                    tracing::warn!(%digest, %error, "could not write compiled module to the cache");
                }
            }
            Err(error) => {
                tracing::warn!(%digest, error = %message_of(&error), "could not serialize module")
            }
        }
        self.link(digest, module, CacheSource::Compiled)
    }

    fn prepared(&self, digest: &ModuleDigest) -> Option<PreparedModule> {
        if let Some(prepared) = self.lookup_memory(digest) {
            return Some(prepared);
        }
        let module = self.cache.load(&self.engine, digest).ok()?;
        self.link(*digest, module, CacheSource::Disk).ok()
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, SandboxError> {
    let is_binary = bytes.starts_with(b"\0asm");
    if !is_binary && std::str::from_utf8(bytes).is_err() {
        return Err(SandboxError::InvalidModule(
            "not a WebAssembly module: no \\0asm header, and not WAT text (not UTF-8)".into(),
        ));
    }
    Module::new(engine, bytes).map_err(|error| {
        let what = if is_binary {
            "WebAssembly binary"
        } else {
            "WAT text"
        };
        SandboxError::InvalidModule(format!("invalid {what}: {}", message_of(&error)))
    })
}

/// Deepest nesting of `coditect.run_module` (a nested module cannot nest again).
const MAX_NESTING_DEPTH: u32 = 1;

impl NestedRunner for Inner {
    fn run_nested(
        self: Arc<Self>,
        module_bytes: &[u8],
        function: &str,
        args: &[i64],
        call: NestedCall,
    ) -> NestedResult {
        run_nested(&self, module_bytes, function, args, call)
    }
}

fn run_nested(
    inner: &Arc<Inner>,
    module_bytes: &[u8],
    function: &str,
    args: &[i64],
    call: NestedCall,
) -> NestedResult {
    let fail = |status| NestedResult {
        status,
        value: 0,
        fuel_used: 0,
    };
    if call.depth > MAX_NESTING_DEPTH {
        return fail(host::STATUS_NOT_GRANTED);
    }
    if call.cancel.is_cancelled() {
        return fail(host::STATUS_CANCELLED);
    }
    #[allow(clippy::disallowed_methods)] // host-side timing, invisible to guests
    let started = Instant::now();
    if started >= call.deadline {
        return fail(host::STATUS_TIMED_OUT);
    }
    let Ok(prepared) = inner.prepare(module_bytes) else {
        return fail(host::STATUS_INVALID_MODULE);
    };
    let store = inner.new_store(StoreSetup {
        limits: call.limits,
        deadline: call.deadline,
        cancel: call.cancel,
        depth: call.depth,
        input_dir: None,
        output_dir: None,
        stdout: CappedPipe::new(NESTED_OUTPUT_BYTES),
        stderr: CappedPipe::new(NESTED_OUTPUT_BYTES),
        task: None,
        max_log_lines: call.max_log_lines,
    });
    let Ok(mut store) = store else {
        return fail(host::STATUS_TRAPPED);
    };
    let _running = inner.ticker.enter();
    let result = call_export(&mut store, &prepared, function, args);
    let fuel_used = if inner.config.fuel_metering {
        call.limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0))
    } else {
        0
    };
    let (status, value) = match result {
        Ok(Some(value)) => (host::STATUS_OK, value),
        Ok(None) => (host::STATUS_BAD_CALL, 0),
        Err(error) => {
            let status = match classify(&error).kind {
                OutcomeKind::Succeeded | OutcomeKind::Trapped => host::STATUS_TRAPPED,
                OutcomeKind::OutOfFuel => host::STATUS_OUT_OF_FUEL,
                OutcomeKind::TimedOut => host::STATUS_TIMED_OUT,
                OutcomeKind::MemoryLimit => host::STATUS_MEMORY_LIMIT,
                OutcomeKind::InvalidModule => host::STATUS_INVALID_MODULE,
                OutcomeKind::Cancelled => host::STATUS_CANCELLED,
            };
            (status, 0)
        }
    };
    NestedResult {
        status,
        value,
        fuel_used,
    }
}

/// Calls `function` with integer arguments; `Ok(None)` when there is no such
/// export or its signature is not integers-in, at most one integer out.
fn call_export(
    store: &mut Store<HostState>,
    prepared: &PreparedModule,
    function: &str,
    args: &[i64],
) -> wasmtime::Result<Option<i64>> {
    let instance = prepared.inner.pre.instantiate(&mut *store)?;
    if let Some(init) = instance.get_func(&mut *store, "_initialize") {
        init.typed::<(), ()>(&*store)?.call(&mut *store, ())?;
    }
    let Some(func) = instance.get_func(&mut *store, function) else {
        return Ok(None);
    };
    let ty = func.ty(&*store);
    let params: Vec<ValType> = ty.params().collect();
    let results: Vec<ValType> = ty.results().collect();
    if params.len() != args.len() || results.len() > 1 {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(args.len());
    for (param, arg) in params.iter().zip(args) {
        values.push(match param {
            ValType::I32 => Val::I32(*arg as i32),
            ValType::I64 => Val::I64(*arg),
            _ => return Ok(None),
        });
    }
    let mut out = match results.first() {
        None => vec![],
        Some(ValType::I32) => vec![Val::I32(0)],
        Some(ValType::I64) => vec![Val::I64(0)],
        Some(_) => return Ok(None),
    };
    func.call(&mut *store, &values, &mut out)?;
    Ok(Some(match out.first() {
        Some(Val::I32(value)) => i64::from(*value),
        Some(Val::I64(value)) => *value,
        _ => 0,
    }))
}

impl Sandbox {
    /// Builds the engine (pooling allocator, copy-on-write memory images,
    /// fuel, epoch interruption), the linker and the module cache, and starts
    /// the epoch thread.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        config.validate()?;
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| SandboxError::Host(format!("cannot create the engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)
            .map_err(|e| SandboxError::Host(format!("cannot build the linker: {e:#}")))?;
        let cache = ModuleCache::open(&config.cache_dir, &engine)?;
        let ticker =
            EpochTicker::start(engine.clone(), Duration::from_millis(config.epoch_tick_ms))?;
        let threads = GuestThreads::new(
            config.max_wasm_stack_bytes + HOST_STACK_BYTES,
            config.max_idle_threads,
        );
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                cache,
                modules: Mutex::new(HashMap::new()),
                threads,
                ticker,
            }),
        })
    }

    /// What the node advertises as its `wasm` capability.
    pub fn capability(&self) -> WasmCapability {
        let config = &self.inner.config;
        WasmCapability {
            host_abi: HOST_ABI_VERSION.to_string(),
            wasi: "preview1".to_string(),
            max_memory_mb: config.max_memory_mb,
            max_module_bytes: config.max_module_bytes as u64,
            max_instances: config.max_instances,
            fuel_metering: config.fuel_metering,
            default_limits: Limits::default(),
        }
    }

    /// The configuration this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Compiles (or loads from the cache) and links a module given as binary
    /// wasm or WAT text. Compiles at most once per digest per cache directory;
    /// call it when a module arrives, not when a task starts.
    pub fn prepare(&self, module_bytes: &[u8]) -> Result<PreparedModule, SandboxError> {
        self.inner.prepare(module_bytes)
    }

    /// A module prepared earlier, from memory or from the disk cache. Never
    /// compiles: `None` means the bytes must go through [`Sandbox::prepare`].
    pub fn prepared(&self, digest: &ModuleDigest) -> Option<PreparedModule> {
        self.inner.prepared(digest)
    }

    /// The module prepared for `digest` if it is in memory now; never
    /// touches the disk cache, so it may be called on async runtimes.
    pub fn prepared_in_memory(&self, digest: &ModuleDigest) -> Option<PreparedModule> {
        self.inner.lookup_memory(digest)
    }

    /// Where the compiled artifact of `digest` lives (whether or not it exists).
    pub fn cache_path(&self, digest: &ModuleDigest) -> PathBuf {
        self.inner.cache.path_for(digest)
    }

    /// Instantiates `module` in a fresh store (limiter, fuel, a WASI context
    /// without directories) on the calling thread and drops it without
    /// calling anything: a health check, and what the benchmark times as
    /// "instantiate from cache". A wasm `start` function, if the module has
    /// one, does run (under the default limits), so call this off async runtimes.
    pub fn instantiate_check(&self, module: &PreparedModule) -> Result<(), SandboxError> {
        #[allow(clippy::disallowed_methods)] // host-side deadline, invisible to guests
        let now = Instant::now();
        let limits = Limits::default();
        let mut store = self.inner.new_store(StoreSetup {
            limits,
            deadline: now + Duration::from_millis(limits.timeout_ms),
            cancel: CancelToken::new(),
            depth: 0,
            input_dir: None,
            output_dir: None,
            stdout: CappedPipe::new(NESTED_OUTPUT_BYTES),
            stderr: CappedPipe::new(NESTED_OUTPUT_BYTES),
            task: None,
            max_log_lines: 0,
        })?;
        match module.inner.pre.instantiate(&mut store) {
            Ok(_) => Ok(()),
            Err(error) if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                Err(SandboxError::Exhausted(message_of(&error)))
            }
            Err(error) => Err(SandboxError::Host(message_of(&error))),
        }
    }

    /// Starts a run on a guest thread and returns at once. The handle can be
    /// waited on, awaited, or cancelled; `cancel` also stops it.
    pub fn start(
        &self,
        module: &PreparedModule,
        task: TaskSpec,
        cancel: CancelToken,
    ) -> Result<RunHandle, SandboxError> {
        task.limits.validate()?;
        if task.limits.memory_mb > self.inner.config.max_memory_mb {
            return Err(SandboxError::InvalidConfig(format!(
                "memory_mb {} is above this node's slot size of {} MiB",
                task.limits.memory_mb, self.inner.config.max_memory_mb
            )));
        }
        let slot = Arc::new(ResultSlot::default());
        let guard = FillOnDrop(Arc::clone(&slot));
        let inner = Arc::clone(&self.inner);
        let module = module.clone();
        let job_cancel = cancel.clone();
        self.inner.threads.submit(Box::new(move || {
            let result = execute(&inner, &module, &task, job_cancel);
            guard.0.fill(result);
        }))?;
        Ok(RunHandle { slot, cancel })
    }

    /// Runs a task to its outcome on a guest thread, blocking the caller.
    pub fn run(&self, module: &PreparedModule, task: TaskSpec) -> Result<Outcome, SandboxError> {
        self.start(module, task, CancelToken::new())?.wait()
    }

    /// Like [`Sandbox::run`], stopped early (outcome `cancelled`) when `cancel` fires.
    pub fn run_with_cancel(
        &self,
        module: &PreparedModule,
        task: TaskSpec,
        cancel: &CancelToken,
    ) -> Result<Outcome, SandboxError> {
        self.start(module, task, cancel.clone())?.wait()
    }

    /// Prepares and runs in one call; an unusable module becomes an outcome
    /// of kind `invalid_module` instead of an error.
    pub fn run_bytes(
        &self,
        module_bytes: &[u8],
        task: TaskSpec,
        cancel: &CancelToken,
    ) -> Result<Outcome, SandboxError> {
        match self.prepare(module_bytes) {
            Ok(module) => self.run_with_cancel(&module, task, cancel),
            Err(SandboxError::InvalidModule(message)) => {
                let mut outcome = Outcome::invalid_module(message);
                outcome.module_digest = Some(ModuleDigest::of(module_bytes).to_string());
                Ok(outcome)
            }
            Err(other) => Err(other),
        }
    }
}

/// Runs one task on the current (guest) thread.
fn execute(
    inner: &Arc<Inner>,
    module: &PreparedModule,
    task: &TaskSpec,
    cancel: CancelToken,
) -> Result<Outcome, SandboxError> {
    #[allow(clippy::disallowed_methods)] // host-side timing, invisible to guests
    let started = Instant::now();
    let digest = module.digest().to_string();
    if !module.is_command() {
        let mut outcome = Outcome::invalid_module(
            "module has no `_start` export: a task must be a WASI command module",
        );
        outcome.module_digest = Some(digest);
        return Ok(outcome);
    }
    let limits = task.limits;
    let cap = usize::try_from(limits.output_bytes()).unwrap_or(usize::MAX);
    let spill_dir = task.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let stdout = CappedPipe::spilling(cap, STDOUT_MEMORY_BYTES, spill_dir);
    let stderr = CappedPipe::new(cap);
    let mut store = inner.new_store(StoreSetup {
        limits,
        deadline: started + Duration::from_millis(limits.timeout_ms),
        cancel,
        depth: 0,
        input_dir: Some(&task.input_dir),
        output_dir: Some(&task.output_dir),
        stdout: stdout.clone(),
        stderr: stderr.clone(),
        task: Some(task),
        max_log_lines: inner.config.max_log_lines,
    })?;
    if inner.config.fuel_metering {
        store
            .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
            .map_err(|e| SandboxError::Host(format!("{e:#}")))?;
    }
    let running = inner.ticker.enter();
    let ending = drive(run_start(&mut store, module))?;
    drop(running);
    let fuel_used = if inner.config.fuel_metering {
        limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0))
    } else {
        0
    };
    let state = store.into_data();
    let (files, output_truncated, output_empty) =
        collect_outputs(&task.output_dir, limits.output_bytes())?;
    let stdout = stdout.take();
    let stdout_truncated = stdout.truncated;
    let (stdout_text, stdout_capture) = CapturedStdout::split(stdout.head, stdout.spill);
    let stderr = stderr.take();
    let stderr_truncated = stderr.truncated;
    let wall = started.elapsed();
    Ok(Outcome {
        kind: ending.kind,
        exit_code: ending.exit_code,
        message: ending.message,
        trap: ending.trap,
        stdout: stdout_text,
        stdout_capture,
        stderr: String::from_utf8_lossy(&stderr.head).into_owned(),
        stdout_truncated,
        stderr_truncated,
        output_truncated,
        files,
        output_empty,
        logs: state.services.logs,
        logs_dropped: state.services.logs_dropped,
        progress: state.services.progress,
        fuel_used,
        peak_memory_bytes: state.limiter.peak_memory as u64,
        wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
        module_digest: Some(digest),
    })
}

/// Instantiates `module` and runs its `_start` as a future: the guest
/// yields every [`FUEL_YIELD_INTERVAL`] units of fuel (see there).
async fn run_start(
    store: &mut Store<HostState>,
    module: &PreparedModule,
) -> Result<Ending, SandboxError> {
    let instance = match module.inner.pre.instantiate_async(&mut *store).await {
        Err(error) if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
            return Err(SandboxError::Exhausted(message_of(&error)));
        }
        Err(error)
            if error.downcast_ref::<Stop>().is_some() || error.downcast_ref::<Trap>().is_some() =>
        {
            return Ok(classify(&error));
        }
        Err(error) => {
            return Ok(Ending {
                kind: OutcomeKind::InvalidModule,
                exit_code: None,
                trap: None,
                message: format!("cannot instantiate: {}", message_of(&error)),
            })
        }
        Ok(instance) => instance,
    };
    let start = match instance.get_typed_func::<(), ()>(&mut *store, "_start") {
        Ok(start) => start,
        Err(error) => return Ok(classify(&error)),
    };
    Ok(match start.call_async(&mut *store, ()).await {
        Ok(()) => Ending {
            kind: OutcomeKind::Succeeded,
            exit_code: Some(0),
            trap: None,
            message: "exited with code 0".into(),
        },
        Err(error) => classify(&error),
    })
}

/// Wakes the guest thread parked in [`drive`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to its end on this (guest) thread. A guest's future only
/// waits on its own yields, which wake it at once, so this is a loop of
/// polls; WASI calls inside block this thread as in a synchronous run.
fn drive<T>(future: impl std::future::Future<Output = T>) -> T {
    let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        // A yield wakes before it returns Pending: the token is set and
        // `park` returns at once; anything else wakes us when ready.
        std::thread::park();
    }
}

/// Total bytes of regular files under `dir` (symlinks are not followed).
fn directory_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_OUTPUT_ENTRIES {
                return u64::MAX;
            }
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0)
                }
                _ => {}
            }
        }
    }
    total
}

/// Lists the regular files in `/output` with their digests, in path order.
/// Entries that are not regular files or directories (symlinks the guest
/// made, for instance) are removed so nothing later follows them out of the
/// task directory; files past the cap are removed too. Both set the flag.
/// Last, whether `dir` held no entry at all.
fn collect_outputs(dir: &Path, cap: u64) -> Result<(Vec<OutputFile>, bool, bool), SandboxError> {
    let mut found: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut truncated = false;
    let mut entries = 0usize;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    let io = |path: &Path, error| SandboxError::io(format!("listing {}", path.display()), error);
    while let Some((current, prefix)) = pending.pop() {
        for entry in fs::read_dir(&current).map_err(|e| io(&current, e))? {
            let entry = entry.map_err(|e| io(&current, e))?;
            entries += 1;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(|e| io(&path, e))?;
            if found.len() + pending.len() >= MAX_OUTPUT_ENTRIES {
                truncated = true;
                remove_entry(&path, kind.is_dir());
            } else if kind.is_dir() {
                pending.push((path, relative));
            } else if kind.is_file() {
                let size = entry.metadata().map_err(|e| io(&path, e))?.len();
                found.push((relative, path, size));
            } else {
                truncated = true;
                remove_entry(&path, false);
            }
        }
    }
    found.sort();
    let mut total: u64 = 0;
    let mut files = Vec::with_capacity(found.len());
    for (relative, path, size) in found {
        if total.saturating_add(size) > cap {
            truncated = true;
            remove_entry(&path, false);
            continue;
        }
        total += size;
        files.push(OutputFile {
            path: relative,
            size,
            sha256: file_digest(&path)?,
        });
    }
    Ok((files, truncated, entries == 0))
}

fn remove_entry(path: &Path, is_dir: bool) {
    let removed = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(error) = removed {
        tracing::warn!(path = %path.display(), %error, "could not remove an output entry");
    }
}

fn file_digest(path: &Path) -> Result<String, SandboxError> {
    let mut file = fs::File::open(path)
        .map_err(|e| SandboxError::io(format!("reading output {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| SandboxError::io(format!("reading output {}", path.display()), e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_names_are_snake_case() {
        assert_eq!(snake_case("StackOverflow"), "stack_overflow");
        assert_eq!(
            snake_case("UnreachableCodeReached"),
            "unreachable_code_reached"
        );
    }
}
