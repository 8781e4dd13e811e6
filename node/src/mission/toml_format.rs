//! The TOML mission format of `interfaces.md`.
//!
//! The document is read as a plain TOML table and walked by hand rather than
//! through `#[serde(deny_unknown_fields)]`, because serde's errors cannot say
//! which `[[task]]` a bad or unknown field belongs to, and the user needs
//! exactly that.

use coditect_sandbox::Limits;
use toml::{Table, Value};

use super::error::{one_line, MissionError};
use super::spec::{Expect, MissionSpec, ModuleRef, Priority, TaskSpec};

/// Top-level keys of a mission file.
const MISSION_KEYS: &[&str] = &["name", "task", "workspace", "max_fix_rounds"];
/// Keys of one `[[task]]`.
const TASK_KEYS: &[&str] = &[
    "id", "module", "needs", "requires", "priority", "input", "inputs", "limits", "expect",
    "title", "done", "args",
];
/// Keys of `[task.limits]`, the fields of [`Limits`].
const LIMIT_KEYS: &[&str] = &[
    "fuel",
    "memory_mb",
    "timeout_ms",
    "output_mb",
    "max_llm_calls",
    "max_tokens",
];
/// Keys of `[task.limits]` that bound language-model use, not the sandbox.
const LLM_LIMIT_KEYS: &[&str] = &["max_llm_calls", "max_tokens"];
/// Keys of `[task.expect]`.
const EXPECT_KEYS: &[&str] = &["exit_code", "stdout_contains", "files"];

/// The name a mission gets when its file has no `name`.
pub const DEFAULT_NAME: &str = "mission";

/// Parses a TOML mission. Only each task's `id` and `module` are required;
/// a missing `name` becomes `"mission"`. Unknown keys are refused with the
/// key and the task they appeared in. This checks form only: ids,
/// dependencies, limits and files are [`super::validate`]'s job.
pub fn parse_toml(text: &str) -> Result<MissionSpec, MissionError> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        MissionError::Syntax {
            line,
            message: one_line(e.message()),
        }
    })?;
    let place = "the mission";
    check_keys(&table, MISSION_KEYS, place)?;
    let name = match table.get("name") {
        None => DEFAULT_NAME.to_string(),
        Some(value) => string(value, "name", place)?,
    };
    let mut tasks = Vec::new();
    match table.get("task") {
        None => {}
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                let Value::Table(task) = item else {
                    return Err(invalid(
                        "task",
                        place,
                        format!("expected [[task]] tables, got {}", item.type_str()),
                    ));
                };
                tasks.push(parse_task(index, task)?);
            }
        }
        Some(other) => {
            return Err(invalid(
                "task",
                place,
                format!("expected [[task]] tables, got {}", other.type_str()),
            ))
        }
    }
    let workspace = match table.get("workspace") {
        None => None,
        Some(value) => Some(string(value, "workspace", place)?),
    };
    let max_fix_rounds = match table.get("max_fix_rounds") {
        None => None,
        Some(Value::Integer(n)) => Some(u32::try_from(*n).map_err(|_| {
            invalid(
                "max_fix_rounds",
                place,
                format!("{n} is out of range 0..=10"),
            )
        })?),
        Some(other) => {
            return Err(invalid(
                "max_fix_rounds",
                place,
                format!("expected an integer, got {}", other.type_str()),
            ))
        }
    };
    Ok(MissionSpec {
        name,
        tasks,
        workspace,
        max_fix_rounds,
    })
}

