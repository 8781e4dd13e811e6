//! The `llm` capability as one task holds it: the sandbox calls
//! [`LlmGrant::call`] on the guest's thread (through `coditect.capability`
//! for wasm agents, the `/coditect` channel for Python ones); the grant
//! keeps the task's budget (`max_llm_calls`, `max_tokens`, its deadline),
//! makes the call through the node's [`LlmService`], stores prompt and
//! completion as blobs and records the call for the task's history.
//!
//! Request: `{"messages": [{"role", "content"}], "max_tokens"?,
//! "temperature"?, "purpose"?}`. Answer: `{"content", "model",
//! "tokens_in", "tokens_out", "finish_reason"}`. Error (the capability's
//! error text): `{"kind", "message"}`, kind `limit`, `unavailable`,
//! `provider` or `bad_request`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_consensus::mission::{LlmCall, TaskLimits};
use coditect_memory::BlobStore;
use coditect_sandbox::Capability;

use super::service::{CallError, LlmService, DEFAULT_COMPLETION_TOKENS};
use super::wire::ChatRequest;

/// Bytes of prompts and completions kept in memory before they are
/// written out during the run (normally they are written once it ends, off
/// the calls' path: each blob write is an fsync).
const MAX_PENDING_BYTES: usize = 64 << 20;

/// What a task has spent so far.
#[derive(Default)]
struct Spent {
    calls: u32,
    tokens: u64,
    records: Vec<LlmCall>,
    /// Prompts and completions not yet in the blob store.
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
}

/// One task's grant of the `llm` capability.
pub struct LlmGrant {
    service: Arc<LlmService>,
    blobs: BlobStore,
    max_calls: u32,
    max_tokens: u64,
    /// The task's deadline on the service's clock.
    deadline: Duration,
    spent: Mutex<Spent>,
}

impl LlmGrant {
    /// A grant for a task with `limits`, starting now.
    pub fn new(service: Arc<LlmService>, blobs: BlobStore, limits: &TaskLimits) -> Self {
        let deadline = service.clock() + Duration::from_millis(limits.timeout_ms);
        LlmGrant {
            service,
            blobs,
            max_calls: limits.max_llm_calls,
            max_tokens: limits.max_tokens,
            deadline,
            spent: Mutex::new(Spent::default()),
        }
    }

    /// The calls made, in order, once their prompts and completions are
    /// in the blob store (call it after the run, off the async runtime).
    pub fn finish(&self) -> Result<Vec<LlmCall>, String> {
        let (pending, records) = {
            let mut spent = self.spent.lock().expect("llm grant");
            spent.pending_bytes = 0;
            (std::mem::take(&mut spent.pending), spent.records.clone())
        };
        for bytes in pending {
            self.blobs
                .put(&bytes)
                .map_err(|error| format!("storing a model call's text: {error}"))?;
        }
        Ok(records)
    }

    /// Keeps `bytes` for the blob store; its digest.
    fn keep(&self, bytes: Vec<u8>) -> Result<coditect_memory::Digest, String> {
        let digest = coditect_memory::Digest::of(&bytes);
        let flush = {
            let mut spent = self.spent.lock().expect("llm grant");
            spent.pending_bytes += bytes.len();
            spent.pending.push(bytes);
            spent.pending_bytes > MAX_PENDING_BYTES
        };
        if flush {
            self.finish()?;
        }
        Ok(digest)
    }

    fn refuse(kind: &'static str, message: String) -> String {
        serde_json::json!({"kind": kind, "message": message}).to_string()
    }

    /// Reserves one call of at most the returned completion tokens.
    fn reserve(&self, request: &ChatRequest) -> Result<u64, String> {
        let mut spent = self.spent.lock().expect("llm grant");
        if spent.calls >= self.max_calls {
            return Err(Self::refuse(
                "limit",
                format!("the task's max_llm_calls ({}) are spent", self.max_calls),
            ));
        }
        let left = self.max_tokens.saturating_sub(spent.tokens);
        let prompt_estimate = (request.chars() / 4) as u64;
        if left <= prompt_estimate {
            return Err(Self::refuse(
                "limit",
                format!(
                    "the task's max_tokens ({}) leave {left}, and the prompt alone is about {prompt_estimate}",
                    self.max_tokens
                ),
            ));
        }
        spent.calls += 1;
        Ok(request
            .max_tokens
            .unwrap_or(DEFAULT_COMPLETION_TOKENS)
            .min(left - prompt_estimate))
    }
}

