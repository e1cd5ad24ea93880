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

/// Deletes every record this node holds of partition `p`, page by page, each
/// only if still exactly the version scanned: before a node pulls a
/// partition it gains, whatever it kept of it from an earlier ownership
/// (a cleanup that had not finished) is not authoritative, and an exchange
/// would push it back — old values over purged tombstones. A write of the
/// change in flight deleted here is pulled back: it has W copies in the
/// old set. Answers how many were deleted.
pub async fn wipe_partition(
    core: &NodeCore,
    layout: &crate::layout::Layout,
    p: crate::layout::PartitionId,
) -> Result<usize, StoreError> {
    let store = &core.local.store;
    let (from, to) = layout.span(p);
    let mut after: Option<bytes::Bytes> = None;
    let mut dropped = 0;
    loop {
        let page = {
            let store = store.clone();
            let cursor = after.clone();
            tokio::task::spawn_blocking(move || {
                store.scan_versions(from, to, cursor.as_deref(), KEYS_PER_ROUND, 1 << 20)
            })
            .await
            .map_err(|e| StoreError::Engine(format!("scan task: {e}")))??
        };
        let Some((last, _)) = page.last() else {
            return Ok(dropped);
        };
        after = Some(last.clone());
        let mutations: Vec<Mutation> = page
            .iter()
            .map(|(dk, version)| Mutation::Drop {
                key: dk.slice(8..),
                version: *version,
            })
            .collect();
        dropped += mutations.len();
        core.local.apply_background(mutations).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::testing::node_core;
    use crate::layout::history::LayoutHistory;
    use crate::layout::Member;
    use crate::peer::Peers;
    use crate::record::Record;
    use crate::storage::{Store, WriteOp};
    use crate::version::Version;
    use bytes::Bytes;

    fn put(store: &Store, key: &str, value: Option<&str>) {
        let version = Version::new(crate::version::pack(1_000, 0), 1);
        let record = match value {
            Some(v) => Record {
                version,
                value: Some(Bytes::from(v.to_string())),
            },
            None => Record::tombstone(version),
        };
        store
            .apply(&[Mutation::Put(WriteOp {
                key: Bytes::from(key.to_string()),
                record,
            })])
            .unwrap();
    }

    /// After a change, n1 drops what it no longer holds — values and
    /// tombstones — and keeps the rest; nothing is dropped while a change
    /// is in flight; a wipe empties one partition only.
    #[actix::test]
    async fn moved_data_is_dropped_only_when_one_version_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "n1", false).unwrap();
        let core = node_core(store.clone(), &["n1", "n2", "n3"], 2);
        let one = (*core.view().layout).clone();
        let two = one.next(["n1", "n2", "n3", "n4"].map(Member::new));
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            put(&store, k, (i % 3 != 0).then_some("v"));
        }
        let held_after = |k: &String| {
            two.replicas(two.partition_of_key(k.as_bytes()))
                .contains(&"n1")
        };
        let held_before = |k: &String| {
            one.replicas(one.partition_of_key(k.as_bytes()))
                .contains(&"n1")
        };
        let mine: Vec<&String> = keys.iter().filter(|k| held_before(k)).collect();
        let lost: Vec<&&String> = mine.iter().filter(|k| !held_after(k)).collect();
        assert!(!lost.is_empty());
        // A change in flight: nothing is dropped.
        let mut h = LayoutHistory::new(one.clone());
        h.propose(two.clone(), false).unwrap();
        let changing = ClusterView::new(h, vec![], Peers::default());
        assert!(not_held(&changing, "n1").is_empty());
        assert_eq!(clean_round(&core, &changing).await.unwrap(), 0);
        // Version 2 alone: rounds drop exactly what n1 lost.
        let settled = ClusterView::new(LayoutHistory::new(two.clone()), vec![], Peers::default());
        let mut total = 0;
        loop {
            let n = clean_round(&core, &settled).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= KEYS_PER_ROUND);
            total += n;
        }
        let gone = keys.iter().filter(|k| !held_after(k)).count();
        assert_eq!(
            total, gone,
            "every record of a partition n1 no longer holds"
        );
        for k in &keys {
            assert_eq!(
                store.get(k.as_bytes()).unwrap().is_some(),
                held_after(k),
                "{k}"
            );
        }
        // A wipe empties one partition and nothing else.
        let p = two.partition_of_key(mine_after(&keys, &held_after).as_bytes());
        let n = wipe_partition(&core, &two, p).await.unwrap();
        assert!(n > 0);
        for k in &keys {
            let in_p = two.partition_of_key(k.as_bytes()) == p;
            let present = store.get(k.as_bytes()).unwrap().is_some();
            assert_eq!(present, held_after(k) && !in_p, "{k}");
        }
    }

    fn mine_after<'a>(keys: &'a [String], held: &dyn Fn(&String) -> bool) -> &'a String {
        keys.iter().find(|k| held(k)).unwrap()
    }
}
