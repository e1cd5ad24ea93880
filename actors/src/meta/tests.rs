//! Metadata consensus in one process: three (or more) services whose
//! consensus messages go through an in-memory transport that tests can cut,
//! each over its own `meta.redb`.

use super::*;
use crate::layout::history::Tracker;
use crate::layout::{Layout, Member};
use crate::peer::{PeerError, Peers, Transport, TransportCall};
use crate::wire::{Request, Response};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routes `Request::Meta` to the named service, unless a side is cut.
#[derive(Default)]
struct Net {
    services: Mutex<BTreeMap<String, MetaService>>,
    down: Mutex<BTreeSet<String>>,
}

/// One node's side of the network: calls come from `from`.
struct Side {
    from: String,
    net: Arc<Net>,
}

impl Net {
    fn cut(&self, node: &str) {
        self.down.lock().unwrap().insert(node.to_string());
    }

    fn heal(&self, node: &str) {
        self.down.lock().unwrap().remove(node);
    }

    fn route(&self, from: &str, to: &str) -> Option<MetaService> {
        let down = self.down.lock().unwrap();
        if down.contains(from) || down.contains(to) {
            return None;
        }
        self.services.lock().unwrap().get(to).cloned()
    }
}

impl Transport for Side {
    fn call(&self, node: &str, request: Request, timeout: Duration) -> TransportCall {
        let target = self.net.route(&self.from, node);
        let peer = node.to_string();
        let from = self.from.clone();
        Box::pin(async move {
            let Some(svc) = target else {
                return Err(PeerError::NotConnected { peer });
            };
            let Request::Meta {
                rpc,
                cluster,
                payload,
            } = request
            else {
                return Err(PeerError::Unknown { peer });
            };
            match tokio::time::timeout(timeout, svc.handle(&from, rpc, cluster, &payload)).await {
                Ok(r @ Response::Meta { .. }) => Ok(r),
                Ok(other) => Err(PeerError::Unexpected {
                    peer: format!("{peer}: {other:?}"),
                    request: "meta",
                }),
                Err(_) => Err(PeerError::Timeout {
                    peer,
                    after_ms: timeout.as_millis() as u64,
                    sent: true,
                }),
            }
        })
    }

    fn reachable(&self, node: &str) -> bool {
        self.net.route(&self.from, node).is_some()
    }
}

struct Cluster {
    net: Arc<Net>,
    ids: Vec<String>,
    dirs: BTreeMap<String, tempfile::TempDir>,
    initial: Layout,
}

fn fast(dir: std::path::PathBuf) -> MetaConfig {
    MetaConfig {
        heartbeat: Duration::from_millis(50),
        propose_timeout: Duration::from_secs(3),
        steward_interval: Duration::from_millis(100),
        ..MetaConfig::new(dir)
    }
}

impl Cluster {
    async fn start(ids: &[&str]) -> Cluster {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let initial = Layout::initial(ids.iter().map(Member::new), 3, 4);
        let mut c = Cluster {
            net: Arc::default(),
            dirs: ids
                .iter()
                .map(|id| (id.clone(), tempfile::tempdir().unwrap()))
                .collect(),
            ids,
            initial,
        };
        for id in c.ids.clone() {
            c.boot(&id).await;
        }
        c
    }

