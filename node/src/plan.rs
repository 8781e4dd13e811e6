//! Planning without a model: `coditect plan "GOAL" --workspace DIR` turns
//! a goal into a mission from a playbook.
//!
//! - feature: analyze -> code -> test
//! - bug: analyze -> reproduce (the tester, reporting without failing) ->
//!   fix -> test
//! - docs: analyze -> docs
//!
//! Every task gets the goal as its input; the analyzer's `report.json` and
//! `summary.md` reach the later tasks as `/input/deps/analyze/`, and each
//! task sees the workspace with the changes before it applied. The kinds
//! that write code (`coder`, `docs`) need a language model, so they wait
//! for a node offering `llm`. Which playbook fits is chosen from the goal's
//! words unless given.

/// A playbook: the shape of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Playbook {
    /// Analyze, code, test.
    Feature,
    /// Analyze, reproduce, fix, test.
    Bug,
    /// Analyze, document.
    Docs,
}

impl Playbook {
    /// The playbook named `name` (`feature`, `bug`, `docs`).
    pub fn from_name(name: &str) -> Option<Playbook> {
        match name {
            "feature" => Some(Playbook::Feature),
            "bug" => Some(Playbook::Bug),
            "docs" => Some(Playbook::Docs),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Playbook::Feature => "feature",
            Playbook::Bug => "bug",
            Playbook::Docs => "docs",
        }
    }

    /// The playbook a goal reads as: a bug when it speaks of fixing or
    /// failing, docs when it speaks of documenting, else a feature.
    pub fn for_goal(goal: &str) -> Playbook {
        const BUG: &[&str] = &[
            "fix",
            "bug",
            "crash",
            "error",
            "broken",
            "regression",
            "fail",
            "wrong",
            "incorrect",
            "exception",
            "traceback",
            "panic",
            "hang",
            "leak",
        ];
        const DOCS: &[&str] = &[
            "document",
            "docs",
            "readme",
            "docstring",
            "tutorial",
            "guide",
            "changelog",
        ];
        let words: Vec<String> = goal
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let starts = |list: &[&str]| words.iter().any(|w| list.iter().any(|k| w.starts_with(k)));
        if starts(BUG) {
            Playbook::Bug
        } else if starts(DOCS) {
            Playbook::Docs
        } else {
            Playbook::Feature
        }
    }
}

/// Longest goal, bytes.
pub const MAX_GOAL_BYTES: usize = 16 * 1024;

