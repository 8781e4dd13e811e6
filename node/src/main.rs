//! `coditect`: the one binary of the mesh. Thin: parse, dispatch, map errors
//! to exit codes (0 ok, 1 failed, 2 bad usage or input).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coditect_node::config::RawNodeConfig;
use coditect_node::start::{load_config, run_node, NodeError};

mod admission_client;
mod api_client;
mod bench;
mod check;
mod client;
mod plan_client;
mod run_task;
mod workspace_client;

#[derive(Parser)]
#[command(
    name = "coditect",
    version,
    about = "Coditect mesh: a peer-to-peer mesh of sandboxed agent nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
    /// The mesh's HTTP API token, sent as `Authorization: Bearer` [default: read from --api-token-file]
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "CODITECT_API_TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,
    /// The file holding the API token (a node's DATA_DIR/api-token); `coditect node` keeps the mesh's token there [default: ./coditect-data/api-token if present]
    #[arg(long, global = true, value_name = "FILE")]
    api_token_file: Option<std::path::PathBuf>,
    /// Trust exactly the HTTPS certificate with this SHA-256 fingerprint (sha256:HEX, from the node's log or node.json; for --tls-self-signed nodes)
    #[arg(long, global = true, value_name = "SHA256")]
    tls_fingerprint: Option<String>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a node in the foreground until SIGINT/SIGTERM (which drain it)
    Node(Box<RawNodeConfig>),
    /// Show the mesh as one node sees it
    Status {
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
        /// Print the raw JSON of /api/status
        #[arg(long)]
        json: bool,
    },
    /// Submit a mission (TOML task graph or markdown tasklist); prints its id
    Submit {
        /// The mission file (.toml, or .md for a markdown tasklist: seed format, spec-kit or Kiro tasks.md)
        file: std::path::PathBuf,
        /// Follow live progress until the mission ends; exit 0 only if every task succeeded
        #[arg(long, conflicts_with = "check")]
        wait: bool,
        /// Parse and validate only, without a mesh: print each task (id, title, agent kind, priority, dependencies, done) and any warnings; exit 0 if valid, 2 if not
        #[arg(long)]
        check: bool,
        /// With --check: print {"tasks": [...], "warnings": [...]} as JSON
        #[arg(long, requires = "check")]
        json: bool,
        /// With --check: a node config whose [agents] table routes markdown tasks (default: the built-in routing)
        #[arg(long, requires = "check")]
        config: Option<std::path::PathBuf>,
        /// The code base every task sees read-only at /workspace (uploaded as a tree: only files the node lacks are sent; .gitignore is respected, .git/ skipped)
        #[arg(long, conflicts_with = "check")]
        workspace: Option<std::path::PathBuf>,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Show one mission and its tasks
    Mission {
        /// The mission id (as `submit` printed it)
        id: String,
        /// Print the raw JSON of /api/missions/{id}
        #[arg(long, conflicts_with = "diff")]
        json: bool,
        /// Print the unified diff of the mission's final workspace against the submitted one
        #[arg(long)]
        diff: bool,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Write a mission's workspace changes into a local checkout, refusing (and writing nothing) if a changed file was also changed locally since submission
    Apply {
        /// The mission id
        id: String,
        /// The checkout (the folder that was submitted as the workspace)
        dir: std::path::PathBuf,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Write a mission for a goal from a playbook (feature: analyze, code, test; bug: analyze, reproduce, fix, test; docs: analyze, docs)
    Plan {
        /// What the mission should achieve
        goal: String,
        /// The code base the mission works on
        #[arg(long)]
        workspace: std::path::PathBuf,
        /// Where to write the mission (default: stdout)
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The playbook: feature, bug or docs (default: ask the model of the
        /// node at --api, else chosen from the goal's words)
        #[arg(long)]
        playbook: Option<String>,
        /// A node whose language model plans the mission (without it, or
        /// when it cannot, a playbook is used and you are told so)
        #[arg(long)]
        api: Option<String>,
    },
    /// Cancel a mission: queued tasks dropped, running guests interrupted
    Cancel {
        /// The mission id
        id: String,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Re-run the failed and blocked tasks of a failed mission
    Retry {
        /// The mission id
        id: String,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Deterministic simulation of many nodes (runs `coditect-sim`, installed beside this binary)
    #[command(disable_help_flag = true)]
    Sim {
        /// --nodes N --seed S --scenario NAME --virtual-secs T --report FILE (see `coditect sim --help`)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run one wasm module (.wasm or .wat) locally in the sandbox the mesh uses
    RunTask(run_task::RunTaskArgs),
    /// Join tokens of a guarded mesh: create, revoke, rotate the secret
    #[command(subcommand)]
    Token(TokenCommand),
    /// Peers of a guarded mesh: revoke one
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Measure the mesh (results go into BENCHMARKS.md)
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a join token (asks the leader); prints the token alone on stdout
    Create {
        /// How long it stays valid: 90s, 15m, 1h, 7d [default: until revoked]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// How many nodes may join with it [default: any number]
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Void a join token (the id is the part after `cdt1.`)
    Revoke {
        /// The token's id
        id: String,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Rotate the join secret: admitted peers stay, every token is void
    Rotate {
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
    /// Rotate the HTTP API token of the whole mesh: prints the new one alone
    /// on stdout; the old one is refused from then on, and every node keeps
    /// the new one in its DATA_DIR/api-token
    RotateApi {
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Take a peer off the allowlist: every node disconnects it, its tasks are placed again
    Revoke {
        /// Its peer id (12D3Koo...)
        peer: String,
        /// The node's HTTP API
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        api: String,
    },
}

/// Keeps freed memory in the process instead of handing it back to the
/// kernel at once (glibc's defaults): a node's work comes in bursts (a
/// mission's tasks parsed, committed, replicated, applied), and memory given
/// back between bursts is zeroed and faulted in again, page by page, by the
/// next one. Measured: the first mission on a fresh mesh runs 15% faster
/// (BENCHMARKS.md, "Allocator thresholds"). Memory a burst freed stays
/// reusable by the next one; at most 64 MiB of free heap top is kept.
/// Settings a user gave through `GLIBC_TUNABLES` win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    for (option, value) in [
        (libc::M_TRIM_THRESHOLD, 64 << 20),
        (libc::M_TOP_PAD, 16 << 20),
        // The largest glibc allows on 64-bit; fixing it also stops the
        // threshold from moving with each freed large block.
        (libc::M_MMAP_THRESHOLD, 32 << 20),
    ] {
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before any other thread exists, with options glibc defines.
        unsafe {
            libc::mallopt(option, value);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CODITECT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,libp2p=warn,openraft=error,libp2p_gossipsub=error",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    if !matches!(cli.command, Commands::Node(_)) {
        match api_client::token_from(cli.api_token.as_deref(), cli.api_token_file.as_deref()) {
            Ok(token) => api_client::set_token(token),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
        match cli
            .tls_fingerprint
            .as_deref()
            .map(coditect_node::tls::parse_fingerprint)
        {
            None => {}
            Some(Ok(pin)) => api_client::set_pin(pin),
            Some(Err(error)) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let result: Result<u8, NodeError> = match cli.command {
        Commands::Node(mut raw) => match load_config({
            raw.api_token_file = cli.api_token_file.clone().or(raw.api_token_file);
            *raw
        }) {
            Ok(config) => runtime.block_on(run_node(config)).map(|()| 0),
            Err(error) => Err(error),
        },
        Commands::Status { api, json } => runtime.block_on(client::status(&api, json)).map(|()| 0),
        Commands::Submit {
            file,
            check: true,
            json,
            config,
            ..
        } => check::run(&file, json, config.as_deref()),
        Commands::Submit {
            file,
            wait,
            api,
            workspace,
            ..
        } => runtime.block_on(client::submit(&api, &file, workspace.as_deref(), wait)),
        Commands::Mission {
            id,
            diff: true,
            api,
            ..
        } => runtime.block_on(workspace_client::diff(&api, &id)),
        Commands::Mission { id, json, api, .. } => {
            runtime.block_on(client::mission(&api, &id, json))
        }
        Commands::Plan {
            goal,
            workspace,
            out,
            playbook,
            api,
        } => plan(
            &runtime,
            &goal,
            &workspace,
            out.as_deref(),
            playbook.as_deref(),
            api.as_deref(),
        ),
        Commands::Apply { id, dir, api } => {
            runtime.block_on(workspace_client::apply(&api, &id, &dir))
        }
        Commands::Cancel { id, api } => runtime.block_on(client::control(&api, &id, false)),
        Commands::Retry { id, api } => runtime.block_on(client::control(&api, &id, true)),
        Commands::RunTask(args) => run_task::run(args),
        Commands::Bench(command) => runtime.block_on(bench::run(command)).map(|()| 0),
        Commands::Token(TokenCommand::Create { ttl, uses, api }) => {
            runtime.block_on(admission_client::token_create(&api, ttl.as_deref(), uses))
        }
        Commands::Token(TokenCommand::Revoke { id, api }) => {
            runtime.block_on(admission_client::token_revoke(&api, &id))
        }
        Commands::Token(TokenCommand::Rotate { api }) => {
            runtime.block_on(admission_client::token_rotate(&api))
        }
        Commands::Token(TokenCommand::RotateApi { api }) => {
            runtime.block_on(admission_client::api_token_rotate(&api))
        }
        Commands::Peer(PeerCommand::Revoke { peer, api }) => {
            runtime.block_on(admission_client::peer_revoke(&api, &peer))
        }
        Commands::Sim { args } => sim(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(NodeError::BadInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(NodeError::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// `coditect sim`: the simulation lives in its own binary, `coditect-sim`
/// (the simulation crate depends on this one, so it cannot be linked in);
/// it is found beside this executable, else on `PATH`.
fn sim(args: &[String]) -> Result<u8, NodeError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("coditect-sim")))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| std::path::PathBuf::from("coditect-sim"));
    let status = std::process::Command::new(&program)
        .args(args)
        .status()
        .map_err(|error| {
            NodeError::Failed(format!(
                "cannot run {} (build it with `cargo build -p coditect-simulation`): {error}",
                program.display()
            ))
        })?;
    Ok(status
        .code()
        .map(|code| code.clamp(0, 255) as u8)
        .unwrap_or(1))
}

/// `coditect plan "GOAL" --workspace DIR [--out FILE] [--playbook NAME]`.
fn plan(
    runtime: &tokio::runtime::Runtime,
    goal: &str,
    workspace: &std::path::Path,
    out: Option<&std::path::Path>,
    playbook: Option<&str>,
    api: Option<&str>,
) -> Result<u8, NodeError> {
    use coditect_node::plan::Playbook;
    let named_playbook = match playbook {
        Some(name) => Some(Playbook::from_name(name).ok_or_else(|| {
            NodeError::BadInput(format!(
                "unknown playbook {name:?}: expected feature, bug or docs"
            ))
        })?),
        None => None,
    };
    let playbook = named_playbook.unwrap_or_else(|| Playbook::for_goal(goal));
    let folder = workspace.canonicalize().map_err(|error| {
        NodeError::BadInput(format!("workspace {}: {error}", workspace.display()))
    })?;
    if !folder.is_dir() {
        return Err(NodeError::BadInput(format!(
            "workspace {} is not a folder",
            workspace.display()
        )));
    }
    // The mission names its workspace relative to itself when it can.
    let named = match out {
        Some(file) => {
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let dir = dir
                .canonicalize()
                .map_err(|error| NodeError::BadInput(format!("{}: {error}", dir.display())))?;
            match folder.strip_prefix(&dir) {
                Ok(inner) if inner.as_os_str().is_empty() => ".".to_string(),
                Ok(inner) => inner.display().to_string(),
                Err(_) => folder.display().to_string(),
            }
        }
        None => folder.display().to_string(),
    };
    let mut text = None;
    let mut how = format!("{} playbook", playbook.name());
    if let (Some(api), None) = (api, named_playbook) {
        match runtime.block_on(plan_client::ask(api, goal, &folder)) {
            Ok((mission, model, tries)) => {
                how = format!("planned by {model} in {tries} tries");
                text = Some(format!(
                    "workspace = {}
{mission}",
                    toml::Value::String(named.clone())
                ));
            }
            Err(why) => eprintln!("no model planned it ({why}); using the {how}"),
        }
    }
    let text = match text {
        Some(text) => text,
        None => coditect_node::plan::plan(goal, &named, playbook).map_err(NodeError::BadInput)?,
    };
    match out {
        Some(file) => {
            std::fs::write(file, &text).map_err(|error| {
                NodeError::Failed(format!("cannot write {}: {error}", file.display()))
            })?;
            eprintln!(
                "wrote {} ({how}); submit it with `coditect submit {}`",
                file.display(),
                file.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(0)
}
