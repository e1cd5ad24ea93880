//! Hint actor: hinted handoff — replays writes kept for a replica that was down.
//!
//! When a coordinator cannot reach a replica, another node stores the write in
//! its `hints` table tagged with the intended owner (see `coordinator.rs` and
//! [`crate::storage::Hint`]). This actor delivers them: every
//! [`REPLAY_INTERVAL`], and at once when gossip reports a target up
//! ([`PeerUp`]), it walks the target's hints oldest first in batches bounded
//! in bytes ([`crate::limits::batch_budget`]: a hint near the value limit goes
//! in a batch of its own) and count, sends each batch as one background
//! `WriteBatch` with a deadline, and after the target acknowledged it
//! (durably applied, last write wins) deletes exactly the hints it took.
//! Hints the target refused (a version too far ahead of its clock) stay and
//! are retried at the next pass; the walk goes on past them. Hint ids are
//! never reused or rewritten, so a hint stored while a batch was in flight is
//! never deleted unreplayed.
//!
//! A hint older than `max_age` is deleted unreplayed and counted: `max_age` is
//! never more than the tombstone grace period, since replaying a write older
//! than a purged tombstone could bring a deleted value back. Anti-entropy
//! covers what such hints carried.
//!
//! One replay per target runs at a time; a replay that fails (the target went
//! away, a deadline passed) ends, is counted in the `hint_replay` job's
//! errors, and the next pass starts over. Storage reads run on the blocking
//! pool, never on the peer thread. Messages: [`PeerUp`]. Timer: replay.

use crate::gossip::{Liveness, PeerUp};
use crate::limits::{batch_budget, BACKGROUND_BATCH_ITEMS};
use crate::metrics::{Job, Metrics};
use crate::peer::{PeerError, Peers};
use crate::replica::LocalReplica;
use crate::storage::{Hint, HintId, HintPage, Mutation, StoreError};
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as Deadline;
use std::time::Duration;

/// How often pending hints are retried.
pub const REPLAY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a replay stopped early.
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
    local: LocalReplica,
    peers: Peers,
    liveness: Arc<Liveness>,
    max_age_ms: u64,
    budget: usize,
    timeout: Deadline,
    replaying: HashSet<String>,
}

impl HintActor {
    /// `max_frame`: the peer frame limit, which bounds each batch;
    /// `timeout`: the deadline of each batch.
    pub fn new(
        local: LocalReplica,
        peers: Peers,
        liveness: Arc<Liveness>,
        max_age_ms: u64,
        max_frame: usize,
        timeout: Deadline,
    ) -> Self {
        HintActor {
            local,
            peers,
            liveness,
            max_age_ms,
            budget: batch_budget(max_frame),
            timeout,
            replaying: HashSet::new(),
        }
    }

    fn replay(&mut self, target: String, ctx: &mut Context<Self>) {
        if self.replaying.contains(&target)
            || self.liveness.is_down(&target)
            || !self.peers.contains(&target)
        {
            return;
        }
        self.replaying.insert(target.clone());
        let replay = Replay {
            local: self.local.clone(),
            peers: self.peers.clone(),
            target: target.clone(),
            max_age_ms: self.max_age_ms,
            budget: self.budget,
            timeout: self.timeout,
        };
        ctx.spawn(
            async move { replay.run().await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.replaying.remove(&target);
                    let jobs = &act.local.stats.jobs;
                    match result {
                        Ok(0) => jobs.progress(Job::HintReplay),
                        Ok(n) => {
                            jobs.progress(Job::HintReplay);
                            log::info!("replayed {n} hints to {target}");
                        }
                        Err(e) => {
                            jobs.failed(Job::HintReplay, format!("{target}: {e}"));
                            log::info!("hint replay to {target} paused: {e}");
                        }
                    }
                }),
        );
    }
}

/// One pass over one target's hints.
struct Replay {
    local: LocalReplica,
    peers: Peers,
    target: String,
    max_age_ms: u64,
    budget: usize,
    timeout: Deadline,
}

impl Replay {
    /// Sends every hint for the target in batches; answers how many were
    /// delivered.
    async fn run(&self) -> Result<u64, ReplayError> {
        let mut delivered = 0;
        let mut after: Option<HintId> = None;
        loop {
            let page = self.read_page(after.clone()).await?;
            let Some(next) = page.next else {
                return Ok(delivered);
            };
            after = Some(next);
            if !page.corrupt.is_empty() {
                self.local.stats.jobs.failed(
                    Job::HintReplay,
                    format!(
                        "{} hints for {} cannot be decoded",
                        page.corrupt.len(),
                        self.target
                    ),
                );
            }
            let now = self.local.hlc.wall_ms();
            let max_age = self.max_age_ms;
            let (expired, live): (Vec<_>, Vec<_>) = page
                .hints
                .into_iter()
                .partition(|(_, h)| now.saturating_sub(h.stored_ms) > max_age);
            if !expired.is_empty() {
                let n = expired.len() as u64;
                self.delete(expired.into_iter().map(|(id, _)| id).collect())
                    .await?;
                Metrics::add(&self.local.stats.hints_expired, n);
                log::warn!(
                    "dropped {n} hints for {} older than {max_age} ms",
                    self.target
                );
            }
            if live.is_empty() {
                continue;
            }
            delivered += self.send(live).await?;
            self.local.stats.jobs.progress(Job::HintReplay);
        }
    }

    async fn read_page(&self, after: Option<HintId>) -> Result<HintPage, StoreError> {
        let (store, target, budget) = (self.local.store.clone(), self.target.clone(), self.budget);
        tokio::task::spawn_blocking(move || {
            store.hints_for(&target, after.as_deref(), BACKGROUND_BATCH_ITEMS, budget)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Engine(format!("hint read task: {e}"))))
    }

    /// Sends one batch; deletes the hints the target took. Answers how many.
    async fn send(&self, live: Vec<(HintId, Hint)>) -> Result<u64, ReplayError> {
        let (ids, items): (Vec<HintId>, Vec<_>) = live
            .into_iter()
            .map(|(id, h)| (id, (h.key, WireRecord::from(h.record))))
            .unzip();
        let request = Request::WriteBatch { items };
        let refused = match self.peers.call(&self.target, request, self.timeout).await? {
            Response::Batch { refused, .. } => refused,
            _ => {
                return Err(ReplayError::Unexpected {
                    target: self.target.clone(),
                })
            }
        };
        let refused: HashSet<u32> = refused.into_iter().collect();
        if !refused.is_empty() {
            log::warn!(
                "{} refused {} hints (versions ahead of its clock); they are kept",
                self.target,
                refused.len()
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
            self.delete(taken).await?;
            Metrics::add(&self.local.stats.hints_replayed, n);
        }
        Ok(n)
    }

    async fn delete(&self, ids: Vec<HintId>) -> Result<(), StoreError> {
        self.local
            .apply(Mutation::DeleteHints(ids))
            .await
            .map(|_| ())
    }
}

impl Actor for HintActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(REPLAY_INTERVAL, |act, ctx| {
            let targets: Vec<String> = act.local.store.hint_tallies().into_keys().collect();
            if targets.is_empty() {
                act.local.stats.jobs.progress(Job::HintReplay);
            }
            for t in targets {
                act.replay(t, ctx);
            }
        });
    }
}

impl Handler<PeerUp> for HintActor {
    type Result = ();

    fn handle(&mut self, msg: PeerUp, ctx: &mut Context<Self>) {
        self.replay(msg.0, ctx);
    }
}
