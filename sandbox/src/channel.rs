//! The capability channel: how a guest that cannot import host functions
//! (CPython for WASI has no `ctypes` and no extension modules) still calls
//! the capabilities the node granted it.
//!
//! A task given a [`TaskSpec::channel_dir`](crate::TaskSpec::channel_dir)
//! sees that host directory read-write as `/coditect` (preopened last), and
//! its stdin is this channel. To call capability `NAME` the guest writes
//! the request to `/coditect/NAME.request`, closes it, and reads one frame
//! from stdin: the line `ok LEN` or `error LEN`, then `LEN` bytes (the
//! answer, or the error text). Reading stdin takes the request file away
//! and makes the call on the guest's thread, so the guest simply blocks
//! in `read` until the answer is there. With no request waiting, stdin is
//! at its end, as for any task. `agents/coditect.py` is the guest side.
//!
//! Requests are capped at [`MAX_REQUEST_BYTES`]; the directory counts
//! against the task's `output_mb` like `/output`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

use crate::config::Capability;

/// Largest request a guest may write, bytes.
pub const MAX_REQUEST_BYTES: u64 = 8 << 20;

/// Suffix of a request file.
const REQUEST_SUFFIX: &str = ".request";

/// The channel's shared state (every stdin handle the guest opens shares it).
struct State {
    dir: PathBuf,
    capabilities: BTreeMap<String, Arc<dyn Capability>>,
    /// What is left of the current answer frame.
    pending: Bytes,
}

/// The guest's stdin when it has a channel.
#[derive(Clone)]
pub(crate) struct Channel(Arc<Mutex<State>>);

impl Channel {
    pub(crate) fn new(dir: &Path, capabilities: BTreeMap<String, Arc<dyn Capability>>) -> Self {
        Channel(Arc::new(Mutex::new(State {
            dir: dir.to_path_buf(),
            capabilities,
            pending: Bytes::new(),
        })))
    }

    /// Up to `size` bytes of the answer, making the call a waiting request
    /// names first; `None` at the end of stdin.
    fn next(&self, size: usize) -> Option<Bytes> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.pending.is_empty() {
            let frame = take_request(&state.dir)
                .map(|(name, request)| answer(&state.capabilities, &name, request))?;
            state.pending = frame;
        }
        let n = size.min(state.pending.len());
        Some(state.pending.split_to(n))
    }
}

/// The oldest waiting request (by name: a guest has one at a time), taken
/// out of the directory: the capability's name and the request, or why
/// the request cannot be read.
fn take_request(dir: &Path) -> Option<(String, Result<Vec<u8>, String>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(REQUEST_SUFFIX))
        .collect();
    names.sort();
    let file = names.into_iter().next()?;
    let path = dir.join(&file);
    let name = file.trim_end_matches(REQUEST_SUFFIX).to_string();
    let request = read_capped(&path);
    let _ = std::fs::remove_file(&path);
    Some((name, request))
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("reading the request: {e}"))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err("the request is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the request: {e}"))?;
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is larger than {} MiB",
            MAX_REQUEST_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// A capability name as the channel accepts it: `[a-z][a-z0-9_.-]{0,63}`.
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// The answer frame to one request.
fn answer(
    capabilities: &BTreeMap<String, Arc<dyn Capability>>,
    name: &str,
    request: Result<Vec<u8>, String>,
) -> Bytes {
    let result = match (plain_name(name), capabilities.get(name), request) {
        (false, _, _) => Err(format!("{name:?} is not a capability name")),
        (true, None, _) => Err(format!("capability {name} is not granted to this task")),
        (true, Some(_), Err(why)) => Err(why),
        (true, Some(capability), Ok(request)) => capability.call(&request),
    };
    let (status, body) = match result {
        Ok(body) => ("ok", body),
        Err(text) => ("error", text.into_bytes()),
    };
    let mut frame = format!("{status} {}\n", body.len()).into_bytes();
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

impl IsTerminal for Channel {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for Channel {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Channel {
    async fn ready(&mut self) {}
}

impl InputStream for Channel {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.next(size).ok_or(StreamError::Closed)
    }
}

impl tokio::io::AsyncRead for Channel {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(bytes) = self.next(buf.remaining()) {
            buf.put_slice(&bytes);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Capability for Echo {
        fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
            if request == b"fail" {
                return Err("it failed".into());
            }
            Ok([b"echo:", request].concat())
        }
    }

    fn read_all(channel: &Channel) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = channel.next(3) {
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn a_request_file_becomes_one_answer_frame_and_stdin_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut granted: BTreeMap<String, Arc<dyn Capability>> = BTreeMap::new();
        granted.insert("echo".into(), Arc::new(Echo));
        let channel = Channel::new(dir.path(), granted);
        assert!(channel.next(10).is_none(), "no request: end of stdin");
        std::fs::write(dir.path().join("echo.request"), b"hello").unwrap();
        assert_eq!(read_all(&channel), b"ok 10\necho:hello");
        assert!(!dir.path().join("echo.request").exists(), "taken away");
        std::fs::write(dir.path().join("echo.request"), b"fail").unwrap();
        assert_eq!(read_all(&channel), b"error 9\nit failed");
        std::fs::write(dir.path().join("llm.request"), b"x").unwrap();
        assert_eq!(
            String::from_utf8(read_all(&channel)).unwrap(),
            "error 42\ncapability llm is not granted to this task"
        );
        std::fs::write(dir.path().join("Bad Name.request"), b"x").unwrap();
        assert!(String::from_utf8(read_all(&channel))
            .unwrap()
            .contains("is not a capability name"));
    }

    #[test]
    fn oversized_requests_are_refused_without_calling() {
        let dir = tempfile::tempdir().unwrap();
        let mut granted: BTreeMap<String, Arc<dyn Capability>> = BTreeMap::new();
        granted.insert("echo".into(), Arc::new(Echo));
        let channel = Channel::new(dir.path(), granted);
        let big = vec![b'a'; MAX_REQUEST_BYTES as usize + 1];
        std::fs::write(dir.path().join("echo.request"), big).unwrap();
        let frame = String::from_utf8(read_all(&channel)).unwrap();
        assert!(
            frame.starts_with("error ") && frame.contains("larger than"),
            "{frame}"
        );
        assert!(
            plain_name("llm") && plain_name("llm.chat-2") && !plain_name("") && !plain_name("9x")
        );
    }
}
