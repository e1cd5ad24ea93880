//! Step 06's fault semantics, each found by running combined faults against
//! five nodes, each pinned here by a test on real processes that failed
//! before its fix.

use crate::faults::{wait_hints_drained, wait_member, SLOW};
use crate::harness::{kv_at, Cluster, ClusterSpec, Poll};
use ringkv_actors::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use std::time::Duration;

/// The layout of nodes `n1..=n{nodes}` with replication factor `n`, as the
/// harness configures them (the default Q).
fn layout(nodes: usize, n: usize) -> Layout {
    let ids = (1..=nodes).map(|i| Member::new(format!("n{i}")));
    Layout::initial(ids, n, DEFAULT_PARTITION_BITS)
}

/// A key whose replicas (N = 3 of `nodes` nodes) are exactly `replicas`
/// (indexes), in some order.
fn key_on(nodes: usize, replicas: &[usize], tag: &str) -> String {
    let ring = layout(nodes, 3);
    let mut want: Vec<String> = replicas.iter().map(|i| format!("n{}", i + 1)).collect();
    want.sort();
    (0..100_000)
        .map(|i| format!("{tag}-{i}"))
        .find(|k| {
            let mut got: Vec<String> = ring
                .preference_list(k.as_bytes(), 3)
                .into_iter()
                .map(String::from)
                .collect();
            got.sort();
            got == want
        })
        .expect("a key with those replicas")
}

fn five(spec: ClusterSpec) -> Cluster {
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c
}

/// Issue 06, finding 1: B and C down, X written through A (applied on A,
/// hints for B and C at two other nodes); B and C return; before the hints
/// are replayed, Y is written through D, whose clock runs 2 s behind, while A
/// is slow to answer — B and C acknowledge Y before A's `Superseded`
/// arrives. X's hints then overwrote Y everywhere: an acknowledged write lost
/// to an older in-flight hint. Every node now folds the cluster's highest
/// version into its clock through gossip, so Y is versioned above X.
#[test]
fn a_strict_write_is_not_lost_to_an_older_hint() {
    // Six nodes: the key's three replicas, two hint holders, and D.
    let ring = layout(6, 3);
    let key = (0..100_000)
        .map(|i| format!("f1-{i}"))
        .find(|k| {
            let mut first: Vec<&str> = ring.walk(k.as_bytes())[..3].to_vec();
            first.sort();
            first == ["n1", "n2", "n3"]
        })
        .expect("a key with replicas n1, n2, n3");
    let walk: Vec<usize> = ring
        .walk(key.as_bytes())
        .into_iter()
        .map(|id| id[1..].parse::<usize>().unwrap() - 1)
        .collect();
    let d = walk[5];
    let spec = ClusterSpec::fast(6, 3).clock_offset(d, -2_000);
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    c.node_mut(1).kill9();
    c.node_mut(2).kill9();
    wait_member(&c, 0, "n2", "down");
    wait_member(&c, 0, "n3", "down");
    let r = c.node(0).client().put(&kv_at(&key, Some("quorum")), b"X");
    let outcome = r.json()["outcome"].clone();
    assert_eq!(
        (r.status, outcome.as_str()),
        (503, Some("indeterminate")),
        "{r}"
    );
    // X's two hints are at the next live nodes of the walk: normally one at
    // each of walk[3] and walk[4], but a node that n1 briefly saw as down is skipped.
    let held: Vec<(usize, u64)> = (3..6)
        .map(|h| {
            let p = crate::faults::pending_hints(&c, &[h], "n2")[0]
                + crate::faults::pending_hints(&c, &[h], "n3")[0];
            (h, p)
        })
        .collect();
    assert_eq!(held.iter().map(|(_, p)| p).sum::<u64>(), 2, "{held:?}");
    let holders: Vec<usize> = held
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(h, _)| *h)
        .collect();
    assert!(!holders.contains(&d), "D holds none of X's hints: {held:?}");
    // A gossip round or more after X was stored.
    std::thread::sleep(Duration::from_millis(600));
    // The hint holders stay silent until Y is acknowledged.
    for &h in &holders {
        c.node_mut(h).sigstop();
    }
    c.node_mut(1).start();
    c.node_mut(2).start();
    for target in ["n2", "n3"] {
        wait_member(&c, d, target, "up");
        // Up in gossip is not yet D's own connection to it.
        c.wait_until(SLOW, &format!("D connected to {target}"), || {
            let m = crate::faults::status_of(&c, d, target);
            if m["connected"] == true {
                Poll::Ready(())
            } else {
                Poll::Pending(m.to_string())
            }
        });
    }
    c.node_mut(0).sigstop();
    let r = c.node(d).client().put(&kv_at(&key, Some("quorum")), b"Y");
    c.node_mut(0).sigcont();
    assert!(r.status == 201 || r.status == 204, "{r}");
    for &h in &holders {
        c.node_mut(h).sigcont();
    }
    let all: Vec<usize> = (0..6).collect();
    wait_hints_drained(&c, &all, "n2");
    wait_hints_drained(&c, &all, "n3");
    let r = c.node(d).client().get(&kv_at(&key, Some("all")));
    assert_eq!((r.status, r.text()), (200, "Y".to_string()), "{r}");
}

