//! The chat-completions wire format (OpenAI's, which Ollama, llama.cpp's
//! server, vLLM and LM Studio serve too) and the request agents send
//! through the `llm` capability. Pure: bytes in, values out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest chat answer read from a provider, bytes.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Messages one request may carry.
pub const MAX_MESSAGES: usize = 256;

/// The longest `Retry-After` the node waits for; a provider asking for
/// longer is treated as unavailable.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// What an agent asks for (the body of its `llm` capability request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Completion tokens at most (the node lowers it to the task's budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// What the call is for (`coder`, `plan`, ...), for the record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl ChatRequest {
    /// Parses and checks an agent's request; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<ChatRequest, String> {
        let request: ChatRequest = serde_json::from_slice(bytes)
            .map_err(|error| format!("the request is not an llm request: {error}"))?;
        if request.messages.is_empty() {
            return Err("the request has no messages".into());
        }
        if request.messages.len() > MAX_MESSAGES {
            return Err(format!(
                "the request has {} messages, more than {MAX_MESSAGES}",
                request.messages.len()
            ));
        }
        if let Some(bad) = request
            .messages
            .iter()
            .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
        {
            return Err(format!(
                "message role {:?} is not system, user or assistant",
                bad.role.chars().take(40).collect::<String>()
            ));
        }
        if let Some(t) = request.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(format!("temperature {t} is outside 0 to 2"));
            }
        }
        if request.max_tokens == Some(0) {
            return Err("max_tokens is 0".into());
        }
        if let Some(purpose) = &request.purpose {
            if purpose.len() > 64 || purpose.chars().any(char::is_control) {
                return Err(
                    "purpose must be at most 64 characters without control characters".into(),
                );
            }
        }
        Ok(request)
    }

    /// Characters of all messages.
    pub fn chars(&self) -> usize {
        self.messages.iter().map(|m| m.content.len()).sum()
    }
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The completion text.
    pub content: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Prompt tokens (the provider's count, or an estimate when it gives none).
    pub tokens_in: u64,
    /// Completion tokens (likewise).
    pub tokens_out: u64,
    /// Why the model stopped (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
}

/// Why one HTTP call to a provider failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again (429, 5xx, 408, a timeout, a broken connection,
    /// an answer that is not a chat completion), after `retry_after` when
    /// the provider said so.
    Transient {
        /// The metrics label: `rate_limited`, `server_error`, `timeout`,
        /// `transport`, `invalid_answer`.
        label: &'static str,
        /// One line.
        message: String,
        /// The provider's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The provider refused the request itself (another 4xx): asking again
    /// would be refused the same way.
    Refused {
        /// One line.
        message: String,
    },
}

impl Failure {
    /// The metrics label of this failure.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Transient { label, .. } => label,
            Failure::Refused { .. } => "refused",
        }
    }

    /// Its one-line message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient { message, .. } | Failure::Refused { message } => message,
        }
    }
}

/// What a non-2xx status means.
pub fn failure_of_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let said = provider_error_text(body);
    let message = match said {
        Some(text) => format!("the provider answered {status}: {text}"),
        None => format!("the provider answered {status}"),
    };
    match status {
        429 => Failure::Transient {
            label: "rate_limited",
            message,
            retry_after,
        },
        408 => Failure::Transient {
            label: "timeout",
            message,
            retry_after,
        },
        500..=599 => Failure::Transient {
            label: "server_error",
            message,
            retry_after,
        },
        _ => Failure::Refused { message },
    }
}

/// The error text an OpenAI-style error body carries
/// (`{"error": {"message"}}` or `{"error": "..."}`), one line, capped.
fn provider_error_text(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let text = error
        .get("message")
        .and_then(|m| m.as_str())
        .or_else(|| error.as_str())?;
    Some(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect(),
    )
}

/// A `Retry-After` header's delay: delta-seconds (fractions allowed, as
/// some servers send them). An HTTP date is not understood (`None`: the
/// node's own backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// The JSON body of `POST /chat/completions` for `model`.
pub fn chat_body(model: &str, request: &ChatRequest, max_tokens: u64) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": model,
        "messages": request.messages,
        "max_tokens": max_tokens,
        "stream": false,
    });
    if let Some(t) = request.temperature {
        body["temperature"] = t.into();
    }
    body
}

/// The JSON body of Anthropic's `POST {base_url}/messages` for `model`:
/// system messages go to `system`, the others stay in order.
pub fn anthropic_body(model: &str, request: &ChatRequest, max_tokens: u64) -> serde_json::Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<serde_json::Value> = request
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = system.join("\n\n").into();
    }
    if let Some(t) = request.temperature {
        body["temperature"] = t.min(1.0).into();
    }
    body
}

