//! Limits on the HTTP server's connections, which hyper (as axum serves it)
//! does not set: at most [`MAX_CONNECTIONS`] open at once (more wait in
//! the kernel's backlog), at most [`MAX_CONNECTIONS_PER_CLIENT`] of them
//! from one client address (IPv6 by /64: past it a connection is answered
//! 429 and closed, so one address cannot hold the node's every
//! connection while others wait), and a request head must arrive within
//! [`HEAD_TIMEOUT`] of the connection opening or of the previous answer
//! (so a stalled or half-sent request, or an idle keep-alive connection,
//! is closed instead of held forever). Once a head is in, the request may
//! take as long as its handler does (long polls wait up to 30 s).
//!
//! With TLS (`--tls-cert`/`--tls-key` or `--tls-self-signed`) each
//! connection's handshake runs inside its stream, under the same head
//! deadline, so a client that stalls its handshake holds nothing but its
//! own connection, and the guard below sees the plaintext.
//!
//! The HTTP server is not part of the simulation, so this file reads tokio's
//! clock directly.
#![allow(clippy::disallowed_methods)] // HTTP transport: not simulated

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::places::{Place, Places};
use crate::rate::ClientKey;

/// Connections served at once, at most.
pub const MAX_CONNECTIONS: usize = 1_024;
/// Connections from one client address (an IPv6 /64) at once, at most.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 256;

/// Open connections per client address.
#[derive(Clone, Default)]
pub struct ClientConnections {
    open: Places<ClientKey>,
}

impl ClientConnections {
    /// A place for one more connection from `ip`, or `None` if it holds
    /// `cap` already. The place is freed when the slot is dropped.
    pub fn take(&self, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        self.open.take(ClientKey::of(ip), cap, usize::MAX).ok()
    }

    /// Connections open from `ip`.
    pub fn count(&self, ip: std::net::IpAddr) -> usize {
        self.open.count(&ClientKey::of(ip))
    }
}

/// One connection's place in [`ClientConnections`].
pub type ClientSlot = Place<ClientKey>;

/// The whole answer to a connection over [`MAX_CONNECTIONS_PER_CLIENT`].
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 76\r\n\r\n{\"error\":\"this client address has 256 connections open to the node already\"}";
/// Longest wait for a request head (from opening, or after an answer).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may send nothing at all (a body that stopped
/// flowing, say); well over the longest handler wait.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A TCP listener that caps open connections and times out request heads.
pub struct GuardedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    clients: ClientConnections,
    on_refusal: Option<RefusalCounter>,
}

/// What the listener calls with the reason of each connection it refuses.
type RefusalCounter = Arc<dyn Fn(&str) + Send + Sync>;

