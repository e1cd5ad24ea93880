//! Faults: skewed clocks — lagging, stepped, runaway — and what a node
//! whose clock is not measured may do.

use super::*;

#[test]
fn lagging_clock_cannot_write_into_the_past() {
    let spec = ClusterSpec::fast(3, 3).clock_offset(1, -60_000);
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    // One gossip exchange tells n2 that its clock lags the cluster's; from
    // then on it checks versions against the cluster's time.
    c.wait_until(SLOW, "n2 knows its clock lags the cluster", || {
        let s = c.cluster_status(1);
        match s["clock"]["cluster_offset_ms"].as_i64() {
            Some(o) if o > 50_000 => Poll::Ready(()),
            _ => Poll::Pending(s["clock"].to_string()),
        }
    });
    let n3 = c.node(2).client();
    let mut last: Option<u64> = None;
    for (round, via) in [0, 1, 0, 1].into_iter().enumerate() {
        let value = format!("round-{round}-via-n{}", via + 1);
        let r = c
            .node(via)
            .client()
            .put(&kv_at("skewed", Some("quorum")), value.as_bytes());
        assert!(r.status == 201 || r.status == 204, "{value}: {r}");
        let etag = r.etag();
        let ts = u64::from_str_radix(unquoted(&etag).split('-').next().unwrap_or(""), 16)
            .unwrap_or_else(|e| panic!("ETag {etag}: {e}"));
        assert!(
            last.is_none_or(|l| ts > l),
            "{value}: version {ts:x} is not above the one it replaced ({last:x?})"
        );
        last = Some(ts);
        let r = n3.get(&kv_at("skewed", Some("quorum")));
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.text(), value, "an acknowledged overwrite was lost: {r}");
        assert_eq!(r.etag(), etag);
    }
}

/// Chaos suite finding (clock-behind run, seed 546984687): a node whose clock
/// lags 60 s was killed and restarted, and before gossip had measured its
/// clock again it coordinated reads. Every replica's version looked 60 s
/// ahead of its clock; it dropped them as a runaway clock's and answered 404
/// for a key that held acknowledged values. Until its clock is measured such
/// a version is no answer (503), never an absence. Here n1 and n2 are gone,
/// so n3 cannot be measured and its own replica is the only one it reads.
#[test]
fn a_lagging_node_just_restarted_never_reads_a_written_key_as_absent() {
    let spec = ClusterSpec::fast(3, 3).clock_offset(2, -60_000);
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.wait_clocks_vouched();
    let r = c
        .node(0)
        .client()
        .put(&kv_at("lagged", Some("all")), b"acknowledged");
    assert_eq!(r.status, 201, "{r}");
    assert!(c.node(2).local("lagged").is_some(), "n3 lacks the value");
    c.node_mut(0).kill9();
    c.node_mut(1).kill9();
    c.node_mut(2).restart();
    let r = c.node(2).client().get(&kv_at("lagged", Some("one")));
    assert_ne!(r.status, 404, "an acknowledged value read as absent: {r}");
    r.expect_status(503);
    assert!(r.text().contains("clock"), "{r}");
}

/// Review of the clock-behind chaos fix: a node decides at start whether it
/// was down longer than the tombstone grace by comparing its wall clock with
/// the last time it recorded being alive. Recorded while its clock ran 10 s
/// ahead, after 5 s down (grace 3 s) with the clock back to normal the gap
/// read as 0 and it served reads at once, deletes purged meanwhile possibly
/// missed. A clock now before that record means "down for an unknown time".
#[test]
fn a_node_whose_clock_went_back_while_down_waits_for_repair() {
    let spec = ClusterSpec::fast(3, 3)
        .with_fault_files()
        .section_toml("repair", "tombstone_grace_ms = 3000");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node(2).set_faults("clock_offset_ms = 10000\n");
    // It records being alive every second.
    std::thread::sleep(Duration::from_millis(2500));
    c.node_mut(2).kill9();
    std::thread::sleep(Duration::from_secs(5));
    c.node(2).set_faults("");
    c.node_mut(2).start();
    let s = c.cluster_status(2);
    assert_eq!(s["repair"]["serving_reads"], false, "{}", s["repair"]);
    assert!(
        c.node(2).log().contains("cannot tell how long it was down"),
        "{}",
        c.node(2).log()
    );
    c.wait_until(SLOW, "n3 serves reads after a pass", || {
        let s = c.cluster_status(2);
        if s["repair"]["serving_reads"] == true {
            Poll::Ready(())
        } else {
            Poll::Pending(s["repair"].to_string())
        }
    });
}

