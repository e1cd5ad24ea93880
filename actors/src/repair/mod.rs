//! Repair actor: schedules anti-entropy passes ([`crate::antientropy`]) and
//! tombstone GC ([`crate::repair::gc`]).
//!
//! * A pass runs one exchange with every peer not known to be down, one peer
//!   at a time: the roots of every partition both replicate are compared in
//!   one request, and each partition that differs is handed to its
//!   partition actor ([`crate::partition`]), one after the other. A pass
//!   runs every `interval`, on demand ([`RunRepair`], `POST
//!   /v1/admin/repair`), and for one peer as soon as an exchange with it is
//!   wanted (`replica::RepairWanted`: its hints were dropped at their bound,
//!   or it refused records; the actor wakes on the want, or when that peer
//!   comes up). A scheduled pass that finds one running runs after it. Passes never overlap. Requests that arrive while
//!   a pass runs are coalesced: all of them are answered by the *next* pass
//!   (which starts right after, so it compares every peer after the request
//!   was made); at most [`MAX_WAITERS`] requests wait, more are refused.
//! * A node in repair mode ([`crate::repair::mode`]: down longer than the
//!   tombstone grace period, or still in repair mode when it stopped) serves
//!   no reads (`LocalReplica::repairing`) until a pass with every live peer
//!   succeeded; it retries every [`REPAIRING_RETRY`] until then. That pass
//!   clears the persisted flag before reads are served.
//! * GC runs one pass at a time, [`GC_INTERVAL`] after the previous ended.
//!
//! Each exchange's calls carry deadlines, and each peer gets at most its
//! time budget of a pass (`RepairConfig::peer_budget`; past it the peer
//! counts as failed and the pass goes on), so a pass always ends; its result
//! and the jobs' progress are in `GET /v1/cluster` and `/metrics`.

pub mod gc;
pub mod mode;

