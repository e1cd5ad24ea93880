//! The layout follower: this node's side of a membership change. Every
//! tick it reads the agreed history ([`crate::meta`]), routes by it (a new
//! [`ClusterView`] whenever the live versions or the read version move),
//! and does what it owes the change ([`steps::due`]): ack the newest
//! version once no request of an older view is running, pull the
//! partitions it gains once the version is fenced, sync-ack the read
//! version once no read of an older one is running. Every report is a
//! consensus proposal; one that fails is proposed again on a later tick
//! (the history, not this node, says what is done).
//!
//! A request holds the view it started with until its last background
//! task ends (hint stores included): the follower keeps a weak reference
//! to every view it replaced, and "no request of an older view is running"
//! means none of those can be upgraded any more.
//!
//! Data moves by anti-entropy, partition by partition, through each
//! partition's actor (one exchange per partition at a time, at background
//! priority, within the repair bandwidth): the new owner compares its
//! trees with each old replica's and pulls what differs. An exchange
//! interrupted (a crash, a cut) leaves what it moved in place, and the
//! next compares trees again: only what still differs moves, so a resumed
//! transfer re-sends at most the batch in flight. Its per-partition
//! progress is [`TransferStatus`] (`GET /v1/admin/transfers`).

pub mod cleanup;
pub mod saved;
pub mod steps;

use crate::coordinator::view::live_fingerprint;
use crate::coordinator::{ClusterView, NodeCore};
use crate::layout::history::Tracker;
use crate::layout::PartitionId;
use crate::meta::command::MetaCommand;
use crate::meta::service::MetaService;
use crate::partition::{Partitions, SyncWith};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use steps::{InFlight, Step};

/// How often the follower looks at the history.
pub const TICK: Duration = Duration::from_millis(200);

/// One partition this node pulls for a layout version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransferStatus {
    pub version: u64,
    pub partition: PartitionId,
    /// The old replicas it is pulled from.
    pub sources: Vec<String>,
    /// `waiting` (not started), `running`, `done`, or `retrying` (the last
    /// attempt failed: `error` says why).
    pub state: &'static str,
    pub keys: u64,
    pub bytes: u64,
    pub attempts: u64,
    pub error: Option<String>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

#[derive(Default)]
struct Shared {
    transfers: BTreeMap<(u64, PartitionId), TransferStatus>,
    /// The last report that failed to be proposed, and why.
    last_error: Option<String>,
}

/// The running follower of this node. Cheap to clone.
#[derive(Clone)]
pub struct Transition {
    shared: Arc<Mutex<Shared>>,
}

/// The views replaced, each with its newest and read versions.
struct Replaced(Vec<(Weak<ClusterView>, u64, u64)>);

impl InFlight for Replaced {
    fn writes_below(&self, v: u64) -> bool {
        self.0
            .iter()
            .any(|(w, newest, _)| *newest < v && w.strong_count() > 0)
    }
    fn reads_below(&self, v: u64) -> bool {
        self.0
            .iter()
            .any(|(w, _, read)| *read < v && w.strong_count() > 0)
    }
}

