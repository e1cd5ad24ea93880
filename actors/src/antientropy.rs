//! Merkle-tree anti-entropy: the exchange between two replicas, both sides.
//!
//! For each peer, the ranges both nodes replicate are those ring ranges whose
//! preference list holds both. Each side builds a Merkle tree
//! ([`crate::merkle`]) over the `(key, version)` of its records in those
//! ranges, by range scans that read record headers only (values are never
//! loaded to build a tree). The initiator asks the peer for its tree's root,
//! then only for the children of nodes that differ, level by level, down to
//! the leaves that differ.
//!
//! For those leaves the two sides' `(key, version)` streams are compared
//! side by side ([`crate::merge_join`]), a page at a time from each side:
//! what the peer has newer (or we lack) is fetched with `ReadMany` and
//! applied locally, what we have newer is pushed with `WriteBatch`, both last
//! write wins, so the exchange converges to the union by version. Memory is a
//! page per side plus one batch of keys to move, whatever the data size;
//! every page, batch and answer is bounded in bytes below the frame limit
//! ([`crate::limits`]), and a record near the value limit travels alone.
//!
//! Trees are built per exchange, not maintained incrementally: a build costs
//! one range scan of headers and one hash per record held in common with that
//! peer, and 2^(depth+1) words of memory; writes cost nothing extra. The
//! responder keeps a session's tree in a bounded table
//! ([`crate::sessions`]) that expires entries after their last use; at most
//! [`MAX_CONCURRENT_BUILDS`] trees are built at once, on the blocking pool
//! (a build waits for a slot at most half the background deadline, then is
//! refused `Overloaded`),
//! and each peer may open sessions (ask for builds) at most
//! [`BUILD_RATE`] — a burst of a few, then one a second ([`crate::rate`]).
//! Beyond that a new session is refused with `Overloaded` (counted): its
//! initiator fails that exchange and tries again at its next pass, so fresh
//! session ids cannot keep a responder scanning back to back.
//! Record transfer is throttled to the configured bandwidth; every call has
//! the background deadline and travels at background priority.

use crate::coordinator::NodeCore;
use crate::limits::{batch_budget, record_wire_bytes, BACKGROUND_BATCH_ITEMS, MAX_KEY_BYTES};
use crate::merge_join::{MergeJoin, Step};
use crate::merkle::{differing_children, MerkleTree, DEFAULT_DEPTH};
use crate::metrics::Metrics;
use crate::peer::PeerError;
use crate::rate::{Rate, RateLimiter};
use crate::record::Record;
use crate::sessions::SessionTable;
use crate::storage::{data_key_token, StoreError};
use crate::token::Token;
use crate::version::Version;
use crate::wire::{ErrorCode, KeyVersion, Request, Response, WireRecord, MAX_ITEMS, MAX_MEMBERS};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a responder keeps a session's tree after its last use.
pub const SESSION_TTL: Duration = Duration::from_secs(120);
/// Sessions one peer may hold at a responder.
pub const SESSIONS_PER_PEER: usize = 2;
/// Sessions a responder holds in all.
pub const MAX_SESSIONS: usize = 32;
/// Trees built at once (each is a scan of the shared ranges).
pub const MAX_CONCURRENT_BUILDS: usize = 2;
/// How often one peer may make us build a tree (open a session). A
/// legitimate initiator opens one session per pass, and its passes never
/// overlap: one per `repair.anti_entropy_interval_ms`, plus on-demand passes
/// (`POST /v1/admin/repair`, coalesced while one runs), the retries of a
/// node in repair mode (every 2 s) and passes for dropped hints (every 2 s)
/// — rarely more than 3 or 4 close together, and about one a second when an
/// operator or the chaos suite repairs in a loop. A burst of 8 and one a
/// second keeps all of that clear of the bound, while a peer opening fresh
/// sessions in a loop gets at most one build a second (each a scan of the
/// ranges it shares with us).
pub const BUILD_RATE: Rate = Rate {
    burst: 8,
    refill_ms: 1_000,
};
/// Leaves compared in one stream of version pages.
pub const LEAVES_PER_REQUEST: usize = 16;
/// Rows read per storage scan while building a tree.
const SCAN_PAGE: usize = 4096;
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

