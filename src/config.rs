//! Cluster configuration: one TOML file describes the whole cluster; each node
//! process picks its own entry with `--node`.
//!
//! Loading refuses unknown keys, bad addresses and impossible values with a
//! message that names the file, the key and the reason. Relative data
//! directories are resolved against the config file's directory.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ringkv_actors::limits::{FRAME_OVERHEAD, MAX_KEY_BYTES};
/// Upper bound for `storage.max_value_bytes`.
pub const MAX_VALUE_LIMIT: usize = 64 << 20;
/// Upper bound for `cluster.max_frame_bytes`.
pub const MAX_FRAME_LIMIT: usize = 256 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub gossip: GossipSection,
    #[serde(default)]
    pub hints: HintsSection,
    #[serde(default)]
    pub repair: RepairSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub testing: TestingSection,
    /// Absent: no TLS and no tokens (a loud warning at start).
    pub security: Option<SecuritySection>,
    pub nodes: Vec<NodeSection>,
    /// Where the file was read from (not a TOML key).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    #[serde(default = "defaults::replication_factor")]
    pub replication_factor: usize,
    /// Replicas a read waits for when the request names no level.
    pub r: Option<usize>,
    /// Replicas a write waits for when the request names no level.
    pub w: Option<usize>,
    /// Q, the number of partitions of the token space (a power of two,
    /// fixed when the cluster is created).
    #[serde(default = "defaults::partitions")]
    pub partitions: u32,
    /// No longer a setting (placement is by `partitions`); read only to
    /// refuse it with a clear message.
    #[serde(default)]
    pub vnodes: Option<toml::Value>,
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Deadline of each background call to a peer (a hint batch, an
    /// anti-entropy page, a purge).
    #[serde(default = "defaults::background_timeout_ms")]
    pub background_timeout_ms: u64,
    #[serde(default = "defaults::max_clock_drift_ms")]
    pub max_clock_drift_ms: u64,
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit is fsynced before it is acknowledged.
    Immediate,
    /// Commits are not fsynced: acknowledged writes can be lost on a crash.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "defaults::durability")]
    pub durability: Durability,
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: usize,
    /// Writes are refused (507) when a commit would leave less free space on
    /// the data directory's file system; 0 turns the check off.
    #[serde(default = "defaults::min_free_bytes")]
    pub min_free_bytes: u64,
    /// Concurrent writes share one commit (one fsync). Off: one commit per
    /// write — only for measuring what group commit saves.
    #[serde(default = "defaults::group_commit")]
    pub group_commit: bool,
    /// Bytes of writes waiting for a commit; beyond, writes answer 503
    /// `overloaded` with `Retry-After`.
    #[serde(default = "defaults::max_write_queue_bytes")]
    pub max_write_queue_bytes: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            durability: defaults::durability(),
            max_value_bytes: defaults::max_value_bytes(),
            min_free_bytes: defaults::min_free_bytes(),
            group_commit: defaults::group_commit(),
            max_write_queue_bytes: defaults::max_write_queue_bytes(),
        }
    }
}

