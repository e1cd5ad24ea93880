//! Partitions whose Merkle tree must be rebuilt from the data (an
//! unreadable record was replaced, so its old version — what the tree
//! holds — is unknown), and when to try again after a rebuild failed.
//!
//! A rebuild is a scan of one partition on the writer's path, after a
//! commit. One that fails (a read error) is retried after a later commit,
//! but no sooner than a delay that doubles with each failure, from
//! [`FIRST_RETRY`] to [`MAX_RETRY`]: a disk failing every read must not
//! turn every commit into a failing scan. Time is passed in.

use crate::layout::PartitionId;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The wait after a first failed rebuild.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct StaleTrees {
    partitions: BTreeSet<PartitionId>,
    /// No attempt before this instant (after a failure).
    not_before: Option<Instant>,
    /// The wait after the next failure.
    delay: Option<Duration>,
}

impl StaleTrees {
    /// Marks `p` for a rebuild. A newly corrupt partition is rebuilt after
    /// this commit even while an older one waits out its delay.
    pub fn mark(&mut self, p: PartitionId) {
        if self.partitions.insert(p) {
            self.not_before = None;
        }
    }

    /// The partitions to rebuild now: none while a failure's delay runs.
    pub fn due(&self, now: Instant) -> Vec<PartitionId> {
        if self.not_before.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.partitions.iter().copied().collect()
    }

    /// `p` was rebuilt.
    pub fn rebuilt(&mut self, p: PartitionId) {
        self.partitions.remove(&p);
        if self.partitions.is_empty() {
            self.not_before = None;
            self.delay = None;
        }
    }

    /// Whether no partition waits for a rebuild (the common case: the
    /// writer then does nothing more after a commit).
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// A rebuild failed at `now`: wait before the next attempt, twice as
    /// long as the last time (at most [`MAX_RETRY`]).
    pub fn failed(&mut self, now: Instant) {
        let delay = self.delay.unwrap_or(FIRST_RETRY);
        self.not_before = Some(now + delay);
        self.delay = Some((delay * 2).min(MAX_RETRY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Second review of issue 16: a rebuild that kept failing was retried
    /// after every commit. It now waits, longer each time, and a success
    /// ends the wait.
    #[test]
    fn a_failing_rebuild_is_retried_later_each_time_and_a_success_resets() {
        let t0 = Instant::now();
        let mut s = StaleTrees::default();
        s.mark(3);
        assert_eq!(s.due(t0), [3], "a fresh mark is rebuilt after this commit");
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            s.failed(at);
            let mut wait = Duration::ZERO;
            while s.due(at + wait).is_empty() {
                wait += Duration::from_millis(250);
            }
            waits.push(wait.as_secs());
            at += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // A partition newly marked does not wait for the other's delay.
        s.failed(at);
        s.mark(9);
        assert_eq!(s.due(at), [3, 9]);
        s.rebuilt(3);
        assert_eq!(s.due(at), [9]);
        s.rebuilt(9);
        assert!(s.is_empty() && s.due(at).is_empty());
        // After a success the next failure waits the first delay again.
        s.mark(4);
        s.failed(at);
        assert!(s.due(at + Duration::from_millis(999)).is_empty());
        assert_eq!(s.due(at + FIRST_RETRY), [4]);
    }
}