/// A responder's state for one exchange.
#[derive(Debug)]
struct Session {
    tree: MerkleTree,
    ranges: Vec<(Token, Token)>,
}

/// The anti-entropy logic, shared by the repair actor (initiator) and the
/// inbound dispatcher (responder). Cheap to clone.
#[derive(Clone)]
pub struct RepairService {
    pub core: Arc<NodeCore>,
    sessions: Arc<Mutex<SessionTable<Arc<Session>>>>,
    builds: Arc<Semaphore>,
    /// Per peer: how fast it may open sessions ([`BUILD_RATE`]).
    build_rate: Arc<Mutex<RateLimiter>>,
    pub status: Arc<Mutex<RepairStatus>>,
    pub config: RepairConfig,
    epoch: Instant,
}

/// Inclusive token spans of `leaves` of a tree of `depth`, intersected with
/// `ranges` (sorted and disjoint, as [`RepairService::shared_ranges`] makes
/// them), sorted; `None` when a peer names a leaf that does not exist. Costs
/// O(leaves · log ranges + spans), so a peer naming every leaf cannot make it
/// quadratic.
fn leaf_spans(depth: u8, leaves: &[u32], ranges: &[(Token, Token)]) -> Option<Vec<(Token, Token)>> {
    let mut leaves = leaves.to_vec();
    leaves.sort_unstable();
    leaves.dedup();
    let mut spans = Vec::new();
    for leaf in leaves {
        let (ls, le) = leaf_span(depth, leaf)?;
        // The first range that ends at or after the leaf's start.
        let first = ranges.partition_point(|&(_, b)| b < ls);
        for &(a, b) in &ranges[first..] {
            if a > le {
                break;
            }
            let (s, e) = (a.max(ls), b.min(le));
            if s <= e {
                spans.push((s, e));
            }
        }
    }
    spans.sort_unstable();
    spans.dedup();
    Some(spans)
}

/// Whether `dk`'s token lies in one of the sorted `spans`.
fn in_spans(dk: &[u8], spans: &[(Token, Token)]) -> bool {
    let t = data_key_token(dk);
    let at = spans.partition_point(|&(_, e)| e < t);
    spans.get(at).is_some_and(|&(s, _)| s <= t) && dk.len() > 8
}

/// Tokens of leaf `index` of a tree of `depth`, or `None` when it does not
/// exist.
fn leaf_span(depth: u8, index: u32) -> Option<(Token, Token)> {
    if depth == 0 || depth > crate::merkle::MAX_DEPTH {
        return None;
    }
    (u64::from(index) < (1u64 << depth)).then(|| {
        let shift = 64 - u32::from(depth);
        let start = u128::from(index) << shift;
        let end = (u128::from(index + 1) << shift) - 1;
        (start as Token, end as Token)
    })
}

/// A page of data keys and versions, and where to resume when more remain.
type VersionPage = (Vec<(Bytes, Version)>, Option<Bytes>);

