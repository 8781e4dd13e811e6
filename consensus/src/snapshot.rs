//! Snapshots as a stream of bounded chunks kept in the store.
//!
//! A snapshot is the state column as of one applied index, written as
//! frames (`u32 key length | key | u32 value length | value`, little
//! endian, after a format line) into chunks of [`CHUNK_BYTES`] under the
//! meta column. Nothing ever holds a whole snapshot in memory: building
//! exports the state column entry by entry into chunks, openraft sends and
//! receives it through [`SnapshotData`] (which reads and writes one chunk
//! at a time), and installing replays the frames into the state column in
//! bounded batches. The codec's 64 MiB cap applies to each record, never to
//! the snapshot, so the state may grow far beyond it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::kv::{Column, KvError, KvOp, KvStore};

/// Bytes of one stored chunk (and of openraft's install requests).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The first bytes of every snapshot.
const FORMAT_LINE: &[u8] = b"coditect-snapshot/1\n";

/// A frame key length that marks the end of the snapshot.
const END: u32 = u32::MAX;

/// Prefix of chunk keys in the meta column.
pub(crate) const CHUNK_PREFIX: &[u8] = b"snapdata/";

/// The key of chunk `index` of the snapshot data named `name`.
fn chunk_key(name: &str, index: u64) -> Vec<u8> {
    let mut key = name_prefix(name);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Every chunk key of `name` starts with this.
pub(crate) fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = CHUNK_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

/// The keys after every chunk key of `name`.
pub(crate) fn name_end(name: &str) -> Vec<u8> {
    let mut key = CHUNK_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key.push(1);
    key
}

/// Deletes every chunk of `name`.
pub(crate) fn delete_op(name: &str) -> KvOp {
    KvOp::DeleteRange(Column::Meta, name_prefix(name), name_end(name))
}

/// A snapshot's bytes in the store, read and written one chunk at a time
/// through tokio's IO traits (openraft's `SnapshotData`).
pub struct SnapshotData {
    store: Arc<dyn KvStore>,
    name: String,
    len: u64,
    pos: u64,
    /// The chunk at hand: (index, bytes, changed since loaded).
    chunk: Option<(u64, Vec<u8>, bool)>,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

fn io_err(error: KvError) -> io::Error {
    io::Error::other(error.to_string())
}

impl SnapshotData {
    /// Empty data to be written under `name` (its old chunks removed).
    pub fn create(store: Arc<dyn KvStore>, name: String) -> Result<Self, KvError> {
        store.write(vec![delete_op(&name)], false)?;
        Ok(SnapshotData {
            store,
            name,
            len: 0,
            pos: 0,
            chunk: None,
        })
    }

    /// Stored data of `len` bytes under `name`, read from the start.
    pub fn open(store: Arc<dyn KvStore>, name: String, len: u64) -> Self {
        SnapshotData {
            store,
            name,
            len,
            pos: 0,
            chunk: None,
        }
    }

    /// Whether its chunks live in `store`.
    pub fn stored_in(&self, store: &Arc<dyn KvStore>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.store), Arc::as_ptr(store))
    }

    /// A copy of all its bytes in `store` under `name`, chunk by chunk.
    pub fn copy_to(&mut self, store: Arc<dyn KvStore>, name: String) -> Result<Self, KvError> {
        let mut copy = SnapshotData::create(store, name)?;
        self.pos = 0;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let n = self.read_some(&mut buffer)?;
            if n == 0 {
                break;
            }
            copy.write_whole(&buffer[..n])?;
        }
        copy.flush_chunk()?;
        Ok(copy)
    }

    /// Its name in the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its length, bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the chunk at hand back if it changed (not synced: the write
    /// that records the snapshot is durable, and syncs this with it).
    pub fn flush_chunk(&mut self) -> Result<(), KvError> {
        if let Some((index, bytes, changed)) = &mut self.chunk {
            if *changed {
                self.store.write(
                    vec![KvOp::Put(
                        Column::Meta,
                        chunk_key(&self.name, *index),
                        bytes.clone(),
                    )],
                    false,
                )?;
                *changed = false;
            }
        }
        Ok(())
    }

    fn load(&mut self, index: u64) -> Result<&mut Vec<u8>, KvError> {
        if self.chunk.as_ref().map(|(i, _, _)| *i) != Some(index) {
            self.flush_chunk()?;
            let bytes = self
                .store
                .get(Column::Meta, &chunk_key(&self.name, index))?
                .unwrap_or_default();
            self.chunk = Some((index, bytes, false));
        }
        Ok(&mut self.chunk.as_mut().expect("a chunk was just loaded").1)
    }

    /// Reads into `out` from the current position; 0 at the end.
    pub fn read_some(&mut self, out: &mut [u8]) -> Result<usize, KvError> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let index = self.pos / CHUNK_BYTES as u64;
        let offset = (self.pos % CHUNK_BYTES as u64) as usize;
        let available = (self.len - self.pos).min((CHUNK_BYTES - offset) as u64) as usize;
        let chunk = self.load(index)?;
        if chunk.len() < offset + available {
            return Err(KvError::Io {
                operation: "snapshot read",
                message: format!(
                    "chunk {index} holds {} bytes, fewer than recorded",
                    chunk.len()
                ),
            });
        }
        let n = available.min(out.len());
        out[..n].copy_from_slice(&chunk[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes `bytes` at the current position; returns how many were taken.
    pub fn write_some(&mut self, bytes: &[u8]) -> Result<usize, KvError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        let index = self.pos / CHUNK_BYTES as u64;
        let offset = (self.pos % CHUNK_BYTES as u64) as usize;
        let n = bytes.len().min(CHUNK_BYTES - offset);
        let chunk = self.load(index)?;
        if chunk.len() < offset + n {
            chunk.resize(offset + n, 0);
        }
        chunk[offset..offset + n].copy_from_slice(&bytes[..n]);
        if let Some((_, _, changed)) = &mut self.chunk {
            *changed = true;
        }
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        Ok(n)
    }

    fn write_whole(&mut self, mut bytes: &[u8]) -> Result<(), KvError> {
        while !bytes.is_empty() {
            let n = self.write_some(bytes)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn read_whole(&mut self, mut out: &mut [u8]) -> Result<bool, KvError> {
        while !out.is_empty() {
            let n = self.read_some(out)?;
            if n == 0 {
                return Ok(false);
            }
            out = &mut out[n..];
        }
        Ok(true)
    }
}

/// Writes a snapshot's frames.
pub struct FrameWriter {
    data: SnapshotData,
}

impl FrameWriter {
    /// Starts the snapshot data `name`.
    pub fn new(store: Arc<dyn KvStore>, name: String) -> Result<Self, KvError> {
        let mut data = SnapshotData::create(store, name)?;
        data.write_whole(FORMAT_LINE)?;
        Ok(FrameWriter { data })
    }

    /// Appends one entry.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let too_long = |what: &str, len: usize| KvError::Io {
            operation: "snapshot write",
            message: format!("a {what} of {len} bytes does not fit a frame"),
        };
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|len| *len != END)
            .ok_or_else(|| too_long("key", key.len()))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long("value", value.len()))?;
        self.data.write_whole(&key_len.to_le_bytes())?;
        self.data.write_whole(key)?;
        self.data.write_whole(&value_len.to_le_bytes())?;
        self.data.write_whole(value)
    }

    /// Ends the snapshot; returns its data (flushed) for reading.
    pub fn finish(mut self) -> Result<SnapshotData, KvError> {
        self.data.write_whole(&END.to_le_bytes())?;
        self.data.flush_chunk()?;
        let data = &self.data;
        Ok(SnapshotData::open(
            data.store.clone(),
            data.name.clone(),
            data.len,
        ))
    }
}

