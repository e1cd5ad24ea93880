//! Replica actor: owns this node's write path, with group commit.
//!
//! Every change to the local store — a write from a local coordinator, a
//! peer, a hint replay or a repair; a hint; a purge; the node's own state —
//! arrives here as an [`Apply`] of one or more mutations. While a commit is
//! on disk, new work queues; when it returns, everything queued goes into the
//! next transaction and is committed at once (one fsync for the whole batch),
//! then every sender is answered. Under concurrency this turns N fsyncs into
//! about one per disk round trip; alone, a write commits immediately. The
//! mutations of one `Apply` always commit together.
//!
//! **Bounds.** The queue holds at most [`ReplicaLimits::max_queued_ops`]
//! mutations and [`ReplicaLimits::max_queued_bytes`] bytes; work beyond is
//! refused at once with [`StoreError::Overloaded`] (HTTP 503 with
//! `Retry-After`), never queued without limit. One `Apply` larger than the
//! whole byte bound is taken alone when the queue is empty. Background work
//! (anti-entropy and hint batches, purges: [`Lane::Background`]) may hold at
//! most half of either bound, so a flood of it — a peer's batches, a
//! catch-up after a restart — cannot take the room client writes need.
//!
//! **Failures.** A full disk refuses the batch (the store reopens its
//! handle, and writes resume once space is freed). Any other I/O failure of a
//! commit — a failed fsync above all — means the page cache may show data
//! that never reached the disk: the actor logs it and stops the node
//! (fail-stop, [`EXIT_IO_FAILURE`]); a restart reads the file again. A
//! mutation that fails on its own (a corrupt record under its key) fails
//! alone; the rest of the batch commits.
//!
//! The commit itself runs on tokio's blocking pool so the actor's thread keeps
//! accepting messages. Reads never come here: they open redb read transactions
//! directly ([`crate::storage::Store::get`]).
//!
//! Messages: [`Apply`] (answers once durable), [`Flush`] (answers when nothing
//! is queued or committing; used at shutdown).

pub mod wanted;

pub use wanted::RepairWanted;

use crate::metrics::Metrics;
use crate::record::Record;
use crate::storage::{Hint, ItemResult, Mutation, Store, StoreError, WriteOp, WriteOutcome};
use crate::version::Hlc;
use actix::prelude::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most mutations one transaction takes; the rest wait for the next commit.
pub const MAX_BATCH_OPS: usize = 1024;
/// Most bytes one transaction takes (a single larger `Apply` goes alone).
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Exit status of a node stopped by an I/O failure of its store.
pub const EXIT_IO_FAILURE: i32 = 74;

/// Bounds of the write queue.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaLimits {
    pub max_queued_ops: usize,
    pub max_queued_bytes: usize,
}

impl Default for ReplicaLimits {
    fn default() -> Self {
        ReplicaLimits {
            max_queued_ops: 65_536,
            max_queued_bytes: 256 << 20,
        }
    }
}

/// Which share of the write queue a job counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Part of a client's request (a coordinator's write, a hint for it).
    Foreground,
    /// Anti-entropy and hint batches, purges: at most half the queue.
    Background,
}

/// Apply mutations durably, in one commit; answers one result per mutation
/// once it is on disk, or the error that failed the whole commit.
#[derive(Message)]
#[rtype(result = "Result<Vec<ItemResult>, StoreError>")]
pub struct Apply {
    pub mutations: Vec<Mutation>,
    pub lane: Lane,
}

impl Apply {
    pub fn foreground(mutations: Vec<Mutation>) -> Apply {
        Apply {
            mutations,
            lane: Lane::Foreground,
        }
    }

    pub fn background(mutations: Vec<Mutation>) -> Apply {
        Apply {
            mutations,
            lane: Lane::Background,
        }
    }
}

/// Answers once every write received before it is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

type Reply = oneshot::Sender<Result<Vec<ItemResult>, StoreError>>;

struct Job {
    mutations: Vec<Mutation>,
    weight: usize,
    lane: Lane,
    reply: Reply,
}

/// What the actor does when the store can no longer be trusted.
pub type OnFatal = Arc<dyn Fn(&StoreError) + Send + Sync>;

/// Stops the process: the default reaction to a fatal storage error.
pub fn exit_on_fatal() -> OnFatal {
    Arc::new(|e: &StoreError| {
        log::error!(
            "stopping: the store's I/O failed ({e}); what is on disk is unknown, so this node \
             stops instead of serving from memory. Restart it to recover from the file."
        );
        std::process::exit(EXIT_IO_FAILURE);
    })
}