    async fn boot(&mut self, id: &str) {
        let others = self.ids.iter().filter(|o| *o != id).cloned().collect();
        let side = Side {
            from: id.to_string(),
            net: self.net.clone(),
        };
        let peers = Peers::over(others, Arc::new(side));
        let dir = self.dirs[id].path().to_path_buf();
        // A stopped service's tasks let go of its file a moment after
        // shutdown returns (a process restart has no such wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        let svc = loop {
            let started = MetaService::start(
                id,
                &self.ids,
                peers.clone(),
                self.initial.clone(),
                fast(dir.clone()),
            )
            .await;
            match started {
                Ok(svc) => break svc,
                Err(e) if e.contains("already open") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("metadata consensus starts: {e}"),
            }
        };
        self.net
            .services
            .lock()
            .unwrap()
            .insert(id.to_string(), svc);
    }

    fn svc(&self, id: &str) -> MetaService {
        self.net.services.lock().unwrap()[id].clone()
    }

    async fn stop(&self, id: &str) {
        let svc = self.net.services.lock().unwrap().remove(id).unwrap();
        svc.shutdown().await;
    }

    /// Waits until every running node holds the same live versions as
    /// `versions` fingerprints; panics after 20 s.
    async fn agreed(&self, versions: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen: Vec<Vec<String>> = self
                .net
                .services
                .lock()
                .unwrap()
                .values()
                .map(|s| {
                    s.status()
                        .versions
                        .iter()
                        .map(|v| format!("{}:{}", v.version, v.fingerprint))
                        .collect()
                })
                .collect();
            if seen.iter().all(|v| v.len() == versions && *v == seen[0]) {
                return seen[0].clone();
            }
            assert!(Instant::now() < deadline, "no agreement: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn leader(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leaders: BTreeSet<String> = self
                .net
                .services
                .lock()
                .unwrap()
                .values()
                .filter(|s| s.status().role == "leader")
                .map(|s| s.status().node)
                .collect();
            if leaders.len() == 1 {
                return leaders.into_iter().next().unwrap();
            }
            assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn grow(from: &Layout, with: &str) -> MetaCommand {
    let mut members: Vec<Member> = from.member_weights().to_vec();
    members.push(Member::new(with));
    MetaCommand::Propose {
        layout: from.next(members).to_record(),
        force: false,
    }
}

/// Every member learns the same first version: the configured layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_learns_the_same_first_version() {
    let c = Cluster::start(&["a", "b", "c"]).await;
    let v = c.agreed(1).await;
    assert_eq!(
        v,
        vec![format!("1:{:016x}", c.initial.fingerprint())],
        "version 1 is the configured layout"
    );
    let s = c.svc("a").status();
    assert_eq!(s.voters, vec!["a", "b", "c"]);
    assert_eq!(s.read_version, Some(1));
    use std::os::unix::fs::PermissionsExt;
    let file = c.dirs["a"].path().join(log_store::META_FILE);
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the consensus log is private like the data");
}

/// Invariant 1: two operators' concurrent changes of the same version,
/// through two different nodes, never fork the history — one is applied,
/// the other refused, and every node holds the same versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_through_two_nodes_never_fork() {
    let c = Cluster::start(&["a", "b", "c"]).await;
    c.agreed(1).await;
    let leader = c.leader().await;
    let follower = c.ids.iter().find(|i| **i != leader).unwrap().clone();
    let (x, y) = (c.svc(&leader), c.svc(&follower));
    let base = x.history().unwrap().current().clone();
    let (rx, ry) = tokio::join!(x.propose(grow(&base, "d")), y.propose(grow(&base, "e")));
    let ok = [&rx, &ry].iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 1,
        "exactly one change of version 1 applies: {rx:?} {ry:?}"
    );
    let refused = [&rx, &ry].into_iter().find(|r| r.is_err()).unwrap();
    assert!(
        matches!(refused, Err(MetaError::Refused(why)) if why.contains("not the next")),
        "{refused:?}"
    );
    let versions = c.agreed(2).await;
    let winner = if rx.is_ok() { "d" } else { "e" };
    let h = c.svc("c").history().unwrap();
    assert!(h.current().contains(winner), "{versions:?}");
    assert!(!h.current().contains(if winner == "d" { "e" } else { "d" }));
}

/// A restarted node keeps what was agreed (log and snapshot in redb), and
/// a node that missed many entries while cut off catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_restarts_and_a_lagging_node_catches_up() {
    let mut c = Cluster::start(&["a", "b", "c"]).await;
    c.agreed(1).await;
    let leader = c.leader().await;
    let lagging = c.ids.iter().find(|i| **i != leader).unwrap().clone();
    c.net.cut(&lagging);
    let base = c.svc(&leader).history().unwrap().current().clone();
    c.svc(&leader).propose(grow(&base, "d")).await.unwrap();
    // Enough entries for a snapshot and a purge of the log before them.
    for round in 0..80u64 {
        let node = ["a", "b", "c", "d"][round as usize % 4].to_string();
        let cmd = MetaCommand::Report {
            node,
            tracker: Tracker::Ack,
            version: 2,
        };
        c.svc(&leader).propose(cmd).await.unwrap();
    }
    let behind = c.svc(&lagging).status().last_applied.unwrap();
    // Snapshots are built in the background: wait for the purge.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.svc(&leader).status().purged.is_none_or(|p| p <= behind) {
        assert!(
            Instant::now() < deadline,
            "the leader dropped no entries the lagging node lacks ({:?} vs {behind})",
            c.svc(&leader).status().purged
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.net.heal(&lagging);
    let versions = c.agreed(2).await;
    // The snapshot metric may trail the installed state by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .svc(&lagging)
        .status()
        .snapshot
        .is_none_or(|s| s <= behind)
    {
        assert!(Instant::now() < deadline, "caught up by a snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every node restarts from its own files and holds the same history.
    for id in c.ids.clone() {
        c.stop(&id).await;
        c.boot(&id).await;
        let h = c.svc(&id).history().expect("history kept across a restart");
        assert_eq!(h.live().len(), 2, "{id}");
    }
    assert_eq!(c.agreed(2).await, versions);
    assert_eq!(
        c.svc(&lagging).status().progress,
        c.svc(&leader).status().progress
    );
}

/// Losing a majority of voters blocks changes (never acknowledged), and the
/// agreed history stays readable on the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_change_the_layout() {
    let c = Cluster::start(&["a", "b", "c"]).await;
    c.agreed(1).await;
    c.net.cut("b");
    c.net.cut("c");
    let a = c.svc("a");
    let base = a.history().unwrap().current().clone();
    let r = a.propose(grow(&base, "d")).await;
    assert!(
        matches!(r, Err(MetaError::NoLeader(_) | MetaError::Indeterminate(_))),
        "{r:?}"
    );
    assert_eq!(a.history().unwrap().live().len(), 1);
    c.net.heal("b");
    c.net.heal("c");
    // The indeterminate proposal may still commit once the majority is
    // back; either way every node ends with the same history.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = a.history().unwrap().live().len();
    c.agreed(n).await;
}

/// Malformed or oversized consensus messages are refused with a clear
/// error, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_consensus_messages_are_refused() {
    let c = Cluster::start(&["a", "b", "c"]).await;
    c.agreed(1).await;
    let a = c.svc("a");
    for rpc in [
        crate::wire::MetaRpc::AppendEntries,
        crate::wire::MetaRpc::Vote,
        crate::wire::MetaRpc::InstallSnapshot,
        crate::wire::MetaRpc::Propose,
    ] {
        let r = a.handle("b", rpc, a.cluster(), b"\xc1 not msgpack").await;
        assert!(
            matches!(
                &r,
                Response::Error {
                    code: crate::wire::ErrorCode::Invalid,
                    ..
                }
            ),
            "{rpc:?}: {r:?}"
        );
    }
    assert_eq!(c.agreed(1).await.len(), 1);
}

