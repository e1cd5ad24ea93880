//! Replica actor: owns this node's write path, with group commit.
//!
//! Every write to the local store — from a local coordinator, a peer, a hint
//! replay or a repair — arrives here as an [`ApplyWrite`]. While a commit is on
//! disk, new writes queue; when it returns, everything queued goes into the
//! next transaction and is committed at once (one fsync for the whole batch),
//! then every writer in it is answered. Under concurrency this turns N fsyncs
//! into about one per disk round trip; alone, a write commits immediately.
//!
//! The commit itself runs on tokio's blocking pool so the actor's thread keeps
//! accepting messages. Reads never come here: they open redb read transactions
//! directly ([`crate::storage::Store::get`]).
//!
//! Messages: [`ApplyWrite`] (answers the [`WriteOutcome`] once durable),
//! [`Flush`] (answers when nothing is queued or committing; used at shutdown).

use crate::metrics::Metrics;
use crate::record::Record;
use crate::storage::{Hint, Mutation, Store, StoreError, WriteOp, WriteOutcome};
use crate::version::Hlc;
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most writes one transaction takes; the rest wait for the next commit.
pub const MAX_BATCH_OPS: usize = 1024;
/// Most value bytes one transaction takes (a single larger write goes alone).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Apply one write durably; answers after its transaction committed.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct ApplyWrite(pub WriteOp);

/// Apply any mutation (hints, purges) durably, batched like writes.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct Apply(pub Mutation);

/// Answers once every write received before it is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

pub struct ReplicaActor {
    store: Store,
    /// Most mutations per commit (1 turns group commit off).
    max_batch: usize,
    stats: Arc<Metrics>,
    queue: Vec<(Mutation, Reply)>,
    committing: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
}

impl ReplicaActor {
    pub fn new(store: Store, stats: Arc<Metrics>) -> Self {
        ReplicaActor {
            store,
            max_batch: MAX_BATCH_OPS,
            stats,
            queue: Vec::new(),
            committing: false,
            flush_waiters: Vec::new(),
        }
    }

    /// Commits each mutation alone (for measuring group commit's benefit).
    pub fn without_group_commit(mut self) -> Self {
        self.max_batch = 1;
        self
    }

    /// Takes the next batch off the queue, bounded by count and bytes.
    fn next_batch(&mut self) -> Vec<(Mutation, Reply)> {
        let mut bytes = 0;
        let mut n = 0;
        for (m, _) in &self.queue {
            let len = match m {
                Mutation::Put(op) => op.key.len() + op.record.value.as_ref().map_or(0, |v| v.len()),
                Mutation::Hint(h) => h.key.len() + h.record.value.as_ref().map_or(0, |v| v.len()),
                _ => 64,
            };
            if n > 0 && (n == self.max_batch || bytes + len > MAX_BATCH_BYTES) {
                break;
            }
            bytes += len;
            n += 1;
        }
        let rest = self.queue.split_off(n);
        std::mem::replace(&mut self.queue, rest)
    }

    fn start_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        if self.queue.is_empty() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
            return;
        }
        self.committing = true;
        let batch = self.next_batch();
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let store = self.store.clone();
        let commit = tokio::task::spawn_blocking(move || store.apply(&ops));
        ctx.spawn(commit.into_actor(self).map(move |joined, act, ctx| {
            let result = joined
                .unwrap_or_else(|e| Err(StoreError::Engine(format!("commit task failed: {e}"))));
            act.committing = false;
            match result {
                Ok(outcomes) => {
                    act.stats.commits.fetch_add(1, Ordering::Relaxed);
                    act.stats
                        .writes
                        .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    act.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    log::error!("commit of {} writes failed: {e}", replies.len());
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            act.start_commit(ctx);
        }));
    }
}

impl Actor for ReplicaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<ApplyWrite> for ReplicaActor {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: ApplyWrite, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(Mutation::Put(msg.0), ctx)
    }
}

impl Handler<Apply> for ReplicaActor {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.0, ctx)
    }
}

impl ReplicaActor {
    fn enqueue(
        &mut self,
        m: Mutation,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<WriteOutcome, StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.queue.push((m, tx));
        self.start_commit(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Engine("replica stopped".into())))
        })
    }
}