use crate::antientropy::{RepairService, RunSummary};
use crate::gossip::PeerUp;
use crate::layout::PartitionId;
use crate::metrics::{Job, Metrics};
use crate::partition::{Agreed, Partitions, SyncWith, OUT_OF_BUDGET};
use actix::prelude::*;
use gc::TombstoneGc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Wanted exchanges start at most this often (a failing peer, or one that
/// keeps refusing records, is retried, not hammered).
pub const WANTED_RETRY: Duration = Duration::from_secs(2);
/// Pause between tombstone GC passes.
pub const GC_INTERVAL: Duration = Duration::from_secs(1);
/// How often a node in repair mode retries a pass.
pub const REPAIRING_RETRY: Duration = Duration::from_secs(2);
/// Requests for a pass that may wait at once.
pub const MAX_WAITERS: usize = 64;

/// Run one anti-entropy pass that starts after this request; answers its
/// summary, or `None` when too many requests already wait.
#[derive(Message)]
#[rtype(result = "Option<RunSummary>")]
pub struct RunRepair;

type Waiter = oneshot::Sender<RunSummary>;

pub struct RepairActor {
    svc: RepairService,
    partitions: Partitions,
    gc: TombstoneGc,
    running: bool,
    /// Answered when the running pass ends.
    current: Vec<Waiter>,
    /// Answered by the pass after the running one.
    next: Vec<Waiter>,
    gc_running: bool,
    /// A full pass was due while one ran: it runs next.
    full_pending: bool,
    /// When the last wanted exchange started, and whether a timer waits to
    /// serve the next.
    last_wanted: Option<Instant>,
    wanted_timer: bool,
}

impl RepairActor {
    /// `partitions`: this node's partition actors (a partition without one
    /// is exchanged by the pass itself).
    pub fn new(svc: RepairService, partitions: Partitions) -> Self {
        let gc = TombstoneGc::new(
            svc.core.clone(),
            svc.config.gc_grace_ms,
            svc.config.max_frame,
        );
        RepairActor {
            svc,
            partitions,
            gc,
            running: false,
            current: Vec::new(),
            next: Vec::new(),
            gc_running: false,
            full_pending: false,
            last_wanted: None,
            wanted_timer: false,
        }
    }

    /// Runs a pass for peers whose hints were dropped, once they are up.
    fn serve_wanted(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        let wait = self.last_wanted.map_or(Duration::ZERO, |at| {
            WANTED_RETRY.saturating_sub(at.elapsed())
        });
        if !wait.is_zero() {
            if !self.wanted_timer {
                self.wanted_timer = true;
                ctx.run_later(wait, |act, ctx| {
                    act.wanted_timer = false;
                    act.serve_wanted(ctx);
                });
            }
            return;
        }
        let liveness = &self.svc.core.liveness;
        let wanted = self
            .svc
            .core
            .local
            .repair_wanted
            .take_up(|p| !liveness.is_down(p));
        if !wanted.is_empty() {
            self.last_wanted = Some(Instant::now());
            log::info!("anti-entropy wanted with {wanted:?}");
            self.start_pass(Some(wanted), ctx);
        }
    }

    fn start_pass(&mut self, only: Option<Vec<String>>, ctx: &mut Context<Self>) {
        if self.running {
            self.full_pending |= only.is_none();
            return;
        }
        if only.is_none() {
            self.full_pending = false;
        }
        self.running = true;
        self.svc.status.lock().expect("status").running = true;
        let svc = self.svc.clone();
        let partitions = self.partitions.clone();
        // A pass run (even partly) before gossip measured our clock may have
        // refused what it pulled: it cannot be the one a restarted node
        // waits for before serving reads.
        let full_pass = only.is_none();
        let steps = svc.core.hlc.step_count();
        let measured = !svc.core.hlc.stepped();
        ctx.spawn(
            async move { run_pass(&svc, &partitions, only).await }
                .into_actor(self)
                .map(move |sum, act, ctx| {
                    // Measured throughout: no step (and re-vouch) in between.
                    let hlc = &act.svc.core.hlc;
                    let measured = measured && !hlc.stepped() && hlc.step_count() == steps;
                    if !full_pass {
                        // A wanted peer stays wanted until an exchange with
                        // it succeeds (retried at most every WANTED_RETRY).
                        for (p, _) in &sum.peers_failed {
                            act.svc.core.local.repair_wanted.want(p);
                        }
                    }
                    act.finish_pass(sum, full_pass && measured, ctx)
                }),
        );
    }

    fn finish_pass(&mut self, sum: RunSummary, complete_pass: bool, ctx: &mut Context<Self>) {
        self.running = false;
        let complete = sum.peers_failed.is_empty()
            || (!sum.peers_synced.is_empty() && sum.peers_failed.iter().all(|(_, e)| e == DOWN));
        let local = &self.svc.core.local;
        if complete_pass && complete && local.repairing.load(Ordering::Relaxed) {
            let leaving = local.clone();
            ctx.spawn(
                async move { mode::leave(&leaving).await }
                    .into_actor(self)
                    .map(|left, _, _| match left {
                        Ok(true) => log::info!("anti-entropy pass complete: serving reads again"),
                        Ok(false) => {}
                        Err(e) => log::warn!(
                            "anti-entropy pass complete, but the end of repair mode could not \
                             be recorded ({e}): still serving no reads; the next pass tries again"
                        ),
                    }),
            );
        }
        if sum.peers_failed.iter().any(|(_, e)| e != DOWN) {
            local
                .stats
                .jobs
                .failed(Job::AntiEntropy, format!("{:?}", sum.peers_failed));
        } else {
            local.stats.jobs.progress(Job::AntiEntropy);
        }
        log::info!(
            "anti-entropy pass: synced {:?}, failed {:?}, {} leaves differed, pulled {}, pushed {}, {} bytes, {} ms",
            sum.peers_synced, sum.peers_failed, sum.leaves_differing, sum.keys_pulled,
            sum.keys_pushed, sum.bytes, sum.duration_ms
        );
        {
            let mut st = self.svc.status.lock().expect("status");
            st.running = false;
            st.current_peer = None;
            st.passes += 1;
            st.last = Some(sum.clone());
            st.last_finished_ms = Some(self.svc.core.hlc.wall_ms());
        }
        for w in self.current.drain(..) {
            let _ = w.send(sum.clone());
        }
        if !self.next.is_empty() {
            self.current = std::mem::take(&mut self.next);
            self.start_pass(None, ctx);
        } else if self.full_pending {
            self.start_pass(None, ctx);
        } else {
            // Wanted meanwhile (a wake-up that found the pass running).
            self.serve_wanted(ctx);
        }
    }

    /// Serves wanted exchanges whenever someone wants one.
    fn wait_for_wanted(&mut self, ctx: &mut Context<Self>) {
        let wanted = self.svc.core.local.repair_wanted.clone();
        ctx.spawn(
            async move { wanted.woken().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.serve_wanted(ctx);
                    act.wait_for_wanted(ctx);
                }),
        );
    }

    fn start_gc(&mut self, ctx: &mut Context<Self>) {
        if self.gc_running {
            return;
        }
        self.gc_running = true;
        let gc = self.gc.clone();
        ctx.spawn(
            async move { gc.pass().await }
                .into_actor(self)
                .map(|purged, act, ctx| {
                    act.gc_running = false;
                    if purged > 0 {
                        log::info!("purged {purged} tombstones older than the grace period");
                        act.svc.status.lock().expect("status").tombstones_purged += purged;
                    }
                    ctx.run_later(GC_INTERVAL, |act, ctx| act.start_gc(ctx));
                }),
        );
    }
}

/// How a peer known to be down is reported in a summary.
const DOWN: &str = "down";

