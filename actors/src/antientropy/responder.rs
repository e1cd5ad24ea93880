//! The responder's side of an exchange: answers from the live partition
//! trees and bounded scans, for partitions the asker shares with us only.

use super::pages::{leaf_spans, value_len, versions_in_spans, within_value_limit};
use super::RepairService;
use crate::layout::PartitionId;
use crate::limits::record_wire_bytes;
use crate::merkle::MerkleTree;
use crate::storage::StoreError;
use crate::wire::{ErrorCode, Response, WireRecord, MAX_ITEMS};
use bytes::Bytes;

type Answer = Result<Response, (ErrorCode, String)>;

fn invalid(message: String) -> (ErrorCode, String) {
    (ErrorCode::Invalid, message)
}

impl RepairService {
    /// Refuses a request made under another layout or tree depth.
    fn check_layout(&self, layout: u64, depth: u8) -> Result<(), (ErrorCode, String)> {
        let ours = self.core.view().fingerprint();
        let our_depth = self.core.local.store.with_trees(|t| t.depth());
        if layout != ours || depth != our_depth {
            return Err(invalid(format!(
                "layout {layout:#x} with trees of depth {depth} do not match ours ({ours:#x}, \
                 depth {our_depth}): the two nodes place partitions differently (check that \
                 cluster.partitions, cluster.replication_factor and [[nodes]] agree)"
            )));
        }
        Ok(())
    }

    /// Refuses a partition `from` does not replicate with us.
    fn check_shared(&self, from: &str, p: PartitionId) -> Result<(), (ErrorCode, String)> {
        self.check_shared_in(&self.core.view(), from, p)
    }

    fn check_shared_in(
        &self,
        view: &crate::coordinator::ClusterView,
        from: &str,
        p: PartitionId,
    ) -> Result<(), (ErrorCode, String)> {
        let holders = view.holders(p);
        if !(holders.contains(self.core.node_id.as_str()) && holders.contains(from)) {
            return Err(invalid(format!(
                "partition {p} is not one {from} and {} both replicate",
                self.core.node_id
            )));
        }
        Ok(())
    }

    pub(super) fn answer_roots(
        &self,
        from: &str,
        layout: u64,
        depth: u8,
        partitions: &[u32],
    ) -> Answer {
        self.check_layout(layout, depth)?;
        let view = self.core.view();
        if partitions.len() > view.layout.partitions() as usize {
            return Err(invalid(format!(
                "{} partitions asked, of {}",
                partitions.len(),
                view.layout.partitions()
            )));
        }
        for &p in partitions {
            self.check_shared_in(&view, from, p)?;
        }
        let hashes = self
            .core
            .local
            .store
            .with_trees(|t| partitions.iter().map(|&p| t.root(p)).collect());
        Ok(Response::Hashes { hashes })
    }

    pub(super) fn answer_hashes(
        &self,
        from: &str,
        partition: u32,
        layout: u64,
        depth: u8,
        level: u8,
        indices: &[u32],
    ) -> Answer {
        self.check_layout(layout, depth)?;
        self.check_shared(from, partition)?;
        let store = &self.core.local.store;
        store
            .with_trees(|t| t.tree(partition).map(|tree| tree.hashes_at(level, indices)))
            // Nothing stored in it: every node of its tree is empty.
            .unwrap_or_else(|| MerkleTree::new(depth).hashes_at(level, indices))
            .map(|hashes| Response::Hashes { hashes })
            .ok_or_else(|| invalid(format!("no tree node at level {level} for those indices")))
    }

    pub(super) async fn answer_versions(
        &self,
        from: &str,
        partition: u32,
        depth: u8,
        leaves: Vec<u32>,
        after: Option<Bytes>,
        max_bytes: u32,
    ) -> Answer {
        self.check_shared(from, partition)?;
        let store = self.core.local.store.clone();
        let spans = store
            .with_trees(|t| (t.depth() == depth).then(|| leaf_spans(t, partition, &leaves)))
            .ok_or_else(|| invalid(format!("trees of depth {depth} do not match ours")))?
            .ok_or_else(|| invalid("a leaf does not exist".to_string()))?;
        let max_bytes = (max_bytes as usize).clamp(1, self.budget());
        let (items, next) = tokio::task::spawn_blocking(move || {
            versions_in_spans(&store, &spans, after.as_deref(), MAX_ITEMS, max_bytes)
                .map_err(|e| (ErrorCode::Storage, e.to_string()))
        })
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))??;
        Ok(Response::Versions {
            items: items.into_iter().map(|(k, v)| (k, v.ts, v.node)).collect(),
            next,
        })
    }

    /// Records of `keys` in order, as many as fit in `max_bytes` (at least one).
    pub(super) async fn answer_read_many(&self, keys: Vec<Bytes>, max_bytes: u32) -> Answer {
        let max_bytes = (max_bytes as usize).clamp(1, self.budget());
        let store = self.core.local.store.clone();
        let max_value = self.config.max_value;
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            let mut bytes = 0;
            for key in keys {
                // A record that cannot be decoded is answered as absent (the
                // asker pulls nothing for it) rather than failing the batch.
                let record = match store.get(&key) {
                    Err(StoreError::Corrupt(e)) => {
                        log::error!("a corrupt record is left out of an anti-entropy answer: {e}");
                        None
                    }
                    other => other?,
                };
                // So is one over the value limit (stored before the limit
                // was lowered): the asker would refuse it, and the answer
                // would outgrow the bytes reserved for it.
                let record = record.filter(|r| {
                    within_value_limit(value_len(r), max_value, "an anti-entropy answer")
                });
                let size = record_wire_bytes(key.len(), record.as_ref().map_or(0, value_len));
                if !items.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                items.push((key, record.map(WireRecord::from)));
            }
            Ok(Response::Records { items })
        })
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .map_err(|e: StoreError| (ErrorCode::Storage, e.to_string()))
    }
}
