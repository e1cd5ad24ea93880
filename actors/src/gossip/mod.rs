//! Gossip actor: membership and failure detection.
//!
//! Every `interval` the actor bumps its own heartbeat and exchanges its own
//! entry with every peer (push-pull: the peer merges ours and answers with
//! its own). Nothing is relayed: a member's state is learned only from that
//! member, on its own (with TLS, authenticated) connection, so no node can
//! speak for another ([`crate::gossip::membership`]). The cost is one small exchange
//! per peer per round — with the configured, static member list, a full
//! mesh of heartbeats, fine for the tens of nodes a ringkv cluster has; in
//! exchange the failure detector sees every peer's heartbeats at a regular
//! interval instead of a random one. At most one exchange per peer is in
//! flight: a silent peer costs one waiting call, not one per round. Down
//! peers are called too, so a node that comes back is noticed within a round.
//!
//! Whenever a merge shows a member's heartbeat advanced, that is a heartbeat
//! arrival for the phi-accrual failure detector ([`crate::gossip::failure`]), which
//! turns arrival times into up / suspect / down. The detector runs on a
//! monotonic clock: a step of the wall clock neither convicts a live peer
//! nor revives a dead one. What a peer may claim is bounded (see
//! [`crate::gossip::membership`]); clock offsets come only from exchanges this node
//! started ([`crate::clock_check`]). A member seen at a higher
//! generation restarted: its detector history is reset. Status changes are
//! logged, published in the shared [`Liveness`] table (the coordinator reads it
//! to skip down replicas at once), and an `Up` transition tells the hint actor
//! to replay hints to that node.
//!
//! Messages: [`GossipIn`] (a peer's exchange), [`ClusterStatus`] (for
//! `GET /v1/cluster`). Timer: the gossip round.

pub mod failure;
pub mod liveness;
pub mod membership;

pub use liveness::{effective_floor, Liveness};

use crate::clock_check::{decide, rebased, sample_offset, Sample};
use crate::gossip::failure::{DetectorConfig, FailureDetector, Status};
use crate::gossip::membership::{Bounds, Membership, Source};
use crate::metrics::{Job, Metrics};
use crate::peer::Peers;
use crate::version::{Clock, Hlc};
use crate::wire::{MemberState, Request, Response};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadline of one gossip exchange, at least.
pub const MIN_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one gossip exchange, in gossip intervals.
const EXCHANGE_TIMEOUT_ROUNDS: u32 = 5;

/// A peer's gossip exchange; answers our view after merging theirs.
#[derive(Message)]
#[rtype(result = "Vec<MemberState>")]
pub struct GossipIn {
    pub members: Vec<MemberState>,
    /// The peer that sent it (from its session's hello).
    pub from: String,
}

/// A peer came up (or restarted): replay what we hold for it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct PeerUp(pub String);

/// Asks for every member's state as this node sees it.
#[derive(Message)]
#[rtype(result = "Vec<MemberView>")]
pub struct ClusterStatus;

/// One member as `GET /v1/cluster` shows it.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub state: MemberState,
    /// Its wall clock minus ours at its last exchange with us (ms).
    pub clock_offset_ms: Option<i64>,
    pub is_self: bool,
    pub status: Status,
    pub phi: Option<f64>,
    pub last_seen_ms_ago: Option<u64>,
}

pub struct GossipActor {
    membership: Membership,
    detector: FailureDetector,
    peers: Peers,
    liveness: Arc<Liveness>,
    on_up: Vec<Recipient<PeerUp>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    hlc: Arc<Hlc>,
    interval: Duration,
    /// Per peer: its wall clock minus ours (ms), measured at its last
    /// exchange, with our wall − monotonic time then (see [`rebased`]).
    offsets: HashMap<String, (Sample, i64)>,
    hints_floor: HintFloor,
    /// When we noticed our wall clock stepped (monotonic ms), until the
    /// cluster vouches for it again.
    step_noticed_mono: Option<u64>,
    /// The detector's time base: monotonic, immune to wall-clock steps.
    epoch: Instant,
    /// Peers with an exchange in flight (one at a time each).
    in_flight: std::collections::HashSet<String>,
    /// The cluster vouched for our clock at least once since we started.
    vouched_once: bool,
    /// Wall-clock steps seen ([`Hlc::step_count`]) at the last round.
    steps_seen: u64,
}

