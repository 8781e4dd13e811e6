//! Language runtimes a node provides to the mesh (today CPython for WASI,
//! behind `builtin:python`): loaded into the blob store, or fetched from a
//! peer that has it, compiled once (the module cache is per machine), then
//! advertised as a capability so placement only sends Python tasks to nodes
//! that start them at once. Progress shows in `/api/status` (`runtimes`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coditect_memory::Digest;
use coditect_sandbox::{ModuleDigest, Sandbox};
use serde_json::json;

use super::Node;
use crate::python;
use crate::worker::BlobHint;

impl Node {
    /// Records what `/api/status` shows for runtime `name`.
    pub fn set_runtime_status(&self, name: &str, status: serde_json::Value) {
        self.inner
            .runtimes
            .lock()
            .expect("runtimes lock")
            .insert(name.to_string(), status);
    }

    /// Makes the Python runtime available on this node, in the background:
    /// from `local` (already verified against the pinned digest) or, without
    /// one, from the first peer that advertises `python`. Then compiles it
    /// (or loads the machine's cached artifact) off the runtime, and only
    /// then advertises `python`.
    pub async fn provide_python(self, local: Option<PathBuf>, sandbox: Arc<Sandbox>) {
        let digest = python::digest();
        let started = self.inner.env.elapsed();
        let from = match local {
            Some(path) => {
                self.set_runtime_status("python", json!({"state": "loading", "file": path}));
                let blobs = self.inner.blobs.clone();
                let stored = self
                    .off_runtime(move || {
                        coditect_sandbox::at_lowest_priority(move || {
                            store_file(&blobs, &path, &digest)
                        })
                    })
                    .await;
                if let Err(error) = stored {
                    tracing::warn!("the Python runtime is unavailable: {error}");
                    self.set_runtime_status("python", json!({"state": "failed", "detail": error}));
                    return;
                }
                "file".to_string()
            }
            None => match self.fetch_python(&digest).await {
                Some(peer) => format!("peer {peer}"),
                None => return,
            },
        };
        self.set_runtime_status("python", json!({"state": "compiling", "from": from}));
        let compile_started = self.inner.env.elapsed();
        let blobs = self.inner.blobs.clone();
        // At the lowest priority: loading (or the first compile, tens of
        // seconds) must not take the CPU from Raft at start.
        let prepared = self
            .off_runtime(move || {
                coditect_sandbox::at_lowest_priority(move || {
                    let module: ModuleDigest = digest
                        .to_string()
                        .parse()
                        .map_err(|_| "the pinned digest is not a module digest")?;
                    if sandbox.prepared(&module).is_some() {
                        return Ok(true);
                    }
                    let bytes = blobs
                        .get(&digest)
                        .map_err(|e| e.to_string())?
                        .ok_or("the runtime left the blob store")?;
                    sandbox
                        .prepare(&bytes)
                        .map(|_| false)
                        .map_err(|e| e.to_string())
                })
            })
            .await;
        let now = self.inner.env.elapsed();
        match prepared {
            Ok(cached) => {
                let compile_ms = now.saturating_sub(compile_started).as_millis() as u64;
                tracing::info!(
                    from = %from,
                    cached,
                    compile_ms,
                    "the Python runtime is ready; offering `python`"
                );
                self.set_runtime_status(
                    "python",
                    json!({
                        "state": "ready",
                        "from": from,
                        "cached_artifact": cached,
                        "compile_ms": compile_ms,
                        "ready_after_ms": now.saturating_sub(started).as_millis() as u64,
                        "version": "3.12.0",
                        "digest": digest.to_string(),
                    }),
                );
                self.set_capability_tag(python::PYTHON_CAPABILITY, Some("3.12"));
            }
            Err(error) => {
                tracing::warn!("the Python runtime does not compile here: {error}");
                self.set_runtime_status("python", json!({"state": "failed", "detail": error}));
            }
        }
    }

