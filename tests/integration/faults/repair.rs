//! Faults: stale replicas brought up to date (anti-entropy, read repair),
//! tombstones against a node down longer than the grace period, repair
//! mode across restarts, dropped hints repaired.

use super::*;

#[test]
fn anti_entropy_repairs_a_stale_replica() {
    let spec = ClusterSpec::fast(3, 3).section_toml("hints", "enabled = false");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    let keys: Vec<String> = (0..200).map(|i| format!("ae-{i:03}")).collect();
    let v1: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("{k}-v1")))
        .collect();
    write_all(&[c.node(0).base_url()], &v1, "all", 4);

    c.node_mut(2).kill9();
    let v2: Vec<(String, String)> = keys[..50]
        .iter()
        .map(|k| (k.clone(), format!("{k}-v2")))
        .collect();
    write_all(&[c.node(0).base_url()], &v2, "one", 2);
    let n1 = c.node(0).client();
    for k in &keys[50..60] {
        let r = n1.delete(&kv_at(k, Some("one")));
        assert_eq!(r.status, 204, "{r}");
    }
    assert_eq!(
        pending_hints(&c, &[0, 1], "n3"),
        vec![0, 0],
        "hints are disabled"
    );

    c.node_mut(2).start();
    let n3 = c.node(2);
    assert_eq!(n3.local_value("ae-000").as_deref(), Some("ae-000-v1"));
    assert_eq!(n3.local_value("ae-049").as_deref(), Some("ae-049-v1"));
    assert_eq!(n3.local_value("ae-055").as_deref(), Some("ae-055-v1"));
    c.wait_replicas_reachable();

    let sum = repair(&c, 2);
    eprintln!("[faults] anti-entropy summary on n3: {sum}");
    assert_eq!(
        sum["peers_synced"],
        serde_json::json!(["n1", "n2"]),
        "{sum}"
    );
    assert_eq!(sum["peers_failed"], serde_json::json!([]), "{sum}");
    assert!(sum["leaves_differing"].as_u64() > Some(0), "{sum}");
    assert_eq!(sum["keys_pulled"], 60, "50 overwrites + 10 deletes: {sum}");
    assert_eq!(sum["keys_pushed"], 0, "{sum}");
    assert!(sum["bytes"].as_u64() > Some(0), "{sum}");

    for (i, k) in keys.iter().enumerate() {
        let recs: Vec<Value> = c
            .nodes
            .iter()
            .map(|n| {
                n.local(k)
                    .unwrap_or_else(|| panic!("{} has no record of {k}", n.id))
            })
            .collect();
        for r in &recs[1..] {
            assert_eq!(r["etag"], recs[0]["etag"], "{k}: {recs:?}");
            assert_eq!(r["tombstone"], recs[0]["tombstone"], "{k}: {recs:?}");
        }
        let expected = match i {
            0..50 => Some(format!("{k}-v2")),
            50..60 => None,
            _ => Some(format!("{k}-v1")),
        };
        let held = (recs[2]["tombstone"] == false).then(|| {
            recs[2]["value_utf8"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        assert_eq!(held, expected, "{k} on n3: {recs:?}");
    }

    let again = repair(&c, 2);
    eprintln!("[faults] second anti-entropy pass on n3: {again}");
    assert_eq!(again["peers_failed"], serde_json::json!([]), "{again}");
    assert_eq!(again["leaves_differing"], 0, "{again}");
    assert_eq!(again["keys_pulled"], 0, "{again}");
    assert_eq!(again["keys_pushed"], 0, "{again}");
    let from_n1 = repair(&c, 0);
    assert_eq!(from_n1["leaves_differing"], 0, "{from_n1}");
}

#[test]
fn read_repair_fixes_a_stale_replica() {
    let spec = ClusterSpec::fast(3, 3).section_toml("hints", "enabled = false");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    let n1 = c.node(0).client();
    let r = n1.put(&kv_at("rr", Some("all")), b"v1");
    assert_eq!(r.status, 201, "{r}");
    c.node_mut(2).kill9();
    let r = n1.put(&kv_at("rr", Some("quorum")), b"v2");
    assert_eq!(r.status, 204, "{r}");
    let v2 = r.etag();
    c.node_mut(2).start();
    assert_eq!(c.node(2).local_value("rr").as_deref(), Some("v1"));
    c.wait_replicas_reachable();

    let before = counter(&c.cluster_status(0), "repair", "read_repairs");
    // `all` asks every replica, n3 included.
    let r = n1.get(&kv_at("rr", Some("all")));
    assert_eq!((r.status, r.text().as_str()), (200, "v2"), "{r}");
    assert_eq!(r.etag(), v2);
    let n3 = c.node(2);
    c.wait_until(
        Duration::from_secs(10),
        "read repair reaches n3",
        || match n3.local("rr") {
            Some(rec) if rec["etag"] == unquoted(&v2) => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?}")),
        },
    );
    assert_eq!(n3.local_value("rr").as_deref(), Some("v2"));
    let after = counter(&c.cluster_status(0), "repair", "read_repairs");
    assert!(after > before, "read_repairs {before} -> {after}");
    assert!(metric(&c, 0, "read_repairs") >= after);
}

#[test]
fn tombstones_outlive_a_down_replica_and_are_purged_after_repair() {
    let spec = ClusterSpec::fast(3, 3)
        .section_toml("hints", "enabled = true")
        .section_toml("repair", "tombstone_grace_ms = 3000");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    let n1 = c.node(0).client();
    let r = n1.put(&kv_at("gc", Some("all")), b"doomed");
    assert_eq!(r.status, 201, "{r}");

    c.node_mut(2).kill9();
    let r = n1.delete(&kv_at("gc", Some("quorum")));
    assert_eq!(r.status, 204, "{r}");
    let deleted = Instant::now();
    std::thread::sleep(Duration::from_millis(4500));
    // Past the grace period, but n3 never saw the delete: no purge.
    for i in [0, 1] {
        let rec = c
            .node(i)
            .local("gc")
            .unwrap_or_else(|| panic!("n{}: tombstone purged while n3 was down", i + 1));
        assert_eq!(rec["tombstone"], true, "n{}: {rec}", i + 1);
        assert_eq!(
            counter(&c.cluster_status(i), "repair", "tombstones_purged"),
            0
        );
    }

    c.node_mut(2).start();
    let down_for = deleted.elapsed();
    let n3 = c.node(2);
    let first = n3.cluster_status();
    assert!(
        n3.log()
            .contains("serves no reads until anti-entropy completes"),
        "n3 was down {down_for:?} (> 3 s grace) but did not say so:\n{}",
        n3.log()
    );
    if first["repair"]["serving_reads"] != false {
        // Only if a repair pass already completed.
        assert!(
            n3.log().contains("serving reads again"),
            "n3 serves reads without a completed repair: {first}"
        );
    }
    let t = Instant::now();
    c.wait_until(SLOW, "n3 serves reads again", || {
        let s = n3.cluster_status();
        if s["repair"]["serving_reads"] == true {
            Poll::Ready(())
        } else {
            Poll::Pending(s["repair"].to_string())
        }
    });
    eprintln!(
        "[faults] n3 back after {down_for:?} down: serving_reads {} at start, true {:?} later",
        first["repair"]["serving_reads"],
        t.elapsed()
    );
    c.wait_replicas_reachable();
    for node in &c.nodes {
        let r = node.client().get(&kv_at("gc", Some("all")));
        r.expect_error(404, "not_found");
    }
    // Once older than the grace period and than anything still in flight
    // (3 members: 2 s × 4 + 10 s + 5 s = 23 s, `gc::in_flight_ms`).
    c.wait_until(
        Duration::from_secs(40),
        "the tombstone is purged everywhere",
        || {
            let held: Vec<Option<Value>> = c.nodes.iter().map(|n| n.local("gc")).collect();
            if held.iter().all(Option::is_none) {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{held:?}"))
            }
        },
    );
    let purged: u64 = (0..3)
        .map(|i| counter(&c.cluster_status(i), "repair", "tombstones_purged"))
        .sum();
    assert!(purged >= 1, "tombstones_purged {purged}");

    // Nothing brings the value back: not a repair, not reads.
    repair(&c, 2);
    repair(&c, 0);
    for node in &c.nodes {
        assert_eq!(node.local("gc"), None, "{} holds gc again", node.id);
        let r = node.client().get(&kv_at("gc", Some("all")));
        r.expect_error(404, "not_found");
    }
}

/// Whether node `i` serves reads, by `GET /v1/cluster`.
fn serving_reads(c: &Cluster, i: usize) -> Value {
    c.cluster_status(i)["repair"]["serving_reads"].clone()
}

/// Sweep H1: a node decided at start whether to serve reads from when it
/// last recorded being alive — which it recorded every second in repair
/// mode too. Back after longer than the grace period with no peer to
/// repair with, then restarted, it served reads at once: its old values of
/// keys deleted and purged elsewhere could win reads and be read-repaired
/// back. Repair mode is now persisted until a completing pass ends it.
#[test]
fn a_restart_during_repair_mode_stays_in_repair_mode() {
    let spec = ClusterSpec::fast(2, 2).section_toml("repair", "tombstone_grace_ms = 3000");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    let r = c.node(0).client().put(&kv_at("old", Some("all")), b"stale");
    assert_eq!(r.status, 201, "{r}");
    // n2 is down longer than the grace, and so is n1, the only peer it could
    // repair with.
    c.node_mut(1).kill9();
    c.node_mut(0).kill9();
    std::thread::sleep(Duration::from_millis(4000));
    c.node_mut(1).start();
    assert_eq!(serving_reads(&c, 1), false, "back after 4 s down");
    // It lives a few seconds (recording liveness); its passes fail.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(serving_reads(&c, 1), false, "no pass could complete");
    c.node_mut(1).restart();
    let log = c.node(1).log();
    let last_run = &log[log.rfind("===== harness: run").unwrap_or(0)..];
    assert!(
        last_run.contains("serves no reads until anti-entropy completes"),
        "{last_run}"
    );
    assert_eq!(serving_reads(&c, 1), false, "a restart ended repair mode");
    let r = c.node(1).client().get(&kv_at("old", Some("one")));
    assert_ne!(
        r.status, 200,
        "n2 in repair mode answered its own old value: {r}"
    );
    r.expect_status(503);
    // Once /ready answers (n1 is down: after its grace), it says so too.
    let ready = c.wait_until(SLOW, "n2 is ready", || {
        let r = c.node(1).client().get("/ready");
        if r.status == 200 {
            Poll::Ready(r.json())
        } else {
            Poll::Pending(r.to_string())
        }
    });
    assert_eq!(ready["serving_reads"], false, "{ready}");
    // n1 back: a pass completes and ends repair mode, for good.
    c.node_mut(0).start();
    c.wait_until(
        SLOW,
        "n2 serves reads after a completed pass",
        || match serving_reads(&c, 1) {
            Value::Bool(true) => Poll::Ready(()),
            other => Poll::Pending(other.to_string()),
        },
    );
    c.node_mut(1).restart();
    assert_eq!(serving_reads(&c, 1), true, "repair mode came back");
    let r = c.node(1).client().get(&kv_at("old", Some("one")));
    assert_eq!(r.status, 200, "{r}");
}

/// Hints beyond the per-target bound drop the oldest (never the client's
/// write), are counted, and queue anti-entropy with the target: once it is
/// back, it holds every write, the dropped ones included, without an operator.
#[test]
fn dropped_hints_are_repaired_by_anti_entropy() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3).section_toml("hints", "max_per_node = 10"));
    c.wait_replicas_reachable();
    wait_converged(&c, 0, 2);
    wait_converged(&c, 1, 2);
    c.node_mut(2).kill9();
    let items: Vec<(String, String)> = (0..60)
        .map(|i| (format!("bounded-{i:03}"), format!("v{i}")))
        .collect();
    // Through n1 only, so n1 holds every hint for n3 and hits its bound.
    write_all(&[c.node(0).base_url()], &items, "quorum", 2);
    c.wait_until(SLOW, "n1 dropped hints beyond its bound", || {
        let s = c.cluster_status(0);
        let dropped = counter(&s, "hints", "dropped");
        let pending = pending_hints(&c, &[0], "n3")[0];
        if dropped >= 50 && pending <= 10 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("dropped {dropped}, pending {pending}"))
        }
    });
    c.node_mut(2).start();
    wait_converged(&c, 0, 2);
    let n3 = c.node(2);
    c.wait_until(
        SLOW,
        "n3 holds all 60 writes (hints + anti-entropy)",
        || {
            let missing = items
                .iter()
                .filter(|(k, v)| n3.local_value(k).as_deref() != Some(v.as_str()))
                .count();
            if missing == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{missing} missing"))
            }
        },
    );
    let s = c.cluster_status(0);
    assert!(
        s["repair"]["keys_pushed"].as_u64().unwrap_or(0) > 0,
        "anti-entropy pushed nothing from n1: {}",
        s["repair"]
    );
}
