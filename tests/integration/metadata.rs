//! Cluster metadata agreed by consensus, on real processes (ARCHITECTURE.md,
//! "Cluster metadata"): every node holds the same layout version, the loss
//! of the metadata leader elects another, and losing a majority of voters
//! blocks metadata changes but never reads and writes of data.

use crate::harness::{kv_at, wait_until, Cluster, ClusterSpec, Poll};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);

/// A gauge without labels from node `i`'s `/metrics`.
fn metric_value(c: &Cluster, i: usize, name: &str) -> u64 {
    let text = c.node(i).client().get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

fn layout(c: &Cluster, i: usize) -> Option<Value> {
    let r = c.node(i).client().get("/v1/admin/layout");
    (r.status == 200).then(|| r.json())
}

/// Waits until the nodes `alive` hold the same single version and agree on
/// one leader among themselves; answers (fingerprint, leader, term).
fn agreed(c: &Cluster, alive: &[usize]) -> (String, String, u64) {
    wait_until(
        AGREE,
        "the live nodes agree on the layout and a leader",
        || {
            let seen: Vec<Value> = alive.iter().filter_map(|&i| layout(c, i)).collect();
            if seen.len() != alive.len() {
                return Poll::Pending(format!("{} of {} answered", seen.len(), alive.len()));
            }
            let fingerprints: BTreeSet<String> =
                seen.iter().map(|s| s["versions"].to_string()).collect();
            let leaders: BTreeSet<String> = seen.iter().map(|s| s["leader"].to_string()).collect();
            let one_version = seen
                .iter()
                .all(|s| s["versions"].as_array().map(Vec::len) == Some(1));
            let leader = seen[0]["leader"].as_str().unwrap_or("").to_string();
            let leader_alive = alive.iter().any(|&i| c.node(i).id == leader);
            if fingerprints.len() == 1 && one_version && leaders.len() == 1 && leader_alive {
                let v = &seen[0]["versions"][0];
                Poll::Ready((
                    v["fingerprint"].as_str().unwrap().to_string(),
                    leader,
                    seen.iter()
                        .map(|s| s["term"].as_u64().unwrap())
                        .max()
                        .unwrap(),
                ))
            } else {
                Poll::Pending(format!("{seen:?}"))
            }
        },
    )
}

#[test]
fn nodes_agree_on_the_layout_and_data_outlives_the_loss_of_a_voter_majority() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let (fingerprint, leader, term) = agreed(&c, &[0, 1, 2]);
    let s = layout(&c, 0).unwrap();
    assert_eq!(s["versions"][0]["version"], 1, "{s}");
    assert_eq!(
        s["matches_config"], true,
        "version 1 is the configured layout: {s}"
    );
    assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(metric_value(&c, 0, "ringkv_meta_leader_known"), 1);
    assert_eq!(metric_value(&c, 0, "ringkv_layout_newest_version"), 1);

    // The leader dies: the other two elect one of themselves, in a later
    // term, and still hold the same version.
    let dead = (0..3).find(|&i| c.node(i).id == leader).unwrap();
    c.node_mut(dead).kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let (after, new_leader, new_term) = agreed(&c, &alive);
    assert_eq!(after, fingerprint);
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "{new_term} > {term}");

    // A second node dies: no majority of voters, so no leader; the survivor
    // still answers its layout and serves data at `one`.
    let second = alive[0];
    c.node_mut(second).kill9();
    let last = alive[1];
    let s = wait_until(
        AGREE,
        "the survivor knows it has no leader",
        || match layout(&c, last) {
            Some(s) if s["leader"].is_null() => Poll::Ready(s),
            s => Poll::Pending(format!("{s:?}")),
        },
    );
    assert_eq!(s["versions"][0]["fingerprint"], fingerprint.as_str(), "{s}");
    assert_eq!(metric_value(&c, last, "ringkv_meta_leader_known"), 0);
    let via = c.node(last).client();
    let r = via.put(&kv_at("meta-down", Some("one")), b"still-served");
    assert_eq!(
        r.status, 201,
        "a write at one without a metadata leader: {r}"
    );
    let r = via.get(&kv_at("meta-down", Some("one")));
    assert_eq!((r.status, r.text().as_str()), (200, "still-served"), "{r}");

    // Both come back (from their own meta.redb): one history, one leader.
    c.node_mut(dead).start();
    c.node_mut(second).start();
    let (back, _, _) = agreed(&c, &[0, 1, 2]);
    assert_eq!(back, fingerprint, "the same version 1 after restarts");
}

/// A node whose metadata cannot start (its `meta.redb` is not a database)
/// still serves data, and says why metadata is missing: 503 on
/// `/v1/admin/layout`, `ringkv_meta_running 0`.
#[test]
fn a_broken_consensus_log_never_keeps_data_from_being_served() {
    let mut c = Cluster::create(ClusterSpec::single());
    let dir = c.node(0).data_dir.clone();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("meta.redb"), vec![0x5a; 64 << 10]).unwrap();
    c.start_all().expect("the node starts");
    let client = c.node(0).client();
    let r = client.put(&kv_at("k", None), b"served");
    assert_eq!(r.status, 201, "{r}");
    let r = client.get(&kv_at("k", None));
    assert_eq!((r.status, r.text().as_str()), (200, "served"), "{r}");
    let r = client.get("/v1/admin/layout");
    let body = r.expect_error(503, "meta_unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("meta.redb"),
        "names the file: {body}"
    );
    assert_eq!(metric_value(&c, 0, "ringkv_meta_running"), 0);
}
