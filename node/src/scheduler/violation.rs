//! Consistency violation detection: compare what a task said it expects
//! with what its run produced, and name every difference as a categorized
//! violation that goes into the task's replicated history.
//!
//! Policy choices, each with its reason:
//! - A run that did not end on its own (trap, timeout, out of fuel, memory
//!   limit, invalid module, cancelled) yields exactly one violation of that
//!   kind; its expectations are not compared, because partial output would
//!   only add noise to the history.
//! - A run that ended on its own is compared field by field, and every
//!   mismatch is its own violation, so the history says everything that was
//!   wrong at once.
//! - `Cancelled` is recorded (so the history explains a rerun) but blames
//!   neither the task nor the node: retry does not charge an attempt for it
//!   and the breaker ignores it.
//! - Details are one line, capped at [`DETAIL_MAX_CHARS`], because they are
//!   replicated to every voter.

use std::collections::BTreeMap;
use std::fmt;

use coditect_consensus::NodeId;
use coditect_sandbox::{Outcome, OutcomeKind};
use serde::{Deserialize, Serialize};

/// The longest detail kept in a violation, in characters.
pub const DETAIL_MAX_CHARS: usize = 240;

/// What a task states it expects from a successful run (`[task.expect]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Expectation {
    /// The exit code a good run ends with; `None` accepts any. A task that
    /// states nothing expects 0 (see [`Expectation::default`]).
    pub exit_code: Option<i32>,
    /// Text standard output must contain.
    pub stdout_contains: Option<String>,
    /// Paths, relative to `/output`, the run must leave as regular files.
    pub files: Vec<String>,
    /// `/output` paths whose contents must have exactly this `sha256:<hex>` digest.
    pub file_digests: BTreeMap<String, String>,
}

impl Default for Expectation {
    /// Exit code 0 and nothing else, the same rule `coditect run-task` uses
    /// for success.
    fn default() -> Self {
        Expectation {
            exit_code: Some(0),
            stdout_contains: None,
            files: Vec::new(),
            file_digests: BTreeMap::new(),
        }
    }
}

/// Which stated expectation a run missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedField {
    /// `exit_code`.
    ExitCode,
    /// `stdout_contains`.
    Stdout,
    /// A path of `files` (or of `file_digests`) is missing.
    File,
    /// A file of `file_digests` has other contents.
    FileDigest,
}

impl ExpectedField {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedField::ExitCode => "exit_code",
            ExpectedField::Stdout => "stdout",
            ExpectedField::File => "file",
            ExpectedField::FileDigest => "file_digest",
        }
    }
}

/// Whose fault a violation is, which decides retry placement and the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The node: retry elsewhere if possible, and count it in the node's breaker.
    Node,
    /// The task itself: the same run would likely fail on any node.
    Task,
    /// Neither: the run was stopped from outside.
    Neither,
}

/// The category of a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// The guest trapped (stack overflow, out-of-bounds access, host error, ...).
    Trap,
    /// The guest ran past its wall-clock timeout.
    Timeout,
    /// The guest used up its fuel.
    OutOfFuel,
    /// The guest asked for more memory than its limit.
    MemoryLimit,
    /// The module could not be compiled, linked or started.
    InvalidModule,
    /// The task names something no worker can materialize or grant: an
    /// input path outside the grammar of `mission::grammar`, a malformed
    /// digest, limits past the hard maxima, or its run left an `/output`
    /// name outside that grammar. Retrying anywhere would fail the same way.
    InvalidTask,
    /// The guest ran to its end but missed a stated expectation.
    ExpectationMismatch {
        /// Which one.
        what: ExpectedField,
    },
    /// The owner stopped heartbeating and lost its lease while it held the task.
    LostNode,
    /// The owner stopped the run (mission cancelled or node draining).
    Cancelled,
    /// The owner could not run the task for a reason of its own (a blob no
    /// reachable node serves, a full disk, no sandbox slot).
    NodeError,
    /// A testing agent ran the workspace's tests and some failed or
    /// errored (it said so in `/output/violation.json`, naming them).
    TestsFailed,
    /// A model's answer could not be used: it did not parse (no fenced
    /// block naming a path) or did not apply (a path outside the
    /// workspace). The retry's prompt says what was wrong.
    BadModelOutput,
    /// The node's language model could not be reached (down, refusing,
    /// out of time, circuit open): another node, or later, may do.
    LlmUnavailable,
}

