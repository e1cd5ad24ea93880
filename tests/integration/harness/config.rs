//! Harness: ports and configuration.

use super::*;

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
    /// Standby nodes by index (`initial = false`: in no layout until joined).
    pub standby: Vec<bool>,
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
            standby: vec![false; nodes],
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

    /// Makes node `index` a standby node (`initial = false`).
    pub fn standby(mut self, index: usize) -> Self {
        self.standby[index] = true;
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
                    standby: self.standby[i],
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
    /// `initial = false`, written only when set.
    pub standby: bool,
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
        if self.standby {
            t.push_str("initial = false\n");
        }
        t
    }
}