/// One pass with every peer not known to be down (or only with `only`).
pub async fn run_pass(
    svc: &RepairService,
    partitions: &Partitions,
    only: Option<Vec<String>>,
) -> RunSummary {
    let started = Instant::now();
    let mut sum = RunSummary::default();
    let mut peers: Vec<String> = only.unwrap_or_else(|| svc.core.view().peers.ids());
    peers.sort();
    for p in peers {
        if svc.core.liveness.is_down(&p) {
            sum.peers_failed.push((p, DOWN.into()));
            continue;
        }
        svc.status.lock().expect("status").current_peer = Some(p.clone());
        match sync_with(svc, partitions, &p, &mut sum).await {
            Ok(()) => {
                svc.core.local.stats.jobs.progress(Job::AntiEntropy);
                sum.peers_synced.push(p)
            }
            Err(e) => {
                log::warn!("anti-entropy with {p} failed: {e}");
                sum.peers_failed.push((p, e.to_string()));
            }
        }
    }
    sum.duration_ms = started.elapsed().as_millis() as u64;
    Metrics::add(&svc.core.local.stats.ae_rounds, 1);
    sum
}

/// One exchange with `peer`: the partitions whose roots differ go to their
/// partition actors; the others are told they agree.
async fn sync_with(
    svc: &RepairService,
    partitions: &Partitions,
    peer: &str,
    sum: &mut RunSummary,
) -> Result<(), String> {
    // One peer gets at most its budget of the pass: a slow or endless peer
    // cannot hold anti-entropy with every other peer.
    let deadline = tokio::time::Instant::now() + svc.config.peer_budget;
    let differing = match tokio::time::timeout_at(deadline, svc.differing_with(peer, sum)).await {
        Ok(d) => d.map_err(|e| e.to_string())?,
        Err(_) => return Err(OUT_OF_BUDGET.to_string()),
    };
    let now = svc.core.hlc.wall_ms();
    for p in svc.shared_partitions(peer) {
        if differing.binary_search(&p).is_err() {
            if let Some(actor) = partitions.get(p) {
                actor.do_send(Agreed {
                    peer: peer.to_string(),
                    at_ms: now,
                });
            }
        }
    }
    // A partition whose exchange fails is reported, and the others still
    // run: one bad partition must not keep every later one unrepaired.
    let mut failed: Vec<(PartitionId, String)> = Vec::new();
    for p in differing {
        if tokio::time::Instant::now() >= deadline {
            failed.push((p, OUT_OF_BUDGET.to_string()));
            break;
        }
        let done = match partitions.get(p) {
            Some(actor) => actor
                .send(SyncWith {
                    peer: peer.to_string(),
                    deadline,
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
            None => {
                let mut part = RunSummary::default();
                match tokio::time::timeout_at(deadline, svc.sync_partition_with(peer, p, &mut part))
                    .await
                {
                    Ok(r) => r.map(|()| part).map_err(|e| e.to_string()),
                    Err(_) => Err(OUT_OF_BUDGET.to_string()),
                }
            }
        };
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                failed.push((p, e));
                // A peer gone fails every partition alike: stop asking it.
                if !svc.core.view().peers.is_connected(peer) {
                    break;
                }
                continue;
            }
        };
        sum.hashes_compared += done.hashes_compared;
        sum.leaves_differing += done.leaves_differing;
        sum.keys_pulled += done.keys_pulled;
        sum.keys_pushed += done.keys_pushed;
        sum.keys_left += done.keys_left;
        sum.bytes += done.bytes;
    }
    match failed.as_slice() {
        [] => Ok(()),
        [(p, e), rest @ ..] => Err(format!(
            "partition {p}: {e}{}",
            if rest.is_empty() {
                String::new()
            } else {
                format!(" (and {} more partitions failed)", rest.len())
            }
        )),
    }
}

impl Actor for RepairActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let interval = self.svc.config.interval;
        ctx.run_interval(interval, |act, ctx| act.start_pass(None, ctx));
        if self.svc.core.local.repairing.load(Ordering::Relaxed) {
            // Retry soon until a pass completes: reads wait for it.
            ctx.run_interval(REPAIRING_RETRY, |act, ctx| {
                if act.svc.core.local.repairing.load(Ordering::Relaxed) {
                    act.start_pass(None, ctx);
                }
            });
        }
        self.wait_for_wanted(ctx);
        ctx.run_later(GC_INTERVAL, |act, ctx| act.start_gc(ctx));
    }
}

/// A peer came up: a wanted exchange with it can run now.
impl Handler<PeerUp> for RepairActor {
    type Result = ();

    fn handle(&mut self, msg: PeerUp, ctx: &mut Context<Self>) {
        if self.svc.core.local.repair_wanted.contains(&msg.0) {
            self.serve_wanted(ctx);
        }
    }
}

impl Handler<RunRepair> for RepairActor {
    type Result = ResponseFuture<Option<RunSummary>>;

    fn handle(&mut self, _: RunRepair, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.running {
            // The running pass may have compared some peers before this
            // request: the next one answers it, shared by everyone waiting.
            if self.next.len() >= MAX_WAITERS {
                return Box::pin(async { None });
            }
            self.next.push(tx);
        } else {
            self.current.push(tx);
            self.start_pass(None, ctx);
        }
        Box::pin(async move { rx.await.ok() })
    }
}
