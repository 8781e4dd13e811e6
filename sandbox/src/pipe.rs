//! Capped output pipes for guest stdout and stderr.
//!
//! wasmtime-wasi's `MemoryOutputPipe` fails writes once full, which makes a
//! chatty guest trap. These pipes keep the first `capacity` bytes, silently
//! drop the rest while telling the guest every write succeeded, and record
//! that they truncated.
//!
//! Of what a pipe keeps, at most `memory_bytes` stay in memory (the head). A
//! spilling pipe ([`CappedPipe::spilling`], used for task stdout) writes the
//! bytes past the head to an unnamed temporary file in a directory the task
//! names, so a guest printing its whole `output_mb` (up to 1 GiB) costs the
//! node disk, not memory. The file has no name (or loses it at once), so it
//! disappears when its last handle closes, whatever happens to the run.
//! Spill writes happen on the guest's thread, which may block (guests never
//! run on the node's async runtime). A spill that cannot be created or
//! written is logged and treated as truncation: the guest is not stopped,
//! and the bytes written until then stay readable.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may hand over in one write call.
const WRITE_BUDGET: usize = 1 << 20;

/// Spilled bytes are gathered up to this size before one write to the file,
/// so a guest printing line by line does not cost a system call per line.
const SPILL_CHUNK_BYTES: usize = 64 << 10;

/// What a pipe kept, once the guest is done with it.
#[derive(Debug)]
pub(crate) struct Taken {
    /// The first bytes, at most the pipe's `memory_bytes`.
    pub(crate) head: Vec<u8>,
    /// The bytes after the head: the spill file (positioned anywhere) and
    /// how many of its bytes are valid, when anything was spilled.
    pub(crate) spill: Option<(File, u64)>,
    /// Something was dropped: past the cap, or because spilling failed.
    pub(crate) truncated: bool,
}

/// The bytes past the head, on their way to an unnamed file.
#[derive(Debug)]
struct Spill {
    /// Where the file is created, on the first byte past the head.
    dir: PathBuf,
    file: Option<File>,
    /// Bytes not yet written to the file; never more than `SPILL_CHUNK_BYTES`.
    pending: Vec<u8>,
    /// Bytes the file holds for certain; a failed write may leave more
    /// behind, which readers must ignore.
    written: u64,
    /// A create or write failed: nothing more is spilled.
    failed: bool,
}

impl Spill {
    fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            file: None,
            pending: Vec::new(),
            written: 0,
            failed: false,
        }
    }

    /// Queues `bytes` for the file; false if they were lost.
    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.failed {
            return false;
        }
        if self.pending.len() + bytes.len() > SPILL_CHUNK_BYTES && !self.flush() {
            return false;
        }
        if bytes.len() >= SPILL_CHUNK_BYTES {
            return self.write(bytes);
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(SPILL_CHUNK_BYTES);
        }
        self.pending.extend_from_slice(bytes);
        true
    }

    /// Writes what is pending; false if it was lost.
    fn flush(&mut self) -> bool {
        if self.failed {
            return false;
        }
        if self.pending.is_empty() {
            return true;
        }
        let pending = std::mem::take(&mut self.pending);
        let written = self.write(&pending);
        if !self.failed {
            self.pending = pending;
            self.pending.clear();
        }
        written
    }

    fn write(&mut self, bytes: &[u8]) -> bool {
        let file = match &mut self.file {
            Some(file) => file,
            None => match tempfile::tempfile_in(&self.dir) {
                Ok(file) => self.file.insert(file),
                Err(error) => return self.fail("create", &error),
            },
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.written += bytes.len() as u64;
                true
            }
            Err(error) => self.fail("write", &error),
        }
    }

    fn fail(&mut self, action: &str, error: &io::Error) -> bool {
        // The directory is the node's, so it is not named: only the error kind.
        tracing::warn!(
            %error,
            spilled_bytes = self.written,
            "could not {action} the spill file of guest stdout; dropping the rest as truncated"
        );
        self.failed = true;
        self.pending = Vec::new();
        false
    }
}

