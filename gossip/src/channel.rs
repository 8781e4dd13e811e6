//! The long-lived call channel to each peer (see [`crate::Network::call`]).
//!
//! One substream of [`CHANNEL_PROTOCOL`] per peer, opened on the first call
//! and kept: each call writes one frame tagged with its id and waits for the
//! answer with that id, so calls do not wait for each other and none pays a
//! substream's opening, its protocol negotiation and the timers libp2p keeps
//! for each. A reader task per channel hands answers to their callers. A
//! channel that fails (the stream or its connection closed, a frame cut off
//! by a timeout) is closed, every call on it fails at once as unreachable,
//! and the next call opens a new one. A peer that does not speak the
//! protocol is remembered for a while and called over request-response.
//!
//! Like the swarm, this is the production side of the network seam (the
//! simulation replaces the whole seam), so it uses tokio's clock directly.
#![allow(clippy::disallowed_methods)] // production network seam: tokio time and tasks

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::{Control, OpenStreamError};
use tokio::sync::{oneshot, Notify};

use crate::wire::{self, WireRequest, CHANNEL_PROTOCOL};
use crate::NetworkMetrics;

/// How long a peer that refused the channel protocol is called over
/// request-response before the channel is tried again (it may upgrade).
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

/// The answers a channel waits for, by call id; `None` once it is closed.
type Waiting = Option<HashMap<u64, oneshot::Sender<Vec<u8>>>>;

struct Channel {
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    waiting: Mutex<Waiting>,
    next_id: AtomicU64,
    /// Stops the reader when the channel is closed from this side.
    closed: Notify,
}

/// How a call over a channel ended, short of an answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The peer does not speak the channel protocol; the request is handed back.
    Unsupported(WireRequest),
    /// No answer within the deadline.
    TimedOut,
    /// The channel could not be opened, or closed before the answer.
    Unreachable(String),
    /// The request is larger than a frame may be.
    Invalid(String),
}

