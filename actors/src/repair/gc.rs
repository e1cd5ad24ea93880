//! Tombstone garbage collection.
//!
//! A tombstone older than the grace period is purged only when every replica
//! of its key is up, and only when no node holds a hint with an older
//! version (every node gossips its hint floor, the oldest version among its
//! hints; see [`crate::storage::Store::hints_floor`]) — so no hint, however
//! late, can bring a purged value back. Then it is first pushed to all N
//! replicas (each then holds it or something newer), then each deletes it
//! only if its stored record is still exactly that tombstone. A timer alone never purges, so a replica
//! that missed the delete cannot bring the value back. Only the key's first
//! replica runs this, to avoid duplicate work.
//!
//! A pass reads the tombstone index in time order (storage keeps it sorted by
//! version timestamp), so it visits only tombstones old enough to purge, a
//! page of [`GC_PAGE`] at a time. Every storage read runs on the blocking
//! pool, never on the peer thread; tombstones of one page that share a
//! replica set travel in batches bounded in bytes, each call with the
//! background deadline; the pass yields between pages. A failed group is
//! retried at the next pass.

use crate::coordinator::NodeCore;
use crate::gossip::effective_floor;
use crate::limits::{batch_budget, record_wire_bytes, split_by_bytes, BACKGROUND_BATCH_ITEMS};
use crate::metrics::{Job, Metrics};
use crate::peer::PeerError;
use crate::record::Record;
use crate::storage::{Mutation, StoreError};
use crate::version::pack;
use crate::wire::{Request, Response, WireRecord};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Tombstones read from the index per page.
pub const GC_PAGE: usize = 512;

/// How long after a write's version was issued the write, or a hint of it,
/// may still land on some node: the request deadline for the replicas and
/// then for each of the `members` a hint may be offered to in turn, a frame
/// held in a connection until it is given up as stalled, and the clock
/// drift between the coordinator and the GC node.
pub fn in_flight_ms(
    request_timeout: std::time::Duration,
    members: usize,
    max_drift_ms: u64,
) -> u64 {
    let deadline = u64::try_from(request_timeout.as_millis()).unwrap_or(u64::MAX);
    deadline
        .saturating_mul(members as u64 + 1)
        .saturating_add(u64::try_from(crate::peer::WRITE_STALL.as_millis()).unwrap_or(u64::MAX))
        .saturating_add(max_drift_ms)
}

/// Why a group of tombstones was not purged this time.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("{0} answered a purge with something else")]
    Unexpected(String),
}

/// Purges tombstones older than the grace period that every replica holds.
#[derive(Clone)]
pub struct TombstoneGc {
    core: Arc<NodeCore>,
    grace_ms: u64,
    max_frame: usize,
}

impl TombstoneGc {
    pub fn new(core: Arc<NodeCore>, grace_ms: u64, max_frame: usize) -> Self {
        TombstoneGc {
            core,
            grace_ms,
            max_frame,
        }
    }

