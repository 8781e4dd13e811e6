//! Whether this node's Raft core still runs.
//!
//! openraft stops its core for good on a storage error (a log append that
//! fails on a full disk surfaces as `Fatal::StorageError`) or on a panic, and
//! the process lives on around a dead core: it would keep answering HTTP and
//! heartbeating while never voting or applying again. The node checks this on
//! every tick (`Node::fatal` in the runtime), takes itself out of the mesh,
//! and production exits non-zero so a supervisor restarts it; the simulation
//! sees the same signal through the same method.

use coditect_consensus::{MeshNode, NodeId};
use openraft::error::Fatal;
use openraft::RaftMetrics;
use tokio::sync::watch;

/// Why the Raft core behind `metrics` stopped, or `None` while it runs.
///
/// The core reports how it ended in `running_state`; a core that panicked
/// reports nothing, but its task drops the sending side of the channel, so
/// a closed channel means a dead core too.
pub fn raft_core_failure(
    metrics: &watch::Receiver<RaftMetrics<NodeId, MeshNode>>,
) -> Option<String> {
    match &metrics.borrow().running_state {
        Ok(()) => {}
        Err(Fatal::Stopped) => return Some("the Raft core stopped".into()),
        Err(Fatal::Panicked) => return Some("the Raft core panicked".into()),
        Err(Fatal::StorageError(error)) => {
            return Some(format!("the Raft core stopped on a storage error: {error}"))
        }
    }
    metrics
        .has_changed()
        .is_err()
        .then(|| "the Raft core ended without a reason (it panicked)".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use coditect_consensus::kv::{KvStore, MemKv};
    use coditect_consensus::network::{RaftTransport, TransportError};
    use coditect_consensus::runtime::RaftContext;
    use coditect_consensus::{Command, RaftTiming};
    use futures::future::BoxFuture;
    use futures::FutureExt;

    use super::*;

    /// A mesh of one never sends a Raft RPC.
    struct Nowhere;

    impl RaftTransport for Nowhere {
        fn call(
            &self,
            _target: NodeId,
            _node: &MeshNode,
            _payload: Vec<u8>,
            _deadline: Duration,
        ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
            async { Err(TransportError::Unreachable("a mesh of one".into())) }.boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_disk_is_reported_as_a_dead_core() {
        let disk = MemKv::new();
        let store: Arc<dyn KvStore> = Arc::new(disk.clone());
        let (raft, _state) = coditect_consensus::start_raft(
            1,
            &RaftTiming::default(),
            store,
            Arc::new(Nowhere),
            RaftContext::seeded(7),
        )
        .await
        .unwrap();
        let member = MeshNode {
            peer_id: "only".into(),
            addrs: Vec::new(),
        };
        raft.initialize(BTreeMap::from([(1, member)]))
            .await
            .unwrap();
        raft.wait(Some(Duration::from_secs(30)))
            .current_leader(1, "the single voter leads")
            .await
            .unwrap();
        assert_eq!(raft_core_failure(&raft.metrics()), None);

        disk.fail_writes(Some("No space left on device (os error 28)".into()));
        let write = Command::Heartbeats {
            at_ms: 1,
            nodes: Vec::new(),
        };
        assert!(raft.client_write(write).await.is_err());
        let reason = raft_core_failure(&raft.metrics()).expect("the core is dead");
        assert!(reason.contains("No space left on device"), "{reason}");
    }

    #[tokio::test]
    async fn a_closed_metrics_channel_is_a_dead_core() {
        let (sender, metrics) = watch::channel(RaftMetrics::<NodeId, MeshNode>::new_initial(1));
        assert_eq!(raft_core_failure(&metrics), None);
        drop(sender);
        let reason = raft_core_failure(&metrics).expect("a closed channel");
        assert!(reason.contains("panicked"), "{reason}");
    }
}
