//! Routing markdown tasks to agent kinds (the seeds' "agent mapping" idea).
//!
//! A markdown task names no module, so its text is matched against an
//! ordered keyword list; the first keyword that matches picks an agent kind,
//! and the kind names the module to run and the capabilities a node needs
//! for it. The node config carries this as `[agents]`:
//!
//! ```toml
//! [agents]
//! fallback = "general"                    # kind for tasks no keyword matches
//! keywords = [["test", "tester"], ["review", "analyzer"], ["implement", "coder"]]
//! [agents.kinds.tester]
//! module = "builtin:tester"               # or a .wasm/.wat path, or "sha256:<hex>"
//! requires = ["wasm"]
//! [agents.kinds.coder]
//! module = "builtin:coder"
//! requires = ["wasm", "llm"]
//! ```
//!
//! Each of `kinds`, `keywords` and `fallback` that the table leaves out keeps
//! its built-in value ([`AgentConfig::default`]); one that is given replaces
//! the built-in value whole, so a custom `kinds` needs a matching `keywords`
//! and `fallback` (checked by [`AgentConfig::validate`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{one_line, MissionError};

/// One agent kind: the module it runs and what a node must offer for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKind {
    /// Module path (`builtin:<name>`, a `.wasm`/`.wat` path) or `sha256:` digest.
    pub module: String,
    /// Capability tags a node must offer; agents that call a language model need `llm`.
    #[serde(default)]
    pub requires: Vec<String>,
}

/// Keyword routing for markdown tasks; see the module docs for the TOML shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent kinds by name.
    pub kinds: BTreeMap<String, AgentKind>,
    /// `(keyword, kind)` pairs, tried in order; the first match wins.
    /// A keyword matches case-insensitively at the start of a word, so
    /// `test` matches "tests" and "Testing" but not "attest".
    pub keywords: Vec<(String, String)>,
    /// The kind of a task that no keyword matches.
    pub fallback: String,
}

impl Default for AgentConfig {
    /// The built-in kinds: `analyzer` and `tester` run the Python agents
    /// shipped in the binary (their tasks also require `python`); `coder`,
    /// `docs` and the `general` fallback write text or code and so need a
    /// language model (`llm`) as well.
    fn default() -> Self {
        let kind = |module: &str, requires: &[&str]| AgentKind {
            module: module.to_string(),
            requires: requires.iter().map(|r| r.to_string()).collect(),
        };
        let kinds = BTreeMap::from([
            ("analyzer".to_string(), kind("builtin:analyzer", &["wasm"])),
            ("tester".to_string(), kind("builtin:tester", &["wasm"])),
            ("coder".to_string(), kind("builtin:coder", &["wasm", "llm"])),
            ("docs".to_string(), kind("builtin:docs", &["wasm", "llm"])),
            (
                "general".to_string(),
                kind("builtin:general", &["wasm", "llm"]),
            ),
        ]);
        // Order matters: "Write unit tests" is a testing task and "Write the
        // runbook" a documentation task, so tester and docs come before the
        // coder's generic verbs.
        let table: &[(&str, &[&str])] = &[
            ("tester", &["test", "verify", "validate", "validation"]),
            (
                "docs",
                &["document", "readme", "runbook", "guide", "tutorial"],
            ),
            (
                "analyzer",
                &[
                    "analyze",
                    "analyse",
                    "analysis",
                    "review",
                    "audit",
                    "inspect",
                    "scan",
                    "measure",
                    "benchmark",
                ],
            ),
            (
                "coder",
                &[
                    "implement",
                    "write",
                    "build",
                    "fix",
                    "refactor",
                    "create",
                    "add",
                    "define",
                ],
            ),
        ];
        let keywords = table
            .iter()
            .flat_map(|(kind, words)| words.iter().map(|w| (w.to_string(), kind.to_string())))
            .collect();
        AgentConfig {
            kinds,
            keywords,
            fallback: "general".to_string(),
        }
    }
}