/// The client API's own bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Bytes of request bodies a node holds at once (reserved as they
    /// arrive); a body beyond answers 503 `overloaded` with `Retry-After`.
    pub max_inflight_body_bytes: usize,
    /// Of those, what one client (a token, or an address without one) may
    /// hold; 0: a quarter of `max_inflight_body_bytes` (at least
    /// `storage.max_value_bytes`).
    pub max_inflight_body_bytes_per_client: usize,
    /// Client connections open at once; beyond, the one that has waited
    /// longest for its next request is closed to make room (or, when none
    /// can be, the new one answers 503). Lowered to fit the process's
    /// descriptor limit.
    pub max_connections: usize,
    /// Client connections one address (IPv6: one /64) may hold.
    pub max_connections_per_address: usize,
    /// How long an idle connection is kept between requests.
    pub keep_alive_ms: u64,
    /// A request head must be complete this long after its first byte (a
    /// fresh connection's first head, TLS handshake included, after the
    /// accept).
    pub head_timeout_ms: u64,
    /// The longest pause between the bytes of a request head or body, and
    /// the longest a response write may stay blocked.
    pub idle_timeout_ms: u64,
    /// A request body must arrive within this.
    pub body_timeout_ms: u64,
    /// After its first 5 s, a request body must have arrived at this rate
    /// on average (0: no minimum).
    pub min_body_bytes_per_sec: u64,
    /// The longest a request's handler may run, its body included.
    pub handler_timeout_ms: u64,
    /// A response must be written within this after its handler ends.
    pub response_timeout_ms: u64,
    /// How long a stopping node lets in-flight requests finish.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_inflight_body_bytes: 256 << 20,
            max_inflight_body_bytes_per_client: 0,
            max_connections: 4096,
            max_connections_per_address: 512,
            keep_alive_ms: 5_000,
            head_timeout_ms: 5_000,
            idle_timeout_ms: 3_000,
            body_timeout_ms: 30_000,
            min_body_bytes_per_sec: 1024,
            handler_timeout_ms: 60_000,
            response_timeout_ms: 30_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl HttpSection {
    /// What one client may hold of the body budget.
    pub fn body_bytes_per_client(&self, max_value_bytes: usize) -> usize {
        match self.max_inflight_body_bytes_per_client {
            0 => (self.max_inflight_body_bytes / 4).max(max_value_bytes),
            n => n,
        }
        .min(self.max_inflight_body_bytes)
    }
}

/// TLS and client authentication. Paths are relative to the config file;
/// `{node}` stands for the node's id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Peer connections use mutual TLS with certificates of the cluster CA.
    pub peer_tls: bool,
    /// The client port serves HTTPS instead of HTTP.
    pub http_tls: bool,
    /// The cluster CA's certificate(s) (PEM; a bundle during a CA rotation).
    pub ca_file: PathBuf,
    /// The CA's private key: only `ringkv certs` reads it; nodes never do.
    pub ca_key_file: PathBuf,
    /// This node's certificate and key (peers, and HTTPS unless the next two
    /// are set).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A separate certificate and key for the HTTPS port (optional).
    pub http_cert_file: Option<PathBuf>,
    pub http_key_file: Option<PathBuf>,
    /// Client tokens (`ringkv token create|list|revoke`); absent: the API
    /// takes requests without a token.
    pub tokens_file: Option<PathBuf>,
    /// Failed token checks one client address may make within a minute
    /// before it is refused (429) for a time that doubles with each further
    /// failure.
    pub auth_failures_per_minute: u32,
    /// Accept `tokens_file` with `peer_tls = false`: anyone who reaches the
    /// peer port from a member's address then reads and writes every key
    /// without a token. Refused at start unless this is set.
    pub allow_unauthenticated_peers: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            peer_tls: true,
            http_tls: false,
            ca_file: "certs/ca.crt".into(),
            ca_key_file: "certs/ca.key".into(),
            cert_file: "certs/{node}.crt".into(),
            key_file: "certs/{node}.key".into(),
            http_cert_file: None,
            http_key_file: None,
            tokens_file: None,
            auth_failures_per_minute: 10,
            allow_unauthenticated_peers: false,
        }
    }
}

impl SecuritySection {
    /// `path` with `{node}` replaced by `node`.
    pub fn for_node(path: &Path, node: &str) -> PathBuf {
        PathBuf::from(path.to_string_lossy().replace("{node}", node))
    }

    /// The HTTPS certificate and key of `node` (by default, its node pair).
    pub fn http_files(&self, node: &str) -> (PathBuf, PathBuf) {
        let cert = self.http_cert_file.as_ref().unwrap_or(&self.cert_file);
        let key = self.http_key_file.as_ref().unwrap_or(&self.key_file);
        (Self::for_node(cert, node), Self::for_node(key, node))
    }

    /// Whether any certificate is needed.
    pub fn uses_tls(&self) -> bool {
        self.peer_tls || self.http_tls
    }
}

