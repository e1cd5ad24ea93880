//! The coordinator's logic: placement, quorum reads and writes, sloppy quorum
//! with hinted handoff, and read repair. The HTTP handlers call it on their
//! own worker.
//!
//! * **Placement.** A key's replicas are the N nodes the layout assigns to
//!   its partition (its preference list; [`crate::layout`]).
//! * **Read.** Ask every replica the failure detector does not consider down;
//!   answer once R replied, with the newest version (tombstones included).
//!   The remaining answers are awaited in the background; replicas that
//!   answered with an older version (or nothing) are sent the newest: read
//!   repair. With `read_repair_blocking_all`, an `all` read repairs before it
//!   answers.
//! * **Write.** Stamp a fresh hybrid-logical-clock version and send it to each
//!   replica in its own task. A replica that is down, or fails, gets a hint
//!   (except this node: peers refuse hints addressed to their sender)
//!   instead: the write is stored at the next healthy node clockwise past the
//!   preference list (or, when there is none, at another live replica), tagged
//!   with the intended owner, and replayed by that node's hint actor. W counts
//!   distinct nodes that durably hold the write; hint holders count only with
//!   sloppy quorum on. Tasks outlive the request: hints are stored even after
//!   the client was answered. A replica holding a newer or equal version
//!   answers `Superseded`; the coordinator retries once above it, so a node
//!   whose clock lags cannot write "into the past".
//! * **Conditional write.** Under a per-key lock of this coordinator: read at
//!   the request's level, check the condition, write above the version read.
//!   Two conditional writes to one key through one node are serialized;
//!   through different nodes they are not (there is no consensus), and the
//!   later version wins.

pub mod holders;
pub mod tally;
pub mod view;

pub use view::{ClusterView, MemberInfo};

use crate::error::{Error, Result};
use crate::gossip::Liveness;
use crate::metrics::Metrics;
use crate::node_id::NodeId;
use crate::peer::PeerError;
use crate::quorum::{reconcile, Consistency};
use crate::record::Record;
use crate::replica::LocalReplica;
use crate::storage::{Hint, Precondition, StoreError, WriteOp, WriteOutcome};
use crate::version::{Hlc, IssueRefused, Version};
use crate::wire::{Request, Response, WireRecord};
use bytes::Bytes;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tally::{Ack, ReadTally, Verdict, WritePolicy, WriteTally};
use tokio::sync::mpsc;

/// Reads awaiting their late replicas in the background at once; beyond,
/// a read answers without repairing its stale replicas (anti-entropy will).
pub const MAX_READ_TAILS: usize = 1024;
/// Attempts of a write whose version some replica already exceeds: the
/// second goes above the newest version seen (clock skew); after that, a newer
/// version is a concurrent later write and the write is acknowledged.
const MAX_WRITE_ATTEMPTS: usize = 2;

/// Replication parameters (validated by the config loader: r, w ≤ n).
#[derive(Clone, Copy, Debug)]
pub struct Replication {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub request_timeout: Duration,
    /// Deadline of every background call (hint replay, anti-entropy, GC).
    pub background_timeout: Duration,
    /// Unreachable replicas get hints.
    pub hinted_handoff: bool,
    /// Hint holders count toward W.
    pub sloppy_quorum: bool,
    /// An `all` read repairs stale replicas before answering.
    pub read_repair_blocking_all: bool,
}

/// The coordinator state of a node, shared by every HTTP worker.
pub struct NodeCore {
    pub node_id: NodeId,
    pub local: LocalReplica,
    pub hlc: Arc<Hlc>,
    pub replication: Replication,
    pub liveness: Arc<Liveness>,
    view: RwLock<Arc<ClusterView>>,
    /// Serialize conditional writes per key (waiting at most a request
    /// timeout).
    key_locks: crate::key_locks::KeyLocks,
    /// Reads whose late answers are awaited in the background (for read
    /// repair), at most [`MAX_READ_TAILS`].
    read_tails: Arc<tokio::sync::Semaphore>,
}

