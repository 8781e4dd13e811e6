//! The library side of `coditect run-task`: run one module locally in the
//! same sandbox the mesh uses.

use std::fs;
use std::path::Path;

use crate::config::{Limits, SandboxConfig, TaskSpec};
use crate::error::SandboxError;
use crate::outcome::Outcome;
use crate::sandbox::Sandbox;
use crate::threads::CancelToken;

/// Runs `module_path` (`.wasm` binary or `.wat` text) once under `limits`.
///
/// - `/input` is a fresh temporary directory; with `input_file`, that file is
///   copied in as `/input/input.txt` (as a mission's `input` would be).
/// - `/output` is `dir` when given (created if missing; files already there
///   stay visible to the guest and are listed in the outcome), otherwise a
///   temporary directory removed afterwards (the outcome still lists the
///   files with their digests).
/// - Modules are compiled into a temporary cache, so nothing persists.
/// - Stdout that spilled to disk is read back: [`Outcome::stdout`] holds all of it.
///
/// `Err` means nothing ran because the arguments are unusable (unreadable
/// module or input, bad `--dir`, impossible limits): the CLI prints it and
/// exits 2. An unusable module comes back as `Ok` with kind
/// `invalid_module`, whose [`Outcome::cli_exit_code`] is 2; every other
/// outcome exits 0.
pub fn run_task_command(
    module_path: &Path,
    input_file: Option<&Path>,
    dir: Option<&Path>,
    limits: Limits,
) -> Result<Outcome, SandboxError> {
    run_task_command_with(module_path, input_file, dir, limits, &RunOptions::default())
}

/// What [`run_task_command_with`] adds to a plain run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The guest's `argv[0]` (`task` when `None`).
    pub program: Option<String>,
    /// The guest's arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The guest's environment.
    pub env: Vec<(String, String)>,
    /// A directory the guest sees read-only as `/workspace`.
    pub workspace: Option<std::path::PathBuf>,
    /// A persistent module cache (a large module then compiles once); a
    /// temporary one when `None`.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// [`run_task_command`] with arguments, environment, a workspace and a
/// persistent module cache.
pub fn run_task_command_with(
    module_path: &Path,
    input_file: Option<&Path>,
    dir: Option<&Path>,
    limits: Limits,
    options: &RunOptions,
) -> Result<Outcome, SandboxError> {
    limits.validate()?;
    let module = fs::read(module_path)
        .map_err(|e| SandboxError::io(format!("reading module {}", module_path.display()), e))?;
    let scratch = tempfile::Builder::new()
        .prefix("coditect-run-task-")
        .tempdir()
        .map_err(|e| SandboxError::io("creating a temporary directory", e))?;
    let input_dir = scratch.path().join("input");
    fs::create_dir(&input_dir)
        .map_err(|e| SandboxError::io(format!("creating {}", input_dir.display()), e))?;
    if let Some(input) = input_file {
        if !input.is_file() {
            return Err(SandboxError::io(
                format!("reading input {}", input.display()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a readable file"),
            ));
        }
        fs::copy(input, input_dir.join("input.txt"))
            .map_err(|e| SandboxError::io(format!("copying input {}", input.display()), e))?;
    }
    let output_dir = match dir {
        Some(dir) => {
            fs::create_dir_all(dir)
                .map_err(|e| SandboxError::io(format!("creating --dir {}", dir.display()), e))?;
            dir.to_path_buf()
        }
        None => scratch.path().join("output"),
    };
    fs::create_dir_all(&output_dir)
        .map_err(|e| SandboxError::io(format!("creating {}", output_dir.display()), e))?;
    if let Some(workspace) = &options.workspace {
        if !workspace.is_dir() {
            return Err(SandboxError::io(
                format!("opening workspace {}", workspace.display()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
    }
    let cache = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("cache"));
    let mut config = SandboxConfig::new(cache);
    // One task (plus one nested instance for `coditect.run_module`).
    config.max_instances = 4;
    config.max_idle_threads = 1;
    let sandbox = Sandbox::new(config)?;
    let mut task = TaskSpec::new(input_dir, output_dir, limits).spill_dir(scratch.path());
    if let Some(program) = &options.program {
        task.program = program.clone();
    }
    task.args = options.args.clone();
    task.env = options.env.clone();
    task.workspace_dir = options.workspace.clone();
    let mut outcome = sandbox.run_bytes(&module, task, &CancelToken::new())?;
    // The command prints all of stdout, so it holds all of it (up to
    // `output_mb`), unlike a node.
    outcome
        .inline_stdout()
        .map_err(|e| SandboxError::io("reading back the spilled stdout", e))?;
    Ok(outcome)
}
