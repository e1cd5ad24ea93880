//! Partition actor: coordinates client requests.
//!
//! The node that receives a request coordinates it: it finds the key's
//! replicas, sends the operation to them (itself without a network hop), waits
//! for as many answers as the consistency level needs, reconciles, and answers.
//!
//! * Read: ask the replicas, wait for R answers, return the newest version
//!   (tombstones included; the HTTP layer shows a tombstone as 404).
//! * Write: stamp the write with a fresh hybrid-logical-clock version, send it to
//!   the replicas, wait for W acknowledgements. A replica that holds a newer or
//!   equal version answers `Superseded`; the coordinator then retries once with
//!   a version above it, so an acknowledged write is never hidden by an older
//!   write from a node whose clock runs ahead.
//! * Conditional write (`If-Match`, `If-None-Match`): under a per-key lock of
//!   this coordinator, read at the request's level, check the condition against
//!   the reconciled version, and write with a version above the one read. Two
//!   conditional writes to one key through the same node are therefore
//!   serialized; through different nodes they are not (no consensus), and the
//!   later version wins. ARCHITECTURE.md states this guarantee.
//!
//! One partition actor runs per HTTP worker thread, so no single mailbox sits on
//! every request's path; each request is its own future, and the actor keeps no
//! per-request state. Messages: [`Get`], [`Put`].

use crate::error::{Error, Result};
use crate::peer::{Call, PeerActor};
use crate::quorum::{reconcile, Consistency};
use crate::record::Record;
use crate::replica::LocalReplica;
use crate::ring::Ring;
use crate::storage::{Precondition, StoreError, WriteOp, WriteOutcome};
use crate::version::{Hlc, Version};
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Stripes of the per-key lock that serializes conditional writes.
const KEY_LOCK_STRIPES: usize = 1024;
/// Attempts of a write whose version some replica already exceeds.
const MAX_WRITE_ATTEMPTS: usize = 2;

/// Replication parameters (validated by the config loader: r, w ≤ n).
#[derive(Clone, Copy, Debug)]
pub struct Replication {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub request_timeout: Duration,
}

/// Where one replica of a key lives.
#[derive(Clone, Debug)]
pub enum Target {
    Local,
    Remote { node: String, peer: Addr<PeerActor> },
}

/// The membership a coordinator routes by: the ring and a session per peer.
/// Replaced as a whole when membership changes; requests keep the view they
/// started with.
pub struct ClusterView {
    pub ring: Arc<Ring>,
    pub members: Vec<MemberInfo>,
    pub peers: HashMap<String, Addr<PeerActor>>,
}

/// How to reach one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
}

/// State shared by every partition actor of a node.
pub struct NodeCore {
    pub node_id: String,
    pub local: LocalReplica,
    pub hlc: Arc<Hlc>,
    pub replication: Replication,
    view: RwLock<Arc<ClusterView>>,
    key_locks: Vec<tokio::sync::Mutex<()>>,
}

