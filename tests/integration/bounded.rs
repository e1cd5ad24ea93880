//! Step 05: the peer layer and every background job stay bounded and
//! fail-safe off the happy path — values at the size limit through hint
//! replay and anti-entropy, peers killed mid-transfer, peers that never read,
//! a full write queue, a failed fsync, restarts with a clock that stepped
//! back, many repairs at once, and SIGTERM while peers misbehave.

use crate::faults::{
    counter, pending_hints, status_of, wait_converged, wait_hints_drained, wait_member, SLOW,
};
use crate::harness::{kv_at, Client, Cluster, ClusterSpec, Poll};
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default value limit (`storage.max_value_bytes`).
const LIMIT: usize = 1 << 20;

/// A value of `len` bytes that differs for every `i`.
fn big(i: usize, len: usize) -> Vec<u8> {
    let seed = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|j| (seed.rotate_left((j % 64) as u32) >> 7) as u8 ^ j as u8)
        .collect()
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `node` stores exactly `value` under `key`.
fn holds(c: &Cluster, node: usize, key: &str, value: &[u8]) -> bool {
    c.node(node)
        .local(key)
        .is_some_and(|v| v["tombstone"] == false && v["value_hex"] == hex(value))
}

/// Keys of `items` that `node` does not hold exactly.
fn missing(c: &Cluster, node: usize, items: &[(String, Vec<u8>)]) -> Vec<String> {
    items
        .iter()
        .filter(|(k, v)| !holds(c, node, k, v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn put_big(c: &Cluster, via: usize, items: &[(String, Vec<u8>)], level: &str) {
    let client = c.node(via).client_with_timeout(Duration::from_secs(30));
    for (k, v) in items {
        let r = client.put(&kv_at(k, Some(level)), v);
        assert_eq!(r.status, 201, "PUT {k} ({} bytes): {r}", v.len());
    }
}

fn repair(c: &Cluster, i: usize) -> Value {
    let client = c.node(i).client_with_timeout(Duration::from_secs(120));
    let r = client.call("POST", "/v1/admin/repair", &[], None);
    assert_eq!(r.status, 200, "repair on n{}: {r}", i + 1);
    r.json()
}

fn job(c: &Cluster, i: usize, name: &str) -> Value {
    c.cluster_status(i)["jobs"][name].clone()
}

/// The reproduction of issue 05: n3 stopped, 24 PUTs of values at the size
/// limit through n1, n3 started again. n1 used to abort on the oversized
/// replay frame, and again at every restart. Now n1 stays up, the hints drain
/// to n3 within seconds, and all three replicas hold every value.
#[test]
fn hints_of_values_at_the_limit_drain_after_a_restart() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    wait_converged(&c, 0, 2);
    c.node_mut(2).sigterm();
    wait_member(&c, 0, "n3", "down");
    let items: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("big-hint-{i:02}"), big(i, LIMIT)))
        .collect();
    put_big(&c, 0, &items, "quorum");
    c.wait_until(SLOW, "24 hints for n3 are stored", || {
        let p = pending_hints(&c, &[0, 1], "n3");
        if p.iter().sum::<u64>() == 24 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{p:?}"))
        }
    });
    let started = Instant::now();
    c.node_mut(2).start();
    wait_hints_drained(&c, &[0, 1], "n3");
    eprintln!(
        "[bounded] 24 hints of 1 MiB drained in {:?}",
        started.elapsed()
    );
    assert!(
        c.node_mut(0).is_running(),
        "n1 crashed:\n{}",
        c.node(0).log()
    );
    for node in 0..3 {
        let m = missing(&c, node, &items);
        assert!(m.is_empty(), "n{} lacks {m:?}", node + 1);
    }
    assert!(!c.node(0).log().contains("panicked"), "{}", c.node(0).log());
}

