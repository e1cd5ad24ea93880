//! Test harness: cluster configs, node processes and HTTP helpers.
//!
//! * [`ClusterSpec`] describes a cluster; [`Cluster::start`] writes its TOML
//!   into a fresh temporary directory and starts one [`Node`] process per
//!   `[[nodes]]` entry (ids `n1`, `n2`, …, free 127.0.0.1 ports, data under
//!   `data/<id>` relative to the config file unless overridden).
//! * [`Node`] owns one `ringkv serve` child process: start, health polling,
//!   kill -9, SIGTERM, restart on the same data, its log. The child is killed
//!   on drop.
//! * [`Client`] / [`Resp`]: blocking HTTP on ureq 2 that never turns a 4xx/5xx
//!   into an error; only transport failures are errors.

#![allow(dead_code)] // not every test module uses every helper

use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The node binary built by cargo for this test crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringkv");
/// How long a node may take to answer `GET /health` after it was spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of every HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of [`Cluster::start`] when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------
// Ports and configuration
// ---------------------------------------------------------------------------

/// `n` distinct free 127.0.0.1 ports, below the kernel's ephemeral range:
/// a port from that range (what binding port 0 gives) can be taken as the
/// source port of some outgoing connection while its node is down, and the
/// node then cannot restart on it. Ports are walked from a per-process
/// random start, so concurrent tests never pick the same one.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = high.saturating_sub(LOW);
    if span < 1_000 {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        return listeners
            .iter()
            .map(|l| l.local_addr().expect("local_addr").port())
            .collect();
    }
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7_919) ^ nanos) % span
    });
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + k) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports below {high}");
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// One free 127.0.0.1 address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]))
}

/// Id of the `i`-th node (0-based): `n1`, `n2`, …
pub fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

/// A TOML basic string literal.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a cluster looks like; [`Cluster::start`] makes it real.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub nodes: usize,
    pub replication_factor: usize,
    /// Extra lines for `[cluster]` (e.g. `r = 2`).
    pub extra_cluster_toml: String,
    /// Extra lines for `[storage]` (e.g. `max_value_bytes = 1000`).
    pub extra_storage_toml: String,
    /// `data_dir` overrides by node index; `None`: `data/<id>` (relative to
    /// the config file).
    pub data_dirs: Vec<Option<PathBuf>>,
    /// Further sections (`gossip`, `hints`, `repair`…) with their lines, in
    /// the order first named.
    pub extra_sections: Vec<(String, String)>,
    /// `clock_offset_ms` by node index (0: not written).
    pub clock_offsets: Vec<i64>,
    /// The `[security]` section (peer TLS on by default, as in production).
    pub security: Security,
}

/// What the harness's `[security]` section turns on. Certificates (a CA and
/// one pair per node under `certs/`) and, with `tokens`, a tokens file with
/// one admin token (which every harness client sends) are made in-process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Security {
    pub peer_tls: bool,
    pub http_tls: bool,
    pub tokens: bool,
    /// `auth_failures_per_minute` (0: not written, the default 10).
    pub auth_failures_per_minute: u32,
}

impl ClusterSpec {
    pub fn new(nodes: usize, replication_factor: usize) -> Self {
        ClusterSpec {
            name: "itest".into(),
            nodes,
            replication_factor,
            extra_cluster_toml: String::new(),
            extra_storage_toml: String::new(),
            data_dirs: vec![None; nodes],
            extra_sections: Vec::new(),
            clock_offsets: vec![0; nodes],
            security: Security {
                peer_tls: true,
                http_tls: false,
                tokens: false,
                auth_failures_per_minute: 0,
            },
        }
    }

    /// No `[security]` section at all: plain TCP between peers, plain HTTP,
    /// no tokens (tests that speak raw TCP to the peer port).
    pub fn plain(mut self) -> Self {
        self.security = Security {
            peer_tls: false,
            http_tls: false,
            tokens: false,
            auth_failures_per_minute: 0,
        };
        self
    }

    /// Everything on: peer mTLS, HTTPS, tokens.
    pub fn secure(mut self) -> Self {
        self.security = Security {
            peer_tls: true,
            http_tls: true,
            tokens: true,
            auth_failures_per_minute: 0,
        };
        self
    }

