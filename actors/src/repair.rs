//! Repair actor: Merkle-tree anti-entropy and tombstone garbage collection.
//!
//! # Anti-entropy
//! For each peer, the ranges both nodes replicate are those ring ranges whose
//! preference list holds both. Each side builds a Merkle tree
//! ([`crate::merkle`]) over the `(key, version)` of its records in those ranges,
//! by one range scan per range (records are stored in token order). The
//! initiator asks the peer for its tree's root, then only for the children of
//! nodes that differ, level by level, down to the leaves that differ. For those
//! leaves both sides' records are compared key by key: what the peer has newer
//! (or we lack) is applied locally, what we have newer is pushed to the peer,
//! both last-write-wins, so the exchange converges to the union by version.
//!
//! Trees are built per exchange, not maintained incrementally: a build costs
//! one range scan and one hash per record held in common with that peer, and
//! 2^(depth+1) words of memory for the duration of the exchange; writes cost
//! nothing extra. The responder keeps its tree for the session
//! ([`SESSION_TTL`]). Record transfer is paged and throttled to the configured
//! bandwidth; all of it travels at background priority on the peer connection.
//!
//! Runs every `interval`, and on demand ([`RunRepair`], `POST /v1/admin/repair`).
//! A node that was down longer than the tombstone grace period serves no reads
//! (`LocalReplica::repairing`) until a pass with every live peer succeeded.
//!
//! # Tombstone GC
//! A tombstone older than the grace period is purged only when every replica
//! of its key is up: it is first pushed to all N replicas (each then holds it or
//! something newer), then each deletes it only if its stored record is still
//! exactly that tombstone. A timer alone never purges, so a replica that missed
//! the delete cannot bring the value back. Only the key's first replica runs
//! this, to avoid duplicate work.

use crate::coordinator::NodeCore;
use crate::merkle::{differing_children, MerkleTree, DEFAULT_DEPTH};
use crate::metrics::Metrics;
use crate::peer::{Call, PeerActor};
use crate::record::Record;
use crate::ring::Token;
use crate::storage::{data_key, Mutation, StoreError};
use crate::version::Version;
use crate::wire::{Request, Response, WireRecord};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a responder keeps a session's tree.
pub const SESSION_TTL: Duration = Duration::from_secs(120);
/// Records per page of a leaf transfer.
pub const RECORDS_PAGE: u32 = 512;
/// Leaves asked for in one transfer request.
pub const LEAVES_PER_REQUEST: usize = 16;
/// Rows read per storage scan while building a tree.
const SCAN_PAGE: usize = 4096;
/// How often peers queued for anti-entropy (dropped hints) are served.
pub const WANTED_INTERVAL: Duration = Duration::from_secs(2);
/// How often tombstones are examined for purging.
pub const GC_INTERVAL: Duration = Duration::from_secs(1);