/// Reads one `[[task]]`; `index` is 0-based and only names a task without an id.
fn parse_task(index: usize, table: &Table) -> Result<TaskSpec, MissionError> {
    // The id comes first so that every later error can name the task.
    let numbered = format!("task #{}", index + 1);
    let id = match table.get("id") {
        Some(value) => string(value, "id", &numbered)?,
        None => {
            return Err(MissionError::MissingField {
                field: "id".into(),
                place: numbered,
            })
        }
    };
    // A hostile id may be thousands of characters; messages show its start.
    let place = format!("task `{}`", super::grammar::excerpt(&id));
    check_keys(table, TASK_KEYS, &place)?;

    let module_text = match table.get("module") {
        Some(value) => string(value, "module", &place)?,
        None => {
            return Err(MissionError::MissingField {
                field: "module".into(),
                place,
            })
        }
    };
    let module = ModuleRef::parse(&module_text).map_err(|e| MissionError::InvalidModule {
        task: id.clone(),
        module: module_text.clone(),
        reason: one_line(&e.to_string()),
    })?;

    let mut task = TaskSpec::new(id.clone(), module);
    if let Some(value) = table.get("needs") {
        task.needs = strings(value, "needs", &place)?;
    }
    if let Some(value) = table.get("requires") {
        task.requires = strings(value, "requires", &place)?;
    }
    if let Some(value) = table.get("priority") {
        task.priority = match value {
            Value::String(text) => {
                text.parse::<Priority>()
                    .map_err(|()| MissionError::InvalidPriority {
                        task: id.clone(),
                        value: format!("{text:?}"),
                    })?
            }
            other => {
                return Err(MissionError::InvalidPriority {
                    task: id.clone(),
                    value: other.to_string(),
                })
            }
        };
    }
    if let Some(value) = table.get("input") {
        task.input = Some(string(value, "input", &place)?);
    }
    if let Some(value) = table.get("inputs") {
        task.inputs = strings(value, "inputs", &place)?;
    }
    if let Some(value) = table.get("title") {
        task.title = Some(string(value, "title", &place)?);
    }
    if let Some(value) = table.get("args") {
        task.args = strings(value, "args", &place)?;
    }
    if let Some(value) = table.get("done") {
        task.done = match value {
            Value::Boolean(done) => *done,
            other => {
                return Err(invalid(
                    "done",
                    &place,
                    format!("expected true or false, got {}", other.type_str()),
                ))
            }
        };
    }
    if let Some(value) = table.get("limits") {
        task.limits = parse_limits(value, &id)?;
        if let Value::Table(limits) = value {
            let number = |key: &str| -> Result<Option<u64>, MissionError> {
                match limits.get(key) {
                    None => Ok(None),
                    Some(Value::Integer(n)) if *n > 0 => Ok(Some(*n as u64)),
                    Some(other) => Err(invalid(
                        key,
                        &format!("[task.limits] of task `{id}`"),
                        format!("expected a positive integer, got {other}"),
                    )),
                }
            };
            task.max_llm_calls =
                number("max_llm_calls")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            task.max_tokens = number("max_tokens")?;
        }
    }
    if let Some(value) = table.get("expect") {
        task.expect = parse_expect(value, &id)?;
    }
    Ok(task)
}

fn parse_limits(value: &Value, id: &str) -> Result<Limits, MissionError> {
    let place = format!("[task.limits] of task `{id}`");
    let Value::Table(table) = value else {
        return Err(invalid(
            "limits",
            &format!("task `{id}`"),
            format!("expected a table, got {}", value.type_str()),
        ));
    };
    check_keys(table, LIMIT_KEYS, &place)?;
    // Unknown keys are already refused, so serde only sees type and range errors.
    let mut sandbox = table.clone();
    for key in LLM_LIMIT_KEYS {
        sandbox.remove(*key);
    }
    Value::Table(sandbox)
        .try_into::<Limits>()
        .map_err(|e| invalid("limits", &format!("task `{id}`"), one_line(e.message())))
}

