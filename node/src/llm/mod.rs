//! The `llm` capability: a node that can reach a language model offers it
//! to the mesh.
//!
//! The node config's `[llm]` table (or `--llm-url`, `--llm-model`,
//! `--llm-api-key-env`) names an OpenAI-compatible chat-completions
//! endpoint (OpenAI, Ollama, llama.cpp's server, vLLM, LM Studio), or with
//! `api = "anthropic"` Anthropic's messages API (`POST {base_url}/messages`,
//! the key as `x-api-key`). The node
//! probes it (`GET {base_url}/models`) at start and periodically, and
//! advertises `llm` and `llm.model=<name>` only while the provider answers
//! and lists the model, so placement and the reasons of waiting tasks stay
//! true. `/api/status` shows the probe under `runtimes.llm`.
//!
//! The API key is read from the environment variable the config names,
//! once, when the provider is built; it is kept in a [`Secret`] whose
//! `Debug` shows nothing, sent only in the `Authorization` header, and
//! never stored in the mesh, logged or shown.
//!
//! The provider is behind [`ModelProvider`], the seam the simulation can
//! replace; the probe loop reaches time only through the node's `Env`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use self::wire::{ChatAnswer, ChatRequest, Failure};

pub mod grant;
pub mod policy;
pub mod service;
pub mod wire;

/// Largest answer of the models endpoint read, bytes.
const MAX_MODELS_ANSWER_BYTES: usize = 1024 * 1024;

/// The `[llm]` table of the node config (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlmConfig {
    /// Wire format: `openai` (chat completions).
    pub api: Option<String>,
    /// Base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Option<String>,
    /// Model name as the provider lists it.
    pub model: Option<String>,
    /// Environment variable holding the API key (none: no key sent).
    pub api_key_env: Option<String>,
    /// Calls in flight at once.
    pub max_concurrency: Option<u32>,
    /// Bound of one call, ms.
    pub timeout_ms: Option<u64>,
    /// Calls started per minute at most.
    pub requests_per_minute: Option<u32>,
    /// Time between two probes while the provider answers, ms.
    pub probe_ms: Option<u64>,
}

/// The validated `[llm]` configuration. Holds no secret: the key's
/// variable name only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Wire format (`openai`).
    pub api: String,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Calls in flight at once.
    pub max_concurrency: u32,
    /// Bound of one call.
    pub timeout: Duration,
    /// Calls started per minute at most.
    pub requests_per_minute: u32,
    /// Time between two probes while the provider answers (a failing one
    /// is probed four times as often, at least once a second).
    pub probe_every: Duration,
}

impl RawLlmConfig {
    /// Checks every value and fills defaults; `Ok(None)` when no provider
    /// is configured (neither a URL nor a model).
    pub fn validate(self) -> Result<Option<LlmConfig>, String> {
        if self.base_url.is_none() && self.model.is_none() {
            if self.api_key_env.is_some() || self.api.is_some() {
                return Err("[llm] needs base_url (--llm-url) and model (--llm-model)".into());
            }
            return Ok(None);
        }
        let api = self.api.unwrap_or_else(|| "openai".to_string());
        if api != "openai" && api != "anthropic" {
            return Err(format!(
                "[llm] api {api:?} is not supported: expected \"openai\" (the chat-completions API of OpenAI, Ollama, llama.cpp, vLLM and LM Studio) or \"anthropic\" (the messages API)"
            ));
        }
        let base_url = self
            .base_url
            .ok_or("[llm] needs base_url (--llm-url), e.g. http://127.0.0.1:11434/v1")?;
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://"))
            || base_url.len() > 2048
            || base_url
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "[llm] base_url {base_url:?} is not an http:// or https:// URL"
            ));
        }
        let model = self.model.ok_or("[llm] needs model (--llm-model)")?;
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            return Err(
                "[llm] model must be 1 to 256 characters without control characters".into(),
            );
        }
        if let Some(var) = &self.api_key_env {
            let plain = !var.is_empty()
                && var.len() <= 128
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(format!(
                    "[llm] api_key_env {var:?} is not an environment variable name"
                ));
            }
        }
        let max_concurrency = self.max_concurrency.unwrap_or(4);
        if !(1..=256).contains(&max_concurrency) {
            return Err(format!(
                "[llm] max_concurrency {max_concurrency} is out of range 1..=256"
            ));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(120_000);
        if !(100..=3_600_000).contains(&timeout_ms) {
            return Err(format!(
                "[llm] timeout_ms {timeout_ms} is out of range 100..=3600000"
            ));
        }
        let requests_per_minute = self.requests_per_minute.unwrap_or(600);
        if !(1..=1_000_000).contains(&requests_per_minute) {
            return Err(format!(
                "[llm] requests_per_minute {requests_per_minute} is out of range 1..=1000000"
            ));
        }
        let probe_ms = self.probe_ms.unwrap_or(10_000);
        if !(200..=3_600_000).contains(&probe_ms) {
            return Err(format!(
                "[llm] probe_ms {probe_ms} is out of range 200..=3600000"
            ));
        }
        Ok(Some(LlmConfig {
            api,
            base_url,
            model,
            api_key_env: self.api_key_env,
            max_concurrency,
            timeout: Duration::from_millis(timeout_ms),
            requests_per_minute,
            probe_every: Duration::from_millis(probe_ms),
        }))
    }
}

