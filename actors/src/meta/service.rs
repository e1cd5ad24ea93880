//! The running metadata Raft of this process: it starts openraft over the
//! redb log and the peer connections, agrees the first layout version, and
//! answers the consensus messages peers send.
//!
//! Start-up: every configured member computes the same voter set (the first
//! [`MAX_VOTERS`] members by id) and the voters initialize Raft with it —
//! the same membership everywhere, so initializing on each of them is safe.
//! The leader's steward then proposes the configured layout as version 1
//! (once: the state machine refuses a second version 1) and adds the other
//! members as learners.

use super::answer::Assembly;
use super::command::{MetaCommand, MetaReply};
use super::log_store::{self, LogStore};
use super::network::{call, CallError, MetaNetwork};
use super::state_machine::{Applied, StateMachine};
use super::status::{member_moves, progress, version_status, MetaStatus};
use super::{raft_id, MetaNode, MetaTypes, MAX_VOTERS};
use crate::layout::history::LayoutHistory;
use crate::layout::Layout;
use crate::peer::Peers;
use crate::wire::MetaRpc;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How this node takes part in metadata consensus.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// Where `meta.redb` lives (the node's data directory).
    pub dir: PathBuf,
    /// How often a leader sends heartbeats; elections wait 4 to 8 of them.
    pub heartbeat: Duration,
    /// How long a proposal waits for its commit before it is reported
    /// indeterminate.
    pub propose_timeout: Duration,
    /// How often the steward checks that version 1 and the learners exist.
    pub steward_interval: Duration,
}

impl MetaConfig {
    pub fn new(dir: PathBuf) -> MetaConfig {
        MetaConfig {
            dir,
            heartbeat: Duration::from_millis(250),
            propose_timeout: Duration::from_secs(10),
            steward_interval: Duration::from_secs(1),
        }
    }
}

/// Why a metadata change did not happen, or might not have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// No leader is known (a majority of voters is unreachable): nothing
    /// was proposed.
    #[error("no metadata leader: {0} (a majority of the voters must be up)")]
    NoLeader(String),
    /// The state machine refused the change; nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The proposal was sent but its fate is unknown (a timeout, a lost
    /// leader): it may or may not be applied.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
    /// Nothing was proposed (storage or a bad message).
    #[error("failed: {0}")]
    Failed(String),
}

/// The metadata service of this node. Cheap to clone.
#[derive(Clone)]
pub struct MetaService {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) me: String,
    pub(super) raft: Raft<MetaTypes>,
    applied: Arc<RwLock<Applied>>,
    peers: Peers,
    /// Raft id → member id, every configured member.
    names: BTreeMap<u64, String>,
    pub(super) member_ids: BTreeSet<u64>,
    /// This node's cluster fingerprint ([`cluster_fingerprint`]).
    pub(super) cluster: u64,
    propose_timeout: Duration,
    /// A leader that heard from no quorum, or a follower that heard from no
    /// leader, for longer than this reports no leader (openraft's leader
    /// does not step down by itself).
    quorum_grace_ms: u64,
    /// When a leader's append was last accepted here.
    pub(super) leader_contact: Mutex<Option<Instant>>,
    /// The snapshot being received.
    pub(super) assembly: Mutex<Assembly>,
    steward: tokio::task::JoinHandle<()>,
    /// The log index this node had committed when it started.
    committed_at_start: Option<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.steward.abort();
    }
}

/// The voters of a member set: the first [`MAX_VOTERS`] by id.
pub fn voters(members: &[String]) -> BTreeSet<String> {
    let sorted: BTreeSet<&String> = members.iter().collect();
    sorted.into_iter().take(MAX_VOTERS).cloned().collect()
}

/// A fingerprint of what the cluster was configured with: its members and
/// its first layout. Nodes whose fingerprints differ refuse each other's
/// consensus messages, so two configurations never initialize two logs
/// that both claim the same first entry.
pub fn cluster_fingerprint(members: &[String], initial: &Layout) -> u64 {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0x636c_7573);
    for m in members.iter().collect::<BTreeSet<_>>() {
        h.write(m.as_bytes());
        h.write_u8(0);
    }
    h.write_u64(initial.fingerprint());
    h.finish()
}

fn node_map(ids: impl IntoIterator<Item = String>) -> BTreeMap<u64, MetaNode> {
    ids.into_iter()
        .map(|id| (raft_id(&id), MetaNode { id }))
        .collect()
}

