//! Merkle-tree anti-entropy between two replicas, partition by partition,
//! over the live trees the store keeps ([`crate::storage::trees`]).
//!
//! Two nodes compare the partitions both replicate in the layout. The
//! initiator asks the peer for the roots of those partitions' trees in one
//! request ([`Request::PartitionRoots`]) and compares them with its own;
//! for each partition whose roots differ it descends that tree, asking only
//! for the children of nodes that differ, level by level
//! ([`Request::TreeHashes`]), down to the leaves that differ. No tree is
//! built for an exchange: both sides read the trees their stores update as
//! each transaction commits, so a pass with nothing to repair costs one
//! round trip and a hash per shared partition, and a responder's work per
//! request is bounded by the request (no session, no scan to build).
//!
//! The trees move while an exchange runs (writes keep committing on both
//! sides). A descent may then chase a difference a write just made, or miss
//! one a write just hid; neither loses anything: the leaf comparison below
//! works on stored versions, and the next pass compares again.
//!
//! For the differing leaves ([`LEAVES_PER_REQUEST`] per stream) the two
//! sides' `(key, version)` streams are compared side by side
//! ([`crate::merge_join`]) a page at a time ([`pages`],
//! [`Request::LeafVersions`]): what the peer has newer (or we lack) is
//! fetched with `ReadMany` and applied here, what we have newer is pushed
//! with `WriteBatch` ([`mover`]), both last write wins, so the exchange
//! converges to the union by version. Memory is a page per side plus one
//! batch of keys to move, whatever the data size; every page, batch and
//! answer is bounded in bytes below the frame limit ([`crate::limits`]),
//! and a record near the value limit travels alone. Record transfer is
//! throttled to the configured bandwidth; every call has the background
//! deadline and travels at background priority.
//!
//! A peer may only ask about partitions both nodes replicate, with the same
//! layout fingerprint and tree depth ([`responder`]); anything else is
//! refused `Invalid`.

mod initiator;
mod mover;
mod pages;
#[cfg(test)]
mod peer_tests;
mod responder;
#[cfg(test)]
mod tests;

use crate::coordinator::NodeCore;
use crate::layout::PartitionId;
use crate::limits::batch_budget;
use crate::peer::PeerError;
use crate::storage::StoreError;
use crate::wire::{Request, Response};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Leaves compared in one stream of version pages.
pub const LEAVES_PER_REQUEST: usize = 16;
/// Keys gathered before they are fetched or pushed.
const MOVE_KEYS: usize = 256;

/// Anti-entropy settings.
#[derive(Clone, Copy, Debug)]
pub struct RepairConfig {
    pub interval: Duration,
    pub bandwidth_bytes_per_sec: u64,
    pub gc_grace_ms: u64,
    /// The peer frame limit, which bounds every page and batch.
    pub max_frame: usize,
    /// The value limit: a pulled record over it is refused, as a write is.
    pub max_value: usize,
    /// How long one pass may spend with one peer; past it the peer counts
    /// as failed for this pass and the pass goes on with the others (a slow
    /// or endless peer cannot hold anti-entropy with everybody else).
    pub peer_budget: Duration,
}

/// The default [`RepairConfig::peer_budget`]: 32 background deadlines.
pub fn default_peer_budget(background_timeout: Duration) -> Duration {
    background_timeout.saturating_mul(32)
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub peers_synced: Vec<String>,
    pub peers_failed: Vec<(String, String)>,
    /// Partitions compared by their roots.
    pub partitions_compared: u64,
    /// Partitions whose roots differed.
    pub partitions_differing: u64,
    pub hashes_compared: u64,
    pub leaves_differing: u64,
    pub keys_pulled: u64,
    pub keys_pushed: u64,
    /// Records of the peer this node refused to store (its clock check or
    /// store): the exchange left them behind, and a later one retries.
    pub keys_left: u64,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// Anti-entropy progress for `GET /v1/cluster`.
#[derive(Clone, Debug, Default)]
pub struct RepairStatus {
    pub running: bool,
    pub current_peer: Option<String>,
    pub passes: u64,
    pub last: Option<RunSummary>,
    pub last_finished_ms: Option<u64>,
    pub tombstones_purged: u64,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("{0}")]
    Protocol(String),
}

/// The anti-entropy logic, shared by the repair actor (initiator) and the
/// inbound dispatcher (responder). Cheap to clone.
#[derive(Clone)]
pub struct RepairService {
    pub core: Arc<NodeCore>,
    pub status: Arc<Mutex<RepairStatus>>,
    pub config: RepairConfig,
}

impl RepairService {
    pub fn new(core: Arc<NodeCore>, config: RepairConfig) -> Self {
        RepairService {
            core,
            status: Arc::default(),
            config,
        }
    }

    fn budget(&self) -> usize {
        batch_budget(self.config.max_frame)
    }

    /// The partitions this node and `peer` both replicate, ascending.
    pub fn shared_partitions(&self, peer: &str) -> Vec<PartitionId> {
        self.core.view().shared(&self.core.node_id, peer)
    }

    /// Per peer, a digest of our trees' roots over the partitions we share
    /// with it: two replicas agree on those partitions exactly when their
    /// digests are equal (`GET /v1/admin/merkle`; the chaos suite's
    /// convergence check). Read from the live trees: no scan.
    pub fn shared_roots(&self) -> Vec<(String, u64)> {
        use std::hash::Hasher;
        let store = &self.core.local.store;
        self.core
            .view()
            .peers
            .ids()
            .into_iter()
            .map(|peer| {
                let shared = self.shared_partitions(&peer);
                let digest = store.with_trees(|t| {
                    let mut h = twox_hash::XxHash64::with_seed(0);
                    let mut any = false;
                    for &p in &shared {
                        let root = t.root(p);
                        if root != 0 {
                            any = true;
                            h.write_u32(p);
                            h.write_u64(root);
                        }
                    }
                    // No data in common: 0, as an empty tree's root.
                    if any {
                        h.finish()
                    } else {
                        0
                    }
                });
                (peer, digest)
            })
            .collect()
    }

    /// Serves a peer's anti-entropy request; `None` for other requests.
    pub async fn handle(&self, from: &str, request: Request) -> Option<Response> {
        let result = match request {
            Request::PartitionRoots {
                layout,
                depth,
                partitions,
            } => self.answer_roots(from, layout, depth, &partitions),
            Request::TreeHashes {
                partition,
                layout,
                depth,
                level,
                indices,
            } => self.answer_hashes(from, partition, layout, depth, level, &indices),
            Request::LeafVersions {
                partition,
                depth,
                leaves,
                after,
                max_bytes,
            } => {
                self.answer_versions(from, partition, depth, leaves, after, max_bytes)
                    .await
            }
            Request::ReadMany { keys, max_bytes } => self.answer_read_many(keys, max_bytes).await,
            _ => return None,
        };
        Some(result.unwrap_or_else(|(code, message)| Response::error(code, message)))
    }

    async fn call(&self, peer: &str, request: Request) -> Result<Response, SyncError> {
        Ok(self
            .core
            .view()
            .peers
            .call(peer, request, self.core.replication.background_timeout)
            .await?)
    }

    /// Sleeps as long as needed to keep `moved` bytes within the bandwidth.
    async fn throttle(&self, moved: u64, started: Instant) {
        let rate = self.config.bandwidth_bytes_per_sec.max(1);
        let due = Duration::from_secs_f64(moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
