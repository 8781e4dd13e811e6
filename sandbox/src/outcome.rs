//! What happened when a task ran: always a value, whatever the guest did.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The guest ran to completion: it returned from `_start` (exit code 0)
    /// or called `proc_exit` (its code). A non-zero exit code is still
    /// `succeeded`; expectations decide whether it was the right result.
    Succeeded,
    /// The guest trapped (see `Outcome::trap` for the kind).
    Trapped,
    /// The guest used up its fuel.
    OutOfFuel,
    /// The guest ran past its wall-clock timeout.
    TimedOut,
    /// The guest asked for more linear memory or table space than its limit.
    MemoryLimit,
    /// The module could not be compiled, linked or started.
    InvalidModule,
    /// The node cancelled the run (mission cancelled, node draining).
    Cancelled,
}

impl OutcomeKind {
    /// The snake_case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::Trapped => "trapped",
            OutcomeKind::OutOfFuel => "out_of_fuel",
            OutcomeKind::TimedOut => "timed_out",
            OutcomeKind::MemoryLimit => "memory_limit",
            OutcomeKind::InvalidModule => "invalid_module",
            OutcomeKind::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regular file the guest left in `/output`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to `/output`, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the contents.
    pub sha256: String,
}

/// Severity of a guest log line (`coditect.log` level 0..=4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Level 0.
    Trace,
    /// Level 1.
    Debug,
    /// Level 2 (and any unknown level).
    Info,
    /// Level 3.
    Warn,
    /// Level 4.
    Error,
}

impl LogLevel {
    pub(crate) fn from_guest(level: i32) -> Self {
        match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// One structured log line from the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// The text (lossy UTF-8, at most 4 KiB).
    pub message: String,
}

/// The guest's latest progress report (`coditect.progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in total (0 when unknown).
    pub total: u64,
}

/// Everything the node learns from one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How the run ended.
    pub kind: OutcomeKind,
    /// The guest's exit code when it ran to completion, else `None`.
    pub exit_code: Option<i32>,
    /// One human-readable sentence (or validation message) about the end.
    pub message: String,
    /// Trap kind in snake_case (`stack_overflow`, `memory_out_of_bounds`,
    /// `unreachable_code_reached`, `host_error`, `output_limit`, ...) when trapped.
    pub trap: Option<String>,
    /// Captured standard output (lossy UTF-8, at most `output_mb`).
    pub stdout: String,
    /// Captured standard error (lossy UTF-8, at most `output_mb`).
    pub stderr: String,
    /// Standard output went past its cap and was cut.
    pub stdout_truncated: bool,
    /// Standard error went past its cap and was cut.
    pub stderr_truncated: bool,
    /// `/output` went past its cap (files beyond it were removed) or held
    /// entries that are not regular files (removed).
    pub output_truncated: bool,
    /// Regular files left in `/output`, sorted by path.
    pub files: Vec<OutputFile>,
    /// Structured log lines the guest emitted.
    pub logs: Vec<LogLine>,
    /// Log lines dropped beyond the per-task cap.
    pub logs_dropped: u64,
    /// The last progress report.
    pub progress: Option<Progress>,
    /// Fuel consumed, including nested modules run through `coditect.run_module`.
    /// For `timed_out` and `cancelled` it is a lower bound: wasmtime does not
    /// flush the fuel counter of a loop that makes no calls when an epoch
    /// interruption stops it.
    pub fuel_used: u64,
    /// Largest total linear memory the guest held, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time from the start of instantiation to the end of the run.
    pub wall_ms: u64,
    /// Wall time in microseconds (finer than `wall_ms`, for benchmarks).
    pub wall_us: u64,
    /// `sha256:<hex>` of the module, when it was known.
    pub module_digest: Option<String>,
}

impl Outcome {
    /// An outcome for a module that never ran because it is unusable.
    pub fn invalid_module(message: impl Into<String>) -> Self {
        Outcome {
            kind: OutcomeKind::InvalidModule,
            exit_code: None,
            message: message.into(),
            trap: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            output_truncated: false,
            files: Vec::new(),
            logs: Vec::new(),
            logs_dropped: 0,
            progress: None,
            fuel_used: 0,
            peak_memory_bytes: 0,
            wall_ms: 0,
            wall_us: 0,
            module_digest: None,
        }
    }

