//! The data directory: an OS lock, the identity key, the Raft id, and the
//! files scripts read (`node.json`) or the node reads back on restart
//! (`peers.json`, `mesh.json`).
//!
//! `mesh.json` records that this data dir belongs to a mesh: the bootstrap
//! addresses it was ever given (written before the first join attempt), and
//! whether it founded its mesh, and the leader and voters it last learned. A
//! data dir holding it never initializes a new mesh, so a node killed right
//! after joining cannot come back as the founder of a second one.
//!
//! A directory that is not ours (files but no `meta.json`) or whose files are
//! corrupt is refused, never wiped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use coditect_consensus::NodeId;
use coditect_gossip::Identity;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FORMAT: &str = "coditect-data/1";
const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta.json";
const IDENTITY_FILE: &str = "identity.key";
/// What `coditect node` writes once it listens.
pub const NODE_JSON: &str = "node.json";
const PEERS_FILE: &str = "peers.json";
const LAST_LISTEN_FILE: &str = "last-listen.json";
const MESH_FILE: &str = "mesh.json";
/// At most this many bootstrap addresses are kept in `mesh.json`.
const MAX_RECORDED_BOOTSTRAP: usize = 64;

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error("data dir {0} is in use by another running coditect node{1}")]
    Locked(PathBuf, String),
    /// Files are present but it is not a Coditect data dir.
    #[error("data dir {0} is not empty and is not a coditect data dir (no meta.json); refusing to touch it")]
    NotOurs(PathBuf),
    /// A file of ours is unreadable or inconsistent.
    #[error("data dir {path} is corrupt: {problem}; refusing to start (nothing was changed)")]
    Corrupt {
        /// The data dir.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An IO error.
    #[error("data dir {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    node_id: NodeId,
    peer_id: String,
}

/// An opened, locked data dir.
pub struct DataDir {
    root: PathBuf,
    /// Held for the life of the process; the OS releases it when we die.
    _lock: File,
    /// The identity key.
    pub identity: Identity,
    /// The Raft node id.
    pub node_id: NodeId,
    /// The directory was created (or was empty) in this run.
    pub fresh: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Raft id of a peer: the first 8 bytes of sha256(peer id), never 0.
pub fn node_id_for(peer_id: &str) -> NodeId {
    let digest = Sha256::digest(peer_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // Keep ids below 2^53 so they survive JSON readers that use doubles.
    (u64::from_be_bytes(bytes) & ((1 << 53) - 1)).max(1)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, then
/// fsync of the directory so the rename itself survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

/// Writes a secret atomically, readable by its owner only (mode 0600).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

/// The file in a data dir that holds the mesh's HTTP API token.
pub const API_TOKEN_FILE: &str = "api-token";

/// A secret kept in a file, trimmed; `None` when missing or empty.
pub fn read_secret(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.len() <= 1024).then(|| text.to_string())
}

#[cfg(unix)]
fn sync_parent(path: &Path) -> Result<(), DataDirError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err(parent))
}

#[cfg(not(unix))]
fn sync_parent(_: &Path) -> Result<(), DataDirError> {
    Ok(())
}

/// What a data dir knows of the mesh it belongs to (`mesh.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshRecord {
    /// Every `--bootstrap` address this data dir was given, oldest first.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// This node initialized its mesh.
    #[serde(default)]
    pub founded: bool,
    /// It initialized it open (`--open`: no admission).
    #[serde(default)]
    pub open: bool,
    /// The leader's peer id, as last learned.
    #[serde(default)]
    pub leader: Option<String>,
    /// The voters' peer ids, as last learned.
    #[serde(default)]
    pub voters: Vec<String>,
}

impl MeshRecord {
    /// Adds the `addrs` not yet recorded; true if anything changed.
    pub fn add_bootstrap(&mut self, addrs: &[String]) -> bool {
        let before = self.bootstrap.len();
        for addr in addrs {
            if !self.bootstrap.contains(addr) {
                self.bootstrap.push(addr.clone());
            }
        }
        // Keep the newest: they are the likeliest to answer.
        let excess = self.bootstrap.len().saturating_sub(MAX_RECORDED_BOOTSTRAP);
        self.bootstrap.drain(..excess);
        self.bootstrap.len() != before || excess > 0
    }
}