/// A TOML string literal of `text`.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The mission TOML for `goal` over the workspace folder `workspace` (as
/// the mission file will name it, relative to the file).
pub fn plan(goal: &str, workspace: &str, playbook: Playbook) -> Result<String, String> {
    let goal = goal.trim();
    if goal.is_empty() {
        return Err("the goal is empty: say what the mission should achieve".into());
    }
    if goal.len() > MAX_GOAL_BYTES {
        return Err(format!(
            "the goal is longer than {} KiB",
            MAX_GOAL_BYTES >> 10
        ));
    }
    let first_line = goal.lines().next().unwrap_or(goal);
    let name: String = first_line.chars().take(80).collect();
    struct Step {
        id: &'static str,
        module: &'static str,
        title: &'static str,
        needs: Option<&'static str>,
        llm: bool,
        args: &'static [&'static str],
    }
    let analyze = Step {
        id: "analyze",
        module: "builtin:analyzer",
        title: "Analyze the code base",
        needs: None,
        llm: false,
        args: &[],
    };
    let steps: Vec<Step> = match playbook {
        Playbook::Feature => vec![
            analyze,
            Step {
                id: "code",
                module: "builtin:coder",
                title: "Change the code to reach the goal",
                needs: Some("analyze"),
                llm: true,
                args: &[],
            },
            Step {
                id: "test",
                module: "builtin:tester",
                title: "Run the tests",
                needs: Some("code"),
                llm: false,
                args: &[],
            },
        ],
        Playbook::Bug => vec![
            analyze,
            Step {
                id: "reproduce",
                module: "builtin:tester",
                title: "Run the tests to see the bug (failures are reported, not fatal)",
                needs: Some("analyze"),
                llm: false,
                args: &["--report-only"],
            },
            Step {
                id: "fix",
                module: "builtin:coder",
                title: "Fix the bug",
                needs: Some("reproduce"),
                llm: true,
                args: &[],
            },
            Step {
                id: "test",
                module: "builtin:tester",
                title: "Run the tests",
                needs: Some("fix"),
                llm: false,
                args: &[],
            },
        ],
        Playbook::Docs => vec![
            analyze,
            Step {
                id: "docs",
                module: "builtin:docs",
                title: "Write the documentation",
                needs: Some("analyze"),
                llm: true,
                args: &[],
            },
        ],
    };
    let mut out = format!(
        "# Written by `coditect plan` from the {} playbook. Edit freely, then\n\
         # `coditect submit` this file. Tasks of kind coder and docs need a node\n\
         # that offers a language model (`llm`); until one does, they wait.\n\
         name = {}\n\
         workspace = {}\n",
        playbook.name(),
        quoted(&name),
        quoted(workspace)
    );
    for step in &steps {
        out.push_str(&format!(
            "\n[[task]]\nid = \"{}\"\nmodule = \"{}\"\ntitle = {}\n",
            step.id,
            step.module,
            quoted(step.title)
        ));
        if let Some(need) = step.needs {
            out.push_str(&format!("needs = [\"{need}\"]\n"));
        }
        if step.llm {
            out.push_str("requires = [\"wasm\", \"llm\"]\n");
        }
        if !step.args.is_empty() {
            let args: Vec<String> = step.args.iter().map(|a| quoted(a)).collect();
            out.push_str(&format!("args = [{}]\n", args.join(", ")));
        }
        out.push_str(&format!("input = {}\n", quoted(goal)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::{parse_toml, validate};

    #[test]
    fn goals_pick_their_playbook() {
        assert_eq!(Playbook::for_goal("Fix the crash in fib(0)"), Playbook::Bug);
        assert_eq!(
            Playbook::for_goal("tests FAILING on empty input"),
            Playbook::Bug
        );
        assert_eq!(
            Playbook::for_goal("Document the public API"),
            Playbook::Docs
        );
        assert_eq!(
            Playbook::for_goal("Add a --verbose flag"),
            Playbook::Feature
        );
        // Words, not substrings: "prefix" is no "fix".
        assert_eq!(Playbook::for_goal("Add a prefix option"), Playbook::Feature);
    }

    #[test]
    fn every_playbook_writes_a_valid_chain_with_the_goal_as_input() {
        for (playbook, ids) in [
            (Playbook::Feature, vec!["analyze", "code", "test"]),
            (Playbook::Bug, vec!["analyze", "reproduce", "fix", "test"]),
            (Playbook::Docs, vec!["analyze", "docs"]),
        ] {
            let goal = "Make \"fib\" fast\nand keep it exact";
            let text = plan(goal, "../project dir", playbook).unwrap();
            let spec = parse_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            validate(&spec, None).unwrap();
            assert_eq!(spec.workspace.as_deref(), Some("../project dir"));
            assert_eq!(spec.name, "Make \"fib\" fast");
            let got: Vec<&str> = spec.tasks.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(got, ids);
            for pair in spec.tasks.windows(2) {
                assert_eq!(pair[1].needs, vec![pair[0].id.clone()]);
            }
            assert!(spec.tasks.iter().all(|t| t.input.as_deref() == Some(goal)));
            let coding = spec
                .tasks
                .iter()
                .filter(|t| t.requires.contains(&"llm".to_string()));
            assert_eq!(coding.count(), 1, "{text}");
        }
        assert!(plan("  ", "p", Playbook::Feature).is_err());
        assert!(plan(&"x".repeat(MAX_GOAL_BYTES + 1), "p", Playbook::Feature).is_err());
    }
}
