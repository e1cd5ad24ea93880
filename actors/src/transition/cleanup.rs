//! Dropping moved data (invariant 6): once a single layout version is live
//! — every node has sync-acked it, so no read or write of an older one is
//! in flight — this node deletes its records of the partitions that
//! version does not place on it. A node that leaves, or gives partitions
//! away, so holds nothing stale that a later exchange could push back (a
//! deleted key's old value surviving on a former owner would come back
//! when it rejoins, after the tombstone was purged everywhere else).
//!
//! A record is deleted only if it is still exactly the version scanned
//! (`Mutation::Drop`), a page at a time, at most [`KEYS_PER_ROUND`] per
//! round: the work is bounded, restarts resume it (the trees say which
//! partitions still hold records), and a write landing meanwhile survives.

use crate::coordinator::{ClusterView, NodeCore};
use crate::storage::{Mutation, StoreError};

/// Records deleted per follower round at most.
pub const KEYS_PER_ROUND: usize = 512;

/// The partitions `view` does not place on `me` (empty while a change is
/// in flight: then every live version's sets still receive writes).
pub fn not_held(view: &ClusterView, me: &str) -> Vec<crate::layout::PartitionId> {
    if view.history.changing() {
        return Vec::new();
    }
    (0..view.layout.partitions())
        .filter(|&p| !view.holders(p).contains(me))
        .collect()
}

/// Deletes up to [`KEYS_PER_ROUND`] of this node's records of partitions
/// it no longer holds; answers how many.
pub async fn clean_round(core: &NodeCore, view: &ClusterView) -> Result<usize, StoreError> {
    let me = core.node_id.as_str();
    let store = &core.local.store;
    let mut dropped = 0;
    for p in not_held(view, me) {
        if dropped >= KEYS_PER_ROUND {
            break;
        }
        if store.with_trees(|t| t.root(p)) == 0 {
            continue;
        }
        let (from, to) = view.layout.span(p);
        let page = {
            let store = store.clone();
            let limit = KEYS_PER_ROUND - dropped;
            tokio::task::spawn_blocking(move || store.scan_versions(from, to, None, limit, 1 << 20))
                .await
                .map_err(|e| StoreError::Engine(format!("scan task: {e}")))??
        };
        if page.is_empty() {
            continue;
        }
        let mutations: Vec<Mutation> = page
            .iter()
            .map(|(dk, version)| Mutation::Drop {
                key: dk.slice(8..),
                version: *version,
            })
            .collect();
        let n = mutations.len();
        core.local.apply_background(mutations).await?;
        log::info!("partition {p}: dropped {n} records this node no longer holds");
        dropped += n;
    }
    Ok(dropped)
}
