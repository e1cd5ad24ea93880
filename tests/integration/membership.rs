//! Membership changes on real processes (ARCHITECTURE.md, "Membership
//! changes"): a standby node joins a loaded cluster and leaves it again
//! while writes go on; every acknowledged write stays readable at quorum
//! from every member, the new owner physically holds every key of the
//! partitions it gained (written before and during the change), replicas
//! end with identical Merkle roots, and changes that break a rule are
//! refused with the reason.

use crate::harness::{encode_key, kv_at, wait_until, Cluster, ClusterSpec, Poll};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(90);

fn layout(c: &Cluster, i: usize) -> Option<Value> {
    let r = c.node(i).client().get("/v1/admin/layout");
    (r.status == 200).then(|| r.json())
}

fn change(c: &Cluster, via: usize, op: &str, query: &str) -> crate::harness::Resp {
    c.node(via)
        .client()
        .send("POST", &format!("/v1/admin/layout/{op}?{query}"), &[], None)
        .expect("admin request")
}

/// [`change`], sent again while it answers 503 `not_applied` (no
/// metadata leader yet, as after the leader died).
fn change_when_led(c: &Cluster, via: usize, op: &str, query: &str) -> crate::harness::Resp {
    wait_until(SETTLE, "a metadata leader takes the change", || {
        let r = change(c, via, op, query);
        if r.status == 503 && r.json()["outcome"] == "not_applied" {
            Poll::Pending(r.to_string())
        } else {
            Poll::Ready(r)
        }
    })
}

