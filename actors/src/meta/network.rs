//! Consensus messages over the peer connections: each openraft RPC is one
//! `Request::Meta` call (foreground priority, so heartbeats are not queued
//! behind repair pages), its body MessagePack inside the frame, answered
//! within openraft's own deadline for that RPC.

use super::{MetaNode, MetaTypes};
use crate::peer::{PeerError, Peers};
use crate::wire::{MetaRpc, Request, Response};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Makes a client per peer for openraft.
#[derive(Clone)]
pub struct MetaNetwork {
    pub peers: Peers,
}

impl RaftNetworkFactory<MetaTypes> for MetaNetwork {
    type Network = MetaClient;

    async fn new_client(&mut self, target: u64, node: &MetaNode) -> MetaClient {
        MetaClient {
            peers: self.peers.clone(),
            target,
            node: node.id.clone(),
        }
    }
}

/// The consensus client of one peer.
pub struct MetaClient {
    peers: Peers,
    target: u64,
    node: String,
}

type Rpc<E> = RPCError<u64, MetaNode, RaftError<u64, E>>;

/// Sends one consensus message to `node` and decodes its answer: the
/// remote's `Result` of the RPC.
pub async fn call<Req, Resp, E>(
    peers: &Peers,
    target: u64,
    node: &str,
    rpc: MetaRpc,
    req: &Req,
    ttl: Duration,
) -> Result<Resp, Rpc<E>>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let payload =
        crate::wire::encode_value(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    let answer = peers
        .call(node, Request::Meta { rpc, payload }, ttl)
        .await
        .map_err(|e| match e {
            PeerError::Unknown { .. } | PeerError::NotConnected { .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            e => RPCError::Network(NetworkError::new(&e)),
        })?;
    let Response::Meta { payload } = answer else {
        let e = PeerError::Unexpected {
            peer: node.to_string(),
            request: "meta",
        };
        return Err(RPCError::Network(NetworkError::new(&e)));
    };
    let result: Result<Resp, RaftError<u64, E>> = crate::wire::decode_value(&payload)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl RaftNetwork<MetaTypes> for MetaClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Rpc<openraft::error::Infallible>> {
        call(
            &self.peers,
            self.target,
            &self.node,
            MetaRpc::AppendEntries,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Rpc<InstallSnapshotError>> {
        call(
            &self.peers,
            self.target,
            &self.node,
            MetaRpc::InstallSnapshot,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Rpc<openraft::error::Infallible>> {
        call(
            &self.peers,
            self.target,
            &self.node,
            MetaRpc::Vote,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }
}