/// Values at the size limit through anti-entropy (no hints): n3 misses 24
/// of them; one pass brings them, a second moves nothing.
#[test]
fn anti_entropy_moves_values_at_the_limit() {
    let spec = ClusterSpec::fast(3, 3).section_toml("hints", "enabled = false");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(2).sigterm();
    let items: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("big-ae-{i:02}"), big(100 + i, LIMIT - i)))
        .collect();
    put_big(&c, 0, &items, "quorum");
    c.node_mut(2).start();
    c.wait_replicas_reachable();
    let first = repair(&c, 2);
    assert!(
        first["keys_pulled"].as_u64().unwrap_or(0) >= 24,
        "n3 pulled too little: {first}"
    );
    assert!(
        first["peers_failed"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{first}"
    );
    assert!(missing(&c, 2, &items).is_empty());
    let second = repair(&c, 2);
    assert_eq!(second["bytes"], 0, "a second pass moved data: {second}");
    for i in 0..3 {
        assert!(c.node_mut(i).is_running());
    }
}

/// A hint target killed in the middle of a replay of large values: the
/// replay pauses (its call fails, nothing is lost or stuck), and once the
/// target is back every hint arrives.
#[test]
fn a_target_killed_mid_replay_gets_every_hint_later() {
    let spec = ClusterSpec::fast(3, 3).with_fault_files();
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(2).sigterm();
    wait_member(&c, 0, "n3", "down");
    let items: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("mid-replay-{i:02}"), big(200 + i, LIMIT / 2)))
        .collect();
    put_big(&c, 0, &items, "quorum");
    // n3 commits slowly, so the replay is still running when it dies.
    c.node(2).set_faults("fsync_delay_ms = 250");
    c.node_mut(2).start();
    c.wait_until(SLOW, "the replay to n3 is under way", || {
        let p: u64 = pending_hints(&c, &[0, 1], "n3").iter().sum();
        if (1..=24).contains(&p) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("pending {p}"))
        }
    });
    c.node_mut(2).kill9();
    c.node(2).set_faults("");
    let left: u64 = pending_hints(&c, &[0, 1], "n3").iter().sum();
    assert!(left > 0, "the replay finished before the kill");
    c.node_mut(2).start();
    wait_hints_drained(&c, &[0, 1], "n3");
    assert!(c.node_mut(0).is_running(), "{}", c.node(0).log());
    assert!(c.node_mut(1).is_running(), "{}", c.node(1).log());
    assert!(missing(&c, 2, &items).is_empty());
}

/// A peer killed in the middle of an anti-entropy pass that moves large
/// values: the pass ends (reporting the failure), and a later pass completes.
#[test]
fn a_peer_killed_mid_repair_fails_the_pass_and_a_later_one_completes() {
    let spec = ClusterSpec::fast(3, 3)
        .section_toml("hints", "enabled = false")
        .section_toml("repair", "bandwidth_bytes_per_sec = 2097152")
        .cluster_toml("background_timeout_ms = 3000");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(2).sigterm();
    let items: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("mid-repair-{i:02}"), big(300 + i, LIMIT / 2)))
        .collect();
    put_big(&c, 0, &items, "quorum");
    c.node_mut(2).start();
    c.wait_replicas_reachable();
    // 10 MiB at 2 MiB/s: the pass from n1 takes about 5 s.
    let r = c
        .node(0)
        .client()
        .call("POST", "/v1/admin/repair?wait_ms=0", &[], None);
    assert_eq!(r.status, 202, "{r}");
    c.wait_until(SLOW, "n3 received some of the values", || {
        let have = items.len() - missing(&c, 2, &items).len();
        if have > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{have}"))
        }
    });
    c.node_mut(2).kill9();
    let sum = c.wait_until(SLOW, "n1's pass ends", || {
        let s = c.cluster_status(0)["repair"].clone();
        if s["running"] == false && s["passes"].as_u64() >= Some(1) {
            Poll::Ready(s["last"].clone())
        } else {
            Poll::Pending(s.to_string())
        }
    });
    let failed = sum["peers_failed"].to_string();
    assert!(failed.contains("n3"), "the pass did not report n3: {sum}");
    c.node_mut(2).start();
    c.wait_replicas_reachable();
    let again = repair(&c, 0);
    assert!(
        again["peers_failed"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{again}"
    );
    assert!(missing(&c, 2, &items).is_empty());
}