/// Chaos suite finding (clock-behind run, seed 100325672): a fault on the
/// lagging node rewrote its fault file without the clock offset, so its clock
/// stepped a minute forward — what NTP does when it sets a lagging clock
/// right. A write already past the entry check ("can this node vouch for its
/// clock?") issued its version from the stepped clock plus the old
/// correction: a minute ahead. Peers refused it, the node's own replica kept
/// it, and the clock's high-water mark put every later version a minute
/// ahead too. Now a version is issued only from a clock reading the step
/// detector has judged. A conditional write, whose read is made slow here,
/// spans the step.
#[test]
fn a_write_in_flight_across_a_clock_step_issues_nothing_from_the_future() {
    let spec = ClusterSpec::fast(3, 3).with_fault_files();
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node(2).set_faults("clock_offset_ms = -60000\n");
    c.wait_until(SLOW, "n3 measured its lag and vouches again", || {
        let s = c.cluster_status(2);
        let lag = s["clock"]["cluster_offset_ms"].as_i64().unwrap_or(0);
        if lag > 50_000 && s["clock"]["vouched"] == true {
            Poll::Ready(())
        } else {
            Poll::Pending(s["clock"].to_string())
        }
    });
    let path = kv_at("stepped", Some("quorum"));
    let r = c.node(2).client().put(&path, b"v1");
    assert_eq!(r.status, 201, "{r}");
    assert_stamped_now(&c, 2, "stepped");
    let etag = r.etag();
    // Every frame n3 sends its peers now waits 1 s: the write's read is slow.
    c.node(2)
        .set_faults("clock_offset_ms = -60000\npeer_delay_ms = 1000\n");
    let n3 = c.node(2).client_with_timeout(Duration::from_secs(20));
    let writer = std::thread::spawn(move || n3.put_with(&path, &[("If-Match", &etag)], b"v2"));
    // Meanwhile n3's clock is set right: a minute forward.
    std::thread::sleep(Duration::from_millis(400));
    c.node(2).set_faults("peer_delay_ms = 1000\n");
    let r = writer.join().expect("writer");
    c.node(2).set_faults("");
    assert_stamped_now(&c, 2, "stepped");
    let body = r.expect_error(503, "clock_skew");
    assert_eq!(body["outcome"], "not_applied", "{r}");
    // Refused where the version is issued, not at the entry check: the
    // write really spanned the step.
    assert!(r.text().contains("has not measured it since"), "{r}");
    // Once measured again, n3 writes at real time: its clock kept nothing
    // from the future.
    c.wait_clocks_vouched();
    let r = c
        .node(2)
        .client()
        .put(&kv_at("after-step", Some("quorum")), b"v");
    assert_eq!(r.status, 201, "{r}");
    assert_stamped_now(&c, 2, "after-step");
}

/// Asserts that node `i` stamped its record of `key` within 5 s of real time.
fn assert_stamped_now(c: &Cluster, i: usize, key: &str) {
    let rec = c
        .node(i)
        .local(key)
        .unwrap_or_else(|| panic!("n{} holds no {key}", i + 1));
    let ts = rec["timestamp_ms"].as_u64().expect("timestamp_ms");
    let now = now_ms();
    assert!(
        ts.abs_diff(now) < 5_000,
        "n{}'s record of {key} is stamped {ts}, real time is {now}: {} ms apart; \
         its clock was dragged: {rec}",
        i + 1,
        ts as i64 - now as i64
    );
}

/// A cluster whose n3 runs 120 s ahead, with 5 s of drift allowed, and whose
/// gossip has told n3 so.
fn runaway_cluster_detected() -> Cluster {
    let spec = ClusterSpec::fast(3, 3)
        .cluster_toml("max_clock_drift_ms = 5000")
        .clock_offset(2, 120_000);
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.wait_until(SLOW, "n3 knows its clock is ahead of the cluster", || {
        let s = c.cluster_status(2);
        if s["clock"]["ahead_of_cluster"] == true {
            Poll::Ready(())
        } else {
            Poll::Pending(s["clock"].to_string())
        }
    });
    c
}

/// The same, with gossip so slow (30 s rounds) that n3 has not compared
/// clocks yet.
fn runaway_cluster_undetected() -> Cluster {
    let spec = ClusterSpec::new(3, 3)
        .section_toml("gossip", "interval_ms = 30000")
        .section_toml("repair", "anti_entropy_interval_ms = 600000")
        .cluster_toml("max_clock_drift_ms = 5000")
        .clock_offset(2, 120_000);
    let mut c = Cluster::start(spec);
    c.wait_peers_reachable();
    c
}

/// A write at `all` coordinated by the runaway node n3.
fn runaway_write(c: &Cluster, key: &str) -> Resp {
    c.node(2)
        .client()
        .put(&kv_at(key, Some("all")), b"from-the-future")
}