    /// A cluster tuned for fault tests: gossip every 100 ms (failures are
    /// detected within a second or two), anti-entropy only on demand.
    pub fn fast(nodes: usize, replication_factor: usize) -> Self {
        Self::new(nodes, replication_factor)
            .section_toml("gossip", "interval_ms = 100")
            .section_toml("repair", "anti_entropy_interval_ms = 600000")
    }

    /// One node, replication factor 1.
    pub fn single() -> Self {
        Self::new(1, 1)
    }

    /// Appends a line to `[cluster]`.
    pub fn cluster_toml(mut self, line: &str) -> Self {
        self.extra_cluster_toml.push_str(line);
        self.extra_cluster_toml.push('\n');
        self
    }

    /// Appends a line to `[storage]`.
    pub fn storage_toml(mut self, line: &str) -> Self {
        self.extra_storage_toml.push_str(line);
        self.extra_storage_toml.push('\n');
        self
    }

    /// Appends a line to section `[section]` (other than `[cluster]` and
    /// `[storage]`), creating the section at the first line.
    pub fn section_toml(mut self, section: &str, line: &str) -> Self {
        let i = match self.extra_sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.extra_sections
                    .push((section.to_string(), String::new()));
                self.extra_sections.len() - 1
            }
        };
        let text = &mut self.extra_sections[i].1;
        text.push_str(line);
        text.push('\n');
        self
    }

    /// Gives every node a fault file (`faults-<id>.txt` beside the config;
    /// see [`Node::set_faults`]).
    pub fn with_fault_files(self) -> Self {
        self.section_toml("testing", "fault_file = \"faults-{node}.txt\"")
    }

    /// Shifts node `index`'s wall clock by `ms` (test-only `clock_offset_ms`).
    pub fn clock_offset(mut self, index: usize, ms: i64) -> Self {
        self.clock_offsets[index] = ms;
        self
    }

    /// Puts node `index`'s data directory at `dir` (absolute, or relative to
    /// the config file).
    pub fn data_dir(mut self, index: usize, dir: impl Into<PathBuf>) -> Self {
        self.data_dirs[index] = Some(dir.into());
        self
    }

    /// The `[[nodes]]` entries with fresh free ports.
    pub fn entries(&self) -> Vec<NodeEntry> {
        let ports = free_ports(2 * self.nodes);
        (0..self.nodes)
            .map(|i| {
                let id = node_id(i);
                NodeEntry {
                    http_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                    peer_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                    data_dir: self.data_dirs[i]
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(format!("data/{id}"))),
                    clock_offset_ms: self.clock_offsets[i],
                    id,
                }
            })
            .collect()
    }

    /// The config file's text for these entries.
    pub fn render(&self, entries: &[NodeEntry]) -> String {
        let mut t = String::new();
        t.push_str("[cluster]\n");
        t.push_str(&format!("name = {}\n", toml_str(&self.name)));
        t.push_str(&format!(
            "replication_factor = {}\n",
            self.replication_factor
        ));
        t.push_str(&self.extra_cluster_toml);
        t.push_str("\n[storage]\n");
        t.push_str(&self.extra_storage_toml);
        for (section, lines) in &self.extra_sections {
            t.push_str(&format!("\n[{section}]\n{lines}"));
        }
        let s = self.security;
        if s.peer_tls || s.http_tls || s.tokens {
            t.push_str(&format!(
                "\n[security]\npeer_tls = {}\nhttp_tls = {}\n",
                s.peer_tls, s.http_tls
            ));
            if s.tokens {
                t.push_str("tokens_file = \"tokens.toml\"\n");
            }
            if s.auth_failures_per_minute > 0 {
                t.push_str(&format!(
                    "auth_failures_per_minute = {}\n",
                    s.auth_failures_per_minute
                ));
            }
        }
        for e in entries {
            t.push('\n');
            t.push_str(&e.render());
        }
        t
    }
}

/// One `[[nodes]]` entry as written to the config.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub id: String,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// As written in the TOML (relative paths are relative to the config).
    pub data_dir: PathBuf,
    /// Written only when not 0.
    pub clock_offset_ms: i64,
}

