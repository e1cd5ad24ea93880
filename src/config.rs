//! Cluster configuration: one TOML file describes the whole cluster; each node
//! process picks its own entry with `--node`.
//!
//! Loading refuses unknown keys, bad addresses and impossible values with a
//! message that names the file, the key and the reason. Relative data
//! directories are resolved against the config file's directory.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest key in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Upper bound for `storage.max_value_bytes`.
pub const MAX_VALUE_LIMIT: usize = 64 << 20;
/// Room in a peer frame for everything but the value (key, version, framing).
pub const FRAME_OVERHEAD: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterSection,
    #[serde(default)]
    pub storage: StorageSection,
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
    #[serde(default = "defaults::vnodes")]
    pub vnodes: usize,
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
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
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            durability: defaults::durability(),
            max_value_bytes: defaults::max_value_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
}

mod defaults {
    use super::Durability;
    pub fn replication_factor() -> usize {
        3
    }
    pub fn vnodes() -> usize {
        256
    }
    pub fn request_timeout_ms() -> u64 {
        2_000
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
    pub fn max_value_bytes() -> usize {
        1 << 20
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

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.name.trim().is_empty() {
            return Err(self.err("cluster.name", "must not be empty"));
        }
        if self.nodes.is_empty() {
            return Err(self.err("nodes", "at least one [[nodes]] entry is required"));
        }
        let n = c.replication_factor;
        if n == 0 || n > self.nodes.len() {
            return Err(self.err(
                "cluster.replication_factor",
                format!(
                    "must be between 1 and the number of nodes ({}), got {n}",
                    self.nodes.len()
                ),
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
        if c.vnodes == 0 || c.vnodes > 4096 {
            return Err(self.err(
                "cluster.vnodes",
                format!("must be 1..=4096, got {}", c.vnodes),
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
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        let mut dirs = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            let valid_id = !node.id.is_empty()
                && node.id.len() <= 64
                && node
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !valid_id {
                return Err(self.err(
                    &key("id"),
                    format!("'{}' must be 1-64 letters, digits, '-' or '_'", node.id),
                ));
            }
            if !ids.insert(node.id.as_str()) {
                return Err(self.err(&key("id"), format!("duplicate node id '{}'", node.id)));
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
        assert_eq!(c.cluster.vnodes, 256);
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
