//! Several nodes as one cluster: reads through any node at every level,
//! placement by the ring, node failures against consistency levels, the client
//! CLI and `ringkv up`.

use crate::harness::{
    expect_unavailable, kv, kv_at, run_bin, wait_until, Client, Cluster, ClusterSpec, Poll, Resp,
    BIN,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every level a request can name; `None` is the configured default.
const LEVELS: [Option<&str>; 4] = [Some("one"), Some("quorum"), Some("all"), None];

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Asserts a 200 with `value` and `etag`.
fn assert_read(r: &Resp, value: &str, etag: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r}");
    assert_eq!(r.text(), value, "{what}: {r}");
    assert_eq!(r.etag(), etag, "{what}: ETag of {r}");
}

#[test]
fn writes_are_read_through_every_node_at_every_level() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let clients: Vec<Client> = c.nodes.iter().map(|n| n.client()).collect();

    // Written at `all`: every replica holds it when the write is answered.
    let r = clients[0].put(&kv_at("alpha", Some("all")), b"v-alpha");
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.header("x-ringkv-hinted-acks"), Some("0"), "{r}");
    let etag = r.etag();
    for node in &c.nodes {
        let local = node
            .local("alpha")
            .unwrap_or_else(|| panic!("{} holds no record after a write at all", node.id));
        assert_eq!(local["value_utf8"], "v-alpha", "{}: {local}", node.id);
        assert_eq!(local["etag"], unquoted(&etag), "{}: {local}", node.id);
        assert_eq!(local["tombstone"], false, "{}: {local}", node.id);
    }
    for (i, client) in clients.iter().enumerate().skip(1) {
        for level in LEVELS {
            let r = client.get(&kv_at("alpha", level));
            assert_read(&r, "v-alpha", &etag, &format!("n{} at {level:?}", i + 1));
        }
    }

    // Written at the default level (w = 2 of 3): quorum, all and the default
    // (r = 2) overlap the write at once; `one` may ask the replica the write
    // has not reached yet, but it gets there.
    let r = clients[0].put(&kv("beta"), b"v-beta");
    assert_eq!(r.status, 201, "{r}");
    let beta = r.etag();
    for (i, client) in clients.iter().enumerate().skip(1) {
        for level in [Some("quorum"), Some("all"), None] {
            let r = client.get(&kv_at("beta", level));
            assert_read(&r, "v-beta", &beta, &format!("n{} at {level:?}", i + 1));
        }
        wait_until(Duration::from_secs(10), "`one` reads v-beta", || {
            let r = client.get(&kv_at("beta", Some("one")));
            if r.status == 200 && r.text() == "v-beta" {
                Poll::Ready(())
            } else {
                Poll::Pending(r.to_string())
            }
        });
    }

    // An overwrite through n2 is read through n1 and n3 at quorum.
    let r = clients[1].put(&kv_at("alpha", Some("quorum")), b"v-alpha-2");
    assert_eq!(r.status, 204, "{r}");
    let etag2 = r.etag();
    assert_ne!(etag2, etag);
    for i in [0, 2] {
        let r = clients[i].get(&kv_at("alpha", Some("quorum")));
        assert_read(
            &r,
            "v-alpha-2",
            &etag2,
            &format!("n{} after overwrite", i + 1),
        );
    }

    // A delete through n3 at all: gone at every level through n1 and n2.
    let r = clients[2].delete(&kv_at("alpha", Some("all")));
    assert_eq!(r.status, 204, "{r}");
    for client in &clients[..2] {
        for level in LEVELS {
            let r = client.get(&kv_at("alpha", level));
            r.expect_error(404, "not_found");
        }
    }
}

/// The seed in `/v1/ring`'s `hash_function`, e.g. `xxhash64(seed=0x72696e676b76)`.
fn ring_seed(hash_function: &str) -> u64 {
    assert!(
        hash_function.starts_with("xxhash64("),
        "unexpected hash function {hash_function:?}"
    );
    let hex = hash_function
        .split("seed=0x")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no seed in {hash_function:?}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("seed {hex:?}: {e}"))
}

/// The layout as a client computes placement from `GET /v1/ring`.
struct ClientLayout {
    seed: u64,
    bits: u32,
    /// Per partition, its replicas, primary first.
    replicas: Vec<Vec<String>>,
}

