//! Faults on a running cluster: a node killed or paused while writes go on
//! (hinted handoff), stale replicas (anti-entropy, read repair), tombstones
//! against a node that was down longer than the grace period, skewed clocks,
//! and what `GET /v1/cluster` reports about liveness.

use crate::harness::{kv_at, member, metric, Client, Cluster, ClusterSpec, Poll, Resp};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod clock;
mod handoff;
mod repair;

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

/// Runs an anti-entropy pass on node `i`; answers its summary.
pub fn repair(c: &Cluster, i: usize) -> Value {
    let r = c
        .node(i)
        .client()
        .call("POST", "/v1/admin/repair", &[], None);
    assert_eq!(r.status, 200, "repair on n{}: {r}", i + 1);
    r.json()
}
