//! A cluster of nodes in one process: each node is the engine's real
//! assembly ([`Node::start`]: store, writer, coordinator, gossip, hints,
//! anti-entropy and partition actors, the inbound dispatcher), its peers
//! reached through [`SimNet`] instead of TCP. Everything runs on the test's actix system.

use super::net::{Envelope, SimNet, INBOX};
use crate::antientropy::RepairService;
use crate::coordinator::{MemberInfo, NodeCore, Replication};
use crate::failure::DetectorConfig;
use crate::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use crate::node::{Node, NodeSettings};
use crate::partition::Partitions;
use crate::peer::Peers;
use crate::replica::ReplicaLimits;
use crate::storage::Store;
use crate::version::SystemClock;
use actix::prelude::*;
use std::collections::BTreeSet;
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
    _node: Node,
    _dir: tempfile::TempDir,
}

pub struct SimCluster {
    pub net: Arc<SimNet>,
    pub nodes: Vec<SimNode>,
    pub settings: Settings,
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

    /// Whether every node's failure detector agrees with the network (the
    /// peers it reaches are up, the others down) and every node vouches for
    /// its clock (as a started node does after a gossip decision).
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|a| !a.core.hlc.stepped())
            && self.nodes.iter().all(|a| {
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
    let others: Vec<String> = ids.iter().filter(|i| *i != id).cloned().collect();
    let n = settings.n.min(ids.len());
    let here = Arbiter::current();
    let node = Node::start(NodeSettings {
        id: id.to_string(),
        store,
        clock: Arc::new(SystemClock::default()),
        layout: layout.clone(),
        members: ids
            .iter()
            .map(|i| MemberInfo {
                id: i.clone(),
                http_addr: String::new(),
                peer_addr: String::new(),
            })
            .collect(),
        peers: Peers::over(others, net.link(id)),
        replication: Replication {
            n,
            r: n / 2 + 1,
            w: n / 2 + 1,
            request_timeout: REQUEST_TIMEOUT,
            background_timeout: REQUEST_TIMEOUT * 3,
            hinted_handoff: settings.hints,
            sloppy_quorum: settings.hints && settings.sloppy_quorum,
            read_repair_blocking_all: false,
        },
        max_clock_drift_ms: 5_000,
        tombstone_grace_ms: 3600 * 1000,
        hint_max_age_ms: settings.hint_max_age_ms,
        max_frame: crate::wire::DEFAULT_MAX_FRAME,
        anti_entropy_interval: Duration::from_secs(3600),
        repair_bandwidth_bytes_per_sec: 1 << 30,
        gossip_interval: Duration::from_millis(GOSSIP_MS),
        // Tolerant of a busy test machine's pauses: a peer is down after
        // about a second of silence, not after a few missed rounds.
        detector: DetectorConfig {
            acceptable_pause_ms: 500,
            ..DetectorConfig::with_interval(GOSSIP_MS)
        },
        replica_limits: ReplicaLimits::default(),
        group_commit: true,
        writer_arbiter: here.clone(),
        peer_arbiter: here,
    })
    .expect("a node starts");
    let inbound = node.inbound.clone();
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
        core: node.core.clone(),
        repair: node.repair_service.clone(),
        partitions: node.partitions.clone(),
        _node: node,
        _dir: dir,
    }
}
