//! The modelled language model of the `llm` scenario, behind the node's
//! real `ModelProvider` seam: the node's own `LlmService` (concurrency
//! permits, rate limit, retries with backoff and `Retry-After`, the
//! circuit breaker) runs on it in virtual time, and the node's probe loop
//! offers or withdraws `llm` by what it answers.
//!
//! Deterministic from the seed: each answer takes 100-999 virtual ms, one
//! call in eight is a 429 with `Retry-After: 1`, and the provider is down
//! (every call a 503, the models list failing) during outage windows of
//! 2-6 s every 10-20 s of the fault phase, never in the recovery phase.
#![allow(clippy::disallowed_methods)] // virtual time: the simulation's clock

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coditect_node::env::Env;
use coditect_node::llm::wire::{ChatAnswer, ChatRequest, Failure};
use coditect_node::llm::ModelProvider;
use futures::future::BoxFuture;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use crate::env::SimEnv;

/// The model's name.
pub const SIM_MODEL: &str = "sim-model";

/// A modelled provider.
pub struct SimModel {
    seed: u64,
    env: Arc<SimEnv>,
    /// Outage windows, virtual ms since the start: [from, to).
    outages: Vec<(u64, u64)>,
    calls: AtomicU64,
}

impl SimModel {
    /// A provider whose outages all end before `fault_free_from_ms`.
    pub fn new(seed: u64, env: Arc<SimEnv>, fault_free_from_ms: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c6c_6d00);
        let mut outages = Vec::new();
        let mut at = rng.gen_range(5_000..15_000);
        loop {
            let length = rng.gen_range(2_000..6_000);
            if at + length >= fault_free_from_ms {
                break;
            }
            outages.push((at, at + length));
            at += length + rng.gen_range(10_000..20_000);
        }
        SimModel {
            seed,
            env,
            outages,
            calls: AtomicU64::new(0),
        }
    }

    /// Its outage windows.
    pub fn outages(&self) -> &[(u64, u64)] {
        &self.outages
    }

    fn down(&self) -> bool {
        let now = self.env.elapsed().as_millis() as u64;
        self.outages
            .iter()
            .any(|(from, to)| (*from..*to).contains(&now))
    }
}

impl ModelProvider for SimModel {
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let answer = if self.down() {
            Err("GET /models answered 503 Service Unavailable (modelled outage)".to_string())
        } else {
            Ok(vec![SIM_MODEL.to_string()])
        };
        Box::pin(async move { answer })
    }

    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        _max_tokens: u64,
    ) -> BoxFuture<'a, Result<ChatAnswer, Failure>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let digest = Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update(n.to_le_bytes())
            .finalize();
        let draw = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let latency = Duration::from_millis(100 + draw % 900);
        Box::pin(async move {
            self.env.sleep(latency).await;
            if self.down() {
                return Err(Failure::Transient {
                    label: "server_error",
                    message: "the provider answered 503 (modelled outage)".into(),
                    retry_after: None,
                });
            }
            if (draw >> 32).is_multiple_of(8) {
                return Err(Failure::Transient {
                    label: "rate_limited",
                    message: "the provider answered 429 (modelled)".into(),
                    retry_after: Some(Duration::from_secs(1)),
                });
            }
            Ok(ChatAnswer {
                content: format!("modelled answer {n}"),
                model: SIM_MODEL.into(),
                tokens_in: (request.chars() / 4) as u64,
                tokens_out: 16,
                finish_reason: Some("stop".into()),
            })
        })
    }
}