/// A secret that never shows: `Debug` and `Display` print a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A language-model provider: the seam between the node and the network.
pub trait ModelProvider: Send + Sync {
    /// The models the provider offers now (`GET {base_url}/models`).
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;

    /// One chat completion (`POST {base_url}/chat/completions`) of at most
    /// `max_tokens` completion tokens; a single HTTP request, no retries
    /// (the caller decides those).
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        max_tokens: u64,
    ) -> BoxFuture<'a, Result<ChatAnswer, Failure>>;
}

/// The HTTP provider: OpenAI's chat-completions API (which Ollama,
/// llama.cpp's server, vLLM and LM Studio serve too), or Anthropic's
/// messages API when the config says `api = "anthropic"`.
pub struct OpenAiProvider {
    base_url: String,
    model: String,
    /// Anthropic's messages API instead of chat completions.
    anthropic: bool,
    key: Option<Secret>,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider for `config`, with the key read from its variable now.
    pub fn new(config: &LlmConfig) -> Result<Self, String> {
        let key = match &config.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Some(Secret(value)),
                _ => {
                    return Err(format!(
                        "[llm] api_key_env names {var}, which is not set in this node's environment"
                    ))
                }
            },
            None => None,
        };
        // The node's own bound (`timeout_ms`, on its clock) ends a call
        // first; this one only backs it up.
        let client = reqwest::Client::builder()
            .timeout(config.timeout + Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
        Ok(OpenAiProvider {
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            anthropic: config.api == "anthropic",
            key,
            client,
        })
    }
}

/// A provider's error text without anything a URL could hide (userinfo).
fn clean(error: reqwest::Error) -> String {
    crate::error_chain(&error.without_url())
}

impl ModelProvider for OpenAiProvider {
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let request = self.authorize(self.client.get(format!("{}/models", self.base_url)));
            let mut response = request.send().await.map_err(clean)?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(clean)? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_MODELS_ANSWER_BYTES {
                    return Err(format!(
                        "the models list is larger than {} KiB",
                        MAX_MODELS_ANSWER_BYTES >> 10
                    ));
                }
            }
            if !status.is_success() {
                return Err(format!("GET /models answered {status}"));
            }
            parse_models(&body)
        })
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        max_tokens: u64,
    ) -> BoxFuture<'a, Result<ChatAnswer, Failure>> {
        Box::pin(self.chat_once(request, max_tokens))
    }
}

/// Reads a response body of at most `cap` bytes.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(clean)? {
        body.extend_from_slice(&chunk);
        if body.len() > cap {
            return Err(format!("the answer is larger than {} KiB", cap >> 10));
        }
    }
    Ok(body)
}

impl OpenAiProvider {
    /// The key in the header the API expects (`Authorization: Bearer`, or
    /// Anthropic's `x-api-key` with its `anthropic-version`).
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = if self.anthropic {
            request.header("anthropic-version", "2023-06-01")
        } else {
            request
        };
        match (&self.key, self.anthropic) {
            (Some(key), true) => request.header("x-api-key", key.expose()),
            (Some(key), false) => request.bearer_auth(key.expose()),
            (None, _) => request,
        }
    }

    async fn chat_once(
        &self,
        request: &ChatRequest,
        max_tokens: u64,
    ) -> Result<ChatAnswer, Failure> {
        let transport = |error: reqwest::Error| Failure::Transient {
            label: if error.is_timeout() {
                "timeout"
            } else {
                "transport"
            },
            message: format!("the provider could not be reached: {}", clean(error)),
            retry_after: None,
        };
        let http = if self.anthropic {
            self.client
                .post(format!("{}/messages", self.base_url))
                .json(&wire::anthropic_body(&self.model, request, max_tokens))
        } else {
            self.client
                .post(format!("{}/chat/completions", self.base_url))
                .json(&wire::chat_body(&self.model, request, max_tokens))
        };
        let http = self.authorize(http);
        let mut response = http.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_retry_after);
        let body = match read_capped(&mut response, wire::MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(message) => {
                return Err(Failure::Transient {
                    label: "invalid_answer",
                    message,
                    retry_after: None,
                })
            }
        };
        if !status.is_success() {
            return Err(wire::failure_of_status(status.as_u16(), retry_after, &body));
        }
        let parsed = if self.anthropic {
            wire::parse_anthropic_answer(&body, request.chars())
        } else {
            wire::parse_chat_answer(&body, request.chars())
        };
        parsed.map_err(|message| Failure::Transient {
            label: "invalid_answer",
            message,
            retry_after: None,
        })
    }
}

