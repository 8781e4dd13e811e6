//! What happened when a task ran: always a value, whatever the guest did.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Bytes read at a time from a spilled stdout.
const READ_CHUNK_BYTES: usize = 256 << 10;

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
    /// Captured standard output, lossy UTF-8: all of it when the guest wrote
    /// at most [`STDOUT_MEMORY_BYTES`](crate::STDOUT_MEMORY_BYTES), otherwise only those first bytes (the
    /// head) and the rest, up to `output_mb`, is in a spill file
    /// ([`Outcome::stdout_capture`]). [`Outcome::stdout_reader`] reads all of
    /// it as the guest wrote it.
    pub stdout: String,
    /// What `stdout` does not hold: the bytes past its head, in an unnamed
    /// file that goes away when the last clone of the outcome is dropped,
    /// and the head's exact bytes if they were not UTF-8. Not serialized: a
    /// deserialized outcome has only `stdout`.
    #[serde(skip)]
    pub stdout_capture: CapturedStdout,
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
    /// `/output` held nothing at all when the run ended (no file, no
    /// folder): the host has nothing to clear before it uses the folder
    /// again. False when unknown. Not part of the outcome's JSON.
    #[serde(skip)]
    pub output_empty: bool,
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
            stdout_capture: CapturedStdout::default(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            output_truncated: false,
            files: Vec::new(),
            output_empty: false,
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

    /// The exact bytes the guest wrote first to stdout (at most
    /// [`STDOUT_MEMORY_BYTES`](crate::STDOUT_MEMORY_BYTES)), which `stdout` holds as lossy UTF-8.
    pub fn stdout_head_bytes(&self) -> &[u8] {
        self.stdout_capture
            .raw_head
            .as_deref()
            .unwrap_or(self.stdout.as_bytes())
    }

    /// Bytes of stdout in all, head and spill.
    pub fn stdout_len(&self) -> u64 {
        self.stdout_head_bytes().len() as u64 + self.stdout_capture.spilled_bytes()
    }

    /// Reads the whole stdout, exactly as the guest wrote it (up to its
    /// cap): the head from memory, then the spill file. Memory use is one
    /// read buffer whatever the size; clones of the outcome can read at once.
    pub fn stdout_reader(&self) -> impl Read + '_ {
        let spill = self.stdout_capture.spill.as_ref().map(|spill| SpillReader {
            file: &spill.file,
            offset: 0,
            len: spill.len,
        });
        self.stdout_head_bytes().chain(OptionalReader(spill))
    }

    /// Whether stdout contains `needle` anywhere, head or spill, reading a
    /// spill file in chunks (so call it off async runtimes when
    /// [`CapturedStdout::is_spilled`]). `Err` only when the spill file
    /// cannot be read back.
    pub fn stdout_contains(&self, needle: &[u8]) -> io::Result<bool> {
        if needle.is_empty() {
            return Ok(true);
        }
        let finder = memchr::memmem::Finder::new(needle);
        if !self.stdout_capture.is_spilled() {
            return Ok(finder.find(self.stdout_head_bytes()).is_some());
        }
        // A match may straddle two reads: keep the last `needle.len() - 1`
        // bytes of each window in front of the next one.
        let overlap = needle.len() - 1;
        let mut reader = self.stdout_reader();
        let mut window = vec![0u8; overlap + READ_CHUNK_BYTES];
        let mut carried = 0;
        loop {
            let read = reader.read(&mut window[carried..])?;
            if read == 0 {
                return Ok(false);
            }
            let filled = carried + read;
            if finder.find(&window[..filled]).is_some() {
                return Ok(true);
            }
            carried = filled.min(overlap);
            window.copy_within(filled - carried..filled, 0);
        }
    }

    /// Reads a spilled stdout back into `stdout` (lossy UTF-8) and drops the
    /// spill file, so `stdout` holds all of it. This holds up to `output_mb`
    /// in memory: for one-shot tools such as `coditect run-task`, not nodes.
    pub fn inline_stdout(&mut self) -> io::Result<()> {
        if !self.stdout_capture.is_spilled() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(self.stdout_len()).unwrap_or(0));
        self.stdout_reader().read_to_end(&mut bytes)?;
        self.stdout = String::from_utf8_lossy(&bytes).into_owned();
        self.stdout_capture = CapturedStdout::default();
        Ok(())
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
        if self.stdout_capture.is_spilled() {
            let _ = writeln!(
                text,
                "note: stdout is {} bytes; only the first {} are shown",
                self.stdout_len(),
                self.stdout_head_bytes().len()
            );
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

/// The part of a run's stdout that [`Outcome::stdout`] does not hold; see
/// [`Outcome::stdout_capture`]. Clones share the spill file.
#[derive(Clone, Default)]
pub struct CapturedStdout {
    /// The head's exact bytes, kept only when they are not valid UTF-8
    /// (otherwise `Outcome::stdout` holds them and they are not doubled).
    raw_head: Option<Vec<u8>>,
    spill: Option<Arc<SpillFile>>,
}

/// Stdout past the head: an unnamed file and how many of its bytes count.
struct SpillFile {
    file: File,
    len: u64,
}

impl CapturedStdout {
    /// Splits what the stdout pipe kept into the text of `Outcome::stdout`
    /// and the rest.
    pub(crate) fn split(head: Vec<u8>, spill: Option<(File, u64)>) -> (String, CapturedStdout) {
        let spill = spill
            .filter(|(_, len)| *len > 0)
            .map(|(file, len)| Arc::new(SpillFile { file, len }));
        match String::from_utf8(head) {
            Ok(text) => (
                text,
                CapturedStdout {
                    raw_head: None,
                    spill,
                },
            ),
            Err(error) => {
                let raw = error.into_bytes();
                (
                    String::from_utf8_lossy(&raw).into_owned(),
                    CapturedStdout {
                        raw_head: Some(raw),
                        spill,
                    },
                )
            }
        }
    }

    /// Stdout went past [`STDOUT_MEMORY_BYTES`](crate::STDOUT_MEMORY_BYTES) and the rest is in a file.
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Bytes in the spill file (0 when nothing spilled).
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.as_ref().map_or(0, |spill| spill.len)
    }
}

