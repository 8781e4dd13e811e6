//! Raft RPCs over the message-level network seam.
//!
//! Consensus does not know libp2p: it hands encoded RPCs to a
//! [`RaftTransport`] with the deadline openraft gave, and decodes the reply.
//! The node implements the transport over the gossip crate's
//! request-response; the simulation over its in-process bus.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::{MeshRaft, TypeConfig};
use crate::types::{MeshNode, NodeId};
use coditect_memory::codec;

/// A Raft RPC on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Elections.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot (openraft sends snapshots in chunks of
    /// `snapshot_max_chunk_size`, well under the wire cap).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The request could not be decoded by the receiver.
    Malformed(String),
}

/// Why an RPC got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached (not connected, dial failed, connection closed).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Any other failure on the way.
    #[error("{0}")]
    Other(String),
}

/// Carries encoded Raft RPCs to a peer and brings back the encoded reply.
/// Implementations must give up at `deadline`.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `payload` to `target` (reachable as `node`) and waits for the reply.
    fn call(
        &self,
        target: NodeId,
        node: &MeshNode,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// openraft's network factory over a [`RaftTransport`].
#[derive(Clone)]
pub struct NetworkFactory {
    local: NodeId,
    transport: Arc<dyn RaftTransport>,
}

impl NetworkFactory {
    /// A factory for the node `local`.
    pub fn new(local: NodeId, transport: Arc<dyn RaftTransport>) -> Self {
        NetworkFactory { local, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &MeshNode) -> Self::Network {
        Connection {
            local: self.local,
            target,
            node: node.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// A client for one peer.
pub struct Connection {
    local: NodeId,
    target: NodeId,
    node: MeshNode,
    transport: Arc<dyn RaftTransport>,
}

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        action: RPCTypes,
        option: &RPCOption,
    ) -> Result<RaftRpcReply, RPCError<NodeId, MeshNode, RaftError<NodeId, E>>> {
        let payload = codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let deadline = option.hard_ttl();
        let reply = self
            .transport
            .call(self.target, &self.node, payload, deadline)
            .await
            .map_err(|error| match error {
                TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&error)),
                TransportError::Timeout(timeout) => RPCError::Timeout(Timeout {
                    action,
                    id: self.local,
                    target: self.target,
                    timeout,
                }),
                TransportError::Other(_) => RPCError::Network(NetworkError::new(&error)),
            })?;
        let reply: RaftRpcReply =
            codec::decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let RaftRpcReply::Malformed(message) = &reply {
            return Err(RPCError::Network(NetworkError::new(
                &TransportError::Other(format!("peer could not decode our request: {message}")),
            )));
        }
        Ok(reply)
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, MeshNode, RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&TransportError::Other(
            "reply of the wrong kind".into(),
        )))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MeshNode, RaftError<NodeId>>> {
        match self
            .call(
                RaftRpc::AppendEntries(rpc),
                RPCTypes::AppendEntries,
                &option,
            )
            .await?
        {
            RaftRpcReply::AppendEntries(Ok(response)) => Ok(response),
            RaftRpcReply::AppendEntries(Err(error)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), error),
            )),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MeshNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(
                RaftRpc::InstallSnapshot(rpc),
                RPCTypes::InstallSnapshot,
                &option,
            )
            .await?
        {
            RaftRpcReply::InstallSnapshot(Ok(response)) => Ok(response),
            RaftRpcReply::InstallSnapshot(Err(error)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), error),
            )),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MeshNode, RaftError<NodeId>>> {
        match self
            .call(RaftRpc::Vote(rpc), RPCTypes::Vote, &option)
            .await?
        {
            RaftRpcReply::Vote(Ok(response)) => Ok(response),
            RaftRpcReply::Vote(Err(error)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), error),
            )),
            _ => Err(self.unexpected()),
        }
    }
}

impl RaftRpc {
    /// The node this RPC speaks for: the leader (entries, snapshots) or
    /// the candidate (votes) named in its vote. Only that node may send it.
    pub fn speaker(&self) -> Option<NodeId> {
        let vote = match self {
            RaftRpc::AppendEntries(request) => &request.vote,
            RaftRpc::Vote(request) => &request.vote,
            RaftRpc::InstallSnapshot(request) => &request.vote,
        };
        vote.leader_id().voted_for()
    }
}

/// Decodes an RPC as it came off the wire.
pub fn decode_rpc(payload: &[u8]) -> Result<RaftRpc, String> {
    codec::decode::<RaftRpc>(payload).map_err(|error| error.to_string())
}

/// The encoded reply of an RPC the receiver would not serve (it could not be
/// decoded, or its sender may not speak for the node it names).
pub fn refusal_reply(reason: &str) -> Vec<u8> {
    codec::encode(&RaftRpcReply::Malformed(reason.to_string()))
        .expect("a string reply always encodes")
}

/// Serves one decoded RPC on the receiving node and returns the encoded reply.
pub async fn serve_rpc(raft: &MeshRaft, rpc: RaftRpc) -> Vec<u8> {
    let reply = match rpc {
        RaftRpc::AppendEntries(request) => {
            RaftRpcReply::AppendEntries(raft.append_entries(request).await)
        }
        RaftRpc::Vote(request) => RaftRpcReply::Vote(raft.vote(request).await),
        RaftRpc::InstallSnapshot(request) => {
            RaftRpcReply::InstallSnapshot(raft.install_snapshot(request).await)
        }
    };
    codec::encode(&reply).unwrap_or_else(|error| refusal_reply(&error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;

    #[test]
    fn the_speaker_is_the_node_its_vote_names_and_survives_the_wire() {
        let vote = RaftRpc::Vote(VoteRequest::new(Vote::new(3, 7), None));
        assert_eq!(vote.speaker(), Some(7));
        let append = RaftRpc::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(4, 9),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        });
        let bytes = codec::encode(&append).unwrap();
        assert_eq!(decode_rpc(&bytes).unwrap().speaker(), Some(9));
        assert!(decode_rpc(&bytes[..bytes.len() / 2]).is_err());
        let refusal = refusal_reply("wrong_node");
        assert!(matches!(
            codec::decode::<RaftRpcReply>(&refusal).unwrap(),
            RaftRpcReply::Malformed(reason) if reason == "wrong_node"
        ));
    }
}
