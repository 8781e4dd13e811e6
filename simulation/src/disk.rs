//! The simulated disk: `MemKv` (unsynced writes lost on a crash, writes
//! that fail on demand) behind the storage seam, plus a modelled device
//! time per write on the virtual clock (a flush cost, jitter drawn from a
//! seeded RNG, and a bandwidth), which the Raft log and state machine wait
//! out through `KvStore::device_time`. It also records the largest Raft
//! log entry ever written, for the size checker.
#![allow(clippy::disallowed_methods)] // the simulated storage seam owns its timers

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coditect_consensus::kv::{Column, ExportSink, KvEntry, KvError, KvOp, KvStore, MemKv};
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How fast a simulated disk is. The default is instant (no device time),
/// which every scenario but `disk` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskModel {
    /// Time of one flush to stable storage (a durable write), microseconds.
    pub flush_us: u64,
    /// Up to this much more per flush, drawn per write, microseconds.
    pub jitter_us: u64,
    /// Write bandwidth in bytes per millisecond (0: unbounded).
    pub bytes_per_ms: u64,
}

impl DiskModel {
    /// Whether writes take no device time at all.
    pub fn is_instant(&self) -> bool {
        self.flush_us == 0 && self.jitter_us == 0 && self.bytes_per_ms == 0
    }
}

struct DiskState {
    model: DiskModel,
    /// Extra flush time while a stall lasts, microseconds.
    stall_us: u64,
    rng: ChaCha8Rng,
    /// Encoded bytes of the largest Raft log entry written.
    largest_log_entry: usize,
    /// Whether writes are refused now.
    failing: bool,
}

/// One node's disk; clones share it (the harness keeps one, the node's
/// Raft store another, as a machine and its processes share a disk).
#[derive(Clone)]
pub struct SimDisk {
    kv: MemKv,
    state: Arc<Mutex<DiskState>>,
}

impl SimDisk {
    /// An empty disk performing as `model`, its jitter drawn from `seed`.
    pub fn new(model: DiskModel, seed: u64) -> SimDisk {
        SimDisk {
            kv: MemKv::new(),
            state: Arc::new(Mutex::new(DiskState {
                model,
                stall_us: 0,
                rng: ChaCha8Rng::seed_from_u64(seed),
                largest_log_entry: 0,
                failing: false,
            })),
        }
    }

    /// The store underneath (crashes, failing writes, injected bugs).
    pub fn kv(&self) -> &MemKv {
        &self.kv
    }

    /// Makes every write fail with `message` (a full or broken disk), or,
    /// with `None`, succeed again.
    pub fn fail_writes(&self, message: Option<String>) {
        self.lock().failing = message.is_some();
        self.kv.fail_writes(message);
    }

    /// Whether it refuses writes now.
    pub fn is_failing(&self) -> bool {
        self.lock().failing
    }

    /// Adds `extra_ms` to every flush until called again with 0 (a disk
    /// stall: a firmware hiccup, a neighbour saturating the device).
    pub fn stall(&self, extra_ms: u64) {
        self.lock().stall_us = extra_ms * 1_000;
    }

    /// Encoded bytes of the largest Raft log entry ever written to it.
    pub fn largest_log_entry(&self) -> usize {
        self.lock().largest_log_entry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().expect("sim disk lock")
    }
}

impl KvStore for SimDisk {
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.get(column, key)
    }

    fn range_bounded(
        &self,
        column: Column,
        from: &[u8],
        to: &[u8],
        max_bytes: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        self.kv.range_bounded(column, from, to, max_bytes)
    }

    fn last(&self, column: Column) -> Result<Option<KvEntry>, KvError> {
        self.kv.last(column)
    }

    fn export(
        &self,
        column: Column,
        meta_key: &[u8],
        sink: &mut ExportSink<'_>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.export(column, meta_key, sink)
    }

    fn write(&self, ops: Vec<KvOp>, durable: bool) -> Result<(), KvError> {
        let largest = ops
            .iter()
            .filter_map(|op| match op {
                KvOp::Put(Column::Log, _, value) => Some(value.len()),
                _ => None,
            })
            .max();
        self.kv.write(ops, durable)?;
        if let Some(largest) = largest {
            let mut state = self.lock();
            state.largest_log_entry = state.largest_log_entry.max(largest);
        }
        Ok(())
    }

    fn device_time(&self, bytes: usize, durable: bool) -> Option<BoxFuture<'static, ()>> {
        let micros = {
            let mut state = self.lock();
            let model = state.model;
            if model.is_instant() && state.stall_us == 0 {
                return None;
            }
            let transfer = (bytes as u64 * 1_000)
                .checked_div(model.bytes_per_ms)
                .unwrap_or(0);
            let flush = if durable {
                let jitter = if model.jitter_us == 0 {
                    0
                } else {
                    state.rng.next_u64() % (model.jitter_us + 1)
                };
                model.flush_us + jitter + state.stall_us
            } else {
                0
            };
            transfer + flush
        };
        (micros > 0).then(|| tokio::time::sleep(Duration::from_micros(micros)).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_device_time_on_the_virtual_clock() {
        crate::runtime(1).unwrap().block_on(async {
            let instant = SimDisk::new(DiskModel::default(), 1);
            assert!(instant.device_time(1 << 20, true).is_none());
            let model = DiskModel {
                flush_us: 10_000,
                jitter_us: 0,
                bytes_per_ms: 1024 * 1024,
            };
            let disk = SimDisk::new(model, 1);
            let started = tokio::time::Instant::now();
            disk.device_time(1 << 20, true).unwrap().await;
            assert_eq!(started.elapsed(), Duration::from_millis(11));
            disk.stall(100);
            let started = tokio::time::Instant::now();
            disk.device_time(0, true).unwrap().await;
            assert_eq!(started.elapsed(), Duration::from_millis(110));
            // Unsynced writes pay the transfer only.
            let started = tokio::time::Instant::now();
            disk.device_time(1 << 20, false).unwrap().await;
            assert_eq!(started.elapsed(), Duration::from_millis(1));
        });
    }

    #[test]
    fn the_largest_log_entry_is_recorded_and_failures_pass_through() {
        let disk = SimDisk::new(DiskModel::default(), 1);
        disk.write(
            vec![
                KvOp::Put(Column::Log, vec![1], vec![0; 300]),
                KvOp::Put(Column::State, vec![1], vec![0; 5_000]),
            ],
            true,
        )
        .unwrap();
        assert_eq!(disk.largest_log_entry(), 300);
        disk.fail_writes(Some("No space left on device".into()));
        assert!(disk.is_failing());
        let refused = disk.write(vec![KvOp::Put(Column::Log, vec![2], vec![0; 900])], true);
        assert!(refused.is_err());
        assert_eq!(
            disk.largest_log_entry(),
            300,
            "a refused write stored nothing"
        );
        disk.fail_writes(None);
        assert!(!disk.is_failing());
        assert_eq!(
            disk.get(Column::Log, &[1]).unwrap().map(|v| v.len()),
            Some(300)
        );
    }
}
