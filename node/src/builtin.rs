//! Modules every node ships: `builtin:<name>` in a mission names one of
//! these. Each node puts them into its blob store at startup, so their
//! digests are the same on every node running the same binary and a worker
//! never has to fetch them.
//!
//! - `noop`, `echo`, `math`: the example agents in `agents/`.
//! - The agents written in Python ([`PYTHON_AGENTS`]): a task naming one
//!   runs `builtin:python` with the agent's script (shipped in this binary
//!   and stored as a blob like the modules) under `/input/.coditect/`,
//!   next to `coditect.py`, the module agents call host capabilities with.
//!   `analyzer` and `tester` need no model; `coder`, `docs` and `general`
//!   (one script, three prompts) and `planner` (which leaves a mission
//!   fragment in `/output/subtasks.toml` that joins the running mission)
//!   need `llm`, which their tasks require.

use coditect_memory::{BlobStore, Digest};

const NOOP: &str = include_str!("../../agents/noop.wat");
const ECHO: &str = include_str!("../../agents/echo.wat");
const MATH: &str = include_str!("../../agents/math.wat");
const ANALYZER: &str = include_str!("../../agents/analyzer.py");
const TESTER: &str = include_str!("../../agents/tester.py");
const CODER: &str = include_str!("../../agents/coder.py");
const PLANNER: &str = include_str!("../../agents/planner.py");

/// `agents/coditect.py`: how Python agents reach the node's capabilities.
pub const CODITECT_MODULE: &str = include_str!("../../agents/coditect.py");

/// Where the module lands under `/input`.
pub const CODITECT_MODULE_PATH: &str = ".coditect/coditect.py";

/// The built-in agents written in Python: name and script.
pub const PYTHON_AGENTS: &[(&str, &str)] = &[
    ("analyzer", ANALYZER),
    ("tester", TESTER),
    ("coder", CODER),
    ("docs", CODER),
    ("general", CODER),
    ("planner", PLANNER),
];

/// The Python agents that ask a language model (their tasks require `llm`).
pub const MODEL_AGENTS: &[&str] = &["coder", "docs", "general", "planner"];

/// Where a Python agent's script lands under `/input`.
pub const AGENT_DIR: &str = ".coditect";

/// The script of Python agent `name`.
pub fn python_agent(name: &str) -> Option<&'static str> {
    PYTHON_AGENTS
        .iter()
        .find(|(agent, _)| *agent == name)
        .map(|(_, script)| *script)
}

/// The digest of Python agent `name`'s script (hashed once per process:
/// a markdown mission names an agent per task). [`seed`] stores it.
pub fn python_agent_digest(name: &str) -> Option<Digest> {
    static DIGESTS: std::sync::OnceLock<Vec<(&'static str, Digest)>> = std::sync::OnceLock::new();
    DIGESTS
        .get_or_init(|| {
            PYTHON_AGENTS
                .iter()
                .chain(&[("coditect", CODITECT_MODULE)])
                .map(|(agent, script)| (*agent, Digest::of(script.as_bytes())))
                .collect()
        })
        .iter()
        .find(|(agent, _)| *agent == name)
        .map(|(_, digest)| *digest)
}

/// The built-in modules by name.
pub const BUILTINS: &[(&str, &str)] = &[("noop", NOOP), ("echo", ECHO), ("math", MATH)];

/// The text of built-in module `name`.
pub fn module(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, text)| *text)
}

/// The digest of built-in module `name`.
pub fn digest(name: &str) -> Option<Digest> {
    module(name).map(|text| Digest::of(text.as_bytes()))
}

/// Stores every built-in module and agent script in `blobs`.
pub fn seed(blobs: &BlobStore) -> Result<(), String> {
    for (name, text) in BUILTINS
        .iter()
        .chain(PYTHON_AGENTS)
        .chain(&[("coditect", CODITECT_MODULE)])
    {
        blobs
            .put(text.as_bytes())
            .map_err(|error| format!("cannot store built-in module {name}: {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles_in_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = coditect_sandbox::Sandbox::new(coditect_sandbox::SandboxConfig::new(
            dir.path().join("cache"),
        ))
        .unwrap();
        for (name, text) in BUILTINS {
            assert!(
                sandbox.prepare(text.as_bytes()).is_ok(),
                "builtin {name} does not compile"
            );
        }
        assert!(digest("analyzer").is_none(), "a Python agent, not a module");
        assert!(python_agent("tester").unwrap().contains("tests.json"));
        assert_ne!(digest("math"), digest("echo"));
        assert_eq!(
            python_agent("docs"),
            python_agent("coder"),
            "one script, three kinds"
        );
        assert!(python_agent_digest("coditect").is_some());
        assert!(digest("nope").is_none());
    }
}
