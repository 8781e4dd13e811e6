//! TEST DOUBLE, not a language model: a local stand-in for an
//! OpenAI-compatible provider, for tests only. It serves
//! `GET /v1/models` (one model) and `POST /v1/chat/completions` (an
//! answer chosen by a script from what the prompt contains), records the
//! `Authorization` headers it saw, and can be made to fail (`set_status`)
//! or go away (drop it). It never ships with the node.
#![allow(clippy::disallowed_methods)] // a test double runs on real threads and sockets

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A scripted answer: when the prompt contains `needle`, answer `reply`.
pub type Script = Vec<(String, String)>;

struct Shared {
    model: String,
    status: AtomicU16,
    stopped: AtomicBool,
    authorizations: Mutex<Vec<String>>,
    requests: Mutex<Vec<String>>,
    script: Mutex<Script>,
}

/// The stand-in provider; dropping it closes the port.
pub struct LlmDouble {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    shared: Arc<Shared>,
    port: u16,
}

impl LlmDouble {
    /// Starts the double on a free port, offering `model`.
    pub fn start(model: &str) -> LlmDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test double");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            model: model.to_string(),
            status: AtomicU16::new(200),
            stopped: AtomicBool::new(false),
            authorizations: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Vec::new()),
        });
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serving.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serving = serving.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &serving);
                });
            }
        });
        LlmDouble {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            shared,
            port,
        }
    }

    /// Every later request is answered with `status` (200: normally).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// The answers to chat completions, by what the prompt contains.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// The `Authorization` headers seen so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// The request lines seen so far (`GET /v1/models`, ...).
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for LlmDouble {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim().to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => shared
                .authorizations
                .lock()
                .unwrap()
                .push(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length.min(16 << 20)];
    reader.read_exact(&mut body)?;
    shared.requests.lock().unwrap().push(request_line.clone());
    let status = shared.status.load(Ordering::SeqCst);
    let (code, answer) = if status != 200 {
        (
            status,
            format!("{{\"error\": \"test double answers {status}\"}}"),
        )
    } else if request_line.starts_with("GET /v1/models") {
        (
            200,
            format!(
                "{{\"object\": \"list\", \"data\": [{{\"id\": \"{}\", \"object\": \"model\"}}]}}",
                shared.model
            ),
        )
    } else if request_line.starts_with("POST /v1/chat/completions") {
        let prompt = String::from_utf8_lossy(&body);
        let script = shared.script.lock().unwrap();
        let reply = script
            .iter()
            .find(|(needle, _)| prompt.contains(needle.as_str()))
            .map(|(_, reply)| reply.clone())
            .unwrap_or_else(|| "The test double has no scripted answer.".to_string());
        let message = serde_json::json!({
            "id": "test-double",
            "object": "chat.completion",
            "model": shared.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": prompt.len() / 4, "completion_tokens": reply.len() / 4},
        });
        (200, message.to_string())
    } else {
        (
            404,
            "{\"error\": \"no such endpoint in the test double\"}".to_string(),
        )
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}
