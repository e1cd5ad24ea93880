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
use crate::quorum::{reconcile, Consistency};
use crate::record::Record;
use crate::replica::{ApplyWrite, ReplicaActor};
use crate::storage::{Precondition, Store, WriteOp, WriteOutcome};
use crate::version::{Hlc, Version};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Local,
}

/// State shared by every partition actor of a node.
pub struct NodeCore {
    pub node_id: String,
    pub store: Store,
    pub replica: Addr<ReplicaActor>,
    pub hlc: Arc<Hlc>,
    pub replication: Replication,
    key_locks: Vec<tokio::sync::Mutex<()>>,
}

impl NodeCore {
    pub fn new(
        node_id: String,
        store: Store,
        replica: Addr<ReplicaActor>,
        hlc: Arc<Hlc>,
        replication: Replication,
    ) -> Self {
        NodeCore {
            node_id,
            store,
            replica,
            hlc,
            replication,
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The replicas of `key`, in preference order.
    fn placement(&self, _key: &[u8]) -> Vec<Target> {
        vec![Target::Local]
    }

    fn key_lock(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        let h = twox_hash::XxHash64::oneshot(0, key) as usize;
        &self.key_locks[h % KEY_LOCK_STRIPES]
    }

    async fn read_one(&self, target: &Target, key: &Bytes) -> Result<Option<Record>> {
        match target {
            Target::Local => Ok(self.store.get(key)?),
        }
    }

    async fn write_one(&self, target: &Target, op: WriteOp) -> Result<WriteOutcome> {
        match target {
            Target::Local => Ok(self.replica.send(ApplyWrite(op)).await??),
        }
    }

    /// Reads `key` at `consistency`: the newest of R replies.
    pub async fn read(&self, key: &Bytes, consistency: Consistency) -> Result<Option<Record>> {
        let targets = self.placement(key);
        let need = consistency.required(targets.len(), self.replication.r);
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|t| self.with_timeout(self.read_one(t, key)))
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
                Err(e) => errors.push(e.to_string()),
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
                .map(|t| self.with_timeout(self.write_one(t, op.clone())))
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
                    Err(Error::DiskFull(m)) if acks < need => {
                        errors.push(format!("disk full: {m}"))
                    }
                    Err(e) => errors.push(e.to_string()),
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
            if errors.iter().all(|e| e.starts_with("disk full")) && !errors.is_empty() {
                return Err(Error::DiskFull(errors.join("; ")));
            }
            last_err = Some(Error::Unavailable {
                consistency,
                required: need,
                received: acks,
                errors,
                indeterminate: acks > 0,
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
            Err(_) => Err(Error::Internal(format!(
                "replica timed out after {:?}",
                self.replication.request_timeout
            ))),
        }
    }
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
        ctx.set_mailbox_capacity(usize::MAX);
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