impl NodeEntry {
    pub fn render(&self) -> String {
        let mut t = format!(
            "[[nodes]]\nid = {}\nhttp_addr = {}\npeer_addr = {}\ndata_dir = {}\n",
            toml_str(&self.id),
            toml_str(&self.http_addr.to_string()),
            toml_str(&self.peer_addr.to_string()),
            toml_str(&self.data_dir.to_string_lossy()),
        );
        if self.clock_offset_ms != 0 {
            t.push_str(&format!("clock_offset_ms = {}\n", self.clock_offset_ms));
        }
        t
    }
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A temporary directory with a config file and one [`Node`] per entry.
/// Dropping it kills the nodes, then removes the directory.
pub struct Cluster {
    // Field order matters: nodes drop (and are killed) before the directory.
    pub nodes: Vec<Node>,
    pub spec: ClusterSpec,
    pub entries: Vec<NodeEntry>,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    /// The admin token harness clients send (with `Security::tokens`).
    pub admin_token: Option<String>,
}

/// A development CA and a certificate per node under `dir/certs`, as
/// `ringkv certs init` makes them.
pub fn make_certs(dir: &Path, cluster: &str, entries: &[NodeEntry]) {
    use ringkv_actors::certgen::{Ca, NodeNames, Validity};
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).expect("certs dir");
    let (ca, issued) = Ca::generate(cluster, Validity::days(30)).expect("CA");
    fs::write(certs.join("ca.crt"), &issued.cert_pem).expect("write CA");
    fs::write(certs.join("ca.key"), &issued.key_pem).expect("write CA key");
    for e in entries {
        let names = NodeNames {
            ips: vec![e.http_addr.ip()],
            dns: vec![],
        };
        let pair = ca
            .issue_node(&e.id, &names, Validity::days(30))
            .expect("node cert");
        fs::write(certs.join(format!("{}.crt", e.id)), &pair.cert_pem).expect("write cert");
        fs::write(certs.join(format!("{}.key", e.id)), &pair.key_pem).expect("write key");
    }
}

/// Appends a token with `role` (and `prefix`) to `dir/tokens.toml`.
pub fn add_token(dir: &Path, role: &str, prefix: Option<&str>) -> String {
    let role = role.parse().expect("role");
    let t = ringkv::token_cli::new_token(role, prefix.map(String::from), None, "itest".into())
        .expect("token");
    let record = t.record.clone();
    ringkv::auth::store::TokensFile::update(&dir.join("tokens.toml"), move |f| {
        f.tokens.push(record);
        Ok(())
    })
    .expect("write tokens file");
    t.token
}

/// How harness clients reach a node: the CA to check HTTPS with, the token
/// to send.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
}

impl Cluster {
    /// Writes the config into a new temporary directory; starts nothing.
    pub fn create(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-itest-")
            .tempdir()
            .expect("create temp dir");
        let entries = spec.entries();
        let config_path = dir.path().join("cluster.toml");
        fs::write(&config_path, spec.render(&entries)).expect("write config");
        let s = spec.security;
        if s.peer_tls || s.http_tls {
            make_certs(dir.path(), &spec.name, &entries);
        }
        let admin_token = s.tokens.then(|| add_token(dir.path(), "admin", None));
        let access = Access {
            ca: s.http_tls.then(|| dir.path().join("certs/ca.crt")),
            token: admin_token.clone(),
        };
        let nodes = entries
            .iter()
            .map(|e| Node::new(e, &config_path, dir.path(), access.clone()))
            .collect();
        Cluster {
            nodes,
            spec,
            entries,
            config_path,
            dir,
            admin_token,
        }
    }

    /// A client of node `i` sending `token` (or none) instead of the admin
    /// token.
    pub fn client_with_token(&self, i: usize, token: Option<&str>) -> Client {
        let node = &self.nodes[i];
        Client::for_access(
            node.base_url(),
            HTTP_TIMEOUT,
            &Access {
                ca: node.access.ca.clone(),
                token: token.map(String::from),
            },
        )
    }

    /// Adds a token to the cluster's tokens file; answers it.
    pub fn add_token(&self, role: &str, prefix: Option<&str>) -> String {
        add_token(self.dir.path(), role, prefix)
    }