/// Two members whose names hash to the same Raft id cannot both be
/// configured (checked by the loader with this function).
#[test]
fn raft_ids_differ_for_different_names() {
    let ids: BTreeSet<u64> = (0..10_000).map(|i| raft_id(&format!("n{i}"))).collect();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(raft_id("a"), raft_id("a"));
}

/// The voters are the first five members by id, whatever the order given.
#[test]
fn voters_are_the_first_five_by_id() {
    let members: Vec<String> = ["g", "b", "f", "a", "e", "c", "d"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v: Vec<String> = service::voters(&members).into_iter().collect();
    assert_eq!(v, vec!["a", "b", "c", "d", "e"]);
}

/// Fuzzes the consensus decoders of a running node: random bytes, and valid
/// messages with bytes flipped, cut or grown, for each RPC. Nothing panics,
/// every answer is a consensus answer or a typed error, and the node still
/// agrees with the others afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_decoders_survive_random_and_mutated_messages() {
    use crate::wire::{ErrorCode, MetaRpc};
    let c = Cluster::start(&["a", "b", "c"]).await;
    let before = c.agreed(1).await;
    let a = c.svc("a");
    // Valid messages to mutate: a vote and an append of the real term.
    let term = a.status().term;
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term, raft_id("z")), None);
    let seeds = [
        (MetaRpc::Vote, crate::wire::encode_value(&vote).unwrap()),
        (
            MetaRpc::Propose,
            crate::wire::encode_value(&grow(&c.initial, "q")).unwrap(),
        ),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let rpcs = [
        MetaRpc::AppendEntries,
        MetaRpc::Vote,
        MetaRpc::InstallSnapshot,
        MetaRpc::Propose,
    ];
    for round in 0..600 {
        let (rpc, bytes) = if round % 2 == 0 {
            let len = (next() % 200) as usize;
            let rpc = rpcs[(next() % 4) as usize];
            (rpc, (0..len).map(|_| next() as u8).collect::<Vec<u8>>())
        } else {
            let (rpc, seed) = &seeds[(next() % 2) as usize];
            let mut b = seed.clone();
            match next() % 3 {
                0 if !b.is_empty() => {
                    let i = (next() as usize) % b.len();
                    b[i] ^= 1 << (next() % 8);
                }
                1 => b.truncate((next() as usize) % (b.len() + 1)),
                _ => b.extend((0..(next() % 16)).map(|_| next() as u8)),
            }
            (*rpc, b)
        };
        match a.handle("b", rpc, a.cluster(), &bytes).await {
            Response::Meta { .. } => {}
            Response::Error {
                code: ErrorCode::Invalid | ErrorCode::Internal,
                ..
            } => {}
            other => panic!("{rpc:?}: unexpected answer {other:?}"),
        }
    }
    // The history may have grown by fuzzed proposals that were valid
    // layouts; it never forked, and consensus still works.
    let after = c.agreed(a.history().unwrap().live().len()).await;
    assert_eq!(after[0], before[0]);
    still_working(&c).await;
}

