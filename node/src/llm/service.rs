//! One node's access to its language model: every call agents make goes
//! through [`LlmService::chat`], which keeps the provider's limits
//! (`max_concurrency` calls in flight, `requests_per_minute` starts),
//! retries transient failures (429 and 5xx, honouring `Retry-After`,
//! timeouts, broken connections, answers that are not chat completions)
//! and opens a circuit breaker after repeated failed calls, so tasks stop
//! spending attempts on a provider that is down (the node also withdraws
//! `llm` while it is open; see `Node::watch_llm`).
//!
//! Time and randomness come from the node's `Env`; the network from the
//! [`ModelProvider`] seam.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::policy::{backoff, Breaker, RateLimiter, MAX_TRIES};
use super::wire::{ChatAnswer, ChatRequest, Failure, MAX_RETRY_AFTER};
use super::{LlmConfig, ModelProvider};
use crate::env::SharedEnv;

/// Failed calls in a row that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;

/// How long the breaker stays open before one call is let through, ms.
const BREAKER_COOL_DOWN_MS: u64 = 30_000;

/// Completion tokens asked for when the agent names no bound.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 4_096;

/// Metrics of the model calls.
#[derive(Clone)]
pub struct LlmMetrics {
    /// HTTP requests to the provider by outcome (`ok`, `rate_limited`,
    /// `server_error`, `timeout`, `transport`, `invalid_answer`,
    /// `refused`, `circuit_open`).
    pub requests: IntCounterVec,
    /// Tokens by direction (`in`: prompt, `out`: completion).
    pub tokens: IntCounterVec,
    /// Duration of provider requests that got an answer, seconds.
    pub seconds: Histogram,
}

impl LlmMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = LlmMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "coditect_llm_requests_total",
                    "Requests to the language-model provider by outcome",
                ),
                &["outcome"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "coditect_llm_tokens_total",
                    "Language-model tokens by direction (in: prompt, out: completion)",
                ),
                &["direction"],
            )?,
            seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "coditect_llm_request_seconds",
                    "Duration of language-model requests that got an answer",
                )
                .buckets(vec![
                    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                ]),
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.tokens.clone()))?;
        registry.register(Box::new(metrics.seconds.clone()))?;
        Ok(metrics)
    }
}

/// Why a call gave no answer, as agents see it (`kind` in the error body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// `unavailable` (provider down, circuit open, out of time),
    /// `provider` (it kept answering nonsense), `bad_request` (it refused
    /// the request), `limit` (the task's budget is spent).
    pub kind: &'static str,
    /// One line.
    pub message: String,
}

/// One call's outcome and what it cost.
#[derive(Clone, Debug)]
pub struct Called {
    /// The answer, or why there is none.
    pub answer: Result<ChatAnswer, CallError>,
    /// HTTP requests made (0 when refused before any).
    pub tries: u32,
    /// Time from the call to its outcome, waits included, ms.
    pub latency_ms: u64,
}

/// The node's model access.
pub struct LlmService {
    config: LlmConfig,
    provider: Arc<dyn ModelProvider>,
    env: SharedEnv,
    permits: tokio::sync::Semaphore,
    limiter: Mutex<RateLimiter>,
    breaker: Mutex<Breaker>,
    metrics: LlmMetrics,
}