/// Waits until every node of `nodes` holds one live version, `version`,
/// placing exactly `members`.
fn settled(c: &Cluster, nodes: &[usize], version: u64, members: &[&str]) {
    wait_until(SETTLE, "the change completes on every node", || {
        for &i in nodes {
            let Some(s) = layout(c, i) else {
                return Poll::Pending(format!("{}: no layout", c.node(i).id));
            };
            let versions = s["versions"].as_array().cloned().unwrap_or_default();
            let ids: Vec<String> = versions
                .last()
                .and_then(|v| v["members"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect();
            if versions.len() != 1 || versions[0]["version"] != version || ids != members {
                return Poll::Pending(format!(
                    "{}: {}",
                    c.node(i).id,
                    serde_json::to_string(&s["versions"]).unwrap_or_default()
                ));
            }
        }
        Poll::Ready(())
    })
}

fn value_of(key: &str) -> Vec<u8> {
    // Sizes vary; one key carries a value near the 256 KiB mark, which
    // travels alone in anti-entropy batches.
    let n = if key.ends_with("-big") {
        250_000
    } else {
        64 + key.len() * 7
    };
    key.bytes().cycle().take(n).collect()
}

fn write_keys(c: &Cluster, via: usize, keys: &[String]) {
    for k in keys {
        let r = c
            .node(via)
            .client()
            .put(&kv_at(k, Some("quorum")), &value_of(k));
        assert!(r.status == 201 || r.status == 204, "PUT {k}: {r}");
    }
}

/// Every key reads back with its value at quorum through node `via`.
fn all_readable(c: &Cluster, via: usize, keys: &[String]) {
    for k in keys {
        let r = c.node(via).client().get(&kv_at(k, Some("quorum")));
        assert_eq!(r.status, 200, "{} GET {k}: {r}", c.node(via).id);
        assert!(
            r.body == value_of(k),
            "{} GET {k}: wrong value",
            c.node(via).id
        );
    }
}

/// The replicas of each key's partition in the ring node `via` routes by.
fn owners(c: &Cluster, via: usize, keys: &[String]) -> BTreeMap<String, Vec<String>> {
    let ring = c.node(via).client().get("/v1/ring").json();
    let bits = ring["partition_bits"].as_u64().unwrap() as u32;
    keys.iter()
        .map(|k| {
            let token = ringkv_actors::token::key_token(k.as_bytes());
            let p = if bits == 0 { 0 } else { token >> (64 - bits) } as usize;
            let set = ring["replicas"][p]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (k.clone(), set)
        })
        .collect()
}

/// Every pair of `members` agrees on the partitions they share.
fn roots_agree(c: &Cluster, members: &[usize]) {
    wait_until(SETTLE, "replicas hold identical Merkle roots", || {
        let roots: Vec<Value> = members
            .iter()
            .map(|&i| c.node(i).client().get("/v1/admin/merkle").json()["roots"].clone())
            .collect();
        for (a, &i) in members.iter().enumerate() {
            for (b, &j) in members.iter().enumerate() {
                let (x, y) = (&roots[a][&c.node(j).id], &roots[b][&c.node(i).id]);
                if i != j && x != y {
                    return Poll::Pending(format!(
                        "{} and {} differ: {x} vs {y}",
                        c.node(i).id,
                        c.node(j).id
                    ));
                }
            }
        }
        Poll::Ready(())
    })
}

#[test]
fn a_standby_node_joins_a_loaded_cluster_and_leaves_it_and_nothing_is_lost() {
    let spec = ClusterSpec::fast(4, 3)
        .standby(3)
        .cluster_toml("partitions = 64")
        .section_toml("repair", "bandwidth_bytes_per_sec = 67108864");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    settled(&c, &[0, 1, 2, 3], 1, &["n1", "n2", "n3"]);

    // A standby node coordinates nothing, and says why.
    let r = c.node(3).client().get(&kv_at("k", Some("quorum")));
    r.expect_error(503, "not_a_member");

    let mut keys: Vec<String> = (0..300).map(|i| format!("before-{i}")).collect();
    keys.push("before-big".into());
    write_keys(&c, 0, &keys);

    // Refused: too few members left; an unknown node; a node not placed.
    change(&c, 1, "leave", "node=n1").expect_error(409, "change_refused");
    change(&c, 1, "join", "node=n9").expect_error(409, "change_refused");
    change(&c, 1, "remove", "node=n4").expect_error(409, "change_refused");
    change(&c, 1, "dance", "node=n4").expect_error(400, "invalid_change");
    // A live node is never skipped without force.
    change(&c, 1, "skip", "node=n3").expect_error(409, "change_refused");

    // The join, proposed through n2; writes go on while data moves.
    let r = change(&c, 1, "join", "node=n4");
    assert_eq!(r.status, 200, "{r}");
    let plan = r.json();
    assert_eq!(plan["version"], 2, "{plan}");
    let moved = plan["moved_partitions"].as_u64().unwrap();
    // N = 3 on 3 → 4 nodes: n4 takes a quarter of the replicas, each move
    // one partition's set (ideal 48 of 64 partitions change).
    assert!((40..=64).contains(&moved), "{plan}");
    // A second change while this one is in flight is refused.
    let again = change(&c, 0, "join", "node=n4");
    again.expect_error(409, "change_refused");
    let during: Vec<String> = (0..150).map(|i| format!("during-{i}")).collect();
    write_keys(&c, 2, &during);
    keys.extend(during);
    settled(&c, &[0, 1, 2, 3], 2, &["n1", "n2", "n3", "n4"]);
    c.node_mut(3).standby = false;
    // `ringkv status` shows the four members up and normal, and nothing
    // stuck.
    let addr = c.node(0).http_addr.to_string();
    let st = crate::harness::run_bin(&["status", "--node", &addr], Duration::from_secs(20));
    assert!(st.status.success(), "{}", st.stderr);
    for id in ["n1", "n2", "n3", "n4"] {
        let line = st
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id));
        assert!(
            line.is_some_and(|l| l.starts_with("UN")),
            "{id}:\n{}",
            st.stdout
        );
    }
    assert!(!st.stdout.contains("! "), "nothing stuck:\n{}", st.stdout);

    // Invariant 4: n4 holds every key of the partitions it gained.
    let placed = owners(&c, 3, &keys);
    let mine: Vec<&String> = placed
        .iter()
        .filter(|(_, set)| set.iter().any(|n| n == "n4"))
        .map(|(k, _)| k)
        .collect();
    assert!(
        mine.len() > keys.len() / 2,
        "n4 owns {} of {} keys",
        mine.len(),
        keys.len()
    );
    for k in &mine {
        let path = format!("/v1/admin/local/{}", encode_key(k.as_bytes()));
        let r = c.node(3).client().get(&path);
        assert_eq!(r.status, 200, "n4 lacks {k}: {r}");
    }
    // Its transfers say what moved: every gained partition pulled.
    let t = c.node(3).client().get("/v1/admin/transfers").json();
    let list = t["transfers"].as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{t}");
    assert!(list.iter().all(|x| x["state"] == "done"), "{t}");
    let pulled: u64 = list.iter().map(|x| x["keys"].as_u64().unwrap_or(0)).sum();
    assert!(pulled > 0, "{t}");
    eprintln!("n4 pulled {pulled} keys in {} partitions", list.len());
    let metrics = c.node(3).client().get("/metrics").text();
    let done = format!(
        "ringkv_transfer_partitions{{state=\"done\"}} {}",
        list.len()
    );
    assert!(metrics.contains(&done), "{done} not in /metrics");
    assert!(metrics.contains(&format!("ringkv_transfer_keys {pulled}")));
    for i in 0..4 {
        all_readable(&c, i, &keys);
    }
    roots_agree(&c, &[0, 1, 2, 3]);
    // Invariant 6: once version 1 is dropped, n1 deletes what it gave away.
    let lost_by_n1: Vec<&String> = placed
        .iter()
        .filter(|(_, set)| !set.iter().any(|n| n == "n1"))
        .map(|(k, _)| k)
        .collect();
    assert!(!lost_by_n1.is_empty());
    wait_until(SETTLE, "n1 drops the data it no longer holds", || {
        let left = lost_by_n1
            .iter()
            .filter(|k| {
                let path = format!("/v1/admin/local/{}", encode_key(k.as_bytes()));
                c.node(0).client().get(&path).status != 404
            })
            .count();
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{left} records left"))
        }
    });

    // n4 leaves again, while writes go on; then it owns nothing.
    let r = change(&c, 0, "leave", "node=n4");
    assert_eq!(r.status, 200, "{r}");
    let after: Vec<String> = (0..100).map(|i| format!("leaving-{i}")).collect();
    write_keys(&c, 0, &after);
    keys.extend(after);
    settled(&c, &[0, 1, 2, 3], 3, &["n1", "n2", "n3"]);
    c.node_mut(3).standby = true;
    let started = Instant::now();
    for i in 0..3 {
        all_readable(&c, i, &keys);
    }
    eprintln!(
        "read {} keys from 3 nodes in {:?}",
        keys.len(),
        started.elapsed()
    );
    roots_agree(&c, &[0, 1, 2]);
    c.node(3)
        .client()
        .get(&kv_at("k", Some("quorum")))
        .expect_error(503, "not_a_member");
    // n4 left: it deletes everything it held.
    wait_until(SETTLE, "n4 drops all its data", || {
        let held = keys
            .iter()
            .step_by(5)
            .filter(|k| {
                let path = format!("/v1/admin/local/{}", encode_key(k.as_bytes()));
                c.node(3).client().get(&path).status != 404
            })
            .count();
        if held == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{held} sampled records left"))
        }
    });

    // A node whose consensus log is lost after the changes routes by the
    // history it saved (version 3), never by its configured layout.
    c.node_mut(1).kill9();
    std::fs::write(c.node(1).data_dir.join("meta.redb"), b"not a database").unwrap();
    c.node_mut(1).spawn();
    c.node_mut(1).wait_healthy().expect("n2 restarts");
    let ring = c.node(1).client().get("/v1/ring").json();
    assert_eq!(ring["layout_version"], 3, "{ring}");
    c.node(1)
        .client()
        .get("/v1/admin/layout")
        .expect_error(503, "meta_unavailable");
    c.wait_replicas_reachable();
    write_keys(&c, 1, &["after-amnesia".to_string()]);
    all_readable(&c, 0, &["after-amnesia".to_string()]);
}