/// Largest key or value a frame may carry (the codec's cap per record).
const MAX_FRAME_PART: u32 = coditect_memory::codec::MAX_ENCODED_BYTES as u32;

/// Reads a snapshot's frames from the start, handing each entry to `sink`.
/// Refuses data that is not a complete snapshot of this format.
pub fn read_frames(
    data: &mut SnapshotData,
    sink: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), KvError>,
) -> Result<(), KvError> {
    let bad = |message: String| KvError::Io {
        operation: "snapshot read",
        message,
    };
    data.pos = 0;
    let mut line = vec![0u8; FORMAT_LINE.len()];
    if !data.read_whole(&mut line)? || line != FORMAT_LINE {
        return Err(bad("not a coditect snapshot (format line missing)".into()));
    }
    let mut word = [0u8; 4];
    loop {
        if !data.read_whole(&mut word)? {
            return Err(bad("the snapshot ends without its end mark".into()));
        }
        let key_len = u32::from_le_bytes(word);
        if key_len == END {
            return Ok(());
        }
        if key_len > MAX_FRAME_PART {
            return Err(bad(format!("a key of {key_len} bytes is over the cap")));
        }
        let mut key = vec![0u8; key_len as usize];
        if !data.read_whole(&mut key)? || !data.read_whole(&mut word)? {
            return Err(bad("the snapshot ends inside a frame".into()));
        }
        let value_len = u32::from_le_bytes(word);
        if value_len > MAX_FRAME_PART {
            return Err(bad(format!("a value of {value_len} bytes is over the cap")));
        }
        let mut value = vec![0u8; value_len as usize];
        if !data.read_whole(&mut value)? {
            return Err(bad("the snapshot ends inside a frame".into()));
        }
        sink(key, value)?;
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let out = buf.initialize_unfilled();
        let n = self.read_some(out).map_err(io_err)?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.write_some(bytes).map_err(io_err))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.flush_chunk().map_err(io_err))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.flush_chunk().map_err(io_err))
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let target = match position {
            io::SeekFrom::Start(offset) => Some(offset),
            io::SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            io::SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    fn entries(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..count)
            .map(|i| {
                let key = format!("task/m1\0t{i:06}").into_bytes();
                // Values of varied sizes, some crossing chunk boundaries.
                let value = vec![(i % 251) as u8; (i * 7919) % 300_000];
                (key, value)
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_across_many_chunks() {
        let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let written = entries(64);
        let mut writer = FrameWriter::new(store.clone(), "s1".into()).unwrap();
        for (key, value) in &written {
            writer.entry(key, value).unwrap();
        }
        let mut data = writer.finish().unwrap();
        assert!(data.len() > 4 * CHUNK_BYTES as u64, "{}", data.len());
        let mut read = Vec::new();
        read_frames(&mut data, &mut |key, value| {
            read.push((key, value));
            Ok(())
        })
        .unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn truncated_or_foreign_data_is_refused() {
        let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let mut writer = FrameWriter::new(store.clone(), "s1".into()).unwrap();
        writer.entry(b"node/1", b"x").unwrap();
        let full = writer.finish().unwrap();
        // The same bytes without the end mark.
        let mut short = SnapshotData::open(store.clone(), "s1".into(), full.len() - 4);
        let error = read_frames(&mut short, &mut |_, _| Ok(())).unwrap_err();
        assert!(error.to_string().contains("end mark"), "{error}");
        let mut other = SnapshotData::create(store.clone(), "s2".into()).unwrap();
        other.write_some(b"hello world, not a snapshot").unwrap();
        other.flush_chunk().unwrap();
        let error = read_frames(&mut other, &mut |_, _| Ok(())).unwrap_err();
        assert!(error.to_string().contains("format line"), "{error}");
    }

    #[test]
    fn data_copied_through_the_io_traits_is_the_same() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store: Arc<dyn KvStore> = Arc::new(MemKv::new());
            let mut writer = FrameWriter::new(store.clone(), "a".into()).unwrap();
            for (key, value) in entries(20) {
                writer.entry(&key, &value).unwrap();
            }
            let mut source = writer.finish().unwrap();
            // As openraft receives it: chunks written at their offsets.
            let mut copy = SnapshotData::create(store.clone(), "b".into()).unwrap();
            let mut offset = 0u64;
            let mut buffer = vec![0u8; 300_000];
            loop {
                let n = source.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                copy.seek(io::SeekFrom::Start(offset)).await.unwrap();
                copy.write_all(&buffer[..n]).await.unwrap();
                offset += n as u64;
            }
            copy.shutdown().await.unwrap();
            assert_eq!(copy.len(), source.len());
            let mut a = Vec::new();
            let mut b = Vec::new();
            read_frames(&mut source, &mut |k, v| {
                a.push((k, v));
                Ok(())
            })
            .unwrap();
            read_frames(&mut copy, &mut |k, v| {
                b.push((k, v));
                Ok(())
            })
            .unwrap();
            assert_eq!(a, b);
            assert_eq!(a.len(), 20);
        });
    }
}