/// A fresh write through healthy n1 is acknowledged and stamped at real time.
fn assert_healthy_writes_now(c: &Cluster, key: &str) {
    let r = c.node(0).client().put(&kv_at(key, Some("quorum")), b"now");
    assert_eq!(r.status, 201, "{r}");
    assert_stamped_now(c, 0, key);
}

/// Once gossip compared clocks, a node 120 s ahead (allowed drift 5 s) knows
/// it and refuses to coordinate writes with a clear error; the others see
/// its offset; nobody's clock is dragged forward.
#[test]
fn runaway_clock_is_detected_and_refuses_to_write() {
    let c = runaway_cluster_detected();
    let refused = runaway_write(&c, "runaway");
    let body = refused.expect_error(503, "clock_skew");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("ahead of the cluster"), "{refused}");
    let n3 = c.cluster_status(2);
    assert!(counter(&n3, "clock", "refused_versions") > 0, "{n3}");
    assert!(
        n3["clock"]["cluster_offset_ms"].as_i64().unwrap_or(0) < -100_000,
        "{n3}"
    );
    for i in [0, 1] {
        let s = c.cluster_status(i);
        assert_eq!(s["clock"]["ahead_of_cluster"], false, "n{}: {s}", i + 1);
        let offset = s["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["id"] == "n3"))
            .and_then(|m| m["clock_offset_ms"].as_i64())
            .unwrap_or(0);
        assert!(
            offset > 100_000,
            "n{} sees n3's clock offset {offset}: {s}",
            i + 1
        );
    }
    // The write was not stored anywhere, and healthy nodes write at real time.
    for i in 0..3 {
        assert!(c.node(i).local("runaway").is_none(), "n{} stored it", i + 1);
    }
    assert_healthy_writes_now(&c, "after-runaway");
}

/// Before gossip compared clocks, the runaway node's versions reach the
/// others: they refuse them, count them, say why in the 503, and keep their
/// own clocks.
/// Issue 06, finding 6 ("a node must not coordinate writes with a clock it
/// cannot vouch for"): before gossip measured it, a node with a runaway clock
/// used to coordinate writes whose versions its peers refused and it kept;
/// once real time passed them they won over later acknowledged writes. Now it
/// refuses the write at once (not applied) and stores nothing (once measured,
/// it keeps refusing: `runaway_clock_is_detected_and_refuses_to_write`).
#[test]
fn a_node_whose_clock_was_never_measured_refuses_to_coordinate() {
    let c = runaway_cluster_undetected();
    let r = runaway_write(&c, "runaway");
    let body = r.expect_error(503, "clock_skew");
    assert_eq!(body["outcome"], "not_applied", "{r}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r}");
    assert!(c.node(2).local("runaway").is_none(), "n3 stored the write");
    for i in 0..3 {
        assert!(c.node(i).local("runaway").is_none(), "n{} stored it", i + 1);
    }
}

/// Versions far ahead of a replica's clock that reach it anyway (a broken or
/// hostile peer) are refused and counted, and do not drag its clock: its next
/// write is stamped at real time.
#[test]
fn runaway_versions_from_a_peer_are_refused_and_do_not_drag_clocks() {
    use ringkv_actors::wire::{
        encode_frame, ErrorCode, Frame, Hello, Request, Response, WireRecord, PROTOCOL_VERSION,
    };
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let mut s = crate::peer_conn::PeerConn::connect(&c, 0, "n3");
    let hello = Frame::Hello(Hello {
        cluster: "itest".into(),
        protocol: PROTOCOL_VERSION,
        node_id: "n3".into(),
        layout: 0,
    });
    use std::io::{Read, Write};
    s.write_all(&encode_frame(&hello, 4096).unwrap()).unwrap();
    let ahead = (now_ms() + 120_000) << 16;
    let write = Frame::Request {
        id: 1,
        body: Request::Write {
            layout: 0,
            key: bytes::Bytes::from_static(b"runaway"),
            record: WireRecord {
                ts: ahead,
                node: 7,
                value: Some(bytes::Bytes::from_static(b"from-the-future")),
            },
        },
    };
    s.write_all(&encode_frame(&write, 1 << 20).unwrap())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = bytes::BytesMut::new();
    let mut codec = ringkv_actors::wire::FrameCodec::new(1 << 20);
    let answer = loop {
        use tokio_util::codec::Decoder;
        if let Some(r) = codec.decode(&mut buf).unwrap() {
            if let Frame::Response { body, .. } = r.frame {
                break body;
            }
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(
        matches!(
            answer,
            Response::Error {
                code: ErrorCode::ClockDrift,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(counter(&c.cluster_status(0), "clock", "refused_versions") > 0);
    assert!(c.node(0).local("runaway").is_none());
    assert_healthy_writes_now(&c, "after-runaway");
}