pub struct ReplicaActor {
    store: Store,
    /// Most mutations per commit (1 turns group commit off).
    max_batch: usize,
    limits: ReplicaLimits,
    stats: Arc<Metrics>,
    queue: VecDeque<Job>,
    queued_ops: usize,
    queued_bytes: usize,
    /// Of those, background work's.
    background_ops: usize,
    background_bytes: usize,
    committing: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    on_fatal: OnFatal,
    /// Set once the store failed fatally: everything is refused with it.
    failed: Option<StoreError>,
}

impl ReplicaActor {
    pub fn new(store: Store, stats: Arc<Metrics>) -> Self {
        ReplicaActor {
            store,
            max_batch: MAX_BATCH_OPS,
            limits: ReplicaLimits::default(),
            stats,
            queue: VecDeque::new(),
            queued_ops: 0,
            queued_bytes: 0,
            background_ops: 0,
            background_bytes: 0,
            committing: false,
            flush_waiters: Vec::new(),
            on_fatal: exit_on_fatal(),
            failed: None,
        }
    }

    /// Commits each mutation alone (for measuring group commit's benefit).
    pub fn without_group_commit(mut self) -> Self {
        self.max_batch = 1;
        self
    }

    pub fn with_limits(mut self, limits: ReplicaLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces what happens on a fatal storage error (tests).
    pub fn on_fatal(mut self, f: OnFatal) -> Self {
        self.on_fatal = f;
        self
    }

    /// Takes the next batch of whole jobs off the queue, bounded by count and
    /// bytes (the first job always goes).
    fn next_batch(&mut self) -> Vec<Job> {
        let (mut ops, mut bytes) = (0, 0);
        let mut batch = Vec::new();
        while let Some(job) = self.queue.front() {
            let n = job.mutations.len();
            if !batch.is_empty()
                && (ops + n > self.max_batch || bytes + job.weight > MAX_BATCH_BYTES)
            {
                break;
            }
            ops += n;
            bytes += job.weight;
            let job = self.queue.pop_front().expect("front");
            self.queued_ops -= n;
            self.queued_bytes -= job.weight;
            if job.lane == Lane::Background {
                self.background_ops -= n;
                self.background_bytes -= job.weight;
            }
            batch.push(job);
        }
        batch
    }

    fn start_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        if self.queue.is_empty() || self.failed.is_some() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
            return;
        }
        self.committing = true;
        let jobs = self.next_batch();
        let mut mutations = Vec::with_capacity(jobs.iter().map(|j| j.mutations.len()).sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.reply, job.mutations.len()));
            mutations.extend(job.mutations);
        }
        let store = self.store.clone();
        let commit = tokio::task::spawn_blocking(move || store.apply(&mutations));
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
                    let mut outcomes = outcomes.into_iter();
                    for (reply, n) in replies {
                        let _ = reply.send(Ok(outcomes.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    act.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    log::error!("a commit of {} requests failed: {e}", replies.len());
                    if e.is_fatal() {
                        (act.on_fatal)(&e);
                    }
                    for (reply, _) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    if e.is_fatal() {
                        // Nothing more is committed on a store that cannot
                        // be trusted (when the fatal hook did not exit).
                        act.fail_queue(&e);
                        return;
                    }
                }
            }
            act.start_commit(ctx);
        }));
    }

    fn fail_queue(&mut self, e: &StoreError) {
        for job in self.queue.drain(..) {
            let _ = job.reply.send(Err(e.clone()));
        }
        self.queued_ops = 0;
        self.queued_bytes = 0;
        self.background_ops = 0;
        self.background_bytes = 0;
        self.failed = Some(e.clone());
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn enqueue(
        &mut self,
        mutations: Vec<Mutation>,
        lane: Lane,
        ctx: &mut Context<Self>,
    ) -> ApplyFuture {
        if let Some(e) = self.failed.clone() {
            return Box::pin(async move { Err(e) });
        }
        let n = mutations.len();
        let weight: usize = mutations.iter().map(Mutation::weight).sum();
        let l = &self.limits;
        let fits = self.queue.is_empty()
            || (self.queued_ops + n <= l.max_queued_ops
                && self.queued_bytes + weight <= l.max_queued_bytes);
        let background_fits = lane == Lane::Foreground
            || self.background_ops == 0
            || (self.background_ops + n <= l.max_queued_ops / 2
                && self.background_bytes + weight <= l.max_queued_bytes / 2);
        if !fits || !background_fits {
            Metrics::add(&self.stats.writes_overloaded, n as u64);
            let err = StoreError::Overloaded(format!(
                "the write queue holds {} mutations and {} bytes, {} and {} of them \
                 background work (limits {} and {}, half of them for background work)",
                self.queued_ops,
                self.queued_bytes,
                self.background_ops,
                self.background_bytes,
                l.max_queued_ops,
                l.max_queued_bytes
            ));
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = oneshot::channel();
        self.queued_ops += n;
        self.queued_bytes += weight;
        if lane == Lane::Background {
            self.background_ops += n;
            self.background_bytes += weight;
        }
        self.queue.push_back(Job {
            mutations,
            weight,
            lane,
            reply: tx,
        });
        self.start_commit(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Engine("replica stopped".into())))
        })
    }
}

