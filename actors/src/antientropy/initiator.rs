//! The initiator's side of an exchange: compare the roots of the shared
//! partitions, descend the trees of those that differ, then walk the
//! differing leaves' versions side by side and move what differs.

use super::mover::Mover;
use super::pages::{check_page, leaf_spans, user_key, versions_in_spans};
use super::{RepairService, RunSummary, SyncError, LEAVES_PER_REQUEST, MOVE_KEYS};
use crate::layout::PartitionId;
use crate::merge_join::{MergeJoin, Step};
use crate::merkle::{child_indices, differing_children, MerkleTree};
use crate::metrics::Metrics;
use crate::token::Token;
use crate::version::Version;
use crate::wire::{KeyVersion, Request, Response, MAX_ITEMS, MAX_TREE_INDICES};
use bytes::Bytes;
use std::time::Instant;

impl RepairService {
    /// The partitions we share with `peer` whose roots differ from its (one
    /// request per `roots_per_request` partitions: in practice one).
    pub async fn differing_with(
        &self,
        peer: &str,
        sum: &mut RunSummary,
    ) -> Result<Vec<PartitionId>, SyncError> {
        let shared = self.shared_partitions(peer);
        let mut differing = Vec::new();
        for chunk in shared.chunks(roots_per_request(self.budget())) {
            differing.extend(self.differing_partitions(peer, chunk, sum).await?);
        }
        Ok(differing)
    }