impl GuardedListener {
    /// Wraps `listener`; with `tls`, every connection speaks TLS.
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        GuardedListener {
            listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            clients: ClientConnections::default(),
            on_refusal: None,
        }
    }

    /// Calls `count` with the reason (`connections`) of every connection
    /// refused here (the node counts it in `coditect_http_refused_total`).
    pub fn on_refusal(mut self, count: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_refusal = Some(Arc::new(count));
        self
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let Some(slot) = self.clients.take(addr.ip(), MAX_CONNECTIONS_PER_CLIENT)
                    else {
                        // Plain HTTP gets its answer (best effort: a
                        // fresh socket's buffer takes it whole); over TLS
                        // there is no answer before a handshake, so it is
                        // closed. The permit stays for the next one.
                        if self.tls.is_none() {
                            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                        }
                        if let Some(count) = &self.on_refusal {
                            count("connections");
                        }
                        tracing::debug!(
                            "{}: refused a connection over the cap of {MAX_CONNECTIONS_PER_CLIENT}",
                            addr.ip()
                        );
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let stream = match &self.tls {
                        None => ApiStream::Plain(stream),
                        Some(acceptor) => ApiStream::Handshake(Box::new(acceptor.accept(stream))),
                    };
                    return (GuardedStream::new(stream, permit, slot), addr);
                }
                Err(error) => {
                    // Out of descriptors and the like: wait a little, as axum does.
                    tracing::debug!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The client's address, for handlers (`ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// A connection's bytes: plain, or TLS (handshaking first).
pub enum ApiStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// The TLS handshake is under way.
    Handshake(Box<tokio_rustls::Accept<TcpStream>>),
    /// TLS, after the handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed.
    Failed,
}

impl ApiStream {
    /// Drives the handshake; `Ready(Ok)` once bytes can flow.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let ApiStream::Handshake(accept) = self {
            match Pin::new(&mut **accept).poll(cx) {
                Poll::Ready(Ok(stream)) => *self = ApiStream::Tls(Box::new(stream)),
                Poll::Ready(Err(error)) => {
                    *self = ApiStream::Failed;
                    tracing::debug!("TLS handshake failed: {error}");
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match self {
            ApiStream::Failed => Poll::Ready(Err(io::Error::other("the TLS handshake failed"))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
        match this {
            ApiStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ApiStream::Tls(stream) => Pin::new(&mut **stream).poll_read(cx, buf),
            _ => Poll::Pending,
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
        match this {
            ApiStream::Plain(stream) => Pin::new(stream).poll_write(cx, bytes),
            ApiStream::Tls(stream) => Pin::new(&mut **stream).poll_write(cx, bytes),
            _ => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            ApiStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ApiStream::Tls(stream) => Pin::new(&mut **stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            ApiStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ApiStream::Tls(stream) => Pin::new(&mut **stream).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A connection with a deadline for each request head.
pub struct GuardedStream {
    stream: ApiStream,
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
    /// Armed while a request head is awaited.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last bytes read, to find a head's end across reads.
    tail: [u8; 3],
    /// Fires when the client sent nothing for [`IDLE_TIMEOUT`].
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl GuardedStream {
    fn new(stream: ApiStream, permit: OwnedSemaphorePermit, client: ClientSlot) -> Self {
        GuardedStream {
            stream,
            _permit: permit,
            _client: client,
            deadline: Some(Box::pin(tokio::time::sleep(HEAD_TIMEOUT))),
            tail: [0; 3],
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        }
    }
}

/// Whether `bytes`, read after `tail` (the previous read's last three
/// bytes), hold the blank line that ends a request head; updates `tail`.
fn ends_head(tail: &mut [u8; 3], bytes: &[u8]) -> bool {
    let mut window = Vec::with_capacity(3 + bytes.len().min(64));
    window.extend_from_slice(tail);
    window.extend_from_slice(bytes);
    let found = window.windows(4).any(|w| w == b"\r\n\r\n");
    let keep = window.len().min(3);
    *tail = [0; 3];
    tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
    found
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    this.idle
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    if this.deadline.is_some() && ends_head(&mut this.tail, fresh) {
                        this.deadline = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no complete request head in time",
                        )));
                    }
                }
                if this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.stream).poll_write(cx, bytes);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            // An answer went out: the next request's head has its own deadline.
            this.deadline = Some(Box::pin(tokio::time::sleep(HEAD_TIMEOUT)));
            this.tail = [0; 3];
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_client_are_capped_and_freed_on_drop() {
        let clients = ClientConnections::default();
        let a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let same_net: std::net::IpAddr = "2001:db8::2".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let first = clients.take(a, 2).unwrap();
        let _second = clients.take(same_net, 2).unwrap();
        assert!(clients.take(a, 2).is_none(), "one /64 is one client");
        assert!(clients.take(other, 2).is_some());
        drop(first);
        assert_eq!(clients.count(a), 1);
        assert!(clients.take(a, 2).is_some());
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains(&MAX_CONNECTIONS_PER_CLIENT.to_string()));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn a_head_end_is_found_across_reads() {
        let mut tail = [0u8; 3];
        assert!(!ends_head(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(ends_head(&mut tail, b"\n\r\n"));
        assert!(!ends_head(&mut tail, b"abc"));
        assert!(!ends_head(&mut tail, b"\r"));
        assert!(!ends_head(&mut tail, b"\n"));
        assert!(!ends_head(&mut tail, b"\r"));
        assert!(ends_head(&mut tail, b"\n"));
        assert!(ends_head(&mut tail, b"x\r\n\r\nbody"));
        assert!(!ends_head(&mut tail, b"\r\n"));
    }
}