impl ViolationKind {
    /// Whose fault this kind of violation is.
    ///
    /// - `LostNode` and `Timeout` are the node's: fuel already bounds the
    ///   guest's own work deterministically, so a wall-clock timeout that
    ///   fires first points at a slow, overloaded or stuck node.
    /// - `Trap`, `OutOfFuel`, `MemoryLimit` (the task's own limit, not the
    ///   machine's), `InvalidModule`, `InvalidTask` and expectation
    ///   mismatches are the task's: they follow from its module, input and
    ///   limits, so they never count against a node's breaker.
    /// - `Cancelled` is nobody's.
    pub fn blame(self) -> Blame {
        match self {
            ViolationKind::LostNode
            | ViolationKind::Timeout
            | ViolationKind::NodeError
            | ViolationKind::LlmUnavailable => Blame::Node,
            ViolationKind::Trap
            | ViolationKind::OutOfFuel
            | ViolationKind::MemoryLimit
            | ViolationKind::InvalidModule
            | ViolationKind::InvalidTask
            | ViolationKind::ExpectationMismatch { .. }
            | ViolationKind::TestsFailed
            | ViolationKind::BadModelOutput => Blame::Task,
            ViolationKind::Cancelled => Blame::Neither,
        }
    }

    /// The snake_case name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Trap => "trap",
            ViolationKind::Timeout => "timeout",
            ViolationKind::OutOfFuel => "out_of_fuel",
            ViolationKind::MemoryLimit => "memory_limit",
            ViolationKind::InvalidModule => "invalid_module",
            ViolationKind::InvalidTask => "invalid_task",
            ViolationKind::ExpectationMismatch { .. } => "expectation_mismatch",
            ViolationKind::LostNode => "lost_node",
            ViolationKind::Cancelled => "cancelled",
            ViolationKind::NodeError => "node_error",
            ViolationKind::TestsFailed => "tests_failed",
            ViolationKind::BadModelOutput => "bad_model_output",
            ViolationKind::LlmUnavailable => "llm_unavailable",
        }
    }

    /// The kinds an agent may report itself in `/output/violation.json`.
    pub fn reported_by_agent(name: &str) -> Option<ViolationKind> {
        match name {
            "tests_failed" => Some(ViolationKind::TestsFailed),
            "bad_model_output" => Some(ViolationKind::BadModelOutput),
            "llm_unavailable" => Some(ViolationKind::LlmUnavailable),
            _ => None,
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViolationKind::ExpectationMismatch { what } => {
                write!(f, "expectation_mismatch ({})", what.as_str())
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// One categorized violation with a one-line detail for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The category.
    pub kind: ViolationKind,
    /// One line saying what happened, at most [`DETAIL_MAX_CHARS`] characters.
    pub detail: String,
}

impl Violation {
    /// A violation with its detail flattened to one capped line.
    pub fn new(kind: ViolationKind, detail: impl AsRef<str>) -> Self {
        Violation {
            kind,
            detail: one_line(detail.as_ref()),
        }
    }

    /// The task's owner lost its lease while holding the task; the runtime
    /// records this when it takes the task back, since no outcome exists.
    pub fn lost_node(node: NodeId, silent_ms: u64) -> Self {
        Violation::new(
            ViolationKind::LostNode,
            format!("node {node} stopped heartbeating ({silent_ms} ms silent) and lost its lease"),
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Compares a run's outcome with what the task expects. An empty list means
/// the run is a success to commit; anything else goes to retry policy.
///
/// `stdout_contains` is searched in the whole stdout, reading a spilled one
/// from its file (so call this off async runtimes). `Err` means that file
/// could not be read back: a problem of the node, not a violation.
pub fn check(expect: &Expectation, outcome: &Outcome) -> std::io::Result<Vec<Violation>> {
    let first_line_of_message = outcome.message.lines().next().unwrap_or("");
    let ended_early = match outcome.kind {
        OutcomeKind::Succeeded => None,
        OutcomeKind::Trapped => Some(Violation::new(
            ViolationKind::Trap,
            format!(
                "trapped ({}): {first_line_of_message}",
                outcome.trap.as_deref().unwrap_or("unknown")
            ),
        )),
        OutcomeKind::TimedOut => Some(Violation::new(
            ViolationKind::Timeout,
            format!("timed out after {} ms", outcome.wall_ms),
        )),
        OutcomeKind::OutOfFuel => Some(Violation::new(
            ViolationKind::OutOfFuel,
            format!("ran out of fuel after {} units", outcome.fuel_used),
        )),
        OutcomeKind::MemoryLimit => Some(Violation::new(
            ViolationKind::MemoryLimit,
            format!(
                "went past its memory limit (peak {} bytes): {first_line_of_message}",
                outcome.peak_memory_bytes
            ),
        )),
        OutcomeKind::InvalidModule => Some(Violation::new(
            ViolationKind::InvalidModule,
            format!("invalid module: {first_line_of_message}"),
        )),
        OutcomeKind::Cancelled => Some(Violation::new(
            ViolationKind::Cancelled,
            format!("cancelled: {first_line_of_message}"),
        )),
    };
    if let Some(violation) = ended_early {
        return Ok(vec![violation]);
    }

    let mut violations = Vec::new();
    let mismatch = |what| ViolationKind::ExpectationMismatch { what };
    if let Some(expected) = expect.exit_code {
        if outcome.exit_code != Some(expected) {
            let actual = outcome.exit_code.map_or_else(
                || "no exit code".to_string(),
                |code| format!("exit code {code}"),
            );
            // The guest's last word on stderr usually says why (a Python
            // traceback ends with the exception).
            let said = outcome
                .stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(|line| format!("; stderr: {line}"))
                .unwrap_or_default();
            violations.push(Violation::new(
                mismatch(ExpectedField::ExitCode),
                format!("{actual}, expected {expected}{said}"),
            ));
        }
    }
    if let Some(needle) = &expect.stdout_contains {
        if !outcome.stdout_contains(needle.as_bytes())? {
            let cut = if outcome.stdout_truncated {
                " (stdout was truncated at its cap)"
            } else {
                ""
            };
            violations.push(Violation::new(
                mismatch(ExpectedField::Stdout),
                format!("stdout does not contain {needle:?}{cut}"),
            ));
        }
    }
    let produced: BTreeMap<&str, &str> = outcome
        .files
        .iter()
        .map(|file| (file.path.as_str(), file.sha256.as_str()))
        .collect();
    let cut = if outcome.output_truncated {
        " (/output was truncated at its cap)"
    } else {
        ""
    };
    for path in &expect.files {
        if !produced.contains_key(path.as_str()) && !expect.file_digests.contains_key(path) {
            violations.push(Violation::new(
                mismatch(ExpectedField::File),
                format!("missing /output file {path:?}{cut}"),
            ));
        }
    }
    for (path, digest) in &expect.file_digests {
        match produced.get(path.as_str()) {
            None => violations.push(Violation::new(
                mismatch(ExpectedField::File),
                format!("missing /output file {path:?}{cut}"),
            )),
            Some(actual) if actual != digest => violations.push(Violation::new(
                mismatch(ExpectedField::FileDigest),
                format!("/output file {path:?} is {actual}, expected {digest}"),
            )),
            Some(_) => {}
        }
    }
    Ok(violations)
}

/// Flattens text to one line and caps it, cutting on a character boundary.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(DETAIL_MAX_CHARS) {
        Some((cut_at, _)) => {
            let mut capped = flat[..cut_at].to_string();
            capped.push('…');
            capped
        }
        None => flat.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_sandbox::OutputFile;
    use proptest::prelude::*;

    fn ran(exit_code: i32, stdout: &str, files: &[(&str, &str)]) -> Outcome {
        let mut outcome = Outcome::invalid_module("");
        outcome.kind = OutcomeKind::Succeeded;
        outcome.exit_code = Some(exit_code);
        outcome.stdout = stdout.into();
        outcome.files = files
            .iter()
            .map(|(path, sha256)| OutputFile {
                path: (*path).into(),
                size: 1,
                sha256: (*sha256).into(),
            })
            .collect();
        outcome
    }

    fn ended(kind: OutcomeKind, message: &str) -> Outcome {
        let mut outcome = Outcome::invalid_module(message);
        outcome.kind = kind;
        outcome
    }

    fn kinds(violations: &[Violation]) -> Vec<ViolationKind> {
        violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_run_meeting_every_expectation_has_no_violations() {
        let expect = Expectation {
            exit_code: Some(0),
            stdout_contains: Some("ok".into()),
            files: vec!["report.txt".into()],
            file_digests: [("sum.txt".to_string(), "sha256:ab".to_string())].into(),
        };
        let outcome = ran(
            0,
            "all ok\n",
            &[("report.txt", "sha256:00"), ("sum.txt", "sha256:ab")],
        );
        assert!(check(&expect, &outcome).unwrap().is_empty());
    }

    #[test]
    fn default_expectation_is_exit_code_zero() {
        assert!(check(&Expectation::default(), &ran(0, "", &[]))
            .unwrap()
            .is_empty());
        let violations = check(&Expectation::default(), &ran(3, "", &[])).unwrap();
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].to_string(),
            "expectation_mismatch (exit_code): exit code 3, expected 0"
        );
        let any_code = Expectation {
            exit_code: None,
            ..Expectation::default()
        };
        assert!(check(&any_code, &ran(3, "", &[])).unwrap().is_empty());
    }

    #[test]
    fn every_mismatch_is_reported_at_once() {
        let expect = Expectation {
            exit_code: Some(0),
            stdout_contains: Some("done".into()),
            files: vec!["a.txt".into()],
            file_digests: [
                ("b.txt".to_string(), "sha256:bb".to_string()),
                ("c.txt".to_string(), "sha256:cc".to_string()),
            ]
            .into(),
        };
        let mut outcome = ran(1, "partial", &[("b.txt", "sha256:xx")]);
        outcome.stdout_truncated = true;
        let violations = check(&expect, &outcome).unwrap();
        let what = |what| ViolationKind::ExpectationMismatch { what };
        assert_eq!(
            kinds(&violations),
            vec![
                what(ExpectedField::ExitCode),
                what(ExpectedField::Stdout),
                what(ExpectedField::File),
                what(ExpectedField::FileDigest),
                what(ExpectedField::File),
            ]
        );
        assert!(violations[1].detail.contains("truncated"));
        assert!(violations[2].detail.contains("a.txt"));
        assert_eq!(
            violations[3].detail,
            "/output file \"b.txt\" is sha256:xx, expected sha256:bb"
        );
    }

    #[test]
    fn early_endings_are_one_violation_of_their_kind() {
        let expect = Expectation {
            stdout_contains: Some("never".into()),
            ..Expectation::default()
        };
        let cases = [
            (OutcomeKind::Trapped, ViolationKind::Trap),
            (OutcomeKind::TimedOut, ViolationKind::Timeout),
            (OutcomeKind::OutOfFuel, ViolationKind::OutOfFuel),
            (OutcomeKind::MemoryLimit, ViolationKind::MemoryLimit),
            (OutcomeKind::InvalidModule, ViolationKind::InvalidModule),
            (OutcomeKind::Cancelled, ViolationKind::Cancelled),
        ];
        for (outcome_kind, violation_kind) in cases {
            let violations = check(&expect, &ended(outcome_kind, "why\nmore")).unwrap();
            assert_eq!(kinds(&violations), vec![violation_kind], "{outcome_kind}");
            assert!(!violations[0].detail.contains('\n'));
        }
        let mut trapped = ended(OutcomeKind::Trapped, "wasm trap: stack overflow");
        trapped.trap = Some("stack_overflow".into());
        assert_eq!(
            check(&expect, &trapped).unwrap()[0].detail,
            "trapped (stack_overflow): wasm trap: stack overflow"
        );
    }

    #[test]
    fn blame_splits_node_faults_from_task_faults() {
        assert_eq!(ViolationKind::LostNode.blame(), Blame::Node);
        assert_eq!(ViolationKind::Timeout.blame(), Blame::Node);
        assert_eq!(ViolationKind::MemoryLimit.blame(), Blame::Task);
        assert_eq!(ViolationKind::InvalidModule.blame(), Blame::Task);
        assert_eq!(ViolationKind::InvalidTask.blame(), Blame::Task);
        assert_eq!(ViolationKind::InvalidTask.as_str(), "invalid_task");
        assert_eq!(ViolationKind::Cancelled.blame(), Blame::Neither);
    }

    #[test]
    fn lost_node_names_the_node() {
        let violation = Violation::lost_node(7, 12_000);
        assert_eq!(violation.kind, ViolationKind::LostNode);
        assert!(violation.detail.contains("node 7"));
    }

    #[test]
    fn violations_serialize_for_the_replicated_state() {
        let violations = vec![
            Violation::new(
                ViolationKind::ExpectationMismatch {
                    what: ExpectedField::Stdout,
                },
                "x",
            ),
            Violation::lost_node(3, 1),
        ];
        let json = serde_json::to_string(&violations).unwrap();
        assert!(json.contains("\"expectation_mismatch\":{\"what\":\"stdout\"}"));
        assert!(json.contains("\"lost_node\""));
        let back: Vec<Violation> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, violations);
        let bytes = coditect_memory::codec::encode(&violations).unwrap();
        let back: Vec<Violation> = coditect_memory::codec::decode(&bytes).unwrap();
        assert_eq!(back, violations);
        let expect: Expectation = serde_json::from_str("{\"stdout_contains\": \"ok\"}").unwrap();
        assert_eq!(expect.exit_code, Some(0));
    }

    proptest! {
        /// Details stay one capped line whatever the guest printed.
        #[test]
        fn details_are_one_capped_line(message in ".{0,600}") {
            let violation = Violation::new(ViolationKind::Trap, &message);
            prop_assert!(!violation.detail.contains('\n'));
            prop_assert!(violation.detail.chars().count() <= DETAIL_MAX_CHARS + 1);
        }

        /// A run that ended on its own is a success exactly when its exit
        /// code, stdout and files match.
        #[test]
        fn check_agrees_with_a_direct_comparison(
            exit_code in -2i32..3,
            expected_code in proptest::option::of(-2i32..3),
            stdout in "[ab]{0,6}",
            needle in proptest::option::of("[ab]{1,2}"),
            produced in proptest::collection::btree_set("[xyz]", 0..3),
            wanted in proptest::collection::vec("[xyz]", 0..3),
        ) {
            let files: Vec<(&str, &str)> = produced.iter().map(|p| (p.as_str(), "sha256:0")).collect();
            let outcome = ran(exit_code, &stdout, &files);
            let expect = Expectation {
                exit_code: expected_code,
                stdout_contains: needle.clone(),
                files: wanted.clone(),
                file_digests: BTreeMap::new(),
            };
            let direct = expected_code.is_none_or(|code| code == exit_code)
                && needle.as_ref().is_none_or(|n| stdout.contains(n.as_str()))
                && wanted.iter().all(|path| produced.contains(path));
            prop_assert_eq!(check(&expect, &outcome).unwrap().is_empty(), direct);
        }
    }
}
