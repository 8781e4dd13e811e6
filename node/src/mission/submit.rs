//! A validated mission turned into what Raft stores: every module, input
//! text and input file named by the digest of a blob this node holds.
//!
//! The node that accepts `POST /api/missions` does this; the mesh never reads
//! the client's disk, so a module given as a path (rather than a digest or a
//! `builtin:` name) is refused with a message saying to upload it first.

use coditect_consensus::mission::{TaskExpect, TaskSubmission};
use coditect_memory::{BlobStore, Digest};

use super::caps::MAX_TAG_BYTES;
use super::error::MissionError;
use super::grammar::excerpt;
use super::spec::{ModuleRef, BUILTIN_PREFIX};
use super::validate::{validate, ValidatedMission};

/// The tasks of `mission` as submissions, in topological order. Input texts
/// are stored in `blobs`; every digest named must already be there.
pub fn to_submissions(
    mission: &ValidatedMission,
    blobs: &BlobStore,
) -> Result<Vec<TaskSubmission>, MissionError> {
    let held = |digest: &Digest| blobs.contains(digest);
    let workspace = match &mission.spec().workspace {
        Some(text) => Some(held_workspace(text, blobs)?),
        None => None,
    };
    let mut out = Vec::with_capacity(mission.spec().tasks.len());
    for task in mission.ordered_tasks() {
        let bad_module = |reason: String| MissionError::InvalidModule {
            task: task.id.clone(),
            module: task.module.to_string(),
            reason,
        };
        // A built-in Python agent: the runtime with the agent's script.
        let mut agent_args = Vec::new();
        let mut agent_inputs = Vec::new();
        let module = match &task.module {
            ModuleRef::Path(path)
                if path
                    .strip_prefix(BUILTIN_PREFIX)
                    .and_then(crate::builtin::python_agent_digest)
                    .is_some() =>
            {
                let name = &path[BUILTIN_PREFIX.len()..];
                // Every node stores the scripts at start, like the modules.
                let script = crate::builtin::python_agent_digest(name).expect("checked");
                let at = format!("{}/{name}.py", crate::builtin::AGENT_DIR);
                agent_args.push(format!("/input/{at}"));
                if workspace.is_none() {
                    // No workspace: the agent works on the task's inputs.
                    agent_args.extend(["--root".to_string(), "/input".to_string()]);
                }
                agent_inputs.push((at, script.to_string()));
                let module = crate::builtin::python_agent_digest("coditect").expect("shipped");
                agent_inputs.push((
                    crate::builtin::CODITECT_MODULE_PATH.to_string(),
                    module.to_string(),
                ));
                crate::python::digest().to_string()
            }
            ModuleRef::Digest(digest) if held(digest) => digest.to_string(),
            ModuleRef::Digest(_) => {
                return Err(bad_module(
                    "no such blob on this node; POST the module to /api/blobs first".into(),
                ))
            }
            ModuleRef::Path(path) => match path.strip_prefix(BUILTIN_PREFIX) {
                // Not a blob every node holds: the nodes that advertise
                // `python` serve it (the task requires that capability).
                Some(PYTHON) => crate::python::digest().to_string(),
                Some(name) => crate::builtin::digest(name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = crate::builtin::BUILTINS
                            .iter()
                            .chain(crate::builtin::PYTHON_AGENTS)
                            .map(|(n, _)| *n)
                            .chain([PYTHON])
                            .collect();
                        bad_module(format!(
                            "unknown built-in module (known: {})",
                            names.join(", ")
                        ))
                    })?
                    .to_string(),
                None => {
                    return Err(bad_module(
                        "a path cannot be read by the mesh; upload the module and name it by sha256 digest (coditect submit does this)".into(),
                    ))
                }
            },
        };
        let input = match &task.input {
            Some(text) => Some(
                blobs
                    .put(text.as_bytes())
                    .map_err(|error| MissionError::InvalidField {
                        field: "input".into(),
                        place: format!("task `{}`", task.id),
                        message: error.to_string(),
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let mut inputs = agent_inputs;
        inputs.reserve(task.inputs.len());
        for entry in &task.inputs {
            let bad_input = |reason: &str| MissionError::InvalidInput {
                task: task.id.clone(),
                input: entry.clone(),
                reason: reason.to_string(),
            };
            let (path, digest) = match entry.split_once("=sha256:") {
                Some((path, hex)) => (path.to_string(), format!("sha256:{hex}")),
                None if entry.starts_with("sha256:") => {
                    (entry.trim_start_matches("sha256:").to_string(), entry.clone())
                }
                None => return Err(bad_input(
                    "a path cannot be read by the mesh; upload the file and name it as path=sha256:<hex> (coditect submit does this)",
                )),
            };
            let parsed: Digest = digest
                .parse()
                .map_err(|_| bad_input("not a sha256 digest"))?;
            if !held(&parsed) {
                return Err(bad_input(
                    "no such blob on this node; POST it to /api/blobs first",
                ));
            }
            inputs.push((path, digest));
        }
        let mut requires = if task.requires.is_empty() {
            vec!["wasm".to_string()]
        } else {
            task.requires.clone()
        };
        if crate::python::is_runtime(&module) {
            require_python(&mut requires);
        }
        // The agents that ask a model run only where one answers.
        let model_agent = task
            .module
            .to_string()
            .strip_prefix(BUILTIN_PREFIX)
            .is_some_and(|name| crate::builtin::MODEL_AGENTS.contains(&name));
        if model_agent && !requires.iter().any(|r| r == crate::llm::LLM_CAPABILITY) {
            requires.push(crate::llm::LLM_CAPABILITY.to_string());
        }
        out.push(TaskSubmission {
            id: task.id.clone(),
            module,
            needs: task.needs.clone(),
            requires,
            priority: task.priority as u8,
            input,
            inputs,
            limits: {
                let mut limits = crate::worker::task_limits(&task.limits);
                if let Some(calls) = task.max_llm_calls {
                    limits.max_llm_calls = calls;
                }
                if let Some(tokens) = task.max_tokens {
                    limits.max_tokens = tokens;
                }
                limits
            },
            expect: TaskExpect {
                exit_code: task.expect.exit_code,
                stdout_contains: task.expect.stdout_contains.clone(),
                files: task.expect.files.clone(),
            },
            done: task.done,
            title: task
                .title
                .as_deref()
                .map(super::grammar::fit_task_title)
                .filter(|title| !title.is_empty()),
            agent: task.agent.clone(),
            args: agent_args
                .into_iter()
                .chain(task.args.iter().cloned())
                .collect(),
            workspace: workspace.clone(),
            spawned_by: None,
        });
    }
    Ok(out)
}

/// The digest of the workspace tree `text` names, once this node holds
/// the tree and every file of it (so no worker waits on a blob nobody has).
fn held_workspace(text: &str, blobs: &BlobStore) -> Result<String, MissionError> {
    let invalid = |message: String| MissionError::InvalidField {
        field: "workspace".into(),
        place: "the mission".into(),
        message,
    };
    let digest: Digest = text.parse().map_err(|_| {
        invalid("a folder cannot be read by the mesh; upload its tree and name it by sha256 digest (coditect submit --workspace does this)".into())
    })?;
    let bytes = blobs
        .get(&digest)
        .map_err(|error| invalid(format!("reading the tree: {error}")))?
        .ok_or_else(|| {
            invalid(format!(
                "no tree {digest} on this node; POST it to /api/blobs first"
            ))
        })?;
    let tree = coditect_memory::tree::Tree::decode(&bytes)
        .map_err(|error| invalid(format!("{digest}: {error}")))?;
    if let Some((path, entry)) = tree
        .iter()
        .find(|(_, entry)| !blobs.contains(&entry.digest))
    {
        return Err(invalid(format!(
            "file {} ({}) of the tree is not on this node; POST it to /api/blobs first",
            excerpt(path),
            entry.digest
        )));
    }
    Ok(digest.to_string())
}

/// The name of the Python runtime after `builtin:`.
const PYTHON: &str = "python";

/// A task running the Python runtime requires a node that has it ready.
pub fn require_python(requires: &mut Vec<String>) {
    let tag = crate::python::PYTHON_CAPABILITY;
    if !requires.iter().any(|r| r == tag) {
        requires.push(tag.to_string());
    }
}

/// The leader's own check of submissions it receives from a peer: the same
/// rules as [`validate`] (the name, ids, caps, known dependencies, no cycle,
/// limits and their maxima, input and expected paths, digests), so a mission
/// that never went through a node's parser cannot leave tasks pending
/// forever or reach a worker that would refuse it.
pub fn check_submissions(name: &str, tasks: &[TaskSubmission]) -> Result<(), MissionError> {
    let mut spec = super::spec::MissionSpec {
        max_fix_rounds: None,
        name: name.to_string(),
        tasks: Vec::with_capacity(tasks.len()),
        workspace: tasks.first().and_then(|task| task.workspace.clone()),
    };
    if let Some(task) = tasks.iter().find(|task| task.workspace != spec.workspace) {
        return Err(MissionError::InvalidField {
            field: "workspace".into(),
            place: format!("task `{}`", excerpt(&task.id)),
            message: "every task of a mission names the same workspace".into(),
        });
    }
    for task in tasks {
        let place = || format!("task `{}`", excerpt(&task.id));
        if task.spawned_by.is_some() {
            return Err(MissionError::InvalidField {
                field: "spawned_by".into(),
                place: place(),
                message: "only a fix round adds spawned tasks, never a submission".into(),
            });
        }
        if let Some(title) = &task.title {
            super::grammar::check_task_title(title).map_err(|e| MissionError::InvalidField {
                field: "title".into(),
                place: place(),
                message: e.to_string(),
            })?;
        }
        if let Some(agent) = &task.agent {
            if agent.len() > MAX_TAG_BYTES || agent.chars().any(char::is_control) {
                return Err(MissionError::InvalidField {
                    field: "agent".into(),
                    place: place(),
                    message: format!(
                        "an agent kind is at most {MAX_TAG_BYTES} bytes without control characters"
                    ),
                });
            }
        }
        let module = ModuleRef::parse(&task.module).map_err(|e| MissionError::InvalidModule {
            task: task.id.clone(),
            module: task.module.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(module, ModuleRef::Digest(_)) {
            return Err(MissionError::InvalidModule {
                task: task.id.clone(),
                module: task.module.clone(),
                reason: "a submission names modules by digest".into(),
            });
        }
        let mut spec_task = super::spec::TaskSpec::new(task.id.clone(), module);
        spec_task.needs = task.needs.clone();
        spec_task.requires = task.requires.clone();
        spec_task.done = task.done;
        spec_task.args = task.args.clone();
        spec_task.inputs = task
            .inputs
            .iter()
            .map(|(path, digest)| format!("{path}={digest}"))
            .collect();
        spec_task.limits = crate::worker::sandbox_limits(&task.limits);
        spec_task.expect.files = task.expect.files.clone();
        spec.tasks.push(spec_task);
    }
    validate(&spec, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::{parse_toml, validate};

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs"), 1 << 20).unwrap();
        (dir, blobs)
    }

    fn convert(text: &str, blobs: &BlobStore) -> Result<Vec<TaskSubmission>, MissionError> {
        let spec = parse_toml(text).unwrap();
        to_submissions(&validate(&spec, None).unwrap(), blobs)
    }

    #[test]
    fn digests_builtins_and_input_text_become_blobs() {
        let (_dir, blobs) = store();
        let module = blobs.put(b"(module)").unwrap();
        let file = blobs.put(b"data").unwrap();
        let text = format!(
            "name = \"m\"\n[[task]]\nid = \"b\"\nmodule = \"builtin:echo\"\nneeds = [\"a\"]\ninput = \"hello\"\n\
             [[task]]\nid = \"a\"\nmodule = \"{module}\"\ninputs = [\"src/x.txt={file}\"]\npriority = \"P0\"\n"
        );
        let tasks = convert(&text, &blobs).unwrap();
        assert_eq!(tasks[0].id, "a", "topological order");
        assert_eq!(tasks[0].module, module.to_string());
        assert_eq!(
            tasks[0].inputs,
            vec![("src/x.txt".to_string(), file.to_string())]
        );
        assert_eq!(tasks[0].priority, 0);
        assert_eq!(tasks[0].requires, vec!["wasm".to_string()]);
        assert_eq!(
            tasks[1].module,
            crate::builtin::digest("echo").unwrap().to_string()
        );
        let input: Digest = tasks[1].input.as_ref().unwrap().parse().unwrap();
        assert_eq!(blobs.get(&input).unwrap().unwrap(), b"hello");
        assert_eq!(tasks[1].title, None);
    }

    #[test]
    fn markdown_titles_and_agent_kinds_are_carried_and_rechecked() {
        let (_dir, blobs) = store();
        let spec = crate::mission::parse_markdown(
            "- [ ] T1 Write the queue\n- [ ] T2 Test it, after T1\n",
            &crate::mission::AgentConfig::default(),
        )
        .unwrap();
        let mut tasks = to_submissions(&validate(&spec, None).unwrap(), &blobs).unwrap();
        assert_eq!(tasks[0].title.as_deref(), Some("Write the queue"));
        assert_eq!(tasks[0].agent.as_deref(), Some("coder"));
        assert_eq!(tasks[1].agent.as_deref(), Some("tester"));
        assert!(check_submissions("m", &tasks).is_ok());
        tasks[0].title = Some("x".repeat(crate::mission::caps::MAX_TASK_TITLE_BYTES + 1));
        let error = check_submissions("m", &tasks).unwrap_err().to_string();
        assert!(
            error.contains("`title`") && error.contains("task `T1`"),
            "{error}"
        );
        tasks[0].title = None;
        tasks[0].agent = Some("a\u{7}".into());
        let error = check_submissions("m", &tasks).unwrap_err().to_string();
        assert!(error.contains("`agent`"), "{error}");
    }

    #[test]
    fn the_leader_rechecks_the_graph_of_a_submission() {
        let (_dir, blobs) = store();
        let text = "[[task]]\nid = \"a\"\nmodule = \"builtin:noop\"\n[[task]]\nid = \"b\"\nmodule = \"builtin:noop\"\nneeds = [\"a\"]\n";
        let mut tasks = convert(text, &blobs).unwrap();
        assert!(check_submissions("m", &tasks).is_ok());
        tasks[0].needs = vec!["b".into()];
        let error = check_submissions("m", &tasks).unwrap_err().to_string();
        assert!(error.contains("cycle"), "{error}");
        tasks[0].needs = vec!["ghost".into()];
        let error = check_submissions("m", &tasks).unwrap_err().to_string();
        assert!(error.contains("ghost"), "{error}");
        tasks[0].needs.clear();
        tasks[1].id = "a".into();
        let error = check_submissions("m", &tasks).unwrap_err().to_string();
        assert!(error.contains("duplicate"), "{error}");
        assert!(check_submissions("m", &[]).is_err());
    }

    #[test]
    fn paths_unknown_builtins_and_missing_blobs_are_refused_by_name() {
        let (_dir, blobs) = store();
        let one = |module: &str, inputs: &str| {
            convert(
                &format!("[[task]]\nid = \"t\"\nmodule = \"{module}\"\ninputs = [{inputs}]\n"),
                &blobs,
            )
            .unwrap_err()
            .to_string()
        };
        let error = one("agents/noop.wat", "");
        assert!(
            error.contains("task `t`") && error.contains("upload"),
            "{error}"
        );
        let error = one("builtin:nope", "");
        assert!(error.contains("unknown built-in module"), "{error}");
        let absent = Digest::of(b"absent");
        let error = one(&absent.to_string(), "");
        assert!(error.contains("/api/blobs"), "{error}");
        let error = one("builtin:noop", "\"src/a.rs\"");
        assert!(
            error.contains("src/a.rs") && error.contains("upload"),
            "{error}"
        );
        let error = one("builtin:noop", &format!("\"a={absent}\""));
        assert!(error.contains("no such blob"), "{error}");
    }
}
