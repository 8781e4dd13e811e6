//! The protocol: everything nodes say to each other. Every request and its
//! response ([`NodeRequest`], [`NodeResponse`]), the payloads they carry (an
//! [`Assignment`] to run, the [`Report`] of how a run ended, blob hints),
//! the typed error a forwarded request keeps ([`SubmitError`]), and the
//! gossip adverts. All of it is encoded by `coditect_memory::codec`.

use coditect_consensus::mission::{TaskResult, TaskSubmission, ViolationRecord};
use coditect_consensus::{Capabilities, Load, NodeId, NodeRecord};
use coditect_memory::tree::FileChange;
use serde::{Deserialize, Serialize};

use crate::scheduler::{Blame, StealRequest, TaskId, Violation, ViolationKind};

/// A dependency's committed outputs: its task id and (path, digest, size) per file.
pub type DependencyOutputs = (String, Vec<(String, String, u64)>);

/// A peer that may hold blobs a task needs: (peer id, addresses).
pub type BlobHint = (String, Vec<String>);

/// One task to run, as the leader assigned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Mission id.
    pub mission: String,
    /// The task.
    pub task: TaskSubmission,
    /// The attempt (fencing token) it was assigned at.
    pub attempt: u32,
    /// Each dependency's committed outputs: (task id, [(path, digest, size)]).
    pub deps: Vec<DependencyOutputs>,
    /// The net changes of the task's dependencies to its workspace, in the
    /// order to apply them (see `coditect_consensus::workspace::collapse`).
    #[serde(default)]
    pub workspace_changes: Vec<FileChange>,
    /// When the task became ready (older first among equal priorities).
    pub ready_seq: u64,
    /// Peers to ask first for its blobs: the leader, the dependencies' producers.
    pub sources: Vec<BlobHint>,
    /// Nodes it failed on for node-specific reasons (thieves among them leave it).
    #[serde(default)]
    pub avoid: Vec<NodeId>,
    /// How the task's previous run failed, if one did: (attempt, violation
    /// kind, detail). An agent reads it as `/input/.coditect/retry.json`.
    #[serde(default)]
    pub previous: Option<(u32, String, String)>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// The run met every expectation.
    Succeeded(TaskResult),
    /// It did not; `blame` says whether to avoid this node on retry.
    Violated {
        /// What happened.
        violation: ViolationRecord,
        /// Its category.
        kind: ViolationKind,
        /// Whose fault it was.
        blame: Blame,
    },
}

impl Report {
    /// A violation of `kind` in `attempt` on `node`.
    pub fn violated(node: NodeId, attempt: u32, kind: ViolationKind, detail: &str) -> Report {
        let violation = Violation::new(kind, detail);
        Report::Violated {
            blame: kind.blame(),
            kind,
            violation: ViolationRecord {
                llm_calls: Vec::new(),
                attempt,
                node,
                kind: kind.as_str().to_string(),
                detail: violation.detail,
                outputs: Vec::new(),
            },
        }
    }
}

/// A task a node holds at one attempt (its fencing token).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Held {
    /// Which task.
    pub id: TaskId,
    /// The attempt it holds it at.
    pub attempt: u32,
}

/// A queued, not yet started task, as adverts show it to would-be thieves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedTask {
    /// Which task.
    pub id: TaskId,
    /// 0 (P0) .. 3.
    pub priority: u8,
    /// Age rank.
    pub ready_seq: u64,
    /// Capabilities it needs.
    pub requires: Vec<String>,
    /// Nodes that must not take it (it failed there for node-specific reasons).
    pub avoid: Vec<NodeId>,
}

/// What a user asks of a mission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissionAction {
    /// Stop it: queued tasks dropped, running ones interrupted.
    Cancel,
    /// Re-run its failed and blocked tasks.
    Retry,
}

/// The most time the leader gives one forwarded submission (fetching its
/// blobs, staging and committing it) before it answers 504.
pub const MAX_LEADER_SUBMIT_BUDGET: std::time::Duration = std::time::Duration::from_secs(120);

