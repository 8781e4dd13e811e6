//! Content-addressed storage of a Coditect node.
//!
//! This crate owns the blob store: immutable byte strings (wasm modules, task
//! inputs and outputs) named by the sha256 of their content, `sha256:<hex>`.
//! Peers fetch blobs from each other by digest, so the name is also the
//! integrity check. It is a leaf crate: it depends on no other `coditect-*`
//! crate, and it does no networking.
//!
//! It also holds [`codec`], the single module that knows the binary encoding
//! used for everything the mesh stores or sends, so every crate above can
//! reach it without a dependency cycle.
//!
//! Architecture invariant: a blob file is only ever visible under its digest
//! name after its content was fully written, synced and verified (write to a
//! temporary file, fsync, rename), so a crash never leaves a blob whose bytes
//! do not match its name.

pub mod codec;
pub mod tree;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The sha256 digest that names a blob.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex of the 32 digest bytes, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    /// The string does not start with `sha256:`.
    #[error("digest {0:?} does not start with \"sha256:\"")]
    MissingPrefix(String),
    /// The part after the prefix is not 64 hex characters.
    #[error("digest {0:?} is not \"sha256:\" followed by 64 hex characters")]
    BadHex(String),
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex_part = text
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestParseError::MissingPrefix(text.to_string()))?;
        if hex_part.len() != 64 {
            return Err(DigestParseError::BadHex(text.to_string()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut bytes)
            .map_err(|_| DigestParseError::BadHex(text.to_string()))?;
        Ok(Digest(bytes))
    }
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Reading or writing the store's directory failed.
    #[error("blob store at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A stored file no longer matches its name (disk corruption or tampering).
    #[error("blob {digest} is corrupt on disk (content hashes to {actual})")]
    Corrupt {
        /// The name the blob is stored under.
        digest: Digest,
        /// What its bytes hash to now.
        actual: Digest,
    },
    /// The blob is larger than the store accepts.
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size offered.
        size: u64,
        /// Configured maximum.
        limit: u64,
    },
}

/// A blob being written; see [`BlobStore::writer`]. Dropped unfinished, it
/// leaves nothing behind.
pub struct BlobWriter {
    store: BlobStore,
    file: Option<fs::File>,
    tmp: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
}