/// Issue 06, finding 2: a conditional write whose replicas answered
/// `Superseded` (a concurrent write landed after its read) was retried above
/// it and won. It now answers 412 — nothing of it was applied anywhere.
#[test]
fn a_conditional_write_that_loses_a_race_answers_412() {
    let spec = ClusterSpec::fast(3, 2).with_fault_files();
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    let key = {
        let ring = layout(3, 2);
        (0..10_000)
            .map(|i| format!("f2-{i}"))
            .find(|k| !ring.preference_list(k.as_bytes(), 2).contains(&"n1"))
            .expect("a key n1 does not hold")
    };
    let first = c.node(1).client().put(&kv_at(&key, Some("all")), b"v1");
    assert_eq!(first.status, 201, "{first}");
    let etag = first.etag();
    // n1 (not a replica) is slow to reach its peers: its conditional write
    // reads v1, then takes a second to arrive.
    c.node(0).set_faults("peer_delay_ms = 1000\n");
    let n1 = c.node(0).client_with_timeout(Duration::from_secs(10));
    let path = kv_at(&key, Some("all"));
    let conditional = std::thread::spawn(move || {
        n1.put_with(&path, &[("If-Match", etag.as_str())], b"conditional")
    });
    std::thread::sleep(Duration::from_millis(1_400));
    let w2 = c.node(1).client().put(&kv_at(&key, Some("all")), b"w2");
    assert_eq!(w2.status, 204, "{w2}");
    let r = conditional.join().unwrap();
    c.node(0).set_faults("");
    r.expect_error(412, "precondition_failed");
    let now = c.node(2).client().get(&kv_at(&key, Some("all")));
    assert_eq!((now.status, now.text()), (200, "w2".to_string()), "{now}");
}

/// Review of 06: a conditional write answered success as soon as W replicas
/// acknowledged; a `Superseded` arriving later from the third (proof that a
/// concurrent write broke the condition) was ignored. A conditional write
/// now hears every replica out.
#[test]
fn a_late_superseded_still_breaks_a_conditional_write() {
    use ringkv_actors::wire::{Request, Response, WireRecord};
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let key = "late-superseded";
    let first = c.node(0).client().put(&kv_at(key, Some("all")), b"v1");
    assert_eq!(first.status, 201, "{first}");
    let etag = first.etag();
    // n3 alone takes a newer write (as if from a coordinator whose other
    // replica writes are still on their way), and answers its peers slowly.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut raw = crate::hostile::Raw::connect(&c, 2, "n2");
    let r = raw.call(
        1,
        Request::Write {
            layout: 0,
            key: bytes::Bytes::from_static(key.as_bytes()),
            record: WireRecord {
                ts: (now_ms + 3_000) << 16,
                node: 2,
                value: Some(bytes::Bytes::from_static(b"concurrent")),
            },
        },
    );
    assert!(matches!(r, Response::Write { applied: true, .. }), "{r:?}");
    // n3 freezes for 700 ms: n1 and n2 hold v1, so the condition holds on
    // a quorum read and both acknowledge at once; n3's `Superseded` comes
    // when it wakes, well within the request deadline.
    let pid = c.node_mut(2).pid().unwrap();
    c.node_mut(2).sigstop();
    let wake = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: kill(2) on the harness's own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    });
    let r = c
        .node(0)
        .client_with_timeout(Duration::from_secs(10))
        .put_with(
            &kv_at(key, Some("quorum")),
            &[("If-Match", etag.as_str())],
            b"cas",
        );
    wake.join().unwrap();
    c.node_mut(2).sigcont();
    assert!(r.status >= 400, "a broken condition won: {r}");
    let body = r.expect_error(503, "unavailable");
    assert_eq!(body["outcome"], "indeterminate", "{r}");
}

/// Kills n1, n2 and n3 (a key's replicas) and waits until n4 sees them down.
fn kill_first_three(c: &mut Cluster) {
    for i in 0..3 {
        c.node_mut(i).kill9();
    }
    for id in ["n1", "n2", "n3"] {
        wait_member(c, 3, id, "down");
    }
}

