//! Node configuration in two stages: raw (flags and TOML, everything
//! optional) then [`RawNodeConfig::validate`] into an immutable [`NodeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::mission::AgentConfig;

/// `coditect node` flags; the TOML of `--config` has the same keys.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawNodeConfig {
    /// Identity key, RocksDB, blob store and node.json live here [default: ./coditect-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// libp2p listen address (repeatable) [default: /ip4/0.0.0.0/udp/0/quic-v1 and /ip4/0.0.0.0/tcp/0]
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(default)]
    pub listen: Vec<String>,
    /// Any member of the mesh, ending in /p2p/<peer id> (repeatable); none starts a new mesh
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// HTTP API, metrics and web page; port 0 picks a free one [default: 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Human label [default: host name]
    #[arg(long)]
    pub name: Option<String>,
    /// Extra capability tag KEY or KEY=VALUE (repeatable)
    #[arg(long = "capability", value_name = "KEY[=VALUE]")]
    #[serde(default)]
    pub capability: Vec<String>,
    /// Tasks run at once [default: number of cores]
    #[arg(long)]
    pub slots: Option<u32>,
    /// Raft voter target [default: 3]
    #[arg(long)]
    pub voters: Option<usize>,
    /// Address to advertise when the listen address is not what peers reach (repeatable)
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(default)]
    pub external_addr: Vec<String>,
    /// A voter unreachable this long is replaced by a standby, ms [default: 10000]
    #[arg(long, value_name = "MS")]
    pub voter_grace_ms: Option<u64>,
    /// Heartbeat and advert period, ms [default: 500]
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// How long SIGTERM waits for running work and hand-over, ms [default: 10000]
    #[arg(long, value_name = "MS")]
    pub drain_grace_ms: Option<u64>,
    /// A node silent this long loses its lease and its tasks are placed again, ms [default: 15 heartbeats, at least 1000]
    #[arg(long, value_name = "MS")]
    pub lease_ms: Option<u64>,
    /// Tasks this node asks the leader to queue on it beyond its slots, fixed [default: measured: enough to cover the dispatch round trip, 2..=256]
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<u32>,
    /// Finished missions kept in full (the newest); older ones are compacted to a summary [default: 1000]
    #[arg(long, value_name = "N")]
    pub keep_finished: Option<usize>,
    /// A finished mission submitted longer ago than this is compacted to a summary, hours [default: 168]
    #[arg(long, value_name = "HOURS")]
    pub keep_finished_hours: Option<u64>,
    /// Raft builds a snapshot after this many log entries (a member further behind catches up from it) [default: 10000]
    #[arg(long, value_name = "N")]
    pub raft_snapshot_logs: Option<u64>,
    /// CPython-for-WASI runtime file for `builtin:python` (checked against its pinned sha256) [default: $CODITECT_PYTHON_WASM, else ~/.cache/coditect/runtimes/python-3.12.0.wasm when present; without one the node fetches it from a peer]
    #[arg(long, value_name = "FILE")]
    pub python_wasm: Option<PathBuf>,
    /// Compiled-module cache, shared by the nodes of this machine [default: ~/.cache/coditect/modules, else DATA_DIR/module-cache]
    #[arg(long, value_name = "DIR")]
    pub module_cache: Option<PathBuf>,
    /// Language model to offer as `llm`: an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 (Ollama), with --llm-model; the config file's [llm] table has every setting
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub llm_url: Option<String>,
    /// The model to use at --llm-url, as the provider lists it
    #[arg(long, value_name = "NAME")]
    #[serde(skip)]
    pub llm_model: Option<String>,
    /// Environment variable holding the provider's API key (the key itself is never stored, logged or shown)
    #[arg(long, value_name = "VAR")]
    #[serde(skip)]
    pub llm_api_key_env: Option<String>,
    /// The `[llm]` table of the config file.
    #[arg(skip)]
    #[serde(default)]
    pub llm: Option<crate::llm::RawLlmConfig>,
    /// Never steal queued tasks from busy peers (for comparisons)
    #[arg(long)]
    #[serde(default)]
    pub no_steal: bool,
    /// Start a mesh without admission: any peer that dials in takes part (local development only; logged, and /api/status says "admission": "open")
    #[arg(long)]
    #[serde(default)]
    pub open: bool,
    /// Join a guarded mesh with this token (`coditect token create` on a member prints one); needed once, the node stays admitted
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CODITECT_JOIN_TOKEN",
        hide_env_values = true
    )]
    #[serde(default)]
    pub join_token: Option<String>,
    /// A host name HTTP requests may name in `Host` besides IP addresses and localhost (repeatable; `*` allows any): what a proxy or DNS name in front of the node is called
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub http_host: Vec<String>,
    /// HTTP requests a second one client address (an IPv6 /64) may send on average, twice that at once; 0: no limit [default: 500]
    #[arg(long, value_name = "N")]
    pub http_rate_limit: Option<u32>,
    /// Serve /metrics without the API token (for scrapers that cannot send one)
    #[arg(long)]
    #[serde(default)]
    pub public_metrics: bool,
    /// Serve the HTTP API over TLS with this PEM certificate chain (with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP API over TLS with a self-signed certificate made on first start (DATA_DIR/tls/); its SHA-256 fingerprint is logged and in node.json, for clients' --tls-fingerprint
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    #[serde(default)]
    pub tls_self_signed: bool,
    /// Where the mesh's HTTP API token is kept (the global --api-token-file) [default: DATA_DIR/api-token]
    #[arg(skip)]
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// TOML file with the same keys; flags win
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The `[agents]` table of the config file (markdown task routing);
    /// read and checked by `mission::AgentConfig` in `merge_file`.
    #[arg(skip)]
    #[serde(default)]
    pub agents: Option<toml::Table>,
    /// The agent kinds and keywords the config file defines (built-in
    /// defaults when it has no `[agents]` table).
    #[arg(skip)]
    #[serde(skip)]
    pub agent_config: Option<AgentConfig>,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Bootstrap peers: address to dial and the peer id it names.
    pub bootstrap: Vec<(String, String)>,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Human label.
    pub name: String,
    /// `--capability` tags.
    pub tags: BTreeMap<String, String>,
    /// Task slots.
    pub slots: u32,
    /// Raft voter target.
    pub voters: usize,
    /// Addresses to advertise.
    pub external: Vec<String>,
    /// Grace period before a silent voter is replaced.
    pub voter_grace: Duration,
    /// Heartbeat and advert period.
    pub heartbeat: Duration,
    /// SIGTERM grace period.
    pub drain_grace: Duration,
    /// Node lease.
    pub lease: Duration,
    /// Tasks this node asks to hold beyond its slots, fixed; `None`: its
    /// queue window is measured (see `scheduler::window`).
    pub queue_depth: Option<u32>,
    /// Whether this node steals when idle.
    pub steal: bool,
    /// Found the mesh without admission (`--open`).
    pub open: bool,
    /// The token to join a guarded mesh with.
    pub join_token: Option<crate::admission::JoinToken>,
    /// Host names the HTTP API answers to besides addresses and localhost.
    pub http_hosts: Vec<String>,
    /// `/metrics` needs no token.
    pub public_metrics: bool,
    /// HTTP requests a second per client; `None`: unlimited.
    pub http_rate_limit: Option<u32>,
    /// Where the mesh's HTTP API token is kept.
    pub api_token_file: PathBuf,
    /// TLS on the HTTP API, if any.
    pub tls: Option<crate::tls::TlsSource>,
    /// How long finished missions are kept in full (when leading).
    pub retention: crate::scheduler::retention::RetentionPolicy,
    /// Raft log entries between snapshots.
    pub raft_snapshot_logs: u64,
    /// How markdown tasks are routed to agent kinds.
    pub agents: AgentConfig,
    /// The Python runtime file, and whether the user named it (then it must
    /// be the pinned file; a default location that is absent or wrong only
    /// means this node fetches the runtime from a peer).
    pub python_wasm: Option<(PathBuf, bool)>,
    /// The compiled-module cache (`None`: `DATA_DIR/module-cache`).
    pub module_cache: Option<PathBuf>,
    /// The language model this node offers as `llm`, if any.
    pub llm: Option<crate::llm::LlmConfig>,
}

