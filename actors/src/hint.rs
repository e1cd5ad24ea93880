//! Hint actor: hinted handoff — replays writes kept for a replica that was down.
//!
//! When a coordinator cannot reach a replica, another node stores the write in
//! its `hints` table tagged with the intended owner (see `partition.rs` and
//! [`crate::storage::Hint`]). This actor delivers them: every
//! [`REPLAY_INTERVAL`], and at once when gossip reports a target up
//! ([`PeerUp`]), it reads the target's oldest hints in batches of
//! [`REPLAY_BATCH`], sends each batch as one background `WriteBatch`, and after
//! the target acknowledged it (durably applied, last write wins) deletes exactly
//! those hints. Hint ids are never reused or rewritten, so a hint stored while a
//! batch was in flight is never deleted unreplayed.
//!
//! A hint older than `max_age` is deleted unreplayed and counted: `max_age` is
//! never more than the tombstone grace period, since replaying a write older
//! than a purged tombstone could bring a deleted value back. Anti-entropy
//! covers what such hints carried.
//!
//! One replay per target runs at a time. Messages: [`PeerUp`]. Timer: replay.

use crate::gossip::{Liveness, PeerUp};
use crate::metrics::Metrics;
use crate::peer::{Call, PeerActor};
use crate::replica::LocalReplica;
use crate::storage::{HintId, Mutation};
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How often pending hints are retried.
pub const REPLAY_INTERVAL: Duration = Duration::from_secs(1);
/// Hints sent in one batch.
pub const REPLAY_BATCH: usize = 256;

pub struct HintActor {
    local: LocalReplica,
    peers: HashMap<String, Addr<PeerActor>>,
    liveness: Arc<Liveness>,
    max_age_ms: u64,
    replaying: HashSet<String>,
}

impl HintActor {
    pub fn new(
        local: LocalReplica,
        peers: HashMap<String, Addr<PeerActor>>,
        liveness: Arc<Liveness>,
        max_age_ms: u64,
    ) -> Self {
        HintActor {
            local,
            peers,
            liveness,
            max_age_ms,
            replaying: HashSet::new(),
        }
    }

    fn replay(&mut self, target: String, ctx: &mut Context<Self>) {
        if self.replaying.contains(&target) || self.liveness.is_down(&target) {
            return;
        }
        let Some(peer) = self.peers.get(&target).cloned() else {
            return;
        };
        self.replaying.insert(target.clone());
        let (local, max_age) = (self.local.clone(), self.max_age_ms);
        let t = target.clone();
        ctx.spawn(
            async move { replay_to(&local, &t, &peer, max_age).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.replaying.remove(&target);
                    match result {
                        Ok(0) => {}
                        Ok(n) => log::info!("replayed {n} hints to {target}"),
                        Err(e) => log::info!("hint replay to {target} paused: {e}"),
                    }
                }),
        );
    }
}

/// Sends every hint for `target` in batches; answers how many were delivered.
async fn replay_to(
    local: &LocalReplica,
    target: &str,
    peer: &Addr<PeerActor>,
    max_age_ms: u64,
) -> Result<u64, String> {
    let mut delivered = 0;
    loop {
        let batch = local
            .store
            .hints_for(target, REPLAY_BATCH)
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(delivered);
        }
        let now = local.hlc.wall_ms();
        let (expired, live): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(_, h)| now.saturating_sub(h.stored_ms) > max_age_ms);
        if !expired.is_empty() {
            let n = expired.len() as u64;
            delete(local, expired.into_iter().map(|(id, _)| id).collect()).await?;
            Metrics::add(&local.stats.hints_expired, n);
            log::warn!("dropped {n} hints for {target} older than {max_age_ms} ms");
        }
        if live.is_empty() {
            continue;
        }
        let (ids, items): (Vec<HintId>, Vec<_>) = live
            .into_iter()
            .map(|(id, h)| (id, (h.key, WireRecord::from(h.record))))
            .unzip();
        match peer.send(Call(Request::WriteBatch { items })).await {
            Ok(Ok(Response::Batch { .. })) => {}
            Ok(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        }
        let n = ids.len() as u64;
        delete(local, ids).await?;
        Metrics::add(&local.stats.hints_replayed, n);
        delivered += n;
    }
}

async fn delete(local: &LocalReplica, ids: Vec<HintId>) -> Result<(), String> {
    local
        .apply(Mutation::DeleteHints(ids))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Actor for HintActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(REPLAY_INTERVAL, |act, ctx| {
            let targets: Vec<String> = act.local.store.hint_tallies().into_keys().collect();
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