impl AgentConfig {
    /// Reads the `[agents]` table of a TOML document (the node config); a
    /// document without one gives the built-in defaults. Other tables are
    /// ignored, since they belong to the rest of the node config.
    pub fn from_toml(text: &str) -> Result<Self, MissionError> {
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            agents: Option<AgentConfig>,
        }
        let document: Document =
            toml::from_str(text).map_err(|e| MissionError::InvalidAgents(one_line(e.message())))?;
        let config = document.agents.unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    /// Checks that the fallback and every keyword name a defined kind, that
    /// keywords are not blank, and that every kind names a module.
    pub fn validate(&self) -> Result<(), MissionError> {
        let bad = |message: String| Err(MissionError::InvalidAgents(message));
        if !self.kinds.contains_key(&self.fallback) {
            return bad(format!(
                "fallback kind `{}` is not defined in kinds",
                self.fallback
            ));
        }
        for (keyword, kind) in &self.keywords {
            if keyword.trim().is_empty() {
                return bad(format!("a keyword for kind `{kind}` is blank"));
            }
            if !self.kinds.contains_key(kind) {
                return bad(format!("keyword `{keyword}` names undefined kind `{kind}`"));
            }
        }
        for (name, kind) in &self.kinds {
            if kind.module.trim().is_empty() {
                return bad(format!("kind `{name}` has an empty module"));
            }
            if kind.requires.iter().any(|r| r.trim().is_empty()) {
                return bad(format!("kind `{name}` requires a blank capability"));
            }
        }
        Ok(())
    }

    /// The kind for a task: the texts are tried in order (the task's own
    /// title first, then its surroundings), and within one text the keywords
    /// in their configured order; the fallback when nothing matches.
    pub fn route(&self, texts: &[&str]) -> &str {
        texts
            .iter()
            .find_map(|text| self.match_text(text))
            .unwrap_or(&self.fallback)
    }

    /// The kind the first matching keyword names, if any keyword matches `text`.
    pub fn match_text(&self, text: &str) -> Option<&str> {
        let lower = text.to_lowercase();
        self.keywords
            .iter()
            .find(|(keyword, _)| starts_a_word(&lower, &keyword.trim().to_lowercase()))
            .map(|(_, kind)| kind.as_str())
    }
}

/// Whether `keyword` occurs in `text` at the start of a word.
fn starts_a_word(text: &str, keyword: &str) -> bool {
    if keyword.is_empty() {
        return false;
    }
    text.match_indices(keyword).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_route_by_keyword_order() {
        let agents = AgentConfig::default();
        agents.validate().unwrap();
        assert_eq!(
            agents.route(&["Review agent execution isolation"]),
            "analyzer"
        );
        assert_eq!(agents.route(&["Write unit tests for Layer 1"]), "tester");
        assert_eq!(agents.route(&["Write operational runbooks"]), "docs");
        assert_eq!(agents.route(&["Implement queue"]), "coder");
        assert_eq!(agents.route(&["Generate API documentation"]), "docs");
        assert_eq!(agents.route(&["Deploy Neo4j database"]), "general");
        assert_eq!(agents.route(&["Nothing here", "Testing phase"]), "tester");
        assert_eq!(agents.kinds["coder"].requires, vec!["wasm", "llm"]);
        assert_eq!(agents.kinds["analyzer"].requires, vec!["wasm"]);
    }

    #[test]
    fn keywords_match_only_at_word_starts() {
        assert!(starts_a_word("run the tests", "test"));
        assert!(starts_a_word("testing", "test"));
        assert!(!starts_a_word("attest it", "test"));
        assert!(starts_a_word("attest, then test", "test"));
        assert!(starts_a_word("pay tech debt", "tech debt"));
    }

    #[test]
    fn reads_the_agents_table_and_keeps_omitted_defaults() {
        let config = AgentConfig::from_toml(
            r#"
            http = "127.0.0.1:7070"
            [agents]
            fallback = "coder"
            "#,
        )
        .unwrap();
        assert_eq!(config.fallback, "coder");
        assert_eq!(config.kinds, AgentConfig::default().kinds);

        let config = AgentConfig::from_toml(
            r#"
            [agents]
            fallback = "gen"
            keywords = [["lint", "linter"]]
            [agents.kinds.linter]
            module = "agents/lint.wasm"
            requires = ["wasm"]
            [agents.kinds.gen]
            module = "builtin:general"
            "#,
        )
        .unwrap();
        assert_eq!(config.route(&["Lint the crate"]), "linter");
        assert_eq!(config.route(&["Anything"]), "gen");
        assert!(config.kinds["gen"].requires.is_empty());

        assert_eq!(AgentConfig::from_toml("").unwrap(), AgentConfig::default());
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let err = AgentConfig::from_toml("[agents]\nfallback = \"nobody\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid agents config: fallback kind `nobody` is not defined in kinds"
        );
        let err =
            AgentConfig::from_toml("[agents]\nkeywords = [[\"x\", \"ghost\"]]\n").unwrap_err();
        assert!(err.to_string().contains("undefined kind `ghost`"), "{err}");
        let err = AgentConfig::from_toml("[agents]\nkinds = 3\n").unwrap_err();
        assert!(matches!(err, MissionError::InvalidAgents(_)));
        let err = AgentConfig::from_toml("[agents]\ncolour = 3\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
