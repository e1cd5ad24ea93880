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

use crate::record::Record;
use crate::storage::{Store, StoreError, WriteOp, WriteOutcome};
use crate::version::Hlc;
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most writes one transaction takes; the rest wait for the next commit.
pub const MAX_BATCH_OPS: usize = 1024;
/// Most value bytes one transaction takes (a single larger write goes alone).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Counters of the write path, shared with metrics and the benchmark.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Writes applied or superseded (acknowledged to their senders).
    pub writes: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Writes from peers refused because their version was too far ahead.
    pub clock_refusals: AtomicU64,
}

/// Apply one write durably; answers after its transaction committed.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct ApplyWrite(pub WriteOp);

/// Answers once every write received before it is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

pub struct ReplicaActor {
    store: Store,
    stats: Arc<WriteStats>,
    queue: Vec<(WriteOp, Reply)>,
    committing: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
}

impl ReplicaActor {
    pub fn new(store: Store, stats: Arc<WriteStats>) -> Self {
        ReplicaActor {
            store,
            stats,
            queue: Vec::new(),
            committing: false,
            flush_waiters: Vec::new(),
        }
    }

    /// Takes the next batch off the queue, bounded by count and bytes.
    fn next_batch(&mut self) -> Vec<(WriteOp, Reply)> {
        let mut bytes = 0;
        let mut n = 0;
        for (op, _) in &self.queue {
            let len = op.key.len() + op.record.value.as_ref().map_or(0, |v| v.len());
            if n > 0 && (n == MAX_BATCH_OPS || bytes + len > MAX_BATCH_BYTES) {
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
                    act.stats.failures.fetch_add(1, Ordering::Relaxed);
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
        let (tx, rx) = oneshot::channel();
        self.queue.push((msg.0, tx));
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
    pub stats: Arc<WriteStats>,
}

impl LocalReplica {
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.store.get(key)
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.writer
            .send(ApplyWrite(op))
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("replica actor: {e}"))))
    }

    /// Serves one request from a peer coordinator.
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Read { key } => match self.read(&key) {
                Ok(record) => Response::Read {
                    record: record.map(WireRecord::from),
                },
                Err(e) => error_response(e),
            },
            Request::Write { key, record } => {
                let record = Record::from(record);
                if let Err(e) = self.hlc.observe(record.version) {
                    self.stats.clock_refusals.fetch_add(1, Ordering::Relaxed);
                    log::warn!("refused a write: {e}");
                    return Response::Error {
                        code: "clock_drift".into(),
                        message: e.to_string(),
                    };
                }
                match self.write(WriteOp { key, record }).await {
                    Ok(outcome) => Response::from(outcome),
                    Err(e) => error_response(e),
                }
            }
        }
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
    use bytes::Bytes;

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
        let stats = Arc::new(WriteStats::default());
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
