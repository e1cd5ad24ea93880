//! Tombstone garbage collection.
//!
//! A tombstone older than the grace period is purged only when every replica
//! of its key is up: it is first pushed to all N replicas (each then holds it
//! or something newer), then each deletes it only if its stored record is
//! still exactly that tombstone. A timer alone never purges, so a replica
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
        let cutoff_ms = self.core.hlc.wall_ms().saturating_sub(self.grace_ms);
        let cutoff = pack(cutoff_ms, 0);
        let jobs = &self.core.local.stats.jobs;
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
        let me = self.core.node_id.as_str();
        let n = self.core.replication.n;
        // Only keys whose first replica we are, with every replica up.
        let mine: Vec<(Bytes, Vec<String>)> = keys
            .into_iter()
            .filter_map(|k| {
                let pref = view.ring.preference_list(&k, n);
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
            let outcomes = self.core.local.apply_all(mutations).await?;
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