impl Capability for LlmGrant {
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let request =
            ChatRequest::parse(request).map_err(|message| Self::refuse("bad_request", message))?;
        let max_tokens = self.reserve(&request)?;
        let prompt = serde_json::to_vec(&request.messages).unwrap_or_default();
        let prompt_digest = self
            .keep(prompt)
            .map_err(|error| Self::refuse("unavailable", error))?;
        let budget = self.deadline.saturating_sub(self.service.clock());
        // The guest's thread waits here; the call itself runs on the node's
        // runtime (this thread may be inside the sandbox's own one).
        let (sender, receiver) = std::sync::mpsc::channel();
        let service = self.service.clone();
        let asked = request.clone();
        self.service.spawn(Box::pin(async move {
            let called = service.chat(&asked, max_tokens, budget).await;
            let _ = sender.send(called);
        }));
        let called = receiver
            .recv()
            .map_err(|_| Self::refuse("unavailable", "the node stopped during the call".into()))?;
        let model = self.service.config().model.clone();
        let (record, answer) = match called.answer {
            Ok(answer) => {
                let completion = self.keep(answer.content.as_bytes().to_vec()).ok();
                let record = LlmCall {
                    model: if answer.model.is_empty() {
                        model
                    } else {
                        answer.model.chars().take(256).collect()
                    },
                    purpose: request.purpose.clone(),
                    prompt: prompt_digest.to_string(),
                    completion: completion.map(|d| d.to_string()),
                    tokens_in: answer.tokens_in,
                    tokens_out: answer.tokens_out,
                    latency_ms: called.latency_ms,
                    tries: called.tries,
                    outcome: "ok".into(),
                };
                let body = serde_json::json!({
                    "content": answer.content,
                    "model": record.model,
                    "tokens_in": answer.tokens_in,
                    "tokens_out": answer.tokens_out,
                    "finish_reason": answer.finish_reason,
                });
                (record, Ok(body.to_string().into_bytes()))
            }
            Err(CallError { kind, message }) => {
                let record = LlmCall {
                    model,
                    purpose: request.purpose.clone(),
                    prompt: prompt_digest.to_string(),
                    completion: None,
                    tokens_in: 0,
                    tokens_out: 0,
                    latency_ms: called.latency_ms,
                    tries: called.tries,
                    outcome: format!("{kind}: {message}"),
                };
                (record, Err(Self::refuse(kind, message)))
            }
        };
        let mut spent = self.spent.lock().expect("llm grant");
        spent.tokens = spent
            .tokens
            .saturating_add(record.tokens_in)
            .saturating_add(record.tokens_out);
        spent.records.push(record);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::service::LlmMetrics;
    use crate::llm::wire::{ChatAnswer, Failure};
    use crate::llm::{ModelProvider, RawLlmConfig};
    use futures::future::BoxFuture;

    /// Answers every call with the prompt's length (no HTTP).
    struct Echo;

    impl ModelProvider for Echo {
        fn models(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
            Box::pin(async { Ok(vec!["m".to_string()]) })
        }
        fn chat<'a>(
            &'a self,
            request: &'a ChatRequest,
            max_tokens: u64,
        ) -> BoxFuture<'a, Result<ChatAnswer, Failure>> {
            let content = format!("{} chars, at most {max_tokens} tokens", request.chars());
            Box::pin(async move {
                Ok(ChatAnswer {
                    content,
                    model: "m".into(),
                    tokens_in: 100,
                    tokens_out: 50,
                    finish_reason: Some("stop".into()),
                })
            })
        }
    }

    fn limits(calls: u32, tokens: u64) -> TaskLimits {
        TaskLimits {
            fuel: 1,
            memory_mb: 1,
            timeout_ms: 60_000,
            output_mb: 1,
            max_llm_calls: calls,
            max_tokens: tokens,
        }
    }

    const ASK: &[u8] = br#"{"messages":[{"role":"user","content":"hello"}],"purpose":"test"}"#;

    #[allow(clippy::disallowed_methods)] // the guest's thread, as the sandbox runs it
    fn on_guest_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(job).join().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grant_keeps_the_tasks_budget_and_records_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs"), 1 << 20).unwrap();
        let config = RawLlmConfig {
            base_url: Some("http://x/v1".into()),
            model: Some("m".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .unwrap();
        let service = Arc::new(LlmService::new(
            config,
            Arc::new(Echo),
            crate::env::TokioEnv::new(),
            LlmMetrics::register(&prometheus::Registry::new()).unwrap(),
        ));
        let grant = Arc::new(LlmGrant::new(
            service.clone(),
            blobs.clone(),
            &limits(2, 1_000),
        ));
        let g = grant.clone();
        let answers =
            on_guest_thread(move || [g.call(ASK), g.call(ASK), g.call(ASK), g.call(b"{")]);
        let first: serde_json::Value =
            serde_json::from_slice(answers[0].as_ref().unwrap()).unwrap();
        assert_eq!(first["tokens_out"], 50);
        assert!(
            first["content"]
                .as_str()
                .unwrap()
                .contains("at most 999 tokens"),
            "bounded by the budget"
        );
        assert!(answers[1].is_ok());
        let third: serde_json::Value =
            serde_json::from_str(answers[2].as_ref().unwrap_err()).unwrap();
        assert_eq!(
            third["kind"], "limit",
            "the third call is past max_llm_calls"
        );
        let bad: serde_json::Value =
            serde_json::from_str(answers[3].as_ref().unwrap_err()).unwrap();
        assert_eq!(bad["kind"], "bad_request");
        let records = grant.finish().unwrap();
        assert_eq!(records.len(), 2, "refused calls make no record");
        assert_eq!(records[0].purpose.as_deref(), Some("test"));
        let prompt = blobs
            .get(&records[0].prompt.parse().unwrap())
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(prompt).unwrap().contains("hello"));
        let completion = records[0].completion.as_ref().unwrap().parse().unwrap();
        assert!(
            blobs.get(&completion).unwrap().is_some(),
            "stored by finish"
        );

        // A token budget smaller than one call's spend: the second is refused.
        let grant = Arc::new(LlmGrant::new(service, blobs, &limits(8, 150)));
        let g = grant.clone();
        let answers = on_guest_thread(move || [g.call(ASK), g.call(ASK)]);
        let first: serde_json::Value =
            serde_json::from_slice(answers[0].as_ref().unwrap()).unwrap();
        assert!(
            first["content"]
                .as_str()
                .unwrap()
                .contains("at most 149 tokens"),
            "the completion is bounded by what is left: {first}"
        );
        let second: serde_json::Value =
            serde_json::from_str(answers[1].as_ref().unwrap_err()).unwrap();
        assert_eq!(second["kind"], "limit");
        assert!(second["message"].as_str().unwrap().contains("max_tokens"));
    }
}