    /// Creates the cluster and starts every node, waiting until all answer
    /// `/health`. If a picked port was taken by someone else in the meantime,
    /// tries again with fresh ports. Panics with the node's log otherwise.
    pub fn start(spec: ClusterSpec) -> Cluster {
        let mut attempt = 1;
        loop {
            let mut cluster = Cluster::create(spec.clone());
            match cluster.start_all() {
                Ok(()) => return cluster,
                Err(e) if e.is_bind_failure() && attempt < START_ATTEMPTS => {
                    eprintln!(
                        "harness: port taken, retrying with fresh ports: {}",
                        e.reason
                    );
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Spawns every node that is not running, then waits for all of them.
    pub fn start_all(&mut self) -> Result<(), StartFailure> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.spawn();
            }
        }
        for node in &mut self.nodes {
            node.wait_healthy()?;
        }
        Ok(())
    }

    /// Waits until every running node can read at `consistency=all`: a few
    /// probe keys (spread over the ring) answer 200/404 rather than 503 on
    /// each node, i.e. its peer sessions are up. `/health` and `/ready` answer
    /// before that. Best effort for `replication_factor < nodes` (the probes
    /// may not touch every pair). Panics after [`START_TIMEOUT`].
    pub fn wait_replicas_reachable(&mut self) {
        self.wait_peers_reachable();
        self.wait_clocks_vouched();
    }

    /// The first half of [`Cluster::wait_replicas_reachable`]: reads at
    /// `all` work from every running node.
    pub fn wait_peers_reachable(&mut self) {
        const PROBES: usize = 32;
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let c = self.nodes[i].client_with_timeout(Duration::from_secs(2));
            let mut probe = 0;
            while probe < PROBES {
                let path = kv(&format!("__harness-probe-{probe}?consistency=all"));
                match c.send("GET", &path, &[], None) {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        probe += 1;
                        continue;
                    }
                    Ok(r) if Instant::now() >= deadline => panic!(
                        "node {} cannot reach its replicas: {r}\n{}",
                        self.nodes[i].id,
                        self.nodes[i].log()
                    ),
                    Err(e) if Instant::now() >= deadline => {
                        panic!("node {}: GET {path}: {e}", self.nodes[i].id)
                    }
                    _ => std::thread::sleep(Duration::from_millis(25)),
                }
            }
        }
    }

    /// Waits until every running node coordinates writes: gossip has
    /// measured its clock against the cluster's.
    pub fn wait_clocks_vouched(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let c = self.nodes[i].client_with_timeout(Duration::from_secs(2));
            loop {
                match c.send("GET", "/v1/cluster", &[], None) {
                    Ok(r) if r.status == 200 && r.json()["clock"]["vouched"] == true => break,
                    _ if Instant::now() >= deadline => panic!(
                        "node {} never had its clock measured\n{}",
                        self.nodes[i].id,
                        self.nodes[i].log()
                    ),
                    _ => std::thread::sleep(Duration::from_millis(25)),
                }
            }
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The config file's current text.
    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config_path).expect("read config")
    }

    /// A path inside the cluster's temporary directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }
}

// ---------------------------------------------------------------------------
// Node
// ---------------------------------------------------------------------------

/// Why a node did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub node: String,
    pub reason: String,
    pub log: String,
}

impl StartFailure {
    /// The HTTP or peer port was taken (by another test's socket, most
    /// likely).
    pub fn is_bind_failure(&self) -> bool {
        self.log.contains("cannot listen for")
    }
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} did not start: {}\n----- log -----\n{}\n---------------",
            self.node, self.reason, self.log
        )
    }
}

/// One `ringkv serve` process (or the place for one while it is stopped).
pub struct Node {
    pub id: String,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Resolved the way the binary resolves it.
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    /// stdout and stderr of every run of this node, appended.
    pub log_path: PathBuf,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    runs: usize,
    /// What [`Node::client`] uses.
    pub access: Access,
}

impl Node {
    pub fn new(entry: &NodeEntry, config_path: &Path, dir: &Path, access: Access) -> Node {
        let base = config_path.parent().unwrap_or(Path::new("."));
        Node {
            id: entry.id.clone(),
            http_addr: entry.http_addr,
            peer_addr: entry.peer_addr,
            data_dir: base.join(&entry.data_dir),
            config_path: config_path.to_path_buf(),
            log_path: dir.join(format!("{}.log", entry.id)),
            child: None,
            exited: None,
            runs: 0,
            access,
        }
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(!self.is_running(), "node {} is already running", self.id);
        self.runs += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "===== harness: run #{} of node {} =====",
            self.runs, self.id
        )
        .expect("write node log");
        let stderr = log.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg(&self.id)
            .env("RUST_LOG", "info")
            .current_dir(self.config_path.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
        self.exited = None;
    }