/// What a successful write reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub version: Version,
    /// No live value existed before (HTTP 201 rather than 204).
    pub created: bool,
    /// Acknowledgements that came from hint holders (sloppy quorum).
    pub hinted: usize,
}

impl NodeCore {
    pub fn new(
        node_id: impl Into<NodeId>,
        local: LocalReplica,
        replication: Replication,
        liveness: Arc<Liveness>,
        view: ClusterView,
    ) -> Self {
        NodeCore {
            node_id: node_id.into(),
            hlc: local.hlc.clone(),
            local,
            replication,
            liveness,
            view: RwLock::new(Arc::new(view)),
            key_locks: Default::default(),
            read_tails: Arc::new(tokio::sync::Semaphore::new(MAX_READ_TAILS)),
        }
    }

    /// The membership view requests are routed by now.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock").clone()
    }

    /// Installs a new membership view (as membership changes).
    pub fn set_view(&self, view: ClusterView) {
        *self.view.write().expect("view lock") = Arc::new(view);
    }

    /// Refuses to coordinate on a node no live layout version places: its
    /// writes would not be fenced by a layout change (only placed nodes
    /// report their progress), nor its reads drained.
    fn placed(&self, view: &ClusterView) -> Result<()> {
        if view.places(&self.node_id) {
            return Ok(());
        }
        Err(Error::NotAMember(format!(
            "{} is in no live layout version (newest: {}): it coordinates no request until \
             `ringkv admin join {}` adds it — send the request to a member",
            self.node_id,
            view.newest(),
            self.node_id
        )))
    }

    /// Reads the local or a remote replica's record.
    async fn read_one(
        &self,
        view: &ClusterView,
        node: &str,
        key: &Bytes,
    ) -> Result<Option<Record>> {
        if node == self.node_id {
            return Ok(self.local.read(key)?);
        }
        match self
            .call(view, node, Request::Read { key: key.clone() })
            .await?
        {
            Response::Read { record } => Ok(record.map(Record::from)),
            _ => Err(unexpected(node, "read")),
        }
    }

    /// Writes to the local or a remote replica.
    async fn write_one(&self, view: &ClusterView, node: &str, op: WriteOp) -> Result<WriteOutcome> {
        if node == self.node_id {
            return Ok(self.local.write(op).await?);
        }
        let request = Request::Write {
            layout: view.newest(),
            key: op.key,
            record: WireRecord::from(op.record),
        };
        match self.call(view, node, request).await? {
            Response::Write {
                applied: true,
                replaced_live,
                ..
            } => Ok(WriteOutcome::Applied { replaced_live }),
            Response::Write {
                superseded: Some((ts, tag)),
                superseded_tombstone,
                ..
            } => Ok(WriteOutcome::Superseded {
                current: Version::new(ts, tag),
                tombstone: superseded_tombstone,
            }),
            _ => Err(unexpected(node, "write")),
        }
    }

    /// Stores a hint for `target` at `holder`.
    async fn hint_one(
        &self,
        view: &ClusterView,
        holder: &str,
        target: &str,
        op: WriteOp,
    ) -> Result<()> {
        if holder == self.node_id {
            let hint = Hint {
                target: target.to_string(),
                key: op.key,
                record: op.record,
                stored_ms: self.hlc.wall_ms(),
            };
            self.local.store_hint(hint).await?;
            return Ok(());
        }
        let request = Request::StoreHint {
            target: target.to_string(),
            key: op.key,
            record: WireRecord::from(op.record),
        };
        match self.call(view, holder, request).await? {
            Response::Hinted { .. } => Ok(()),
            _ => Err(unexpected(holder, "store_hint")),
        }
    }

    /// One request to a peer replica, within the request timeout.
    async fn call(&self, view: &ClusterView, node: &str, request: Request) -> Result<Response> {
        view.peers
            .call(node, request, self.replication.request_timeout)
            .await
            .map_err(|e| match e.code() {
                Some(crate::wire::ErrorCode::DiskFull) => Error::DiskFull(e.to_string()),
                _ => Error::Peer(e),
            })
    }

    /// A fresh version above `floor`, covered by a durable clock reservation
    /// (so this node never issues it again, even after a restart). Refused
    /// (503 `clock_skew`, not applied, and nothing stored in the clock) when
    /// the clock stepped since it was measured, or the version would lie
    /// beyond the allowed drift: every replica would refuse it, and ours
    /// would keep it.
    async fn new_version(&self, floor: Option<Version>) -> Result<Version> {
        // Without peers nobody else judges our versions: only the order of
        // our own matters, and the clock keeps it.
        let judged = !self.view().peers.is_empty();
        // Checked again here, not only when the write began: a write that
        // retries, or reads first (conditional), may outlive a step.
        let v = self.hlc.next_after(floor, judged).map_err(|e| {
            Metrics::add(&self.local.stats.clock_refusals, 1);
            Error::ClockSkew(match e {
                IssueRefused::Stepped => format!(
                    "{e}: this node coordinates writes once gossip has measured its clock \
                     (within a few rounds) — send the request to another node"
                ),
                IssueRefused::FloorAhead(_) => format!(
                    "{e}; the write is refused (a replica's version that far ahead comes from \
                     a member whose clock runs ahead)"
                ),
                IssueRefused::ClockAhead(_) => format!(
                    "{e}; it refuses to coordinate writes until real time catches up — send \
                     the request to another node"
                ),
            })
        })?;
        if let Some(ceiling) = self.hlc.needs_reservation(v) {
            self.local.reserve_clock(ceiling).await?;
        }
        Ok(v)
    }

    /// Reads `key` at `consistency`: the newest of R replies.
    pub async fn read(
        self: &Arc<Self>,
        key: &Bytes,
        consistency: Consistency,
    ) -> Result<Option<Record>> {
        let view = self.view();
        self.placed(&view)?;
        let pref = view.layout.preference_list(key, self.replication.n);
        if pref.len() == 1 && pref[0] == self.node_id {
            // The only replica is this node (N = 1): nothing to wait for,
            // nothing to repair.
            return self
                .local
                .read(key)
                .map_err(Error::from)
                .and_then(|r| self.sane(r));
        }
        let replicas: Vec<String> = pref.into_iter().map(String::from).collect();
        let need = consistency.required(replicas.len(), self.replication.r);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tally = ReadTally::new(need);
        let mut asked = 0;
        for node in &replicas {
            if node == &self.node_id {
                // The local replica is a synchronous MVCC read: no task needed.
                let r = self.local.read(key).map_err(Error::from);
                tally.record(
                    node.clone(),
                    r.and_then(|r| self.sane(r)).map_err(|e| e.to_string()),
                );
                continue;
            }
            if self.liveness.is_down(node) {
                tally.record(node.clone(), Err("down (failure detector)".into()));
                continue;
            }
            asked += 1;
            let (core, view, node, key, tx) = (
                self.clone(),
                view.clone(),
                node.clone(),
                key.clone(),
                tx.clone(),
            );
            actix::spawn(async move {
                let r = core.read_one(&view, &node, &key).await;
                let _ = tx.send((node, r));
            });
        }
        drop(tx);
        let blocking_repair =
            consistency == Consistency::All && self.replication.read_repair_blocking_all;
        let mut answered = 0;
        while !tally.done() || (blocking_repair && answered < asked) {
            let Some((node, r)) = rx.recv().await else {
                break;
            };
            answered += 1;
            tally.record(
                node,
                r.and_then(|r| self.sane(r)).map_err(|e| e.to_string()),
            );
        }
        let replies = tally.finish(consistency)?;
        let newest = reconcile(replies.iter().map(|(_, r)| r));
        // What a repair needs of each reply: its version, not its value.
        let versions: Vec<(String, Option<Version>)> = replies
            .into_iter()
            .map(|(node, r)| (node, r.map(|r| r.version)))
            .collect();
        if blocking_repair {
            self.repair_stale(&view, key, newest.as_ref(), &versions)
                .await;
        } else if let Ok(permit) = self.read_tails.clone().try_acquire_owned() {
            // The late answers are awaited, and stale replicas repaired, in
            // the background: at most MAX_READ_TAILS reads at once, each
            // holding one record (the newest) whatever the replies' sizes.
            let core = self.clone();
            let key = key.clone();
            let mut newest_seen = newest.clone();
            actix::spawn(async move {
                let _permit = permit;
                let mut versions = versions;
                while let Some((node, r)) = rx.recv().await {
                    if let Ok(r) = r.and_then(|r| core.sane(r)) {
                        versions.push((node, r.as_ref().map(|r| r.version)));
                        if let Some(r) = r {
                            if newest_seen.as_ref().is_none_or(|n| r.version > n.version) {
                                newest_seen = Some(r);
                            }
                        }
                    }
                }
                core.repair_stale(&view, &key, newest_seen.as_ref(), &versions)
                    .await;
            });
        } else {
            Metrics::add(&self.local.stats.read_tails_dropped, 1);
        }
        Ok(newest)
    }

    /// Folds a replica's record into our clock ([`Hlc::observe_read`]). A
    /// record further ahead of the cluster's time than twice the allowed
    /// drift comes from a runaway clock and was never acknowledged: it is
    /// ignored (and counted), as if the replica held nothing, so it cannot
    /// win a read.
    ///
    /// That judgement needs the cluster's time. Until gossip has measured our
    /// clock (just started, or the wall clock stepped) a version "ahead" may
    /// only mean that our clock lags, so such a record is no answer at all (a
    /// `clock_skew` error), never an absence: a lagging node read keys that
    /// held acknowledged values as absent right after a restart (chaos suite,
    /// `a_lagging_node_just_restarted_never_reads_a_written_key_as_absent`).
    fn sane(&self, record: Option<Record>) -> Result<Option<Record>> {
        if let Some(r) = &record {
            // Read before judging: a vouch in between only makes us stricter.
            let unmeasured = self.hlc.stepped();
            if let Err(e) = self.hlc.observe_read(r.version) {
                Metrics::add(&self.local.stats.clock_refusals, 1);
                if unmeasured {
                    return Err(Error::ClockSkew(format!(
                        "a replica answered a version ahead of this node's clock ({e}); until \
                         gossip has measured this node's clock (within a few rounds) it cannot \
                         tell a runaway version from its own lagging clock — send the request \
                         to another node"
                    )));
                }
                log::warn!("ignoring a stored version from a runaway clock: {e}");
                return Ok(None);
            }
        }
        Ok(record)
    }

    /// Sends `newest` to every replica that answered with something older.
    async fn repair_stale(
        &self,
        view: &ClusterView,
        key: &Bytes,
        newest: Option<&Record>,
        replies: &[(String, Option<Version>)],
    ) {
        let Some(newest) = newest else { return };
        if self.hlc.check_drift(newest.version).is_err() {
            return;
        }
        for (node, v) in replies {
            if v.is_some_and(|v| v >= newest.version) {
                continue;
            }
            let op = WriteOp {
                key: key.clone(),
                record: newest.clone(),
            };
            match self.write_one(view, node, op).await {
                Ok(_) => Metrics::add(&self.local.stats.read_repairs, 1),
                Err(e) => log::debug!("read repair of {node} failed: {e}"),
            }
        }
    }

    /// Writes `value` (`None`: a tombstone) for `key` if `precondition` holds.
    pub async fn write(
        self: &Arc<Self>,
        key: Bytes,
        value: Option<Bytes>,
        precondition: Precondition,
        consistency: Consistency,
    ) -> Result<WriteResult> {
        if self.hlc.stepped() {
            Metrics::add(&self.local.stats.clock_refusals, 1);
            return Err(Error::ClockSkew(
                "this node cannot vouch for its clock yet (it just started, or its wall clock \
                 stepped): it coordinates writes once gossip has measured it against the \
                 cluster (within a few rounds) — send the request to another node"
                    .into(),
            ));
        }
        if self.hlc.is_ahead_of_cluster() {
            Metrics::add(&self.local.stats.clock_refusals, 1);
            return Err(Error::ClockSkew(format!(
                "this node's clock is {} ms ahead of the cluster's (at most {} ms allowed); \
                 it refuses to coordinate writes until its clock is fixed — send the \
                 request to another node",
                -self.hlc.cluster_offset_ms(),
                self.hlc.max_drift_ms()
            )));
        }
        if precondition == Precondition::None {
            return self
                .write_versioned(key, value, None, None, consistency)
                .await;
        }
        let r = &self.replication;
        let consistency = consistency.for_conditional(r.n, r.r, r.w);
        let wait = self.replication.request_timeout;
        let Ok(_guard) = self.key_locks.lock(&key, wait).await else {
            return Err(Error::Unavailable {
                consistency,
                required: consistency.required(r.n, r.w),
                received: 0,
                errors: vec![format!(
                    "other conditional writes to this key through this node held it for \
                     longer than {} ms",
                    wait.as_millis()
                )],
                indeterminate: false,
            });
        };
        let current = self.read(&key, consistency).await?;
        if !precondition.holds(current.as_ref()) {
            return Err(Error::PreconditionFailed {
                current: current.filter(|r| !r.is_tombstone()).map(|r| r.version),
            });
        }
        let floor = current.as_ref().map(|r| r.version);
        let mut result = self
            .write_versioned(key, value, floor, Some(precondition), consistency)
            .await?;
        result.created = current.is_none_or(|r| r.is_tombstone());
        Ok(result)
    }

    /// Writes above `floor`. A replica holding a newer version makes the
    /// write retry above it once — unless the write is conditional and the
    /// newer version breaks its condition: then it answers 412 when no
    /// attempt can have been applied anywhere, and 503 `indeterminate`
    /// otherwise (the condition lost a race; it must not win anyway).
    async fn write_versioned(
        self: &Arc<Self>,
        key: Bytes,
        value: Option<Bytes>,
        mut floor: Option<Version>,
        precondition: Option<Precondition>,
        consistency: Consistency,
    ) -> Result<WriteResult> {
        let view = self.view();
        self.placed(&view)?;
        let (walk, targets) = view.write_walk(&key);
        let sets = view.write_sets(&key);
        let single =
            targets == 1 && walk.first().map(String::as_str) == Some(self.node_id.as_str());
        let plan = WritePlan {
            need: consistency.required(self.replication.n.min(walk.len()), self.replication.w),
            view,
            walk,
            n: targets,
            sets,
            consistency,
        };
        // Whether an earlier attempt may have left its version somewhere: a
        // later definite failure then cannot say "not applied".
        let mut maybe_applied = false;
        let (need, consistency) = (plan.need, plan.consistency);
        let after = |e: Error, maybe: bool| indeterminate_if(e, maybe, consistency, need);
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let version = match self.new_version(floor).await {
                Ok(v) => v,
                Err(e) => return Err(after(e, maybe_applied)),
            };
            let op = write_op(&key, &value, version);
            // On the last attempt of an unconditional write, a replica
            // holding a newer version took a concurrent later write: ours is
            // ordered before it (last write wins) and that replica durably
            // holds what supersedes it, so it counts as an acknowledgement.
            let superseded_acks = attempt == MAX_WRITE_ATTEMPTS && precondition.is_none();
            let outcome = if single {
                self.write_single(op, superseded_acks, consistency).await
            } else {
                // A conditional write hears every replica out: a `Superseded`
                // arriving after W acknowledgements still breaks it.
                let wait_all = precondition.is_some();
                self.write_attempt(&plan, op, superseded_acks, wait_all)
                    .await
            };
            match outcome {
                Ok(mut result) => {
                    result.version = version;
                    return Ok(result);
                }
                Err(Attempt::Superseded {
                    newest,
                    tombstone,
                    maybe_applied: maybe,
                }) => {
                    maybe_applied |= maybe;
                    if let Some(p) = precondition {
                        if !p.holds_for(newest, tombstone) {
                            if maybe_applied {
                                return Err(Error::Unavailable {
                                    consistency,
                                    required: need,
                                    received: 0,
                                    errors: vec![format!(
                                        "a concurrent write ({newest}) broke the condition after \
                                         this write may have been applied on some replicas"
                                    )],
                                    indeterminate: true,
                                });
                            }
                            return Err(Error::PreconditionFailed {
                                current: (!tombstone).then_some(newest),
                            });
                        }
                    }
                    floor = Some(newest);
                }
                Err(Attempt::Failed(e)) => return Err(after(e, maybe_applied)),
            }
        }
        Err(after(
            Error::Unavailable {
                consistency,
                required: need,
                received: 0,
                errors: vec!["every attempt met a newer version".into()],
                indeterminate: true,
            },
            maybe_applied,
        ))
    }

    /// One attempt of a write whose only replica is this node (N = 1): no
    /// tasks, no hints.
    async fn write_single(
        &self,
        op: WriteOp,
        superseded_acks: bool,
        consistency: Consistency,
    ) -> std::result::Result<WriteResult, Attempt> {
        let version = op.record.version;
        let replaced_live = match self.local.write(op).await {
            Ok(WriteOutcome::Applied { replaced_live }) => replaced_live,
            Ok(WriteOutcome::Superseded { .. }) if superseded_acks => true,
            Ok(WriteOutcome::Superseded { current, tombstone }) => {
                return Err(Attempt::Superseded {
                    newest: current,
                    tombstone,
                    maybe_applied: false,
                })
            }
            Ok(other) => {
                return Err(Attempt::Failed(Error::Internal(format!(
                    "unexpected outcome {other:?}"
                ))))
            }
            Err(e @ (StoreError::DiskFull(_) | StoreError::Overloaded(_))) => {
                return Err(Attempt::Failed(e.into()))
            }
            Err(e) => {
                // A commit that failed for an I/O error, or whose task died,
                // may have reached the disk.
                let definite = matches!(
                    e,
                    StoreError::Invalid(_) | StoreError::Corrupt(_) | StoreError::NotServing(_)
                );
                return Err(Attempt::Failed(Error::Unavailable {
                    consistency,
                    required: 1,
                    received: 0,
                    errors: vec![format!("{}: {e}", self.node_id)],
                    indeterminate: !definite,
                }));
            }
        };
        Ok(WriteResult {
            version,
            created: !replaced_live,
            hinted: 0,
        })
    }

    async fn write_attempt(
        self: &Arc<Self>,
        plan: &WritePlan,
        op: WriteOp,
        superseded_acks: bool,
        wait_all: bool,
    ) -> std::result::Result<WriteResult, Attempt> {
        let WritePlan {
            view,
            walk,
            n,
            sets,
            need,
            consistency,
        } = plan;
        let (n, need, consistency) = (*n, *need, *consistency);
        let plans = holders::plan(
            walk,
            n,
            &self.node_id,
            |node| self.liveness.is_down(node),
            self.replication.hinted_handoff,
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        for p in plans {
            let (core, view, op, tx) = (self.clone(), view.clone(), op.clone(), tx.clone());
            actix::spawn(async move {
                let ack = core
                    .replicate(&view, &p.target, p.known_down, p.holders, op)
                    .await;
                let _ = tx.send(ack);
            });
        }
        drop(tx);
        let mut tally = WriteTally::new(
            WritePolicy {
                need,
                sloppy_quorum: self.replication.sloppy_quorum,
                superseded_acks,
                wait_all,
                consistency,
            },
            sets.clone(),
        );
        let verdict = loop {
            match rx.recv().await {
                Some(ack) => {
                    if let Some(v) = tally.record(ack) {
                        break v;
                    }
                }
                None => break tally.finish(),
            }
        };
        match verdict {
            Verdict::Acked { created, hinted } => Ok(WriteResult {
                version: op.record.version,
                created,
                hinted,
            }),
            Verdict::Superseded {
                newest,
                tombstone,
                maybe_applied,
            } => Err(Attempt::Superseded {
                newest,
                tombstone,
                maybe_applied,
            }),
            Verdict::Failed(e) => Err(Attempt::Failed(e)),
        }
    }

    /// One replica's part of a write: directly, else as a hint.
    async fn replicate(
        &self,
        view: &ClusterView,
        target: &str,
        known_down: bool,
        holders: Vec<String>,
        op: WriteOp,
    ) -> Ack {
        let mut why = format!("{target}: down (failure detector)");
        let mut definite = true;
        if !known_down {
            match self.write_one(view, target, op.clone()).await {
                Ok(WriteOutcome::Applied { replaced_live }) => {
                    return Ack::Direct {
                        node: target.to_string(),
                        replaced_live,
                    }
                }
                Ok(WriteOutcome::Superseded { current, tombstone }) => {
                    if let Err(e) = self.hlc.check_drift(current) {
                        // Do not chase a runaway clock's version.
                        Metrics::add(&self.local.stats.clock_refusals, 1);
                        return Ack::Failed {
                            why: format!("{target}: clock_drift: holds a version {e}"),
                            definite: true,
                            disk_full: false,
                        };
                    }
                    return Ack::Superseded {
                        node: target.to_string(),
                        current,
                        tombstone,
                    };
                }
                Ok(other) => {
                    return Ack::Failed {
                        why: format!("{target}: unexpected outcome {other:?}"),
                        definite: false,
                        disk_full: false,
                    }
                }
                Err(e @ Error::DiskFull(_)) => {
                    return Ack::Failed {
                        why: format!("{target}: {e}"),
                        definite: true,
                        disk_full: true,
                    }
                }
                // A replica that dropped the version this node routes by:
                // no hint may stand in (its holders would take what the
                // replica refused), and the write counts nowhere.
                Err(e @ Error::Peer(_))
                    if e.peer_code() == Some(crate::wire::ErrorCode::StaleLayout) =>
                {
                    return Ack::Failed {
                        why: format!("{target}: {e}"),
                        definite: true,
                        disk_full: false,
                    }
                }
                Err(e) => {
                    definite = e.is_definite();
                    why = format!("{target}: {e}");
                }
            }
        }
        for holder in holders {
            match self.hint_one(view, &holder, target, op.clone()).await {
                Ok(()) => {
                    return Ack::Hinted {
                        holder,
                        target: target.to_string(),
                        why,
                    }
                }
                Err(e) => {
                    definite &= e.is_definite();
                    log::debug!("hint for {target} at {holder} failed: {e}");
                }
            }
        }
        Ack::Failed {
            why,
            definite,
            disk_full: false,
        }
    }
}