impl std::fmt::Debug for CapturedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedStdout")
            .field("raw_head_bytes", &self.raw_head.as_ref().map(Vec::len))
            .field("spilled_bytes", &self.spilled_bytes())
            .finish()
    }
}

impl PartialEq for CapturedStdout {
    /// Equal when they hold the same head bytes and the same spill file.
    fn eq(&self, other: &Self) -> bool {
        let same_spill = match (&self.spill, &other.spill) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_spill && self.raw_head == other.raw_head
    }
}

impl Eq for CapturedStdout {}

/// Reads `len` bytes of a spill file from its start with positioned reads,
/// so readers sharing the file do not disturb one another.
struct SpillReader<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.offset;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let read = read_at(self.file, &mut buf[..want], self.offset)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stdout spill file is shorter than what was written to it",
            ));
        }
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// A reader that may be absent (reads nothing then).
struct OptionalReader<R>(Option<R>);

impl<R: Read> Read for OptionalReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(reader) => reader.read(buf),
            None => Ok(0),
        }
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

    /// An outcome whose stdout is `head` in memory and `spilled` in a file
    /// (which also holds `junk` past the valid length, as a failed write may leave).
    fn spilled(head: &[u8], spilled: &[u8], junk: &[u8]) -> Outcome {
        use std::io::Write as _;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(spilled).unwrap();
        file.write_all(junk).unwrap();
        let mut outcome = Outcome::invalid_module("");
        (outcome.stdout, outcome.stdout_capture) =
            CapturedStdout::split(head.to_vec(), Some((file, spilled.len() as u64)));
        outcome
    }

    fn read_all(outcome: &Outcome) -> Vec<u8> {
        let mut bytes = Vec::new();
        outcome.stdout_reader().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_reader_returns_head_then_spill_exactly() {
        let spill: Vec<u8> = (0..READ_CHUNK_BYTES * 2 + 17)
            .map(|i| (i % 253) as u8)
            .collect();
        // The head ends in the middle of a character: not UTF-8 on its own.
        let head = "héllo".as_bytes()[..2].to_vec();
        let outcome = spilled(&head, &spill, b"written after a failure");
        assert_eq!(outcome.stdout, "h\u{FFFD}");
        assert_eq!(outcome.stdout_head_bytes(), &head[..]);
        assert_eq!(outcome.stdout_len(), (head.len() + spill.len()) as u64);
        let expected = [head, spill].concat();
        assert_eq!(read_all(&outcome), expected);
        // Clones share the file and read independently.
        let clone = outcome.clone();
        let mut first = outcome.stdout_reader();
        let mut some = [0u8; 5];
        first.read_exact(&mut some).unwrap();
        assert_eq!(read_all(&clone), expected);
        assert_eq!(clone, outcome);
        // A deserialized outcome has only the head.
        let text = serde_json::to_string(&outcome).unwrap();
        let back: Outcome = serde_json::from_str(&text).unwrap();
        assert!(!back.stdout_capture.is_spilled());
    }

    #[test]
    fn contains_finds_a_needle_anywhere_even_across_reads() {
        let spill_len = READ_CHUNK_BYTES * 3;
        let head = vec![b'.'; 1000];
        let needle = b"the needle";
        // Across the head's end, across the first read of the spill, at the end.
        let mut places = vec![995, 1000 + READ_CHUNK_BYTES - 4];
        places.push(1000 + spill_len - needle.len());
        for at in places {
            let mut all = [head.clone(), vec![b'.'; spill_len]].concat();
            all[at..at + needle.len()].copy_from_slice(needle);
            let outcome = spilled(&all[..1000], &all[1000..], needle);
            assert!(outcome.stdout_contains(needle).unwrap(), "at {at}");
            assert!(outcome.stdout_contains(b"e needle").unwrap(), "at {at}");
            assert!(!outcome.stdout_contains(b"the needles").unwrap(), "at {at}");
        }
        // Bytes past the valid length do not count.
        let outcome = spilled(&head, &[b'.'; 10], needle);
        assert!(!outcome.stdout_contains(needle).unwrap());
        assert!(outcome.stdout_contains(b"").unwrap());
        // Without a spill, the head is searched.
        let mut plain = Outcome::invalid_module("");
        plain.stdout = "all ok".into();
        assert!(plain.stdout_contains(b"ok").unwrap());
        assert!(!plain.stdout_contains(b"ko").unwrap());
    }

    #[test]
    fn inline_stdout_reads_the_spill_back() {
        let mut outcome = spilled(b"head ", b"and the rest", b"");
        assert!(outcome.summary().contains("note: stdout is 17 bytes"));
        outcome.inline_stdout().unwrap();
        assert_eq!(outcome.stdout, "head and the rest");
        assert!(!outcome.stdout_capture.is_spilled());
        assert_eq!(read_all(&outcome), b"head and the rest");
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
