//! Faults on a running cluster: a node killed or paused while writes go on
//! (hinted handoff), stale replicas (anti-entropy, read repair), tombstones
//! against a node that was down longer than the grace period, skewed clocks,
//! and what `GET /v1/cluster` reports about liveness.

use crate::harness::{kv_at, member, Client, Cluster, ClusterSpec, Poll, Resp};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous deadline for anything that depends on gossip, failure detection,
/// hint replay or repair (the test machine is small and noisy).
pub const SLOW: Duration = Duration::from_secs(30);

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// `status` of member `target` in `observer`'s `/v1/cluster`.
pub fn status_of(c: &Cluster, observer: usize, target: &str) -> Value {
    member(&c.cluster_status(observer), target).clone()
}

/// Waits until `observer` reports `target` as `status`; answers its entry.
pub fn wait_member(c: &Cluster, observer: usize, target: &str, status: &str) -> Value {
    let what = format!("n{} reports {target} {status}", observer + 1);
    c.wait_until(SLOW, &what, || {
        let m = status_of(c, observer, target);
        if m["status"] == status {
            Poll::Ready(m)
        } else {
            Poll::Pending(m.to_string())
        }
    })
}

/// Waits until `observer` sees node `target` up at the generation `target`
/// itself reports (gossip from it arrived); answers that generation.
pub fn wait_converged(c: &Cluster, observer: usize, target: usize) -> u64 {
    let id = c.node(target).id.clone();
    let what = format!("n{} sees {id} up at its current generation", observer + 1);
    c.wait_until(SLOW, &what, || {
        let own = c.cluster_status(target)["generation"].as_u64();
        let m = status_of(c, observer, &id);
        if m["status"] == "up" && own.is_some() && m["generation"].as_u64() == own {
            Poll::Ready(own.unwrap_or_default())
        } else {
            Poll::Pending(format!(
                "{id} reports generation {own:?}; n{} sees {m}",
                observer + 1
            ))
        }
    })
}

/// Hints for `target` pending on each of `holders`.
pub fn pending_hints(c: &Cluster, holders: &[usize], target: &str) -> Vec<u64> {
    holders
        .iter()
        .map(|&i| {
            status_of(c, i, target)["pending_hints"]
                .as_u64()
                .expect("pending_hints")
        })
        .collect()
}

/// Waits until no node of `holders` keeps hints for `target`.
pub fn wait_hints_drained(c: &Cluster, holders: &[usize], target: &str) {
    c.wait_until(SLOW, &format!("hints for {target} drain"), || {
        let p = pending_hints(c, holders, target);
        if p.iter().all(|&n| n == 0) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("pending {p:?}"))
        }
    });
}