type ApplyFuture = ResponseFuture<Result<Vec<ItemResult>, StoreError>>;

impl Actor for ReplicaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Apply> for ReplicaActor {
    type Result = ApplyFuture;

    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.mutations, msg.lane, ctx)
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

/// How a batch of records (hint replay, anti-entropy) was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records newer than what was stored.
    pub applied: u32,
    /// Positions of records that were not stored and must be kept by the
    /// sender: too far ahead of this node's clock, or failing on their own.
    pub refused: Vec<u32>,
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
    /// Peers whose shared ranges need anti-entropy soon; served by the
    /// repair actor, which wakes on it.
    pub repair_wanted: Arc<RepairWanted>,
}

/// Why the local replica serves no reads right now.
pub const NOT_SERVING: &str = "this replica was down longer than the tombstone grace period and \
                               serves no reads until anti-entropy completes";

impl LocalReplica {
    /// Whether reads are served (see [`LocalReplica::repairing`]).
    pub fn serving_reads(&self) -> bool {
        !self.repairing.load(Ordering::Relaxed)
    }

    /// The local record of `key` for a coordinator's read.
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        if !self.serving_reads() {
            return Err(StoreError::NotServing(NOT_SERVING.into()));
        }
        self.store.get(key)
    }

    /// Applies mutations durably in one commit.
    pub async fn apply_all(&self, m: Vec<Mutation>) -> Result<Vec<ItemResult>, StoreError> {
        self.send(Apply::foreground(m)).await
    }

    /// Applies background work (anti-entropy and hint batches, purges)
    /// durably in one commit, within the background share of the queue.
    pub async fn apply_background(&self, m: Vec<Mutation>) -> Result<Vec<ItemResult>, StoreError> {
        self.send(Apply::background(m)).await
    }

    async fn send(&self, apply: Apply) -> Result<Vec<ItemResult>, StoreError> {
        self.writer
            .send(apply)
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("replica actor: {e}"))))
    }

    /// Applies one mutation durably.
    pub async fn apply(&self, m: Mutation) -> Result<WriteOutcome, StoreError> {
        let mut out = self.apply_all(vec![m]).await?;
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Engine("no outcome for a mutation".into())))
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.apply(Mutation::Put(op)).await
    }

    /// Refuses a version too far ahead of our clock (counted), else folds it in.
    pub fn check_clock(&self, record: &Record) -> Result<(), String> {
        self.hlc.observe(record.version).map_err(|e| {
            Metrics::add(&self.stats.clock_refusals, 1);
            log::warn!("refused a version from a peer: {e}");
            e.to_string()
        })
    }

    /// Stores many records in one commit, each if newer. Records further ahead
    /// of the cluster's clock than the allowed drift are not stored: their
    /// positions come back in `refused`, so their sender keeps them.
    pub async fn write_batch(
        &self,
        items: Vec<(Bytes, Record)>,
    ) -> Result<BatchOutcome, StoreError> {
        let mut refused = Vec::new();
        let mut positions = Vec::with_capacity(items.len());
        let mut mutations = Vec::with_capacity(items.len());
        for (i, (key, record)) in items.into_iter().enumerate() {
            if self.check_clock(&record).is_err() {
                refused.push(i as u32);
                continue;
            }
            positions.push(i as u32);
            mutations.push(Mutation::Put(WriteOp { key, record }));
        }
        let mut applied = 0;
        if !mutations.is_empty() {
            let outcomes = self.apply_background(mutations).await?;
            for (pos, result) in positions.into_iter().zip(outcomes) {
                match result {
                    Ok(WriteOutcome::Applied { .. }) => applied += 1,
                    Ok(_) => {}
                    Err(_) => refused.push(pos),
                }
            }
        }
        refused.sort_unstable();
        Ok(BatchOutcome { applied, refused })
    }

    /// Reserves timestamps up to `ceiling_ms` durably (see `Hlc::reserved_ms`).
    pub async fn reserve_clock(&self, ceiling_ms: u64) -> Result<(), StoreError> {
        self.apply(Mutation::Meta {
            alive_ms: None,
            clock_ceiling_ms: Some(ceiling_ms),
        })
        .await?;
        self.hlc.set_reserved_ms(ceiling_ms);
        Ok(())
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
                self.repair_wanted.want(&target);
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
