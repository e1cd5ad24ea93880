//! Partition actor: one per partition (any may be this node's after a
//! layout change), owning that
//! partition's anti-entropy state — with each peer, when they last agreed,
//! how many exchanges ran, what moved, why the last one failed.
//!
//! The repair actor compares the roots of every partition it shares with a
//! peer in one request, then hands each partition that differs to its
//! actor ([`SyncWith`]), which runs the exchange (descent, leaf walk, record
//! moves: [`crate::antientropy`]). An actor runs one exchange at a time, so
//! two passes never work on one partition at once. Partitions that agreed
//! are told so ([`Agreed`]), without waiting.
//!
//! Nothing hot waits behind a partition's mailbox: writes commit in the
//! replica actor (group commit across partitions) and the store updates the
//! partition's Merkle tree as they commit; reads stay on the HTTP worker.
//! Messages: [`SyncWith`], [`Agreed`], [`GetState`].

use crate::antientropy::{RepairService, RunSummary};
use crate::layout::PartitionId;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// What a partition knows of its exchanges with one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Wall-clock ms when the two last agreed (roots equal, or an exchange
    /// completed).
    pub last_agreed_ms: Option<u64>,
    pub exchanges: u64,
    pub keys_moved: u64,
    pub last_error: Option<String>,
}

/// Why an exchange that ran out of the pass's time with its peer failed.
pub const OUT_OF_BUDGET: &str =
    "the pass ran out of its time budget with this peer; the next pass resumes";

/// Run one exchange of this partition with `peer`; answers what it did.
#[derive(Message)]
#[rtype(result = "Result<RunSummary, String>")]
pub struct SyncWith {
    pub peer: String,
    /// The exchange ends, failed, if it is still running then (the pass's
    /// time budget with this peer).
    pub deadline: tokio::time::Instant,
}

/// This partition's root equals `peer`'s as of `at_ms`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Agreed {
    pub peer: String,
    pub at_ms: u64,
}

/// The partition's state per peer.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, PeerState>")]
pub struct GetState;

pub struct PartitionActor {
    partition: PartitionId,
    svc: RepairService,
    /// Keyed by members of the layout only (bounded by the membership).
    peers: BTreeMap<String, PeerState>,
}

impl PartitionActor {
    pub fn new(partition: PartitionId, svc: RepairService) -> Self {
        PartitionActor {
            partition,
            svc,
            peers: BTreeMap::new(),
        }
    }

    fn peer(&mut self, peer: &str) -> Option<&mut PeerState> {
        let member = self.svc.core.view().places(peer);
        if !member {
            self.peers.remove(peer);
            return None;
        }
        Some(self.peers.entry(peer.to_string()).or_default())
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;
}

impl Handler<SyncWith> for PartitionActor {
    type Result = AtomicResponse<Self, Result<RunSummary, String>>;

    fn handle(&mut self, msg: SyncWith, _: &mut Context<Self>) -> Self::Result {
        let (svc, p, peer) = (self.svc.clone(), self.partition, msg.peer);
        let deadline = msg.deadline;
        AtomicResponse::new(Box::pin(
            async move {
                let mut sum = RunSummary::default();
                let exchange = svc.sync_partition_with(&peer, p, &mut sum);
                let result = match tokio::time::timeout_at(deadline, exchange).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(OUT_OF_BUDGET.to_string()),
                };
                (peer, sum, result)
            }
            .into_actor(self)
            .map(|(peer, sum, result), act, _| {
                let now = act.svc.core.hlc.wall_ms();
                if let Some(state) = act.peer(&peer) {
                    state.exchanges += 1;
                    state.keys_moved += sum.keys_pulled + sum.keys_pushed;
                    match &result {
                        Ok(()) => {
                            state.last_agreed_ms = Some(now);
                            state.last_error = None;
                        }
                        Err(e) => state.last_error = Some(e.clone()),
                    }
                }
                result.map(|()| sum)
            }),
        ))
    }
}

impl Handler<Agreed> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Agreed, _: &mut Context<Self>) {
        if let Some(state) = self.peer(&msg.peer) {
            state.last_agreed_ms = Some(msg.at_ms);
            state.last_error = None;
        }
    }
}

impl Handler<GetState> for PartitionActor {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.peers.clone())
    }
}

/// The partition actors of this node, by partition.
#[derive(Clone, Default)]
pub struct Partitions {
    actors: HashMap<PartitionId, Addr<PartitionActor>>,
}

impl Partitions {
    /// Starts an actor for every partition, on `arbiter`: a layout change
    /// may give this node any of them.
    pub fn start(svc: &RepairService, arbiter: &ArbiterHandle) -> Partitions {
        let view = svc.core.view();
        let actors = (0..view.layout.partitions())
            .map(|p| {
                let svc = svc.clone();
                let addr =
                    PartitionActor::start_in_arbiter(arbiter, move |_| PartitionActor::new(p, svc));
                (p, addr)
            })
            .collect();
        Partitions { actors }
    }

    pub fn get(&self, p: PartitionId) -> Option<&Addr<PartitionActor>> {
        self.actors.get(&p)
    }

    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// Every actor, by partition.
    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &Addr<PartitionActor>)> {
        self.actors.iter().map(|(p, a)| (*p, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::antientropy::RepairConfig;
    use crate::storage::Store;
    use std::time::Duration;

    fn service(dir: &std::path::Path) -> RepairService {
        let store = Store::open(dir, "n1", false).unwrap();
        let core = crate::coordinator::testing::node_core(store, &["n1", "n2", "n3", "n4"], 2);
        RepairService::new(
            core,
            RepairConfig {
                interval: Duration::from_secs(600),
                bandwidth_bytes_per_sec: 1 << 20,
                gc_grace_ms: 60_000,
                max_frame: 1 << 20,
                max_value: 1 << 19,
                peer_budget: Duration::from_secs(60),
            },
        )
    }

    /// One actor per partition (a layout change may give this node any);
    /// each keeps what it learned per member, and nothing for strangers.
    #[actix::test]
    async fn each_partition_has_an_actor_keeping_its_peers_state() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let layout = svc.core.view().layout.clone();
        let parts = Partitions::start(&svc, &actix::Arbiter::current());
        let mine = layout.partitions_of("n1");
        assert_eq!(parts.len(), layout.partitions() as usize);
        assert!((0..layout.partitions()).all(|p| parts.get(p).is_some()));

        let actor = parts.get(mine[0]).unwrap();
        for peer in ["n2", "stranger"] {
            actor
                .send(Agreed {
                    peer: peer.into(),
                    at_ms: 42,
                })
                .await
                .unwrap();
        }
        // n3: an exchange that cannot reach it fails, and says why.
        let failed = actor
            .send(SyncWith {
                peer: "n3".into(),
                deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            })
            .await
            .unwrap();
        assert!(failed.is_err(), "{failed:?}");
        let state = actor.send(GetState).await.unwrap();
        assert_eq!(state.keys().collect::<Vec<_>>(), ["n2", "n3"]);
        assert_eq!(state["n2"].last_agreed_ms, Some(42));
        assert_eq!(state["n3"].exchanges, 1);
        assert_eq!(state["n3"].last_agreed_ms, None);
        assert!(state["n3"].last_error.is_some());
    }
}
