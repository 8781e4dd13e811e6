//! A harness for black-box tests: it starts real `coditect node` processes on
//! 127.0.0.1 with port 0, reads their `node.json`, and talks to their HTTP
//! API with a minimal blocking client. It never parses logs.
//!
//! The binary is found through `CODITECT_BIN`, or next to the test
//! executable's target directory (`target/<profile>/coditect`); build it
//! first with `cargo build -p coditect-node`.
#![allow(clippy::disallowed_methods)] // black-box tests run real processes on the wall clock

pub mod llm_double;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `coditect` binary under test.
pub fn coditect_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CODITECT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/examples/<example>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives two levels under the target dir");
    let bin = profile_dir.join("coditect");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p coditect-node` or set CODITECT_BIN",
        bin.display()
    );
    bin
}

/// The index in `nodes` of the leader `nodes[0]` names.
pub fn leader_index(nodes: &[NodeProcess]) -> usize {
    let status = nodes[0].status().expect("a status");
    let leader = status["leader"].as_str().expect("a leader").to_string();
    nodes
        .iter()
        .position(|n| n.peer_id == leader)
        .expect("the leader is one of the nodes")
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP/1.1 request; returns the status code and body.
pub fn http_request(method: &str, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let (code, body) = http_exchange(method, addr, path, &[])?;
    Ok((code, String::from_utf8_lossy(&body).to_string()))
}

/// A blocking HTTP/1.1 request with a body; returns the status code and the
/// raw response body (chunked transfer decoded).
pub fn http_exchange(
    method: &str,
    addr: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_exchange_with(method, addr, path, &[], body)
}

/// [`http_exchange`] with extra request headers.
pub fn http_exchange_with(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("HTTP response without a header end"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = &response[split + 4..];
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((code, body))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..line_end]).to_string();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            break;
        };
        let rest = &body[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// A `coditect node` process.
pub struct NodeProcess {
    child: Child,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its HTTP address (host:port).
    pub http: String,
    /// Its peer id.
    pub peer_id: String,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// Flags that keep a test node on loopback with free ports.
pub fn loopback_args() -> Vec<String> {
    [
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--http",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Flags for fast test meshes: heartbeat `heartbeat_ms`, a voter silent for
/// 3 s replaced, `extra` flags, and `--bootstrap` when given.
pub fn mesh_flags(heartbeat_ms: u64, bootstrap: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        "--heartbeat-ms".into(),
        heartbeat_ms.to_string(),
        "--voter-grace-ms".into(),
        "3000".into(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    if let Some(addr) = bootstrap {
        flags.extend(["--bootstrap".to_string(), addr.to_string()]);
    }
    flags
}

/// The log filter the tests start nodes with: debug for our node crate, so
/// a failing test's node logs say what happened.
const DEBUG_NODE_LOG: &str = "info,coditect_node=debug,libp2p=warn,openraft=warn";

/// Whether nodes this process starts log with their own default filter.
static NODE_DEFAULT_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts every later node of this process with the node's own log filter,
/// as a user runs it, instead of the tests' debug filter: benchmarks
/// measure nodes as users run them.
pub fn use_node_default_log() {
    NODE_DEFAULT_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts `count` nodes under `dir` with heartbeat `heartbeat_ms` (the
/// first starts the mesh, the others bootstrap from it; `extra(i)` adds
/// flags to node i) and waits until they all name the same leader and
/// min(count, 3) voters.
pub fn start_mesh(
    dir: &Path,
    count: usize,
    heartbeat_ms: u64,
    extra: impl Fn(usize) -> Vec<&'static str>,
) -> Vec<NodeProcess> {
    let first = NodeProcess::start(
        &dir.join("n0"),
        "n0",
        &mesh_flags(heartbeat_ms, None, &extra(0)),
    );
    let boot = first.bootstrap_addr();
    let mut nodes = vec![first];
    for i in 1..count {
        nodes.push(NodeProcess::start(
            &dir.join(format!("n{i}")),
            &format!("n{i}"),
            &mesh_flags(heartbeat_ms, Some(&boot), &extra(i)),
        ));
    }
    let voters = count.min(3);
    wait_for(
        Duration::from_secs(60),
        "a leader and the voter set",
        || {
            let statuses: Vec<serde_json::Value> =
                nodes.iter().map(|n| n.status()).collect::<Option<_>>()?;
            let leader = statuses[0]["leader"].as_str()?.to_string();
            let agreed = statuses.iter().all(|s| {
                s["leader"].as_str() == Some(leader.as_str())
                    && string_list(s, "voters").len() == voters
            });
            agreed.then_some(())
        },
    );
    nodes
}

/// Runs `coditect` with `args` to completion; returns its exit status and stderr.
pub fn run_coditect(args: &[String], limit: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(coditect_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coditect");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            return (status, stderr);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("coditect {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl NodeProcess {
    /// Starts a node on `data_dir` with `extra` flags and waits for its
    /// node.json. Test meshes are open (`--open`: no admission) unless
    /// started with [`NodeProcess::start_guarded`].
    pub fn start(data_dir: &Path, name: &str, extra: &[String]) -> NodeProcess {
        NodeProcess::start_with_env(data_dir, name, extra, &[])
    }

    /// [`NodeProcess::start`] without `--open`: a node founding a mesh
    /// guards it with a join secret; one joining needs `--join-token`.
    pub fn start_guarded(data_dir: &Path, name: &str, extra: &[String]) -> NodeProcess {
        NodeProcess::spawn(data_dir, name, extra, &[], false)
    }

    /// [`NodeProcess::start`] with extra environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        name: &str,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        NodeProcess::spawn(data_dir, name, extra, env, true)
    }

    fn spawn(
        data_dir: &Path,
        name: &str,
        extra: &[String],
        env: &[(&str, &str)],
        open: bool,
    ) -> NodeProcess {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let node_json = data_dir.join("node.json");
        let _ = std::fs::remove_file(&node_json);
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let mut args = vec![
            "node".to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--name".to_string(),
            name.to_string(),
        ];
        // Explicit --listen flags replace the loopback defaults (restart on fixed ports).
        if extra.iter().any(|arg| arg == "--listen") {
            args.extend(["--http".to_string(), "127.0.0.1:0".to_string()]);
        } else {
            args.extend(loopback_args());
        }
        if open && !extra.iter().any(|arg| arg == "--join-token") {
            args.push("--open".to_string());
        }
        args.extend(extra.iter().cloned());
        let mut command = Command::new(coditect_bin());
        command.args(&args);
        if NODE_DEFAULT_LOG.load(std::sync::atomic::Ordering::Relaxed) {
            command.env_remove("CODITECT_LOG");
        } else {
            command.env("CODITECT_LOG", DEBUG_NODE_LOG);
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn coditect node");
        let info: serde_json::Value = wait_for(Duration::from_secs(30), "node.json", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "node {name} exited with {status} before writing node.json; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&node_json).ok()?;
            serde_json::from_str(&text).ok()
        });
        let listen: Vec<String> = info["listen"]
            .as_array()
            .expect("listen list")
            .iter()
            .map(|addr| addr.as_str().expect("address").to_string())
            .collect();
        let http = info["http"].as_str().expect("http").to_string();
        assert!(
            !http.ends_with(":0"),
            "node.json must hold the bound port: {http}"
        );
        for addr in &listen {
            assert!(
                !addr.contains("/tcp/0/") && !addr.contains("/udp/0/"),
                "unbound port in {addr}"
            );
        }
        NodeProcess {
            child,
            data_dir: data_dir.to_path_buf(),
            http,
            peer_id: info["peer_id"].as_str().expect("peer id").to_string(),
            listen,
            log,
        }
    }

    /// The address others bootstrap from (the QUIC one if present).
    pub fn bootstrap_addr(&self) -> String {
        self.listen
            .iter()
            .find(|addr| addr.contains("quic"))
            .unwrap_or(&self.listen[0])
            .clone()
    }

    /// The mesh's API token as this node keeps it (`DATA_DIR/api-token`;
    /// guarded meshes), if it has one yet.
    pub fn api_token(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir.join("api-token")).ok()?;
        Some(text.trim().to_string()).filter(|token| !token.is_empty())
    }

    /// CLI flags that send this node's API token (none while it has none).
    pub fn auth_args(&self) -> Vec<String> {
        match self.api_token() {
            Some(_) => vec![
                "--api-token-file".to_string(),
                self.data_dir.join("api-token").display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// A request to its API with its token, if it has one; returns the
    /// status code and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let bearer = self.api_token().map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        let (code, body) = http_exchange_with(method, &self.http, path, &headers, body)?;
        Ok((code, String::from_utf8_lossy(&body).to_string()))
    }

    /// `/api/status`, or `None` if the node does not answer.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = self.request("GET", "/api/status", b"").ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The HTTP status code of `GET path`.
    pub fn get_code(&self, path: &str) -> Option<u16> {
        self.request("GET", path, b"").ok().map(|(code, _)| code)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > limit {
                self.kill();
                panic!(
                    "node did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user and system, seconds) process `process` (a pid or `self`)
/// has used so far, from `/proc/PROCESS/stat`; `None` when it cannot be read.
pub fn proc_cpu_seconds(process: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // Fields after the command name, which ends at the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// A memory field (`VmRSS`, `VmHWM`, ...) of `/proc/PROCESS/status`, KiB;
/// `process` is a pid or `self`. 0 when it cannot be read.
pub fn proc_memory_kib(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Strings of a JSON array field.
pub fn string_list(value: &serde_json::Value, key: &str) -> Vec<String> {
    let mut list: Vec<String> = value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

/// Runs `coditect` with `args` to completion (killed after `limit`); returns
/// its exit status, stdout and stderr.
pub fn coditect_output(args: &[String], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(coditect_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coditect");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "coditect {args:?} still running after {limit:?}; stderr so far:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default(),
    )
}

impl NodeProcess {
    /// `http://host:port` of its API, for `--api`.
    pub fn api(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A counter or gauge from its `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let Ok((200, text)) = self.request("GET", "/metrics", b"") else {
            return 0.0;
        };
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// `GET /api/missions/{id}?tasks=false` (state and counts only), or
    /// `None` if it does not answer 200.
    pub fn mission_summary(&self, id: &str) -> Option<serde_json::Value> {
        let path = format!("/api/missions/{id}?tasks=false");
        let (code, body) = self.request("GET", &path, b"").ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// `GET /api/missions/{id}`, or `None` if it does not answer 200.
    pub fn mission(&self, id: &str) -> Option<serde_json::Value> {
        let (code, body) = self
            .request("GET", &format!("/api/missions/{id}"), b"")
            .ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

/// A wasm module (text) that prints `bytes` bytes of `x` to stdout in one
/// write and exits 0.
pub fn printer_wat(bytes: u32) -> String {
    let pages = bytes / 65_536 + 2;
    format!(
        "(module\n  (import \"wasi_snapshot_preview1\" \"fd_write\"\n    (func $fd_write (param i32 i32 i32 i32) (result i32)))\n  (memory (export \"memory\") {pages})\n  (func (export \"_start\")\n    (memory.fill (i32.const 1024) (i32.const 120) (i32.const {bytes}))\n    (i32.store (i32.const 0) (i32.const 1024))\n    (i32.store (i32.const 4) (i32.const {bytes}))\n    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))\n"
    )
}

/// If every node answers with the same leader and the same voter set, returns them.
pub fn agreement(nodes: &[&NodeProcess]) -> Option<(String, Vec<String>, Vec<serde_json::Value>)> {
    let statuses: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| node.status())
        .collect::<Option<_>>()?;
    let leader = statuses[0]["leader"].as_str()?.to_string();
    let voters = string_list(&statuses[0], "voters");
    for status in &statuses {
        if status["leader"].as_str() != Some(leader.as_str())
            || string_list(status, "voters") != voters
        {
            return None;
        }
    }
    Some((leader, voters, statuses))
}