#[derive(Debug)]
struct Captured {
    head: Vec<u8>,
    memory_bytes: usize,
    capacity: usize,
    /// Bytes accepted so far, in the head and the spill.
    kept: usize,
    spill: Option<Spill>,
    truncated: bool,
}

impl Captured {
    fn append(&mut self, data: &[u8]) {
        let room = self.capacity - self.kept;
        if data.len() > room {
            self.truncated = true;
        }
        let data = &data[..data.len().min(room)];
        let to_head = data.len().min(self.memory_bytes - self.head.len());
        self.reserve_head(to_head);
        self.head.extend_from_slice(&data[..to_head]);
        self.kept += to_head;
        let rest = &data[to_head..];
        if rest.is_empty() {
            return;
        }
        if self.spill.as_mut().is_some_and(|spill| spill.push(rest)) {
            self.kept += rest.len();
        } else {
            self.truncated = true;
        }
    }

    /// Grows the head for `more` bytes, doubling as a `Vec` would but never
    /// past `memory_bytes`, so the head's allocation is bounded by it.
    fn reserve_head(&mut self, more: usize) {
        let needed = self.head.len() + more;
        if needed > self.head.capacity() {
            let target = needed.max(self.head.capacity() * 2).min(self.memory_bytes);
            self.head.reserve_exact(target - self.head.len());
        }
    }
}

/// Shared handle: clones write into the same buffer.
#[derive(Clone, Debug)]
pub(crate) struct CappedPipe {
    shared: Arc<Mutex<Captured>>,
}