/// Keys and versions in `spans` (sorted), after the data key `after`, at
/// most `max_items` and about `max_bytes`; the cursor to resume from when
/// more may remain.
fn versions_in_spans(
    store: &crate::storage::Store,
    spans: &[(Token, Token)],
    after: Option<&[u8]>,
    max_items: usize,
    max_bytes: usize,
) -> Result<VersionPage, StoreError> {
    let after_token = after.map(data_key_token);
    let mut out: Vec<(Bytes, Version)> = Vec::new();
    let mut bytes = 0usize;
    for &(s, e) in spans {
        if after_token.is_some_and(|t| t > e) {
            continue;
        }
        let resume = after.filter(|_| after_token.is_some_and(|t| t >= s));
        let room_items = max_items - out.len();
        let room_bytes = max_bytes.saturating_sub(bytes).max(1);
        let page = store.scan_versions(s, e, resume, room_items, room_bytes)?;
        // The page may have stopped for its bounds rather than at the end of
        // the span: then resume after its last key (at worst one more call).
        // An empty page means the span is done.
        let page_bytes: usize = page.iter().map(|(k, _)| k.len() + 24).sum();
        let full = !page.is_empty()
            && (page.len() >= room_items || page_bytes + MAX_KEY_BYTES + 32 > room_bytes);
        for (k, v) in page {
            bytes += k.len() + 24;
            out.push((k, v));
        }
        if full {
            let next = out.last().map(|(k, _)| k.clone());
            return Ok((out, next));
        }
    }
    Ok((out, None))
}

impl RepairService {
    pub fn new(core: Arc<NodeCore>, config: RepairConfig) -> Self {
        RepairService {
            core,
            sessions: Arc::new(Mutex::new(SessionTable::new(
                SESSION_TTL.as_millis() as u64,
                SESSIONS_PER_PEER,
                MAX_SESSIONS,
            ))),
            builds: Arc::new(Semaphore::new(MAX_CONCURRENT_BUILDS)),
            build_rate: Arc::new(Mutex::new(RateLimiter::new(BUILD_RATE, MAX_MEMBERS))),
            status: Arc::default(),
            config,
            epoch: Instant::now(),
        }
    }

    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn budget(&self) -> usize {
        batch_budget(self.config.max_frame)
    }

    /// Inclusive token intervals replicated by both this node and `peer`
    /// (the spans of the partitions they share), sorted and merged.
    pub fn shared_ranges(&self, peer: &str) -> Vec<(Token, Token)> {
        let view = self.core.view();
        let layout = &view.layout;
        let mut merged: Vec<(Token, Token)> = Vec::new();
        for p in layout.shared(&self.core.node_id, peer) {
            let (a, b) = layout.span(p);
            match merged.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(a) => last.1 = b,
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// Builds the tree over our records in `ranges` on the blocking pool, at
    /// most [`MAX_CONCURRENT_BUILDS`] at once. Waits for a build slot at
    /// most half the background deadline (the time its asker waits for the
    /// answer), leaving the other half for the build: `Overloaded` past
    /// that, so a build rarely starts for an asker gone.
    async fn build_tree(&self, ranges: Vec<(Token, Token)>) -> Result<MerkleTree, StoreError> {
        let wait = self.core.replication.background_timeout / 2;
        let _permit = match tokio::time::timeout(wait, self.builds.acquire()).await {
            Ok(permit) => permit.map_err(|_| StoreError::Engine("shutting down".into()))?,
            Err(_) => {
                Metrics::add(&self.core.local.stats.ae_builds_refused, 1);
                return Err(StoreError::Overloaded(format!(
                    "no Merkle tree build slot within {} ms ({MAX_CONCURRENT_BUILDS} builds \
                     at once)",
                    wait.as_millis()
                )));
            }
        };
        let store = self.core.local.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut tree = MerkleTree::new(DEFAULT_DEPTH);
            for (from, to) in ranges {
                let mut after: Option<Bytes> = None;
                loop {
                    let page =
                        store.scan_versions(from, to, after.as_deref(), SCAN_PAGE, usize::MAX)?;
                    for (dk, version) in &page {
                        tree.insert(data_key_token(dk), &dk[8..], *version);
                    }
                    match page.last() {
                        Some((dk, _)) if page.len() == SCAN_PAGE => after = Some(dk.clone()),
                        _ => break,
                    }
                }
            }
            Ok(tree)
        })
        .await
        .map_err(|e| StoreError::Engine(format!("tree build task: {e}")))?
    }