impl MetaService {
    /// Starts metadata consensus for `me` among `members` (every member,
    /// `me` included), proposing `initial` as version 1 if no version is
    /// agreed yet. Must run inside a tokio runtime.
    pub async fn start(
        me: &str,
        members: &[String],
        peers: Peers,
        initial: Layout,
        cfg: MetaConfig,
    ) -> Result<MetaService, String> {
        let hb = cfg.heartbeat.as_millis().max(10) as u64;
        let config = openraft::Config {
            cluster_name: "ringkv-meta".into(),
            heartbeat_interval: hb,
            election_timeout_min: hb * 4,
            election_timeout_max: hb * 8,
            install_snapshot_timeout: hb * 8,
            max_payload_entries: 16,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(64),
            snapshot_max_chunk_size: 256 << 10,
            max_in_snapshot_log_to_keep: 16,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("metadata consensus settings: {e}"))?;
        let db = log_store::open(&cfg.dir)?;
        let committed_at_start =
            log_store::get_state::<Option<openraft::LogId<u64>>>(&db, log_store::COMMITTED)?
                .flatten()
                .map(|l| l.index);
        let sm = StateMachine::open(db.clone())?;
        let applied = sm.applied();
        let cluster = cluster_fingerprint(members, &initial);
        let network = MetaNetwork {
            peers: peers.clone(),
            cluster,
        };
        let raft = Raft::new(
            raft_id(me),
            Arc::new(config),
            network,
            LogStore::new(db),
            sm,
        )
        .await
        .map_err(|e| format!("metadata consensus did not start: {e}"))?;
        // Voters come from the first layout's members: a standby node
        // (configured, not yet joined) may never run, and must not count
        // toward a majority.
        let placed: Vec<String> = initial.members().map(String::from).collect();
        let voters = voters(&placed);
        let initialized = raft.is_initialized().await.map_err(|e| e.to_string())?;
        if !initialized && voters.contains(me) {
            match raft.initialize(node_map(voters.iter().cloned())).await {
                Ok(()) => log::info!("metadata consensus initialized with voters {voters:?}"),
                // Another voter's initialization reached us first.
                Err(e) => log::info!("metadata consensus: {e}"),
            }
        }
        let names: BTreeMap<u64, String> =
            members.iter().map(|m| (raft_id(m), m.clone())).collect();
        let steward = tokio::spawn(steward(
            raft.clone(),
            applied.clone(),
            initial,
            members.to_vec(),
            cfg.steward_interval,
        ));
        Ok(MetaService {
            inner: Arc::new(Inner {
                me: me.to_string(),
                raft,
                applied,
                peers,
                member_ids: names.keys().copied().collect(),
                names,
                cluster,
                propose_timeout: cfg.propose_timeout,
                quorum_grace_ms: hb * 8,
                leader_contact: Mutex::new(None),
                assembly: Mutex::default(),
                steward,
                committed_at_start,
            }),
        })
    }

    /// This node's cluster fingerprint ([`cluster_fingerprint`]).
    pub fn cluster(&self) -> u64 {
        self.inner.cluster
    }

    /// Waits (at most `timeout`) until this node applied every entry it
    /// had committed when it started, so [`MetaService::history`] is at
    /// least as new as anything this node acted on before a restart.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let Some(target) = self.inner.committed_at_start else {
            return true;
        };
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                let applied = metrics.borrow().last_applied.map(|l| l.index);
                if applied.is_some_and(|a| a >= target) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
            && self
                .inner
                .raft
                .metrics()
                .borrow()
                .last_applied
                .is_some_and(|l| l.index >= target)
    }

    /// The agreed layout history (`None` until version 1 is agreed).
    pub fn history(&self) -> Option<LayoutHistory> {
        let a = self.inner.applied.read().unwrap_or_else(|e| e.into_inner());
        a.state.history.clone()
    }

    /// Proposes `command`: on the leader, or sent on to it once.
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaReply, MetaError> {
        let inner = &self.inner;
        let write = tokio::time::timeout(
            inner.propose_timeout,
            inner.raft.client_write(command.clone()),
        );
        match write.await {
            Err(_) => Err(MetaError::Indeterminate(format!(
                "no commit within {:?}",
                inner.propose_timeout
            ))),
            Ok(Ok(r)) => reply(r.data),
            Ok(Err(e)) => match e.forward_to_leader::<MetaNode>() {
                Some(f) => match (f.leader_id, &f.leader_node) {
                    (Some(id), Some(node)) if id != raft_id(&inner.me) => {
                        self.forward(&node.id, &command).await
                    }
                    _ => Err(MetaError::NoLeader("no leader is known".into())),
                },
                None => Err(client_write_error(e)),
            },
        }
    }

    async fn forward(&self, leader: &str, command: &MetaCommand) -> Result<MetaReply, MetaError> {
        let inner = &self.inner;
        let answer: Result<Forwarded, _> = call(
            &inner.peers,
            leader,
            (MetaRpc::Propose, inner.cluster),
            command,
            inner.propose_timeout,
        )
        .await;
        match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(MetaError::Failed(e.to_string())),
            Err(CallError::NotSent(e)) => Err(MetaError::NoLeader(format!(
                "the leader {leader} cannot be reached, nothing was proposed: {e}"
            ))),
            // Sent, maybe applied: we cannot tell.
            Err(e) => Err(MetaError::Indeterminate(format!(
                "sent to the leader {leader}, no usable answer: {e}"
            ))),
        }
    }

    pub(super) async fn propose_local(&self, command: MetaCommand) -> Result<MetaReply, MetaError> {
        let inner = &self.inner;
        let write = tokio::time::timeout(inner.propose_timeout, inner.raft.client_write(command));
        match write.await {
            Err(_) => Err(MetaError::Indeterminate(format!(
                "no commit within {:?}",
                inner.propose_timeout
            ))),
            Ok(Ok(r)) => reply(r.data),
            Ok(Err(e)) if e.forward_to_leader::<MetaNode>().is_some() => Err(MetaError::NoLeader(
                "the node asked is no longer the leader".into(),
            )),
            Ok(Err(e)) => Err(client_write_error(e)),
        }
    }

    /// This node's view of the metadata.
    pub fn status(&self) -> MetaStatus {
        let inner = &self.inner;
        let m = inner.raft.metrics().borrow().clone();
        let name = |id: u64| {
            inner
                .names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("#{id:016x}"))
        };
        let membership = m.membership_config.membership();
        let mut voters: Vec<String> = membership.voter_ids().map(name).collect();
        let mut learners: Vec<String> = membership.learner_ids().map(name).collect();
        voters.sort();
        learners.sort();
        let grace = Duration::from_millis(inner.quorum_grace_ms);
        let heard = inner
            .leader_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() <= grace);
        // A leader is reported only while it is one in fact: a leader that
        // heard from a quorum lately, or the leader a follower or learner
        // heard from lately.
        let current = match m.state {
            ServerState::Leader => m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= inner.quorum_grace_ms),
            ServerState::Follower | ServerState::Learner => heard,
            _ => false,
        };
        let role = match m.state {
            ServerState::Leader if !current => "leader-without-quorum",
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Follower => "follower",
            ServerState::Shutdown => "shutdown",
        };
        let history = self.history();
        MetaStatus {
            node: inner.me.clone(),
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader.filter(|_| current).map(name),
            error: m.running_state.as_ref().err().map(|e| e.to_string()),
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters,
            learners,
            versions: history
                .as_ref()
                .map(|h| h.live().iter().map(version_status).collect())
                .unwrap_or_default(),
            read_version: history.as_ref().map(LayoutHistory::read_version),
            progress: history.as_ref().map(progress).unwrap_or_default(),
            moves: history.as_ref().map(member_moves).unwrap_or_default(),
        }
    }

    /// Stops consensus on this node (at shutdown, or a test's crash).
    pub async fn shutdown(&self) {
        self.inner.steward.abort();
        if let Err(e) = self.inner.raft.shutdown().await {
            log::warn!("metadata consensus did not stop cleanly: {e}");
        }
    }
}

