//! The mission data model shared by both input formats and by validation.
//!
//! The serde form of these types is the JSON the CLI and the leader exchange
//! (and what a replicated mission can store); the TOML reader in
//! `toml_format.rs` builds them by hand so its errors can name the task.

use std::fmt;
use std::str::FromStr;

use coditect_memory::{Digest, DigestParseError};
use coditect_sandbox::Limits;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of a module path that names a module the node provides itself
/// (the agent kinds' defaults); such paths are never looked up on disk.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A whole mission: a name and its tasks, in file order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissionSpec {
    /// Human label: TOML `name`, or the markdown's first `#` heading.
    pub name: String,
    /// The tasks, in the order the file lists them.
    pub tasks: Vec<TaskSpec>,
    /// The code base every task sees at /workspace: a folder (relative to
    /// the mission file) before `coditect submit` uploads it, the
    /// `sha256:` digest of its tree after.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Fix rounds a failed test after a coder's change may start (TOML
    /// `max_fix_rounds`; `None`: the default, 2).
    #[serde(default)]
    pub max_fix_rounds: Option<u32>,
}

/// One task of a mission. Every field but `id` and `module` has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the mission; `[A-Za-z0-9._-]`, starting with a letter
    /// or digit (see [`crate::mission::check_id`]).
    pub id: String,
    /// The wasm module to run.
    pub module: ModuleRef,
    /// Ids of tasks that must succeed (or be done already) first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Capability tags a node must offer (`wasm`, or a `--capability` key).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Placement priority; P2 when the file names none.
    #[serde(default)]
    pub priority: Priority,
    /// Text handed to the guest as `/input/input.txt`.
    #[serde(default)]
    pub input: Option<String>,
    /// Files or folders copied under `/input/`: paths relative to the mission
    /// file when submitted, `sha256:` digests once the CLI uploaded them.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Hard sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Language-model calls the task may make (`[task.limits]
    /// max_llm_calls`; `None`: the default).
    #[serde(default)]
    pub max_llm_calls: Option<u32>,
    /// Language-model tokens the task may spend (`[task.limits]
    /// max_tokens`; `None`: the default).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// What a successful run looks like.
    #[serde(default)]
    pub expect: Expect,
    /// Already done (a checked markdown box): never run, and it satisfies
    /// the tasks that need it.
    #[serde(default)]
    pub done: bool,
    /// The agent kind a markdown task was routed to.
    #[serde(default)]
    pub agent: Option<String>,
    /// Human title (the markdown item's text without its id).
    #[serde(default)]
    pub title: Option<String>,
    /// The guest's arguments after its program name (for `builtin:python`,
    /// the script and its flags: `["/input/tool.py", "--flag"]`).
    #[serde(default)]
    pub args: Vec<String>,
}

impl TaskSpec {
    /// A task with every optional field at its default.
    pub fn new(id: impl Into<String>, module: ModuleRef) -> Self {
        TaskSpec {
            id: id.into(),
            module,
            needs: Vec::new(),
            requires: Vec::new(),
            priority: Priority::default(),
            input: None,
            inputs: Vec::new(),
            limits: Limits::default(),
            max_llm_calls: None,
            max_tokens: None,
            expect: Expect::default(),
            done: false,
            agent: None,
            title: None,
            args: Vec::new(),
        }
    }
}

/// Placement priority: P0 is the most urgent. The default is P2, so a task
/// that names no priority yields to any task explicitly marked P0 or P1 and
/// still goes before P3 ("later") work.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Priority {
    /// Most urgent.
    P0,
    /// Urgent.
    P1,
    /// Normal; the default.
    #[default]
    P2,
    /// Least urgent.
    P3,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];

    /// Its name, `P0` .. `P3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ();

    /// Accepts `P0` .. `P3` in either case; anything else is refused.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
            .ok_or(())
    }
}

/// What a task is expected to produce; a mismatch is a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// Required exit code; `Some(0)` by default, `None` (JSON `null`) accepts any.
    pub exit_code: Option<i32>,
    /// Text that stdout must contain.
    pub stdout_contains: Option<String>,
    /// Files that must exist under `/output`, relative to it.
    pub files: Vec<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            exit_code: Some(0),
            stdout_contains: None,
            files: Vec::new(),
        }
    }
}

/// Which module a task runs: a path (relative to the mission file, or
/// `builtin:<name>`) or the digest of a module already in the blob store.
/// Its serde form is the plain string, `sha256:<hex>` for a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleRef {
    /// A file path relative to the mission file, or `builtin:<name>`.
    Path(String),
    /// A module in the content-addressed blob store.
    Digest(Digest),
}

impl ModuleRef {
    /// Reads the string form: anything starting with `sha256:` must be a
    /// valid digest, so a mistyped digest is never taken for a file name.
    pub fn parse(text: &str) -> Result<Self, DigestParseError> {
        if text.starts_with("sha256:") {
            Digest::from_str(text).map(ModuleRef::Digest)
        } else {
            Ok(ModuleRef::Path(text.to_string()))
        }
    }

    /// Whether it names a module the node provides (`builtin:<name>`).
    pub fn is_builtin(&self) -> bool {
        matches!(self, ModuleRef::Path(p) if p.starts_with(BUILTIN_PREFIX))
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Path(path) => f.write_str(path),
            ModuleRef::Digest(digest) => fmt::Display::fmt(digest, f),
        }
    }
}

impl Serialize for ModuleRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModuleRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ModuleRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_parses_both_cases_and_defaults_to_p2() {
        assert_eq!("p1".parse::<Priority>(), Ok(Priority::P1));
        assert_eq!("P3".parse::<Priority>(), Ok(Priority::P3));
        assert!("P4".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::P2);
        assert!(Priority::P0 < Priority::P3);
    }

    #[test]
    fn module_ref_round_trips_as_a_string() {
        let digest = Digest::of(b"module");
        let task = TaskSpec::new("a", ModuleRef::Digest(digest));
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(&format!("\"module\":\"{digest}\"")), "{json}");
        let back: TaskSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, task);

        let path = ModuleRef::parse("agents/noop.wat").unwrap();
        assert_eq!(path, ModuleRef::Path("agents/noop.wat".into()));
        assert!(ModuleRef::parse("sha256:zz").is_err());
        assert!(ModuleRef::Path("builtin:coder".into()).is_builtin());
    }

    #[test]
    fn json_defaults_match_the_documented_ones() {
        let task: TaskSpec = serde_json::from_str(r#"{"id":"a","module":"x.wat"}"#).unwrap();
        assert_eq!(task, TaskSpec::new("a", ModuleRef::Path("x.wat".into())));
        assert_eq!(task.expect.exit_code, Some(0));
        let any: Expect = serde_json::from_str(r#"{"exit_code":null}"#).unwrap();
        assert_eq!(any.exit_code, None);
    }
}