/// Anti-entropy settings.
#[derive(Clone, Copy, Debug)]
pub struct RepairConfig {
    pub interval: Duration,
    pub bandwidth_bytes_per_sec: u64,
    pub gc_grace_ms: u64,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub peers_synced: Vec<String>,
    pub peers_failed: Vec<(String, String)>,
    pub hashes_compared: u64,
    pub leaves_differing: u64,
    pub keys_pulled: u64,
    pub keys_pushed: u64,
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

/// Records in token order and where to resume, if more remain.
type RecordPage = (Vec<(Bytes, Record)>, Option<Bytes>);

struct Session {
    tree: Arc<MerkleTree>,
    ranges: Vec<(Token, Token)>,
    created: Instant,
}

/// The anti-entropy logic, shared by the actor (initiator) and the inbound
/// dispatcher (responder). Cheap to clone.
#[derive(Clone)]
pub struct RepairService {
    core: Arc<NodeCore>,
    sessions: Arc<Mutex<HashMap<(String, u64), Session>>>,
    pub status: Arc<Mutex<RepairStatus>>,
    config: RepairConfig,
}

fn peer_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl RepairService {
    pub fn new(core: Arc<NodeCore>, config: RepairConfig) -> Self {
        RepairService {
            core,
            sessions: Arc::default(),
            status: Arc::default(),
            config,
        }
    }

    /// Inclusive token intervals replicated by both this node and `peer`,
    /// sorted and merged.
    pub fn shared_ranges(&self, peer: &str) -> Vec<(Token, Token)> {
        let view = self.core.view();
        let n = self.core.replication.n;
        let me = self.core.node_id.as_str();
        let mut out: Vec<(Token, Token)> = Vec::new();
        for r in view.ring.ranges() {
            let reps = view.ring.replicas_of_range(r.end, n);
            if !(reps.contains(&me) && reps.contains(&peer)) {
                continue;
            }
            if r.start == r.end {
                out.push((0, u64::MAX));
            } else if r.start < r.end {
                out.push((r.start + 1, r.end));
            } else {
                if r.start < u64::MAX {
                    out.push((r.start + 1, u64::MAX));
                }
                out.push((0, r.end));
            }
        }
        out.sort_unstable();
        let mut merged: Vec<(Token, Token)> = Vec::with_capacity(out.len());
        for (a, b) in out {
            match merged.last_mut() {
                Some(last)
                    if last.1.checked_add(1).is_some_and(|next| next >= a)
                        || last.1 == u64::MAX =>
                {
                    last.1 = last.1.max(b)
                }
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// Builds the tree over our records in `ranges` (blocking: scans storage).
    fn build_tree(&self, ranges: &[(Token, Token)]) -> Result<MerkleTree, StoreError> {
        let mut tree = MerkleTree::new(DEFAULT_DEPTH);
        for &(from, to) in ranges {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self
                    .core
                    .local
                    .store
                    .scan(from, to, after.as_deref(), SCAN_PAGE)?;
                for (token, key, record) in &page {
                    tree.insert(*token, key, record.version);
                }
                match page.last() {
                    Some((_, key, _)) if page.len() == SCAN_PAGE => after = Some(data_key(key)),
                    _ => break,
                }
            }
        }
        Ok(tree)
    }

    /// Our records in `leaves` (within `ranges`), in token order after `after`.
    fn leaf_records(
        &self,
        tree_depth: u8,
        ranges: &[(Token, Token)],
        leaves: &[u32],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        let mut spans: Vec<(Token, Token)> = Vec::new();
        for &leaf in leaves {
            let (ls, le) = leaf_span(tree_depth, leaf).ok_or_else(|| {
                StoreError::Engine(format!("leaf {leaf} does not exist at depth {tree_depth}"))
            })?;
            for &(a, b) in ranges {
                let (s, e) = (a.max(ls), b.min(le));
                if s <= e {
                    spans.push((s, e));
                }
            }
        }
        spans.sort_unstable();
        let after_token = after.map(|a| u64::from_be_bytes(a[..8].try_into().unwrap_or([0; 8])));
        let mut out: Vec<(Bytes, Record)> = Vec::new();
        for (s, e) in spans {
            if after_token.is_some_and(|t| t > e) {
                continue;
            }
            let resume = after.filter(|_| after_token.is_some_and(|t| t >= s));
            let page = self
                .core
                .local
                .store
                .scan(s, e, resume, limit + 1 - out.len())?;
            for (_, key, record) in page {
                out.push((key, record));
                if out.len() > limit {
                    out.pop();
                    let next = out.last().map(|(k, _)| Bytes::from(data_key(k)));
                    return Ok((out, next));
                }
            }
        }
        Ok((out, None))
    }

    /// Serves a peer's anti-entropy request; `None` for other requests.
    pub async fn handle(&self, from: &str, request: Request) -> Option<Response> {
        let result = match request {
            Request::TreeHashes {
                session,
                epoch,
                depth,
                level,
                indices,
            } => {
                self.answer_hashes(from, session, epoch, depth, level, indices)
                    .await
            }
            Request::LeafRecords {
                session,
                leaves,
                after,
                limit,
            } => {
                self.answer_records(from, session, leaves, after, limit)
                    .await
            }
            _ => return None,
        };
        Some(result.unwrap_or_else(|message| Response::Error {
            code: "repair".into(),
            message,
        }))
    }

    async fn answer_hashes(
        &self,
        from: &str,
        session: u64,
        epoch: u64,
        depth: u8,
        level: u8,
        indices: Vec<u32>,
    ) -> Result<Response, String> {
        if epoch != self.core.view().ring.epoch() || depth != DEFAULT_DEPTH {
            return Err(format!(
                "ring epoch {epoch} / depth {depth} do not match ours"
            ));
        }
        let key = (from.to_string(), session);
        let cached = {
            let mut sessions = self.sessions.lock().expect("sessions");
            sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
            sessions.get(&key).map(|s| s.tree.clone())
        };
        let tree = match cached {
            Some(t) => t,
            None => {
                let svc = self.clone();
                let ranges = self.shared_ranges(from);
                let r2 = ranges.clone();
                let tree = tokio::task::spawn_blocking(move || svc.build_tree(&r2))
                    .await
                    .map_err(peer_err)?
                    .map_err(peer_err)?;
                let tree = Arc::new(tree);
                self.sessions.lock().expect("sessions").insert(
                    key,
                    Session {
                        tree: tree.clone(),
                        ranges,
                        created: Instant::now(),
                    },
                );
                tree
            }
        };
        let hashes = tree
            .hashes_at(level, &indices)
            .ok_or_else(|| format!("no tree node at level {level} for {indices:?}"))?;
        Ok(Response::Hashes { hashes })
    }

    async fn answer_records(
        &self,
        from: &str,
        session: u64,
        leaves: Vec<u32>,
        after: Option<Bytes>,
        limit: u32,
    ) -> Result<Response, String> {
        let ranges = self
            .sessions
            .lock()
            .expect("sessions")
            .get(&(from.to_string(), session))
            .map(|s| s.ranges.clone())
            .ok_or_else(|| format!("unknown repair session {session}"))?;
        let svc = self.clone();
        let limit = limit.clamp(1, 4 * RECORDS_PAGE) as usize;
        let (items, next) = tokio::task::spawn_blocking(move || {
            svc.leaf_records(DEFAULT_DEPTH, &ranges, &leaves, after.as_deref(), limit)
        })
        .await
        .map_err(peer_err)?
        .map_err(peer_err)?;
        Ok(Response::Records {
            items: items
                .into_iter()
                .map(|(k, r)| (k, WireRecord::from(r)))
                .collect(),
            next,
        })
    }

    fn peer(&self, id: &str) -> Result<Addr<PeerActor>, String> {
        self.core
            .view()
            .peers
            .get(id)
            .cloned()
            .ok_or_else(|| format!("{id} is not a peer"))
    }

    async fn call(peer: &Addr<PeerActor>, request: Request) -> Result<Response, String> {
        match peer.send(Call(request)).await {
            Ok(Ok(Response::Error { code, message })) => Err(format!("{code}: {message}")),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One anti-entropy exchange with `peer_id`; adds what it did to `sum`.
    pub async fn sync_with(&self, peer_id: &str, sum: &mut RunSummary) -> Result<(), String> {
        let started = Instant::now();
        let peer = self.peer(peer_id)?;
        let ranges = self.shared_ranges(peer_id);
        if ranges.is_empty() {
            return Ok(());
        }
        let svc = self.clone();
        let r2 = ranges.clone();
        let local = tokio::task::spawn_blocking(move || svc.build_tree(&r2))
            .await
            .map_err(peer_err)?
            .map_err(peer_err)?;
        let session = rand_u64(self.core.hlc.wall_ms() ^ started.elapsed().as_nanos() as u64);
        let epoch = self.core.view().ring.epoch();
        let depth = DEFAULT_DEPTH;
        let (mut level, mut indices) = (0u8, vec![0u32]);
        let leaves = loop {
            let request = Request::TreeHashes {
                session,
                epoch,
                depth,
                level,
                indices: indices.clone(),
            };
            let Response::Hashes { hashes } = Self::call(&peer, request).await? else {
                return Err("unexpected answer to TreeHashes".into());
            };
            if hashes.len() != indices.len() {
                return Err("peer answered the wrong number of hashes".into());
            }
            sum.hashes_compared += indices.len() as u64;
            Metrics::add(
                &self.core.local.stats.ae_hashes_compared,
                indices.len() as u64,
            );
            let differ = differing_children(&local, level, &indices, &hashes);
            if differ.is_empty() || level == depth {
                break differ;
            }
            indices = differ.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
            level += 1;
        };
        sum.leaves_differing += leaves.len() as u64;
        let mut moved = 0u64;
        for chunk in leaves.chunks(LEAVES_PER_REQUEST) {
            self.exchange_leaves(&peer, session, &ranges, chunk, sum, &mut moved, started)
                .await?;
        }
        log::debug!(
            "anti-entropy with {peer_id}: {} leaves differed, {} ms",
            leaves.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange_leaves(
        &self,
        peer: &Addr<PeerActor>,
        session: u64,
        ranges: &[(Token, Token)],
        leaves: &[u32],
        sum: &mut RunSummary,
        moved: &mut u64,
        started: Instant,
    ) -> Result<(), String> {
        let mut theirs: BTreeMap<Bytes, Record> = BTreeMap::new();
        let mut after = None;
        loop {
            let request = Request::LeafRecords {
                session,
                leaves: leaves.to_vec(),
                after: after.clone(),
                limit: RECORDS_PAGE,
            };
            let Response::Records { items, next } = Self::call(peer, request).await? else {
                return Err("unexpected answer to LeafRecords".into());
            };
            for (k, r) in items {
                *moved += (k.len() + r.value.as_ref().map_or(0, |v| v.len())) as u64;
                theirs.insert(k, Record::from(r));
            }
            self.throttle(*moved, started).await;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let svc = self.clone();
        let (r2, l2) = (ranges.to_vec(), leaves.to_vec());
        let (ours, _) = tokio::task::spawn_blocking(move || {
            svc.leaf_records(DEFAULT_DEPTH, &r2, &l2, None, usize::MAX - 1)
        })
        .await
        .map_err(peer_err)?
        .map_err(peer_err)?;
        let mut push = Vec::new();
        let mut pull = Vec::new();
        let mut ours_map: HashMap<Bytes, Record> = ours.into_iter().collect();
        for (k, r) in theirs {
            match ours_map.remove(&k) {
                Some(mine) if mine.version > r.version => push.push((k, mine)),
                Some(mine) if mine.version == r.version => {}
                _ => pull.push((k, r)),
            }
        }
        push.extend(ours_map);
        let size = |v: &[(Bytes, Record)]| -> u64 {
            v.iter()
                .map(|(k, r)| (k.len() + r.value.as_ref().map_or(0, |x| x.len())) as u64)
                .sum()
        };
        if !pull.is_empty() {
            sum.keys_pulled += pull.len() as u64;
            sum.bytes += size(&pull);
            Metrics::add(&self.core.local.stats.ae_keys_pulled, pull.len() as u64);
            Metrics::add(&self.core.local.stats.ae_bytes, size(&pull));
            self.core.local.write_batch(pull).await.map_err(peer_err)?;
        }
        for page in push.chunks(RECORDS_PAGE as usize) {
            let bytes = size(page);
            sum.keys_pushed += page.len() as u64;
            sum.bytes += bytes;
            *moved += bytes;
            Metrics::add(&self.core.local.stats.ae_keys_pushed, page.len() as u64);
            Metrics::add(&self.core.local.stats.ae_bytes, bytes);
            let items = page
                .iter()
                .map(|(k, r)| (k.clone(), WireRecord::from(r.clone())))
                .collect();
            Self::call(peer, Request::WriteBatch { items }).await?;
            self.throttle(*moved, started).await;
        }
        Ok(())
    }

    /// Sleeps as long as needed to keep `moved` bytes within the bandwidth.
    async fn throttle(&self, moved: u64, started: Instant) {
        let rate = self.config.bandwidth_bytes_per_sec.max(1);
        let due = Duration::from_secs_f64(moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass with every peer not known to be down (or only with `only`).
    pub async fn run_pass(&self, only: Option<Vec<String>>) -> RunSummary {
        let started = Instant::now();
        let mut sum = RunSummary::default();
        let mut peers: Vec<String> =
            only.unwrap_or_else(|| self.core.view().peers.keys().cloned().collect());
        peers.sort();
        for p in peers {
            if self.core.liveness.is_down(&p) {
                sum.peers_failed.push((p, "down".into()));
                continue;
            }
            self.status.lock().expect("status").current_peer = Some(p.clone());
            match self.sync_with(&p, &mut sum).await {
                Ok(()) => sum.peers_synced.push(p),
                Err(e) => {
                    log::warn!("anti-entropy with {p} failed: {e}");
                    sum.peers_failed.push((p, e));
                }
            }
        }
        sum.duration_ms = started.elapsed().as_millis() as u64;
        Metrics::add(&self.core.local.stats.ae_rounds, 1);
        sum
    }

    /// Purges tombstones older than the grace period that every replica holds.
    pub async fn gc_pass(&self) -> u64 {
        let now = self.core.hlc.wall_ms();
        let grace = self.config.gc_grace_ms;
        let mut purged = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = match self.core.local.store.tombstones(after.as_deref(), 512) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("tombstone scan failed: {e}");
                    return purged;
                }
            };
            let Some((last, _, _)) = page.last() else {
                return purged;
            };
            after = Some(last.clone());
            for (_, key, ts) in page {
                let version_ms = Version::new(ts, 0).physical_ms();
                if now.saturating_sub(version_ms) <= grace {
                    continue;
                }
                match self.purge_one(&key).await {
                    Ok(true) => purged += 1,
                    Ok(false) => {}
                    Err(e) => log::debug!("tombstone purge deferred: {e}"),
                }
            }
        }
    }

    async fn purge_one(&self, key: &Bytes) -> Result<bool, String> {
        let view = self.core.view();
        let replicas: Vec<String> = view
            .ring
            .preference_list(key, self.core.replication.n)
            .into_iter()
            .map(String::from)
            .collect();
        if replicas.first().map(String::as_str) != Some(self.core.node_id.as_str()) {
            return Ok(false);
        }
        if let Some(down) = replicas.iter().find(|r| self.core.liveness.is_down(r)) {
            return Err(format!("replica {down} is down"));
        }
        let Some(record) = self.core.local.store.get(key).map_err(peer_err)? else {
            return Ok(false);
        };
        if !record.is_tombstone() {
            return Ok(false);
        }
        let remotes: Vec<&String> = replicas
            .iter()
            .filter(|r| **r != self.core.node_id)
            .collect();
        for r in &remotes {
            let peer = self.peer(r)?;
            let items = vec![(key.clone(), WireRecord::from(record.clone()))];
            Self::call(&peer, Request::WriteBatch { items }).await?;
        }
        let v = record.version;
        for r in &remotes {
            let peer = self.peer(r)?;
            Self::call(
                &peer,
                Request::Purge {
                    key: key.clone(),
                    ts: v.ts,
                    node: v.node,
                },
            )
            .await?;
        }
        self.core
            .local
            .apply(Mutation::Purge {
                key: key.clone(),
                version: v,
            })
            .await
            .map_err(peer_err)?;
        Metrics::add(&self.core.local.stats.tombstones_purged, 1);
        Ok(true)
    }
}

/// Tokens of leaf `index` of a tree of `depth` (see [`MerkleTree::leaf_span`]),
/// or `None` when a peer names a leaf that does not exist.
fn leaf_span(depth: u8, index: u32) -> Option<(Token, Token)> {
    let tree_leaves = 1u64 << depth;
    (u64::from(index) < tree_leaves).then(|| {
        let shift = 64 - u32::from(depth);
        let start = u128::from(index) << shift;
        let end = (u128::from(index + 1) << shift) - 1;
        (start as Token, end as Token)
    })
}

fn rand_u64(seed: u64) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Run one anti-entropy pass now; answers its summary.
#[derive(Message)]
#[rtype(result = "RunSummary")]
pub struct RunRepair;

pub struct RepairActor {
    svc: RepairService,
    running: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<RunSummary>>,
    gc_running: bool,
}

impl RepairActor {
    pub fn new(svc: RepairService) -> Self {
        RepairActor {
            svc,
            running: false,
            waiters: Vec::new(),
            gc_running: false,
        }
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        self.start_pass_with(None, ctx)
    }

    /// Runs a pass for peers whose hints were dropped, once they are up.
    fn serve_wanted(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        let wanted: Vec<String> = {
            let mut set = self
                .svc
                .core
                .local
                .repair_wanted
                .lock()
                .expect("repair_wanted");
            let up: Vec<String> = set
                .iter()
                .filter(|p| !self.svc.core.liveness.is_down(p))
                .cloned()
                .collect();
            for p in &up {
                set.remove(p);
            }
            up
        };
        if !wanted.is_empty() {
            log::info!("anti-entropy for dropped hints: {wanted:?}");
            self.start_pass_with(Some(wanted), ctx);
        }
    }

    fn start_pass_with(&mut self, only: Option<Vec<String>>, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        {
            let mut st = self.svc.status.lock().expect("status");
            st.running = true;
        }
        let svc = self.svc.clone();
        let complete_pass = only.is_none();
        ctx.spawn(async move { svc.run_pass(only).await }.into_actor(self).map(move |sum, act, _| {
            act.running = false;
            let complete = sum.peers_failed.is_empty()
                || (!sum.peers_synced.is_empty() && sum.peers_failed.iter().all(|(_, e)| e == "down"));
            if complete_pass && complete && act.svc.core.local.repairing.swap(false, Ordering::Relaxed) {
                log::info!("anti-entropy pass complete: serving reads again");
            }
            log::info!(
                "anti-entropy pass: synced {:?}, failed {:?}, {} leaves differed, pulled {}, pushed {}, {} bytes, {} ms",
                sum.peers_synced, sum.peers_failed, sum.leaves_differing, sum.keys_pulled, sum.keys_pushed, sum.bytes, sum.duration_ms
            );
            {
                let mut st = act.svc.status.lock().expect("status");
                st.running = false;
                st.current_peer = None;
                st.passes += 1;
                st.last = Some(sum.clone());
                st.last_finished_ms = Some(act.svc.core.hlc.wall_ms());
            }
            for w in act.waiters.drain(..) {
                let _ = w.send(sum.clone());
            }
        }));
    }
}

impl Actor for RepairActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let interval = self.svc.config.interval;
        ctx.run_interval(interval, |act, ctx| act.start_pass(ctx));
        if self.svc.core.local.repairing.load(Ordering::Relaxed) {
            // Retry soon until a pass completes: reads wait for it.
            ctx.run_interval(Duration::from_secs(2), |act, ctx| {
                if act.svc.core.local.repairing.load(Ordering::Relaxed) {
                    act.start_pass(ctx);
                }
            });
        }
        ctx.run_interval(WANTED_INTERVAL, |act, ctx| act.serve_wanted(ctx));
        ctx.run_interval(GC_INTERVAL, |act, ctx| {
            if act.gc_running {
                return;
            }
            act.gc_running = true;
            let svc = act.svc.clone();
            ctx.spawn(
                async move { svc.gc_pass().await }
                    .into_actor(act)
                    .map(|purged, act, _| {
                        act.gc_running = false;
                        if purged > 0 {
                            log::info!("purged {purged} tombstones older than the grace period");
                            act.svc.status.lock().expect("status").tombstones_purged += purged;
                        }
                    }),
            );
        });
    }
}

impl Handler<RunRepair> for RepairActor {
    type Result = ResponseFuture<RunSummary>;

    fn handle(&mut self, _: RunRepair, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(tx);
        // A pass already running may have compared some peers before this
        // request: wait for it, then run a fresh one.
        if self.running {
            let me = ctx.address();
            return Box::pin(async move {
                let _ = rx.await;
                me.send(RunRepair).await.unwrap_or_default()
            });
        }
        self.start_pass(ctx);
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}