/// A peer that sends requests and never reads the answers: the session stops
/// reading once its budgets are full, the node's memory stays bounded, the
/// other peers are served meanwhile, and the session is closed once writing
/// to it stalls.
#[test]
fn a_peer_that_never_reads_cannot_grow_the_node() {
    use ringkv_actors::wire::{encode_frame, Frame, Hello, Request, PROTOCOL_VERSION};
    let mut c = Cluster::start(ClusterSpec::fast(2, 2));
    c.wait_replicas_reachable();
    let key = "never-read";
    let r = c
        .node(0)
        .client()
        .put(&kv_at(key, Some("all")), &big(1, LIMIT));
    assert_eq!(r.status, 201, "{r}");
    let before = c.node_mut(0).rss_bytes();
    let mut s = crate::peer_conn::PeerConn::connect(&c, 0, "n2");
    let hello = Frame::Hello(Hello {
        cluster: "itest".into(),
        protocol: PROTOCOL_VERSION,
        node_id: "n2".into(),
        layout: 0,
    });
    s.write_all(&encode_frame(&hello, 4096).unwrap()).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)));
    // 2,000 reads of a 1 MiB value (2 GiB of answers) with nobody reading.
    let mut sent = 0;
    for id in 0..2_000u64 {
        let req = Frame::Request {
            id,
            body: Request::Read {
                key: bytes::Bytes::from_static(key.as_bytes()),
            },
        };
        if s.write_all(&encode_frame(&req, 1 << 20).unwrap()).is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let during = c.node_mut(0).rss_bytes();
    eprintln!(
        "[bounded] {sent} unread requests written; RSS {} MiB -> {} MiB",
        before >> 20,
        during >> 20
    );
    assert!(
        during < before + (300 << 20),
        "RSS grew from {before} to {during} bytes"
    );
    // The real peer is unaffected.
    let r = c
        .node(0)
        .client()
        .put(&kv_at("meanwhile", Some("all")), b"x");
    assert_eq!(r.status, 201, "{r}");
    let line = c.wait_until(SLOW, "the stalled session is closed", || {
        match c
            .node(0)
            .log()
            .lines()
            .find(|l| l.contains("read nothing for"))
        {
            Some(l) => Poll::Ready(l.to_string()),
            None => Poll::Pending(String::new()),
        }
    });
    assert!(line.contains("peer session from n2"), "{line}");
    drop(s);
    assert!(c.node_mut(0).is_running());
}

/// A full write queue answers 503 `overloaded` with `Retry-After` at once,
/// never waits without bound, and loses nothing it acknowledged.
#[test]
fn a_full_write_queue_answers_503_with_retry_after() {
    let spec = ClusterSpec::single()
        .with_fault_files()
        .storage_toml("max_write_queue_bytes = 1048576");
    let mut c = Cluster::start(spec);
    c.node(0).set_faults("fsync_delay_ms = 300");
    let base = c.node(0).base_url();
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let client = Client::with_timeout(base.clone(), Duration::from_secs(30));
            std::thread::spawn(move || {
                let key = format!("queue-{i}");
                let r = client.put(&kv_at(&key, None), &big(i, 256 << 10));
                (key, i, r)
            })
        })
        .collect();
    let (mut ok, mut overloaded) = (Vec::new(), 0);
    for h in handles {
        let (key, i, r) = h.join().unwrap();
        match r.status {
            201 => ok.push((key, i)),
            503 => {
                let v = r.expect_error(503, "overloaded");
                assert_eq!(v["outcome"], "not_applied", "{r}");
                assert!(r.header("retry-after").is_some(), "no Retry-After: {r}");
                overloaded += 1;
            }
            _ => panic!("unexpected {r}"),
        }
    }
    c.node(0).set_faults("");
    assert!(overloaded > 0, "nothing was refused with a 1 MiB queue");
    assert!(!ok.is_empty());
    for (key, i) in ok {
        assert!(holds(&c, 0, &key, &big(i, 256 << 10)), "{key} lost");
    }
    assert!(c.node_mut(0).is_running());
}