impl CappedPipe {
    /// A pipe that keeps its first `capacity` bytes in memory.
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with(capacity, capacity, None)
    }

    /// A pipe that keeps its first `capacity` bytes, at most `memory_bytes`
    /// of them in memory and the rest in an unnamed file created in `dir`.
    pub(crate) fn spilling(capacity: usize, memory_bytes: usize, dir: PathBuf) -> Self {
        Self::with(capacity, memory_bytes.min(capacity), Some(Spill::new(dir)))
    }

    fn with(capacity: usize, memory_bytes: usize, spill: Option<Spill>) -> Self {
        CappedPipe {
            shared: Arc::new(Mutex::new(Captured {
                head: Vec::new(),
                memory_bytes,
                capacity,
                kept: 0,
                spill,
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
        self.lock().append(data);
    }

    /// What was kept; the pipe is left empty.
    pub(crate) fn take(&self) -> Taken {
        let mut captured = self.lock();
        let mut truncated = captured.truncated;
        let spill = captured.spill.as_mut().and_then(|spill| {
            truncated |= !spill.flush();
            let written = spill.written;
            spill.file.take().map(|file| (file, written))
        });
        Taken {
            head: std::mem::take(&mut captured.head),
            spill,
            truncated,
        }
    }

    /// Bytes of memory the pipe holds for captured output right now.
    #[cfg(test)]
    fn memory_held(&self) -> usize {
        let captured = self.lock();
        captured.head.capacity() + captured.spill.as_ref().map_or(0, |s| s.pending.capacity())
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
    use std::io::{Read as _, Seek as _, SeekFrom};

    use super::*;

    /// Every byte a pipe kept, head then spill (only its valid length).
    fn all_bytes(taken: Taken) -> Vec<u8> {
        let mut bytes = taken.head;
        if let Some((mut file, len)) = taken.spill {
            file.seek(SeekFrom::Start(0)).unwrap();
            file.take(len).read_to_end(&mut bytes).unwrap();
        }
        bytes
    }

    /// Bytes that differ from position to position, so a lost, doubled or
    /// reordered chunk shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

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
        let taken = pipe.take();
        assert_eq!(taken.head, b"hello worl");
        assert!(taken.truncated);
        assert!(taken.spill.is_none());
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let pipe = CappedPipe::new(5);
        pipe.append(b"12345");
        let taken = pipe.take();
        assert_eq!((taken.head, taken.truncated), (b"12345".to_vec(), false));
    }

    #[test]
    fn output_under_the_memory_buffer_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = CappedPipe::spilling(1000, 100, dir.path().join("absent"));
        pipe.append(b"0123456789");
        pipe.append(&[b'x'; 90]);
        let taken = pipe.take();
        assert_eq!(taken.head.len(), 100);
        assert!(taken.head.starts_with(b"0123456789"));
        // The spill directory does not even exist: creating a file would fail.
        assert!(taken.spill.is_none(), "nothing spilled, no file");
        assert!(!taken.truncated);
    }

    #[test]
    fn bytes_past_the_buffer_spill_to_a_file_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let memory = 1000;
        let pipe = CappedPipe::spilling(1 << 30, memory, dir.path().to_path_buf());
        let expected = pattern(3 * SPILL_CHUNK_BYTES + 12_345);
        // Writes of every size: tiny ones gathered, large ones written through,
        // one straddling the head's end.
        let sizes = [
            1,
            10,
            999,
            7,
            SPILL_CHUNK_BYTES + 3,
            4096,
            2 * SPILL_CHUNK_BYTES,
        ];
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == expected.len() {
                break;
            }
            let end = (at + size).min(expected.len());
            pipe.append(&expected[at..end]);
            at = end;
            assert!(
                pipe.memory_held() <= memory + SPILL_CHUNK_BYTES,
                "{} bytes in memory",
                pipe.memory_held()
            );
        }
        // The file has no name: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let taken = pipe.take();
        assert_eq!(taken.head.len(), memory);
        assert!(taken.head.capacity() <= memory);
        let (_, spilled) = taken.spill.as_ref().expect("spilled");
        assert_eq!(*spilled, (expected.len() - memory) as u64);
        assert!(!taken.truncated);
        assert_eq!(all_bytes(taken), expected);
    }

    #[test]
    fn the_cap_covers_head_and_spill_together() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = CappedPipe::spilling(250, 100, dir.path().to_path_buf());
        let expected = pattern(400);
        pipe.append(&expected[..60]);
        pipe.append(&expected[60..240]);
        assert!(!pipe.truncated_so_far());
        pipe.append(&expected[240..300]);
        pipe.append(&expected[300..]);
        let taken = pipe.take();
        assert!(taken.truncated);
        assert_eq!(taken.head, &expected[..100]);
        assert_eq!(taken.spill.as_ref().map(|(_, len)| *len), Some(150));
        assert_eq!(all_bytes(taken), &expected[..250]);
    }

    #[test]
    fn a_spill_that_cannot_be_created_is_truncation_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = CappedPipe::spilling(1000, 10, dir.path().join("missing"));
        let mut stream = pipe.p2_stream();
        stream
            .write(Bytes::from(pattern(SPILL_CHUNK_BYTES + 50)))
            .unwrap();
        stream.write(Bytes::from_static(b"more")).unwrap();
        let taken = pipe.take();
        assert!(taken.truncated);
        assert_eq!(taken.head, &pattern(10)[..]);
        assert!(taken.spill.is_none());
    }

    #[test]
    fn a_failed_flush_at_the_end_keeps_what_was_written_and_flags_it() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = CappedPipe::spilling(1 << 20, 10, dir.path().to_path_buf());
        let expected = pattern(10 + SPILL_CHUNK_BYTES + 20);
        // A full chunk is written through; the last 20 bytes wait in memory.
        pipe.append(&expected[..10 + SPILL_CHUNK_BYTES]);
        pipe.append(&expected[10 + SPILL_CHUNK_BYTES..]);
        {
            // Replace the spill file by a read-only handle: the pending 20
            // bytes cannot be written.
            let mut captured = pipe.lock();
            let spill = captured.spill.as_mut().unwrap();
            assert_eq!(spill.written, SPILL_CHUNK_BYTES as u64);
            let mut file = spill.file.take().unwrap();
            file.seek(SeekFrom::Start(0)).unwrap();
            let path = dir.path().join("copy");
            std::io::copy(&mut file, &mut File::create(&path).unwrap()).unwrap();
            spill.file = Some(File::open(&path).unwrap());
        }
        let taken = pipe.take();
        assert!(taken.truncated);
        assert_eq!(
            all_bytes(taken),
            &expected[..10 + SPILL_CHUNK_BYTES],
            "the bytes written before the failure stay readable"
        );
    }

    impl CappedPipe {
        fn truncated_so_far(&self) -> bool {
            self.lock().truncated
        }
    }
}
