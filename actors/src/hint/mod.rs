//! Hint actor: hinted handoff — delivers writes kept for a replica that was
//! down.
//!
//! When a coordinator cannot reach a replica, another node stores the write in
//! its `hints` table tagged with the intended owner (see `coordinator.rs` and
//! [`crate::storage::Hint`]). This actor delivers them, every
//! [`REPLAY_INTERVAL`] and at once when gossip reports a target up
//! ([`PeerUp`]):
//!
//! * **Replay**, while the target is up: the target's hints, oldest first, in
//!   batches bounded in bytes ([`crate::limits::batch_budget`]: a hint near
//!   the value limit goes in a batch of its own) and count, each sent as one
//!   background `WriteBatch` with a deadline; after the target acknowledged a
//!   batch (durably applied, last write wins) exactly the hints it took are
//!   deleted. Hints it refused (a version too far ahead of its clock) stay and
//!   are retried at the next pass; the walk goes on past them. A hint the
//!   target still refuses after `max_age` is rescued (below): a target that
//!   refuses forever cannot pin the hint floor, and with it tombstone GC.
//! * **Rescue**, while the target is down: hints older than `max_age` are
//!   delivered to another live replica of their key (this node first, if it
//!   is one), and deleted once one took them; anti-entropy later brings them
//!   to the target. A hint is never dropped before its write reached a live
//!   replica: if none is reachable it is kept.
//! * A target that is no longer a member (removed from the configuration)
//!   can never take its hints: they are all rescued at once.
//!
//! Which of these a pass does is [`pass_kind`] (`pass.rs`), a pure decision.
//!
//! Hint ids are never reused or rewritten, so a hint stored while a batch was
//! in flight is never deleted undelivered. Tombstone GC waits for every
//! node's hint floor (the oldest version it holds as a hint), so a hint
//! delivered late can never bring back a purged delete.
//!
//! One pass per target runs at a time; a pass that fails (the target went
//! away, a deadline passed) ends, is counted in the `hint_replay` job's
//! errors, and the next one starts over. Storage reads run on the blocking
//! pool, never on the peer thread. Messages: [`PeerUp`]. Timer: replay.

use crate::coordinator::NodeCore;
use crate::gossip::PeerUp;
use crate::limits::{batch_budget, record_wire_bytes, split_by_bytes, BACKGROUND_BATCH_ITEMS};
use crate::metrics::{Job, Metrics};
use crate::peer::PeerError;
use crate::record::Record;
use crate::storage::{Hint, HintId, HintPage, Mutation, StoreError};
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod pass;
pub use pass::{pass_kind, PassKind};

/// How often pending hints are retried.
pub const REPLAY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("{target} answered a batch with something else")]
    Unexpected { target: String },
}

pub struct HintActor {
    core: Arc<NodeCore>,
    max_age_ms: u64,
    budget: usize,
    timeout: Duration,
    running: HashSet<String>,
}

impl HintActor {
    /// `max_frame`: the peer frame limit, which bounds each batch;
    /// `timeout`: the deadline of each batch.
    pub fn new(core: Arc<NodeCore>, max_age_ms: u64, max_frame: usize, timeout: Duration) -> Self {
        HintActor {
            core,
            max_age_ms,
            budget: batch_budget(max_frame),
            timeout,
            running: HashSet::new(),
        }
    }

    fn start(&mut self, target: String, ctx: &mut Context<Self>) {
        if self.running.contains(&target) {
            return;
        }
        self.running.insert(target.clone());
        let member = self.core.view().peers.contains(&target);
        let kind = pass_kind(
            target == self.core.node_id,
            member,
            !self.core.liveness.is_down(&target),
            self.max_age_ms,
        );
        let up = matches!(kind, PassKind::Replay { .. });
        let pass = Pass {
            core: self.core.clone(),
            target: target.clone(),
            budget: self.budget,
            timeout: self.timeout,
        };
        ctx.spawn(
            async move {
                match kind {
                    PassKind::Replay {
                        rescue_refused_after_ms: age,
                    } => match pass.replay(age).await {
                        Ok(n) => Ok(n),
                        // A target up in gossip but failing every batch
                        // (disk full, overloaded, hostile) must not keep
                        // old hints forever either.
                        Err(e) => {
                            let _ = pass.rescue(Some(age)).await;
                            Err(e)
                        }
                    },
                    PassKind::Rescue { older_than_ms } => pass.rescue(older_than_ms).await,
                    PassKind::ApplyHere => pass.apply_own().await,
                }
            }
            .into_actor(self)
            .map(move |result, act, _| {
                act.running.remove(&target);
                let jobs = &act.core.local.stats.jobs;
                match result {
                    Ok(0) => jobs.progress(Job::HintReplay),
                    Ok(n) => {
                        jobs.progress(Job::HintReplay);
                        let how = if up {
                            "replayed"
                        } else {
                            "handed to live replicas"
                        };
                        log::info!("{how} {n} hints for {target}");
                    }
                    Err(e) => {
                        jobs.failed(Job::HintReplay, format!("{target}: {e}"));
                        log::info!("hint delivery for {target} paused: {e}");
                    }
                }
            }),
        );
    }
}