/// A configuration problem, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl RawNodeConfig {
    /// Fills what the flags left unset from the `--config` TOML file, if any.
    pub fn merge_file(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let file: RawNodeConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .map(|line| format!(" (line {line})"))
                .unwrap_or_default();
            ConfigError(format!(
                "config file {}: {}{line}",
                path.display(),
                e.message().trim()
            ))
        })?;
        let agent_config = AgentConfig::from_toml(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        let mut merged = self.or(file);
        merged.agent_config = Some(agent_config);
        Ok(merged)
    }

    fn or(self, other: RawNodeConfig) -> RawNodeConfig {
        fn list(flags: Vec<String>, file: Vec<String>) -> Vec<String> {
            if flags.is_empty() {
                file
            } else {
                flags
            }
        }
        RawNodeConfig {
            data_dir: self.data_dir.or(other.data_dir),
            listen: list(self.listen, other.listen),
            bootstrap: list(self.bootstrap, other.bootstrap),
            http: self.http.or(other.http),
            name: self.name.or(other.name),
            capability: list(self.capability, other.capability),
            slots: self.slots.or(other.slots),
            voters: self.voters.or(other.voters),
            external_addr: list(self.external_addr, other.external_addr),
            voter_grace_ms: self.voter_grace_ms.or(other.voter_grace_ms),
            heartbeat_ms: self.heartbeat_ms.or(other.heartbeat_ms),
            drain_grace_ms: self.drain_grace_ms.or(other.drain_grace_ms),
            lease_ms: self.lease_ms.or(other.lease_ms),
            queue_depth: self.queue_depth.or(other.queue_depth),
            keep_finished: self.keep_finished.or(other.keep_finished),
            keep_finished_hours: self.keep_finished_hours.or(other.keep_finished_hours),
            raft_snapshot_logs: self.raft_snapshot_logs.or(other.raft_snapshot_logs),
            python_wasm: self.python_wasm.or(other.python_wasm),
            module_cache: self.module_cache.or(other.module_cache),
            no_steal: self.no_steal || other.no_steal,
            open: self.open || other.open,
            join_token: self.join_token.or(other.join_token),
            http_host: list(self.http_host, other.http_host),
            public_metrics: self.public_metrics || other.public_metrics,
            http_rate_limit: self.http_rate_limit.or(other.http_rate_limit),
            api_token_file: self.api_token_file.or(other.api_token_file),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            tls_self_signed: self.tls_self_signed || other.tls_self_signed,
            llm_url: self.llm_url.or(other.llm_url),
            llm_model: self.llm_model.or(other.llm_model),
            llm_api_key_env: self.llm_api_key_env.or(other.llm_api_key_env),
            llm: self.llm.or(other.llm),
            config: self.config,
            agents: other.agents,
            agent_config: self.agent_config.or(other.agent_config),
        }
    }

    /// Checks every value and fills defaults.
    pub fn validate(self, host_name: &str, cores: u32) -> Result<NodeConfig, ConfigError> {
        let listen = if self.listen.is_empty() {
            vec![
                "/ip4/0.0.0.0/udp/0/quic-v1".to_string(),
                "/ip4/0.0.0.0/tcp/0".to_string(),
            ]
        } else {
            self.listen
        };
        for addr in &listen {
            coditect_gossip::check_listen_addr(addr).map_err(ConfigError)?;
        }
        let bootstrap = self
            .bootstrap
            .iter()
            .map(|addr| coditect_gossip::parse_bootstrap_addr(addr).map_err(ConfigError))
            .collect::<Result<Vec<_>, _>>()?;
        for addr in &self.external_addr {
            coditect_gossip::parse_multiaddr(addr).map_err(ConfigError)?;
        }
        let http_text = self.http.unwrap_or_else(|| "127.0.0.1:7070".to_string());
        let http: SocketAddr = http_text.parse().map_err(|_| {
            ConfigError(format!(
                "invalid --http address {http_text:?}: expected IP:PORT, for example 127.0.0.1:7070"
            ))
        })?;
        let mut tags = BTreeMap::new();
        for tag in &self.capability {
            let (key, value) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                return Err(ConfigError(format!(
                    "invalid --capability {tag:?}: the key must be letters, digits, '-', '_', '.' or '/'"
                )));
            }
            tags.insert(key.to_string(), value.trim().to_string());
        }
        let slots = self.slots.unwrap_or(cores.max(1));
        if slots == 0 || slots > 4096 {
            return Err(ConfigError(format!(
                "--slots {slots} is out of range 1..=4096"
            )));
        }
        if let Some(depth) = self.queue_depth {
            if depth > crate::scheduler::window::MAX_ADVERTISED {
                return Err(ConfigError(format!(
                    "--queue-depth {depth} is out of range 0..={}",
                    crate::scheduler::window::MAX_ADVERTISED
                )));
            }
        }
        let voters = self.voters.unwrap_or(3);
        if voters == 0 || voters > 9 {
            return Err(ConfigError(format!(
                "--voters {voters} is out of range 1..=9 (Raft groups stay small; 3 or 5 is usual)"
            )));
        }
        let heartbeat_ms = self.heartbeat_ms.unwrap_or(500);
        if !(50..=60_000).contains(&heartbeat_ms) {
            return Err(ConfigError(format!(
                "--heartbeat-ms {heartbeat_ms} is out of range 50..=60000"
            )));
        }
        let voter_grace_ms = self.voter_grace_ms.unwrap_or(10_000);
        if voter_grace_ms < 4 * heartbeat_ms {
            return Err(ConfigError(format!(
                "--voter-grace-ms {voter_grace_ms} must be at least 4 heartbeats ({} ms)",
                4 * heartbeat_ms
            )));
        }
        let lease_ms = self.lease_ms.unwrap_or((15 * heartbeat_ms).max(1_000));
        if lease_ms < 2 * heartbeat_ms {
            return Err(ConfigError(format!(
                "--lease-ms {lease_ms} must be at least 2 heartbeats ({} ms)",
                2 * heartbeat_ms
            )));
        }
        let mut llm = self.llm.clone().unwrap_or_default();
        llm.base_url = self.llm_url.clone().or(llm.base_url);
        llm.model = self.llm_model.clone().or(llm.model);
        llm.api_key_env = self.llm_api_key_env.clone().or(llm.api_key_env);
        let llm = llm.validate().map_err(ConfigError)?;
        let name = self.name.unwrap_or_else(|| host_name.to_string());
        if name.is_empty() || name.len() > 128 {
            return Err(ConfigError("--name must be 1 to 128 characters".into()));
        }
        let mut http_hosts = Vec::new();
        for host in &self.http_host {
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = host == "*"
                || (!host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')));
            if !valid {
                return Err(ConfigError(format!(
                    "invalid --http-host {host:?}: expected a DNS name (letters, digits, '-', '.') or *"
                )));
            }
            http_hosts.push(host);
        }
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./coditect-data"));
        let tls = match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (None, None, false) => None,
            (None, None, true) => Some(crate::tls::TlsSource::SelfSigned),
            (Some(cert), Some(key), false) => Some(crate::tls::TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(_), Some(_), true) => {
                return Err(ConfigError(
                    "--tls-self-signed and --tls-cert/--tls-key contradict each other".into(),
                ))
            }
            _ => {
                return Err(ConfigError(
                    "--tls-cert and --tls-key go together: give both".into(),
                ))
            }
        };
        Ok(NodeConfig {
            tls,
            api_token_file: self
                .api_token_file
                .unwrap_or_else(|| data_dir.join(crate::datadir::API_TOKEN_FILE)),
            data_dir,
            http_hosts,
            public_metrics: self.public_metrics,
            http_rate_limit: match self.http_rate_limit.unwrap_or(500) {
                0 => None,
                n if n > 1_000_000 => {
                    return Err(ConfigError(format!(
                        "--http-rate-limit {n} is out of range 0..=1000000"
                    )))
                }
                n => Some(n),
            },
            listen,
            bootstrap,
            http,
            name,
            tags,
            slots,
            voters,
            external: self.external_addr,
            voter_grace: Duration::from_millis(voter_grace_ms),
            heartbeat: Duration::from_millis(heartbeat_ms),
            drain_grace: Duration::from_millis(self.drain_grace_ms.unwrap_or(10_000)),
            lease: Duration::from_millis(lease_ms),
            queue_depth: self.queue_depth,
            steal: !self.no_steal,
            open: self.open,
            join_token: match &self.join_token {
                None => None,
                Some(_) if self.open => {
                    return Err(ConfigError(
                        "--open and --join-token contradict each other: an open mesh admits anyone, a token joins a guarded one".into(),
                    ))
                }
                Some(text) => Some(
                    crate::admission::JoinToken::parse(text)
                        .map_err(|error| ConfigError(format!("invalid --join-token: {error}")))?,
                ),
            },
            raft_snapshot_logs: match self.raft_snapshot_logs {
                Some(0) => {
                    return Err(ConfigError(
                        "--raft-snapshot-logs must be at least 1".into(),
                    ))
                }
                Some(n) => n,
                None => 10_000,
            },
            retention: crate::scheduler::retention::RetentionPolicy {
                keep_finished: self.keep_finished.unwrap_or(1_000),
                keep_finished_ms: self
                    .keep_finished_hours
                    .unwrap_or(168)
                    .min(100 * 365 * 24)
                    .saturating_mul(3_600_000),
            },
            agents: self.agent_config.unwrap_or_default(),
            python_wasm: match self.python_wasm {
                Some(path) => Some((path, true)),
                None => crate::python::default_path().map(|path| (path, false)),
            },
            module_cache: self
                .module_cache
                .or_else(crate::python::machine_module_cache),
            llm,
        })
    }
}