/// Every node's consensus core runs and a change still commits through
/// each of them.
async fn still_working(c: &Cluster) {
    for id in &c.ids {
        let s = c.svc(id);
        let st = s.status();
        assert!(st.role != "shutdown" && st.error.is_none(), "{id}: {st:?}");
        let report = MetaCommand::Report {
            node: id.clone(),
            tracker: Tracker::Ack,
            version: 1,
        };
        let r = s.propose(report).await;
        assert!(r.is_ok(), "{id}: a change after the attack: {r:?}");
    }
}

/// The review's attacks, one frame each: a vote or an append with a term
/// near u64::MAX (openraft would overflow `term + 1` at its next election
/// and stop for good, on every node once the vote spread), a vote claimed
/// for another node, gapped entries, a snapshot whose last chunk is junk
/// (a failing install would stop the core), out-of-order chunks, and a
/// message from a node configured for another cluster. Each is refused,
/// and consensus goes on everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_consensus_messages_are_refused_and_consensus_goes_on() {
    use crate::wire::{encode_value, ErrorCode, MetaRpc};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, Vote};
    let c = Cluster::start(&["a", "b", "c"]).await;
    c.agreed(1).await;
    let a = c.svc("a");
    let b = raft_id("b");
    let heartbeat = |term: u64, node: u64| AppendEntriesRequest::<MetaTypes> {
        vote: Vote::new_committed(term, node),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let refused = |r: &Response| matches!(r, Response::Error { code: ErrorCode::Invalid, message } if message.contains("refused") || message.contains("another cluster"));
    let term = a.status().term;
    let cases: Vec<(&str, MetaRpc, Vec<u8>)> = vec![
        (
            "append at term u64::MAX",
            MetaRpc::AppendEntries,
            encode_value(&heartbeat(u64::MAX, b)).unwrap(),
        ),
        (
            "append for another node",
            MetaRpc::AppendEntries,
            encode_value(&heartbeat(term + 1, raft_id("c"))).unwrap(),
        ),
        (
            "gapped entries",
            MetaRpc::AppendEntries,
            encode_value(&AppendEntriesRequest::<MetaTypes> {
                entries: vec![
                    openraft::Entry {
                        log_id: LogId::new(CommittedLeaderId::new(term + 1, b), 0),
                        payload: openraft::EntryPayload::Blank,
                    },
                    openraft::Entry {
                        log_id: LogId::new(CommittedLeaderId::new(term + 1, b), 1 << 40),
                        payload: openraft::EntryPayload::Blank,
                    },
                ],
                ..heartbeat(term + 1, b)
            })
            .unwrap(),
        ),
        (
            "a progress report for another node, sent on by b",
            MetaRpc::Propose,
            encode_value(&MetaCommand::Report {
                node: "c".into(),
                tracker: Tracker::Ack,
                version: 1,
            })
            .unwrap(),
        ),
        (
            "vote at term u64::MAX",
            MetaRpc::Vote,
            encode_value(&VoteRequest::new(Vote::new(u64::MAX, b), None)).unwrap(),
        ),
    ];
    for (what, rpc, bytes) in cases {
        let r = a.handle("b", rpc, a.cluster(), &bytes).await;
        assert!(refused(&r), "{what}: {r:?}");
    }
    let r = a
        .handle(
            "b",
            MetaRpc::Vote,
            a.cluster() ^ 1,
            &encode_value(&VoteRequest::new(Vote::new(term, b), None)).unwrap(),
        )
        .await;
    assert!(refused(&r), "another cluster: {r:?}");
    // A snapshot from b claiming a newer term (so it is not just answered
    // with our vote): junk data in its last chunk, then a chunk out of
    // order.
    let vote = Vote::new_committed(term + 1, b);
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(term, b), 3)),
        last_membership: Default::default(),
        snapshot_id: "forged".into(),
    };
    let chunk = |offset: u64, data: &[u8], done: bool| InstallSnapshotRequest::<MetaTypes> {
        vote,
        meta: meta.clone(),
        offset,
        data: data.to_vec(),
        done,
    };
    let r = a
        .handle(
            "b",
            MetaRpc::InstallSnapshot,
            a.cluster(),
            &encode_value(&chunk(0, b"junk", true)).unwrap(),
        )
        .await;
    assert!(refused(&r), "junk snapshot: {r:?}");
    let r = a
        .handle(
            "b",
            MetaRpc::InstallSnapshot,
            a.cluster(),
            &encode_value(&chunk(7, b"late", false)).unwrap(),
        )
        .await;
    assert!(refused(&r), "out-of-order chunk: {r:?}");
    c.agreed(1).await;
    still_working(&c).await;
}