/// The `versions` of every node in `nodes`, as JSON text.
fn histories(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| {
            layout(c, i)
                .map(|s| s["versions"].to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn concurrent_joins_agree_and_dead_nodes_are_replaced_and_removed() {
    let spec = ClusterSpec::fast(5, 3)
        .standby(3)
        .standby(4)
        .cluster_toml("partitions = 32");
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    settled(&c, &[0, 1, 2, 3, 4], 1, &["n1", "n2", "n3"]);
    let mut keys: Vec<String> = (0..200).map(|i| format!("k-{i}")).collect();
    write_keys(&c, 0, &keys);

    // Two operators join two nodes through two nodes at once: one change
    // wins, the other is refused, and every node holds one history.
    let answers: Vec<(String, u16)> = std::thread::scope(|s| {
        let joins: Vec<_> = [(0, "n4"), (1, "n5")]
            .into_iter()
            .map(|(via, id)| {
                let c = &c;
                s.spawn(move || {
                    (
                        id.to_string(),
                        change(c, via, "join", &format!("node={id}")).status,
                    )
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let won: Vec<&String> = answers
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(won.len(), 1, "exactly one join applies: {answers:?}");
    assert!(
        answers.iter().all(|(_, s)| *s == 200 || *s == 409),
        "{answers:?}"
    );
    let (x, y) = if won[0] == "n4" {
        ("n4", "n5")
    } else {
        ("n5", "n4")
    };
    let (xi, yi) = if x == "n4" { (3, 4) } else { (4, 3) };
    let mut members = vec!["n1", "n2", "n3", x];
    members.sort();
    settled(&c, &[0, 1, 2, 3, 4], 2, &members);
    let h = histories(&c, &[0, 1, 2, 3, 4]);
    assert!(h.iter().all(|v| v == &h[0]), "one history: {h:?}");
    c.node_mut(xi).standby = false;

    // n2 dies; the other standby node replaces it, pulling n2's partitions
    // from the surviving replicas.
    c.node_mut(1).kill9();
    crate::faults::wait_member(&c, 0, "n2", "down");
    change_when_led(&c, 0, "leave", "node=n2").expect_error(409, "change_refused");
    let r = change_when_led(&c, 0, "replace", &format!("node=n2&with={y}"));
    assert_eq!(r.status, 200, "{r}");
    assert!(r.json()["at_risk"].is_array(), "{r}");
    let mut members = vec!["n1", "n3", "n4", "n5"];
    members.sort();
    let alive = [0, 2, 3, 4];
    settled(&c, &alive, 3, &members);
    c.node_mut(yi).standby = false;
    let more: Vec<String> = (0..50).map(|i| format!("after-replace-{i}")).collect();
    write_keys(&c, 2, &more);
    keys.extend(more);
    for &i in &alive {
        all_readable(&c, i, &keys);
    }
    roots_agree(&c, &alive);

    // The first joined node dies too and is removed: back to 3 members,
    // every key still there.
    c.node_mut(xi).kill9();
    crate::faults::wait_member(&c, 0, x, "down");
    let r = change_when_led(&c, 0, "remove", &format!("node={x}"));
    assert_eq!(r.status, 200, "{r}");
    let alive = [0, 2, yi];
    let mut members = vec!["n1", "n3", y];
    members.sort();
    settled(&c, &alive, 4, &members);
    for &i in &alive {
        all_readable(&c, i, &keys);
    }
    roots_agree(&c, &alive);
}

/// A gauge without labels from node `i`'s `/metrics` (0 when absent).
fn gauge(c: &Cluster, i: usize, name: &str) -> u64 {
    let text = c.node(i).client().get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The new owner is killed in the middle of pulling its share and
/// restarted: the change completes, nothing is lost, and what it pulls
/// after the restart is what it still lacked (plus at most about one
/// batch), not its whole share again.
#[test]
fn a_new_owner_killed_mid_transfer_resumes_without_pulling_everything_again() {
    const VALUE: usize = 2048;
    const BANDWIDTH: u64 = 200_000;
    let spec = ClusterSpec::fast(4, 3)
        .standby(3)
        .cluster_toml("partitions = 64")
        .section_toml("repair", &format!("bandwidth_bytes_per_sec = {BANDWIDTH}"));
    let mut c = Cluster::start(spec);
    c.wait_replicas_reachable();
    settled(&c, &[0, 1, 2, 3], 1, &["n1", "n2", "n3"]);
    let keys: Vec<String> = (0..1200).map(|i| format!("resume-{i:04}")).collect();
    for k in &keys {
        let r = c
            .node(0)
            .client()
            .put(&kv_at(k, Some("quorum")), &[b'v'; VALUE]);
        assert_eq!(r.status, 201, "PUT {k}: {r}");
    }
    assert_eq!(change(&c, 0, "join", "node=n4").status, 200);
    // n4 gains about 3/4 of the data (N = 3 on 4 nodes).
    let total: u64 = keys.iter().map(|k| (k.len() + VALUE) as u64).sum();
    let before = wait_until(SETTLE, "n4 pulled part of its share", || {
        let b = gauge(&c, 3, "ringkv_transfer_bytes");
        if b >= total * 3 / 10 {
            Poll::Ready(b)
        } else {
            Poll::Pending(format!("{b} of about {} bytes", total * 3 / 4))
        }
    });
    c.node_mut(3).kill9();
    c.node_mut(3).spawn();
    c.node_mut(3).wait_healthy().expect("n4 restarts");
    settled(&c, &[0, 1, 2, 3], 2, &["n1", "n2", "n3", "n4"]);
    let after = gauge(&c, 3, "ringkv_transfer_bytes");
    // The share n4 gained, in the bytes anti-entropy counts (key + value).
    let share: u64 = owners(&c, 3, &keys)
        .iter()
        .filter(|(_, set)| set.iter().any(|n| n == "n4"))
        .map(|(k, _)| (k.len() + VALUE) as u64)
        .sum();
    // A batch is at most 256 keys (anti-entropy's MOVE_KEYS).
    let batch = 256 * (VALUE as u64 + 16);
    eprintln!(
        "share {share} B; pulled before the kill (seen) {before} B, after the restart {after} B; \
         re-sent at most {} B",
        (before + after).saturating_sub(share)
    );
    assert!(
        after <= share - before + batch,
        "after the restart n4 pulled {after} B of a {share} B share it had pulled {before} B of"
    );
    c.node_mut(3).standby = false;
    for i in 0..4 {
        for k in keys.iter().step_by(7) {
            let r = c.node(i).client().get(&kv_at(k, Some("quorum")));
            assert_eq!(r.status, 200, "{} GET {k}: {r}", c.node(i).id);
        }
    }
    roots_agree(&c, &[0, 1, 2, 3]);
}