impl NodeCore {
    pub fn new(
        node_id: String,
        local: LocalReplica,
        replication: Replication,
        view: ClusterView,
    ) -> Self {
        NodeCore {
            node_id,
            hlc: local.hlc.clone(),
            local,
            replication,
            view: RwLock::new(Arc::new(view)),
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The membership view requests are routed by now.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock").clone()
    }

    /// Installs a new membership view (gossip does this as membership changes).
    pub fn set_view(&self, view: ClusterView) {
        *self.view.write().expect("view lock") = Arc::new(view);
    }

    /// The replicas of `key`, in preference order.
    fn placement(&self, key: &[u8]) -> Vec<Target> {
        let view = self.view();
        view.ring
            .preference_list(key, self.replication.n)
            .into_iter()
            .map(|id| match view.peers.get(id) {
                Some(peer) if id != self.node_id => Target::Remote {
                    node: id.to_string(),
                    peer: peer.clone(),
                },
                _ => Target::Local,
            })
            .collect()
    }

    fn key_lock(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        let h = twox_hash::XxHash64::oneshot(0, key) as usize;
        &self.key_locks[h % KEY_LOCK_STRIPES]
    }

    async fn read_one(&self, target: &Target, key: &Bytes) -> Result<Option<Record>> {
        match target {
            Target::Local => Ok(self.local.read(key)?),
            Target::Remote { peer, .. } => {
                match call(peer, Request::Read { key: key.clone() }).await? {
                    Response::Read { record } => Ok(record.map(Record::from)),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    async fn write_one(&self, target: &Target, op: WriteOp) -> Result<WriteOutcome> {
        match target {
            Target::Local => Ok(self.local.write(op).await?),
            Target::Remote { peer, .. } => {
                let request = Request::Write {
                    key: op.key,
                    record: WireRecord::from(op.record),
                };
                match call(peer, request).await? {
                    Response::Write {
                        applied: true,
                        replaced_live,
                        ..
                    } => Ok(WriteOutcome::Applied { replaced_live }),
                    Response::Write {
                        superseded: Some((ts, node)),
                        ..
                    } => Ok(WriteOutcome::Superseded {
                        current: Version::new(ts, node),
                    }),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    /// Reads `key` at `consistency`: the newest of R replies.
    pub async fn read(&self, key: &Bytes, consistency: Consistency) -> Result<Option<Record>> {
        let targets = self.placement(key);
        let need = consistency.required(targets.len(), self.replication.r);
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|t| named(t, self.with_timeout(self.read_one(t, key))))
            .collect();
        let mut replies = Vec::with_capacity(need);
        let mut errors = Vec::new();
        while let Some(reply) = pending.next().await {
            match reply {
                Ok(r) => {
                    if let Some(rec) = &r {
                        let _ = self.hlc.observe(rec.version);
                    }
                    replies.push(r);
                    if replies.len() >= need {
                        return Ok(reconcile(&replies));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Err(Error::Unavailable {
            consistency,
            required: need,
            received: replies.len(),
            errors,
            indeterminate: false,
        })
    }

    /// Writes `value` (`None`: a tombstone) for `key` if `precondition` holds.
    pub async fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        precondition: Precondition,
        consistency: Consistency,
    ) -> Result<WriteResult> {
        if precondition == Precondition::None {
            return self.write_versioned(key, value, None, consistency).await;
        }
        let _guard = self.key_lock(&key).lock().await;
        let current = self.read(&key, consistency).await?;
        if !precondition.holds(current.as_ref()) {
            return Err(Error::PreconditionFailed {
                current: current.filter(|r| !r.is_tombstone()).map(|r| r.version),
            });
        }
        let mut result = self
            .write_versioned(key, value, current.as_ref().map(|r| r.version), consistency)
            .await?;
        result.created = current.is_none_or(|r| r.is_tombstone());
        Ok(result)
    }

    async fn write_versioned(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        mut floor: Option<Version>,
        consistency: Consistency,
    ) -> Result<WriteResult> {
        let targets = self.placement(&key);
        let need = consistency.required(targets.len(), self.replication.w);
        let mut last_err = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let version = self.hlc.next_after(floor);
            let op = WriteOp {
                key: key.clone(),
                record: Record {
                    version,
                    value: value.clone(),
                },
            };
            let mut pending: FuturesUnordered<_> = targets
                .iter()
                .map(|t| named(t, self.with_timeout(self.write_one(t, op.clone()))))
                .collect();
            let (mut acks, mut replaced_live, mut newest) = (0, false, None);
            let mut errors = Vec::new();
            while let Some(reply) = pending.next().await {
                match reply {
                    Ok(WriteOutcome::Applied { replaced_live: r }) => {
                        acks += 1;
                        replaced_live |= r;
                    }
                    Ok(WriteOutcome::Superseded { current }) => {
                        newest = newest.max(Some(current));
                    }
                    Err(e) => errors.push(e),
                }
                if acks >= need && newest.is_none() {
                    return Ok(WriteResult {
                        version,
                        created: !replaced_live,
                    });
                }
            }
            if newest.is_some() {
                floor = newest;
                continue;
            }
            if local_disk_full(&targets, &errors) {
                return Err(Error::DiskFull(errors.join("; ")));
            }
            last_err = Some(Error::Unavailable {
                consistency,
                required: need,
                received: acks,
                errors,
                indeterminate: true,
            });
            break;
        }
        Err(last_err
            .unwrap_or_else(|| Error::Internal("write kept losing to newer versions".into())))
    }

    async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.replication.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Peer(format!(
                "timed out after {:?}",
                self.replication.request_timeout
            ))),
        }
    }
}

/// Runs a replica future and names the replica in its error.
async fn named<T>(
    target: &Target,
    fut: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<T, String> {
    fut.await.map_err(|e| match target {
        Target::Local => format!("local: {e}"),
        Target::Remote { node, .. } => format!("{node}: {e}"),
    })
}

/// Every replica that failed did so for a full disk, and one was local:
/// the client hears 507 rather than 503.
fn local_disk_full(targets: &[Target], errors: &[String]) -> bool {
    !errors.is_empty()
        && errors.len() == targets.len()
        && errors.iter().all(|e| e.contains("disk full"))
}

async fn call(peer: &Addr<PeerActor>, request: Request) -> Result<Response> {
    match peer.send(Call(request)).await {
        Ok(Ok(Response::Error { code, message })) if code == "disk_full" => {
            Err(StoreError::DiskFull(message).into())
        }
        Ok(Ok(Response::Error { code, message })) => Err(Error::Peer(format!("{code}: {message}"))),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(Error::Peer(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn unexpected(resp: Response) -> Error {
    Error::Internal(format!("unexpected answer from replica: {resp:?}"))
}

/// What a successful write reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub version: Version,
    /// No live value existed before (HTTP 201 rather than 204).
    pub created: bool,
}

/// Read a key.
#[derive(Message)]
#[rtype(result = "Result<Option<Record>>")]
pub struct Get {
    pub key: Bytes,
    pub consistency: Consistency,
}

/// Write a value, or a tombstone when `value` is `None`.
#[derive(Message)]
#[rtype(result = "Result<WriteResult>")]
pub struct Put {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub precondition: Precondition,
    pub consistency: Consistency,
}

/// The coordinator of one HTTP worker.
pub struct PartitionActor {
    core: Arc<NodeCore>,
}

impl PartitionActor {
    pub fn new(core: Arc<NodeCore>) -> Self {
        PartitionActor { core }
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Get> for PartitionActor {
    type Result = ResponseFuture<Result<Option<Record>>>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.read(&msg.key, msg.consistency).await })
    }
}

impl Handler<Put> for PartitionActor {
    type Result = ResponseFuture<Result<WriteResult>>;

    fn handle(&mut self, msg: Put, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            core.write(msg.key, msg.value, msg.precondition, msg.consistency)
                .await
        })
    }
}
