//! TEST DOUBLE, not a language model: a local stand-in for an
//! OpenAI-compatible provider, for tests only. It serves
//! `GET /v1/models` (one model), `POST /v1/messages` (Anthropic's shape,
//! the same script) and `POST /v1/chat/completions` (an
//! answer chosen by a script from what the prompt contains), records the
//! `Authorization` headers, request lines and chat bodies it saw, and can
//! be made to fail (`set_status`, or one fault per chat request from a
//! queue with `push_faults`), to be slow (`set_delay`) or to go away
//! (drop it). It never ships with the node.
#![allow(clippy::disallowed_methods)] // a test double runs on real threads and sockets

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A scripted answer: when the prompt contains `needle`, answer `reply`.
pub type Script = Vec<(String, String)>;

/// The largest request body the double reads.
const MAX_BODY: usize = 16 << 20;

/// The reply when no script entry matches.
const NO_ANSWER: &str = "The test double has no scripted answer.";

/// How one `POST /v1/chat/completions` goes wrong instead of being
/// answered normally (see `LlmDouble::push_faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status with an OpenAI-style JSON error body.
    Status(u16),
    /// Answer 429 with a `Retry-After: retry_after_secs` header and a JSON
    /// error body.
    RateLimited { retry_after_secs: u64 },
    /// Read the request, then never answer: hold the connection open until
    /// the double is dropped, then close it.
    Hang,
    /// Answer 200 with the truncated body `{"choices": [`.
    InvalidJson,
    /// Read the request and close the connection without answering.
    Close,
}

struct Shared {
    model: String,
    status: AtomicU16,
    stopped: AtomicBool,
    authorizations: Mutex<Vec<String>>,
    requests: Mutex<Vec<String>>,
    script: Mutex<Script>,
    script_once: Mutex<Script>,
    faults: Mutex<VecDeque<Fault>>,
    chat_bodies: Mutex<Vec<String>>,
    delay: Mutex<Duration>,
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
            script_once: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            chat_bodies: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
        });
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serving.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serving = serving.clone();
                // One thread per connection; if no thread can be made the
                // connection is dropped rather than the whole double.
                let _ = std::thread::Builder::new()
                    .name("llm-double-conn".to_string())
                    .spawn(move || {
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

    /// Every later request is answered with `status` (200: normally). A
    /// queued fault (`push_faults`) still takes precedence for a chat
    /// request.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// The answers to chat completions, by what the prompt contains: the
    /// first entry whose needle occurs in the concatenated
    /// `messages[].content` of the request (the raw body if it is not such
    /// JSON) gives the reply.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// Adds an entry that answers one chat request whose prompt contains
    /// `needle` and is then removed. One-shot entries are checked, oldest
    /// first, before the permanent script.
    pub fn set_script_once(&self, needle: &str, reply: &str) {
        self.shared
            .script_once
            .lock()
            .unwrap()
            .push((needle.to_string(), reply.to_string()));
    }

    /// Queues faults, first in first out: each later
    /// `POST /v1/chat/completions` takes the next one (if any) and answers
    /// with it instead of normally. `GET /v1/models` never takes one.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().unwrap().extend(faults);
    }

    /// Delays every later chat request by `delay` before it is answered
    /// (or faulted): the provider's own latency. Zero by default.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// The `Authorization` headers seen so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// The request lines seen so far (`GET /v1/models`, ...).
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many `POST /v1/chat/completions` were received so far, faulted
    /// or not (counted when the body has been read, before the answer).
    pub fn chat_requests(&self) -> usize {
        self.shared.chat_bodies.lock().unwrap().len()
    }

    /// The bodies of the chat requests received so far, in arrival order,
    /// lossily decoded as UTF-8.
    pub fn chat_bodies(&self) -> Vec<String> {
        self.shared.chat_bodies.lock().unwrap().clone()
    }
}

impl Drop for LlmDouble {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What to do with one request.
enum Answer {
    /// Answer `code` with `body`; `headers` are extra header lines, each
    /// ending in `\r\n`.
    Respond {
        code: u16,
        headers: String,
        body: String,
    },
    /// Close without answering.
    Close,
    /// Never answer; close when the double is dropped.
    Hang,
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // connected and closed without a request
    }
    let request_line = line.trim().to_string();
    let mut length = 0usize;
    let mut expect_continue = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header.as_str(), ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => shared
                .authorizations
                .lock()
                .unwrap()
                .push(value.trim().to_string()),
            "x-api-key" => shared
                .authorizations
                .lock()
                .unwrap()
                .push(format!("x-api-key {}", value.trim())),
            "expect" => expect_continue = value.trim().eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    let mut stream = stream;
    if expect_continue && length > 0 {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        stream.flush()?;
    }
    let mut body = vec![0u8; length.min(MAX_BODY)];
    reader.read_exact(&mut body)?;
    shared.requests.lock().unwrap().push(request_line.clone());
    match answer(shared, &request_line, &body) {
        Answer::Respond {
            code,
            headers,
            body,
        } => {
            write!(
                stream,
                "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                reason(code),
                body.len()
            )?;
            stream.flush()
        }
        Answer::Close => {
            let _ = stream.shutdown(Shutdown::Both);
            Ok(())
        }
        Answer::Hang => {
            while !shared.stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = stream.shutdown(Shutdown::Both);
            Ok(())
        }
    }
}