/// Test-only settings; absent from production configs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingSection {
    /// A file of fault switches the node re-reads while it runs (see the
    /// engine's `faults` module); relative to the config file; `{node}` in
    /// it stands for the node's id.
    pub fault_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    /// Whether the cluster's first layout places this node. `false`: a
    /// standby node, a member of the cluster (its peers accept it) that
    /// holds nothing until `ringkv admin join <id>` adds it.
    #[serde(default = "defaults::yes")]
    pub initial: bool,
    /// Test only: shifts this node's wall clock (ms, may be negative).
    #[serde(default)]
    pub clock_offset_ms: i64,
}

/// Membership gossip and failure detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSection {
    /// Gossip round (and heartbeat) interval.
    pub interval_ms: u64,
    /// Phi at which a peer is convicted (down); suspect from half of it.
    pub phi_threshold: f64,
    /// Heartbeat intervals remembered per peer.
    pub phi_window: usize,
}

impl Default for GossipSection {
    fn default() -> Self {
        GossipSection {
            interval_ms: 200,
            phi_threshold: 8.0,
            phi_window: 1000,
        }
    }
}

/// Sloppy quorum and hinted handoff.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HintsSection {
    /// Store hints for unreachable replicas at all (off: only anti-entropy
    /// repairs a replica that missed writes).
    pub enabled: bool,
    /// Hint holders count toward W (availability); off: N/R/W are strict.
    pub sloppy_quorum: bool,
    /// Hints kept per target node; beyond it the oldest are dropped (strict
    /// quorum) or new ones refused (sloppy quorum).
    pub max_per_node: u64,
    /// Bytes of hints kept per target node; as `max_per_node`.
    pub max_bytes_per_node: u64,
    /// A hint older than this whose target is still down goes to another
    /// live replica of its key (never dropped for age).
    pub max_age_ms: u64,
}

impl Default for HintsSection {
    fn default() -> Self {
        HintsSection {
            enabled: true,
            sloppy_quorum: false,
            max_per_node: 100_000,
            max_bytes_per_node: 256 << 20,
            max_age_ms: 3 * 3600 * 1000,
        }
    }
}

/// Read repair, anti-entropy and tombstone GC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairSection {
    /// Interval between anti-entropy passes.
    pub anti_entropy_interval_ms: u64,
    /// Bytes per second anti-entropy may move.
    pub bandwidth_bytes_per_sec: u64,
    /// An `all` read repairs stale replicas before answering.
    pub read_repair_blocking_all: bool,
    /// How long tombstones are kept at least before GC may purge them.
    pub tombstone_grace_ms: u64,
}

impl Default for RepairSection {
    fn default() -> Self {
        RepairSection {
            anti_entropy_interval_ms: 10 * 60 * 1000,
            bandwidth_bytes_per_sec: 16 << 20,
            read_repair_blocking_all: false,
            tombstone_grace_ms: 10 * 24 * 3600 * 1000,
        }
    }
}

/// The most partitions a cluster may have (each costs a Merkle tree of 2 KiB
/// on every replica holding data in it).
pub const MAX_PARTITIONS: u32 = 4096;

impl ClusterSection {
    /// log2 of `partitions`.
    pub fn partition_bits(&self) -> u8 {
        self.partitions.trailing_zeros() as u8
    }
}

mod defaults {
    use super::Durability;
    pub fn yes() -> bool {
        true
    }
    pub fn replication_factor() -> usize {
        3
    }
    pub fn partitions() -> u32 {
        256
    }
    pub fn request_timeout_ms() -> u64 {
        2_000
    }
    pub fn background_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_clock_drift_ms() -> u64 {
        5_000
    }
    pub fn max_frame_bytes() -> usize {
        16 << 20
    }
    pub fn durability() -> Durability {
        Durability::Immediate
    }
    pub fn group_commit() -> bool {
        true
    }
    pub fn min_free_bytes() -> u64 {
        64 << 20
    }
    pub fn max_value_bytes() -> usize {
        1 << 20
    }
    pub fn max_write_queue_bytes() -> usize {
        256 << 20
    }
}