    /// One pass over every tombstone older than the grace period; answers
    /// how many were purged.
    pub async fn pass(&self) -> u64 {
        let jobs = &self.core.local.stats.jobs;
        let hlc = &self.core.hlc;
        // A clock we cannot vouch for, or one running ahead, would make the
        // grace period shorter than it is.
        if hlc.stepped() || hlc.is_ahead_of_cluster() {
            jobs.progress(Job::TombstoneGc);
            return 0;
        }
        let now_ms = hlc.cluster_ms();
        let cutoff_ms = now_ms.saturating_sub(self.grace_ms);
        // Never purge a tombstone some node still holds, or may yet store,
        // an older hint against: replaying it later would bring the value
        // back. Writes still in flight count as hints to come.
        // Peers counted: those a live layout version places, and the others
        // while they are up (a standby node never started, or one that left
        // and stopped, would hold GC back for good; one that left keeps its
        // hints counted while it runs).
        let view = self.core.view();
        let peers: Vec<String> = view
            .peers
            .ids()
            .into_iter()
            .filter(|p| view.places(p) || !self.core.liveness.is_down(p))
            .collect();
        drop(view);
        let in_flight = in_flight_ms(
            self.core.replication.request_timeout,
            peers.len() + 1,
            hlc.max_drift_ms(),
        );
        let own = self.core.local.store.hints_floor();
        let floor = effective_floor(own, now_ms, in_flight).min(self.core.liveness.min_hint_floor(
            peers.iter().map(String::as_str),
            in_flight,
            now_ms,
            hlc.mono_ms(),
        ));
        let cutoff = pack(cutoff_ms, 0).min(floor);
        let mut purged = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let store = self.core.local.store.clone();
            let cursor = after.clone();
            let page = tokio::task::spawn_blocking(move || {
                store.tombstones_before(cutoff, cursor.as_deref(), GC_PAGE)
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Engine(format!("scan task: {e}"))));
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    jobs.failed(Job::TombstoneGc, e.to_string());
                    log::warn!("tombstone scan failed: {e}");
                    return purged;
                }
            };
            let Some((last, _)) = page.last() else {
                jobs.progress(Job::TombstoneGc);
                return purged;
            };
            after = Some(last.clone());
            let keys = page.into_iter().map(|(_, k)| k).collect();
            purged += self.purge_page(keys, cutoff).await;
            jobs.progress(Job::TombstoneGc);
            tokio::task::yield_now().await;
        }
    }

    /// Purges what it can of one page of tombstone keys.
    async fn purge_page(&self, keys: Vec<Bytes>, cutoff: u64) -> u64 {
        let view = self.core.view();
        // While a layout change is in flight a tombstone's replicas are
        // those of several versions, and a new owner may still be pulling:
        // nothing is purged until one version is live again.
        if view.history.changing() {
            return 0;
        }
        let me = self.core.node_id.as_str();
        let n = self.core.replication.n;
        // Only keys whose first replica we are, with every replica up.
        let mine: Vec<(Bytes, Vec<String>)> = keys
            .into_iter()
            .filter_map(|k| {
                let pref = view.layout.preference_list(&k, n);
                if pref.first() != Some(&me) {
                    return None;
                }
                if pref.iter().any(|r| self.core.liveness.is_down(r)) {
                    return None;
                }
                let remotes = pref[1..].iter().map(|s| s.to_string()).collect();
                Some((k, remotes))
            })
            .collect();
        if mine.is_empty() {
            return 0;
        }
        // The records as they are now: still the same old tombstone?
        let store = self.core.local.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(mine.len());
            for (k, remotes) in mine {
                match store.get(&k) {
                    Ok(Some(r)) => out.push((k, r, remotes)),
                    Ok(None) => {}
                    // One corrupt record is skipped, not the whole page.
                    Err(e @ StoreError::Corrupt(_)) => log::error!("tombstone GC: {e}"),
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, StoreError>(out)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Engine(format!("read task: {e}"))));
        let records = match read {
            Ok(r) => r,
            Err(e) => {
                self.core
                    .local
                    .stats
                    .jobs
                    .failed(Job::TombstoneGc, e.to_string());
                return 0;
            }
        };
        let mut groups: BTreeMap<Vec<String>, Vec<(Bytes, Record)>> = BTreeMap::new();
        for (k, r, remotes) in records {
            if r.is_tombstone() && r.version.ts < cutoff {
                groups.entry(remotes).or_default().push((k, r));
            }
        }
        let mut purged = 0;
        for (remotes, tombstones) in groups {
            match self.purge_group(&remotes, tombstones).await {
                Ok(n) => purged += n,
                Err(e) => {
                    self.core
                        .local
                        .stats
                        .jobs
                        .failed(Job::TombstoneGc, e.to_string());
                    log::debug!("tombstone purge deferred: {e}");
                }
            }
        }
        purged
    }

    /// Pushes the tombstones to every remote replica, asks each to purge
    /// them, then purges them here.
    async fn purge_group(
        &self,
        remotes: &[String],
        tombstones: Vec<(Bytes, Record)>,
    ) -> Result<u64, GcError> {
        let view = self.core.view();
        let deadline = self.core.replication.background_timeout;
        let sizes: Vec<usize> = tombstones
            .iter()
            .map(|(k, _)| record_wire_bytes(k.len(), 0))
            .collect();
        let batches = split_by_bytes(&sizes, batch_budget(self.max_frame), BACKGROUND_BATCH_ITEMS);
        let mut purged = 0;
        let mut rest = tombstones.as_slice();
        for n in batches {
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let items: Vec<(Bytes, WireRecord)> = batch
                .iter()
                .map(|(k, r)| (k.clone(), WireRecord::from(r.clone())))
                .collect();
            // A replica that refuses a tombstone (its clock is far behind)
            // might keep an older value: that key is not purged anywhere.
            let mut refused = std::collections::HashSet::new();
            for r in remotes {
                let request = Request::WriteBatch {
                    items: items.clone(),
                };
                match view.peers.call(r, request, deadline).await? {
                    Response::Batch { refused: no, .. } => refused.extend(no),
                    _ => return Err(GcError::Unexpected(r.clone())),
                }
            }
            let batch: Vec<&(Bytes, Record)> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(&(*i as u32)))
                .map(|(_, t)| t)
                .collect();
            if batch.is_empty() {
                continue;
            }
            let keys: Vec<(Bytes, u64, u64)> = batch
                .iter()
                .map(|(k, r)| (k.clone(), r.version.ts, r.version.node))
                .collect();
            for r in remotes {
                let request = Request::PurgeMany {
                    items: keys.clone(),
                };
                match view.peers.call(r, request, deadline).await? {
                    Response::Purged { .. } => {}
                    _ => return Err(GcError::Unexpected(r.clone())),
                }
            }
            let mutations = batch
                .iter()
                .map(|(k, r)| Mutation::Purge {
                    key: k.clone(),
                    version: r.version,
                })
                .collect();
            let outcomes = self.core.local.apply_background(mutations).await?;
            let n = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(crate::storage::WriteOutcome::Done { changed: true })))
                .count() as u64;
            Metrics::add(&self.core.local.stats.tombstones_purged, n);
            purged += n;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::storage::{Store, WriteOp};
    use crate::version::{Clock, SystemClock, Version};
    use std::time::{Duration, Instant};

    /// A one-node core (N = 1) whose writer runs on its own arbiter.
    fn single_node(store: Store) -> Arc<NodeCore> {
        crate::coordinator::testing::node_core(store, &["n1"], 1)
    }

    fn tombstones(store: &Store, prefix: &str, n: usize, ms: u64) {
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            let batch: Vec<Mutation> = chunk
                .iter()
                .map(|i| {
                    Mutation::Put(WriteOp {
                        key: Bytes::from(format!("{prefix}-{i:06}")),
                        record: Record::tombstone(Version::new(crate::version::pack(ms, 0), 1)),
                    })
                })
                .collect();
            store.apply(&batch).unwrap();
        }
    }

    /// Regression (05 finding 4): GC walked the whole tombstone index
    /// synchronously, every second, on the thread that also runs gossip and
    /// every peer session; with many tombstones peers missed heartbeats.
    /// Now a pass reads only tombstones old enough to purge, off the thread:
    /// with 60,000 young tombstones and 2,000 old ones, the thread is never
    /// stalled and exactly the old ones go.
    #[actix::test]
    async fn a_pass_visits_only_old_tombstones_and_never_stalls_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", false).unwrap();
        let now = SystemClock::default().now_ms();
        tombstones(&store, "young", 60_000, now);
        tombstones(&store, "old", 2_000, 1_000);
        let gc = TombstoneGc::new(single_node(store.clone()), 60_000, 16 << 20);
        let worst = std::cell::Cell::new(Duration::ZERO);
        let ticker = async {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                worst.set(worst.get().max(last.elapsed()));
                last = Instant::now();
            }
        };
        let started = Instant::now();
        let purged = tokio::select! {
            purged = gc.pass() => purged,
            () = ticker => unreachable!(),
        };
        assert_eq!(purged, 2_000);
        assert_eq!(store.len().unwrap(), 60_000);
        eprintln!(
            "[gc] a pass took {:?}; the thread's longest stall {:?}",
            started.elapsed(),
            worst.get()
        );
        assert!(
            worst.get() < Duration::from_millis(250),
            "the thread stalled for {:?} during a GC pass",
            worst.get()
        );
    }

    /// Review of 06: a write (or its hint) still in flight when a pass ran
    /// could land after the purge, older than the tombstone, and bring the
    /// value back. A tombstone is now purged only once it is older than
    /// anything still in flight (1 member: 2 × 2 s + 10 s + 5 s = 19 s),
    /// whatever the grace period.
    #[actix::test]
    async fn no_tombstone_is_purged_while_older_writes_may_be_in_flight() {
        assert_eq!(in_flight_ms(Duration::from_secs(2), 1, 5_000), 19_000);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", false).unwrap();
        let now = SystemClock::default().now_ms();
        tombstones(&store, "recent", 10, now - 5_000);
        tombstones(&store, "settled", 10, now - 30_000);
        let gc = TombstoneGc::new(single_node(store.clone()), 1_000, 16 << 20);
        assert_eq!(gc.pass().await, 10, "only the settled ones");
        assert_eq!(store.len().unwrap(), 10);
    }

    /// Review of 06: a hint holder killed right after storing a hint never
    /// gossiped its new floor, and its old one was used as if current. A
    /// floor now covers only what was in flight before it was reported.
    #[test]
    fn a_floor_reported_long_ago_holds_gc_back() {
        use crate::gossip::Liveness;
        let live = Liveness::new(["n2".to_string()]);
        assert_eq!(
            live.min_hint_floor(["n2"], 0, 100_000, 0),
            0,
            "never heard from"
        );
        assert_eq!(
            effective_floor(u64::MAX, 100_000, 20_000),
            pack(80_000, 0),
            "no hints then, but some may land from writes issued after 80 s"
        );
        assert_eq!(
            effective_floor(pack(50_000, 0), 100_000, 20_000),
            pack(50_000, 0)
        );
    }

    /// Review of the clock-behind chaos fix: a floor's arrival was dated on
    /// the cluster's time by our clock, which after a step (before gossip
    /// measured it again) could read a minute ahead; the floor then seemed
    /// to cover writes issued a minute after it arrived. Arrivals are dated
    /// on the monotonic clock: a floor's age is real time, whatever the wall
    /// clock did meanwhile.
    #[test]
    fn a_floor_is_dated_by_its_age_not_by_the_wall_clock() {
        use crate::gossip::Liveness;
        let live = Liveness::new(["n2".to_string()]);
        // Reported 30 s ago (monotonic 10 s), nothing held then.
        live.set_floor("n2", u64::MAX, 10_000);
        assert_eq!(
            live.min_hint_floor(["n2"], 5_000, 1_000_000, 40_000),
            pack(1_000_000 - 30_000 - 5_000, 0)
        );
        // The wall clock stepped back a minute since: the same report is
        // still 30 s old.
        assert_eq!(
            live.min_hint_floor(["n2"], 5_000, 940_000, 40_000),
            pack(940_000 - 30_000 - 5_000, 0)
        );
    }

    /// Issue 06, finding 8 (a delete that came back): a tombstone was purged
    /// while some node still held a hint of an older write to the key; the
    /// hint, replayed later, brought the value back. GC now waits until no
    /// node's hints are older than the tombstone.
    #[actix::test]
    async fn no_tombstone_is_purged_while_an_older_hint_exists() {
        use crate::storage::Hint;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", false).unwrap();
        tombstones(&store, "gone", 10, 2_000);
        let hint = Mutation::Hint(Hint {
            target: "n2".into(),
            key: Bytes::from_static(b"gone-000001"),
            record: Record::value(
                Version::new(crate::version::pack(1_000, 0), 1),
                Bytes::from_static(b"old"),
            ),
            stored_ms: 1_000,
        });
        store.apply(&[hint]).unwrap();
        let gc = TombstoneGc::new(single_node(store.clone()), 60_000, 16 << 20);
        assert_eq!(
            gc.pass().await,
            0,
            "a hint older than the tombstones exists"
        );
        assert_eq!(store.len().unwrap(), 10);
        let page = store.hints_for("n2", None, 10, usize::MAX).unwrap();
        let ids = page.hints.into_iter().map(|(id, _)| id).collect();
        store.apply(&[Mutation::DeleteHints(ids)]).unwrap();
        assert_eq!(gc.pass().await, 10);
    }
}
