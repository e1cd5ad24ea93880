//! Hostile peers on the peer port: a process holding a member's certificate
//! (a compromised member; or, without peer TLS, anyone who knows the cluster
//! name) cannot make a node ignore a member, grow its member table, feed it
//! clock samples, or exhaust its sessions — nor, answering as a replica,
//! push the clock of a node that reads from it beyond the drift.

use crate::fake_member::FakeMember;
use crate::faults::{repair, status_of, wait_converged, SLOW};
use crate::harness::{kv, kv_at, metric, Cluster, ClusterSpec, Poll};
use crate::peer_conn::PeerConn;
use ringkv_actors::version::{node_tag, pack, Version};
use ringkv_actors::wire::{
    encode_frame, ErrorCode, Frame, FrameCodec, Hello, MemberState, Received, Request, Response,
    WireRecord, PROTOCOL_VERSION,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::codec::Decoder;

/// A raw peer connection to node `target` that said hello as `id` (with
/// `id`'s certificate when the cluster's peers use TLS).
pub struct Raw {
    s: PeerConn,
    buf: bytes::BytesMut,
    codec: FrameCodec,
}

impl Raw {
    pub fn connect(c: &Cluster, target: usize, id: &str) -> Raw {
        Raw::try_connect(c, target, id).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like [`Raw::connect`], answering why the node turned us away.
    pub fn try_connect(c: &Cluster, target: usize, id: &str) -> Result<Raw, String> {
        let mut raw = Raw::over(PeerConn::connect(c, target, id));
        raw.send(&Frame::Hello(hello(id)))
            .map_err(|e| format!("no hello back: {e}"))?;
        match raw.next() {
            Some(Frame::Hello(_)) => Ok(raw),
            other => Err(format!("no hello back: {other:?}")),
        }
    }

    /// Frames over `s`, whichever side opened it.
    pub fn over(s: PeerConn) -> Raw {
        Raw {
            s,
            buf: bytes::BytesMut::new(),
            codec: FrameCodec::new(16 << 20),
        }
    }

    pub fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.s.write_all(&encode_frame(frame, 16 << 20).unwrap())
    }

    /// The next frame; `None` once the connection closed, broke or stayed
    /// silent past its read timeout.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(Received { frame, .. }) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn call(&mut self, id: u64, body: Request) -> Response {
        self.send(&Frame::Request { id, body }).unwrap();
        match self.next() {
            Some(Frame::Response { id: got, body }) if got == id => body,
            other => panic!("no response to {id}: {other:?}"),
        }
    }
}

/// The hello member `id` of the harness's cluster says.
pub fn hello(id: &str) -> Hello {
    Hello {
        cluster: "itest".into(),
        protocol: PROTOCOL_VERSION,
        node_id: id.into(),
        layout: 0,
    }
}

