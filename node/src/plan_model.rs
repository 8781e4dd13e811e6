//! Planning by a model: `POST /api/plan` on a node with `llm` asks its
//! model for a task graph for a goal over a workspace (whose paths the
//! client sends), and answers with the mission as TOML. The answer is
//! validated like any mission, and only built-in agents are allowed; an
//! invalid one is asked for again once with the validation error, then
//! refused (the CLI falls back to the playbooks of [`crate::plan`] and
//! says so).

use std::time::Duration;

use crate::llm::service::LlmService;
use crate::llm::wire::{ChatMessage, ChatRequest};

/// Paths of the workspace shown to the model at most.
pub const MAX_PLAN_FILES: usize = 400;

/// Tasks a planned mission may have.
pub const MAX_PLANNED_TASKS: usize = 40;

/// The agents a planned task may run.
const AGENTS: &[&str] = &["analyzer", "coder", "tester", "docs", "general"];

/// The conversation asking for a plan (with the previous answer's
/// problem, on the second try).
pub fn planning_messages(
    goal: &str,
    files: &[String],
    problem: Option<(&str, &str)>,
) -> Vec<ChatMessage> {
    let system = "You plan software work for the Coditect mesh, a set of agents that change a code base. \
Answer with exactly one TOML document in a ```toml fenced block and nothing else of substance. \
It has a top-level `name` (short) and one `[[task]]` table per task with: `id` (letters, digits, `.`, `_`, `-`), \
`module` (one of \"builtin:analyzer\" (reads the code base and reports its files, functions and tests), \
\"builtin:coder\" (changes code as its `input` says), \"builtin:tester\" (runs the project's tests), \
\"builtin:docs\" (writes documentation), \"builtin:general\" (any other change)), \
`needs` (ids of tasks that must finish first), `title` (one line) and `input` (the instructions for that task's agent, self-contained). \
Start with an analyzer task; every coder, docs or general task needs it (directly or not); \
after changes to code, a tester task needs the last change. Keep it small: 3 to 8 tasks; \
tasks that change the same files must depend on each other. No other keys.";
    let mut listing: Vec<&str> = files
        .iter()
        .take(MAX_PLAN_FILES)
        .map(String::as_str)
        .collect();
    if files.len() > listing.len() {
        listing.push("...");
    }
    let mut user = format!(
        "Goal:\n{goal}\n\nThe workspace's files ({} in all):\n{}\n",
        files.len(),
        listing.join("\n")
    );
    if let Some((answer, why)) = problem {
        user.push_str(&format!(
            "\nYour previous answer was not a valid mission: {why}\nIt was:\n{}\nAnswer again with a corrected mission.\n",
            answer.chars().take(8000).collect::<String>()
        ));
    }
    vec![
        ChatMessage {
            role: "system".into(),
            content: system.into(),
        },
        ChatMessage {
            role: "user".into(),
            content: user,
        },
    ]
}

/// The TOML of the first ```toml block of `answer` (or the whole answer
/// when it has none).
fn toml_of(answer: &str) -> &str {
    let mut lines = answer.split_inclusive('\n');
    let mut start = None;
    let mut offset = 0;
    for line in lines.by_ref() {
        let trimmed = line.trim();
        if start.is_none() && trimmed.starts_with("```") {
            let info = trimmed.trim_start_matches('`').trim();
            if info.is_empty() || info.eq_ignore_ascii_case("toml") {
                start = Some(offset + line.len());
            }
        } else if let Some(begin) = start {
            if trimmed.starts_with("```") {
                return &answer[begin..offset];
            }
        }
        offset += line.len();
    }
    match start {
        Some(begin) => &answer[begin..],
        None => answer,
    }
}