    /// Waits for a peer advertising `python` and fetches the runtime from it
    /// by digest (verified on arrival). Returns that peer's id. (The wait
    /// ends with the node.)
    async fn fetch_python(&self, digest: &Digest) -> Option<String> {
        let mut announced = false;
        loop {
            let sources = self.python_sources();
            if sources.is_empty() {
                if !announced {
                    announced = true;
                    tracing::info!(
                        "no local Python runtime; waiting for a peer that offers `python`"
                    );
                    self.set_runtime_status(
                        "python",
                        json!({"state": "waiting", "detail": "no Python runtime file here; waiting for a peer that offers `python`"}),
                    );
                }
            } else {
                let peer = sources[0].0.clone();
                self.set_runtime_status("python", json!({"state": "fetching", "from": peer}));
                match self.fetch_blob_from(digest, &sources).await {
                    Ok(Some(_)) => return Some(peer),
                    Ok(None) => tracing::debug!("no peer served the Python runtime yet"),
                    Err(error) => tracing::info!("fetching the Python runtime: {error}"),
                }
            }
            self.inner
                .env
                .sleep(self.inner.heartbeat.max(Duration::from_millis(200)))
                .await;
        }
    }

    /// Peers whose adverts offer `python`, with their addresses.
    fn python_sources(&self) -> Vec<BlobHint> {
        let view = self.inner.view.lock().expect("view lock");
        view.adverts
            .values()
            .filter(|(advert, _)| {
                advert.peer_id != self.inner.peer_id
                    && advert
                        .capabilities
                        .tags
                        .contains_key(python::PYTHON_CAPABILITY)
            })
            .map(|(advert, _)| (advert.peer_id.clone(), advert.addrs.clone()))
            .collect()
    }
}

/// Streams the runtime file into the blob store (1 MiB at a time) and checks
/// that it landed under the pinned digest.
fn store_file(
    blobs: &coditect_memory::BlobStore,
    path: &std::path::Path,
    digest: &Digest,
) -> Result<(), String> {
    use std::io::Read;
    if blobs.contains(digest) {
        return Ok(());
    }
    // The file was checked against the pinned digest: link it in (no copy,
    // no fsync of 26 MB while Raft appends); copy only across file systems.
    if blobs.adopt(path, digest).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = blobs.writer().map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        writer.write(&buffer[..read]).map_err(|e| e.to_string())?;
    }
    let stored = writer.finish().map_err(|e| e.to_string())?;
    if stored != *digest {
        return Err(format!(
            "{} changed since it was checked (now {stored}); refusing it",
            path.display()
        ));
    }
    Ok(())
}

impl Node {
    /// Probes the language model of `config` for as long as the node runs,
    /// offering `llm` and `llm.model=<name>` only while the provider answers
    /// and lists the model (see `crate::llm`).
    pub async fn watch_llm(self, llm: Arc<crate::llm::service::LlmService>) {
        use crate::llm::{judge_probe, LLM_CAPABILITY, LLM_MODEL_TAG};
        let config = llm.config().clone();
        let mut offered: Option<bool> = None;
        loop {
            if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let probe = llm.provider().models().await;
            let (mut offer, mut status) = judge_probe(&config, &probe);
            // Calls keep failing although the models list answers: tasks
            // wait for another node (or the cool-down) instead of failing.
            if let Some(reason) = llm.open_reason().filter(|_| offer) {
                offer = false;
                status["state"] = "unavailable".into();
                status["reason"] = reason.into();
            }
            status["probed_ms"] = self.inner.env.now_ms().into();
            if offered != Some(offer) {
                match &status["reason"] {
                    serde_json::Value::String(reason) => tracing::warn!(
                        model = %config.model,
                        "the language model is unavailable, `llm` not offered: {reason}"
                    ),
                    _ => {
                        tracing::info!(model = %config.model, "the language model answers; offering `llm`")
                    }
                }
            }
            self.set_runtime_status("llm", status);
            if offer {
                self.set_capability_tag(LLM_CAPABILITY, Some(&config.api));
                self.set_capability_tag(LLM_MODEL_TAG, Some(&config.model));
            } else {
                self.set_capability_tag(LLM_CAPABILITY, None);
                self.set_capability_tag(LLM_MODEL_TAG, None);
            }
            offered = Some(offer);
            // A failing provider is asked again sooner.
            let wait = if offer {
                config.probe_every
            } else {
                (config.probe_every / 4)
                    .max(Duration::from_secs(1))
                    .min(config.probe_every)
            };
            self.inner.env.sleep(wait).await;
        }
    }
}