impl LlmService {
    /// The service for `config` over `provider`.
    pub fn new(
        config: LlmConfig,
        provider: Arc<dyn ModelProvider>,
        env: SharedEnv,
        metrics: LlmMetrics,
    ) -> Self {
        let now = env.elapsed().as_millis() as u64;
        let burst = config.max_concurrency.min(config.requests_per_minute);
        LlmService {
            limiter: Mutex::new(RateLimiter::new(config.requests_per_minute, burst, now)),
            breaker: Mutex::new(Breaker::new(BREAKER_THRESHOLD, BREAKER_COOL_DOWN_MS)),
            permits: tokio::sync::Semaphore::new(config.max_concurrency as usize),
            config,
            provider,
            env,
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The provider (for the probe).
    pub fn provider(&self) -> &Arc<dyn ModelProvider> {
        &self.provider
    }

    /// The service's clock (the node's monotonic time).
    pub fn clock(&self) -> Duration {
        self.env.elapsed()
    }

    /// Runs `call` on the node's runtime.
    pub fn spawn(&self, call: futures::future::BoxFuture<'static, ()>) {
        self.env.spawn("llm-call", call);
    }

    fn now(&self) -> u64 {
        self.env.elapsed().as_millis() as u64
    }

    /// Why calls are refused now, while the breaker is open.
    pub fn open_reason(&self) -> Option<String> {
        let now = self.now();
        let breaker = self.breaker.lock().expect("llm breaker");
        breaker.open(now).map(|open| {
            format!(
                "circuit open after {} failed calls in a row (last: {}); next try in {} s",
                open.failures,
                open.last,
                open.until_ms.saturating_sub(now).div_ceil(1000)
            )
        })
    }

    /// Asks the model, within `budget` of time from now: waits for a slot
    /// and the rate limit, retries transient failures, and never takes
    /// longer than `budget` in all.
    pub async fn chat(&self, request: &ChatRequest, max_tokens: u64, budget: Duration) -> Called {
        let started = self.env.elapsed();
        let mut tries = 0;
        let answer = self
            .chat_inner(request, max_tokens, budget, &mut tries)
            .await;
        Called {
            answer,
            tries,
            latency_ms: (self.env.elapsed().saturating_sub(started)).as_millis() as u64,
        }
    }

    async fn chat_inner(
        &self,
        request: &ChatRequest,
        max_tokens: u64,
        budget: Duration,
        tries: &mut u32,
    ) -> Result<ChatAnswer, CallError> {
        let unavailable = |message: String| CallError {
            kind: "unavailable",
            message,
        };
        let deadline = self.env.elapsed() + budget;
        let left = |service: &Self| deadline.saturating_sub(service.env.elapsed());
        if let Some(reason) = self.open_reason() {
            return Err(self.circuit_open(reason));
        }
        let permit = crate::env::timeout(self.env.as_ref(), left(self), self.permits.acquire())
            .await
            .map_err(|_| unavailable("no free model slot before the task's deadline".into()))?
            .map_err(|_| unavailable("the model service is shutting down".into()))?;
        let mut last: Option<Failure> = None;
        while *tries < MAX_TRIES {
            let wait = self
                .limiter
                .lock()
                .expect("llm limiter")
                .reserve(self.now());
            if wait >= left(self) {
                return Err(unavailable(format!(
                    "requests_per_minute {} leaves no start before the task's deadline",
                    self.config.requests_per_minute
                )));
            }
            if !wait.is_zero() {
                self.env.sleep(wait).await;
            }
            if let Err(open) = self.breaker.lock().expect("llm breaker").admit(self.now()) {
                return Err(self.circuit_open(format!(
                    "circuit open after {} failed calls in a row (last: {})",
                    open.failures, open.last
                )));
            }
            *tries += 1;
            let limit = left(self).min(self.config.timeout);
            let sent = self.env.elapsed();
            let outcome = match crate::env::timeout(
                self.env.as_ref(),
                limit,
                self.provider.chat(request, max_tokens),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Transient {
                    label: "timeout",
                    message: format!(
                        "the provider did not answer within {} ms",
                        limit.as_millis()
                    ),
                    retry_after: None,
                }),
            };
            let now = self.now();
            match outcome {
                Ok(answer) => {
                    self.breaker.lock().expect("llm breaker").record(now, None);
                    self.metrics.requests.with_label_values(&["ok"]).inc();
                    self.metrics
                        .seconds
                        .observe(self.env.elapsed().saturating_sub(sent).as_secs_f64());
                    self.metrics
                        .tokens
                        .with_label_values(&["in"])
                        .inc_by(answer.tokens_in);
                    self.metrics
                        .tokens
                        .with_label_values(&["out"])
                        .inc_by(answer.tokens_out);
                    drop(permit);
                    return Ok(answer);
                }
                Err(failure) => {
                    self.metrics
                        .requests
                        .with_label_values(&[failure.label()])
                        .inc();
                    self.breaker
                        .lock()
                        .expect("llm breaker")
                        .record(now, Some(failure.message()));
                    tracing::warn!(
                        model = %self.config.model,
                        try_ = *tries,
                        "model call failed: {}",
                        failure.message()
                    );
                    let retry_after = match &failure {
                        Failure::Refused { message } => {
                            return Err(CallError {
                                kind: "bad_request",
                                message: message.clone(),
                            })
                        }
                        Failure::Transient { retry_after, .. } => *retry_after,
                    };
                    if retry_after.is_some_and(|wait| wait > MAX_RETRY_AFTER) {
                        return Err(unavailable(format!(
                            "{} (Retry-After is longer than {} s)",
                            failure.message(),
                            MAX_RETRY_AFTER.as_secs()
                        )));
                    }
                    let jitter = 0.5 + (self.env.random_u64() % 1000) as f64 / 2000.0;
                    let wait = backoff(*tries, retry_after, jitter);
                    last = Some(failure);
                    if *tries >= MAX_TRIES || wait >= left(self) {
                        break;
                    }
                    self.env.sleep(wait).await;
                }
            }
        }
        // A provider that kept answering nonsense is not down.
        let kind = match &last {
            Some(failure) if failure.label() == "invalid_answer" => "provider",
            _ => "unavailable",
        };
        let last = last.map(|f| f.message().to_string()).unwrap_or_default();
        Err(CallError {
            kind,
            message: format!("gave up after {} tries: {last}", *tries),
        })
    }

    /// A call the open breaker refuses (counted as `circuit_open`).
    fn circuit_open(&self, message: String) -> CallError {
        self.metrics
            .requests
            .with_label_values(&["circuit_open"])
            .inc();
        CallError {
            kind: "unavailable",
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::collections::VecDeque;

    /// A scripted provider for the policy around it (no HTTP).
    struct Scripted {
        outcomes: Mutex<VecDeque<Result<ChatAnswer, Failure>>>,
        calls: std::sync::atomic::AtomicU32,
    }

    impl ModelProvider for Scripted {
        fn models(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
            Box::pin(async { Ok(vec!["m".to_string()]) })
        }
        fn chat<'a>(
            &'a self,
            _: &'a ChatRequest,
            _: u64,
        ) -> BoxFuture<'a, Result<ChatAnswer, Failure>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.outcomes.lock().unwrap().pop_front();
            Box::pin(async move { next.unwrap_or_else(|| Ok(answer())) })
        }
    }

    /// Tokio's clock, which these tests pause and advance.
    struct PausedEnv(tokio::time::Instant);

    #[allow(clippy::disallowed_methods)] // a test Env over tokio's paused clock
    impl crate::env::Env for PausedEnv {
        fn now_ms(&self) -> u64 {
            self.elapsed().as_millis() as u64
        }
        fn elapsed(&self) -> Duration {
            self.0.elapsed()
        }
        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            Box::pin(tokio::time::sleep(duration))
        }
        fn spawn(&self, _: &'static str, task: BoxFuture<'static, ()>) {
            tokio::spawn(task);
        }
        fn random_u64(&self) -> u64 {
            7
        }
    }