pub fn entry(id: &str, generation: u64, heartbeat: u64, wall_ms: u64) -> MemberState {
    MemberState {
        id: id.into(),
        http_addr: "6.6.6.6:1".into(),
        peer_addr: "6.6.6.6:2".into(),
        generation,
        heartbeat,
        wall_ms,
        ring_epoch: 0,
        hints_floor: 0,
        hlc_ts: 0,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Regression (05 finding 8): gossip for n2 with `generation = u64::MAX`
/// made every node ignore n2 forever; fake members could be injected until
/// a gossip frame overflowed; fake clock samples made a healthy node refuse
/// writes as "ahead". All of it over one connection that says it is n2.
#[test]
fn forged_gossip_changes_nothing_that_matters() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let generation = wait_converged(&c, 0, 1);
    let mut raw = Raw::connect(&c, 0, "n2");
    let mut members = vec![
        entry("n2", u64::MAX, 1, now_ms() + 3_600_000),
        entry("n3", 1, u64::MAX, now_ms() + 3_600_000),
        entry("n1", u64::MAX, u64::MAX, 0),
    ];
    members.extend((0..500).map(|i| entry(&format!("fake-{i}"), 1, 1, 0)));
    for id in 1..=20 {
        match raw.call(
            id,
            Request::Gossip {
                members: members.clone(),
            },
        ) {
            Response::Gossip { members } => {
                assert!(
                    members.len() == 1 && members[0].id == "n1",
                    "the answer carries {members:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(metric(&c, 0, "gossip_refused") >= 20 * 503);
    let status = c.cluster_status(0);
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["clock"]["ahead_of_cluster"], false, "{status}");
    assert_eq!(status["clock"]["cluster_offset_ms"], 0, "{status}");
    // n2 keeps being seen at its real generation, and up.
    std::thread::sleep(Duration::from_secs(3));
    let n2 = status_of(&c, 0, "n2");
    assert_eq!(n2["generation"], generation, "{n2}");
    assert_eq!(n2["status"], "up", "{n2}");
    let r = c
        .node(0)
        .client()
        .put(&kv_at("after-forgery", Some("all")), b"x");
    assert_eq!(r.status, 201, "{r}");
}

/// A hint for a target that is not another member is refused (it would sit
/// unreplayable forever), and nothing is stored.
#[test]
fn hints_for_strangers_are_refused() {
    let mut c = Cluster::start(ClusterSpec::fast(2, 2));
    c.wait_replicas_reachable();
    let mut raw = Raw::connect(&c, 0, "n2");
    for (id, target) in [(1, "stranger"), (2, "n1"), (3, "n2\0x")] {
        let r = raw.call(
            id,
            Request::StoreHint {
                target: target.into(),
                key: bytes::Bytes::from_static(b"k"),
                record: ringkv_actors::wire::WireRecord {
                    ts: 1 << 20,
                    node: 1,
                    value: Some(bytes::Bytes::from_static(b"v")),
                },
            },
        );
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ringkv_actors::wire::ErrorCode::Invalid,
                    ..
                }
            ),
            "{target:?}: {r:?}"
        );
    }
    assert_eq!(c.cluster_status(0)["hints"]["pending"], 0);
}

/// More connections than the session cap are closed at once; the real peers
/// keep working.
#[test]
fn a_connection_flood_is_capped() {
    let mut c = Cluster::start(ClusterSpec::fast(2, 2));
    c.wait_replicas_reachable();
    let addr = c.node(0).peer_addr;
    // Idle connections that never say hello, far beyond the cap.
    let conns: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(conns.len() > 64);
    let r = c
        .node(0)
        .client()
        .put(&kv_at("during-flood", Some("all")), b"x");
    assert_eq!(r.status, 201, "{r}");
    let log = c.wait_until(SLOW, "the flood is refused", || {
        let log = c.node(0).log();
        if log.contains("too many hellos in progress") {
            Poll::Ready(log)
        } else {
            Poll::Pending(String::new())
        }
    });
    let warnings = log
        .lines()
        .filter(|l| l.contains("refused a peer connection"))
        .count();
    assert!(warnings < 150, "{warnings} warnings for one flood");
    // The hello timeout frees the slots the flood held: a member can say
    // hello again while the flood's sockets are still open.
    std::thread::sleep(Duration::from_secs(3));
    let _member = Raw::connect(&c, 0, "n2");
    drop(conns);
    let r = c
        .node(1)
        .client()
        .put(&kv_at("after-flood", Some("all")), b"y");
    assert_eq!(r.status, 201, "{r}");
}

/// Security review (h15): a conditional write reads at quorum and issues
/// above the version it read. A replica (here a fake member with n2's real
/// certificate) answering a version 9 s ahead — between one and two drifts
/// (5 s), which reads answer — made n1 store that version + 1 into its
/// clock before refusing the write, so every later write n1 coordinated
/// was refused too, for up to a drift (and each further compare-and-set
/// renewed it).
#[test]
fn a_replica_reading_from_the_future_cannot_stall_a_coordinators_writes() {
    let mut c = Cluster::create(ClusterSpec::fast(2, 2));
    let key = "cas-from-the-future";
    let ahead = Version::new(pack(now_ms() + 9_000, 0), node_tag("n2"));
    let _n2 = FakeMember::start(&c, 1, move |r| match r {
        Request::Read { key: k } if k.as_ref() == key.as_bytes() => Some(Response::Read {
            record: Some(WireRecord {
                ts: ahead.ts,
                node: ahead.node,
                value: Some(bytes::Bytes::from_static(b"planted")),
            }),
        }),
        _ => None,
    });
    c.node_mut(0).spawn();
    c.node_mut(0).wait_healthy().expect("n1 starts");
    c.wait_replicas_reachable();
    let n1 = c.node(0).client();
    let etag = format!("\"{}\"", ahead.etag());
    let r = n1.put_with(&kv(key), &[("If-Match", &etag)], b"cas");
    let body = r.expect_error(503, "clock_skew");
    assert_eq!(body["outcome"], "not_applied", "{r}");
    // Right after, n1 still coordinates writes: its clock kept nothing of
    // the refused version.
    let r = n1.put(&kv("after-the-refusal"), b"x");
    assert_eq!(r.status, 201, "{r}");
    let stamped = Version::parse_etag(r.etag().trim_matches('"')).expect("etag");
    assert!(
        stamped < ahead,
        "{stamped:?} issued above the refused floor"
    );
}

/// Security review (h15): a member could plant on an honest node a hint
/// addressed to itself, with an ancient version, and refuse its replay:
/// that pinned the node's hint floor, and with it tombstone GC everywhere.
#[test]
fn a_hint_addressed_to_its_sender_is_refused() {
    let mut c = Cluster::start(ClusterSpec::fast(2, 2));
    c.wait_replicas_reachable();
    let refused = metric(&c, 0, "peer_requests_refused");
    let mut raw = Raw::connect(&c, 0, "n2");
    let r = raw.call(
        1,
        Request::StoreHint {
            target: "n2".into(),
            key: bytes::Bytes::from_static(b"pinned"),
            record: WireRecord {
                ts: pack(1_000, 0),
                node: node_tag("n2"),
                value: Some(bytes::Bytes::from_static(b"v")),
            },
        },
    );
    assert!(
        matches!(
            r,
            Response::Error {
                code: ringkv_actors::wire::ErrorCode::Invalid,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(metric(&c, 0, "peer_requests_refused"), refused + 1);
    let status = c.cluster_status(0);
    assert_eq!(status["hints"]["pending"], 0, "{status}");
    let n1 = &status["members"][0];
    assert_eq!(n1["id"], "n1");
    assert_eq!(n1["hint_floor_ms"], Value::Null, "n1 holds no hint: {n1}");
}

/// What remains (see the threat model): a member can still hold GC back by
/// gossiping a low hint floor of its own. The operator sees which member
/// it is in `GET /v1/cluster` (`members[].hint_floor_ms`).
#[test]
fn the_member_holding_tombstone_gc_back_shows_in_the_cluster_status() {
    let mut c = Cluster::create(ClusterSpec::fast(2, 2));
    c.node_mut(0).spawn();
    c.node_mut(0).wait_healthy().expect("n1 starts");
    let floor_of = |c: &Cluster, id: &str| {
        let s = c.cluster_status(0);
        let m = s["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no {id} in {s}"));
        m["hint_floor_ms"].clone()
    };
    assert_eq!(floor_of(&c, "n2"), 0, "never heard from: GC counts 0");
    assert_eq!(floor_of(&c, "n1"), Value::Null, "n1 holds no hints");
    // n2 (the test, with n2's certificate) says it holds a hint from 1970.
    let mut raw = Raw::connect(&c, 0, "n2");
    let mut me = entry("n2", now_ms(), 1, now_ms());
    me.hints_floor = pack(1_000, 0);
    match raw.call(1, Request::Gossip { members: vec![me] }) {
        Response::Gossip { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(floor_of(&c, "n2"), 1_000);
}

/// Security review (h15): a member opening fresh anti-entropy session ids
/// made a node build Merkle trees (scans) back to back. Since issue 16 no
/// tree is built for an exchange — answers come from the trees the store
/// keeps current — so a flood of questions costs each what it asks: 500
/// of them (roots of every partition, then descents) are all answered, at
/// once, and legitimate repairs complete alongside.
#[test]
fn a_flood_of_repair_questions_builds_nothing_and_repairs_still_complete() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    for i in 0..50 {
        let r = c
            .node(i % 3)
            .client()
            .put(&kv_at(&format!("f-{i}"), Some("all")), b"v");
        assert_eq!(r.status, 201, "{r}");
    }
    let layout = c.cluster_status(0)["layout"].clone();
    let fingerprint = layout["fingerprint"].as_u64().unwrap();
    let q = layout["partitions"].as_u64().unwrap() as u32;
    let mut raw = Raw::connect(&c, 0, "n2");
    let started = Instant::now();
    for i in 0..500u64 {
        let ask = if i % 2 == 0 {
            Request::PartitionRoots {
                layout: fingerprint,
                depth: ringkv_actors::storage::trees::DEFAULT_TREE_DEPTH,
                partitions: (0..q).collect(),
            }
        } else {
            Request::TreeHashes {
                partition: (i as u32) % q,
                layout: fingerprint,
                depth: ringkv_actors::storage::trees::DEFAULT_TREE_DEPTH,
                level: 7,
                indices: (0..128).collect(),
            }
        };
        match raw.call(i + 1, ask) {
            Response::Hashes { hashes } => assert!(!hashes.is_empty()),
            other => panic!("question {i}: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    for i in [2, 0, 1] {
        let s = repair(&c, i);
        assert_eq!(s["peers_failed"], serde_json::json!([]), "n{}: {s}", i + 1);
        assert_eq!(s["partitions_differing"], 0, "n{}: {s}", i + 1);
        // The live trees answered are the data's.
        let v = c
            .node(i)
            .client()
            .get("/v1/admin/merkle?verify=true")
            .json();
        assert_eq!(v["mismatched_partitions"], serde_json::json!([]), "{v}");
    }
}

/// Sweep M6: a member that is up but refuses every hint replayed to it
/// (here a fake n3 with its real certificate) kept its hints pending on
/// the honest nodes forever, and with them their hint floor and tombstone
/// GC. Now a hint refused for longer than `hints.max_age_ms` goes to
/// another live replica of its key and is deleted.
#[test]
fn hints_a_target_keeps_refusing_are_rescued_after_max_age() {
    hints_of_a_bad_target_are_rescued(|items| Response::Batch {
        applied: 0,
        refused: (0..items as u32).collect(),
    });
}

/// Review of the sweep: the same for a target up in gossip that answers
/// every batch with an error (disk full, overloaded, or lying): the failed
/// replay ended the pass before any rescue.
#[test]
fn hints_a_target_keeps_failing_are_rescued_after_max_age() {
    hints_of_a_bad_target_are_rescued(|_| Response::Error {
        code: ErrorCode::Overloaded,
        message: "busy".into(),
    });
}

/// n3 (a fake member up in gossip) answers every hint batch with `answer`
/// (given the batch's item count); n1's hint for it must still end up on
/// another replica and be deleted.
fn hints_of_a_bad_target_are_rescued(answer: fn(usize) -> Response) {
    let spec = ClusterSpec::fast(3, 3).section_toml("hints", "max_age_ms = 1500");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(2).kill9();
    let r = c
        .node(0)
        .client()
        .put(&kv_at("refused-hint", Some("quorum")), b"v");
    assert_eq!(r.status, 201, "{r}");
    c.wait_until(SLOW, "a hint for n3 is stored", || {
        let p: u64 = crate::faults::pending_hints(&c, &[0, 1], "n3").iter().sum();
        if p > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending(p.to_string())
        }
    });
    let replays = Arc::new(AtomicU64::new(0));
    let seen = replays.clone();
    let _n3 = FakeMember::start(&c, 2, move |r| match r {
        Request::WriteBatch { items } => {
            seen.fetch_add(1, Ordering::Relaxed);
            Some(answer(items.len()))
        }
        _ => None,
    });
    crate::faults::wait_hints_drained(&c, &[0, 1], "n3");
    assert!(replays.load(Ordering::Relaxed) > 0, "n3 was never asked");
    assert_eq!(status_of(&c, 0, "n3")["status"], "up", "drained as down");
    let rescued: u64 = (0..2)
        .map(|i| {
            c.cluster_status(i)["hints"]["rescued"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(rescued > 0, "the hints drained without a rescue");
    for i in 0..2 {
        let r = c.node(i).client().get(&kv_at("refused-hint", Some("one")));
        assert_eq!(r.status, 200, "n{}: {r}", i + 1);
        assert_eq!(r.body, b"v");
    }
}