/// A failed fsync stops the node (fail-stop, exit status 74) instead of
/// serving what the page cache shows; a restart recovers from the file and
/// every acknowledged write is there.
#[test]
fn a_failed_fsync_stops_the_node_and_a_restart_recovers() {
    let mut c = Cluster::start(ClusterSpec::single().with_fault_files());
    let client = c.node(0).client_with_timeout(Duration::from_secs(5));
    for i in 0..20 {
        let r = client.put(&kv_at(&format!("before-{i}"), None), b"acknowledged");
        assert_eq!(r.status, 201, "{r}");
    }
    c.node(0).set_faults("fail_fsync = true");
    let r = client.send("PUT", &kv_at("during", None), &[], Some(b"unknown"));
    if let Ok(r) = &r {
        assert!(
            r.status >= 500,
            "a write whose fsync failed was acknowledged: {r}"
        );
        // It may be on disk: the answer must not say it is not.
        assert_eq!(r.json()["outcome"], "indeterminate", "{r}");
    }
    let node = c.node_mut(0);
    let status = crate::harness::wait_until(SLOW, "the node stops", || match node.exit_status() {
        Some(s) => Poll::Ready(s),
        None => Poll::Pending(String::new()),
    });
    assert_eq!(status.code(), Some(74), "{}", c.node(0).log());
    assert!(c.node(0).log().contains("stopping: the store's I/O failed"));
    c.node(0).set_faults("");
    c.node_mut(0).start();
    for i in 0..20 {
        let r = client.get(&kv_at(&format!("before-{i}"), None));
        assert_eq!((r.status, r.text()), (200, "acknowledged".into()), "{r}");
    }
    let r = client.put(&kv_at("after", None), b"works");
    assert_eq!(r.status, 201, "{r}");
}

/// A restarted node never issues a version it issued before, even when its
/// wall clock stepped back by a minute across the restart.
#[test]
fn a_restart_with_a_clock_stepped_back_never_reissues_versions() {
    let mut c = Cluster::start(ClusterSpec::single().with_fault_files());
    let client = c.node(0).client();
    let r = client.put(&kv_at("before", None), b"1");
    let before = r.header("x-ringkv-version").unwrap().to_string();
    c.node_mut(0).sigterm();
    c.node(0).set_faults("clock_offset_ms = -60000");
    c.node_mut(0).start();
    let r = client.put(&kv_at("after", None), b"2");
    let after = r.header("x-ringkv-version").unwrap().to_string();
    let ts = |v: &str| u64::from_str_radix(v.split('-').next().unwrap(), 16).unwrap();
    assert!(
        ts(&after) > ts(&before),
        "version {after} after the restart is not above {before}"
    );
}

/// Concurrent `POST /v1/admin/repair` share passes: eight requests run at
/// most two passes, and each is answered with a pass that started after it.
#[test]
fn concurrent_repair_requests_share_passes() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3).with_fault_files());
    c.wait_replicas_reachable();
    // Passes slow enough (every frame n1 sends waits 100 ms) that eight
    // requests sent at once arrive within one pass, however loaded the
    // machine.
    c.node(0).set_faults("peer_delay_ms = 100");
    std::thread::sleep(Duration::from_secs(1));
    let before = c.cluster_status(0)["repair"]["passes"].as_u64().unwrap();
    let base = c.node(0).base_url();
    let go = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let client = Client::with_timeout(base.clone(), Duration::from_secs(60));
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                client.call("POST", "/v1/admin/repair", &[], None)
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{r}");
    }
    let after = c.cluster_status(0)["repair"]["passes"].as_u64().unwrap();
    assert!(
        after - before <= 2,
        "8 concurrent requests ran {} passes",
        after - before
    );
}