impl ClientLayout {
    fn from_json(ring: &Value) -> ClientLayout {
        let seed = ring_seed(ring["hash_function"].as_str().expect("hash_function"));
        let bits = ring["partition_bits"].as_u64().expect("partition_bits") as u32;
        let q = ring["partitions"].as_u64().expect("partitions") as usize;
        assert_eq!(q, 1 << bits, "{ring}");
        let replicas: Vec<Vec<String>> = ring["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|set| {
                set.as_array()
                    .expect("a replica set")
                    .iter()
                    .map(|id| id.as_str().expect("an id").to_string())
                    .collect()
            })
            .collect();
        assert_eq!(replicas.len(), q, "one replica set per partition");
        ClientLayout {
            seed,
            bits,
            replicas,
        }
    }

    /// The replicas of the key's partition: the top `bits` bits of its
    /// token.
    fn preference_list(&self, key: &[u8], n: usize) -> Vec<String> {
        let token = twox_hash::XxHash64::oneshot(self.seed, key);
        let p = if self.bits == 0 {
            0
        } else {
            (token >> (64 - self.bits)) as usize
        };
        self.replicas[p].iter().take(n).cloned().collect()
    }
}

#[test]
fn keys_live_on_the_replicas_computed_from_the_layout() {
    let mut c = Cluster::start(ClusterSpec::fast(4, 3));
    c.wait_replicas_reachable();
    let ring_json = c.node(0).client().get("/v1/ring").json();
    assert_eq!(ring_json["replication_factor"], 3, "{ring_json}");
    let members: Vec<&str> = ring_json["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(members.len(), 4, "{ring_json}");
    for node in &c.nodes[1..] {
        let other = node.client().get("/v1/ring").json();
        assert_eq!(
            other["members"], ring_json["members"],
            "{} routes by another ring",
            node.id
        );
    }
    let ring = ClientLayout::from_json(&ring_json);

    let mut left_out = BTreeSet::new();
    for k in 0..12 {
        let key = format!("placement-{k}");
        let pref = ring.preference_list(key.as_bytes(), 3);
        assert_eq!(pref.len(), 3, "{pref:?}");
        let via = c.node(k % 4).client();
        let r = via.put(&kv_at(&key, Some("all")), key.as_bytes());
        assert_eq!(r.status, 201, "{key} via n{}: {r}", k % 4 + 1);
        assert_eq!(r.header("x-ringkv-hinted-acks"), Some("0"), "{r}");
        for node in &c.nodes {
            let held = node.local(&key);
            if pref.contains(&node.id) {
                let rec = held.unwrap_or_else(|| {
                    panic!(
                        "{key}: {} is on the preference list {pref:?} but holds nothing",
                        node.id
                    )
                });
                assert_eq!(rec["value_utf8"], key.as_str(), "{key} on {}", node.id);
            } else {
                left_out.insert(node.id.clone());
                assert!(
                    held.is_none(),
                    "{key}: {} is not on the preference list {pref:?} but holds {held:?}",
                    node.id
                );
            }
        }
        // Any node coordinates, replica or not.
        for node in &c.nodes {
            let r = node.client().get(&kv_at(&key, Some("quorum")));
            assert_eq!((r.status, r.text()), (200, key.clone()), "via {}", node.id);
        }
    }
    assert!(
        left_out.len() >= 2,
        "the keys should exercise more than one placement, left out: {left_out:?}"
    );
}

#[test]
fn node_failures_against_consistency_levels() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let (n1, n2) = (c.node(0).client(), c.node(1).client());
    let r = n1.put(&kv_at("early", Some("all")), b"v-early");
    assert_eq!(r.status, 201, "{r}");

    // One node down: quorum reads and writes go on through both survivors.
    c.node_mut(2).kill9();
    for (i, (via, other)) in [(&n1, &n2), (&n2, &n1)].into_iter().enumerate() {
        let key = format!("one-down-{i}");
        let r = via.put(&kv_at(&key, Some("quorum")), key.as_bytes());
        assert_eq!(r.status, 201, "quorum write with one node down: {r}");
        let r = other.get(&kv_at(&key, Some("quorum")));
        assert_eq!((r.status, r.text()), (200, key.clone()), "{r}");
        let r = via.get(&kv_at("early", Some("quorum")));
        assert_eq!((r.status, r.text().as_str()), (200, "v-early"), "{r}");
    }
    // ... but `all` cannot be met.
    let r = n1.put(&kv_at("all-write", Some("all")), b"x");
    let body = expect_unavailable(&r, "all", 3, 2);
    assert_eq!(body["outcome"], "indeterminate", "{r}");
    // (peer_errors of this answer: see
    // `unavailable_write_names_the_missing_replica`.)
    let r = n2.get(&kv_at("early", Some("all")));
    let body = expect_unavailable(&r, "all", 3, 2);
    assert!(
        body["peer_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{r}"
    );

    // Two nodes down: no quorum; `one` still reads what was written before.
    c.node_mut(1).kill9();
    let r = n1.get(&kv_at("early", Some("quorum")));
    expect_unavailable(&r, "quorum", 2, 1);
    let r = n1.get(&kv("early"));
    expect_unavailable(&r, "default", 2, 1);
    let r = n1.get(&kv_at("early", Some("one")));
    assert_eq!((r.status, r.text().as_str()), (200, "v-early"), "{r}");
    // Sloppy quorum cannot help: with 3 nodes there is no other node to hold
    // hints, and n1's own hints do not count twice.
    let r = n1.put(&kv_at("two-down", Some("quorum")), b"x");
    let body = expect_unavailable(&r, "quorum", 2, 1);
    assert_eq!(body["outcome"], "indeterminate", "{r}");

    // Both come back: `all` works again and sees the quorum writes.
    c.node_mut(1).start();
    c.node_mut(2).start();
    c.wait_replicas_reachable();
    for i in 0..2 {
        let key = format!("one-down-{i}");
        let r = c.node(2).client().get(&kv_at(&key, Some("all")));
        assert_eq!((r.status, r.text()), (200, key.clone()), "{r}");
    }
}

/// A 503 for a write says which replica it could not reach, like a read's
/// does: with sloppy quorum the missing replica's write is stored as a hint at
/// a node that already counted, and that must not hide the failure.
#[test]
fn unavailable_write_names_the_missing_replica() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    c.node_mut(2).kill9();
    let n1 = c.node(0).client();
    let r = n1.put(&kv_at("all-write", Some("all")), b"x");
    let body = expect_unavailable(&r, "all", 3, 2);
    assert_eq!(body["outcome"], "indeterminate", "{r}");
    let errors = body["peer_errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("n3"))),
        "a write at all with n3 down should name n3 in peer_errors: {r}"
    );
}