/// PUTs every `(key, value)` at `level`, spread over `bases` (round robin) and
/// `threads` threads; panics listing the writes that were not acknowledged.
pub fn write_all(bases: &[String], items: &[(String, String)], level: &str, threads: usize) {
    let items = Arc::new(items.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (items, next, failures) = (items.clone(), next.clone(), failures.clone());
            let client = Client::new(bases[t % bases.len()].clone());
            let level = level.to_string();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((k, v)) = items.get(i) else { return };
                match client.send("PUT", &kv_at(k, Some(&level)), &[], Some(v.as_bytes())) {
                    Ok(r) if r.status == 201 || r.status == 204 => {}
                    Ok(r) => failures.lock().expect("failures").push(format!("{k}: {r}")),
                    Err(e) => failures.lock().expect("failures").push(format!("{k}: {e}")),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    let failures = failures.lock().expect("failures");
    assert!(
        failures.is_empty(),
        "{} of {} writes at {level} failed, e.g. {:?}",
        failures.len(),
        items.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

pub fn counter(status: &Value, section: &str, name: &str) -> u64 {
    status[section][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {section}.{name} in {status}"))
}

/// The value of `ringkv_<name>_total` in `/metrics`.
pub fn metric(c: &Cluster, i: usize, name: &str) -> u64 {
    let text = c.node(i).client().get("/metrics").text();
    let prefix = format!("ringkv_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

#[test]
fn hints_bring_a_restarted_node_up_to_date() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let generation = wait_converged(&c, 0, 2);
    wait_converged(&c, 1, 2);

    c.node_mut(2).kill9();
    let items: Vec<(String, String)> = (0..1000)
        .map(|i| {
            (
                format!("hint-{i:04}"),
                format!("value-{i}-{}", "h".repeat(32)),
            )
        })
        .collect();
    let t = Instant::now();
    let bases = [c.node(0).base_url(), c.node(1).base_url()];
    write_all(&bases, &items, "quorum", 4);
    eprintln!(
        "[faults] 1000 quorum writes with n3 down took {:?}",
        t.elapsed()
    );
    // Every write left one hint for n3 (stored after the answer, maybe).
    c.wait_until(SLOW, "1000 hints for n3 are pending", || {
        let p = pending_hints(&c, &[0, 1], "n3");
        if p.iter().sum::<u64>() >= 1000 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("pending {p:?}"))
        }
    });

    let restarted = Instant::now();
    c.node_mut(2).start();
    for observer in [0, 1] {
        let now = wait_converged(&c, observer, 2);
        assert!(
            now > generation,
            "n3's generation went {generation} -> {now}"
        );
    }
    let to_up = restarted.elapsed();
    wait_hints_drained(&c, &[0, 1], "n3");
    let drained = restarted.elapsed() - to_up;
    eprintln!("[faults] restart -> n3 up: {to_up:?}; then hints drained in {drained:?}");
    let replayed: u64 = [0, 1]
        .iter()
        .map(|&i| counter(&c.cluster_status(i), "hints", "replayed"))
        .sum();
    assert!(replayed >= 1000, "only {replayed} hints replayed");

    let n3 = c.node(2);
    let missing: Vec<&String> = items
        .iter()
        .filter(|(k, v)| n3.local_value(k).as_deref() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "n3 lacks {} of 1000 keys after the hints drained, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // And n3 coordinates reads of them like any node.
    for (k, v) in items.iter().step_by(100) {
        let r = n3.client().get(&kv_at(k, Some("one")));
        assert_eq!((r.status, r.text()), (200, v.clone()), "{r}");
    }
}

#[test]
fn a_paused_node_is_marked_down_and_catches_up() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    wait_converged(&c, 0, 2);

    c.node_mut(2).sigstop();
    let paused = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let client = c.node(0).client();
        std::thread::spawn(move || -> Result<(), String> {
            for i in 0..2000 {
                if stop.load(Ordering::SeqCst) || paused.elapsed() > Duration::from_secs(45) {
                    break;
                }
                let (k, v) = (
                    format!("paused-{i:04}"),
                    format!("written-while-paused-{i}"),
                );
                let r = client
                    .send("PUT", &kv_at(&k, Some("quorum")), &[], Some(v.as_bytes()))
                    .map_err(|e| format!("{k}: {e}"))?;
                if r.status != 201 {
                    return Err(format!("{k}: {r}"));
                }
                acked.lock().expect("acked").push((k, v));
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };
    wait_member(&c, 0, "n3", "down");
    let to_down = paused.elapsed();
    let at_down = acked.lock().expect("acked").len();
    c.wait_until(SLOW, "20 more writes after n3 was marked down", || {
        let n = acked.lock().expect("acked").len();
        if n >= at_down + 20 || writer.is_finished() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{n} writes"))
        }
    });
    stop.store(true, Ordering::SeqCst);
    let result = writer.join().expect("writer thread");
    // The writes after the conviction went to hints at once.
    let after_down = acked.lock().expect("acked").len() - at_down;
    c.wait_until(SLOW, "hints for the paused n3 are pending", || {
        let p = pending_hints(&c, &[0, 1], "n3");
        if p.iter().sum::<u64>() >= after_down as u64 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("pending {p:?}"))
        }
    });
    c.node_mut(2).sigcont();
    let resumed = Instant::now();
    result.unwrap_or_else(|e| panic!("a quorum write failed while n3 was paused: {e}"));
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() >= at_down + 20, "{} writes", acked.len());
    eprintln!(
        "[faults] SIGSTOP -> n3 down on n1: {to_down:?}; {} writes while paused ({} after down)",
        acked.len(),
        acked.len() - at_down
    );

    wait_member(&c, 0, "n3", "up");
    let to_up = resumed.elapsed();
    wait_hints_drained(&c, &[0, 1], "n3");
    eprintln!(
        "[faults] SIGCONT -> n3 up on n1: {to_up:?}; hints drained after {:?}",
        resumed.elapsed()
    );
    let n3 = c.node(2);
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(k, v)| n3.local_value(k).as_deref() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "n3 lacks {} of {} writes made while it was paused, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Runs an anti-entropy pass on node `i`; answers its summary.
pub fn repair(c: &Cluster, i: usize) -> Value {
    let r = c
        .node(i)
        .client()
        .call("POST", "/v1/admin/repair", &[], None);
    assert_eq!(r.status, 200, "repair on n{}: {r}", i + 1);
    r.json()
}

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

#[test]
fn cluster_status_reports_liveness() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let own: Vec<u64> = (0..3)
        .map(|i| {
            c.cluster_status(i)["generation"]
                .as_u64()
                .expect("generation")
        })
        .collect();
    assert!(own.iter().all(|&g| g >= 1), "generations {own:?}");
    // Gossip converges: every node learns every member's generation (a
    // member not heard from yet shows generation 0) and sees it up.
    for i in 0..3 {
        let what = format!("n{} sees every member up at its generation", i + 1);
        c.wait_until(SLOW, &what, || {
            let s = c.cluster_status(i);
            let ok = (0..3).all(|j| {
                let m = member(&s, &c.node(j).id);
                m["status"] == "up" && m["generation"].as_u64() == Some(own[j])
            });
            if ok {
                Poll::Ready(())
            } else {
                Poll::Pending(s["members"].to_string())
            }
        });
    }
    for (i, node) in c.nodes.iter().enumerate() {
        let s = node.cluster_status();
        assert_eq!(s["node"], node.id.as_str(), "{s}");
        assert_eq!(s["replication"]["n"], 3, "{s}");
        let members = s["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{s}");
        let mut share = 0.0;
        for (j, m) in members.iter().enumerate() {
            let id = m["id"].as_str().expect("id");
            let is_self = id == node.id;
            assert_eq!(m["self"], is_self, "{m}");
            assert_eq!(m["status"], "up", "{m}");
            let j = c.nodes.iter().position(|n| n.id == id).unwrap_or(j);
            assert_eq!(
                m["generation"].as_u64(),
                Some(own[j]),
                "{id} seen by n{}",
                i + 1
            );
            assert!(m["heartbeat"].is_u64(), "{m}");
            if is_self {
                assert!(m["phi"].is_null() && m["last_seen_ms_ago"].is_null(), "{m}");
            } else {
                let phi = m["phi"].as_f64().expect("phi");
                assert!((0.0..8.0).contains(&phi), "an up peer with phi {phi}: {m}");
                let seen = m["last_seen_ms_ago"].as_u64().expect("last_seen_ms_ago");
                assert!(seen < 10_000, "{m}");
            }
            let s = m["owned_share"].as_f64().expect("owned_share");
            assert!(s > 0.1 && s < 0.6, "{m}");
            share += s;
            assert_eq!(m["pending_hints"], 0, "{m}");
        }
        assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
    }

    c.node_mut(2).kill9();
    let down = wait_member(&c, 0, "n3", "down");
    let phi = down["phi"].as_f64().expect("phi of a down peer");
    assert!(phi >= 8.0, "down at phi {phi}: {down}");
    let seen = down["last_seen_ms_ago"].as_u64().expect("last_seen_ms_ago");
    std::thread::sleep(Duration::from_millis(300));
    let later = status_of(&c, 0, "n3");
    assert!(
        later["last_seen_ms_ago"].as_u64() > Some(seen),
        "{down} then {later}"
    );
    assert_eq!(later["status"], "down", "{later}");

    // A write while n3 is down leaves exactly one hint for it.
    let r = c
        .node(0)
        .client()
        .put(&kv_at("while-down", Some("quorum")), b"x");
    assert_eq!(r.status, 201, "{r}");
    c.wait_until(SLOW, "one hint for n3 is pending", || {
        let p = pending_hints(&c, &[0, 1], "n3");
        if p.iter().sum::<u64>() == 1 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{p:?}"))
        }
    });
    let s = c.cluster_status(0);
    let total: u64 = (0..2)
        .map(|i| counter(&c.cluster_status(i), "hints", "pending"))
        .sum();
    assert_eq!(total, 1, "{s}");
}