/// A node-to-node request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeRequest {
    /// An encoded Raft RPC for the receiver's Raft node.
    Raft(Vec<u8>),
    /// Register (or refresh) the sender in the registry; sent to the leader.
    Join(Box<NodeRecord>),
    /// Liveness and load; sent to the leader every heartbeat period.
    Heartbeat {
        /// The sender.
        node_id: NodeId,
        /// Its load.
        load: Load,
        /// Every task it holds (queued, running, or reporting).
        holding: Vec<Held>,
        /// The ones among them running now.
        running: Vec<Held>,
        /// The tasks beyond its slots it asks to hold (its queue window).
        window: Option<u32>,
        /// The stamp of the admission view it holds (the answer carries a
        /// newer one when this differs).
        admission: (u64, u64),
    },
    /// A new mission, validated and with every blob on the sender; to the leader.
    Submit {
        /// Its name.
        name: String,
        /// Its tasks.
        tasks: Vec<TaskSubmission>,
        /// The client's `Idempotency-Key`, if it sent one.
        idempotency_key: Option<String>,
        /// The mission's `max_fix_rounds`, if it names one.
        #[serde(default)]
        max_fix_rounds: Option<u32>,
        /// How long the leader may take before it answers (the sender waits
        /// a little longer), ms.
        budget_ms: u64,
    },
    /// One task's committed result, as the leader's state holds it (a
    /// node outside Raft reading a task's output; never the whole mission,
    /// which can outgrow a frame).
    GetTaskResult {
        /// Mission id.
        mission: String,
        /// Task name.
        task: String,
    },
    /// A page of mission summaries (see `Node::missions_page`).
    ListMissions {
        /// Missions numbered after this one.
        after: u64,
        /// At most this many.
        limit: u32,
    },
    /// One mission's view (JSON) from the leader's cache, for a node outside Raft.
    GetMissionView {
        /// Mission id.
        id: String,
        /// With the task list.
        with_tasks: bool,
        /// The version the asker has: answered without a body if unchanged.
        known: Option<String>,
        /// First byte wanted: a large view travels in parts under the frame cap.
        offset: u64,
    },
    /// Cancel or retry a mission; to the leader.
    Control {
        /// Mission id.
        mission: String,
        /// What to do.
        action: MissionAction,
    },
    /// Tasks the leader assigned to the receiver.
    Assign(Vec<Assignment>),
    /// Tasks the receiver no longer owns: drop them, stop their runs.
    Revoke(Vec<Held>),
    /// How runs ended; to the leader, which commits each with its attempt
    /// as fencing token and answers each ([`NodeResponse::Answers`]).
    Reports {
        /// The owner.
        node_id: NodeId,
        /// (task, attempt, outcome).
        reports: Vec<(TaskId, u32, Report)>,
        /// The tasks beyond its slots it asks to hold (its queue window).
        window: Option<u32>,
    },
    /// A thief asks a victim for queued tasks.
    StealAsk {
        /// What it wants.
        request: StealRequest,
        /// What the thief offers (the victim never gives what it cannot run).
        capabilities: Capabilities,
    },
    /// A victim asks the leader to commit the transfer of tasks it gives away.
    CommitSteal {
        /// The victim.
        from: NodeId,
        /// The thief.
        to: NodeId,
        /// The tasks, at the attempt the victim holds them.
        tasks: Vec<Held>,
    },
    /// The sender drains and leaves; the leader takes it out of the voter set.
    Leave {
        /// The sender.
        node_id: NodeId,
    },
    /// A slice of a blob by digest; blobs travel in chunks under the wire cap.
    GetBlob {
        /// `sha256:<hex>`.
        digest: String,
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted at most.
        len: u32,
    },
    /// The join exchange, step 1: a fresh challenge for the sender; to the leader.
    AdmitChallenge,
    /// The join exchange, step 2: the sender proves it holds join token
    /// `token` for its own peer id and `challenge`; to the leader.
    AdmitProve {
        /// The token's id.
        token: String,
        /// The challenge the leader gave.
        challenge: Vec<u8>,
        /// HMAC(token key, challenge, peer id).
        proof: Vec<u8>,
    },
    /// Token and allowlist management (from `coditect token` / `peer`); to the leader.
    Admission(AdmissionAction),
}