    /// Per peer, the root of our tree over the ranges we share with it: two
    /// replicas agree on those ranges exactly when their roots are equal
    /// (`GET /v1/admin/merkle`; the chaos suite's convergence check).
    pub async fn shared_roots(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for peer in self.core.view().peers.ids() {
            let tree = self.build_tree(self.shared_ranges(&peer)).await?;
            out.push((peer, tree.root()));
        }
        Ok(out)
    }

    // ------------------------------------------------------------------
    // Responder
    // ------------------------------------------------------------------

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
            Request::LeafVersions {
                session,
                leaves,
                after,
                max_bytes,
            } => {
                self.answer_versions(from, session, leaves, after, max_bytes)
                    .await
            }
            Request::ReadMany { keys, max_bytes } => self.answer_read_many(keys, max_bytes).await,
            _ => return None,
        };
        Some(result.unwrap_or_else(|(code, message)| Response::error(code, message)))
    }

    async fn session(&self, from: &str, id: u64) -> Option<Arc<Session>> {
        let now = self.mono_ms();
        self.sessions.lock().expect("sessions").get(from, id, now)
    }

    async fn answer_hashes(
        &self,
        from: &str,
        session: u64,
        epoch: u64,
        depth: u8,
        level: u8,
        indices: Vec<u32>,
    ) -> Result<Response, (ErrorCode, String)> {
        let invalid = |m: String| (ErrorCode::Invalid, m);
        if epoch != self.core.view().layout.fingerprint() || depth != DEFAULT_DEPTH {
            return Err(invalid(format!(
                "layout fingerprint {epoch:#x} / depth {depth} do not match ours: the two nodes place partitions differently (check that cluster.partitions, cluster.replication_factor and [[nodes]] agree)"
            )));
        }
        let state = match self.session(from, session).await {
            Some(s) => s,
            None => {
                let now = self.mono_ms();
                if !self
                    .build_rate
                    .lock()
                    .expect("build rate")
                    .try_take(from, now)
                {
                    Metrics::add(&self.core.local.stats.ae_builds_refused, 1);
                    log::debug!("refused a Merkle tree build for {from}: asked too often");
                    return Err((
                        ErrorCode::Overloaded,
                        format!(
                            "too many new anti-entropy sessions: at most {} at once, then one \
                             every {} ms; try again later",
                            BUILD_RATE.burst, BUILD_RATE.refill_ms
                        ),
                    ));
                }
                let ranges = self.shared_ranges(from);
                let tree = self.build_tree(ranges.clone()).await.map_err(|e| match e {
                    StoreError::Overloaded(why) => (ErrorCode::Overloaded, why),
                    e => (ErrorCode::Storage, e.to_string()),
                })?;
                let s = Arc::new(Session { tree, ranges });
                let now = self.mono_ms();
                self.sessions
                    .lock()
                    .expect("sessions")
                    .insert(from, session, s.clone(), now);
                s
            }
        };
        let hashes = state
            .tree
            .hashes_at(level, &indices)
            .ok_or_else(|| invalid(format!("no tree node at level {level} for those indices")))?;
        Ok(Response::Hashes { hashes })
    }

    async fn answer_versions(
        &self,
        from: &str,
        session: u64,
        leaves: Vec<u32>,
        after: Option<Bytes>,
        max_bytes: u32,
    ) -> Result<Response, (ErrorCode, String)> {
        let state = self.session(from, session).await.ok_or_else(|| {
            (
                ErrorCode::Invalid,
                format!("unknown repair session {session}"),
            )
        })?;
        let max_bytes = (max_bytes as usize).clamp(1, self.budget());
        let store = self.core.local.store.clone();
        let (items, next) = tokio::task::spawn_blocking(move || {
            let spans = leaf_spans(DEFAULT_DEPTH, &leaves, &state.ranges)
                .ok_or_else(|| (ErrorCode::Invalid, "a leaf does not exist".to_string()))?;
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
    async fn answer_read_many(
        &self,
        keys: Vec<Bytes>,
        max_bytes: u32,
    ) -> Result<Response, (ErrorCode, String)> {
        let max_bytes = (max_bytes as usize).clamp(1, self.budget());
        let store = self.core.local.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            let mut bytes = 0;
            for key in keys {
                let record = store.get(&key)?;
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

    // ------------------------------------------------------------------
    // Initiator
    // ------------------------------------------------------------------

    async fn call(&self, peer: &str, request: Request) -> Result<Response, SyncError> {
        Ok(self
            .core
            .view()
            .peers
            .call(peer, request, self.core.replication.background_timeout)
            .await?)
    }

    /// One anti-entropy exchange with `peer`; adds what it did to `sum`.
    pub async fn sync_with(&self, peer: &str, sum: &mut RunSummary) -> Result<(), SyncError> {
        let started = Instant::now();
        let ranges = self.shared_ranges(peer);
        if ranges.is_empty() {
            return Ok(());
        }
        let local = self.build_tree(ranges.clone()).await?;
        let session = rand_u64(self.core.hlc.wall_ms() ^ self.mono_ms().rotate_left(32));
        let epoch = self.core.view().layout.fingerprint();
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
            let Response::Hashes { hashes } = self.call(peer, request).await? else {
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
            let differ = differing_children(&local, level, &indices, &hashes);
            if differ.is_empty() || level == depth {
                break differ;
            }
            indices = differ.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
            level += 1;
        };
        drop(local);
        sum.leaves_differing += leaves.len() as u64;
        let mut mover = Mover {
            svc: self,
            peer,
            started,
            moved: 0,
        };
        for chunk in leaves.chunks(LEAVES_PER_REQUEST) {
            let spans = leaf_spans(depth, chunk, &ranges)
                .ok_or_else(|| SyncError::Protocol("bad leaf".into()))?;
            self.compare_leaves(&mut mover, session, chunk, &spans, sum)
                .await?;
        }
        log::debug!(
            "anti-entropy with {peer}: {} leaves differed, {} ms",
            leaves.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Walks both sides' versions in `leaves`, moving what differs.
    async fn compare_leaves(
        &self,
        mover: &mut Mover<'_>,
        session: u64,
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
                        session,
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

    /// Sleeps as long as needed to keep `moved` bytes within the bandwidth.
    async fn throttle(&self, moved: u64, started: Instant) {
        let rate = self.config.bandwidth_bytes_per_sec.max(1);
        let due = Duration::from_secs_f64(moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Checks a peer's page of versions: keys strictly increasing from the last
/// key it sent, all inside the requested spans, and a resume point (if any)
/// at or after its last key. A page that breaks these could make the walk
/// repeat forever or pull keys nobody asked about.
fn check_page(
    items: &[KeyVersion],
    next: Option<&Bytes>,
    last: Option<&Bytes>,
    spans: &[(Token, Token)],
) -> Result<(), SyncError> {
    let bad = |why: &str| {
        Err(SyncError::Protocol(format!(
            "a bad page of versions: {why}"
        )))
    };
    if next.is_some() && items.is_empty() {
        return bad("empty, yet it continues");
    }
    let mut prev = last;
    for (k, _, _) in items {
        if prev.is_some_and(|p| k <= p) {
            return bad("keys out of order");
        }
        if !in_spans(k, spans) {
            return bad("a key outside the requested leaves");
        }
        prev = Some(k);
    }
    if let (Some(n), Some(p)) = (next, prev) {
        if n < p {
            return bad("it resumes before its last key");
        }
    }
    Ok(())
}

/// The key inside a data key (`token || key`).
fn user_key(dk: &Bytes) -> Bytes {
    if dk.len() > 8 {
        dk.slice(8..)
    } else {
        Bytes::new()
    }
}

fn value_len(r: &Record) -> usize {
    r.value.as_ref().map_or(0, |v| v.len())
}

/// Moves records between us and one peer, counting and throttling.
struct Mover<'a> {
    svc: &'a RepairService,
    peer: &'a str,
    started: Instant,
    moved: u64,
}

impl Mover<'_> {
    /// Fetches the peer's records of `keys` and applies them here.
    async fn pull(&mut self, mut keys: Vec<Bytes>, sum: &mut RunSummary) -> Result<(), SyncError> {
        keys.retain(|k| !k.is_empty());
        let stats = &self.svc.core.local.stats;
        while !keys.is_empty() {
            let request = Request::ReadMany {
                keys: keys.clone(),
                max_bytes: self.svc.budget() as u32,
            };
            let Response::Records { items } = self.svc.call(self.peer, request).await? else {
                return Err(SyncError::Protocol("unexpected answer to ReadMany".into()));
            };
            if items.is_empty()
                || items.len() > keys.len()
                || items.iter().zip(&keys).any(|((k, _), want)| k != want)
            {
                return Err(SyncError::Protocol(
                    "ReadMany answered other keys than asked".into(),
                ));
            }
            keys.drain(..items.len());
            let records: Vec<(Bytes, Record)> = items
                .into_iter()
                .filter_map(|(k, r)| r.map(|r| (k, Record::from(r))))
                .collect();
            let bytes: u64 = records
                .iter()
                .map(|(k, r)| (k.len() + value_len(r)) as u64)
                .sum();
            sum.keys_pulled += records.len() as u64;
            sum.bytes += bytes;
            Metrics::add(&stats.ae_keys_pulled, records.len() as u64);
            Metrics::add(&stats.ae_bytes, bytes);
            if !records.is_empty() {
                let outcome = self.svc.core.local.write_batch(records).await?;
                self.requeue_if_refused("we", outcome.refused.len());
            }
            self.moved += bytes;
            self.svc.throttle(self.moved, self.started).await;
        }
        Ok(())
    }

    /// Records that `by` (we, pulling, or the peer, pushed to) refused — most
    /// likely versions ahead of a clock not measured yet — leave this
    /// exchange incomplete: another one with the peer is queued rather than
    /// left to the next full pass. (A pass run while our own clock was
    /// unmeasured never ends a restarted node's wait for repair; see
    /// `RepairActor::start_pass`.)
    fn requeue_if_refused(&self, by: &str, refused: usize) {
        if refused == 0 {
            return;
        }
        log::warn!(
            "anti-entropy with {}: {by} refused {refused} records; another exchange is queued",
            self.peer
        );
        self.svc
            .core
            .local
            .repair_wanted
            .lock()
            .expect("repair_wanted")
            .insert(self.peer.to_string());
    }

    /// Sends our records of `keys` to the peer, in batches bounded in bytes.
    async fn push(&mut self, keys: Vec<Bytes>, sum: &mut RunSummary) -> Result<(), SyncError> {
        let stats = &self.svc.core.local.stats;
        let budget = self.svc.budget();
        let mut rest = keys;
        while !rest.is_empty() {
            // Read only as many records as one batch carries.
            let store = self.svc.core.local.store.clone();
            let (page, taken, rest_back) = tokio::task::spawn_blocking(move || {
                let mut page = Vec::new();
                let (mut bytes, mut taken) = (0, 0);
                for k in &rest {
                    if page.len() >= BACKGROUND_BATCH_ITEMS {
                        break;
                    }
                    let Some(r) = store.get(k)? else {
                        taken += 1;
                        continue;
                    };
                    let size = record_wire_bytes(k.len(), value_len(&r));
                    if !page.is_empty() && bytes + size > budget {
                        break;
                    }
                    bytes += size;
                    taken += 1;
                    page.push((k.clone(), r));
                }
                Ok::<_, StoreError>((page, taken, rest))
            })
            .await
            .map_err(|e| SyncError::Protocol(format!("read task: {e}")))??;
            rest = rest_back;
            rest.drain(..taken);
            if page.is_empty() {
                continue;
            }
            let bytes: u64 = page
                .iter()
                .map(|(k, r)| (k.len() + value_len(r)) as u64)
                .sum();
            let n = page.len() as u64;
            let items = page
                .into_iter()
                .map(|(k, r)| (k, WireRecord::from(r)))
                .collect();
            match self
                .svc
                .call(self.peer, Request::WriteBatch { items })
                .await?
            {
                Response::Batch { refused, .. } => {
                    self.requeue_if_refused(self.peer, refused.len());
                }
                _ => {
                    return Err(SyncError::Protocol(
                        "unexpected answer to WriteBatch".into(),
                    ))
                }
            }
            sum.keys_pushed += n;
            sum.bytes += bytes;
            Metrics::add(&stats.ae_keys_pushed, n);
            Metrics::add(&stats.ae_bytes, bytes);
            self.moved += bytes;
            self.svc.throttle(self.moved, self.started).await;
        }
        Ok(())
    }
}

fn rand_u64(seed: u64) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anti-entropy service of n1 in a 3-node cluster (N = 3), over an
    /// empty store in `dir`.
    fn responder(dir: &std::path::Path) -> RepairService {
        let store = crate::storage::Store::open(dir, "n1", false).unwrap();
        let core = crate::coordinator::testing::node_core(store, &["n1", "n2", "n3"], 3);
        let config = RepairConfig {
            interval: Duration::from_secs(600),
            bandwidth_bytes_per_sec: 16 << 20,
            gc_grace_ms: 60_000,
            max_frame: 16 << 20,
        };
        RepairService::new(core, config)
    }

    /// Whether `peer`'s `TreeHashes` for the root of `session` was answered
    /// with hashes (`true`) or refused as overloaded (`false`).
    async fn root_of(svc: &RepairService, peer: &str, session: u64) -> bool {
        let request = Request::TreeHashes {
            session,
            epoch: svc.core.view().layout.fingerprint(),
            depth: DEFAULT_DEPTH,
            level: 0,
            indices: vec![0],
        };
        match svc.handle(peer, request).await {
            Some(Response::Hashes { hashes }) => hashes.len() == 1,
            Some(Response::Error {
                code: ErrorCode::Overloaded,
                ..
            }) => false,
            other => panic!("{other:?}"),
        }
    }

    /// Security review (h15): a member opening fresh session ids made us
    /// build (scan) Merkle trees back to back, two at a time, for as long
    /// as it liked. Now each peer gets a burst of builds, then one a second;
    /// sessions already open, and other peers, are unaffected.
    #[actix::test]
    async fn fresh_sessions_beyond_the_build_rate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let svc = responder(dir.path());
        let started = Instant::now();
        let mut built = Vec::new();
        for session in 0..50 {
            if root_of(&svc, "n2", session).await {
                built.push(session);
            }
        }
        let elapsed = started.elapsed();
        let burst = BUILD_RATE.burst as usize;
        let earned = (elapsed.as_millis() as u64 / BUILD_RATE.refill_ms) as usize;
        assert!(
            (burst..=burst + earned).contains(&built.len()),
            "{} of 50 built in {elapsed:?}",
            built.len()
        );
        let refused = svc
            .core
            .local
            .stats
            .ae_builds_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(refused as usize, 50 - built.len());
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        // The exchange of a session already open goes on (no new build).
        let open = *built.last().unwrap();
        assert!(root_of(&svc, "n2", open).await);
        // Another member's exchange is served at once.
        assert!(root_of(&svc, "n3", 1_000).await);
        // n2 waits for its next token (unless this machine was so slow a
        // token was earned already), then opens a session again.
        if started.elapsed() < Duration::from_millis(BUILD_RATE.refill_ms * 9 / 10) {
            assert!(!root_of(&svc, "n2", 1_001).await);
        }
        tokio::time::sleep(Duration::from_millis(BUILD_RATE.refill_ms + 100)).await;
        assert!(root_of(&svc, "n2", 1_002).await);
    }

    /// Sweep M5: a responder waited for a build slot without a deadline,
    /// then built a tree for an asker long gone. Now it waits at most half
    /// the background deadline and answers `Overloaded`.
    #[actix::test]
    async fn a_build_waits_for_a_slot_at_most_the_background_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let svc = responder(dir.path());
        let held = svc
            .builds
            .clone()
            .acquire_many_owned(MAX_CONCURRENT_BUILDS as u32)
            .await
            .unwrap();
        let started = Instant::now();
        let deadline = svc.core.replication.background_timeout;
        let answered = tokio::time::timeout(deadline * 3, root_of(&svc, "n2", 7))
            .await
            .expect("the build waited for a slot without a deadline");
        assert!(!answered, "built without a slot");
        let waited = started.elapsed();
        assert!(waited >= deadline / 2, "{waited:?}");
        assert!(waited < deadline, "{waited:?}");
        drop(held);
        assert!(root_of(&svc, "n2", 8).await);
    }

    #[test]
    fn leaf_spans_refuse_leaves_that_do_not_exist() {
        assert!(leaf_spans(10, &[1024], &[(0, u64::MAX)]).is_none());
        assert!(leaf_spans(0, &[0], &[(0, u64::MAX)]).is_none());
        let spans = leaf_spans(1, &[1, 0], &[(0, u64::MAX)]).unwrap();
        assert_eq!(spans, vec![(0, u64::MAX / 2), (u64::MAX / 2 + 1, u64::MAX)]);
    }

    fn dk(token: u64, key: &str) -> Bytes {
        let mut v = token.to_be_bytes().to_vec();
        v.extend_from_slice(key.as_bytes());
        Bytes::from(v)
    }

    /// Review of 05: a peer that answered the same page with a resume point
    /// forever kept the exchange (and every later pass) running forever.
    #[test]
    fn pages_that_repeat_or_stray_are_refused() {
        let spans = [(100, 200), (300, 400)];
        let page = vec![(dk(150, "a"), 1, 1), (dk(350, "b"), 1, 1)];
        let next = dk(350, "b");
        assert!(check_page(&page, Some(&next), None, &spans).is_ok());
        // The same page again after it: out of order.
        assert!(check_page(&page, Some(&next), Some(&next), &spans).is_err());
        let stray = vec![(dk(250, "c"), 1, 1)];
        assert!(check_page(&stray, None, None, &spans).is_err());
        let backwards = vec![(dk(350, "b"), 1, 1), (dk(150, "a"), 1, 1)];
        assert!(check_page(&backwards, None, None, &spans).is_err());
        assert!(check_page(&[], Some(&next), None, &spans).is_err());
        let behind = dk(120, "z");
        assert!(check_page(&page, Some(&behind), None, &spans).is_err());
    }

    /// Review of 05: a peer naming every leaf made the responder do
    /// leaves × ranges work on the peer thread.
    #[test]
    fn leaf_spans_stay_linear_in_leaves_and_ranges() {
        let ranges: Vec<(Token, Token)> = (0..20_000u64)
            .map(|i| (i << 44, (i << 44) + (1 << 40)))
            .collect();
        let leaves: Vec<u32> = (0..(1u32 << 16)).collect();
        let started = std::time::Instant::now();
        let spans = leaf_spans(16, &leaves, &ranges).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(spans.len() >= ranges.len());
        assert!(spans.windows(2).all(|w| w[0].1 < w[1].0));
    }

    #[test]
    fn user_keys_of_malformed_data_keys_are_empty() {
        assert_eq!(user_key(&Bytes::from_static(b"abc")), Bytes::new());
        assert_eq!(
            user_key(&Bytes::from_static(b"12345678k")),
            Bytes::from_static(b"k")
        );
    }
}