impl DataDir {
    /// Opens `root`, creating it if missing, and takes its lock.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let root = root.canonicalize().map_err(io_err(root))?;
        // It holds the identity key and the mesh's join secret (in RocksDB):
        // only its owner may read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
        }
        let lock_path = root.join(LOCK_FILE);
        let meta_path = root.join(META_FILE);
        let has_meta = meta_path.exists();
        if !has_meta {
            let others = fs::read_dir(&root)
                .map_err(io_err(&root))?
                .filter_map(Result::ok)
                .any(|entry| entry.file_name() != LOCK_FILE);
            if others {
                return Err(DataDirError::NotOurs(root));
            }
        }
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|pid| pid.trim().to_string())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(DataDirError::Locked(root, holder));
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(DataDirError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        lock.set_len(0).map_err(io_err(&lock_path))?;
        lock.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_err(&lock_path))?;

        let identity_path = root.join(IDENTITY_FILE);
        let corrupt = |problem: String| DataDirError::Corrupt {
            path: root.clone(),
            problem,
        };
        if has_meta {
            let text = fs::read_to_string(&meta_path).map_err(io_err(&meta_path))?;
            let meta: Meta = serde_json::from_str(&text)
                .map_err(|e| corrupt(format!("meta.json does not parse: {e}")))?;
            if meta.format != FORMAT {
                return Err(corrupt(format!(
                    "meta.json has format {:?}, this binary reads {FORMAT:?}",
                    meta.format
                )));
            }
            let key = fs::read(&identity_path)
                .map_err(|e| corrupt(format!("identity.key is unreadable: {e}")))?;
            let identity = Identity::from_bytes(&key).map_err(|e| corrupt(e.to_string()))?;
            if identity.peer_name() != meta.peer_id {
                return Err(corrupt(format!(
                    "identity.key belongs to {}, meta.json says {}",
                    identity.peer_name(),
                    meta.peer_id
                )));
            }
            if node_id_for(&meta.peer_id) != meta.node_id {
                return Err(corrupt(
                    "meta.json node_id does not match the identity".into(),
                ));
            }
            return Ok(DataDir {
                root,
                _lock: lock,
                identity,
                node_id: meta.node_id,
                fresh: false,
            });
        }

        let identity = Identity::generate();
        write_atomic(&identity_path, &identity.to_bytes())?;
        restrict_permissions(&identity_path);
        let meta = Meta {
            format: FORMAT.into(),
            node_id: node_id_for(&identity.peer_name()),
            peer_id: identity.peer_name(),
        };
        write_atomic(
            &meta_path,
            serde_json::to_string_pretty(&meta)
                .expect("meta serializes")
                .as_bytes(),
        )?;
        Ok(DataDir {
            root,
            _lock: lock,
            node_id: meta.node_id,
            identity,
            fresh: true,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where RocksDB keeps the Raft log and state.
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    /// Where blobs live.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Writes node.json.
    pub fn write_node_json(&self, info: &NodeJson) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(info).expect("node.json serializes");
        write_atomic(&self.root.join(NODE_JSON), text.as_bytes())
    }

    /// The addresses the previous run listened on (without `/p2p/`).
    pub fn last_listen(&self) -> Vec<String> {
        fs::read_to_string(self.root.join(LAST_LISTEN_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .unwrap_or_default()
    }

    /// Records the addresses this run listens on, for the next start.
    pub fn remember_listen(&self, addrs: &[String]) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(addrs).expect("addresses serialize");
        write_atomic(&self.root.join(LAST_LISTEN_FILE), text.as_bytes())
    }

    /// Peer addresses remembered from an earlier run (`<addr>/p2p/<peer>`).
    pub fn remembered_peers(&self) -> Vec<String> {
        fs::read_to_string(self.root.join(PEERS_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .unwrap_or_default()
    }

    /// Remembers peer addresses for the next start.
    pub fn remember_peers(&self, peers: &[String]) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(peers).expect("peers serialize");
        write_atomic(&self.root.join(PEERS_FILE), text.as_bytes())
    }

    /// The mesh this data dir belongs to, if it was ever told to join one or
    /// took part in one. An unreadable record is refused: guessing "none"
    /// could start a second mesh.
    pub fn mesh_record(&self) -> Result<Option<MeshRecord>, DataDirError> {
        let path = self.root.join(MESH_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DataDirError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| DataDirError::Corrupt {
                path: self.root.clone(),
                problem: format!("mesh.json does not parse: {error}"),
            })
    }

    /// Records the mesh durably (write, fsync, rename, fsync of the dir).
    pub fn record_mesh(&self, record: &MeshRecord) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(record).expect("mesh record serializes");
        write_atomic(&self.root.join(MESH_FILE), text.as_bytes())
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

/// The listen addresses to try first: each configured address with port 0
/// takes the port the previous run bound for the same transport, so a
/// restarted node is found where its peers last saw it. Callers fall back to
/// the configured addresses if those ports are taken now.
pub fn sticky_listen(configured: &[String], previous: &[String]) -> Vec<String> {
    fn transport(addr: &str) -> Option<(&'static str, &str)> {
        let parts: Vec<&str> = addr.split('/').collect();
        // "", ip4|ip6, ip, tcp|udp, port, [quic-v1]
        match (parts.get(3), parts.get(5)) {
            (Some(&"tcp"), None) => Some(("tcp", parts[4])),
            (Some(&"udp"), Some(&"quic-v1")) => Some(("quic", parts[4])),
            _ => None,
        }
    }
    configured
        .iter()
        .map(|addr| {
            let Some((kind, "0")) = transport(addr) else {
                return addr.clone();
            };
            let port = previous
                .iter()
                .filter_map(|old| transport(old))
                .find(|(old_kind, port)| *old_kind == kind && *port != "0")
                .map(|(_, port)| port);
            match port {
                Some(port) => {
                    let mut parts: Vec<&str> = addr.split('/').collect();
                    parts[4] = port;
                    parts.join("/")
                }
                None => addr.clone(),
            }
        })
        .collect()
}

/// The contents of node.json, as interfaces.md fixes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeJson {
    /// Our peer id.
    pub peer_id: String,
    /// The HTTP address actually bound.
    pub http: String,
    /// Listen addresses actually bound, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Where the mesh's HTTP API token is kept once this node knows it
    /// (guarded meshes; the CLI reads it with `--api-token-file`).
    pub api_token_file: String,
    /// `sha256:<hex>` of the HTTP API's TLS certificate, when it serves TLS
    /// (clients pin it with `--tls-fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_dir_gets_an_identity_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let (peer, id) = {
            let data = DataDir::open(&root).unwrap();
            assert!(data.fresh);
            (data.identity.peer_name(), data.node_id)
        };
        let data = DataDir::open(&root).unwrap();
        assert!(!data.fresh);
        assert_eq!(data.identity.peer_name(), peer);
        assert_eq!(data.node_id, id);
        assert_eq!(node_id_for(&peer), id);
    }

    #[test]
    fn a_second_open_while_locked_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDir::open(dir.path()).unwrap();
        match DataDir::open(dir.path()) {
            Err(DataDirError::Locked(_, holder)) => {
                assert!(holder.contains(&std::process::id().to_string()))
            }
            other => panic!("expected Locked, got {:?}", other.map(|d| d.node_id)),
        }
    }

    #[test]
    fn foreign_and_corrupt_dirs_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), b"user data").unwrap();
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(DataDirError::NotOurs(_))
        ));
        assert_eq!(
            fs::read(dir.path().join("precious.txt")).unwrap(),
            b"user data"
        );

        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path()).unwrap());
        fs::write(dir.path().join(IDENTITY_FILE), b"garbage").unwrap();
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(DataDirError::Corrupt { .. })
        ));
        assert_eq!(
            fs::read(dir.path().join(IDENTITY_FILE)).unwrap(),
            b"garbage"
        );

        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path()).unwrap());
        fs::write(dir.path().join(META_FILE), b"{").unwrap();
        let error = DataDir::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("meta.json"), "{error}");
    }

    #[test]
    fn restarts_prefer_the_ports_of_the_previous_run() {
        let configured = vec![
            "/ip4/0.0.0.0/udp/0/quic-v1".to_string(),
            "/ip4/0.0.0.0/tcp/0".to_string(),
            "/ip4/127.0.0.1/tcp/9000".to_string(),
        ];
        let previous = vec![
            "/ip4/127.0.0.1/tcp/41000".to_string(),
            "/ip4/127.0.0.1/udp/42000/quic-v1".to_string(),
        ];
        assert_eq!(
            sticky_listen(&configured, &previous),
            vec![
                "/ip4/0.0.0.0/udp/42000/quic-v1",
                "/ip4/0.0.0.0/tcp/41000",
                "/ip4/127.0.0.1/tcp/9000"
            ]
        );
        assert_eq!(sticky_listen(&configured, &[]), configured);
    }

    #[test]
    fn the_mesh_record_survives_reopening_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.mesh_record().unwrap(), None);
        let mut record = MeshRecord::default();
        assert!(record.add_bootstrap(&["/ip4/127.0.0.1/tcp/1/p2p/a".to_string()]));
        assert!(!record.add_bootstrap(&["/ip4/127.0.0.1/tcp/1/p2p/a".to_string()]));
        record.leader = Some("a".into());
        data.record_mesh(&record).unwrap();
        drop(data);
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.mesh_record().unwrap(), Some(record));
        fs::write(dir.path().join(MESH_FILE), b"{").unwrap();
        let error = data.mesh_record().unwrap_err().to_string();
        assert!(error.contains("mesh.json"), "{error}");
    }

    #[test]
    fn recorded_bootstrap_addresses_are_capped_keeping_the_newest() {
        let mut record = MeshRecord::default();
        let addrs: Vec<String> = (0..MAX_RECORDED_BOOTSTRAP + 5)
            .map(|i| format!("/ip4/127.0.0.1/tcp/{i}"))
            .collect();
        assert!(record.add_bootstrap(&addrs));
        assert_eq!(record.bootstrap.len(), MAX_RECORDED_BOOTSTRAP);
        assert_eq!(record.bootstrap.last(), addrs.last());
        assert!(!record.bootstrap.contains(&addrs[0]));
    }

    #[test]
    fn node_ids_are_stable_nonzero_and_json_safe() {
        let id = node_id_for("12D3KooWexample");
        assert_eq!(id, node_id_for("12D3KooWexample"));
        assert_ne!(id, node_id_for("12D3KooWother"));
        assert!(id > 0 && id < (1 << 53));
    }
}
