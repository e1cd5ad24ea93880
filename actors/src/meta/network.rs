//! Consensus messages over the peer connections: each openraft RPC is one
//! `Request::Meta` call (foreground priority, so heartbeats are not queued
//! behind repair pages), its body MessagePack inside the frame, answered
//! within openraft's own deadline for that RPC. Answers are checked like
//! requests ([`super::guard`]): a peer's answer carrying an absurd term is
//! refused, not adopted.

use super::guard::{check_vote, Refused};
use super::{MetaNode, MetaTypes};
use crate::peer::{PeerError, Peers};
use crate::wire::{MetaRpc, Request, Response};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
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
    /// This node's cluster fingerprint, sent with every message.
    pub cluster: u64,
}

impl RaftNetworkFactory<MetaTypes> for MetaNetwork {
    type Network = MetaClient;

    async fn new_client(&mut self, target: u64, node: &MetaNode) -> MetaClient {
        MetaClient {
            peers: self.peers.clone(),
            cluster: self.cluster,
            target,
            node: node.id.clone(),
        }
    }
}

/// The consensus client of one peer.
pub struct MetaClient {
    peers: Peers,
    cluster: u64,
    target: u64,
    node: String,
}

type Rpc<E> = RPCError<u64, MetaNode, RaftError<u64, E>>;

/// Why a consensus call failed, before openraft's error types.
#[derive(Debug)]
pub enum CallError {
    /// Not sent (unknown peer, no connection, too large to encode).
    NotSent(PeerError),
    /// Sent, or maybe sent, with no usable answer.
    Lost(PeerError),
    /// The answer could not be decoded or failed its checks.
    BadAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(e) => write!(f, "not sent: {e}"),
            CallError::Lost(e) => write!(f, "{e}"),
            CallError::BadAnswer(e) => write!(f, "a bad answer: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one consensus message to `node` and decodes its answer (whatever
/// `Result` type the remote encoded).
pub async fn call<Req: Serialize, Ans: DeserializeOwned>(
    peers: &Peers,
    node: &str,
    (rpc, cluster): (MetaRpc, u64),
    req: &Req,
    ttl: Duration,
) -> Result<Ans, CallError> {
    let payload =
        crate::wire::encode_value(req).map_err(|e| CallError::BadAnswer(e.to_string()))?;
    let answer = peers
        .call(
            node,
            Request::Meta {
                rpc,
                cluster,
                payload,
            },
            ttl,
        )
        .await
        .map_err(|e| match e {
            PeerError::Unknown { .. }
            | PeerError::NotConnected { .. }
            | PeerError::FrameTooLarge { .. }
            | PeerError::Encode { .. }
            | PeerError::Overloaded { .. } => CallError::NotSent(e),
            PeerError::Timeout { sent: false, .. }
            | PeerError::ConnectionLost { sent: false, .. } => CallError::NotSent(e),
            e => CallError::Lost(e),
        })?;
    let Response::Meta { payload } = answer else {
        return Err(CallError::BadAnswer(format!("{answer:?}")));
    };
    crate::wire::decode_value(&payload).map_err(|e| CallError::BadAnswer(e.to_string()))
}

/// openraft's view of a failed call.
fn rpc_error<E: std::error::Error>(e: CallError) -> Rpc<E> {
    match e {
        CallError::NotSent(e @ PeerError::FrameTooLarge { .. }) => {
            log::warn!("metadata: {e}: sending fewer entries per message");
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
        }
        CallError::NotSent(e) => RPCError::Unreachable(Unreachable::new(&e)),
        e => RPCError::Network(NetworkError::new(&e)),
    }
}

/// The remote's answer, checked: its vote must be sane.
fn answer<T, E: std::error::Error>(
    target: u64,
    result: Result<Result<T, RaftError<u64, E>>, CallError>,
    vote_of: impl FnOnce(&T) -> Option<openraft::Vote<u64>>,
) -> Result<T, Rpc<E>> {
    match result.map_err(rpc_error)? {
        Ok(t) => {
            if let Some(v) = vote_of(&t) {
                check_vote(&v).map_err(|Refused(why)| {
                    RPCError::Network(NetworkError::new(&CallError::BadAnswer(why)))
                })?;
            }
            Ok(t)
        }
        Err(e) => Err(RPCError::RemoteError(RemoteError::new(target, e))),
    }
}

impl MetaClient {
    async fn send<Req: Serialize, T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        rpc: MetaRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Result<T, RaftError<u64, E>>, CallError> {
        call(
            &self.peers,
            &self.node,
            (rpc, self.cluster),
            req,
            option.hard_ttl(),
        )
        .await
    }
}

impl RaftNetwork<MetaTypes> for MetaClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Rpc<openraft::error::Infallible>> {
        let entries = rpc.entries.len() as u64;
        let result = self.send(MetaRpc::AppendEntries, &rpc, &option).await;
        if let Err(CallError::NotSent(PeerError::FrameTooLarge { .. })) = &result {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
            ));
        }
        answer(self.target, result, |r| match r {
            AppendEntriesResponse::HigherVote(v) => Some(*v),
            _ => None,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetaTypes>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Rpc<InstallSnapshotError>> {
        let result = self.send(MetaRpc::InstallSnapshot, &rpc, &option).await;
        answer(self.target, result, |r: &InstallSnapshotResponse<u64>| {
            Some(r.vote)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Rpc<openraft::error::Infallible>> {
        let result = self.send(MetaRpc::Vote, &rpc, &option).await;
        answer(self.target, result, |r: &VoteResponse<u64>| Some(r.vote))
    }
}
