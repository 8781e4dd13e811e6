//! On-disk cache of compiled modules, keyed by the module's SHA-256.
//!
//! Layout: `<cache_dir>/<engine fingerprint>/<module hex>.cwasm`, plus
//! `<cache_dir>/cache.key` (32 random bytes, created once). Each artifact file is
//!
//! ```text
//! MAGIC (16 bytes) | module sha256 (32) | tag (32) | wasmtime artifact
//! ```
//!
//! where `tag = sha256(key | module sha256 | artifact)`. An artifact is only
//! handed to `Module::deserialize` after its tag checks out, so a file this
//! cache did not write (or a byte flipped on disk) is detected, deleted and
//! recompiled, never loaded.

use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::SandboxError;

const MAGIC: &[u8; 16] = b"coditect-cwasm\x00\x01";
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// SHA-256 of a module's bytes (binary or text, as submitted). Displays and
/// parses as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest([u8; 32]);

impl ModuleDigest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleDigest(Sha256::digest(bytes).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleDigest({self})")
    }
}

impl FromStr for ModuleDigest {
    type Err = SandboxError;

    /// Accepts `sha256:<64 hex>` or bare hex.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|error| {
            SandboxError::InvalidConfig(format!("not a sha256 digest: {text:?} ({error})"))
        })?;
        Ok(ModuleDigest(bytes))
    }
}

impl Serialize for ModuleDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModuleDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Feeds `Hash` output into SHA-256 so the engine fingerprint is a stable name.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Why a cached artifact was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No file for this digest.
    Absent,
    /// A file was there but failed verification or deserialization; it was removed.
    Rejected(String),
}

pub(crate) struct ModuleCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl ModuleCache {
    pub(crate) fn open(root: &Path, engine: &Engine) -> Result<Self, SandboxError> {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = hex::encode(&hasher.0.finalize()[..8]);
        let dir = root.join(fingerprint);
        fs::create_dir_all(&dir)
            .map_err(|e| SandboxError::io(format!("creating cache dir {}", dir.display()), e))?;
        let key = load_or_create_key(&root.join("cache.key"))?;
        Ok(ModuleCache { dir, key })
    }

    pub(crate) fn path_for(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.to_hex()))
    }

    fn tag(&self, digest: &ModuleDigest, artifact: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(digest.as_bytes());
        hasher.update(artifact);
        hasher.finalize().into()
    }

    /// Loads a verified artifact; never compiles.
    pub(crate) fn load(&self, engine: &Engine, digest: &ModuleDigest) -> Result<Module, Miss> {
        let path = self.path_for(digest);
        let file = match fs::read(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(error) => return Err(self.reject(&path, format!("unreadable: {error}"))),
        };
        if file.len() < HEADER_LEN || &file[..MAGIC.len()] != MAGIC {
            return Err(self.reject(&path, "bad header".into()));
        }
        let stored_digest = &file[MAGIC.len()..MAGIC.len() + 32];
        let stored_tag = &file[MAGIC.len() + 32..HEADER_LEN];
        let artifact = &file[HEADER_LEN..];
        if stored_digest != digest.as_bytes() {
            return Err(self.reject(&path, "artifact belongs to another module".into()));
        }
        if stored_tag != self.tag(digest, artifact) {
            return Err(self.reject(
                &path,
                "artifact digest mismatch (corrupted or foreign)".into(),
            ));
        }
        // SAFETY: `Module::deserialize` trusts its input to be an artifact
        // wasmtime produced. These bytes are exactly what this cache wrote
        // from `Module::serialize` on an engine with the same compatibility
        // fingerprint: the keyed SHA-256 tag above proves it, and wasmtime
        // itself re-checks the engine configuration and version.
        #[allow(unsafe_code)]
        let loaded = unsafe { Module::deserialize(engine, artifact) };
        loaded.map_err(|error| self.reject(&path, format!("deserialize failed: {error}")))
    }

    fn reject(&self, path: &Path, reason: String) -> Miss {
        tracing::warn!(path = %path.display(), %reason, "discarding cached module artifact");
        let _ = fs::remove_file(path);
        Miss::Rejected(reason)
    }

    /// Takes the machine-wide lock on compiling `digest` (an exclusive lock
    /// on `<hex>.lock` beside its artifact), waiting while another process
    /// or thread holds it. Nodes sharing a cache directory then compile a
    /// large module once: the others wait, then load the artifact. `None`
    /// if the lock file cannot be used (each then compiles on its own).
    pub(crate) fn compile_lock(&self, digest: &ModuleDigest) -> Option<fs::File> {
        let path = self.dir.join(format!("{}.lock", digest.to_hex()));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }

    /// Writes an artifact atomically (temporary file, then rename).
    pub(crate) fn store(&self, digest: &ModuleDigest, artifact: &[u8]) -> Result<(), SandboxError> {
        let path = self.path_for(digest);
        let context = |what: &str| format!("{what} cache file {}", path.display());
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(|e| SandboxError::io(context("creating"), e))?;
        let tag = self.tag(digest, artifact);
        file.write_all(MAGIC)
            .and_then(|()| file.write_all(digest.as_bytes()))
            .and_then(|()| file.write_all(&tag))
            .and_then(|()| file.write_all(artifact))
            .map_err(|e| SandboxError::io(context("writing"), e))?;
        file.persist(&path)
            .map_err(|e| SandboxError::io(context("renaming"), e.error))?;
        Ok(())
    }
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32], SandboxError> {
    if let Ok(bytes) = fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    // A missing or malformed key is replaced; every artifact tagged with the
    // old key then fails verification and is recompiled.
    let mut key = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut wasmtime_wasi::thread_rng(), &mut key);
    let dir = path.parent().unwrap_or(Path::new("."));
    let context = format!("writing cache key {}", path.display());
    let mut file =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| SandboxError::io(&context, e))?;
    file.write_all(&key)
        .map_err(|e| SandboxError::io(&context, e))?;
    // Another process sharing this cache may have created its key at the
    // same moment: the first key written wins and everyone uses it. A
    // malformed key already there is replaced.
    if path.exists() {
        file.persist(path)
            .map_err(|e| SandboxError::io(&context, e.error))?;
        return Ok(key);
    }
    match file.persist_noclobber(path) {
        Ok(_) => Ok(key),
        Err(error) => match fs::read(path)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        {
            Some(theirs) => Ok(theirs),
            None => Err(SandboxError::io(&context, error.error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_displays_and_parses() {
        let digest = ModuleDigest::of(b"abc");
        let text = digest.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(text.parse::<ModuleDigest>().unwrap(), digest);
        assert_eq!(digest.to_hex().parse::<ModuleDigest>().unwrap(), digest);
        assert!("sha256:zz".parse::<ModuleDigest>().is_err());
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<ModuleDigest>(&json).unwrap(), digest);
    }
}