impl Handler<Flush> for ReplicaActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        self.start_commit(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// The local replica as coordinators and peers see it: reads straight from the
/// store, writes through the replica actor. Cheap to clone.
#[derive(Clone)]
pub struct LocalReplica {
    pub store: Store,
    pub writer: Addr<ReplicaActor>,
    pub hlc: Arc<Hlc>,
    pub stats: Arc<Metrics>,
    /// Set while this node must not serve reads: it was down longer than the
    /// tombstone grace period and has not finished an anti-entropy pass.
    pub repairing: Arc<AtomicBool>,
    /// Peers whose shared ranges need anti-entropy soon (their hints were
    /// dropped at the bound); drained by the repair actor.
    pub repair_wanted: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl LocalReplica {
    /// The local record of `key` for a coordinator's read.
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        if self.repairing.load(Ordering::Relaxed) {
            return Err(StoreError::Engine(
                "this replica was down longer than the tombstone grace period and serves no \
                 reads until anti-entropy completes"
                    .into(),
            ));
        }
        self.store.get(key)
    }

    pub async fn apply(&self, m: Mutation) -> Result<WriteOutcome, StoreError> {
        self.writer
            .send(Apply(m))
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("replica actor: {e}"))))
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.writer
            .send(ApplyWrite(op))
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("replica actor: {e}"))))
    }

    /// Refuses a version too far ahead of our clock (counted), else folds it in.
    pub fn check_clock(&self, record: &Record) -> Result<(), String> {
        self.hlc.observe(record.version).map_err(|e| {
            self.stats.clock_refusals.fetch_add(1, Ordering::Relaxed);
            log::warn!("refused a version from a peer: {e}");
            e.to_string()
        })
    }

    /// Stores many records, each if newer; answers how many were applied.
    /// Records further ahead of the cluster's clock than the allowed drift are
    /// skipped (and counted).
    pub async fn write_batch(&self, items: Vec<(Bytes, Record)>) -> Result<u32, StoreError> {
        let writes = items
            .into_iter()
            .filter(|(_, record)| self.check_clock(record).is_ok())
            .map(|(key, record)| self.write(WriteOp { key, record }));
        let mut applied = 0;
        for outcome in futures_util::future::join_all(writes).await {
            if let WriteOutcome::Applied { .. } = outcome? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Serves the replica part of a peer's request (reads, writes, hints,
    /// batches, purges); `None` for requests other actors serve.
    pub async fn handle(&self, request: Request) -> Option<Response> {
        Some(match request {
            Request::Read { key } => match self.read(&key) {
                Ok(record) => Response::Read {
                    record: record.map(WireRecord::from),
                },
                Err(e) => error_response(e),
            },
            Request::Write { key, record } => {
                let record = Record::from(record);
                if let Err(e) = self.check_clock(&record) {
                    return Some(clock_error(e));
                }
                match self.write(WriteOp { key, record }).await {
                    Ok(outcome) => Response::from(outcome),
                    Err(e) => error_response(e),
                }
            }
            Request::StoreHint {
                target,
                key,
                record,
            } => {
                let record = Record::from(record);
                if let Err(e) = self.check_clock(&record) {
                    return Some(clock_error(e));
                }
                let hint = Hint {
                    target,
                    key,
                    record,
                    stored_ms: self.hlc.wall_ms(),
                };
                match self.store_hint(hint).await {
                    Ok(outcome) => Response::from(outcome),
                    Err(e) => error_response(e),
                }
            }
            Request::WriteBatch { items } => {
                let items = items
                    .into_iter()
                    .map(|(k, r)| (k, Record::from(r)))
                    .collect();
                match self.write_batch(items).await {
                    Ok(applied) => Response::Batch { applied },
                    Err(e) => error_response(e),
                }
            }
            Request::Purge { key, ts, node } => {
                let version = crate::version::Version::new(ts, node);
                match self.apply(Mutation::Purge { key, version }).await {
                    Ok(outcome) => Response::from(outcome),
                    Err(e) => error_response(e),
                }
            }
            _ => return None,
        })
    }

    /// Stores a hint durably and counts it (and any it displaced).
    pub async fn store_hint(&self, hint: Hint) -> Result<WriteOutcome, StoreError> {
        let target = hint.target.clone();
        let outcome = self.apply(Mutation::Hint(hint)).await?;
        Metrics::add(&self.stats.hints_stored, 1);
        if let WriteOutcome::Hinted { dropped } = outcome {
            if dropped > 0 {
                Metrics::add(&self.stats.hints_dropped, dropped);
                log::warn!(
                    "hint bound for {target} reached: dropped its {dropped} oldest hints; \
                     anti-entropy with {target} is queued"
                );
                self.repair_wanted
                    .lock()
                    .expect("repair_wanted")
                    .insert(target);
            }
        }
        Ok(outcome)
    }
}

fn clock_error(message: String) -> Response {
    Response::Error {
        code: "clock_drift".into(),
        message,
    }
}

fn error_response(e: StoreError) -> Response {
    Response::Error {
        code: match e {
            StoreError::DiskFull(_) => "disk_full",
            _ => "storage",
        }
        .into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;

    fn op(key: &str, ts: u64) -> WriteOp {
        WriteOp {
            key: Bytes::copy_from_slice(key.as_bytes()),
            record: Record::value(Version::new(ts, 1), Bytes::from_static(b"v")),
        }
    }

    #[actix::test]
    async fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", true).unwrap();
        let stats = Arc::new(Metrics::default());
        let addr = ReplicaActor::new(store.clone(), stats.clone()).start();
        let sends: Vec<_> = (0..200)
            .map(|i| addr.send(ApplyWrite(op(&format!("k{i}"), 10))))
            .collect();
        for s in futures_util::future::join_all(sends).await {
            assert_eq!(
                s.unwrap().unwrap(),
                WriteOutcome::Applied {
                    replaced_live: false
                }
            );
        }
        addr.send(Flush).await.unwrap();
        assert_eq!(stats.writes.load(Ordering::Relaxed), 200);
        let commits = stats.commits.load(Ordering::Relaxed);
        assert!(
            commits < 200,
            "200 concurrent writes took {commits} commits"
        );
        assert_eq!(store.len().unwrap(), 200);
    }

    #[actix::test]
    async fn an_older_write_is_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", false).unwrap();
        let addr = ReplicaActor::new(store, Arc::default()).start();
        addr.send(ApplyWrite(op("k", 10))).await.unwrap().unwrap();
        let r = addr.send(ApplyWrite(op("k", 9))).await.unwrap().unwrap();
        assert_eq!(
            r,
            WriteOutcome::Superseded {
                current: Version::new(10, 1)
            }
        );
    }
}
