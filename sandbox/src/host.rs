//! Per-store host state, the resource limiter and the `coditect` import module.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Caller, Extern, Linker, Memory, ResourceLimiter};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::config::{Capability, Limits, ProgressCallback};
use crate::outcome::{LogLevel, LogLine, Progress};
use crate::threads::CancelToken;

/// `coditect.capability` and `coditect.run_module`: the capability is not granted.
pub const STATUS_NOT_GRANTED: i32 = -1;
/// `coditect.capability`: the granted capability failed.
pub const STATUS_CAPABILITY_FAILED: i32 = -2;
/// `coditect.run_module`: the call ran and the result was written.
pub const STATUS_OK: i32 = 0;
/// `coditect.run_module`: the module bytes are not a usable module.
pub const STATUS_INVALID_MODULE: i32 = 1;
/// `coditect.run_module`: no such export, a signature other than i32/i64
/// parameters and at most one i32/i64 result, or the wrong number of arguments.
pub const STATUS_BAD_CALL: i32 = 2;
/// `coditect.run_module`: the function trapped.
pub const STATUS_TRAPPED: i32 = 3;
/// `coditect.run_module`: the nested run used up its fuel (half the caller's remaining fuel).
pub const STATUS_OUT_OF_FUEL: i32 = 4;
/// `coditect.run_module`: the caller's deadline passed during the nested run.
pub const STATUS_TIMED_OUT: i32 = 5;
/// `coditect.run_module`: the nested instance hit the memory limit.
pub const STATUS_MEMORY_LIMIT: i32 = 6;
/// `coditect.run_module`: the task was cancelled.
pub const STATUS_CANCELLED: i32 = 7;

/// Fuel charged for each `coditect.run_module` call on top of what the nested
/// instance burns, so a loop of calls to an empty function still costs fuel.
const RUN_MODULE_CALL_FUEL: u64 = 10_000;
/// Arguments accepted by `coditect.run_module`.
const MAX_NESTED_ARGS: i32 = 16;
/// Bytes kept of one log line.
const MAX_LOG_LINE_BYTES: usize = 4096;

/// Why the host stopped a guest; carried as the trap error and mapped to an outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    /// The node cancelled the run.
    #[error("cancelled by the node")]
    Cancelled,
    /// The wall-clock budget ran out.
    #[error("wall-clock timeout of {0} ms exceeded")]
    TimedOut(u64),
    /// `/output` grew past its cap while the guest ran.
    #[error("/output exceeded its cap of {0} bytes")]
    OutputLimit(u64),
    /// Linear memory would exceed the task's cap.
    #[error("memory limit of {limit} bytes exceeded: the guest asked for {desired} bytes")]
    MemoryLimit {
        /// The cap.
        limit: usize,
        /// What the guest asked for in total.
        desired: usize,
    },
    /// A table would exceed the node's element cap.
    #[error("table limit of {limit} elements exceeded: the guest asked for {desired}")]
    TableLimit {
        /// The cap.
        limit: usize,
        /// What the guest asked for.
        desired: usize,
    },
}

/// Enforces the task's memory and table caps and records peak memory.
///
/// Growing past the cap traps immediately (rather than making `memory.grow`
/// return -1) so a memory bomb ends as `memory_limit` instead of looping or
/// failing in some guest-specific way.
pub(crate) struct TaskLimiter {
    memory_limit: usize,
    table_limit: usize,
    memory_in_use: usize,
    pub(crate) peak_memory: usize,
}