/// Every open channel of this node, by peer. Cheap to share.
pub(crate) struct Channels {
    control: Control,
    metrics: NetworkMetrics,
    open: Mutex<HashMap<PeerId, Arc<Channel>>>,
    /// One opener at a time per peer.
    opening: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    unsupported: Mutex<HashMap<PeerId, Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these are held; a poisoned one still holds
    // consistent maps.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Channels {
    pub(crate) fn new(control: Control, metrics: NetworkMetrics) -> Arc<Self> {
        Arc::new(Channels {
            control,
            metrics,
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            unsupported: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a channel to `peer` is open now.
    pub(crate) fn is_open(&self, peer: &PeerId) -> bool {
        lock(&self.open).contains_key(peer)
    }

    /// Sends `request` to `peer` over its channel (opening one if needed)
    /// and waits for the answer, at most `deadline` in all.
    pub(crate) async fn call(
        self: &Arc<Self>,
        peer: PeerId,
        request: WireRequest,
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let started = Instant::now(); // production network seam
        let outcome = self.call_inner(peer, request, deadline, started).await;
        let label = match &outcome {
            Ok(_) => {
                self.metrics
                    .rpc_latency
                    .observe(started.elapsed().as_secs_f64());
                Some("ok")
            }
            Err(CallError::TimedOut) => Some("timeout"),
            Err(CallError::Unreachable(_)) => Some("unreachable"),
            Err(CallError::Unsupported(_) | CallError::Invalid(_)) => None,
        };
        if let Some(label) = label {
            self.metrics.rpc_requests.with_label_values(&[label]).inc();
        }
        outcome
    }

    async fn call_inner(
        self: &Arc<Self>,
        peer: PeerId,
        request: WireRequest,
        deadline: Duration,
        started: Instant,
    ) -> Result<Vec<u8>, CallError> {
        let channel = match tokio::time::timeout(deadline, self.channel(peer)).await {
            Err(_) => return Err(CallError::TimedOut),
            Ok(Err(OpenError::Unsupported)) => return Err(CallError::Unsupported(request)),
            Ok(Err(OpenError::Failed(message))) => return Err(CallError::Unreachable(message)),
            Ok(Ok(channel)) => channel,
        };
        let id = channel.next_id.fetch_add(1, Ordering::Relaxed);
        let frame =
            wire::channel_request(id, &request).map_err(|e| CallError::Invalid(e.to_string()))?;
        let (answer_to, answer) = oneshot::channel();
        match lock(&channel.waiting).as_mut() {
            Some(waiting) => waiting.insert(id, answer_to),
            None => return Err(CallError::Unreachable("the channel closed".into())),
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        let written = tokio::time::timeout(remaining, async {
            let mut writer = channel.writer.lock().await;
            writer.write_all(&frame).await?;
            writer.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.close(&peer, &channel);
                return Err(CallError::Unreachable(format!(
                    "writing to the channel: {error}"
                )));
            }
            Err(_) => {
                // Perhaps cut off mid-frame: the stream is no longer usable.
                self.close(&peer, &channel);
                return Err(CallError::TimedOut);
            }
        }
        let remaining = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::Unreachable(
                "the channel closed before the answer".into(),
            )),
            Err(_) => {
                // The request went out whole; a late answer is dropped by id.
                if let Some(waiting) = lock(&channel.waiting).as_mut() {
                    waiting.remove(&id);
                }
                Err(CallError::TimedOut)
            }
        }
    }

    async fn channel(self: &Arc<Self>, peer: PeerId) -> Result<Arc<Channel>, OpenError> {
        if let Some(channel) = lock(&self.open).get(&peer) {
            return Ok(channel.clone());
        }
        if lock(&self.unsupported)
            .get(&peer)
            .is_some_and(|since| since.elapsed() < UNSUPPORTED_RETRY)
        {
            return Err(OpenError::Unsupported);
        }
        let gate = lock(&self.opening).entry(peer).or_default().clone();
        let _one_opener = gate.lock().await;
        if let Some(channel) = lock(&self.open).get(&peer) {
            return Ok(channel.clone());
        }
        let mut control = self.control.clone();
        let stream = match control.open_stream(peer, CHANNEL_PROTOCOL).await {
            Ok(stream) => stream,
            Err(OpenStreamError::UnsupportedProtocol(_)) => {
                tracing::debug!(
                    "{peer} does not speak {CHANNEL_PROTOCOL}; calling it over request-response"
                );
                lock(&self.unsupported).insert(peer, Instant::now()); // production network seam
                return Err(OpenError::Unsupported);
            }
            Err(error) => return Err(OpenError::Failed(error.to_string())),
        };
        lock(&self.unsupported).remove(&peer);
        let (reader, writer) = stream.split();
        let channel = Arc::new(Channel {
            writer: tokio::sync::Mutex::new(writer),
            waiting: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(0),
            closed: Notify::new(),
        });
        lock(&self.open).insert(peer, channel.clone());
        tokio::spawn(read_answers(self.clone(), peer, channel.clone(), reader));
        Ok(channel)
    }

    /// Closes `channel`: its waiting calls fail now, and the next call to
    /// `peer` opens a new one.
    fn close(&self, peer: &PeerId, channel: &Arc<Channel>) {
        lock(&channel.waiting).take();
        channel.closed.notify_one();
        let mut open = lock(&self.open);
        if open
            .get(peer)
            .is_some_and(|current| Arc::ptr_eq(current, channel))
        {
            open.remove(peer);
        }
    }
}

enum OpenError {
    Unsupported,
    Failed(String),
}

/// Hands each answer on `reader` to the call waiting for it, until the
/// stream ends or fails or the channel is closed; then closes the channel.
async fn read_answers(
    channels: Arc<Channels>,
    peer: PeerId,
    channel: Arc<Channel>,
    mut reader: ReadHalf<Stream>,
) {
    loop {
        let answer = tokio::select! {
            answer = wire::read_channel_answer(&mut reader) => answer,
            () = channel.closed.notified() => break,
        };
        match answer {
            Ok((id, answer)) => {
                let waiter = lock(&channel.waiting)
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!("channel to {peer} failed: {error}");
                }
                break;
            }
        }
    }
    channels.close(&peer, &channel);
}