/// A peer frozen (SIGSTOP) in the middle of background work: its calls hit
/// their deadlines, `POST /v1/admin/repair` answers instead of hanging, and
/// once the peer resumes hints drain and the jobs make progress again.
#[test]
fn a_frozen_peer_stalls_no_background_job() {
    let spec = ClusterSpec::fast(3, 3).cluster_toml("background_timeout_ms = 2000");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(2).sigstop();
    let started = Instant::now();
    let sum = repair(&c, 0);
    eprintln!(
        "[bounded] repair with n3 frozen answered in {:?}",
        started.elapsed()
    );
    assert!(
        sum["peers_failed"].to_string().contains("n3"),
        "n3 should have failed: {sum}"
    );
    let items: Vec<(String, String)> = (0..200)
        .map(|i| (format!("frozen-{i}"), format!("v{i}")))
        .collect();
    crate::faults::write_all(&[c.node(0).base_url()], &items, "quorum", 4);
    c.node_mut(2).sigcont();
    wait_hints_drained(&c, &[0, 1], "n3");
    for i in 0..2 {
        let hint = job(&c, i, "hint_replay");
        assert!(
            hint["last_progress_ms_ago"]
                .as_u64()
                .is_some_and(|ms| ms < 5_000),
            "n{}: hint replay made no recent progress: {hint}",
            i + 1
        );
    }
    let again = repair(&c, 0);
    assert!(
        again["peers_failed"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{again}"
    );
    for (k, v) in &items {
        assert_eq!(c.node(2).local_value(k).as_deref(), Some(v.as_str()), "{k}");
    }
}

/// SIGTERM stops a node within seconds whatever its peers do: one peer is
/// frozen, a repair pass is stuck on it, and clients keep writing.
#[test]
fn sigterm_stops_a_node_within_seconds_whatever_its_peers_do() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    c.node_mut(2).sigstop();
    let r = c
        .node(0)
        .client()
        .call("POST", "/v1/admin/repair?wait_ms=0", &[], None);
    assert_eq!(r.status, 202, "{r}");
    let base = c.node(0).base_url();
    let writer = std::thread::spawn(move || {
        let client = Client::with_timeout(base, Duration::from_secs(5));
        for i in 0..200 {
            if client
                .send("PUT", &kv_at(&format!("term-{i}"), None), &[], Some(b"v"))
                .is_err()
            {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = c.node_mut(0).sigterm();
    let took = started.elapsed();
    writer.join().unwrap();
    assert!(status.success(), "exit {status}:\n{}", c.node(0).log());
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
    eprintln!("[bounded] SIGTERM with a frozen peer took {took:?}");
    c.node_mut(2).sigcont();
}

/// After a mix of faults and a heal — a peer frozen, another killed and
/// restarted, writes throughout — hints drain, anti-entropy completes and
/// every replica agrees, with nothing restarted to get there.
#[test]
fn after_faults_and_a_heal_the_cluster_converges_by_itself() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let items: Vec<(String, String)> = (0..600)
        .map(|i| (format!("heal-{i:03}"), format!("value-{i}")))
        .collect();
    let bases = [c.node(0).base_url()];
    crate::faults::write_all(&bases, &items[..200], "quorum", 4);
    c.node_mut(2).sigstop();
    crate::faults::write_all(&bases, &items[200..400], "quorum", 4);
    c.node_mut(2).sigcont();
    // Strict quorum: the next fault waits until n3 is seen up again.
    wait_member(&c, 0, "n3", "up");
    c.node_mut(1).kill9();
    crate::faults::write_all(&bases, &items[400..], "quorum", 4);
    c.node_mut(1).start();
    let pids: Vec<Option<u32>> = (0..3).map(|i| c.node_mut(i).pid()).collect();
    wait_hints_drained(&c, &[0, 1, 2], "n2");
    wait_hints_drained(&c, &[0, 1, 2], "n3");
    for i in 0..3 {
        let s = repair(&c, i);
        assert!(
            s["peers_failed"].as_array().is_some_and(|a| a.is_empty()),
            "{s}"
        );
    }
    for node in 0..3 {
        let lacking: Vec<&String> = items
            .iter()
            .filter(|(k, v)| c.node(node).local_value(k).as_deref() != Some(v.as_str()))
            .map(|(k, _)| k)
            .collect();
        assert!(lacking.is_empty(), "n{} lacks {lacking:?}", node + 1);
    }
    let now: Vec<Option<u32>> = (0..3).map(|i| c.node_mut(i).pid()).collect();
    assert_eq!(pids, now, "a node restarted on its own");
    let rescued = counter(&c.cluster_status(0), "hints", "rescued");
    assert_eq!(rescued, 0, "no hint waited long enough to be rescued");
    let st = status_of(&c, 0, "n2");
    assert_eq!(st["status"], "up", "{st}");
}