/// A configuration problem, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One node's view: its own entry with parsed addresses, and the cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub clock_offset_ms: i64,
    pub cluster: Config,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.to_string().trim())))?;
        cfg.path = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        for node in &mut cfg.nodes {
            if node.data_dir.is_relative() {
                node.data_dir = base.join(&node.data_dir);
            }
        }
        let mut relative: Vec<&mut PathBuf> = cfg.testing.fault_file.iter_mut().collect();
        if let Some(s) = cfg.security.as_mut() {
            relative.extend([
                &mut s.ca_file,
                &mut s.ca_key_file,
                &mut s.cert_file,
                &mut s.key_file,
            ]);
            relative.extend(s.http_cert_file.iter_mut());
            relative.extend(s.http_key_file.iter_mut());
            relative.extend(s.tokens_file.iter_mut());
        }
        for f in relative {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(&self, key: &str, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {key}: {reason}", self.path.display()))
    }

    pub fn n(&self) -> usize {
        self.cluster.replication_factor
    }

    pub fn r(&self) -> usize {
        self.cluster.r.unwrap_or(self.n() / 2 + 1)
    }

    pub fn w(&self) -> usize {
        self.cluster.w.unwrap_or(self.n() / 2 + 1)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.request_timeout_ms)
    }

    pub fn background_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.background_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.name.trim().is_empty() {
            return Err(self.err("cluster.name", "must not be empty"));
        }
        if self.nodes.is_empty() {
            return Err(self.err("nodes", "at least one [[nodes]] entry is required"));
        }
        let n = c.replication_factor;
        let initial = self.nodes.iter().filter(|n| n.initial).count();
        if n == 0 || n > initial {
            return Err(self.err(
                "cluster.replication_factor",
                format!("must be between 1 and the number of initial nodes ({initial}), got {n}"),
            ));
        }
        for (key, v) in [("cluster.r", c.r), ("cluster.w", c.w)] {
            if let Some(v) = v {
                if v == 0 || v > n {
                    return Err(self.err(
                        key,
                        format!("must be between 1 and replication_factor ({n}), got {v}"),
                    ));
                }
            }
        }
        if c.vnodes.is_some() {
            return Err(self.err(
                "cluster.vnodes",
                "is no longer a setting: keys are placed by partitions (cluster.partitions, \
                 default 256); remove the line"
                    .to_string(),
            ));
        }
        if !c.partitions.is_power_of_two() || c.partitions > MAX_PARTITIONS {
            return Err(self.err(
                "cluster.partitions",
                format!(
                    "must be a power of two from 1 to {MAX_PARTITIONS}, got {}",
                    c.partitions
                ),
            ));
        }
        if !(100..=3_600_000).contains(&c.background_timeout_ms) {
            return Err(self.err(
                "cluster.background_timeout_ms",
                format!("must be 100..=3600000, got {}", c.background_timeout_ms),
            ));
        }
        if !(10..=600_000).contains(&c.request_timeout_ms) {
            return Err(self.err(
                "cluster.request_timeout_ms",
                format!("must be 10..=600000, got {}", c.request_timeout_ms),
            ));
        }
        let max_value = self.storage.max_value_bytes;
        if max_value == 0 || max_value > MAX_VALUE_LIMIT {
            return Err(self.err(
                "storage.max_value_bytes",
                format!("must be 1..={MAX_VALUE_LIMIT}, got {max_value}"),
            ));
        }
        if c.max_frame_bytes > MAX_FRAME_LIMIT {
            return Err(self.err(
                "cluster.max_frame_bytes",
                format!(
                    "must be at most {MAX_FRAME_LIMIT}, got {}",
                    c.max_frame_bytes
                ),
            ));
        }
        if max_value + MAX_KEY_BYTES + FRAME_OVERHEAD > c.max_frame_bytes {
            return Err(self.err(
                "cluster.max_frame_bytes",
                format!(
                    "{} is too small to carry a value of storage.max_value_bytes ({max_value}); \
                     it needs at least {}",
                    c.max_frame_bytes,
                    max_value + MAX_KEY_BYTES + FRAME_OVERHEAD
                ),
            ));
        }
        if self.storage.max_write_queue_bytes < max_value {
            return Err(self.err(
                "storage.max_write_queue_bytes",
                format!(
                    "{} is smaller than storage.max_value_bytes ({max_value})",
                    self.storage.max_write_queue_bytes
                ),
            ));
        }
        if self.http.max_inflight_body_bytes < max_value {
            return Err(self.err(
                "http.max_inflight_body_bytes",
                format!(
                    "{} is smaller than storage.max_value_bytes ({max_value})",
                    self.http.max_inflight_body_bytes
                ),
            ));
        }
        let h = &self.http;
        if h.max_inflight_body_bytes_per_client != 0
            && h.max_inflight_body_bytes_per_client < max_value
        {
            return Err(self.err(
                "http.max_inflight_body_bytes_per_client",
                format!(
                    "{} is smaller than storage.max_value_bytes ({max_value}) (0: automatic)",
                    h.max_inflight_body_bytes_per_client
                ),
            ));
        }
        if !(1..=1_000_000).contains(&h.max_connections) {
            return Err(self.err(
                "http.max_connections",
                format!("must be 1..=1000000, got {}", h.max_connections),
            ));
        }
        if h.max_connections_per_address == 0 || h.max_connections_per_address > h.max_connections {
            return Err(self.err(
                "http.max_connections_per_address",
                format!(
                    "must be 1..=http.max_connections ({}), got {}",
                    h.max_connections, h.max_connections_per_address
                ),
            ));
        }
        for (key, v) in [
            ("http.keep_alive_ms", h.keep_alive_ms),
            ("http.head_timeout_ms", h.head_timeout_ms),
            ("http.idle_timeout_ms", h.idle_timeout_ms),
            ("http.body_timeout_ms", h.body_timeout_ms),
            ("http.response_timeout_ms", h.response_timeout_ms),
            ("http.handler_timeout_ms", h.handler_timeout_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                return Err(self.err(key, format!("must be 10..=3600000, got {v}")));
            }
        }
        let needed = h.body_timeout_ms + 2 * c.request_timeout_ms;
        if h.handler_timeout_ms < needed {
            return Err(self.err(
                "http.handler_timeout_ms",
                format!(
                    "{} leaves a write no time: it must be at least http.body_timeout_ms plus \
                     twice cluster.request_timeout_ms ({needed})",
                    h.handler_timeout_ms
                ),
            ));
        }
        if self.http.shutdown_grace_ms > 600_000 {
            return Err(self.err(
                "http.shutdown_grace_ms",
                format!(
                    "must be at most 600000, got {}",
                    self.http.shutdown_grace_ms
                ),
            ));
        }
        if c.max_clock_drift_ms < 2 * ringkv_actors::version::RESERVATION_LEASE_MS {
            return Err(self.err(
                "cluster.max_clock_drift_ms",
                format!(
                    "must be at least {} (a restarted node may issue versions up to {} ms \
                     ahead of its clock), got {}",
                    2 * ringkv_actors::version::RESERVATION_LEASE_MS,
                    ringkv_actors::version::RESERVATION_LEASE_MS,
                    c.max_clock_drift_ms
                ),
            ));
        }
        let g = &self.gossip;
        if !(10..=60_000).contains(&g.interval_ms) {
            return Err(self.err(
                "gossip.interval_ms",
                format!("must be 10..=60000, got {}", g.interval_ms),
            ));
        }
        if !(g.phi_threshold > 0.0 && g.phi_threshold <= 100.0) {
            return Err(self.err(
                "gossip.phi_threshold",
                format!("must be in (0, 100], got {}", g.phi_threshold),
            ));
        }
        if !(2..=100_000).contains(&g.phi_window) {
            return Err(self.err(
                "gossip.phi_window",
                format!("must be 2..=100000, got {}", g.phi_window),
            ));
        }
        let h = &self.hints;
        if h.max_per_node == 0 || h.max_bytes_per_node == 0 || h.max_age_ms == 0 {
            return Err(self.err(
                "hints",
                "max_per_node, max_bytes_per_node and max_age_ms must be positive",
            ));
        }
        let r = &self.repair;
        if r.anti_entropy_interval_ms < 100 {
            return Err(self.err(
                "repair.anti_entropy_interval_ms",
                format!("must be at least 100, got {}", r.anti_entropy_interval_ms),
            ));
        }
        if r.bandwidth_bytes_per_sec < 1024 {
            return Err(self.err(
                "repair.bandwidth_bytes_per_sec",
                format!("must be at least 1024, got {}", r.bandwidth_bytes_per_sec),
            ));
        }
        if r.tombstone_grace_ms < 1000 {
            return Err(self.err(
                "repair.tombstone_grace_ms",
                format!("must be at least 1000, got {}", r.tombstone_grace_ms),
            ));
        }
        if let Some(s) = &self.security {
            if s.auth_failures_per_minute == 0 {
                return Err(self.err("security.auth_failures_per_minute", "must be at least 1"));
            }
            if s.http_cert_file.is_some() != s.http_key_file.is_some() {
                return Err(self.err(
                    "security.http_cert_file",
                    "set both http_cert_file and http_key_file, or neither",
                ));
            }
            if s.tokens_file.is_some() && !s.peer_tls && !s.allow_unauthenticated_peers {
                return Err(self.err(
                    "security.tokens_file",
                    "tokens are required of clients but peers are not authenticated \
                     (peer_tls = false): anyone who can reach a node's peer port from a \
                     member's address reads and overwrites every key without a token. Turn \
                     peer_tls on, or set security.allow_unauthenticated_peers = true to \
                     accept that",
                ));
            }
        }
        // Certificate names match without regard to case: ids that differ
        // only in case would let one node's certificate speak for the other.
        let mut folded: HashMap<String, &str> = HashMap::new();
        let mut raft_ids: HashMap<u64, &str> = HashMap::new();
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        let mut dirs = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            // A node id is a DNS label: it is the first label of the
            // node's certificate name (`<id>.node.ringkv`).
            let valid_id = !node.id.is_empty()
                && node.id.len() <= 63
                && !node.id.starts_with('-')
                && !node.id.ends_with('-')
                && node
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
            if !valid_id {
                return Err(self.err(
                    &key("id"),
                    format!(
                        "'{}' must be 1-63 letters, digits or '-', not starting or ending \
                         with '-'",
                        node.id
                    ),
                ));
            }
            if !ids.insert(node.id.as_str()) {
                return Err(self.err(&key("id"), format!("duplicate node id '{}'", node.id)));
            }
            // Metadata consensus names members by a hash of their id.
            if let Some(other) = raft_ids.insert(ringkv_actors::meta::raft_id(&node.id), &node.id) {
                return Err(self.err(
                    &key("id"),
                    format!(
                        "node ids '{other}' and '{}' hash alike: rename one",
                        node.id
                    ),
                ));
            }
            if let Some(other) = folded.insert(node.id.to_ascii_lowercase(), &node.id) {
                return Err(self.err(
                    &key("id"),
                    format!(
                        "node ids '{other}' and '{}' differ only in letter case; certificate \
                         names match regardless of case, so one node's certificate would speak \
                         for the other: make them differ in more than case",
                        node.id
                    ),
                ));
            }
            for (k, a) in [
                ("http_addr", &node.http_addr),
                ("peer_addr", &node.peer_addr),
            ] {
                let addr: SocketAddr = a.parse().map_err(|_| {
                    self.err(&key(k), format!("'{a}' is not an IP:port socket address"))
                })?;
                if !addrs.insert(addr) {
                    return Err(self.err(&key(k), format!("address {addr} is used twice")));
                }
            }
            if !dirs.insert(node.data_dir.clone()) {
                return Err(self.err(
                    &key("data_dir"),
                    format!("{} is used by two nodes", node.data_dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// The entry of node `id`, with parsed addresses.
    pub fn node(&self, id: &str) -> Result<NodeConfig, ConfigError> {
        let node = self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let have: Vec<_> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            self.err(
                "nodes",
                format!("no node with id '{id}' (have: {})", have.join(", ")),
            )
        })?;
        Ok(NodeConfig {
            id: node.id.clone(),
            http_addr: node.http_addr.parse().expect("validated"),
            peer_addr: node.peer_addr.parse().expect("validated"),
            data_dir: node.data_dir.clone(),
            clock_offset_ms: node.clock_offset_ms,
            cluster: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "t"
replication_factor = 1

[[nodes]]
id = "n1"
http_addr = "127.0.0.1:7101"
peer_addr = "127.0.0.1:7201"
data_dir = "data/n1"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ringkv/c.toml"))
    }

    #[test]
    fn good_config_gets_defaults_and_resolves_dirs() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cluster.partitions, 256);
        assert_eq!(c.cluster.partition_bits(), 8);
        assert_eq!((c.r(), c.w()), (1, 1));
        assert_eq!(c.storage.max_value_bytes, 1 << 20);
        assert_eq!(c.storage.durability, Durability::Immediate);
        let n = c.node("n1").unwrap();
        assert_eq!(n.data_dir, Path::new("/etc/ringkv/data/n1"));
        assert_eq!(n.http_addr.port(), 7101);
    }

    fn bad(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn unknown_keys_are_refused_with_file_and_key() {
        let e = bad(&GOOD.replace("[cluster]", "[cluster]\nreplicas = 3"));
        assert!(e.starts_with("/etc/ringkv/c.toml"), "{e}");
        assert!(e.contains("replicas"), "{e}");
    }

    #[test]
    fn bad_addresses_are_refused() {
        let e = bad(&GOOD.replace("127.0.0.1:7101", "localhost"));
        assert!(
            e.contains("nodes[0].http_addr") && e.contains("'localhost'"),
            "{e}"
        );
    }

    #[test]
    fn impossible_quorums_are_refused() {
        let e = bad(&GOOD.replace("replication_factor = 1", "replication_factor = 1\nr = 2"));
        assert!(
            e.contains("cluster.r") && e.contains("between 1 and"),
            "{e}"
        );
        let e = bad(&GOOD.replace("replication_factor = 1", "replication_factor = 3"));
        assert!(e.contains("cluster.replication_factor"), "{e}");
    }

    #[test]
    fn limits_and_ids_are_checked() {
        let e = bad(&format!("{GOOD}\n[storage]\nmax_value_bytes = 0\n"));
        assert!(e.contains("storage.max_value_bytes"), "{e}");
        let e = bad(&GOOD.replace("id = \"n1\"", "id = \"bad id\""));
        assert!(e.contains("nodes[0].id"), "{e}");
        let e = bad(&format!("{GOOD}\n[storage]\ndurability = \"sometimes\"\n"));
        assert!(e.contains("durability"), "{e}");
    }

    #[test]
    fn security_paths_resolve_against_the_config_and_name_the_node() {
        assert!(parse(GOOD).unwrap().security.is_none());
        let c = parse(&format!(
            "{GOOD}\n[security]\nhttp_tls = true\ntokens_file = \"tokens.toml\"\n"
        ))
        .unwrap();
        let s = c.security.unwrap();
        assert!(s.peer_tls && s.http_tls);
        assert_eq!(s.ca_file, Path::new("/etc/ringkv/certs/ca.crt"));
        assert_eq!(
            SecuritySection::for_node(&s.key_file, "n1"),
            Path::new("/etc/ringkv/certs/n1.key")
        );
        assert_eq!(s.http_files("n1").0, Path::new("/etc/ringkv/certs/n1.crt"));
        assert_eq!(
            s.tokens_file.as_deref(),
            Some(Path::new("/etc/ringkv/tokens.toml"))
        );
        let e = bad(&format!("{GOOD}\n[security]\nhttp_cert_file = \"h.crt\"\n"));
        assert!(e.contains("security.http_cert_file"), "{e}");
        let e = bad(&format!("{GOOD}\n[security]\npeer_tsl = true\n"));
        assert!(e.contains("peer_tsl"), "{e}");
    }

    #[test]
    fn node_ids_are_dns_labels() {
        for id in ["n_1", "-n1", "n1-", &"x".repeat(64)] {
            let e = bad(&GOOD.replace("id = \"n1\"", &format!("id = \"{id}\"")));
            assert!(e.contains("nodes[0].id"), "{id}: {e}");
        }
        parse(&GOOD.replace("id = \"n1\"", "id = \"node-1\"")).unwrap();
    }

    #[test]
    fn node_ids_differing_only_in_case_are_refused_naming_both() {
        let second = GOOD[GOOD.find("[[nodes]]").unwrap()..]
            .replace("id = \"n1\"", "id = \"N1\"")
            .replace("7101", "7102")
            .replace("7201", "7202")
            .replace("data/n1", "data/N1");
        let e = bad(&format!("{GOOD}{second}"));
        assert!(
            e.contains("nodes[1].id") && e.contains("'n1'") && e.contains("'N1'"),
            "{e}"
        );
        assert!(e.contains("letter case"), "{e}");
        // Ids that differ in more than case are fine.
        parse(&format!("{GOOD}{}", second.replace("N1", "n2"))).unwrap();
    }

    #[test]
    fn partitions_are_a_power_of_two_and_vnodes_is_gone() {
        let with = |line: &str| {
            GOOD.replace(
                "replication_factor = 1",
                &format!("replication_factor = 1\n{line}"),
            )
        };
        for q in [1, 2, 64, 4096] {
            let c = parse(&with(&format!("partitions = {q}"))).unwrap();
            assert_eq!(1u32 << c.cluster.partition_bits(), q);
        }
        for q in [0, 3, 100, 8192] {
            let e = bad(&with(&format!("partitions = {q}")));
            assert!(
                e.contains("cluster.partitions") && e.contains("power of two"),
                "{e}"
            );
        }
        let e = bad(&with("vnodes = 256"));
        assert!(
            e.contains("cluster.vnodes") && e.contains("cluster.partitions"),
            "{e}"
        );
    }

    #[test]
    fn tokens_without_peer_tls_are_refused_unless_allowed() {
        let tokens = format!("{GOOD}\n[security]\npeer_tls = false\ntokens_file = \"t.toml\"\n");
        let e = bad(&tokens);
        assert!(
            e.contains("security.tokens_file")
                && e.contains("peer_tls")
                && e.contains("without a token")
                && e.contains("allow_unauthenticated_peers"),
            "{e}"
        );
        let allowed = parse(&format!("{tokens}allow_unauthenticated_peers = true\n")).unwrap();
        assert!(allowed.security.unwrap().allow_unauthenticated_peers);
        // With peer TLS, or without tokens, nothing to allow.
        parse(&format!("{GOOD}\n[security]\ntokens_file = \"t.toml\"\n")).unwrap();
        parse(&format!("{GOOD}\n[security]\npeer_tls = false\n")).unwrap();
    }

    #[test]
    fn duplicate_nodes_are_refused() {
        let twice = format!("{GOOD}{}", &GOOD[GOOD.find("[[nodes]]").unwrap()..]);
        let e = bad(&twice);
        assert!(e.contains("nodes[1].id") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn unknown_node_is_named() {
        let e = parse(GOOD).unwrap().node("n9").unwrap_err().0;
        assert!(
            e.contains("no node with id 'n9'") && e.contains("n1"),
            "{e}"
        );
    }
}
