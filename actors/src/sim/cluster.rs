//! A cluster of nodes in one process: each node is the engine's real
//! assembly (store, writer, coordinator, gossip, hints, anti-entropy and
//! partition actors, the inbound dispatcher), its peers reached through
//! [`SimNet`] instead of TCP. Everything runs on the test's actix system.

use super::net::{Envelope, SimNet, INBOX};
use crate::antientropy::{RepairConfig, RepairService};
use crate::coordinator::{ClusterView, MemberInfo, NodeCore, Replication};
use crate::failure::DetectorConfig;
use crate::gossip::{GossipActor, GossipSetup, Liveness};
use crate::hint::HintActor;
use crate::inbound::Inbound;
use crate::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use crate::metrics::Metrics;
use crate::partition::Partitions;
use crate::peer::Peers;
use crate::replica::{LocalReplica, ReplicaActor};
use crate::storage::Store;
use crate::version::{node_tag, Clock, Hlc, SystemClock};
use crate::wire::MemberState;
use actix::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Gossip interval of simulated nodes.
pub const GOSSIP_MS: u64 = 50;
/// A coordinator's deadline per replica call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

/// How a simulated cluster is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    pub nodes: usize,
    pub n: usize,
    pub sloppy_quorum: bool,
    pub hints: bool,
    pub hint_max_age_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: 3,
            n: 3,
            sloppy_quorum: false,
            hints: true,
            hint_max_age_ms: 3 * 3600 * 1000,
        }
    }
}

/// One simulated node.
pub struct SimNode {
    pub id: String,
    pub core: Arc<NodeCore>,
    pub repair: RepairService,
    pub partitions: Partitions,
    _hints: Addr<HintActor>,
    _gossip: Addr<GossipActor>,
    _dir: tempfile::TempDir,
}

pub struct SimCluster {
    pub net: Arc<SimNet>,
    pub nodes: Vec<SimNode>,
    pub settings: Settings,
}

fn state(id: &str, generation: u64, layout: u64) -> MemberState {
    MemberState {
        id: id.to_string(),
        http_addr: String::new(),
        peer_addr: String::new(),
        generation,
        heartbeat: 0,
        wall_ms: 0,
        ring_epoch: layout,
        hints_floor: 0,
        hlc_ts: 0,
    }
}

impl SimCluster {
    /// Starts `settings.nodes` nodes `n1..`, all reaching each other.
    pub fn start(settings: Settings) -> SimCluster {
        let net = Arc::new(SimNet::default());
        let ids: Vec<String> = (1..=settings.nodes).map(|i| format!("n{i}")).collect();
        let layout = Arc::new(Layout::initial(
            ids.iter().map(|i| Member::new(i.as_str())),
            settings.n,
            DEFAULT_PARTITION_BITS,
        ));
        let nodes = ids
            .iter()
            .map(|id| start_node(id, &ids, &layout, &net, &settings))
            .collect();
        SimCluster {
            net,
            nodes,
            settings,
        }
    }

    pub fn node(&self, id: &str) -> &SimNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Cuts the network into `groups`.
    pub fn partition(&self, groups: Vec<BTreeSet<String>>) {
        self.net.partition(groups);
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// Whether every node's failure detector agrees with the network: the
    /// peers it reaches are up, the others down.
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|a| {
            self.nodes
                .iter()
                .filter(|b| b.id != a.id)
                .all(|b| a.core.liveness.is_down(&b.id) != self.net.connected(&a.id, &b.id))
        })
    }
}

fn start_node(
    id: &str,
    ids: &[String],
    layout: &Arc<Layout>,
    net: &Arc<SimNet>,
    settings: &Settings,
) -> SimNode {
    let dir = tempfile::tempdir().expect("a node directory");
    let store = Store::open(dir.path(), id, false).expect("a store");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let generation = store.bump_generation(clock.now_ms()).expect("generation");
    let metrics = Arc::new(Metrics::default());
    let writer = ReplicaActor::new(store.clone(), metrics.clone()).start();
    let hlc = Arc::new(Hlc::new(node_tag(id), clock.clone(), 5_000));
    let local = LocalReplica {
        store,
        writer,
        hlc: hlc.clone(),
        stats: metrics.clone(),
        repairing: Arc::new(AtomicBool::new(false)),
        repair_wanted: Arc::default(),
    };
    let others: Vec<String> = ids.iter().filter(|i| *i != id).cloned().collect();
    let peers = Peers::over(others.clone(), net.link(id));
    let liveness = Arc::new(Liveness::new(others.clone()));
    let view = ClusterView {
        layout: layout.clone(),
        members: ids
            .iter()
            .map(|i| MemberInfo {
                id: i.clone(),
                http_addr: String::new(),
                peer_addr: String::new(),
            })
            .collect(),
        peers: peers.clone(),
    };
    let n = settings.n.min(ids.len());
    let core = Arc::new(NodeCore::new(
        id.to_string(),
        local.clone(),
        Replication {
            n,
            r: n / 2 + 1,
            w: n / 2 + 1,
            request_timeout: REQUEST_TIMEOUT,
            background_timeout: REQUEST_TIMEOUT * 3,
            hinted_handoff: settings.hints,
            sloppy_quorum: settings.hints && settings.sloppy_quorum,
            read_repair_blocking_all: false,
        },
        liveness.clone(),
        view,
    ));
    let hints = HintActor::new(
        core.clone(),
        settings.hint_max_age_ms,
        crate::wire::DEFAULT_MAX_FRAME,
        REQUEST_TIMEOUT * 3,
    )
    .start();
    let repair = RepairService::new(
        core.clone(),
        RepairConfig {
            interval: Duration::from_secs(3600),
            bandwidth_bytes_per_sec: 1 << 30,
            gc_grace_ms: 3600 * 1000,
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
        },
    );
    let partitions = Partitions::start(&repair, &Arbiter::current());
    let floor_store = local.store.clone();
    let fingerprint = layout.fingerprint();
    let gossip = GossipActor::new(GossipSetup {
        me: state(id, generation, fingerprint),
        others: others.iter().map(|o| state(o, 0, 0)).collect(),
        // Tolerant of a busy test machine's pauses: a peer is down after
        // about a second of silence, not after a few missed rounds.
        detector: DetectorConfig {
            acceptable_pause_ms: 500,
            ..DetectorConfig::with_interval(GOSSIP_MS)
        },
        peers,
        liveness,
        on_up: vec![hints.clone().recipient()],
        metrics: metrics.clone(),
        clock,
        hlc,
        interval: Duration::from_millis(GOSSIP_MS),
        hints_floor: Arc::new(move || floor_store.hints_floor()),
    })
    .start();
    let inbound = Inbound {
        local,
        gossip: gossip.clone(),
        repair: repair.clone(),
        members: Arc::new(ids.iter().cloned().collect()),
        node_id: id.to_string(),
    };
    let (tx, mut rx) = mpsc::channel::<Envelope>(INBOX);
    net.attach(id, tx);
    actix::spawn(async move {
        while let Some((from, request, reply)) = rx.recv().await {
            let inbound = inbound.clone();
            actix::spawn(async move {
                let _ = reply.send(inbound.handle(&from, request).await);
            });
        }
    });
    SimNode {
        id: id.to_string(),
        core,
        repair,
        partitions,
        _hints: hints,
        _gossip: gossip,
        _dir: dir,
    }
}