fn parse_expect(value: &Value, id: &str) -> Result<Expect, MissionError> {
    let place = format!("[task.expect] of task `{id}`");
    let Value::Table(table) = value else {
        return Err(invalid(
            "expect",
            &format!("task `{id}`"),
            format!("expected a table, got {}", value.type_str()),
        ));
    };
    check_keys(table, EXPECT_KEYS, &place)?;
    let mut expect = Expect::default();
    if let Some(value) = table.get("exit_code") {
        expect.exit_code = match value {
            Value::Integer(code) => Some(
                i32::try_from(*code)
                    .map_err(|_| invalid("exit_code", &place, format!("{code} is out of range")))?,
            ),
            other => {
                return Err(invalid(
                    "exit_code",
                    &place,
                    format!("expected an integer, got {}", other.type_str()),
                ))
            }
        };
    }
    if let Some(value) = table.get("stdout_contains") {
        expect.stdout_contains = Some(string(value, "stdout_contains", &place)?);
    }
    if let Some(value) = table.get("files") {
        expect.files = strings(value, "files", &place)?;
    }
    Ok(expect)
}

/// Refuses the first key (in key order) that `allowed` does not list.
fn check_keys(table: &Table, allowed: &[&str], place: &str) -> Result<(), MissionError> {
    match table.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(MissionError::UnknownField {
            field: key.clone(),
            place: place.to_string(),
        }),
        None => Ok(()),
    }
}

fn string(value: &Value, field: &str, place: &str) -> Result<String, MissionError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(invalid(
            field,
            place,
            format!("expected a string, got {}", other.type_str()),
        )),
    }
}

fn strings(value: &Value, field: &str, place: &str) -> Result<Vec<String>, MissionError> {
    let not_strings = || {
        invalid(
            field,
            place,
            format!("expected an array of strings, got {value}"),
        )
    };
    let Value::Array(items) = value else {
        return Err(not_strings());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(text.clone()),
            _ => Err(not_strings()),
        })
        .collect()
}

