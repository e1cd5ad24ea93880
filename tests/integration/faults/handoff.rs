//! Faults: hinted handoff to a restarted or paused node, and what
//! `GET /v1/cluster` reports about liveness.

use super::*;

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