/// Issue 06, finding 4: with strict quorum, a coordinator that reached none
/// of a key's replicas stored hints and answered `not_applied`; after the
/// heal the hints were replayed and the value appeared. A stored hint makes
/// the outcome `indeterminate`.
#[test]
fn a_write_that_left_hints_is_indeterminate() {
    let mut c = five(ClusterSpec::fast(5, 3));
    let key = key_on(5, &[0, 1, 2], "f4");
    kill_first_three(&mut c);
    let r = c
        .node(3)
        .client()
        .put(&kv_at(&key, Some("quorum")), b"hinted");
    let body = r.expect_error(503, "unavailable");
    assert_eq!(body["outcome"], "indeterminate", "{r}");
    assert_eq!(body["received"], 0, "{r}");
    for i in 0..3 {
        c.node_mut(i).start();
    }
    for id in ["n1", "n2", "n3"] {
        wait_hints_drained(&c, &[3, 4], id);
    }
    // The value did appear: exactly why the answer could not be "not applied".
    let r = c.node(0).client().get(&kv_at(&key, Some("all")));
    assert_eq!((r.status, r.text()), (200, "hinted".to_string()), "{r}");
}

/// Issue 06, finding 7: with sloppy quorum, a write acknowledged only by
/// hint holders was lost when its hints expired. Hints are never dropped
/// now: past `hints.max_age_ms` they go to any live replica of their key.
#[test]
fn hints_of_an_acknowledged_write_outlive_their_age() {
    let spec = ClusterSpec::fast(5, 3)
        .section_toml("hints", "sloppy_quorum = true")
        .section_toml("hints", "max_age_ms = 1000");
    let mut c = five(spec);
    let key = key_on(5, &[0, 1, 2], "f7");
    kill_first_three(&mut c);
    let r = c
        .node(3)
        .client()
        .put(&kv_at(&key, Some("quorum")), b"only-hints");
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.header("x-ringkv-hinted-acks"), Some("2"), "{r}");
    // Well past the hints' age, one replica comes back (the others stay down).
    std::thread::sleep(Duration::from_secs(3));
    c.node_mut(1).start();
    c.wait_until(SLOW, "n2 holds the write", || {
        match c.node(1).local_value(&key) {
            Some(v) if v == "only-hints" => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?}")),
        }
    });
    let r = c.node(1).client().get(&kv_at(&key, Some("one")));
    assert_eq!((r.status, r.text()), (200, "only-hints".to_string()), "{r}");
}

/// Chaos suite finding (clock-behind run, seed 546984687), second half: a
/// node restarted after more than the tombstone grace period serves no reads
/// until an anti-entropy pass completes. A node whose clock lags ran that
/// pass before gossip had measured its clock; its replica refused every
/// pulled version (60 s "ahead" of its clock) and the pass still counted as
/// complete, so it served reads without the writes it had missed. Now a
/// refused pull fails the exchange while the clock is unmeasured.
#[test]
fn a_lagging_node_finishes_no_repair_before_its_clock_is_measured() {
    let spec = ClusterSpec::fast(5, 3)
        .clock_offset(4, -60_000)
        .section_toml("repair", "tombstone_grace_ms = 1000");
    let mut c = five(spec);
    c.wait_clocks_vouched();
    let key = key_on(5, &[0, 3, 4], "lag");
    c.node_mut(4).kill9();
    wait_member(&c, 3, "n5", "down");
    let r = c
        .node(3)
        .client()
        .put(&kv_at(&key, Some("quorum")), b"missed");
    assert_eq!(r.status, 201, "{r}");
    // n5 alone with n4 is no majority: nobody can measure its clock.
    kill_first_three(&mut c);
    std::thread::sleep(Duration::from_millis(1500));
    c.node_mut(4).start();
    for id in ["n1", "n2", "n3"] {
        wait_member(&c, 4, id, "down");
    }
    let seen = c.cluster_status(4)["repair"]["passes"]
        .as_u64()
        .unwrap_or(0);
    let s = c.wait_until(SLOW, "n5 ran two more passes, or served reads", || {
        let s = c.cluster_status(4);
        let passes = s["repair"]["passes"].as_u64().unwrap_or(0);
        if passes >= seen + 2 || s["repair"]["serving_reads"] == true {
            Poll::Ready(s)
        } else {
            Poll::Pending(s["repair"].to_string())
        }
    });
    assert_eq!(s["clock"]["vouched"], false, "{}", s["clock"]);
    assert_eq!(s["repair"]["serving_reads"], false, "{}", s["repair"]);
    assert!(
        c.node(4).local(&key).is_none(),
        "n5 took a version ahead of it"
    );
    // Once the others return, gossip measures n5's clock and repair completes.
    for i in 0..3 {
        c.node_mut(i).start();
    }
    c.wait_until(SLOW, "n5 serves reads with the write it missed", || {
        let s = c.cluster_status(4);
        match (
            s["repair"]["serving_reads"].as_bool(),
            c.node(4).local_value(&key),
        ) {
            (Some(true), Some(v)) if v == "missed" => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?} {}", s["clock"])),
        }
    });
}