    fn answer() -> ChatAnswer {
        ChatAnswer {
            content: "ok".into(),
            model: "m".into(),
            tokens_in: 3,
            tokens_out: 1,
            finish_reason: None,
        }
    }

    #[allow(clippy::disallowed_methods)] // the paused test clock's start
    fn service(outcomes: Vec<Result<ChatAnswer, Failure>>) -> (LlmService, Arc<Scripted>) {
        let provider = Arc::new(Scripted {
            outcomes: Mutex::new(outcomes.into()),
            calls: Default::default(),
        });
        let config = super::super::RawLlmConfig {
            base_url: Some("http://x/v1".into()),
            model: Some("m".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .unwrap();
        let registry = Registry::new();
        let service = LlmService::new(
            config,
            provider.clone(),
            Arc::new(PausedEnv(tokio::time::Instant::now())),
            LlmMetrics::register(&registry).unwrap(),
        );
        (service, provider)
    }

    fn request() -> ChatRequest {
        ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap()
    }

    fn transient(
        label: &'static str,
        retry_after: Option<Duration>,
    ) -> Result<ChatAnswer, Failure> {
        Err(Failure::Transient {
            label,
            message: format!("{label} from the script"),
            retry_after,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_retry_after_is_honoured() {
        let (service, provider) = service(vec![
            transient("rate_limited", Some(Duration::from_secs(7))),
            transient("server_error", None),
        ]);
        let called = service.chat(&request(), 10, Duration::from_secs(60)).await;
        assert_eq!(called.answer.unwrap().content, "ok");
        assert_eq!(called.tries, 3);
        assert!(
            called.latency_ms >= 7_000,
            "waited out Retry-After: {}",
            called.latency_ms
        );
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried_and_repeated_failures_open_the_circuit() {
        let (service, provider) = service(vec![Err(Failure::Refused {
            message: "the provider answered 400".into(),
        })]);
        let called = service.chat(&request(), 10, Duration::from_secs(60)).await;
        assert_eq!(called.answer.unwrap_err().kind, "bad_request");
        assert_eq!(called.tries, 1);
        let (service, provider2) = service_failing(12);
        let first = service.chat(&request(), 10, Duration::from_secs(60)).await;
        let error = first.answer.unwrap_err();
        assert_eq!(error.kind, "unavailable");
        assert!(
            error.message.contains("gave up after 4 tries"),
            "{}",
            error.message
        );
        let second = service.chat(&request(), 10, Duration::from_secs(60)).await;
        assert!(
            second.answer.unwrap_err().message.contains("circuit open"),
            "the fifth failure opens it"
        );
        let third = service.chat(&request(), 10, Duration::from_secs(60)).await;
        assert_eq!(third.tries, 0, "refused without a request");
        assert!(service.open_reason().is_some());
        assert_eq!(provider2.calls.load(std::sync::atomic::Ordering::SeqCst), 5);
        let _ = provider;
    }

    fn service_failing(n: usize) -> (LlmService, Arc<Scripted>) {
        service((0..n).map(|_| transient("server_error", None)).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn no_call_outlives_its_budget() {
        let (service, _) = service(vec![transient(
            "rate_limited",
            Some(Duration::from_secs(50)),
        )]);
        let called = service.chat(&request(), 10, Duration::from_secs(5)).await;
        assert_eq!(called.answer.unwrap_err().kind, "unavailable");
        assert!(called.latency_ms < 5_000, "{}", called.latency_ms);
    }
}