/// Where a write goes: computed once, shared by its attempts.
struct WritePlan {
    view: Arc<ClusterView>,
    /// The replicas of every live version, then the other members
    /// clockwise from the key: the first `n` are its replicas.
    walk: Vec<String>,
    n: usize,
    /// The replica set of each live version: W acknowledgements in each.
    sets: Vec<Vec<String>>,
    need: usize,
    consistency: Consistency,
}

/// The write of `value` (`None`: a tombstone) for `key` at `version`.
fn write_op(key: &Bytes, value: &Option<Bytes>, version: Version) -> WriteOp {
    WriteOp {
        key: key.clone(),
        record: Record {
            version,
            value: value.clone(),
        },
    }
}

enum Attempt {
    /// A replica holds `newest` (`tombstone`: a delete); `maybe_applied`:
    /// the attempt's version may be stored somewhere anyway.
    Superseded {
        newest: Version,
        tombstone: bool,
        maybe_applied: bool,
    },
    Failed(Error),
}

/// A failure after an earlier attempt that may have been applied: whatever
/// the last attempt says, the outcome is `indeterminate`.
fn indeterminate_if(e: Error, maybe_applied: bool, consistency: Consistency, need: usize) -> Error {
    if !maybe_applied {
        return e;
    }
    match e {
        Error::Unavailable {
            consistency,
            required,
            received,
            errors,
            ..
        } => Error::Unavailable {
            consistency,
            required,
            received,
            errors,
            indeterminate: true,
        },
        other if other.is_definite() => Error::Unavailable {
            consistency,
            required: need,
            received: 0,
            errors: vec![format!(
                "{other}; an earlier attempt of this write may have been applied"
            )],
            indeterminate: true,
        },
        other => other,
    }
}