/// The machine's host name, for the default `--name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "coditect-node".to_string())
}

/// Physical memory in MiB, from /proc/meminfo (0 if unknown).
pub fn memory_mb() -> u64 {
    let Ok(text) = std::fs::read_to_string(Path::new("/proc/meminfo")) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawNodeConfig {
        RawNodeConfig::default()
    }

    #[test]
    fn defaults_follow_the_interface_contract() {
        let config = raw().validate("box", 4).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("./coditect-data"));
        assert_eq!(
            config.listen,
            vec!["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"]
        );
        assert_eq!(config.http.to_string(), "127.0.0.1:7070");
        assert_eq!(config.name, "box");
        assert_eq!(config.slots, 4);
        assert_eq!(config.voters, 3);
        assert_eq!(config.voter_grace, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_are_named() {
        let cases: Vec<(RawNodeConfig, &str)> = vec![
            (
                RawNodeConfig {
                    listen: vec!["nonsense".into()],
                    ..raw()
                },
                "invalid multiaddr",
            ),
            (
                RawNodeConfig {
                    bootstrap: vec!["/ip4/127.0.0.1/tcp/1".into()],
                    ..raw()
                },
                "/p2p/",
            ),
            (
                RawNodeConfig {
                    http: Some("localhost".into()),
                    ..raw()
                },
                "--http",
            ),
            (
                RawNodeConfig {
                    slots: Some(0),
                    ..raw()
                },
                "--slots",
            ),
            (
                RawNodeConfig {
                    voters: Some(0),
                    ..raw()
                },
                "--voters",
            ),
            (
                RawNodeConfig {
                    capability: vec!["=x".into()],
                    ..raw()
                },
                "--capability",
            ),
            (
                RawNodeConfig {
                    voter_grace_ms: Some(10),
                    ..raw()
                },
                "--voter-grace-ms",
            ),
        ];
        for (config, needle) in cases {
            let error = config.validate("box", 2).unwrap_err().to_string();
            assert!(
                error.contains(needle),
                "{error:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn capabilities_parse_keys_and_values() {
        let config = RawNodeConfig {
            capability: vec!["gpu=a100".into(), "llm".into()],
            ..raw()
        }
        .validate("box", 2)
        .unwrap();
        assert_eq!(config.tags["gpu"], "a100");
        assert_eq!(config.tags["llm"], "");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nslots = 7\nvoters = 5\ncapability = [\"gpu\"]\n",
        )
        .unwrap();
        let config = RawNodeConfig {
            name: Some("from-flag".into()),
            config: Some(path),
            ..raw()
        }
        .merge_file()
        .unwrap()
        .validate("box", 2)
        .unwrap();
        assert_eq!(config.name, "from-flag");
        assert_eq!(config.slots, 7);
        assert_eq!(config.voters, 5);
        assert!(config.tags.contains_key("gpu"));
    }

    #[test]
    fn the_agents_table_of_the_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "slots = 2\n[agents]\nfallback = \"tester\"\nkeywords = [[\"check\", \"tester\"]]\n",
        )
        .unwrap();
        let config = RawNodeConfig {
            config: Some(path.clone()),
            ..raw()
        }
        .merge_file()
        .unwrap()
        .validate("box", 2)
        .unwrap();
        assert_eq!(config.agents.fallback, "tester");
        assert_eq!(config.agents.route(&["check the parser"]), "tester");

        std::fs::write(&path, "[agents]\nfallback = \"nobody\"\n").unwrap();
        let error = RawNodeConfig {
            config: Some(path),
            ..raw()
        }
        .merge_file()
        .unwrap_err()
        .to_string();
        assert!(error.contains("nobody"), "{error}");
        // Without a file the built-in routing applies.
        assert_eq!(
            raw().validate("box", 2).unwrap().agents,
            AgentConfig::default()
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "slotz = 7\n").unwrap();
        let error = RawNodeConfig {
            config: Some(path),
            ..raw()
        }
        .merge_file()
        .unwrap_err();
        assert!(error.to_string().contains("slotz"), "{error}");
    }
}