/// The mission a model's answer gives, as TOML without a workspace (the
/// client names its own), once it is valid and uses only built-in agents.
pub fn mission_of(answer: &str, goal: &str) -> Result<String, String> {
    let text = toml_of(answer);
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("it is not TOML: {}", e.message()))?;
    table.remove("workspace");
    table.remove("max_fix_rounds");
    if !table.contains_key("name") {
        let name: String = goal
            .lines()
            .next()
            .unwrap_or("plan")
            .chars()
            .take(80)
            .collect();
        table.insert("name".into(), toml::Value::String(name));
    }
    let text = toml::to_string(&table).map_err(|e| format!("it cannot be written back: {e}"))?;
    let spec = crate::mission::parse_toml(&text).map_err(|e| e.to_string())?;
    if spec.tasks.len() > MAX_PLANNED_TASKS {
        return Err(format!(
            "it has {} tasks, more than {MAX_PLANNED_TASKS}",
            spec.tasks.len()
        ));
    }
    for task in &spec.tasks {
        let module = task.module.to_string();
        let agent = module.strip_prefix(crate::mission::BUILTIN_PREFIX);
        if !agent.is_some_and(|a| AGENTS.contains(&a)) {
            return Err(format!(
                "task `{}` runs {module:?}; only builtin:{} are allowed",
                task.id,
                AGENTS.join(", builtin:")
            ));
        }
        if !task.inputs.is_empty() || !task.args.is_empty() {
            return Err(format!(
                "task `{}` names inputs or args; give it an `input` text only",
                task.id
            ));
        }
    }
    crate::mission::validate(&spec, None).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Asks `llm` for a plan: the mission TOML and the tries it took, or why
/// there is none.
pub async fn plan_with_model(
    llm: &LlmService,
    goal: &str,
    files: &[String],
) -> Result<(String, u32), String> {
    let mut problem: Option<(String, String)> = None;
    for attempt in 1..=2u32 {
        let request = ChatRequest {
            messages: planning_messages(
                goal,
                files,
                problem.as_ref().map(|(a, w)| (a.as_str(), w.as_str())),
            ),
            max_tokens: Some(4096),
            temperature: Some(0.0),
            purpose: Some("plan".into()),
        };
        let called = llm.chat(&request, 4096, Duration::from_secs(300)).await;
        let answer = called
            .answer
            .map_err(|e| format!("the model could not be asked ({}): {}", e.kind, e.message))?;
        match mission_of(&answer.content, goal) {
            Ok(text) => return Ok((text, attempt)),
            Err(why) => {
                tracing::info!("the model's plan is invalid (try {attempt}): {why}");
                problem = Some((answer.content, why));
            }
        }
    }
    let why = problem.map(|(_, why)| why).unwrap_or_default();
    Err(format!("the model's plan was invalid twice; last: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Here is the plan.\n\n```toml\nname = \"fib\"\n[[task]]\nid = \"analyze\"\nmodule = \"builtin:analyzer\"\ntitle = \"Read\"\ninput = \"Look\"\n[[task]]\nid = \"code\"\nmodule = \"builtin:coder\"\nneeds = [\"analyze\"]\ninput = \"Add fib\"\n[[task]]\nid = \"test\"\nmodule = \"builtin:tester\"\nneeds = [\"code\"]\n```\n";

    #[test]
    fn a_valid_answer_becomes_a_mission_without_a_workspace() {
        let text = mission_of(GOOD, "add fib").unwrap();
        let spec = crate::mission::parse_toml(&text).unwrap();
        assert_eq!(spec.tasks.len(), 3);
        assert!(spec.workspace.is_none());
        let named = mission_of(
            &GOOD.replace("name = \"fib\"\n", "workspace = \"/etc\"\n"),
            "add fib",
        )
        .unwrap();
        assert!(
            named.contains("name = \"add fib\"") && !named.contains("/etc"),
            "{named}"
        );
    }

    #[test]
    fn invalid_answers_say_why() {
        for (answer, needle) in [
            ("no toml here [[", "not TOML"),
            (
                &GOOD.replace("builtin:coder", "agents/evil.wasm") as &str,
                "only builtin:",
            ),
            (
                &GOOD.replace("needs = [\"code\"]", "needs = [\"nope\"]"),
                "nope",
            ),
            (
                &GOOD.replace("needs = [\"analyze\"]", "needs = [\"test\"]"),
                "cycle",
            ),
            (
                &GOOD.replace("input = \"Look\"", "inputs = [\"/etc/passwd\"]"),
                "inputs",
            ),
        ] {
            let why = mission_of(answer, "g").unwrap_err();
            assert!(why.contains(needle), "{needle}: {why}");
        }
        let retry = planning_messages("g", &["a.py".into()], Some(("bad", "it is not TOML")));
        assert!(retry[1].content.contains("it is not TOML"));
    }
}
