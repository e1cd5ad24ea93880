//! Dispatch of requests that arrive from peers: replica work (reads, writes,
//! hints, batches, purges) to the [`LocalReplica`], gossip to the gossip actor,
//! Merkle exchanges to the [`RepairService`].

use crate::gossip::{GossipActor, GossipIn};
use crate::repair::RepairService;
use crate::replica::LocalReplica;
use crate::wire::{Request, Response};
use actix::Addr;

/// Everything a peer session may need to answer. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    pub local: LocalReplica,
    pub gossip: Addr<GossipActor>,
    pub repair: RepairService,
}

impl Inbound {
    /// Answers one request from peer `from`.
    pub async fn handle(&self, from: &str, request: Request) -> Response {
        if let Request::Gossip { members } = request {
            let from = from.to_string();
            return match self.gossip.send(GossipIn { members, from }).await {
                Ok(members) => Response::Gossip { members },
                Err(e) => internal(e),
            };
        }
        if matches!(
            request,
            Request::TreeHashes { .. } | Request::LeafRecords { .. }
        ) {
            return self
                .repair
                .handle(from, request)
                .await
                .unwrap_or_else(|| internal("repair did not answer"));
        }
        self.local
            .handle(request)
            .await
            .unwrap_or_else(|| internal("no handler for request"))
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    Response::Error {
        code: "internal".into(),
        message: e.to_string(),
    }
}
