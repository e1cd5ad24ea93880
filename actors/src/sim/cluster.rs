//! A cluster of nodes in one process: each node is the engine's real
//! assembly ([`Node::start`]: store, writer, coordinator, gossip, hints,
//! anti-entropy and partition actors, the inbound dispatcher), its peers
//! reached through [`SimNet`] instead of TCP. Each node runs on its own
//! arbiter, so stopping it stops every actor and task it had (a crash), and
//! [`SimCluster::restart`] opens its store again, as a restarted process does.

use super::clock::{Advance, SimClock};
use super::net::{Envelope, SimNet, INBOX};
use crate::antientropy::RepairService;
use crate::coordinator::{MemberInfo, NodeCore, Replication};
use crate::gossip::failure::DetectorConfig;
use crate::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use crate::node::{Node, NodeSettings};
use crate::node_id::NodeId;
use crate::partition::Partitions;
use crate::peer::Peers;
use crate::replica::ReplicaLimits;
use crate::storage::Store;
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
    pub tombstone_grace_ms: u64,
    /// A coordinator's deadline per replica call.
    pub request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: 3,
            n: 3,
            sloppy_quorum: false,
            hints: true,
            hint_max_age_ms: 3 * 3600 * 1000,
            tombstone_grace_ms: 3600 * 1000,
            request_timeout: REQUEST_TIMEOUT,
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
    arbiter: Arbiter,
}

pub struct SimCluster {
    pub net: Arc<SimNet>,
    pub nodes: Vec<SimNode>,
    pub settings: Settings,
    /// Moves every node's clock forward together.
    pub advance: Advance,
    ids: Vec<String>,
    layout: Arc<Layout>,
    /// Each node's data directory, kept across restarts.
    dirs: Vec<tempfile::TempDir>,
}

impl SimCluster {
    /// Starts `settings.nodes` nodes `n1..`, all reaching each other.
    pub async fn start(settings: Settings) -> SimCluster {
        let advance = Advance::default();
        let net = Arc::new(SimNet::new(advance.clone()));
        let ids: Vec<String> = (1..=settings.nodes).map(|i| format!("n{i}")).collect();
        let layout = Arc::new(Layout::initial(
            ids.iter().map(|i| Member::new(i.as_str())),
            settings.n,
            DEFAULT_PARTITION_BITS,
        ));
        let mut c = SimCluster {
            net,
            nodes: Vec::new(),
            settings,
            advance,
            ids: ids.clone(),
            layout,
            dirs: Vec::new(),
        };
        for id in &ids {
            c.dirs.push(tempfile::tempdir().expect("a node directory"));
            let node = c.start_node(id, c.dirs.len() - 1, 0).await;
            c.nodes.push(node);
        }
        c
    }

    /// Stops `id` as a crash would (its actors and tasks end, nothing is
    /// flushed beyond what was committed), then starts it again on the same
    /// data with its clock `clock_offset_ms` off.
    pub async fn restart(&mut self, id: &str, clock_offset_ms: i64) {
        let at = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"));
        let old = self.nodes.remove(at);
        self.net.detach(id);
        old.arbiter.stop();
        let SimNode {
            arbiter,
            core,
            repair,
            partitions,
            _node,
            ..
        } = old;
        drop((core, repair, partitions, _node));
        tokio::task::spawn_blocking(move || arbiter.join())
            .await
            .expect("the node's arbiter stops")
            .expect("the node's arbiter ends without a panic");
        let node = self.start_node(id, at, clock_offset_ms).await;
        self.nodes.insert(at, node);
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

impl SimCluster {
    /// Starts node `id` on its own arbiter over data directory `dir`.
    async fn start_node(&self, id: &str, dir: usize, clock_offset_ms: i64) -> SimNode {
        let path = self.dirs[dir].path().to_path_buf();
        // A stopped node's last storage tasks may still hold its files
        // for a moment.
        let started = std::time::Instant::now();
        let store = loop {
            match Store::open(&path, id, false) {
                Ok(store) => break store,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    panic!("{id}'s store does not open: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let settings = &self.settings;
        let ids = &self.ids;
        let others: Vec<String> = ids.iter().filter(|i| *i != id).cloned().collect();
        let n = settings.n.min(ids.len());
        let arbiter = Arbiter::new();
        let here = arbiter.handle();
        let node_settings = NodeSettings {
            id: NodeId::new(id),
            store,
            clock: Arc::new(SimClock {
                advance: self.advance.clone(),
                offset_ms: clock_offset_ms,
            }),
            layout: self.layout.clone(),
            members: ids
                .iter()
                .map(|i| MemberInfo {
                    id: i.clone(),
                    http_addr: String::new(),
                    peer_addr: String::new(),
                })
                .collect(),
            peers: Peers::over(others, self.net.link(id)),
            replication: Replication {
                n,
                r: n / 2 + 1,
                w: n / 2 + 1,
                request_timeout: settings.request_timeout,
                background_timeout: settings.request_timeout * 3,
                hinted_handoff: settings.hints,
                sloppy_quorum: settings.hints && settings.sloppy_quorum,
                read_repair_blocking_all: false,
            },
            max_clock_drift_ms: 5_000,
            tombstone_grace_ms: settings.tombstone_grace_ms,
            hint_max_age_ms: settings.hint_max_age_ms,
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            max_value: crate::wire::DEFAULT_MAX_FRAME / 2,
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
        };
        let (tx, mut rx) = mpsc::channel::<Envelope>(INBOX);
        self.net.attach(id, tx);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            let node = Node::start(node_settings).expect("a node starts");
            let inbound = node.inbound.clone();
            let _ = started_tx.send(node);
            while let Some((from, request, reply)) = rx.recv().await {
                let inbound = inbound.clone();
                actix::spawn(async move {
                    let _ = reply.send(inbound.handle(&from, request).await);
                });
            }
        });
        let node = started_rx.await.expect("the node's arbiter runs");
        SimNode {
            id: id.to_string(),
            core: node.core.clone(),
            repair: node.repair_service.clone(),
            partitions: node.partitions.clone(),
            _node: node,
            arbiter,
        }
    }
}