/// What a gossip actor starts with.
pub struct GossipSetup {
    /// This node's own entry (its generation already bumped).
    pub me: MemberState,
    /// The configured other members.
    pub others: Vec<MemberState>,
    pub detector: DetectorConfig,
    pub peers: Peers,
    pub liveness: Arc<Liveness>,
    /// Told when a peer comes up (the hint actor).
    pub on_up: Vec<Recipient<PeerUp>>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub hlc: Arc<Hlc>,
    pub interval: Duration,
    /// This node's hint floor now (`Store::hints_floor`).
    pub hints_floor: HintFloor,
}

/// Reads a node's current hint floor.
pub type HintFloor = Arc<dyn Fn() -> u64 + Send + Sync>;

impl GossipActor {
    pub fn new(setup: GossipSetup) -> Self {
        let GossipSetup {
            me,
            others,
            detector,
            peers,
            liveness,
            on_up,
            metrics,
            clock,
            hlc,
            interval,
            hints_floor,
        } = setup;
        let mut detector = FailureDetector::new(detector);
        // Every configured peer is expected: one that never speaks is convicted.
        for id in peers.ids() {
            detector.heartbeat(&id, 0);
        }
        GossipActor {
            membership: Membership::new(me, others),
            detector,
            peers,
            liveness,
            on_up,
            metrics,
            clock,
            hlc,
            interval,
            offsets: HashMap::new(),
            hints_floor,
            step_noticed_mono: None,
            epoch: Instant::now(),
            in_flight: Default::default(),
            vouched_once: false,
            steps_seen: 0,
        }
    }