/// Reads an Anthropic message (`content[].text`, `usage.input_tokens`,
/// `usage.output_tokens`, `stop_reason`).
pub fn parse_anthropic_answer(body: &[u8], prompt_chars: usize) -> Result<ChatAnswer, String> {
    #[derive(Deserialize)]
    struct Block {
        #[serde(rename = "type")]
        kind: String,
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct Usage {
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Message {
        model: Option<String>,
        content: Vec<Block>,
        stop_reason: Option<String>,
        usage: Option<Usage>,
    }
    let message: Message = serde_json::from_slice(body)
        .map_err(|error| format!("the provider's answer is not a message: {error}"))?;
    let content: String = message
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    if content.is_empty() && !message.content.iter().any(|b| b.kind == "text") {
        return Err("the provider's answer has no text content".into());
    }
    let usage = message.usage;
    Ok(ChatAnswer {
        tokens_in: usage
            .as_ref()
            .and_then(|u| u.input_tokens)
            .unwrap_or((prompt_chars / 4) as u64),
        tokens_out: usage
            .as_ref()
            .and_then(|u| u.output_tokens)
            .unwrap_or((content.len() / 4) as u64),
        content,
        model: message.model.unwrap_or_default(),
        finish_reason: message.stop_reason,
    })
}

/// Reads a chat completion (`choices[0].message.content`, `usage`,
/// `model`); token counts the provider leaves out are estimated as
/// characters / 4.
pub fn parse_chat_answer(body: &[u8], prompt_chars: usize) -> Result<ChatAnswer, String> {
    #[derive(Deserialize)]
    struct Message {
        content: Option<String>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Completion {
        model: Option<String>,
        choices: Vec<Choice>,
        usage: Option<Usage>,
    }
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|error| format!("the provider's answer is not a chat completion: {error}"))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("the provider's answer has no choices")?;
    let content = choice
        .message
        .content
        .ok_or("the provider's answer has no message content")?;
    let usage = completion.usage;
    let tokens_in = usage
        .as_ref()
        .and_then(|u| u.prompt_tokens)
        .unwrap_or((prompt_chars / 4) as u64);
    let tokens_out = usage
        .as_ref()
        .and_then(|u| u.completion_tokens)
        .unwrap_or((content.len() / 4) as u64);
    Ok(ChatAnswer {
        content,
        model: completion.model.unwrap_or_default(),
        tokens_in,
        tokens_out,
        finish_reason: choice.finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let ok = ChatRequest::parse(
            br#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"max_tokens":10,"purpose":"coder"}"#,
        )
        .unwrap();
        assert_eq!(ok.chars(), 2);
        for (bad, needle) in [
            (&br#"{"messages":[]}"#[..], "no messages"),
            (br#"{"messages":[{"role":"tool","content":"x"}]}"#, "role"),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"temperature":9}"#,
                "temperature",
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}],"extra":1}"#,
                "unknown field",
            ),
            (b"nope", "not an llm request"),
        ] {
            let error = ChatRequest::parse(bad).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn anthropic_messages_are_written_and_read() {
        let request = ChatRequest::parse(
            br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"temperature":1.5}"#,
        )
        .unwrap();
        let body = anthropic_body("claude-x", &request, 100);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["temperature"], 1.0, "Anthropic's range ends at 1");
        let answer = parse_anthropic_answer(
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3}}"#,
            10,
        )
        .unwrap();
        assert_eq!(answer.content, "Hello there");
        assert_eq!((answer.tokens_in, answer.tokens_out), (12, 3));
        assert_eq!(answer.finish_reason.as_deref(), Some("end_turn"));
        assert!(parse_anthropic_answer(br#"{"content":[]}"#, 1).is_err());
        let overloaded = failure_of_status(
            529,
            None,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(overloaded.label(), "server_error");
        assert!(overloaded.message().contains("Overloaded"));
    }

    #[test]
    fn answers_and_statuses_are_read() {
        let answer = parse_chat_answer(
            br#"{"model":"m","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":1}}"#,
            100,
        )
        .unwrap();
        assert_eq!((answer.tokens_in, answer.tokens_out), (7, 1));
        assert_eq!(answer.content, "hi");
        let estimated =
            parse_chat_answer(br#"{"choices":[{"message":{"content":"abcdefgh"}}]}"#, 40).unwrap();
        assert_eq!((estimated.tokens_in, estimated.tokens_out), (10, 2));
        assert!(parse_chat_answer(br#"{"choices": ["#, 1).is_err());
        assert!(parse_chat_answer(br#"{"choices": []}"#, 1).is_err());
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let limited = failure_of_status(
            429,
            Some(Duration::from_secs(2)),
            br#"{"error":{"message":"slow down"}}"#,
        );
        assert_eq!(limited.label(), "rate_limited");
        assert!(limited.message().contains("slow down"));
        assert_eq!(failure_of_status(503, None, b"").label(), "server_error");
        assert_eq!(failure_of_status(400, None, b"").label(), "refused");
    }
}