/// A forwarded proposal's answer as the leader encodes it.
type Forwarded = Result<Result<MetaReply, MetaError>, RaftError<u64, MetaForwardError>>;

/// The error type a forwarded proposal's answer is wrapped in (never
/// produced: the answer is the inner `Result`).
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct MetaForwardError(String);

fn reply(r: MetaReply) -> Result<MetaReply, MetaError> {
    match r {
        MetaReply::Refused(why) => Err(MetaError::Refused(why)),
        r => Ok(r),
    }
}

fn client_write_error(e: RaftError<u64, ClientWriteError<u64, MetaNode>>) -> MetaError {
    match e {
        // The core stopped: the entry may have been appended first.
        RaftError::Fatal(f) => MetaError::Indeterminate(f.to_string()),
        RaftError::APIError(e) => MetaError::Failed(e.to_string()),
    }
}

/// On the leader, every `every`: proposes `initial` while no version is
/// agreed, and adds members that are not in the Raft membership as
/// learners. Errors are logged and retried on the next round.
async fn steward(
    raft: Raft<MetaTypes>,
    applied: Arc<RwLock<Applied>>,
    initial: Layout,
    members: Vec<String>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow().clone();
        // A new leader's state is current once the blank entry of its own
        // term is applied: before that, "no version yet" may be stale.
        let caught_up = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
        if m.state != ServerState::Leader || !caught_up {
            continue;
        }
        let (agreed, known): (bool, BTreeSet<u64>) = {
            let a = applied.read().unwrap_or_else(|e| e.into_inner());
            let known = a
                .membership
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            (a.state.history.is_some(), known)
        };
        if !agreed {
            let command = MetaCommand::Propose {
                layout: initial.to_record(),
                force: false,
            };
            match tokio::time::timeout(every * 10, raft.client_write(command)).await {
                Ok(Ok(r)) => match r.data {
                    MetaReply::Refused(why) => log::info!("metadata: the first layout: {why}"),
                    _ => log::info!("metadata: layout version {} agreed", initial.version()),
                },
                Ok(Err(e)) => log::warn!("metadata: proposing the first layout: {e}"),
                Err(_) => log::warn!("metadata: proposing the first layout timed out"),
            }
        }
        for id in &members {
            if known.contains(&raft_id(id)) {
                continue;
            }
            let node = MetaNode { id: id.clone() };
            let add = raft.add_learner(raft_id(id), node, false);
            match tokio::time::timeout(every * 10, add).await {
                Ok(Ok(_)) => log::info!("metadata: {id} added as a learner"),
                Ok(Err(e)) => log::warn!("metadata: adding learner {id}: {e}"),
                Err(_) => log::warn!("metadata: adding learner {id} timed out"),
            }
        }
    }
}