/// One pass over one target's hints.
struct Pass {
    core: Arc<NodeCore>,
    target: String,
    budget: usize,
    timeout: Duration,
}

impl Pass {
    /// Sends every hint to the target in batches; answers how many it took
    /// (or, refused by it for longer than `rescue_after_ms`, another
    /// replica took).
    async fn replay(&self, rescue_after_ms: u64) -> Result<u64, ReplayError> {
        let mut delivered = 0;
        let mut after: Option<HintId> = None;
        loop {
            let Some(page) = self.next_page(&mut after).await? else {
                return Ok(delivered);
            };
            if page.hints.is_empty() {
                continue;
            }
            let (taken, refused) = self.send_to(&self.target, page.hints).await?;
            delivered += taken;
            let now = self.core.hlc.wall_ms();
            let stuck: Vec<(HintId, Hint)> = refused
                .into_iter()
                .filter(|(_, h)| now.saturating_sub(h.stored_ms) > rescue_after_ms)
                .collect();
            if !stuck.is_empty() {
                log::warn!(
                    "{} refused {} hints for longer than hints.max_age_ms: handing them to \
                     other live replicas",
                    self.target,
                    stuck.len()
                );
                delivered += self.hand_to_replicas(stuck).await?;
            }
            self.core.local.stats.jobs.progress(Job::HintReplay);
        }
    }

    /// Hands hints older than `older_than_ms` (all: `None`) to another live
    /// replica of their key; answers how many one took.
    async fn rescue(&self, older_than_ms: Option<u64>) -> Result<u64, ReplayError> {
        let mut rescued = 0;
        let mut after: Option<HintId> = None;
        let now = self.core.hlc.wall_ms();
        loop {
            let Some(page) = self.next_page(&mut after).await? else {
                return Ok(rescued);
            };
            // Hints are stored in order, so the old ones come first.
            let old: Vec<(HintId, Hint)> = page
                .hints
                .into_iter()
                .take_while(|(_, h)| {
                    older_than_ms.is_none_or(|age| now.saturating_sub(h.stored_ms) > age)
                })
                .collect();
            if old.is_empty() {
                return Ok(rescued);
            }
            rescued += self.hand_to_replicas(old).await?;
            self.core.local.stats.jobs.progress(Job::HintReplay);
        }
    }

    /// Applies every hint addressed to this node here.
    async fn apply_own(&self) -> Result<u64, ReplayError> {
        let mut applied = 0;
        let mut after: Option<HintId> = None;
        loop {
            let Some(page) = self.next_page(&mut after).await? else {
                return Ok(applied);
            };
            if !page.hints.is_empty() {
                applied += self.apply_here(page.hints).await?;
            }
        }
    }

    /// Hands hints to another live replica of their key (this node first);
    /// answers how many one took. Hints no live replica took are kept: a
    /// holder that fails is skipped (the others still get theirs).
    async fn hand_to_replicas(&self, hints: Vec<(HintId, Hint)>) -> Result<u64, ReplayError> {
        let mut by_holder: BTreeMap<String, Vec<(HintId, Hint)>> = BTreeMap::new();
        for (id, h) in hints {
            if let Some(holder) = self.live_replica(&h.key) {
                by_holder.entry(holder).or_default().push((id, h));
            }
        }
        let mut rescued = 0;
        for (holder, hints) in by_holder {
            let n = if holder == self.core.node_id {
                self.apply_here(hints).await?
            } else {
                match self.send_to(&holder, hints).await {
                    Ok((n, _)) => n,
                    Err(e) => {
                        log::info!("{holder} took no rescued hints for {}: {e}", self.target);
                        0
                    }
                }
            };
            Metrics::add(&self.core.local.stats.hints_rescued, n);
            rescued += n;
        }
        Ok(rescued)
    }

    /// A live replica of `key` other than the target, this node first.
    fn live_replica(&self, key: &Bytes) -> Option<String> {
        let view = self.core.view();
        let me = self.core.node_id.as_str();
        let live: Vec<&str> = view
            .layout
            .preference_list(key, self.core.replication.n)
            .into_iter()
            .filter(|r| *r != self.target && (*r == me || !self.core.liveness.is_down(r)))
            .collect();
        if live.contains(&me) {
            Some(me.to_string())
        } else {
            live.first().map(|r| r.to_string())
        }
    }

