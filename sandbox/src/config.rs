//! Node-wide sandbox configuration and per-task limits.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::env::{GuestEnv, SystemGuestEnv};
use crate::error::SandboxError;
use crate::outcome::Progress;

/// Largest linear memory a wasm32 guest can address.
pub const WASM32_MAX_MEMORY_MB: u64 = 4096;

/// Largest fuel budget a task may have: about a day of guest instructions
/// (the timeout's cap), and far enough below `u64::MAX` that adding the
/// charges of nested `run_module` calls can never overflow.
pub const MAX_FUEL: u64 = 100_000_000_000_000;

/// Longest wall-clock budget a task may have: 24 hours.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Largest `output_mb` a task may have. Stderr is held in memory up to this
/// cap, so it bounds what one guest can make the node hold; stdout keeps at
/// most [`STDOUT_MEMORY_BYTES`] in memory and spills the rest to disk.
pub const MAX_OUTPUT_MB: u64 = 1024;

/// Bytes of a task's stdout held in memory; the rest (up to `output_mb`)
/// goes to an unnamed file in [`TaskSpec::spill_dir`]. See [`crate::Outcome::stdout`].
pub const STDOUT_MEMORY_BYTES: usize = 1 << 20;

/// Hard limits for one task, as a mission's `[task.limits]` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deterministic CPU budget: roughly one unit per wasm instruction.
    pub fuel: u64,
    /// Cap on the guest's linear memory (and table storage), in MiB.
    pub memory_mb: u64,
    /// Wall-clock budget, enforced through epoch interruption.
    pub timeout_ms: u64,
    /// Cap for stdout, stderr and `/output` each; beyond it data is dropped and flagged.
    pub output_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 20_000_000_000,
            memory_mb: 256,
            timeout_ms: 60_000,
            output_mb: 16,
        }
    }
}

impl Limits {
    /// Rejects limits no task can run under, and limits past the hard
    /// maxima ([`MAX_FUEL`], [`WASM32_MAX_MEMORY_MB`], [`MAX_TIMEOUT_MS`],
    /// [`MAX_OUTPUT_MB`]) that no node grants.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let out_of = |name: &str, value: u64, max: u64| {
            (value == 0 || value > max)
                .then(|| format!("{name} must be between 1 and {max}, got {value}"))
        };
        let problem = out_of("fuel", self.fuel, MAX_FUEL)
            .or_else(|| out_of("memory_mb", self.memory_mb, WASM32_MAX_MEMORY_MB))
            .or_else(|| out_of("timeout_ms", self.timeout_ms, MAX_TIMEOUT_MS))
            .or_else(|| out_of("output_mb", self.output_mb, MAX_OUTPUT_MB));
        match problem {
            Some(problem) => Err(SandboxError::InvalidConfig(problem)),
            None => Ok(()),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb << 20).unwrap_or(usize::MAX)
    }

    pub(crate) fn output_bytes(&self) -> u64 {
        self.output_mb << 20
    }
}

/// Configuration of one node's [`crate::Sandbox`]; build with [`SandboxConfig::new`]
/// and adjust fields.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Directory of compiled-module artifacts; created if missing. Only this
    /// node's sandbox should write there.
    pub cache_dir: PathBuf,
    /// Largest module (binary or text) accepted by `prepare`.
    pub max_module_bytes: usize,
    /// Instance slots in the pooling allocator: the most guests (including
    /// nested ones started through `coditect.run_module`) alive at once.
    pub max_instances: u32,
    /// Size of each pooled linear-memory slot; no task may ask for more.
    pub max_memory_mb: u64,
    /// Most elements a guest table may hold.
    pub max_table_elements: usize,
    /// Native stack a guest may use before it traps with `stack_overflow`.
    pub max_wasm_stack_bytes: usize,
    /// Epoch tick: the granularity of timeouts and of cancellation.
    pub epoch_tick_ms: u64,
    /// Fuel metering; turning it off exists only to measure its cost. When off,
    /// `Limits::fuel` is ignored and `fuel_used` is 0.
    pub fuel_metering: bool,
    /// Prepared modules kept in memory (each holds its code and memory image).
    pub max_cached_modules: usize,
    /// Structured log lines (`coditect.log`) kept per task; more are counted and dropped.
    pub max_log_lines: usize,
    /// Idle guest threads kept warm for the next task.
    pub max_idle_threads: usize,
    /// Clock and randomness guests see: the node's Env seam.
    pub guest_env: Arc<dyn GuestEnv>,
}

