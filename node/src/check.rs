//! `coditect submit FILE --check [--json]`: parse and validate a mission on
//! this machine, without a mesh, and show the task graph the mesh would run.

use std::path::Path;

use coditect_node::mission::{
    parse_toml, read_markdown, validate, AgentConfig, MissionFormat, MissionSpec,
};
use coditect_node::start::NodeError;

/// Longest id column in the human listing; longer ids push the row over.
const ID_COLUMN_MAX: usize = 40;

/// Runs the check: 0 when the mission is valid, else a one-line
/// [`NodeError::BadInput`] (exit 2) naming the problem.
pub fn run(file: &Path, json: bool, config: Option<&Path>) -> Result<u8, NodeError> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| NodeError::BadInput(format!("cannot read {}: {error}", file.display())))?;
    let agents = match config {
        Some(path) => {
            let config = std::fs::read_to_string(path).map_err(|error| {
                NodeError::BadInput(format!("cannot read {}: {error}", path.display()))
            })?;
            AgentConfig::from_toml(&config)
                .map_err(|error| NodeError::BadInput(format!("{}: {error}", path.display())))?
        }
        None => AgentConfig::default(),
    };
    let bad = |error: coditect_node::mission::MissionError| NodeError::BadInput(error.to_string());
    let (spec, warnings, implied_order) = match MissionFormat::from_path(file) {
        MissionFormat::Markdown => {
            let mission = read_markdown(&text, &agents).map_err(bad)?;
            validate(&mission.spec, None).map_err(bad)?;
            (mission.spec, mission.warnings, mission.implied_order)
        }
        MissionFormat::Toml => {
            let base = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let spec = parse_toml(&text).map_err(bad)?;
            validate(&spec, Some(base)).map_err(bad)?;
            (spec, Vec::new(), false)
        }
    };
    if json {
        println!("{}", as_json(&spec, &warnings));
    } else {
        print_listing(&spec, implied_order);
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
    }
    Ok(0)
}

/// `{"name", "tasks": [{"id", "title", "agent", "priority", "needs", "done"}], "warnings"}`.
fn as_json(spec: &MissionSpec, warnings: &[String]) -> String {
    let tasks: Vec<serde_json::Value> = spec
        .tasks
        .iter()
        .map(|task| {
            serde_json::json!({
                "id": task.id,
                "title": task.title,
                "agent": task.agent,
                "priority": task.priority.as_str(),
                "needs": task.needs,
                "done": task.done,
            })
        })
        .collect();
    let document = serde_json::json!({
        "name": spec.name,
        "tasks": tasks,
        "warnings": warnings,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// One line per task, in file order, after a summary line.
fn print_listing(spec: &MissionSpec, implied_order: bool) {
    let done = spec.tasks.iter().filter(|t| t.done).count();
    println!(
        "{}: {} task(s), {done} done; dependencies {}",
        spec.name,
        spec.tasks.len(),
        if implied_order {
            "as written plus the order of phases, groups and file order ([P] runs in parallel)"
        } else {
            "as written"
        }
    );
    let id_width = spec
        .tasks
        .iter()
        .map(|t| t.id.chars().count())
        .max()
        .unwrap_or(0)
        .min(ID_COLUMN_MAX);
    let agent_width = spec
        .tasks
        .iter()
        .map(|t| t.agent.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(0);
    for task in &spec.tasks {
        let needs = if task.needs.is_empty() {
            String::new()
        } else {
            format!("  (needs {})", task.needs.join(", "))
        };
        println!(
            "{:<id_width$}  [{}]  {}  {:<agent_width$}  {}{needs}",
            task.id,
            if task.done { "x" } else { " " },
            task.priority,
            task.agent.as_deref().unwrap_or("-"),
            task.title.as_deref().unwrap_or("-"),
        );
    }
}
