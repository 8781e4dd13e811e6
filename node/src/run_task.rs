//! `coditect run-task`: one module, locally, in the mesh's sandbox.

use std::path::PathBuf;

use coditect_node::start::NodeError;
use coditect_sandbox::Limits;

/// Flags of `coditect run-task`.
#[derive(clap::Args)]
pub struct RunTaskArgs {
    /// The module: binary .wasm or text .wat, or `builtin:python` (CPython
    /// 3.12 for WASI, as `scripts/setup.sh` installed it)
    module: PathBuf,
    /// A file the guest reads as /input/input.txt
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Directory mounted read-write as /output (a temporary one if absent)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Fuel (deterministic CPU budget) [default: 20000000000]
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear memory cap, MiB [default: 256]
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Wall-clock timeout, ms [default: 60000]
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Directory the guest sees read-only as /workspace
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    /// The guest's arguments (after `--`), e.g. `-- -c 'print(1)'` for Python
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Runs the module; exit 0 when the guest ran to an outcome, 2 when the
/// module or the arguments are unusable.
pub fn run(args: RunTaskArgs) -> Result<u8, NodeError> {
    let defaults = Limits::default();
    let limits = Limits {
        fuel: args.fuel.unwrap_or(defaults.fuel),
        memory_mb: args.memory_mb.unwrap_or(defaults.memory_mb),
        timeout_ms: args.timeout_ms.unwrap_or(defaults.timeout_ms),
        output_mb: defaults.output_mb,
    };
    let mut options = coditect_sandbox::RunOptions {
        args: args.args.clone(),
        workspace: args.workspace.clone(),
        ..Default::default()
    };
    let mut module = args.module.clone();
    if module.as_os_str() == "builtin:python" {
        let path = coditect_node::python::default_path().ok_or_else(|| {
            NodeError::BadInput(format!(
                "no Python runtime: set {} or run scripts/setup.sh",
                coditect_node::python::PYTHON_WASM_ENV
            ))
        })?;
        coditect_node::python::verify(&path).map_err(NodeError::BadInput)?;
        module = path;
        options.program = Some(coditect_node::python::PROGRAM.into());
        options.env = coditect_node::python::environment();
        // Compiled once per machine, not once per run.
        options.cache_dir = coditect_node::python::machine_module_cache();
    }
    let outcome = coditect_sandbox::run_task_command_with(
        &module,
        args.input.as_deref(),
        args.dir.as_deref(),
        limits,
        &options,
    )
    .map_err(|error| NodeError::BadInput(error.to_string()))?;
    if args.json {
        println!("{}", outcome.to_cli_json());
    } else {
        println!("{}", outcome.summary());
    }
    u8::try_from(outcome.cli_exit_code())
        .map_err(|_| NodeError::Failed("exit code out of range".into()))
}
