//! Size limits of what the Raft group carries.

/// The largest command the mesh proposes as one Raft log entry, encoded.
/// Entries travel inside AppendEntries requests over a transport whose
/// frames are capped at 16 MiB, and a follower must receive, fsync and
/// answer one within a heartbeat interval; a megabyte keeps both true on a
/// LAN. Larger payloads go to the blob store, or are split over entries.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// Stored log bytes one AppendEntries request carries, at most (one entry
/// always goes, so an entry up to [`MAX_ENTRY_BYTES`] is never stuck).
/// openraft's `max_payload_entries` counts entries, not bytes; the log
/// reader enforces this bound.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;