impl BlobWriter {
    /// Appends `bytes`; refuses once the blob outgrows the store's limit.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        use sha2::Digest as _;
        let size = self.size + bytes.len() as u64;
        if size > self.store.max_blob_bytes {
            return Err(BlobError::TooLarge {
                size,
                limit: self.store.max_blob_bytes,
            });
        }
        let file = self
            .file
            .as_mut()
            .expect("an unfinished writer has its file");
        file.write_all(bytes).map_err(|source| BlobError::Io {
            path: self.tmp.clone(),
            source,
        })?;
        self.hasher.update(bytes);
        self.size = size;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob durable and visible under its digest.
    pub fn finish(mut self) -> Result<Digest, BlobError> {
        use sha2::Digest as _;
        let file = self.file.take().expect("an unfinished writer has its file");
        let digest = Digest(std::mem::take(&mut self.hasher).finalize().into());
        let final_path = self.store.path_of(&digest);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        if final_path.exists() {
            drop(file);
            let _ = fs::remove_file(&self.tmp);
            return Ok(digest);
        }
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        let dir = final_path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(&self.tmp, &final_path).map_err(io_err(&final_path))?;
        Ok(digest)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A directory of immutable blobs named by their sha256.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    max_blob_bytes: u64,
}

impl BlobStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>, max_blob_bytes: u64) -> Result<Self, BlobError> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp")).map_err(|source| BlobError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(BlobStore {
            root,
            max_blob_bytes,
        })
    }

    fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Adopts the file at `path`, which the caller has verified to hold
    /// `digest`, by hard-linking it into the store: no copy and no fsync of
    /// its bytes (a large runtime file costs nothing at start). `Ok(false)`
    /// when it cannot be linked (another file system): copy it instead.
    /// Reads still verify the bytes against the digest.
    pub fn adopt(&self, path: &Path, digest: &Digest) -> Result<bool, BlobError> {
        let final_path = self.path_of(digest);
        if final_path.exists() {
            return Ok(true);
        }
        let dir = final_path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(|source| BlobError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        match fs::hard_link(path, &final_path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(true),
            Err(_) => Ok(false),
        }
    }

    /// Stores `bytes` and returns their digest. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        if bytes.len() as u64 > self.max_blob_bytes {
            return Err(BlobError::TooLarge {
                size: bytes.len() as u64,
                limit: self.max_blob_bytes,
            });
        }
        let digest = Digest::of(bytes);
        let final_path = self.path_of(&digest);
        if final_path.exists() {
            return Ok(digest);
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        let dir = final_path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Unique per call: two threads storing the same bytes at once must
        // not share (and rename away) one temporary file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!(
            "{}.{}.{sequence}",
            digest.hex(),
            std::process::id()
        ));
        {
            let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            file.write_all(bytes).map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
        Ok(digest)
    }

    /// A writer that streams a blob to disk while hashing it, so memory
    /// stays bounded whatever the blob's size; [`BlobWriter::finish`]
    /// makes it visible under its digest.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        use sha2::Digest as _;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("upload.{}.{sequence}", std::process::id()));
        let file = fs::File::create(&tmp).map_err(|source| BlobError::Io {
            path: tmp.clone(),
            source,
        })?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            tmp,
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }

    /// The bytes of `digest`, verified against it; `None` if not stored here.
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path_of(digest);
        match fs::read(&path) {
            Ok(bytes) => {
                let actual = Digest::of(&bytes);
                if actual != *digest {
                    return Err(BlobError::Corrupt {
                        digest: *digest,
                        actual,
                    });
                }
                Ok(Some(bytes))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    /// The size of blob `digest` on disk, if stored here.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path_of(digest))
            .ok()
            .map(|meta| meta.len())
    }

    /// The largest blob this store accepts.
    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    /// Makes `to` a hard link of blob `digest` (a copy where links cannot
    /// be made); `Ok(false)` if the blob is not stored here. The link
    /// shares the stored bytes, so only read-only users may get it.
    pub fn link_to(&self, digest: &Digest, to: &Path) -> Result<bool, BlobError> {
        let from = self.path_of(digest);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        match fs::hard_link(&from, to) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound && !from.exists() => Ok(false),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Err(io_err(to)(error)),
            Err(_) => match fs::copy(&from, to) {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == io::ErrorKind::NotFound && !from.exists() => {
                    Ok(false)
                }
                Err(error) => Err(io_err(to)(error)),
            },
        }
    }

    /// Whether `digest` is stored here (without verifying its bytes).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn put_then_get_returns_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let digest = store.put(b"hello").unwrap();
        assert_eq!(
            digest.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.get(&digest).unwrap().unwrap(), b"hello");
        assert!(store.contains(&digest));
        assert_eq!(store.put(b"hello").unwrap(), digest);
    }

    #[test]
    fn threads_storing_the_same_bytes_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 24).unwrap();
        let bytes = vec![7u8; 4 << 20];
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| store.put(&bytes))).collect();
            for handle in handles {
                assert_eq!(handle.join().unwrap().unwrap(), Digest::of(&bytes));
            }
        });
        let linked = dir.path().join("linked");
        assert!(store.link_to(&Digest::of(&bytes), &linked).unwrap());
        assert_eq!(std::fs::read(&linked).unwrap(), bytes);
        assert!(!store
            .link_to(&Digest::of(b"absent"), &dir.path().join("x"))
            .unwrap());
    }

    #[test]
    fn a_streamed_blob_equals_a_put_one_and_oversize_streams_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1_000).unwrap();
        let mut writer = store.writer().unwrap();
        writer.write(b"hello ").unwrap();
        writer.write(b"world").unwrap();
        assert_eq!(writer.size(), 11);
        let digest = writer.finish().unwrap();
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(store.get(&digest).unwrap().unwrap(), b"hello world");
        // The same bytes again: same digest, nothing duplicated.
        let mut again = store.writer().unwrap();
        again.write(b"hello world").unwrap();
        assert_eq!(again.finish().unwrap(), digest);
        let mut big = store.writer().unwrap();
        big.write(&[0; 600]).unwrap();
        assert!(matches!(
            big.write(&[0; 600]),
            Err(BlobError::TooLarge { size: 1200, .. })
        ));
        drop(big);
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "an abandoned upload leaves no file");
    }

    #[test]
    fn a_missing_blob_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        assert!(store.get(&Digest::of(b"absent")).unwrap().is_none());
    }

    #[test]
    fn corruption_on_disk_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let digest = store.put(b"original").unwrap();
        fs::write(store.path_of(&digest), b"tampered").unwrap();
        assert!(matches!(store.get(&digest), Err(BlobError::Corrupt { .. })));
    }

    #[test]
    fn oversized_blobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 4).unwrap();
        assert!(matches!(
            store.put(b"12345"),
            Err(BlobError::TooLarge { size: 5, limit: 4 })
        ));
    }

    #[test]
    fn digest_parsing_rejects_bad_text() {
        assert!(matches!(
            "abc".parse::<Digest>(),
            Err(DigestParseError::MissingPrefix(_))
        ));
        assert!(matches!(
            "sha256:zz".parse::<Digest>(),
            Err(DigestParseError::BadHex(_))
        ));
    }

    proptest! {
        #[test]
        fn digest_text_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let digest = Digest::of(&bytes);
            prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
        }
    }
}
