//! Byte bounds hold on the wire and on disk: no Raft log entry is larger
//! than `MAX_ENTRY_BYTES`, no Raft RPC larger than one AppendEntries may be
//! (`MAX_APPEND_BYTES` of entries plus the entry that crosses it, plus the
//! envelope), and no request or response is over the transport's frame cap.

use coditect_consensus::{MAX_APPEND_BYTES, MAX_ENTRY_BYTES};

use super::{Checker, Final, First, Observation};

/// Room for what wraps the entries of an AppendEntries request (vote, log
/// ids, the RPC and node-request envelopes) or a snapshot chunk's metadata.
pub const RAFT_ENVELOPE_BYTES: usize = 64 * 1024;

/// See the module docs.
#[derive(Default)]
pub struct SizesWithinCaps {
    first: First,
}

impl Checker for SizesWithinCaps {
    fn name(&self) -> &'static str {
        "sizes_within_caps"
    }

    fn observe(&mut self, _observation: &Observation<'_>) {}

    fn finish(&mut self, end: &Final<'_>) {
        let (entry, disk) = &end.largest_log_entry;
        if *entry > MAX_ENTRY_BYTES {
            self.first.set(
                None,
                format!("{disk} stored a Raft entry of {entry} bytes, over the {MAX_ENTRY_BYTES}-byte cap"),
            );
        }
        let raft_cap = MAX_APPEND_BYTES + MAX_ENTRY_BYTES + RAFT_ENVELOPE_BYTES;
        let (raft, link) = &end.messages.raft;
        if *raft > raft_cap {
            self.first.set(
                None,
                format!("a Raft RPC of {raft} bytes ({link}), over the {raft_cap}-byte bound"),
            );
        }
        if let Some(over) = &end.messages.over_frame_cap {
            self.first.set(
                None,
                format!(
                    "{over}, over the {}-byte frame cap",
                    coditect_gossip::wire::MAX_FRAME_BYTES
                ),
            );
        }
    }

    fn violation(&self) -> Option<&str> {
        self.first.get()
    }
}
