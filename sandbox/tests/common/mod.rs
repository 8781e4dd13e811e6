//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use coditect_sandbox::{Limits, Outcome, Sandbox, SandboxConfig, TaskSpec};
use tempfile::TempDir;

/// A sandbox with a small instance pool in its own cache directory.
pub fn sandbox(dir: &TempDir) -> Sandbox {
    let mut config = SandboxConfig::new(dir.path().join("cache"));
    config.max_instances = 256;
    config.max_memory_mb = 512;
    Sandbox::new(config).expect("sandbox")
}

/// Fresh `/input` and `/output` directories under `dir`, with the given files in `/input`.
pub fn task_dirs(dir: &Path, name: &str, inputs: &[(&str, &[u8])]) -> (PathBuf, PathBuf) {
    let input = dir.join(name).join("input");
    let output = dir.join(name).join("output");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    for (path, bytes) in inputs {
        let target = input.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    (input, output)
}

/// Prepares `module` (wasm or WAT) and runs it once with `limits`.
pub fn run(sandbox: &Sandbox, dir: &TempDir, name: &str, module: &[u8], limits: Limits) -> Outcome {
    run_with_inputs(sandbox, dir, name, module, limits, &[])
}

pub fn run_with_inputs(
    sandbox: &Sandbox,
    dir: &TempDir,
    name: &str,
    module: &[u8],
    limits: Limits,
    inputs: &[(&str, &[u8])],
) -> Outcome {
    let (input, output) = task_dirs(dir.path(), name, inputs);
    let task = TaskSpec::new(input, output, limits);
    sandbox
        .run_bytes(module, task, &Default::default())
        .expect("run")
}

/// This package's folder, as cargo says at run time: a test binary reused
/// from a shared target dir may have been compiled in another checkout.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The repository's `agents/` directory.
pub fn agents_dir() -> PathBuf {
    manifest_dir().join("../agents")
}

/// Builds the C agents once per test binary with `agents/build.sh`, into
/// cargo's scratch directory for integration tests.
pub fn built_agents() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coditect-agents");
        let status = Command::new("bash")
            .arg(agents_dir().join("build.sh"))
            .arg(&out)
            .status()
            .expect("run agents/build.sh");
        assert!(status.success(), "agents/build.sh failed");
        out
    })
}

/// Bytes of an agent: built C agents by name, WAT agents from `agents/`.
pub fn agent(name: &str) -> Vec<u8> {
    let path = if name.ends_with(".wat") {
        agents_dir().join(name)
    } else {
        built_agents().join(format!("{name}.wasm"))
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