    /// Milliseconds on the detector's monotonic clock.
    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            now_ms: self.hlc.cluster_ms(),
            max_drift_ms: self.hlc.max_drift_ms(),
            interval_ms: self.interval.as_millis() as u64,
            mono_ms: self.mono_ms(),
        }
    }

    /// Records `from`'s clock offset from its own entry in `view`, the
    /// answer to an exchange we sent at wall time `sent_wall_ms` and monotonic
    /// time `sent_mono_ms` ([`sample_offset`]).
    fn measure_clock(
        &mut self,
        from: &str,
        view: &[MemberState],
        sent_wall_ms: u64,
        sent_mono_ms: u64,
    ) {
        let Some(entry) = view.iter().find(|m| m.id == from && m.wall_ms > 0) else {
            return;
        };
        if self.step_noticed_mono.is_some_and(|t| sent_mono_ms < t) {
            return; // sent before our clock stepped: meaningless now
        }
        let now_mono = self.hlc.mono_ms();
        let rtt = now_mono.saturating_sub(sent_mono_ms);
        match sample_offset(entry.wall_ms, sent_wall_ms, rtt) {
            Some(offset_ms) => {
                self.offsets.insert(
                    from.to_string(),
                    (
                        Sample {
                            offset_ms,
                            at_mono_ms: now_mono,
                        },
                        sent_wall_ms as i64 - sent_mono_ms as i64,
                    ),
                );
            }
            None => log::debug!("clock sample from {from} discarded: round trip of {rtt} ms"),
        }
    }

    /// Our wall clock minus our monotonic one, now (ms).
    fn wall_minus_mono(&self) -> i64 {
        self.clock.now_ms() as i64 - self.hlc.mono_ms() as i64
    }

    /// The samples, each against our clock as it reads now.
    fn samples_now(&self) -> Vec<Sample> {
        let now = self.wall_minus_mono();
        self.offsets
            .values()
            .map(|&(s, then)| rebased(s, then, now))
            .collect()
    }

    /// Decides, every round, whether our clock is the outlier
    /// ([`crate::clock_check::decide`]), and whether the cluster vouches for it.
    fn check_clock(&mut self) {
        let steps = self.hlc.step_count();
        let new_step = steps != self.steps_seen;
        self.steps_seen = steps;
        if self.hlc.stepped() && (self.step_noticed_mono.is_none() || new_step) {
            if self.step_noticed_mono.is_some() {
                log::warn!(
                    "the wall clock stepped again before gossip measured it: measuring it afresh"
                );
            } else if self.vouched_once {
                log::warn!(
                    "the wall clock stepped: this node refuses to coordinate writes until gossip \
                     has measured it against the cluster again"
                );
            } else {
                log::info!(
                    "measuring the local clock against the cluster before coordinating writes"
                );
            }
            self.offsets.clear();
            self.step_noticed_mono = Some(self.hlc.mono_ms());
        }
        let drift = self.hlc.max_drift_ms() as i64;
        let samples = self.samples_now();
        let members = self.peers.ids().len() + 1;
        let before = self.hlc.cluster_offset_ms();
        let d = decide(&samples, members, drift, self.hlc.mono_ms(), before);
        self.hlc.set_cluster_offset_ms(d.offset_ms);
        // Not on samples from before a step seen since this round began.
        if d.fresh_majority && self.hlc.vouch_unless_stepped_since(steps) {
            if self.step_noticed_mono.take().is_some() {
                log::info!("the cluster measured the local clock: coordinating writes");
            }
            self.vouched_once = true;
        }
        let cluster_offset = d.offset_ms;
        if (before == 0) != (cluster_offset == 0) {
            if cluster_offset == 0 {
                log::info!("local clock agrees with the cluster again");
            } else if cluster_offset < 0 {
                log::error!(
                    "local clock is {} ms AHEAD of the cluster (allowed drift {drift} ms): \
                     this node refuses to coordinate writes until it is fixed",
                    -cluster_offset
                );
            } else {
                log::warn!(
                    "local clock is {cluster_offset} ms behind the cluster (allowed drift \
                     {drift} ms): checking versions against the cluster's time"
                );
            }
        }
    }

    fn merge(&mut self, remote: &[MemberState], source: Source) {
        let now = self.mono_ms();
        let report = self.membership.merge(remote, source, self.bounds());
        if report.refused > 0 {
            Metrics::add(&self.metrics.gossip_refused, report.refused);
            log::debug!("refused {} gossip entries from {source:?}", report.refused);
        }
        for id in &report.restarted {
            log::info!(
                "peer {id} restarted (generation {})",
                self.membership.get(id).map_or(0, |m| m.generation)
            );
            self.detector.reset(id);
        }
        for id in &report.advanced {
            if self.peers.contains(id) {
                self.detector.heartbeat(id, now);
            }
            if let Some(m) = self.membership.get(id) {
                self.liveness
                    .set_floor(id, m.hints_floor, self.hlc.mono_ms());
                // Versions above every write another node stored before now;
                // a runaway clock's (beyond the drift) is not folded in.
                let _ = self.hlc.observe(crate::version::Version::new(m.hlc_ts, 0));
            }
        }
        self.publish(now, &report.restarted);
    }

    /// Recomputes every peer's status; logs and announces changes.
    fn publish(&mut self, now: u64, restarted: &[String]) {
        for id in self.peers.ids() {
            let status = self.detector.status(&id, now);
            let before = self.liveness.set(&id, status);
            if before != Some(status) {
                let phi = self.detector.phi(&id, now).unwrap_or(0.0);
                log::info!("peer {id} is now {status:?} (phi {phi:.1})");
            }
            let came_up = status == Status::Up && before.is_some_and(|b| b != Status::Up);
            if came_up || (status == Status::Up && restarted.contains(&id)) {
                for r in &self.on_up {
                    r.do_send(PeerUp(id.clone()));
                }
            }
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        let now = self.mono_ms();
        self.detector.tick(now);
        self.membership.beat();
        self.publish(now, &[]);
        self.check_clock();
        if self.peers.ids().is_empty() {
            self.metrics.jobs.progress(Job::Gossip);
            return;
        }
        let ours = self.membership.outgoing(
            self.clock.now_ms(),
            (self.hints_floor)(),
            self.hlc.high_water(),
        );
        let timeout = (self.interval * EXCHANGE_TIMEOUT_ROUNDS).max(MIN_EXCHANGE_TIMEOUT);
        for pick in self.peers.ids() {
            if !self.in_flight.insert(pick.clone()) {
                continue;
            }
            let peers = self.peers.clone();
            let request = Request::Gossip {
                members: ours.clone(),
            };
            let target = pick.clone();
            let (sent_wall, sent_mono) = (self.clock.now_ms(), self.hlc.mono_ms());
            let sent_steps = self.hlc.step_count();
            ctx.spawn(
                async move { peers.call(&target, request, timeout).await }
                    .into_actor(self)
                    .map(move |reply, act, _| {
                        act.in_flight.remove(&pick);
                        match reply {
                            Ok(Response::Gossip { members }) => {
                                Metrics::add(&act.metrics.gossip_rounds, 1);
                                act.metrics.jobs.progress(Job::Gossip);
                                if act.hlc.step_count() == sent_steps {
                                    act.measure_clock(&pick, &members, sent_wall, sent_mono);
                                }
                                act.merge(&members, Source::Dialed(&pick));
                            }
                            Ok(_) => log::warn!("gossip to {pick}: unexpected answer"),
                            Err(e) => {
                                act.metrics.jobs.failed(Job::Gossip, e.to_string());
                                log::debug!("gossip to {pick}: {e}");
                            }
                        }
                    }),
            );
        }
    }
}

