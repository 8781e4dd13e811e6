//! What nodes say to each other: request-response payloads and gossip adverts.
//! All of it is encoded by `coditect_memory::codec`.

use coditect_consensus::{Capabilities, Load, NodeId, NodeRecord};
use serde::{Deserialize, Serialize};

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
    },
    /// The receiver is not the leader; try this one.
    NotLeader {
        /// The leader, as the receiver knows it.
        leader: Option<LeaderHint>,
    },
    /// A slice of a blob, or `None` if the receiver does not hold it.
    BlobChunk(Option<BlobChunk>),
    /// The request failed.
    Error(String),
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
        };
        match codec::decode::<NodeRequest>(&codec::encode(&request).unwrap()).unwrap() {
            NodeRequest::Heartbeat { node_id, load } => {
                assert_eq!(node_id, 4);
                assert_eq!(load.slots, 2);
            }
            other => panic!("decoded {other:?}"),
        }
    }
}
