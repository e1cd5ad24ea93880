//! The inbound dispatcher: answers what peers ask. Replica work (reads,
//! writes, hints, batches, purges) goes to the [`LocalReplica`], gossip to the
//! gossip actor, Merkle exchanges to the [`RepairService`].
//!
//! The peer server hands it requests that passed [`Request::validate`] from
//! sessions whose hello named a configured member; this module adds the
//! checks that need the node's state (a hint's target must be another
//! member, and not its sender; a version must not be too far ahead of our
//! clock). Every failure
//! answers a typed [`ErrorCode`]; nothing here panics on peer input.
//!
//! It is the top of the engine's import graph: it uses the replica, gossip
//! and repair, and nothing below imports it (the peer layer only knows the
//! [`Dispatch`] trait).

use crate::antientropy::RepairService;
use crate::gossip::{GossipActor, GossipIn};
use crate::metrics::Metrics;
use crate::peer::Dispatch;
use crate::record::Record;
use crate::replica::LocalReplica;
use crate::storage::{Hint, Mutation, StoreError, WriteOp, WriteOutcome};
use crate::version::Version;
use crate::wire::{ErrorCode, Request, Response, WireRecord};
use actix::Addr;
use futures_util::future::LocalBoxFuture;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

/// Everything a peer session may need to answer. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    pub local: LocalReplica,
    pub gossip: Addr<GossipActor>,
    pub repair: RepairService,
    /// Configured member ids, this node included.
    pub members: Arc<BTreeSet<String>>,
    pub node_id: crate::node_id::NodeId,
    /// Metadata consensus, once it started (`None`: consensus messages are
    /// answered `NotServing`).
    pub meta: Option<crate::meta::MetaService>,
}

impl Dispatch for Inbound {
    fn dispatch(&self, from: Rc<str>, request: Request) -> LocalBoxFuture<'static, Response> {
        let this = self.clone();
        Box::pin(async move { this.handle(&from, request).await })
    }
}

impl Inbound {
    /// Answers one request from peer `from`.
    pub async fn handle(&self, from: &str, request: Request) -> Response {
        match request {
            Request::Read { key } => match self.local.read(&key) {
                Ok(record) => Response::Read {
                    record: record.map(WireRecord::from),
                },
                Err(e) => store_error(e),
            },
            Request::Write {
                key,
                record,
                layout,
            } => {
                if let Some(why) = self.repair.core.view().refuses_coordinator(layout) {
                    return Response::error(ErrorCode::StaleLayout, why);
                }
                let record = Record::from(record);
                if let Err(e) = self.local.check_clock(&record) {
                    return Response::error(ErrorCode::ClockDrift, e);
                }
                match self.local.write(WriteOp { key, record }).await {
                    Ok(outcome) => Response::from(outcome),
                    Err(e) => store_error(e),
                }
            }
            Request::StoreHint {
                target,
                key,
                record,
            } => self.store_hint(from, target, key, record).await,
            Request::WriteBatch { items } => {
                let items = items
                    .into_iter()
                    .map(|(k, r)| (k, Record::from(r)))
                    .collect();
                match self.local.write_batch(items).await {
                    Ok(b) => Response::Batch {
                        applied: b.applied,
                        refused: b.refused,
                    },
                    Err(e) => store_error(e),
                }
            }
            Request::PurgeMany { items } => {
                let mutations = items
                    .into_iter()
                    .map(|(key, ts, node)| Mutation::Purge {
                        key,
                        version: Version::new(ts, node),
                    })
                    .collect();
                match self.local.apply_background(mutations).await {
                    Ok(out) => Response::Purged {
                        purged: out
                            .iter()
                            .filter(|o| matches!(o, Ok(WriteOutcome::Done { changed: true })))
                            .count() as u32,
                    },
                    Err(e) => store_error(e),
                }
            }
            Request::Gossip { members } => {
                let msg = GossipIn {
                    members,
                    from: from.to_string(),
                };
                match self.gossip.send(msg).await {
                    Ok(members) => Response::Gossip { members },
                    Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
                }
            }
            r @ (Request::PartitionRoots { .. }
            | Request::TreeHashes { .. }
            | Request::LeafVersions { .. }
            | Request::ReadMany { .. }) => {
                self.repair.handle(from, r).await.unwrap_or_else(|| {
                    Response::error(ErrorCode::Internal, "repair did not answer")
                })
            }
            Request::Meta {
                rpc,
                cluster,
                payload,
            } => match &self.meta {
                Some(meta) => meta.handle(from, rpc, cluster, &payload).await,
                None => Response::error(
                    ErrorCode::NotServing,
                    "metadata consensus has not started here",
                ),
            },
        }
    }

    /// Keeps a hint from `from` for `target`. Refused (`Invalid`, counted)
    /// unless `target` is another member than us and than `from`: a hint
    /// for a stranger could never be replayed, and a member holding hints
    /// addressed to itself could refuse their replay forever — with an old
    /// version, that would pin our hint floor and with it tombstone GC
    /// everywhere. (A coordinator whose own write failed sends no hint for
    /// itself; anti-entropy brings it the write.)
    async fn store_hint(
        &self,
        from: &str,
        target: String,
        key: bytes::Bytes,
        record: WireRecord,
    ) -> Response {
        if target == self.node_id || target == from || !self.members.contains(&target) {
            Metrics::add(&self.local.stats.peer_requests_refused, 1);
            return Response::error(
                ErrorCode::Invalid,
                format!(
                    "a hint's target must be another member than the holder and the sender, \
                     not '{}'",
                    crate::wire::printable(&target)
                ),
            );
        }
        let record = Record::from(record);
        if let Err(e) = self.local.check_clock(&record) {
            return Response::error(ErrorCode::ClockDrift, e);
        }
        let hint = Hint {
            target,
            key,
            record,
            stored_ms: self.local.hlc.wall_ms(),
        };
        match self.local.store_hint(hint).await {
            Ok(outcome) => Response::from(outcome),
            Err(e) => store_error(e),
        }
    }
}

/// A storage failure as a peer sees it.
pub fn store_error(e: StoreError) -> Response {
    let code = match &e {
        StoreError::DiskFull(_) => ErrorCode::DiskFull,
        StoreError::Overloaded(_) => ErrorCode::Overloaded,
        StoreError::NotServing(_) => ErrorCode::NotServing,
        StoreError::Invalid(_) => ErrorCode::Invalid,
        _ => ErrorCode::Storage,
    };
    Response::error(code, e.to_string())
}