fn unexpected(node: &str, request: &'static str) -> Error {
    Error::Peer(PeerError::Unexpected {
        peer: node.to_string(),
        request,
    })
}

/// Cores for tests of the agents built on one (GC, anti-entropy), without
/// processes or sockets.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::replica::ReplicaActor;
    use crate::storage::Store;
    use crate::version::SystemClock;
    use actix::Actor;

    /// The core of `members[0]` in a cluster of `members` (N = `n`, quorum
    /// levels), over `store`, with no peer connections; its writer runs on
    /// its own arbiter.
    pub fn node_core(store: Store, members: &[&str], n: usize) -> Arc<NodeCore> {
        node_core_over(store, members, n, Default::default())
    }

    /// [`node_core`] reaching its peers through `peers`.
    pub fn node_core_over(
        store: Store,
        members: &[&str],
        n: usize,
        peers: crate::peer::Peers,
    ) -> Arc<NodeCore> {
        let writer_store = store.clone();
        let writer = ReplicaActor::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| {
            ReplicaActor::new(writer_store, Arc::default())
        });
        let hlc = Arc::new(Hlc::new(1, Arc::new(SystemClock::default()), 5_000));
        let local = LocalReplica {
            store,
            writer,
            hlc,
            stats: Arc::default(),
            repairing: Arc::default(),
            repair_wanted: Arc::default(),
        };
        let replication = Replication {
            n,
            r: n / 2 + 1,
            w: n / 2 + 1,
            request_timeout: Duration::from_secs(2),
            background_timeout: Duration::from_secs(2),
            hinted_handoff: false,
            sloppy_quorum: false,
            read_repair_blocking_all: false,
        };
        let layout = crate::layout::Layout::initial(
            members.iter().map(|m| crate::layout::Member::new(*m)),
            n,
            crate::layout::DEFAULT_PARTITION_BITS,
        );
        let view = ClusterView::stable(Arc::new(layout), vec![], peers);
        Arc::new(NodeCore::new(
            members[0],
            local,
            replication,
            Arc::new(Liveness::default()),
            view,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of 05 / issue 06 finding 3: only the last attempt's error used
    /// to be reported, so a write whose first attempt applied on some
    /// replicas could be answered `not_applied` or 507 "not stored".
    #[test]
    fn a_definite_failure_after_a_maybe_applied_attempt_is_indeterminate() {
        let full = Error::DiskFull("x".into());
        assert!(matches!(
            indeterminate_if(full.clone(), false, Consistency::Quorum, 2),
            Error::DiskFull(_)
        ));
        let e = indeterminate_if(full, true, Consistency::Quorum, 2);
        assert!(
            matches!(
                e,
                Error::Unavailable {
                    indeterminate: true,
                    required: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let unavailable = Error::Unavailable {
            consistency: Consistency::All,
            required: 3,
            received: 0,
            errors: vec![],
            indeterminate: false,
        };
        assert!(!indeterminate_if(unavailable, true, Consistency::All, 3).is_definite());
    }
}