    /// Polls `GET /health` until it answers 200; fails if the process exits
    /// or [`START_TIMEOUT`] passes.
    pub fn wait_healthy(&mut self) -> Result<(), StartFailure> {
        let probe = Client::for_access(self.base_url(), Duration::from_secs(1), &self.access);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.failure(format!("the process exited with {status}")));
            }
            if self.child.is_none() {
                return Err(self.failure("the process was never spawned".into()));
            }
            if let Ok(r) = probe.send("GET", "/health", &[], None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!(
                    "GET /health did not answer 200 within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn failure(&self, reason: String) -> StartFailure {
        StartFailure {
            node: self.id.clone(),
            reason,
            log: self.log(),
        }
    }

    /// Spawns and waits until healthy.
    pub fn try_start(&mut self) -> Result<(), StartFailure> {
        self.spawn();
        let r = self.wait_healthy();
        if r.is_err() && self.is_running() {
            self.kill9();
        }
        r
    }

    /// Spawns and waits until healthy; panics with the log otherwise.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Kills the process if it runs (SIGKILL), then starts it again on the
    /// same config, ports and data.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.start();
    }

    /// `kill -9` and reap. No-op if the process is not running.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = child.kill();
                self.exited = Some(child.wait().expect("wait for killed node"));
            }
        }
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the exit; panics
    /// (after kill -9) with the log if it does not exit in time.
    pub fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid().expect("sigterm: node is not running");
        // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "node {} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n----- log -----\n{}",
                    self.id,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the process has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exited = child.try_wait().expect("try_wait");
            }
        }
        self.exited
    }

    /// Spawned and not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Pid of the running process.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(|c| c.id())
        } else {
            None
        }
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.access.ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    /// `http(s)://<http_addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// An HTTP client for this node (over HTTPS, with the admin token, when
    /// the cluster is secured).
    pub fn client(&self) -> Client {
        self.client_with_timeout(HTTP_TIMEOUT)
    }

    /// [`Node::client`] with another request timeout.
    pub fn client_with_timeout(&self, timeout: Duration) -> Client {
        Client::for_access(self.base_url(), timeout, &self.access)
    }

    /// Writes the node's fault file (the node re-reads it within 100 ms; see
    /// the engine's `faults` module). Needs [`ClusterSpec::with_fault_files`].
    pub fn set_faults(&self, text: &str) {
        let dir = self.config_path.parent().unwrap_or(Path::new("."));
        let path = dir.join(format!("faults-{}.txt", self.id));
        let tmp = dir.join(format!(".faults-{}.tmp", self.id));
        fs::write(&tmp, text).expect("write fault file");
        fs::rename(&tmp, &path).expect("install fault file");
        // Let the node's 100 ms poll see it.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Resident memory of the running process in bytes (from /proc).
    pub fn rss_bytes(&mut self) -> u64 {
        let pid = self.pid().expect("rss: node is not running");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc status")
    }

    /// Everything the node printed so far (all runs).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<no log at {}: {e}>", self.log_path.display()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A request that got no HTTP response (refused, reset, timed out…).
pub type TransportError = Box<ureq::Error>;

/// A response, whatever its status.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// Lowercase names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    fn read(r: ureq::Response) -> Result<Resp, TransportError> {
        let status = r.status();
        let mut headers = Vec::new();
        for name in r.headers_names() {
            for v in r.all(&name) {
                headers.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        let mut body = Vec::new();
        r.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| Box::new(ureq::Error::from(e)))?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `ETag` header as sent (with quotes); panics if absent or unquoted.
    pub fn etag(&self) -> String {
        let tag = self
            .header("etag")
            .unwrap_or_else(|| panic!("no ETag header in {self}"));
        assert!(
            tag.len() > 2 && tag.starts_with('"') && tag.ends_with('"'),
            "ETag {tag:?} is not a quoted entity tag"
        );
        tag.to_string()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self}"))
    }

    /// Asserts an error response: `status`, a JSON content type, and a body
    /// `{"error": "<non-empty>", "code": code, ...}`. Returns the body.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}: {self}"
        );
        let v = self.json();
        assert_eq!(v["code"], code, "unexpected error code: {self}");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "no error message: {self}"
        );
        v
    }

    /// Asserts the status, with the whole response in the message.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {:?} body ", self.status, self.headers)?;
        if self.body.len() > 512 {
            let head: String = self.text().chars().take(256).collect();
            write!(f, "({} bytes) {head:?}…", self.body.len())
        } else {
            write!(f, "{:?}", self.text())
        }
    }
}