#[test]
fn client_cli_put_get_del() {
    let mut c = Cluster::start(ClusterSpec::new(3, 3));
    c.wait_replicas_reachable();
    let addr = |i: usize| c.node(i).http_addr.to_string();
    let t = Duration::from_secs(30);

    let put = run_bin(&["put", "cli-key", "cli-value", "--node", &addr(0)], t);
    assert!(put.status.success(), "put: {put:?}");
    assert!(put.stdout.contains("stored"), "put: {put:?}");

    let get = run_bin(&["get", "cli-key", "--node", &addr(1)], t);
    assert!(get.status.success(), "get: {get:?}");
    assert_eq!(get.stdout, "cli-value", "get: {get:?}");
    let get = run_bin(
        &["get", "cli-key", "--node", &addr(2), "--consistency", "all"],
        t,
    );
    assert!(get.status.success(), "get at all: {get:?}");
    assert_eq!(get.stdout, "cli-value", "get at all: {get:?}");

    // A key that needs escaping is stored under exactly its bytes.
    let put = run_bin(&["put", "dir/a key%", "spaced", "--node", &addr(2)], t);
    assert!(put.status.success(), "put: {put:?}");
    let r = c.node(0).client().get(&kv("dir%2Fa%20key%25"));
    assert_eq!((r.status, r.text().as_str()), (200, "spaced"), "{r}");

    let del = run_bin(&["del", "cli-key", "--node", &addr(2)], t);
    assert!(del.status.success(), "del: {del:?}");
    assert!(del.stdout.contains("deleted"), "del: {del:?}");
    let get = run_bin(&["get", "cli-key", "--node", &addr(0)], t);
    assert!(!get.status.success(), "get after del: {get:?}");
    assert!(get.stderr.contains("not found"), "get after del: {get:?}");
    assert_eq!(get.stdout, "", "get after del: {get:?}");
}