/// What an operator asks of admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionAction {
    /// A new join token.
    CreateToken {
        /// Valid this long, ms (`None`: until revoked).
        ttl_ms: Option<u64>,
        /// Admissions it allows (`None`: unlimited).
        uses: Option<u32>,
    },
    /// Void a token.
    RevokeToken(String),
    /// Take a peer off the allowlist for good.
    RevokePeer(String),
    /// A new join secret: admitted peers stay, every token is void.
    Rotate,
    /// A new HTTP API token (answered with it); the old one is void.
    RotateApiToken,
}

impl NodeRequest {
    /// Whether only the leader serves it (any other node answers
    /// [`NodeResponse::NotLeader`] with the leader it knows): the writes
    /// and the reads of the leader's state that go through Raft. Raft RPCs,
    /// assignments, revocations, steal asks, blob chunks and committed
    /// results are served by whoever holds them.
    pub fn leader_only(&self) -> bool {
        match self {
            NodeRequest::Join(_)
            | NodeRequest::Heartbeat { .. }
            | NodeRequest::Submit { .. }
            | NodeRequest::ListMissions { .. }
            | NodeRequest::GetMissionView { .. }
            | NodeRequest::Control { .. }
            | NodeRequest::Reports { .. }
            | NodeRequest::CommitSteal { .. }
            | NodeRequest::Leave { .. }
            | NodeRequest::AdmitChallenge
            | NodeRequest::AdmitProve { .. }
            | NodeRequest::Admission(_) => true,
            NodeRequest::Raft(_)
            | NodeRequest::GetTaskResult { .. }
            | NodeRequest::Assign(_)
            | NodeRequest::Revoke(_)
            | NodeRequest::StealAsk { .. }
            | NodeRequest::GetBlob { .. } => false,
        }
    }

    /// Whether it goes over the peer's long-lived call channel
    /// ([`coditect_gossip::Network::call`]) rather than a substream of its
    /// own: the small, frequent messages of the task path and Raft. Those
    /// that may carry megabytes either way (submissions, views, results,
    /// blobs) and the rare ones keep their own substreams, so nothing large
    /// waits in line in front of a Raft RPC.
    pub fn rides_channel(&self) -> bool {
        match self {
            NodeRequest::Raft(_)
            | NodeRequest::Heartbeat { .. }
            | NodeRequest::Assign(_)
            | NodeRequest::Revoke(_)
            | NodeRequest::Reports { .. }
            | NodeRequest::StealAsk { .. }
            | NodeRequest::CommitSteal { .. } => true,
            NodeRequest::Join(_)
            | NodeRequest::Submit { .. }
            | NodeRequest::GetTaskResult { .. }
            | NodeRequest::ListMissions { .. }
            | NodeRequest::GetMissionView { .. }
            | NodeRequest::Control { .. }
            | NodeRequest::Leave { .. }
            | NodeRequest::GetBlob { .. }
            | NodeRequest::AdmitChallenge
            | NodeRequest::AdmitProve { .. }
            | NodeRequest::Admission(_) => false,
        }
    }
}