impl Actor for GossipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.round(ctx));
    }
}

impl Handler<GossipIn> for GossipActor {
    type Result = MessageResult<GossipIn>;

    fn handle(&mut self, msg: GossipIn, _: &mut Context<Self>) -> Self::Result {
        // The member is up and reached us: reach it back without waiting
        // out a redial backoff.
        if let Some(client) = self.peers.get(&msg.from) {
            client.redial_now();
        }
        self.merge(&msg.members, Source::Accepted(&msg.from));
        self.metrics.jobs.progress(Job::Gossip);
        MessageResult(self.membership.outgoing(
            self.clock.now_ms(),
            (self.hints_floor)(),
            self.hlc.high_water(),
        ))
    }
}

impl Handler<ClusterStatus> for GossipActor {
    type Result = MessageResult<ClusterStatus>;

    fn handle(&mut self, _: ClusterStatus, _: &mut Context<Self>) -> Self::Result {
        let now = self.mono_ms();
        // What coordinators act on is never behind what this reports.
        self.publish(now, &[]);
        let me = self.membership.me().id.clone();
        let views = self
            .membership
            .snapshot()
            .into_iter()
            .map(|state| {
                let is_self = state.id == me;
                MemberView {
                    status: if is_self {
                        Status::Up
                    } else {
                        self.detector.status(&state.id, now)
                    },
                    phi: if is_self {
                        None
                    } else {
                        self.detector.phi(&state.id, now)
                    },
                    last_seen_ms_ago: if is_self {
                        None
                    } else {
                        self.detector
                            .last_seen_ms(&state.id)
                            .map(|t| now.saturating_sub(t))
                    },
                    is_self,
                    clock_offset_ms: self
                        .offsets
                        .get(&state.id)
                        .map(|&(s, then)| rebased(s, then, self.wall_minus_mono()).offset_ms),
                    state,
                }
            })
            .collect();
        MessageResult(views)
    }
}