fn invalid(field: &str, place: &str, message: String) -> MissionError {
    MissionError::InvalidField {
        field: field.to_string(),
        place: place.to_string(),
        message: one_line(&message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coditect_memory::Digest;

    const EXAMPLE: &str = r#"
name = "example"
[[task]]
id = "analyze"
module = "agents/analyzer.wasm"   # comment
needs = []
requires = ["wasm"]
priority = "P1"
input = "text handed to the task"
inputs = ["src/"]
[task.limits]
fuel = 20_000_000_000
memory_mb = 256
timeout_ms = 60_000
output_mb = 16
[task.expect]
exit_code = 0
stdout_contains = "ok"

[[task]]
id = "test"
module = "agents/tester.wasm"
needs = ["analyze"]
[task.limits]
fuel = 1000
[task.expect]
files = ["report.txt"]
"#;

    #[test]
    fn parses_the_interfaces_example() {
        let spec = parse_toml(EXAMPLE).unwrap();
        assert_eq!(spec.name, "example");
        assert_eq!(spec.tasks.len(), 2);
        let analyze = &spec.tasks[0];
        assert_eq!(analyze.id, "analyze");
        assert_eq!(
            analyze.module,
            ModuleRef::Path("agents/analyzer.wasm".into())
        );
        assert!(analyze.needs.is_empty());
        assert_eq!(analyze.requires, vec!["wasm"]);
        assert_eq!(analyze.priority, Priority::P1);
        assert_eq!(analyze.input.as_deref(), Some("text handed to the task"));
        assert_eq!(analyze.inputs, vec!["src/"]);
        assert_eq!(analyze.limits, Limits::default());
        assert_eq!(analyze.expect.exit_code, Some(0));
        assert_eq!(analyze.expect.stdout_contains.as_deref(), Some("ok"));
        assert!(!analyze.done);

        let test = &spec.tasks[1];
        assert_eq!(test.needs, vec!["analyze"]);
        assert_eq!(test.priority, Priority::P2);
        assert_eq!(test.limits.fuel, 1000);
        assert_eq!(test.limits.memory_mb, 256, "unset limits keep defaults");
        assert_eq!(test.expect.exit_code, Some(0));
        assert_eq!(test.expect.files, vec!["report.txt"]);
    }

    #[test]
    fn only_id_and_module_are_required() {
        let spec = parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\n").unwrap();
        assert_eq!(spec.name, DEFAULT_NAME);
        assert_eq!(
            spec.tasks,
            vec![TaskSpec::new("a", ModuleRef::Path("a.wat".into()))]
        );
    }

    #[test]
    fn digest_modules_are_parsed() {
        let digest = Digest::of(b"m");
        let spec = parse_toml(&format!("[[task]]\nid = \"a\"\nmodule = \"{digest}\"\n")).unwrap();
        assert_eq!(spec.tasks[0].module, ModuleRef::Digest(digest));
        let err = parse_toml("[[task]]\nid = \"a\"\nmodule = \"sha256:abc\"\n").unwrap_err();
        assert!(matches!(err, MissionError::InvalidModule { ref task, .. } if task == "a"));
        assert!(err.to_string().contains("sha256:abc"), "{err}");
    }

    #[test]
    fn unknown_fields_name_the_field_and_the_task() {
        let err =
            parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\nneeds_ = []\n").unwrap_err();
        assert_eq!(err.to_string(), "unknown field `needs_` in task `a`");

        let err = parse_toml("[[task]]\nid = \"b\"\nmodule = \"a.wat\"\n[task.limits]\ncpu = 1\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `cpu` in [task.limits] of task `b`"
        );

        let err =
            parse_toml("[[task]]\nid = \"c\"\nmodule = \"a.wat\"\n[task.expect]\nstderr = \"x\"\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `stderr` in [task.expect] of task `c`"
        );

        let err = parse_toml("nmae = \"x\"\n").unwrap_err();
        assert_eq!(err.to_string(), "unknown field `nmae` in the mission");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let err = parse_toml("[[task]]\nmodule = \"a.wat\"\n").unwrap_err();
        assert_eq!(err.to_string(), "missing field `id` in task #1");
        let err = parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\n[[task]]\nid = \"b\"\n")
            .unwrap_err();
        assert_eq!(err.to_string(), "missing field `module` in task `b`");
    }

    #[test]
    fn bad_priorities_are_refused() {
        let err = parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\npriority = \"P7\"\n")
            .unwrap_err();
        assert_eq!(
            err,
            MissionError::InvalidPriority {
                task: "a".into(),
                value: "\"P7\"".into()
            }
        );
        assert!(err.to_string().contains("P0, P1, P2 or P3"));
        let err =
            parse_toml("[[task]]\nid = \"a\"\nmodule = \"a.wat\"\npriority = 1\n").unwrap_err();
        assert!(matches!(err, MissionError::InvalidPriority { .. }), "{err}");
    }

    #[test]
    fn wrong_types_are_refused_with_the_task() {
        let cases = [
            ("needs = \"b\"", "needs"),
            ("requires = [1]", "requires"),
            ("input = 3", "input"),
            ("done = \"yes\"", "done"),
            ("limits = 5", "limits"),
            ("[task.limits]\nfuel = -1", "limits"),
            ("[task.limits]\nmemory_mb = \"big\"", "limits"),
            ("[task.expect]\nexit_code = \"0\"", "exit_code"),
            ("[task.expect]\nexit_code = 99999999999", "exit_code"),
        ];
        for (line, field) in cases {
            let text = format!("[[task]]\nid = \"t\"\nmodule = \"a.wat\"\n{line}\n");
            let err = parse_toml(&text).unwrap_err();
            match &err {
                MissionError::InvalidField {
                    field: f, place, ..
                } => {
                    assert_eq!(f, field, "{line}: {err}");
                    assert!(place.contains("`t`"), "{line}: {err}");
                }
                other => panic!("{line}: unexpected {other:?}"),
            }
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_line_number() {
        let err = parse_toml("name = \"x\"\n[[task]\nid = 1\n").unwrap_err();
        let MissionError::Syntax { line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, Some(2));
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(err
            .to_string()
            .starts_with("invalid mission TOML at line 2"));
    }

    #[test]
    fn no_tasks_parses_to_an_empty_list() {
        let spec = parse_toml("name = \"empty\"\n").unwrap();
        assert!(spec.tasks.is_empty());
        let err = parse_toml("task = 3\n").unwrap_err();
        assert!(matches!(err, MissionError::InvalidField { .. }));
    }
}