/// The answer to a [`NodeRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResponse {
    /// An encoded Raft RPC reply.
    Raft(Vec<u8>),
    /// Done.
    Ack,
    /// The heartbeat was recorded; `registered` is false if the leader does not
    /// know the node yet (it should send `Join`).
    HeartbeatAck {
        /// Whether the registry holds the node.
        registered: bool,
        /// Tasks the node owns but did not list (a lost assignment message).
        missing: Vec<Assignment>,
        /// Tasks it listed but no longer owns (stolen, released, cancelled, done).
        revoked: Vec<Held>,
        /// The leader's admission view, when the node's stamp was stale.
        admission: Option<Box<crate::admission::AdmissionView>>,
    },
    /// The id of a mission just created.
    MissionCreated(String),
    /// A task's committed result, if the leader has one.
    TaskResult(Option<Box<TaskResult>>),
    /// The leader knows no such mission.
    NoMission,
    /// A page of missions, as JSON text.
    MissionList(String),
    /// A mission's view, if the leader knows it (an empty body: unchanged).
    MissionView(Option<MissionView>),
    /// Part of a mission's view: `bytes` from the asked offset of the JSON
    /// of `version`, which is `total` bytes long.
    MissionViewPart {
        /// The view's version.
        version: String,
        /// The mission is over.
        finished: bool,
        /// Length of the whole view, bytes.
        total: u64,
        /// This part.
        bytes: Vec<u8>,
    },
    /// Whether a report was committed (`false`: stale, the task moved on).
    Reported {
        /// Committed.
        committed: bool,
        /// Why not, when not.
        detail: String,
    },
    /// One answer per item of a batched request.
    Answers(Vec<NodeResponse>),
    /// Tasks a victim gave a thief, already transferred in Raft.
    Stolen(Vec<Assignment>),
    /// Per task of a [`NodeRequest::CommitSteal`], whether the transfer committed.
    StealCommitted(Vec<bool>),
    /// The receiver is not the leader; try this one.
    NotLeader {
        /// The leader, as the receiver knows it.
        leader: Option<LeaderHint>,
    },
    /// A slice of a blob, or `None` if the receiver does not hold it.
    BlobChunk(Option<BlobChunk>),
    /// A submission or control was refused, with the leader's kind of error.
    Refused(SubmitError),
    /// The sender may not ask this (see `crate::admission::check`): the
    /// refusal's label, e.g. `not_admitted`.
    Forbidden(String),
    /// A challenge for the join exchange.
    Challenge(Vec<u8>),
    /// A join token was created: its text.
    TokenCreated(String),
    /// The request failed.
    Error(String),
}

/// The answer to a request the network layer refused for load before the
/// node saw it (see `coditect_gossip::inbound`): an error that names the
/// reason, so the caller logs it and retries.
pub fn busy_answer(reason: &str) -> Vec<u8> {
    let answer = NodeResponse::Error(format!(
        "the receiver is busy ({reason}): too many requests from this peer or in all; retry later"
    ));
    coditect_memory::codec::encode(&answer).unwrap_or_default()
}

/// A slice of a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobChunk {
    /// The blob's full size.
    pub total: u64,
    /// The bytes from the requested offset.
    pub bytes: Vec<u8>,
}

/// Where the leader is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// Its Raft id.
    pub node_id: NodeId,
    /// Its peer id.
    pub peer_id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
}

/// A member of the Raft group as the leader announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft id.
    pub node_id: NodeId,
    /// Peer id.
    pub peer_id: String,
}

/// The leader's periodic announcement on `LEADER_TOPIC`, so nodes outside
/// Raft membership know who leads and who votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAdvert {
    /// The leader.
    pub leader: LeaderHint,
    /// Its term.
    pub term: u64,
    /// Current voters.
    pub voters: Vec<Member>,
    /// Current learners (standbys).
    pub learners: Vec<Member>,
    /// Its last applied log index.
    pub commit_index: u64,
}

/// Every node's periodic advert on `ADVERT_TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAdvert {
    /// Raft id.
    pub node_id: NodeId,
    /// Peer id.
    pub peer_id: String,
    /// Human label.
    pub name: String,
    /// Addresses it listens on.
    pub addrs: Vec<String>,
    /// What it offers.
    pub capabilities: Capabilities,
    /// How busy it is.
    pub load: Load,
    /// Its most urgent stealable queued tasks (a bounded sample).
    pub queued: Vec<QueuedTask>,
}

/// One version of a mission's JSON, built once and shared by every reader.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MissionView {
    /// A digest of the view: changes exactly when the view does.
    pub version: String,
    /// The JSON text, `version` included.
    pub body: std::sync::Arc<String>,
    /// The mission is over (no later version will differ but by a retry).
    pub finished: bool,
}

