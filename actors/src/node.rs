//! The node handle: [`Node::start`] assembles one node's actors from its
//! settings — the writer, the coordinator, gossip, hinted handoff,
//! anti-entropy and its partition actors, the inbound dispatcher — and
//! returns a handle the HTTP layer and the tests use (read, write, repair,
//! flush, and the parts' addresses). The binary (`src/server.rs`) opens the
//! store, makes the peer transport (TCP sessions) and serves HTTP; the
//! simulated cluster (`sim/`) passes an in-memory transport instead. Policy
//! decided at start lives here: the restart generation, the clock's
//! restored reservation and vouching, repair mode, the liveness record.

use crate::antientropy::{RepairConfig, RepairService, RunSummary};
use crate::coordinator::{ClusterView, MemberInfo, NodeCore, Replication, WriteResult};
use crate::error::Result;
use crate::gossip::failure::DetectorConfig;
use crate::gossip::{GossipActor, GossipSetup, Liveness};
use crate::hint::HintActor;
use crate::inbound::Inbound;
use crate::layout::Layout;
use crate::node_id::NodeId;
use crate::partition::Partitions;
use crate::peer::Peers;
use crate::quorum::Consistency;
use crate::record::Record;
use crate::repair::{RepairActor, RunRepair};
use crate::replica::{Flush, LocalReplica, ReplicaActor, ReplicaLimits};
use crate::storage::{Mutation, Precondition, Store, StoreError};
use crate::version::{node_tag, Clock, Hlc};
use crate::wire::MemberState;
use actix::prelude::*;
use bytes::Bytes;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How often a node records that it is up (see `repair::mode`).
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Everything a node is made of, decided by its caller.
pub struct NodeSettings {
    pub id: NodeId,
    /// Opened by the caller (paths, options and fault switches are its).
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub layout: Arc<Layout>,
    /// Every member, this node included.
    pub members: Vec<MemberInfo>,
    /// How this node reaches the others (TCP sessions, or a simulation).
    pub peers: Peers,
    pub replication: Replication,
    pub max_clock_drift_ms: u64,
    pub tombstone_grace_ms: u64,
    pub hint_max_age_ms: u64,
    pub max_frame: usize,
    pub max_value: usize,
    pub anti_entropy_interval: Duration,
    pub repair_bandwidth_bytes_per_sec: u64,
    pub gossip_interval: Duration,
    pub detector: DetectorConfig,
    pub replica_limits: ReplicaLimits,
    pub group_commit: bool,
    /// Where the writer runs, and where gossip, hints and repair run.
    pub writer_arbiter: ArbiterHandle,
    pub peer_arbiter: ArbiterHandle,
}

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub generation: u64,
    pub core: Arc<NodeCore>,
    pub replica: Addr<ReplicaActor>,
    pub gossip: Addr<GossipActor>,
    pub hints: Addr<HintActor>,
    pub repair: Addr<RepairActor>,
    pub repair_service: RepairService,
    pub partitions: Partitions,
    /// What answers the peers' requests (handed to the peer listener).
    pub inbound: Inbound,
}

fn member_state(m: &MemberInfo, generation: u64, layout: u64) -> MemberState {
    MemberState {
        http_addr: m.http_addr.clone(),
        peer_addr: m.peer_addr.clone(),
        ring_epoch: layout,
        ..MemberState::new(&m.id, generation, 0)
    }
}