/// The model ids of an OpenAI `GET /models` answer (`{"data": [{"id"}]}`;
/// Ollama's and llama.cpp's have the same shape).
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Model {
        id: String,
    }
    #[derive(Deserialize)]
    struct Models {
        data: Vec<Model>,
    }
    let models: Models = serde_json::from_slice(body)
        .map_err(|error| format!("GET /models answered no models list: {error}"))?;
    Ok(models.data.into_iter().map(|m| m.id).collect())
}

/// What one probe means: the tags to offer (none while unavailable) and
/// the status to show.
pub fn judge_probe(
    config: &LlmConfig,
    probe: &Result<Vec<String>, String>,
) -> (bool, serde_json::Value) {
    let mut status = serde_json::json!({
        "api": config.api,
        "base_url": config.base_url,
        "model": config.model,
    });
    match probe {
        Ok(models) if models.contains(&config.model) => {
            status["state"] = "available".into();
            (true, status)
        }
        Ok(models) => {
            let mut shown: Vec<&str> = models.iter().take(20).map(String::as_str).collect();
            if models.len() > shown.len() {
                shown.push("...");
            }
            status["state"] = "unavailable".into();
            status["reason"] = format!(
                "the provider does not offer model {:?} (it offers: {})",
                config.model,
                shown.join(", ")
            )
            .into();
            (false, status)
        }
        Err(error) => {
            status["state"] = "unavailable".into();
            status["reason"] = error.clone().into();
            (false, status)
        }
    }
}

/// The capability tag of a model-offering node, and of its model.
pub const LLM_CAPABILITY: &str = "llm";

/// The tag naming the model (`llm.model=<name>`).
pub const LLM_MODEL_TAG: &str = "llm.model";

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlmConfig {
        RawLlmConfig {
            base_url: Some("http://127.0.0.1:11434/v1/".into()),
            model: Some("qwen2.5-coder".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn configs_are_checked_and_defaulted() {
        let config = config();
        assert_eq!(config.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(config.api, "openai");
        assert_eq!(config.max_concurrency, 4);
        assert!(RawLlmConfig::default().validate().unwrap().is_none());
        let bad = |raw: RawLlmConfig| raw.validate().unwrap_err();
        let with = |f: &dyn Fn(&mut RawLlmConfig)| {
            let mut raw = RawLlmConfig {
                base_url: Some("http://x/v1".into()),
                model: Some("m".into()),
                ..Default::default()
            };
            f(&mut raw);
            raw
        };
        assert!(bad(with(&|r| r.api = Some("anthropic-v0".into()))).contains("not supported"));
        assert_eq!(
            with(&|r| r.api = Some("anthropic".into()))
                .validate()
                .unwrap()
                .unwrap()
                .api,
            "anthropic"
        );
        assert!(bad(with(&|r| r.base_url = Some("ftp://x".into()))).contains("http"));
        assert!(bad(with(&|r| r.model = None)).contains("model"));
        assert!(bad(with(&|r| r.api_key_env = Some("A B".into()))).contains("variable"));
        assert!(bad(with(&|r| r.max_concurrency = Some(0))).contains("max_concurrency"));
        assert!(bad(RawLlmConfig {
            api_key_env: Some("KEY".into()),
            ..Default::default()
        })
        .contains("base_url"));
    }

    #[test]
    fn a_probe_offers_the_capability_only_when_the_model_is_listed() {
        let config = config();
        let listed =
            parse_models(br#"{"object":"list","data":[{"id":"llama3"},{"id":"qwen2.5-coder"}]}"#);
        let (offer, status) = judge_probe(&config, &listed);
        assert!(offer, "{status}");
        assert_eq!(status["state"], "available");
        let (offer, status) = judge_probe(&config, &Ok(vec!["llama3".into()]));
        assert!(!offer);
        assert!(
            status["reason"].as_str().unwrap().contains("llama3"),
            "{status}"
        );
        let (offer, status) = judge_probe(&config, &Err("connection refused".into()));
        assert!(!offer);
        assert_eq!(status["reason"], "connection refused");
        assert!(parse_models(b"<html>").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret("sk-very-secret".into());
        assert!(!format!("{secret:?}").contains("sk-"));
        assert_eq!(secret.expose(), "sk-very-secret");
    }
}