/// Why a submission or a control was refused. It crosses the hop from the
/// node that took the request to the leader unchanged, so the client sees
/// the leader's kind of error, not a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubmitError {
    /// The mission is invalid (HTTP 400).
    Invalid(String),
    /// The mesh could not take it now, and nothing was committed (HTTP 503).
    Unavailable(String),
    /// No such mission (HTTP 404).
    NotFound(String),
    /// The request contradicts the mission's state (HTTP 409).
    Conflict(String),
    /// The write was proposed but its outcome is unknown: it may have been
    /// committed (HTTP 504). Resubmitting with the same idempotency key is safe.
    MaybeCommitted(String),
    /// The sender may not do this (HTTP 403).
    Forbidden(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_to_the_leader_and_holdings_to_their_holder() {
        let leader_only = [
            NodeRequest::Leave { node_id: 1 },
            NodeRequest::ListMissions { after: 0, limit: 1 },
            NodeRequest::Control {
                mission: "m1".into(),
                action: MissionAction::Cancel,
            },
        ];
        assert!(leader_only.iter().all(NodeRequest::leader_only));
        let anyone = [
            NodeRequest::Raft(Vec::new()),
            NodeRequest::Assign(Vec::new()),
            NodeRequest::Revoke(Vec::new()),
            NodeRequest::GetBlob {
                digest: String::new(),
                offset: 0,
                len: 1,
            },
            NodeRequest::GetTaskResult {
                mission: "m1".into(),
                task: "t".into(),
            },
        ];
        assert!(!anyone.iter().any(NodeRequest::leader_only));
    }
    use coditect_memory::codec;

    #[test]
    fn messages_round_trip_through_the_codec() {
        let advert = LeaderAdvert {
            leader: LeaderHint {
                node_id: 9,
                peer_id: "12D3KooW".into(),
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            },
            term: 3,
            voters: vec![Member {
                node_id: 9,
                peer_id: "12D3KooW".into(),
            }],
            learners: vec![],
            commit_index: 17,
        };
        let decoded: LeaderAdvert = codec::decode(&codec::encode(&advert).unwrap()).unwrap();
        assert_eq!(decoded, advert);
        let request = NodeRequest::Heartbeat {
            node_id: 4,
            load: Load {
                running: 1,
                queued: 0,
                slots: 2,
            },
            holding: vec![Held {
                id: TaskId::new("m1", "t"),
                attempt: 2,
            }],
            running: vec![],
            window: Some(40),
            admission: (3, 9),
        };
        match codec::decode::<NodeRequest>(&codec::encode(&request).unwrap()).unwrap() {
            NodeRequest::Heartbeat {
                node_id,
                load,
                holding,
                window,
                ..
            } => {
                assert_eq!(node_id, 4);
                assert_eq!(load.slots, 2);
                assert_eq!(holding[0].attempt, 2);
                assert_eq!(window, Some(40));
            }
            other => panic!("decoded {other:?}"),
        }
    }

    proptest::proptest! {
        /// Whatever arrives from a peer, decoding it answers (an error or a
        /// value) without panicking, including valid messages with bytes
        /// flipped, cut off or appended.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flip in proptest::prelude::any::<usize>(),
            cut in proptest::prelude::any::<usize>(),
        ) {
            use coditect_memory::codec::decode;
            let _ = decode::<NodeRequest>(&noise);
            let _ = decode::<NodeResponse>(&noise);
            let _ = decode::<NodeAdvert>(&noise);
            let _ = decode::<LeaderAdvert>(&noise);
            let valid = coditect_memory::codec::encode(&NodeRequest::AdmitProve {
                token: "0123456789abcdef".into(),
                challenge: vec![1; 32],
                proof: vec![2; 32],
            })
            .unwrap();
            let mut flipped = valid.clone();
            let at = flip % flipped.len();
            flipped[at] ^= 0xff;
            let _ = decode::<NodeRequest>(&flipped);
            let _ = decode::<NodeRequest>(&valid[..cut % (valid.len() + 1)]);
            let mut longer = valid.clone();
            longer.extend_from_slice(&noise);
            let _ = decode::<NodeRequest>(&longer);
        }
    }
}