impl Transition {
    /// Installs the agreed history as this node's view (once this node has
    /// applied what it had committed before it started, at most `wait`),
    /// then follows it every [`TICK`], saving each history it routes by in
    /// `dir` first ([`saved`]). Must run inside the actix system.
    pub async fn start(
        core: Arc<NodeCore>,
        partitions: Partitions,
        meta: MetaService,
        dir: std::path::PathBuf,
        wait: Duration,
    ) -> Transition {
        let caught_up = meta.caught_up(wait).await;
        if !caught_up {
            log::warn!(
                "metadata: the entries committed before this start are not applied after \
                 {wait:?}; routing by the newest history known"
            );
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut follower = Follower {
            core,
            dir,
            partitions,
            meta,
            replaced: Replaced(Vec::new()),
            shared: shared.clone(),
            syncing: None,
            retry_at: None,
            sent: BTreeMap::new(),
            caught_up,
        };
        follower.install();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                follower.round().await;
            }
        });
        Transition { shared }
    }

    /// Every partition pulled (or to pull) for a live version, by version
    /// and partition.
    pub fn transfers(&self) -> Vec<TransferStatus> {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.transfers.values().cloned().collect()
    }

    /// The transfers as Prometheus gauges: partitions by state, keys and
    /// bytes pulled for the live versions.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let list = self.transfers();
        let _ = writeln!(
            out,
            "# HELP ringkv_transfer_partitions partitions this node pulls for a layout change, \
             by state\n# TYPE ringkv_transfer_partitions gauge"
        );
        for state in ["waiting", "running", "retrying", "done"] {
            let n = list.iter().filter(|t| t.state == state).count();
            let _ = writeln!(out, "ringkv_transfer_partitions{{state=\"{state}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "ringkv_transfer_keys",
                "keys pulled for the live layout versions",
                list.iter().map(|t| t.keys).sum::<u64>(),
            ),
            (
                "ringkv_transfer_bytes",
                "bytes pulled for the live layout versions",
                list.iter().map(|t| t.bytes).sum::<u64>(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    /// Why the last progress report could not be proposed, if it failed.
    pub fn last_error(&self) -> Option<String> {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.last_error.clone()
    }
}

struct Follower {
    core: Arc<NodeCore>,
    /// The data directory ([`saved`]).
    dir: std::path::PathBuf,
    partitions: Partitions,
    meta: MetaService,
    replaced: Replaced,
    shared: Arc<Mutex<Shared>>,
    /// The version being pulled, by a task of its own.
    syncing: Option<(u64, tokio::task::JoinHandle<bool>)>,
    /// After a pull that left partitions undone, the next waits until then.
    retry_at: Option<tokio::time::Instant>,
    /// The last report proposed per tracker, and when: the same one is
    /// proposed again only after [`RETRY`] (a committed report this node
    /// has not applied yet, or no leader, must not flood the log).
    sent: BTreeMap<Tracker, (u64, tokio::time::Instant)>,
    /// This node applied what it had committed before it started: its
    /// history is no older than anything it acted on, so what it does not
    /// hold may be deleted. Until then nothing is.
    caught_up: bool,
}

/// The pause after a pull that left partitions undone.
const RETRY: Duration = Duration::from_secs(2);

impl Follower {
    /// Routes by the agreed history if its live versions or read version
    /// differ from the view's.
    fn install(&mut self) {
        let Some(h) = self.meta.history() else {
            return;
        };
        let cur = self.core.view();
        // Only ever forward: a history behind the one routed by (consensus
        // not caught up after a restart) is not installed.
        if saved::order(&h) <= saved::order(&cur.history) {
            return;
        }
        if let Err(e) = saved::save(&self.dir, &h) {
            log::error!("cannot save the layout history routed by: {e}; retrying");
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            s.last_error = Some(format!(
                "cannot save the layout history (this node routes by an older one and reports \
                 nothing until it can): {e}"
            ));
            return;
        }
        log::info!(
            "routing by layout versions {:?} (reads: version {})",
            h.live().iter().map(|l| l.version()).collect::<Vec<_>>(),
            h.read_version()
        );
        self.replaced
            .0
            .push((Arc::downgrade(&cur), cur.newest(), cur.layout.version()));
        let view = ClusterView::new(h, cur.members.clone(), cur.peers.clone());
        drop(cur);
        self.core.set_view(view);
    }

    async fn round(&mut self) {
        self.install();
        self.replaced.0.retain(|(w, _, _)| w.strong_count() > 0);
        let Some(h) = self.meta.history() else {
            return;
        };
        // Act only on the history routed by: a history not installed (its
        // save failed, or the saved one is ahead of consensus after a
        // restart) must not be acked, synced or cleaned for.
        {
            let view = self.core.view();
            if saved::order(&view.history) != saved::order(&h)
                || view.fingerprint() != live_fingerprint(h.live())
            {
                return;
            }
        }
        // Forget the transfers of versions no longer live.
        {
            let live: Vec<u64> = h.live().iter().map(|l| l.version()).collect();
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            s.transfers.retain(|(v, _), _| live.contains(v));
        }
        if !self.caught_up {
            self.caught_up = self.meta.caught_up(Duration::ZERO).await;
        }
        let me = self.core.node_id.to_string();
        for step in steps::due(&h, &me, &self.replaced) {
            match step {
                Step::Report(tracker, version) => self.report(tracker, version).await,
                Step::Sync {
                    version,
                    partitions,
                } => self.sync(version, partitions).await,
            }
        }
        let view = self.core.view();
        if self.caught_up {
            if let Err(e) = cleanup::clean_round(&self.core, &view).await {
                log::warn!("dropping data of partitions no longer held: {e}");
            }
        }
    }

    async fn report(&mut self, tracker: Tracker, version: u64) {
        let now = tokio::time::Instant::now();
        if let Some((v, at)) = self.sent.get(&tracker) {
            if *v == version && now < *at + RETRY {
                return;
            }
        }
        self.sent.insert(tracker, (version, now));
        let node = self.core.node_id.to_string();
        let command = MetaCommand::Report {
            node,
            tracker,
            version,
        };
        let result = self.meta.propose(command).await;
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => {
                log::info!("layout version {version}: {tracker:?} reported");
                s.last_error = None;
            }
            Err(e) => {
                log::warn!("layout version {version}: reporting {tracker:?}: {e}");
                s.last_error = Some(format!("reporting {tracker:?} of version {version}: {e}"));
            }
        }
    }

    /// Starts pulling `version`'s gained partitions if no pull runs; once
    /// one finished with every partition pulled, reports the sync.
    async fn sync(&mut self, version: u64, partitions: Vec<(PartitionId, Vec<String>)>) {
        if let Some((v, task)) = &self.syncing {
            if !task.is_finished() && *v == version {
                return;
            }
        }
        if let Some((v, task)) = self.syncing.take() {
            if task.is_finished() && v == version {
                if task.await.unwrap_or(false) {
                    self.report(Tracker::Sync, version).await;
                    return;
                }
                self.retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
        if self
            .retry_at
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return;
        }
        {
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            for (p, sources) in &partitions {
                s.transfers
                    .entry((version, *p))
                    .or_insert_with(|| TransferStatus {
                        version,
                        partition: *p,
                        sources: sources.clone(),
                        state: "waiting",
                        ..Default::default()
                    });
            }
        }
        let (core, parts, shared) = (
            self.core.clone(),
            self.partitions.clone(),
            self.shared.clone(),
        );
        let task = tokio::task::spawn_local(pull_all(
            core,
            self.dir.clone(),
            parts,
            shared,
            version,
            partitions,
        ));
        self.syncing = Some((version, task));
    }
}

/// Pulls every partition not done yet from each of its sources; answers
/// whether all are done.
async fn pull_all(
    core: Arc<NodeCore>,
    dir: std::path::PathBuf,
    parts: Partitions,
    shared: Arc<Mutex<Shared>>,
    version: u64,
    partitions: Vec<(PartitionId, Vec<String>)>,
) -> bool {
    let budget = crate::antientropy::default_peer_budget(core.replication.background_timeout);
    let mut all = true;
    for (p, sources) in partitions {
        let done = |s: &Shared| s.transfers.get(&(version, p)).map(|t| t.state) == Some("done");
        if done(&shared.lock().unwrap_or_else(|e| e.into_inner())) {
            continue;
        }
        let Some(actor) = parts.get(p) else {
            all = false;
            continue;
        };
        update(&shared, version, p, |t| {
            t.state = "running";
            t.attempts += 1;
            t.started_ms.get_or_insert(core.hlc.wall_ms());
        });
        let mut failed = None;
        // Once per version and partition, across restarts (a restart must
        // not drop what the pull already brought).
        match saved::load_wiped(&dir, version) {
            Ok(mut wiped) if !wiped.contains(&p) => {
                match cleanup::wipe_partition(&core, &core.view().layout, p).await {
                    Ok(n) => {
                        if n > 0 {
                            log::info!("partition {p}: dropped {n} records kept from before");
                        }
                        wiped.insert(p);
                        if let Err(e) = saved::save_wiped(&dir, version, &wiped) {
                            failed = Some(format!("recording the wipe: {e}"));
                        }
                    }
                    Err(e) => failed = Some(format!("dropping what this node kept of it: {e}")),
                }
            }
            Ok(_) => {}
            Err(e) => failed = Some(format!("reading the wiped partitions: {e}")),
        }
        for source in &sources {
            if failed.is_some() {
                break;
            }
            let sent = actor
                .send(SyncWith {
                    peer: source.clone(),
                    deadline: tokio::time::Instant::now() + budget,
                })
                .await;
            match sent {
                Ok(Ok(sum)) => {
                    update(&shared, version, p, |t| {
                        t.keys += sum.keys_pulled;
                        t.bytes += sum.bytes;
                    });
                    // A record left behind (refused by our clock or store,
                    // over the value limit) is not pulled: not done.
                    if sum.keys_left > 0 {
                        failed = Some(format!(
                            "from {source}: {} records could not be stored here (see the log)",
                            sum.keys_left
                        ));
                    }
                }
                Ok(Err(e)) => failed = Some(format!("from {source}: {e}")),
                Err(e) => failed = Some(format!("partition actor: {e}")),
            }
            if failed.is_some() {
                break;
            }
        }
        if sources.is_empty() {
            failed = Some(
                "every old replica is skipped: nothing to pull from (what only they held is \
                 lost)"
                    .into(),
            );
            // Nothing will ever come: the partition is as synced as it can be.
            update(&shared, version, p, |t| {
                t.state = "done";
                t.error = failed.take();
                t.finished_ms = Some(core.hlc.wall_ms());
            });
            continue;
        }
        let now = core.hlc.wall_ms();
        update(&shared, version, p, |t| match failed {
            None => {
                t.state = "done";
                t.error = None;
                t.finished_ms = Some(now);
            }
            Some(e) => {
                t.state = "retrying";
                t.error = Some(e);
            }
        });
        all &= done(&shared.lock().unwrap_or_else(|e| e.into_inner()));
    }
    all
}

fn update(
    shared: &Mutex<Shared>,
    version: u64,
    p: PartitionId,
    f: impl FnOnce(&mut TransferStatus),
) {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = s.transfers.get_mut(&(version, p)) {
        f(t);
    }
}