impl Node {
    /// Assembles and starts the node. Runs inside an actix system.
    pub fn start(s: NodeSettings) -> std::result::Result<Node, StoreError> {
        let store = s.store.clone();
        same_partitions(
            store.with_trees(|t| t.partition_bits()),
            s.layout.partition_bits(),
        )?;
        store.admit_value_limit(s.max_value as u64)?;
        let generation = store.bump_generation(s.clock.now_ms())?;
        log::info!(
            "node {} opened its store ({} records, generation {generation})",
            s.id,
            store.len()?
        );
        let hlc = Arc::new(Hlc::new(
            node_tag(&s.id),
            s.clock.clone(),
            s.max_clock_drift_ms,
        ));
        if let Some(ceiling) = store.clock_ceiling_ms()? {
            hlc.restore(ceiling);
        }
        if !s.peers.is_empty() {
            hlc.require_vouching();
        }
        let repairing =
            crate::repair::mode::enter_at_start(&store, s.clock.now_ms(), s.tombstone_grace_ms)?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (writer_store, writer_metrics) = (store.clone(), metrics.clone());
        let (limits, group_commit) = (s.replica_limits, s.group_commit);
        let replica = ReplicaActor::start_in_arbiter(&s.writer_arbiter, move |_| {
            let actor = ReplicaActor::new(writer_store, writer_metrics).with_limits(limits);
            if group_commit {
                actor
            } else {
                actor.without_group_commit()
            }
        });
        let local = LocalReplica {
            store,
            writer: replica.clone(),
            hlc: hlc.clone(),
            stats: metrics.clone(),
            repairing: Arc::new(AtomicBool::new(repairing)),
            repair_wanted: Arc::default(),
        };
        keep_alive_record(local.clone(), s.clock.clone());
        let liveness = Arc::new(Liveness::new(s.peers.ids()));
        let view = ClusterView::stable(s.layout.clone(), s.members.clone(), s.peers.clone());
        let core = Arc::new(NodeCore::new(
            s.id.clone(),
            local.clone(),
            s.replication,
            liveness.clone(),
            view,
        ));
        let (hint_core, age, frame, background) = (
            core.clone(),
            s.hint_max_age_ms,
            s.max_frame,
            s.replication.background_timeout,
        );
        let hints = HintActor::start_in_arbiter(&s.peer_arbiter, move |_| {
            HintActor::new(hint_core, age, frame, background)
        });
        let repair_service = RepairService::new(
            core.clone(),
            RepairConfig {
                interval: s.anti_entropy_interval,
                bandwidth_bytes_per_sec: s.repair_bandwidth_bytes_per_sec,
                gc_grace_ms: s.tombstone_grace_ms,
                max_frame: s.max_frame,
                max_value: s.max_value,
                peer_budget: crate::antientropy::default_peer_budget(
                    s.replication.background_timeout,
                ),
            },
        );
        let partitions = Partitions::start(&repair_service, &s.peer_arbiter);
        log::info!("{} partition actors started", partitions.len());
        let (svc, parts) = (repair_service.clone(), partitions.clone());
        let repair =
            RepairActor::start_in_arbiter(&s.peer_arbiter, move |_| RepairActor::new(svc, parts));
        let fingerprint = s.layout.fingerprint();
        let me = s
            .members
            .iter()
            .find(|m| m.id == s.id)
            .map(|m| member_state(m, generation, fingerprint))
            .unwrap_or_else(|| panic!("{} is not among its members", s.id));
        let others = s
            .members
            .iter()
            .filter(|m| m.id != s.id)
            .map(|m| member_state(m, 0, 0))
            .collect();
        let floor_store = local.store.clone();
        let setup = GossipSetup {
            me,
            others,
            detector: s.detector,
            peers: s.peers.clone(),
            liveness,
            on_up: vec![hints.clone().recipient(), repair.clone().recipient()],
            metrics,
            clock: s.clock.clone(),
            hlc,
            interval: s.gossip_interval,
            hints_floor: Arc::new(move || floor_store.hints_floor()),
        };
        let gossip =
            GossipActor::start_in_arbiter(&s.peer_arbiter, move |_| GossipActor::new(setup));
        let inbound = Inbound {
            local,
            gossip: gossip.clone(),
            repair: repair_service.clone(),
            members: Arc::new(s.members.iter().map(|m| m.id.clone()).collect()),
            node_id: s.id.clone(),
            meta: None,
        };
        Ok(Node {
            id: s.id,
            generation,
            core,
            replica,
            gossip,
            hints,
            repair,
            repair_service,
            partitions,
            inbound,
        })
    }

    /// Reads `key` at `consistency`.
    pub async fn read(&self, key: &Bytes, consistency: Consistency) -> Result<Option<Record>> {
        self.core.read(key, consistency).await
    }

    /// Writes `value` (`None`: deletes) under `precondition`.
    pub async fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        precondition: Precondition,
        consistency: Consistency,
    ) -> Result<WriteResult> {
        self.core.write(key, value, precondition, consistency).await
    }

    /// Runs an anti-entropy pass that starts after this call; `None` when
    /// too many already wait.
    pub async fn repair(&self) -> Option<RunSummary> {
        self.repair.send(RunRepair).await.ok().flatten()
    }

    /// Commits whatever the writer has queued.
    pub async fn flush(&self, within: Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(within, self.replica.send(Flush)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("did not finish in {within:?}")),
        }
    }
}

/// The store's partition trees and the layout must divide the token space
/// alike, or the trees would describe other ranges than the layout's
/// partitions and anti-entropy would compare the wrong things.
fn same_partitions(stored_bits: u8, layout_bits: u8) -> std::result::Result<(), StoreError> {
    if stored_bits == layout_bits {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "the store was opened with {} partitions but the layout has {}",
        1u64 << stored_bits,
        1u64 << layout_bits
    )))
}

/// Records, every [`ALIVE_INTERVAL`], that this node is up: after a restart
/// the gap tells whether it was down longer than the tombstone grace period
/// (in repair mode too: the persisted repair flag, not this record, keeps a
/// restart in repair mode; see `repair::mode`). The record joins the
/// writer's group commit.
fn keep_alive_record(local: LocalReplica, clock: Arc<dyn Clock>) {
    actix::spawn(async move {
        let mut tick = tokio::time::interval(ALIVE_INTERVAL);
        loop {
            tick.tick().await;
            let alive = Mutation::Meta {
                alive_ms: Some(clock.now_ms()),
                clock_ceiling_ms: None,
            };
            if let Err(e) = local.apply(alive).await {
                log::warn!("recording liveness failed: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::same_partitions;

    #[test]
    fn a_store_and_a_layout_of_different_partitions_are_refused() {
        assert!(same_partitions(8, 8).is_ok());
        let e = same_partitions(8, 10).unwrap_err().to_string();
        assert!(e.contains("256 partitions") && e.contains("1024"), "{e}");
    }
}