    /// Ran to completion with exit code 0.
    pub fn is_success(&self) -> bool {
        self.kind == OutcomeKind::Succeeded && self.exit_code == Some(0)
    }

    /// Some captured output (stdout, stderr or `/output`) was cut at its cap.
    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated || self.output_truncated
    }

    /// Exit status for `coditect run-task`: 2 when the module was unusable
    /// before running, 0 for any outcome the guest ran to.
    pub fn cli_exit_code(&self) -> i32 {
        if self.kind == OutcomeKind::InvalidModule {
            2
        } else {
            0
        }
    }

    /// The object `coditect run-task --json` prints (interfaces.md), with a
    /// few extra fields after the named ones.
    pub fn to_cli_json(&self) -> serde_json::Value {
        serde_json::json!({
            "outcome": self.kind.as_str(),
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "truncated": self.truncated(),
            "fuel_used": self.fuel_used,
            "wall_ms": self.wall_ms,
            "message": self.message,
            "trap": self.trap,
            "peak_memory_bytes": self.peak_memory_bytes,
            "files": self.files,
            "logs": self.logs,
            "progress": self.progress,
            "module_digest": self.module_digest,
        })
    }

    /// A short multi-line report for people: outcome, costs, files, then the
    /// captured output.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let _ = write!(text, "outcome: {}", self.kind);
        if let Some(code) = self.exit_code {
            let _ = write!(text, " (exit code {code})");
        }
        if let Some(trap) = &self.trap {
            let _ = write!(text, " [{trap}]");
        }
        text.push('\n');
        if !self.message.is_empty() {
            let _ = writeln!(text, "message: {}", first_line(&self.message));
        }
        let _ = writeln!(
            text,
            "fuel used: {}, peak memory: {:.1} MiB, wall time: {} ms",
            self.fuel_used,
            self.peak_memory_bytes as f64 / (1024.0 * 1024.0),
            self.wall_ms
        );
        for file in &self.files {
            let _ = writeln!(
                text,
                "output file: {} ({} bytes, {})",
                file.path, file.size, file.sha256
            );
        }
        if let Some(progress) = self.progress {
            let _ = writeln!(text, "progress: {}/{}", progress.done, progress.total);
        }
        for line in &self.logs {
            let _ = writeln!(text, "log {:?}: {}", line.level, line.message);
        }
        if self.truncated() {
            let _ = writeln!(text, "note: some output was truncated at its cap");
        }
        for (name, body) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !body.is_empty() {
                let _ = writeln!(text, "--- {name} ---");
                text.push_str(body);
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        text
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_json_has_exactly_the_named_fields_first() {
        let mut outcome = Outcome::invalid_module("bad magic");
        outcome.stdout = "x".into();
        let json = outcome.to_cli_json();
        for key in [
            "outcome",
            "exit_code",
            "stdout",
            "stderr",
            "truncated",
            "fuel_used",
            "wall_ms",
            "message",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["outcome"], "invalid_module");
        assert!(json["exit_code"].is_null());
        assert_eq!(json["truncated"], false);
        assert_eq!(outcome.cli_exit_code(), 2);
    }

    #[test]
    fn outcome_round_trips_through_json() {
        let mut outcome = Outcome::invalid_module("m");
        outcome.kind = OutcomeKind::OutOfFuel;
        outcome.files.push(OutputFile {
            path: "a/b.txt".into(),
            size: 3,
            sha256: "sha256:00".into(),
        });
        let text = serde_json::to_string(&outcome).unwrap();
        assert!(text.contains("\"out_of_fuel\""));
        let back: Outcome = serde_json::from_str(&text).unwrap();
        assert_eq!(back, outcome);
        assert_eq!(back.cli_exit_code(), 0);
    }

    #[test]
    fn summary_names_the_outcome_and_output() {
        let mut outcome = Outcome::invalid_module("");
        outcome.kind = OutcomeKind::Succeeded;
        outcome.exit_code = Some(3);
        outcome.stdout = "hello".into();
        let summary = outcome.summary();
        assert!(summary.starts_with("outcome: succeeded (exit code 3)"));
        assert!(summary.contains("--- stdout ---\nhello\n"));
    }
}
