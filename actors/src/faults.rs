//! Test-only fault injection: switches the fault tests flip in a running
//! node to reach paths that real hardware reaches rarely (a failed fsync, a
//! slow disk, a slow link, a clock step).
//!
//! A node reads them from a file named by the config key `testing.fault_file`
//! (absent in production configs: every switch then stays off). The file is
//! re-read every [`POLL_INTERVAL`]; each line is `name = value`:
//!
//! ```text
//! fail_fsync = true        # every fsync fails with EIO from now on
//! fsync_delay_ms = 200     # every fsync takes this much longer
//! peer_delay_ms = 50       # every frame this node writes to a peer waits first
//! clock_offset_ms = -60000 # the node's wall clock is shifted by this much
//! ```
//!
//! Unknown names and bad values are logged and ignored; a missing file means
//! no faults.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How often the fault file is re-read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The switches. All off by default.
#[derive(Debug, Default)]
pub struct Faults {
    pub fail_fsync: AtomicBool,
    pub fsync_delay_ms: AtomicU64,
    pub peer_delay_ms: AtomicU64,
    pub clock_offset_ms: AtomicI64,
}

impl Faults {
    /// Sets every switch from a fault file's text; switches the text does
    /// not name go back to off. Answers the lines it could not use.
    pub fn apply(&self, text: &str) -> Vec<String> {
        let mut bad = Vec::new();
        let (mut fail, mut delay, mut peer, mut clock) = (false, 0u64, 0u64, 0i64);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                bad.push(line.to_string());
                continue;
            };
            let value = value.trim();
            let ok = match name.trim() {
                "fail_fsync" => value.parse().map(|v| fail = v).is_ok(),
                "fsync_delay_ms" => value.parse().map(|v| delay = v).is_ok(),
                "peer_delay_ms" => value.parse().map(|v| peer = v).is_ok(),
                "clock_offset_ms" => value.parse().map(|v| clock = v).is_ok(),
                _ => false,
            };
            if !ok {
                bad.push(line.to_string());
            }
        }
        self.fail_fsync.store(fail, Ordering::Relaxed);
        self.fsync_delay_ms.store(delay, Ordering::Relaxed);
        self.peer_delay_ms.store(peer, Ordering::Relaxed);
        self.clock_offset_ms.store(clock, Ordering::Relaxed);
        bad
    }

    pub fn fsync_fails(&self) -> bool {
        self.fail_fsync.load(Ordering::Relaxed)
    }

    pub fn fsync_delay(&self) -> Duration {
        Duration::from_millis(self.fsync_delay_ms.load(Ordering::Relaxed))
    }

    pub fn peer_delay(&self) -> Duration {
        Duration::from_millis(self.peer_delay_ms.load(Ordering::Relaxed))
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_file_sets_and_clears_switches() {
        let f = Faults::default();
        let bad = f.apply("fail_fsync = true\n# note\nfsync_delay_ms=20\nclock_offset_ms = -5 # x\nnope\nwhat = 1\n");
        assert!(f.fsync_fails());
        assert_eq!(f.fsync_delay(), Duration::from_millis(20));
        assert_eq!(f.clock_offset_ms(), -5);
        assert_eq!(bad, vec!["nope".to_string(), "what = 1".to_string()]);
        assert!(f.apply("").is_empty());
        assert!(!f.fsync_fails());
        assert_eq!(f.clock_offset_ms(), 0);
    }
}