/// Blocking HTTP client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    /// Sent as `Authorization: Bearer …` unless a request sets its own.
    pub token: Option<String>,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, HTTP_TIMEOUT)
    }

    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        Self::for_access(base, timeout, &Access::default())
    }

    /// A client checking HTTPS against `access.ca` and sending its token.
    pub fn for_access(base: impl Into<String>, timeout: Duration, access: &Access) -> Self {
        let mut agent = ureq::AgentBuilder::new().timeout(timeout).redirects(0);
        if let Some(ca) = &access.ca {
            agent = agent.tls_config(ringkv::client::tls_config(ca).expect("CA file"));
        }
        Client {
            agent: agent.build(),
            base: base.into(),
            token: access.token.clone(),
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> ureq::Request {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        req
    }

    fn finish(r: Result<ureq::Response, ureq::Error>) -> Result<Resp, TransportError> {
        match r {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Resp::read(resp),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Any request; `Err` only for transport failures (connection refused,
    /// reset, timeout…), never for a status code.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, TransportError> {
        let req = self.request(method, path, headers);
        Self::finish(match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        })
    }

    /// Like [`Client::send`], panicking on a transport failure.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.base))
    }

    /// A body sent with `Transfer-Encoding: chunked` (no Content-Length).
    pub fn send_chunked(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let req = self.request(method, path, headers);
        Self::finish(req.send(std::io::Cursor::new(body.to_vec())))
            .unwrap_or_else(|e| panic!("{method} {}{path} (chunked): {e}", self.base))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None)
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call("GET", path, headers, None)
    }

    pub fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], None)
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.call("PUT", path, &[], Some(body))
    }

    pub fn put_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.call("PUT", path, headers, Some(body))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], None)
    }

    pub fn delete_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call("DELETE", path, headers, None)
    }
}

/// `/v1/kv/<raw>`: `raw` goes into the path as is (already percent-encoded).
pub fn kv(raw: &str) -> String {
    format!("/v1/kv/{raw}")
}

/// Percent-encodes every byte except ASCII letters and digits.
pub fn encode_key(key: &[u8]) -> String {
    percent_encode(key, NON_ALPHANUMERIC).to_string()
}

/// Sends `request` as is on a fresh connection and returns everything the
/// server sent until it closed the connection (send `Connection: close`).
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    out
}

// ---------------------------------------------------------------------------
// Running the binary directly
// ---------------------------------------------------------------------------

/// What a process that exited by itself printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ringkv <args>` and waits up to `timeout` for it to exit by itself;
/// panics (after killing it) if it does not.
pub fn run_bin(args: &[&str], timeout: Duration) -> Finished {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!(
                "`ringkv {}` did not exit within {timeout:?}; stderr:\n{stderr}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    Finished {
        status,
        stdout: lossy(out_t.join().unwrap_or_default()),
        stderr: lossy(err_t.join().unwrap_or_default()),
    }
}

// ---------------------------------------------------------------------------
// Polling, cluster status, local records, signals
// ---------------------------------------------------------------------------