impl TaskLimiter {
    pub(crate) fn new(limits: &Limits, table_limit: usize) -> Self {
        TaskLimiter {
            memory_limit: limits.memory_bytes(),
            table_limit,
            memory_in_use: 0,
            peak_memory: 0,
        }
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_in_use
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_limit {
            return Err(Stop::MemoryLimit {
                limit: self.memory_limit,
                desired: total,
            }
            .into());
        }
        self.memory_in_use = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_limit {
            return Err(Stop::TableLimit {
                limit: self.table_limit,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A nested run requested through `coditect.run_module`.
pub(crate) struct NestedCall {
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancelToken,
    pub(crate) depth: u32,
    pub(crate) max_log_lines: usize,
}

/// How a nested run ended: a status of the ABI, the returned value, the
/// fuel it used (charged to the caller).
pub(crate) struct NestedResult {
    pub(crate) status: i32,
    pub(crate) value: i64,
    pub(crate) fuel_used: u64,
}

/// What runs a nested module for `coditect.run_module` (the sandbox; a
/// trait so this module does not import the one that uses it).
pub(crate) trait NestedRunner: Send + Sync {
    /// Runs `function` of `module_bytes` with `args` under `call`.
    fn run_nested(
        self: Arc<Self>,
        module_bytes: &[u8],
        function: &str,
        args: &[i64],
        call: NestedCall,
    ) -> NestedResult;
}

/// What the `coditect` host functions need about the running task.
pub(crate) struct GuestServices {
    /// The sandbox, for nested runs; `None` where nesting is not allowed.
    pub(crate) sandbox: Option<Arc<dyn NestedRunner>>,
    pub(crate) depth: u32,
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancelToken,
    pub(crate) capabilities: BTreeMap<String, Arc<dyn Capability>>,
    pub(crate) on_progress: Option<ProgressCallback>,
    pub(crate) progress: Option<Progress>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: u64,
    pub(crate) max_log_lines: usize,
}

/// The `T` of every `Store<T>` the sandbox creates.
pub(crate) struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: TaskLimiter,
    pub(crate) services: GuestServices,
}

fn guest_memory(caller: &mut Caller<'_, HostState>, function: &str) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("coditect.{function}: the module exports no `memory`"))
}

fn read_guest(
    caller: &Caller<'_, HostState>,
    memory: Memory,
    function: &str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    start
        .checked_add(len)
        .and_then(|end| memory.data(caller).get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            wasmtime::format_err!("coditect.{function}: buffer {start}+{len} is out of bounds")
        })
}

fn write_guest(
    caller: &mut Caller<'_, HostState>,
    memory: Memory,
    function: &str,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let start = ptr as u32 as usize;
    start
        .checked_add(bytes.len())
        .and_then(|end| memory.data_mut(&mut *caller).get_mut(start..end))
        .map(|target| target.copy_from_slice(bytes))
        .ok_or_else(|| {
            wasmtime::format_err!(
                "coditect.{function}: buffer {start}+{} is out of bounds",
                bytes.len()
            )
        })
}

fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = guest_memory(&mut caller, "log")?;
    let mut bytes = read_guest(&caller, memory, "log", ptr, len)?;
    bytes.truncate(MAX_LOG_LINE_BYTES);
    let message = String::from_utf8_lossy(&bytes).into_owned();
    let level = LogLevel::from_guest(level);
    match level {
        LogLevel::Trace => tracing::trace!(target: "coditect_sandbox::guest", "{message}"),
        LogLevel::Debug => tracing::debug!(target: "coditect_sandbox::guest", "{message}"),
        LogLevel::Info => tracing::info!(target: "coditect_sandbox::guest", "{message}"),
        LogLevel::Warn => tracing::warn!(target: "coditect_sandbox::guest", "{message}"),
        LogLevel::Error => tracing::error!(target: "coditect_sandbox::guest", "{message}"),
    }
    let services = &mut caller.data_mut().services;
    if services.logs.len() < services.max_log_lines {
        services.logs.push(LogLine { level, message });
    } else {
        services.logs_dropped += 1;
    }
    Ok(())
}

fn progress(mut caller: Caller<'_, HostState>, done: i64, total: i64) {
    let report = Progress {
        done: done.max(0) as u64,
        total: total.max(0) as u64,
    };
    let services = &mut caller.data_mut().services;
    services.progress = Some(report);
    if let Some(callback) = &services.on_progress {
        callback(report);
    }
}

#[allow(clippy::too_many_arguments)] // the ABI passes buffers as pointer/length pairs
fn capability(
    mut caller: Caller<'_, HostState>,
    name_ptr: i32,
    name_len: i32,
    request_ptr: i32,
    request_len: i32,
    response_ptr: i32,
    response_cap: i32,
) -> wasmtime::Result<i64> {
    let memory = guest_memory(&mut caller, "capability")?;
    let name = read_guest(&caller, memory, "capability", name_ptr, name_len)?;
    let request = read_guest(&caller, memory, "capability", request_ptr, request_len)?;
    let granted = String::from_utf8(name)
        .ok()
        .and_then(|name| caller.data().services.capabilities.get(&name).cloned());
    let Some(granted) = granted else {
        return Ok(i64::from(STATUS_NOT_GRANTED));
    };
    match granted.call(&request) {
        Ok(response) => {
            let keep = response.len().min(response_cap.max(0) as usize);
            write_guest(
                &mut caller,
                memory,
                "capability",
                response_ptr,
                &response[..keep],
            )?;
            Ok(response.len() as i64)
        }
        Err(error) => {
            tracing::debug!(%error, "granted capability failed");
            Ok(i64::from(STATUS_CAPABILITY_FAILED))
        }
    }
}

#[allow(clippy::too_many_arguments)] // the ABI passes buffers as pointer/length pairs
fn run_module(
    mut caller: Caller<'_, HostState>,
    module_ptr: i32,
    module_len: i32,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_count: i32,
    result_ptr: i32,
) -> wasmtime::Result<i32> {
    let memory = guest_memory(&mut caller, "run_module")?;
    if !(0..=MAX_NESTED_ARGS).contains(&args_count) {
        return Ok(STATUS_BAD_CALL);
    }
    let module_bytes = read_guest(&caller, memory, "run_module", module_ptr, module_len)?;
    let name = read_guest(&caller, memory, "run_module", name_ptr, name_len)?;
    let raw_args = read_guest(&caller, memory, "run_module", args_ptr, args_count * 8)?;
    let Ok(name) = String::from_utf8(name) else {
        return Ok(STATUS_BAD_CALL);
    };
    let args: Vec<i64> = raw_args
        .chunks_exact(8)
        .map(|chunk| i64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])))
        .collect();
    let services = &caller.data().services;
    let Some(sandbox) = services.sandbox.clone() else {
        return Ok(STATUS_NOT_GRANTED);
    };
    let metered = caller.get_fuel().ok();
    let call = NestedCall {
        limits: Limits {
            // Half of what is left, so a nested module that spins forever
            // still leaves the caller fuel to report it.
            fuel: (metered.unwrap_or(services.limits.fuel) / 2).max(1),
            ..services.limits
        },
        deadline: services.deadline,
        cancel: services.cancel.clone(),
        depth: services.depth + 1,
        max_log_lines: services.max_log_lines,
    };
    let result = sandbox.run_nested(&module_bytes, &name, &args, call);
    if let Some(remaining) = metered {
        // The nested instance's fuel comes out of the caller's budget.
        let charged = result.fuel_used.saturating_add(RUN_MODULE_CALL_FUEL);
        caller.set_fuel(remaining.saturating_sub(charged))?;
    }
    if result.status == STATUS_OK {
        write_guest(
            &mut caller,
            memory,
            "run_module",
            result_ptr,
            &result.value.to_le_bytes(),
        )?;
    }
    Ok(result.status)
}

/// Adds WASI preview 1 and the `coditect` module to the linker.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |state: &mut HostState| &mut state.wasi)?;
    linker.func_wrap("coditect", "log", log)?;
    linker.func_wrap("coditect", "progress", progress)?;
    linker.func_wrap("coditect", "capability", capability)?;
    linker.func_wrap("coditect", "run_module", run_module)?;
    Ok(())
}