impl SandboxConfig {
    /// Defaults for a production node: 1000 instance slots of up to 4 GiB
    /// (virtual reservations, not resident memory), 1 ms epoch ticks, system clock.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            cache_dir: cache_dir.into(),
            max_module_bytes: 64 << 20,
            max_instances: 1000,
            max_memory_mb: WASM32_MAX_MEMORY_MB,
            max_table_elements: 100_000,
            max_wasm_stack_bytes: 512 << 10,
            epoch_tick_ms: 1,
            fuel_metering: true,
            max_cached_modules: 256,
            max_log_lines: 1000,
            max_idle_threads: 64,
            guest_env: Arc::new(SystemGuestEnv::new()),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        let problem = if self.max_instances == 0 {
            "max_instances must be at least 1".to_string()
        } else if self.max_memory_mb == 0 || self.max_memory_mb > WASM32_MAX_MEMORY_MB {
            format!(
                "max_memory_mb must be between 1 and {WASM32_MAX_MEMORY_MB}, got {}",
                self.max_memory_mb
            )
        } else if self.epoch_tick_ms == 0 {
            "epoch_tick_ms must be at least 1".to_string()
        } else if self.max_wasm_stack_bytes < 64 << 10 {
            "max_wasm_stack_bytes must be at least 64 KiB".to_string()
        } else if self.max_module_bytes == 0 {
            "max_module_bytes must be at least 1".to_string()
        } else {
            return Ok(());
        };
        Err(SandboxError::InvalidConfig(problem))
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("cache_dir", &self.cache_dir)
            .field("max_module_bytes", &self.max_module_bytes)
            .field("max_instances", &self.max_instances)
            .field("max_memory_mb", &self.max_memory_mb)
            .field("max_table_elements", &self.max_table_elements)
            .field("max_wasm_stack_bytes", &self.max_wasm_stack_bytes)
            .field("epoch_tick_ms", &self.epoch_tick_ms)
            .field("fuel_metering", &self.fuel_metering)
            .field("max_cached_modules", &self.max_cached_modules)
            .field("max_log_lines", &self.max_log_lines)
            .field("max_idle_threads", &self.max_idle_threads)
            .finish_non_exhaustive()
    }
}

/// An optional host service the node grants to a task, reached by the guest
/// through `coditect.capability` (for example a language-model call).
pub trait Capability: Send + Sync {
    /// Answers one request. The error text is for logs; the guest sees only a
    /// failure status.
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String>;
}

/// Called on the guest thread each time the guest reports progress; it must
/// return quickly (send to a channel, update an atomic), as the guest waits.
pub type ProgressCallback = Arc<dyn Fn(Progress) + Send + Sync>;

/// One task to run: its directories, its limits and what the node grants it.
#[derive(Clone)]
pub struct TaskSpec {
    /// Host directory the guest sees read-only as `/input`.
    pub input_dir: PathBuf,
    /// Host directory the guest sees read-write as `/output`; it should start empty.
    pub output_dir: PathBuf,
    /// Host directory the guest sees read-only as `/workspace` (preopened
    /// after `/input` and `/output`), if the task has a workspace.
    pub workspace_dir: Option<PathBuf>,
    /// Host directory the guest sees read-write as `/coditect` (preopened
    /// last), its channel to the granted capabilities: with one, stdin
    /// answers the requests written there (see the crate docs). It should
    /// start empty and lie outside the other directories.
    pub channel_dir: Option<PathBuf>,
    /// The guest's `argv[0]` (`task` unless set; `python` for CPython).
    pub program: String,
    /// The guest's arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The guest's environment variables (nothing else is visible).
    pub env: Vec<(String, String)>,
    /// Host directory for the stdout past [`STDOUT_MEMORY_BYTES`], kept in an
    /// unnamed temporary file that goes away with the outcome. It should be
    /// outside `input_dir` and `output_dir` (the task's work directory, for
    /// instance); `None` means the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
    /// Hard limits for this run.
    pub limits: Limits,
    /// Capabilities by name; anything absent answers "not granted".
    pub capabilities: BTreeMap<String, Arc<dyn Capability>>,
    /// Live progress reports, if the node wants them.
    pub on_progress: Option<ProgressCallback>,
}