/// Pause between two polls of [`wait_until`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `probe` every [`POLL_INTERVAL`] until it answers `Some`, and returns
/// that. Panics naming `what` (and the last probe's note, see [`Poll`]) after
/// `timeout`. The number of attempts is bounded by the timeout.
pub fn wait_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Poll<T>) -> T {
    let deadline = Instant::now() + timeout;
    let max_attempts = (timeout.as_millis() / POLL_INTERVAL.as_millis()).max(1) + 1;
    let mut last = String::new();
    for _ in 0..max_attempts {
        match probe() {
            Poll::Ready(v) => return v,
            Poll::Pending(note) => last = note,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    panic!("timed out after {timeout:?} waiting until {what}; last observation: {last}")
}

/// One observation of [`wait_until`]: done with a value, or not yet (with a
/// note on what was seen, for the failure message).
pub enum Poll<T> {
    Ready(T),
    Pending(String),
}

impl Cluster {
    /// [`wait_until`] for conditions on this cluster.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        probe: impl FnMut() -> Poll<T>,
    ) -> T {
        wait_until(timeout, what, probe)
    }

    /// `GET /v1/cluster` of node `i` as JSON (panics on a transport error or
    /// a status other than 200).
    pub fn cluster_status(&self, i: usize) -> Value {
        self.nodes[i].cluster_status()
    }
}

impl Node {
    /// `GET /v1/cluster` as JSON; panics unless it answers 200.
    pub fn cluster_status(&self) -> Value {
        let r = self.client().get("/v1/cluster");
        r.expect_status(200);
        r.json()
    }

    /// `GET /v1/cluster`, or `None` when the node does not answer (yet).
    pub fn try_cluster_status(&self) -> Option<Value> {
        let c = Client::for_access(self.base_url(), Duration::from_secs(3), &self.access);
        match c.send("GET", "/v1/cluster", &[], None) {
            Ok(r) if r.status == 200 => Some(r.json()),
            _ => None,
        }
    }

    /// This node's own record of `key` (`GET /v1/admin/local/<key>`, no
    /// coordination): `None` on 404 (checked to be the JSON `not_found`).
    pub fn local(&self, key: &str) -> Option<Value> {
        let r = self
            .client()
            .get(&format!("/v1/admin/local/{}", encode_key(key.as_bytes())));
        match r.status {
            200 => Some(r.json()),
            404 => {
                r.expect_error(404, "not_found");
                None
            }
            _ => panic!("node {}: GET /v1/admin/local/{key}: {r}", self.id),
        }
    }

    /// The live value this node stores for `key` (`None`: nothing or a
    /// tombstone).
    pub fn local_value(&self, key: &str) -> Option<String> {
        self.local(key)
            .filter(|v| v["tombstone"] == false)
            .map(|v| {
                v["value_utf8"]
                    .as_str()
                    .unwrap_or("<not utf-8>")
                    .to_string()
            })
    }

    fn signal(&mut self, sig: libc::c_int, name: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{name}: node {} is not running", self.id));
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({name}): {}", std::io::Error::last_os_error());
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but runs nothing.
    /// A stopped node is still killed by [`Node::kill9`] / drop.
    pub fn sigstop(&mut self) {
        self.signal(libc::SIGSTOP, "SIGSTOP");
    }

    /// Resumes a process frozen by [`Node::sigstop`].
    pub fn sigcont(&mut self) {
        self.signal(libc::SIGCONT, "SIGCONT");
    }
}

/// The entry of member `id` in a `/v1/cluster` document.
pub fn member<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("no member {id} in {status}"))
}

/// `/v1/kv/<key>?consistency=<level>` (`key` percent-encoded here; no query
/// for `None`: the configured default).
pub fn kv_at(key: &str, level: Option<&str>) -> String {
    let path = kv(&encode_key(key.as_bytes()));
    match level {
        Some(l) => format!("{path}?consistency={l}"),
        None => path,
    }
}

/// Asserts a 503 `unavailable` answer naming the consistency level, the
/// replicas required and received; returns the body.
pub fn expect_unavailable(r: &Resp, level: &str, required: u64, received: u64) -> Value {
    let v = r.expect_error(503, "unavailable");
    assert_eq!(v["consistency"], level, "consistency in {r}");
    assert_eq!(v["required"], required, "required in {r}");
    assert_eq!(v["received"], received, "received in {r}");
    v
}

/// The value of one series in node `i`'s `/metrics`, named with its labels
/// exactly as rendered (e.g. `ringkv_commits_total` or
/// `ringkv_http_connections_refused_total{cap="total"}`).
pub fn metric_series(c: &Cluster, i: usize, series: &str) -> u64 {
    let text = c.node(i).client().get("/metrics").text();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// A plain TCP connection to `to` from the loopback address `from` (any
/// 127.x.y.z: the node sees a different client address per source).
pub fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Raises this process's soft limit of open files to its hard limit (tests
/// that hold thousands of sockets).
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Descriptors process `pid` holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