    fn report_corrupt(&self, page: &HintPage) {
        if !page.corrupt.is_empty() {
            self.core.local.stats.jobs.failed(
                Job::HintReplay,
                format!(
                    "{} hints for {} cannot be decoded",
                    page.corrupt.len(),
                    self.target
                ),
            );
        }
    }

    /// The next page of the target's hints after `after` (moved past it,
    /// corrupt hints reported); `None` once the walk is done.
    async fn next_page(&self, after: &mut Option<HintId>) -> Result<Option<HintPage>, StoreError> {
        let page = self.read_page(after.clone()).await?;
        let Some(next) = page.next.clone() else {
            return Ok(None);
        };
        *after = Some(next);
        self.report_corrupt(&page);
        Ok(Some(page))
    }

    async fn read_page(&self, after: Option<HintId>) -> Result<HintPage, StoreError> {
        let (store, target, budget) = (
            self.core.local.store.clone(),
            self.target.clone(),
            self.budget,
        );
        tokio::task::spawn_blocking(move || {
            store.hints_for(&target, after.as_deref(), BACKGROUND_BATCH_ITEMS, budget)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Engine(format!("hint read task: {e}"))))
    }

    /// Sends hints to `node` in batches; deletes the ones it took. Answers
    /// how many, and the hints it refused (kept).
    async fn send_to(
        &self,
        node: &str,
        hints: Vec<(HintId, Hint)>,
    ) -> Result<(u64, Vec<(HintId, Hint)>), ReplayError> {
        let sizes: Vec<usize> = hints
            .iter()
            .map(|(_, h)| {
                record_wire_bytes(h.key.len(), h.record.value.as_ref().map_or(0, |v| v.len()))
            })
            .collect();
        let mut taken_total = 0;
        let mut kept = Vec::new();
        let mut rest = hints;
        for n in split_by_bytes(&sizes, self.budget, BACKGROUND_BATCH_ITEMS) {
            let tail = rest.split_off(n);
            let batch = std::mem::replace(&mut rest, tail);
            let items = batch
                .iter()
                .map(|(_, h)| (h.key.clone(), WireRecord::from(h.record.clone())))
                .collect();
            let request = Request::WriteBatch { items };
            let view = self.core.view();
            let refused = match view.peers.call(node, request, self.timeout).await? {
                Response::Batch { refused, .. } => refused,
                _ => {
                    return Err(ReplayError::Unexpected {
                        target: node.to_string(),
                    })
                }
            };
            let refused_set: HashSet<u32> = refused.iter().copied().collect();
            let ids = batch.iter().map(|(id, _)| id.clone()).collect();
            taken_total += self.delete_taken(node, ids, refused).await?;
            kept.extend(
                batch
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| refused_set.contains(&(*i as u32)))
                    .map(|(_, h)| h),
            );
        }
        Ok((taken_total, kept))
    }

    /// Applies hints to this node's own replica (it is one of the key's).
    async fn apply_here(&self, hints: Vec<(HintId, Hint)>) -> Result<u64, ReplayError> {
        let (ids, items): (Vec<HintId>, Vec<(Bytes, Record)>) = hints
            .into_iter()
            .map(|(id, h)| (id, (h.key, h.record)))
            .unzip();
        let outcome = self.core.local.write_batch(items).await?;
        self.delete_taken(&self.core.node_id, ids, outcome.refused)
            .await
    }

    async fn delete_taken(
        &self,
        node: &str,
        ids: Vec<HintId>,
        refused: Vec<u32>,
    ) -> Result<u64, ReplayError> {
        let refused: HashSet<u32> = refused.into_iter().collect();
        if !refused.is_empty() {
            log::warn!(
                "{node} refused {} hints for {} (versions ahead of its clock); they are kept",
                refused.len(),
                self.target
            );
        }
        let taken: Vec<HintId> = ids
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(&(*i as u32)))
            .map(|(_, id)| id)
            .collect();
        let n = taken.len() as u64;
        if n > 0 {
            self.core.local.apply(Mutation::DeleteHints(taken)).await?;
            if node == self.target {
                Metrics::add(&self.core.local.stats.hints_replayed, n);
            }
        }
        Ok(n)
    }
}

impl Actor for HintActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(REPLAY_INTERVAL, |act, ctx| {
            let targets: Vec<String> = act.core.local.store.hint_tallies().into_keys().collect();
            if targets.is_empty() {
                act.core.local.stats.jobs.progress(Job::HintReplay);
            }
            for t in targets {
                act.start(t, ctx);
            }
        });
    }
}

impl Handler<PeerUp> for HintActor {
    type Result = ();

    fn handle(&mut self, msg: PeerUp, ctx: &mut Context<Self>) {
        self.start(msg.0, ctx);
    }
}
