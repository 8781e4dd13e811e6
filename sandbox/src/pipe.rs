//! A capped in-memory output pipe for guest stdout and stderr.
//!
//! wasmtime-wasi's `MemoryOutputPipe` fails writes once full, which makes a
//! chatty guest trap. This pipe keeps the first `capacity` bytes, silently
//! drops the rest while telling the guest every write succeeded, and records
//! that it truncated.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may hand over in one write call.
const WRITE_BUDGET: usize = 1 << 20;

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    capacity: usize,
    truncated: bool,
}

/// Shared handle: clones write into the same buffer.
#[derive(Clone, Debug)]
pub(crate) struct CappedPipe {
    shared: Arc<Mutex<Captured>>,
}

impl CappedPipe {
    pub(crate) fn new(capacity: usize) -> Self {
        CappedPipe {
            shared: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                capacity,
                truncated: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A panic while holding this lock cannot leave the buffer inconsistent.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn append(&self, data: &[u8]) {
        let mut captured = self.lock();
        let room = captured.capacity - captured.bytes.len();
        if data.len() > room {
            captured.truncated = true;
        }
        let keep = data.len().min(room);
        captured.bytes.extend_from_slice(&data[..keep]);
    }

    /// The captured bytes and whether anything was dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut captured = self.lock();
        (std::mem::take(&mut captured.bytes), captured.truncated)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_truncation() {
        let pipe = CappedPipe::new(10);
        let mut stream = pipe.p2_stream();
        stream.write(Bytes::from_static(b"hello ")).unwrap();
        stream
            .write(Bytes::from_static(b"world, and more"))
            .unwrap();
        // Writes keep succeeding after the cap.
        stream.write(Bytes::from_static(b"!")).unwrap();
        assert_eq!(stream.check_write().unwrap(), WRITE_BUDGET);
        let (bytes, truncated) = pipe.take();
        assert_eq!(bytes, b"hello worl");
        assert!(truncated);
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let pipe = CappedPipe::new(5);
        pipe.append(b"12345");
        assert_eq!(pipe.take(), (b"12345".to_vec(), false));
    }
}