    /// One exchange of partition `p` with `peer`: descend its tree to the
    /// leaves that differ, then compare and move their records.
    pub async fn sync_partition_with(
        &self,
        peer: &str,
        p: PartitionId,
        sum: &mut RunSummary,
    ) -> Result<(), SyncError> {
        let started = Instant::now();
        let mut mover = Mover {
            svc: self,
            peer,
            started,
            moved: 0,
        };
        self.sync_partition(&mut mover, p, sum).await?;
        log::debug!(
            "anti-entropy with {peer}, partition {p}: {} ms",
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// The partitions of `chunk` whose roots differ between us and `peer`.
    async fn differing_partitions(
        &self,
        peer: &str,
        chunk: &[PartitionId],
        sum: &mut RunSummary,
    ) -> Result<Vec<PartitionId>, SyncError> {
        let store = &self.core.local.store;
        let request = Request::PartitionRoots {
            layout: self.core.view().fingerprint(),
            depth: store.with_trees(|t| t.depth()),
            partitions: chunk.to_vec(),
        };
        let Response::Hashes { hashes } = self.call(peer, request).await? else {
            return Err(SyncError::Protocol(
                "unexpected answer to PartitionRoots".into(),
            ));
        };
        if hashes.len() != chunk.len() {
            return Err(SyncError::Protocol(
                "the peer answered the wrong number of roots".into(),
            ));
        }
        sum.partitions_compared += chunk.len() as u64;
        let ours: Vec<u64> = store.with_trees(|t| chunk.iter().map(|&p| t.root(p)).collect());
        let differ: Vec<PartitionId> = chunk
            .iter()
            .zip(ours.iter().zip(&hashes))
            .filter(|(_, (a, b))| a != b)
            .map(|(&p, _)| p)
            .collect();
        sum.partitions_differing += differ.len() as u64;
        Ok(differ)
    }

    /// Descends partition `p`'s tree to the leaves that differ, then
    /// compares and moves their records.
    async fn sync_partition(
        &self,
        mover: &mut Mover<'_>,
        p: PartitionId,
        sum: &mut RunSummary,
    ) -> Result<(), SyncError> {
        let store = self.core.local.store.clone();
        let layout = self.core.view().fingerprint();
        let depth = store.with_trees(|t| t.depth());
        let (mut level, mut indices) = (0u8, vec![0u32]);
        let leaves = loop {
            let request = Request::TreeHashes {
                partition: p,
                layout,
                depth,
                level,
                indices: indices.clone(),
            };
            let Response::Hashes { hashes } = self.call(mover.peer, request).await? else {
                return Err(SyncError::Protocol(
                    "unexpected answer to TreeHashes".into(),
                ));
            };
            if hashes.len() != indices.len() {
                return Err(SyncError::Protocol(
                    "the peer answered the wrong number of hashes".into(),
                ));
            }
            sum.hashes_compared += indices.len() as u64;
            Metrics::add(
                &self.core.local.stats.ae_hashes_compared,
                indices.len() as u64,
            );
            let differ = store.with_trees(|t| match t.tree(p) {
                Some(tree) => differing_children(tree, level, &indices, &hashes),
                None => differing_children(&MerkleTree::new(depth), level, &indices, &hashes),
            });
            if differ.is_empty() || level == depth {
                break differ;
            }
            indices = child_indices(&differ);
            level += 1;
        };
        sum.leaves_differing += leaves.len() as u64;
        for chunk in leaves.chunks(LEAVES_PER_REQUEST) {
            let spans = store
                .with_trees(|t| leaf_spans(t, p, chunk))
                .ok_or_else(|| SyncError::Protocol("bad leaf".into()))?;
            self.compare_leaves(mover, p, depth, chunk, &spans, sum)
                .await?;
        }
        Ok(())
    }

    /// Walks both sides' versions in `leaves` of partition `p`, moving what
    /// differs.
    async fn compare_leaves(
        &self,
        mover: &mut Mover<'_>,
        p: PartitionId,
        depth: u8,
        leaves: &[u32],
        spans: &[(Token, Token)],
        sum: &mut RunSummary,
    ) -> Result<(), SyncError> {
        let budget = self.budget();
        let mut join = MergeJoin::new();
        let (mut ours_after, mut theirs_after): (Option<Bytes>, Option<Bytes>) = (None, None);
        let mut theirs_last: Option<Bytes> = None;
        let (mut pulls, mut pushes) = (Vec::new(), Vec::new());
        loop {
            match join.step() {
                Step::NeedOurs => {
                    let store = self.core.local.store.clone();
                    let (spans, after) = (spans.to_vec(), ours_after.take());
                    let (page, next) = tokio::task::spawn_blocking(move || {
                        versions_in_spans(&store, &spans, after.as_deref(), MAX_ITEMS, budget)
                    })
                    .await
                    .map_err(|e| SyncError::Protocol(format!("scan task: {e}")))??;
                    join.feed_ours(page, next.is_none());
                    ours_after = next;
                }
                Step::NeedTheirs => {
                    let request = Request::LeafVersions {
                        partition: p,
                        depth,
                        leaves: leaves.to_vec(),
                        after: theirs_after.take(),
                        max_bytes: budget as u32,
                    };
                    let Response::Versions { items, next } = self.call(mover.peer, request).await?
                    else {
                        return Err(SyncError::Protocol(
                            "unexpected answer to LeafVersions".into(),
                        ));
                    };
                    check_page(&items, next.as_ref(), theirs_last.as_ref(), spans)?;
                    if let Some((k, _, _)) = items.last() {
                        theirs_last = Some(k.clone());
                    }
                    let page = items
                        .into_iter()
                        .map(|(k, ts, node): KeyVersion| (k, Version::new(ts, node)))
                        .collect();
                    join.feed_theirs(page, next.is_none());
                    theirs_after = next;
                }
                Step::Pull(dk) => {
                    pulls.push(user_key(&dk));
                    if pulls.len() >= MOVE_KEYS {
                        mover.pull(std::mem::take(&mut pulls), sum).await?;
                    }
                }
                Step::Push(dk) => {
                    pushes.push(user_key(&dk));
                    if pushes.len() >= MOVE_KEYS {
                        mover.push(std::mem::take(&mut pushes), sum).await?;
                    }
                }
                Step::Done => break,
            }
        }
        mover.pull(pulls, sum).await?;
        mover.push(pushes, sum).await
    }
}

/// How many partitions' roots one `PartitionRoots` asks for, so that the
/// answer (a hash of at most 9 bytes each) fits in `budget` bytes: at most
/// [`MAX_TREE_INDICES`], at least one.
pub(super) fn roots_per_request(budget: usize) -> usize {
    (budget.saturating_sub(64) / 9).clamp(1, MAX_TREE_INDICES)
}