/// A `ringkv up` process in its own process group; dropping it kills the
/// whole group (the supervisor and its nodes) if the test did not stop it.
pub struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Up {
    pub fn start(config: &std::path::Path) -> Up {
        Up::start_with(config, &[])
    }

    /// `ringkv up --config CONFIG ARGS…`.
    pub fn start_with(config: &std::path::Path, args: &[&str]) -> Up {
        let mut child = Command::new(BIN)
            .arg("up")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN} up: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        let readers = [out, err]
            .into_iter()
            .map(|pipe| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        match line {
                            Ok(l) => lines.lock().expect("lines").push(l),
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        Up {
            child,
            lines,
            readers,
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group this test created.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn up_runs_every_node_and_sigterm_stops_them() {
    let c = Cluster::create(ClusterSpec::fast(3, 3));
    let mut up = Up::start(&c.config_path);
    for node in &c.nodes {
        let probe = node.client_with_timeout(Duration::from_secs(1));
        wait_until(
            Duration::from_secs(20),
            &format!("{} is healthy", node.id),
            || match probe.send("GET", "/health", &[], None) {
                Ok(r) if r.status == 200 => Poll::Ready(()),
                Ok(r) => Poll::Pending(r.to_string()),
                Err(e) => Poll::Pending(format!("{e}; output so far:\n{}", up.output())),
            },
        );
    }
    // The children form one cluster: a write at `all` reaches all three.
    let n1 = c.node(0).client();
    wait_until(Duration::from_secs(20), "a write at all succeeds", || {
        let r = n1.put(&kv_at("up-key", Some("all")), b"up-value");
        if r.status == 201 || r.status == 204 {
            Poll::Ready(())
        } else {
            Poll::Pending(r.to_string())
        }
    });
    let r = c.node(2).client().get(&kv_at("up-key", Some("all")));
    assert_eq!((r.status, r.text().as_str()), (200, "up-value"), "{r}");

    let pid = up.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = up.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "`ringkv up` did not exit within 15 s of SIGTERM; output:\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "`ringkv up` exited with {status}; output:\n{}",
        up.output()
    );
    for node in &c.nodes {
        assert!(
            !answers(node.http_addr) && !answers(node.peer_addr),
            "{} still answers after `up` exited",
            node.id
        );
    }
    for h in up.readers.drain(..) {
        let _ = h.join();
    }
    let out = up.output();
    for node in &c.nodes {
        let prefix = format!("[{}] ", node.id);
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains("serving HTTP")),
            "no line of {} prefixed {prefix:?} in:\n{out}",
            node.id
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains("stopped cleanly")),
            "{} did not stop cleanly:\n{out}",
            node.id
        );
    }
}

/// `up --only`: the named nodes of the file start on their own (a node
/// restarted beside a running cluster); an id the file does not name is
/// refused before anything starts, naming the file's nodes.
#[test]
fn up_only_starts_the_named_nodes_and_refuses_unknown_ones() {
    let c = Cluster::create(ClusterSpec::fast(3, 3));
    let refused = Command::new(BIN)
        .arg("up")
        .arg("--config")
        .arg(&c.config_path)
        .args(["--only", "n2,n9"])
        .stdin(Stdio::null())
        .output()
        .expect("run ringkv up");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"n9\"") && err.contains("n1, n2, n3"),
        "{err}"
    );
    assert!(
        c.nodes.iter().all(|n| !answers(n.http_addr)),
        "nothing started"
    );
    let up = Up::start_with(&c.config_path, &["--only", "n2"]);
    let probe = c.node(1).client_with_timeout(Duration::from_secs(1));
    wait_until(Duration::from_secs(20), "n2 is healthy", || {
        match probe.send("GET", "/health", &[], None) {
            Ok(r) if r.status == 200 => Poll::Ready(()),
            Ok(r) => Poll::Pending(r.to_string()),
            Err(e) => Poll::Pending(format!("{e}; output so far:\n{}", up.output())),
        }
    });
    for i in [0, 2] {
        let n = c.node(i);
        assert!(!answers(n.http_addr), "{} was not asked for", n.id);
    }
    let out = up.output();
    assert!(
        out.lines().any(|l| l.starts_with("[n2] ")) && !out.lines().any(|l| l.starts_with("[n1] ")),
        "{out}"
    );
}

/// Sweep L2: `up` waited for its nodes forever after SIGTERM, so a node
/// that could not stop (here: stopped with SIGSTOP) kept `up` running.
/// Now a node gets its shutdown grace and ten seconds, then is killed.
#[test]
fn up_kills_a_node_that_does_not_stop_after_its_grace() {
    let spec = ClusterSpec::fast(1, 1).section_toml("http", "shutdown_grace_ms = 500");
    let c = Cluster::create(spec);
    let mut up = Up::start(&c.config_path);
    let probe = c.node(0).client_with_timeout(Duration::from_secs(1));
    wait_until(Duration::from_secs(20), "n1 is healthy", || {
        match probe.send("GET", "/health", &[], None) {
            Ok(r) if r.status == 200 => Poll::Ready(()),
            Ok(r) => Poll::Pending(r.to_string()),
            Err(e) => Poll::Pending(e.to_string()),
        }
    });
    let pid = up.child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children of `up`");
    let node: libc::pid_t = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the node's pid");
    // SAFETY: kill(2) on our own child and grandchild.
    unsafe {
        assert_eq!(libc::kill(node, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(pid as libc::pid_t, libc::SIGTERM), 0);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = up.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`ringkv up` still waits for a stopped node 30 s after SIGTERM:\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10), "killed after {waited:?}");
    for h in up.readers.drain(..) {
        let _ = h.join();
    }
    let out = up.output();
    assert!(out.contains("did not stop within"), "{status}:\n{out}");
    assert!(!answers(c.node(0).http_addr), "n1 still answers");
}
