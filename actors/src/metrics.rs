//! Counters of one node, shared by the actors and rendered by `GET /metrics`
//! in the Prometheus text format.
//!
//! Each counter is a relaxed atomic: cheap on hot paths, and exact enough for
//! monitoring (a reader may see one counter a moment before another).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Monotonic counters of this node.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl Metrics {
            /// Every counter as `(name, help, value)`.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    commits: "redb write transactions committed (one fsync each when durable)",
    writes: "mutations applied by those commits",
    commit_failures: "commits that failed",
    clock_refusals: "versions refused because they were too far ahead of the local clock",
    hints_stored: "hints stored here for other nodes",
    hints_dropped: "hints dropped because their target's bound was reached",
    hints_replayed: "hints delivered to their target and deleted",
    hints_expired: "hints deleted unreplayed because they were too old",
    read_repairs: "stale replicas sent the newest version after a read",
    ae_rounds: "anti-entropy exchanges completed",
    ae_hashes_compared: "Merkle tree nodes compared",
    ae_keys_pulled: "records taken from peers by anti-entropy",
    ae_keys_pushed: "records sent to peers by anti-entropy",
    ae_bytes: "bytes of records moved by anti-entropy",
    tombstones_purged: "tombstones removed after the grace period",
    gossip_rounds: "gossip exchanges completed",
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter, named `ringkv_<name>_total`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in self.snapshot() {
            let _ = writeln!(out, "# HELP ringkv_{name}_total {help}");
            let _ = writeln!(out, "# TYPE ringkv_{name}_total counter");
            let _ = writeln!(out, "ringkv_{name}_total {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_counters() {
        let m = Metrics::default();
        Metrics::add(&m.commits, 3);
        let text = m.render();
        assert!(text.contains("# TYPE ringkv_commits_total counter\nringkv_commits_total 3\n"));
        assert!(text.contains("ringkv_writes_total 0\n"));
    }
}