/// Chooses the answer to one request whose body has been read.
fn answer(shared: &Shared, request_line: &str, body: &[u8]) -> Answer {
    let status = shared.status.load(Ordering::SeqCst);
    let anthropic = request_line.starts_with("POST /v1/messages");
    if request_line.starts_with("POST /v1/chat/completions") || anthropic {
        shared
            .chat_bodies
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
        let fault = shared.faults.lock().unwrap().pop_front();
        let delay = *shared.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        return match fault {
            Some(Fault::Status(code)) => error(code, String::new()),
            Some(Fault::RateLimited { retry_after_secs }) => {
                error(429, format!("retry-after: {retry_after_secs}\r\n"))
            }
            Some(Fault::InvalidJson) => Answer::Respond {
                code: 200,
                headers: String::new(),
                body: r#"{"choices": ["#.to_string(),
            },
            Some(Fault::Hang) => Answer::Hang,
            Some(Fault::Close) => Answer::Close,
            None if status != 200 => error(status, String::new()),
            None if anthropic => Answer::Respond {
                code: 200,
                headers: String::new(),
                body: anthropic_message(shared, body),
            },
            None => Answer::Respond {
                code: 200,
                headers: String::new(),
                body: chat_completion(shared, body),
            },
        };
    }
    if status != 200 {
        error(status, String::new())
    } else if request_line.starts_with("GET /v1/models") {
        let list = serde_json::json!({
            "object": "list",
            "data": [{"id": shared.model, "object": "model", "created": 0, "owned_by": "test-double"}],
        });
        Answer::Respond {
            code: 200,
            headers: String::new(),
            body: list.to_string(),
        }
    } else {
        Answer::Respond {
            code: 404,
            headers: String::new(),
            body: r#"{"error": {"message": "no such endpoint in the test double", "type": "invalid_request_error", "code": 404}}"#.to_string(),
        }
    }
}

/// An OpenAI-style error answer with `code`.
fn error(code: u16, headers: String) -> Answer {
    let message = format!("test double answers {code}");
    let body = serde_json::json!({
        "error": {"message": message, "type": "test_double", "code": code},
    });
    Answer::Respond {
        code,
        headers,
        body: body.to_string(),
    }
}

/// The normal answer to a chat completion request: OpenAI's
/// `chat.completion` with the scripted reply.
fn chat_completion(shared: &Shared, body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(body);
    let prompt = prompt_text(&raw);
    let reply = scripted_reply(shared, &prompt);
    let prompt_tokens = body.len() / 4;
    let completion_tokens = reply.len() / 4 + 1;
    let total_tokens = prompt_tokens + completion_tokens;
    let message = serde_json::json!({
        "id": "chatcmpl-test-double",
        "object": "chat.completion",
        "created": 0,
        "model": shared.model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                     "message": {"role": "assistant", "content": reply}}],
        "usage": {"prompt_tokens": prompt_tokens,
                  "completion_tokens": completion_tokens,
                  "total_tokens": total_tokens},
    });
    message.to_string()
}

/// The normal answer to Anthropic's `POST /v1/messages`: a `message` with
/// the scripted reply (matched against `system` and the messages).
fn anthropic_message(shared: &Shared, body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(body);
    let system = serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["system"].as_str().map(str::to_string))
        .unwrap_or_default();
    let prompt = format!("{system}\n{}", prompt_text(&raw));
    let reply = scripted_reply(shared, &prompt);
    serde_json::json!({
        "id": "msg_test_double",
        "type": "message",
        "role": "assistant",
        "model": shared.model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": body.len() / 4, "output_tokens": reply.len() / 4 + 1},
    })
    .to_string()
}

/// The text the script is matched against: the `messages[].content` of
/// the request joined by newlines (string contents, and the `text` of
/// content parts), or the raw body if it is not such JSON.
fn prompt_text(raw: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(raw) else {
        return raw.to_string();
    };
    let Some(messages) = value.get("messages").and_then(|m| m.as_array()) else {
        return raw.to_string();
    };
    let mut text = String::new();
    for message in messages {
        match message.get("content") {
            Some(serde_json::Value::String(content)) => push_line(&mut text, content),
            Some(serde_json::Value::Array(parts)) => {
                for part in parts {
                    let part_text = part
                        .as_str()
                        .or_else(|| part.get("text").and_then(|t| t.as_str()));
                    if let Some(part_text) = part_text {
                        push_line(&mut text, part_text);
                    }
                }
            }
            _ => {}
        }
    }
    text
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
}

/// The reply to `prompt`: a matching one-shot entry (removed), else the
/// first matching script entry, else `NO_ANSWER`.
fn scripted_reply(shared: &Shared, prompt: &str) -> String {
    let mut once = shared.script_once.lock().unwrap();
    let found = once
        .iter()
        .position(|(needle, _)| prompt.contains(needle.as_str()));
    if let Some(index) = found {
        return once.remove(index).1;
    }
    drop(once);
    let script = shared.script.lock().unwrap();
    let reply = script
        .iter()
        .find(|(needle, _)| prompt.contains(needle.as_str()))
        .map(|(_, reply)| reply.clone());
    reply.unwrap_or_else(|| NO_ANSWER.to_string())
}

/// The reason phrase for a status line (clients ignore it).
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Test Double",
    }
}