impl TaskSpec {
    /// A task with no capabilities and no progress callback.
    pub fn new(
        input_dir: impl Into<PathBuf>,
        output_dir: impl Into<PathBuf>,
        limits: Limits,
    ) -> Self {
        TaskSpec {
            input_dir: input_dir.into(),
            output_dir: output_dir.into(),
            workspace_dir: None,
            channel_dir: None,
            program: "task".into(),
            args: Vec::new(),
            env: Vec::new(),
            spill_dir: None,
            limits,
            capabilities: BTreeMap::new(),
            on_progress: None,
        }
    }

    /// Grants a capability under `name`.
    pub fn grant(mut self, name: impl Into<String>, capability: Arc<dyn Capability>) -> Self {
        self.capabilities.insert(name.into(), capability);
        self
    }

    /// Sets the directory stdout spills into past [`STDOUT_MEMORY_BYTES`].
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Sets the progress callback.
    pub fn on_progress(mut self, callback: ProgressCallback) -> Self {
        self.on_progress = Some(callback);
        self
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("input_dir", &self.input_dir)
            .field("output_dir", &self.output_dir)
            .field("spill_dir", &self.spill_dir)
            .field("limits", &self.limits)
            .field(
                "capabilities",
                &self.capabilities.keys().collect::<Vec<_>>(),
            )
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_the_mission_file_defaults() {
        let limits = Limits::default();
        assert_eq!(limits.fuel, 20_000_000_000);
        assert_eq!(limits.memory_mb, 256);
        assert_eq!(limits.timeout_ms, 60_000);
        assert_eq!(limits.output_mb, 16);
        limits.validate().unwrap();
    }

    #[test]
    fn limits_parse_partially_with_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"fuel": 5}"#).unwrap();
        assert_eq!(limits.fuel, 5);
        assert_eq!(limits.memory_mb, 256);
        assert!(serde_json::from_str::<Limits>(r#"{"fule": 5}"#).is_err());
    }

    #[test]
    fn impossible_limits_are_rejected() {
        for limits in [
            Limits {
                fuel: 0,
                ..Limits::default()
            },
            Limits {
                memory_mb: 5000,
                ..Limits::default()
            },
            Limits {
                timeout_ms: 0,
                ..Limits::default()
            },
            Limits {
                output_mb: 0,
                ..Limits::default()
            },
            Limits {
                fuel: MAX_FUEL + 1,
                ..Limits::default()
            },
            Limits {
                timeout_ms: MAX_TIMEOUT_MS + 1,
                ..Limits::default()
            },
            Limits {
                output_mb: MAX_OUTPUT_MB + 1,
                ..Limits::default()
            },
            Limits {
                fuel: i64::MAX as u64,
                ..Limits::default()
            },
        ] {
            assert!(matches!(
                limits.validate(),
                Err(SandboxError::InvalidConfig(_))
            ));
        }
        let at_the_maxima = Limits {
            fuel: MAX_FUEL,
            memory_mb: WASM32_MAX_MEMORY_MB,
            timeout_ms: MAX_TIMEOUT_MS,
            output_mb: MAX_OUTPUT_MB,
        };
        at_the_maxima.validate().unwrap();
        let message = Limits {
            timeout_ms: u64::MAX,
            ..Limits::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("timeout_ms must be between 1 and 86400000"),
            "{message}"
        );
    }
}
