//! When to reload a node's security material and what to say about it: the
//! state of one material (the tokens file; the node certificate, key and CA
//! bundle; the HTTPS pair), driven by hand with the files' stamps, the
//! outcome of a reload and the time — no I/O.
//!
//! * A reload is due when a file's stamp differs from the stamps of what is
//!   in force, on SIGHUP, and — until one succeeds — at every tick after a
//!   failed one (a transient EMFILE, EIO or half-written file is retried, not
//!   forgotten).
//! * The stamps are taken *before* the files are read, and become the
//!   stamps in force only when the reload succeeds: a change during a read
//!   makes the next tick reload again.
//! * A failure reports whether the files changed since what is in force was
//!   read (`stale`: what is in force may say more than the files now do, so
//!   the caller fails closed) and which of them changed.
//! * Failures are logged at once the first time, then at most once per
//!   [`FAILURE_LOG_EVERY_MS`] with the count of attempts not logged.

use crate::auth::log_limit::LogLimiter;
use std::time::SystemTime;

/// A file's modification time, size and inode (a rename changes it);
/// `None`: it cannot be looked at (missing, say).
pub type Stamp = Option<(SystemTime, u64, u64)>;

/// Failures of one material are logged at most this often after the first.
pub const FAILURE_LOG_EVERY_MS: u64 = 60_000;

/// A run of failed reloads of one material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    /// Wall-clock ms of the run's first failure.
    pub since_unix_ms: u64,
    pub attempts: u64,
    pub last_error: String,
}

/// What came of a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Loaded and in force, after `after_failures` failed attempts.
    Loaded { after_failures: u64 },
    Failed {
        /// The files changed since what is in force was read.
        stale: bool,
        /// Per file (in the order of the stamps): it changed.
        changed: Vec<bool>,
        /// The first failure of this run.
        first: bool,
        /// `Some(k)`: log now, mentioning `k` failed attempts not logged
        /// since the last line; `None`: do not log.
        log: Option<u64>,
    },
}

/// The reload state of one material.
#[derive(Debug)]
pub struct Reloader {
    /// Stamps of the files in force (taken before they were read).
    loaded: Vec<Stamp>,
    failing: Option<Failing>,
    log: LogLimiter,
}

impl Reloader {
    /// A material loaded from files that had `loaded` stamps before.
    pub fn new(loaded: Vec<Stamp>) -> Reloader {
        Reloader {
            loaded,
            failing: None,
            log: LogLimiter::new(1, FAILURE_LOG_EVERY_MS),
        }
    }

    /// Whether to reload, the files' stamps being `now`.
    pub fn due(&self, now: &[Stamp], forced: bool) -> bool {
        forced || self.failing.is_some() || now != self.loaded.as_slice()
    }

    /// Records the outcome of a reload of files whose stamps were `taken`
    /// before they were read; `mono_ms` is monotonic (for the log limit),
    /// `wall_ms` the wall clock (for the report).
    pub fn done(
        &mut self,
        taken: Vec<Stamp>,
        result: Result<(), String>,
        mono_ms: u64,
        wall_ms: u64,
    ) -> Report {
        match result {
            Ok(()) => {
                self.loaded = taken;
                self.log.reset();
                Report::Loaded {
                    after_failures: self.failing.take().map_or(0, |f| f.attempts),
                }
            }
            Err(e) => {
                let changed: Vec<bool> = taken
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.loaded.get(i) != Some(s))
                    .collect();
                let first = self.failing.is_none();
                let f = self.failing.get_or_insert(Failing {
                    since_unix_ms: wall_ms,
                    attempts: 0,
                    last_error: String::new(),
                });
                f.attempts += 1;
                f.last_error = e;
                Report::Failed {
                    stale: changed.iter().any(|c| *c),
                    changed,
                    first,
                    log: self.log.admit(mono_ms),
                }
            }
        }
    }

    /// The run of failures going on, if any.
    pub fn failing(&self) -> Option<&Failing> {
        self.failing.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(t: u64, ino: u64) -> Stamp {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(t), 10, ino))
    }

    #[test]
    fn a_failed_reload_is_retried_every_tick_until_it_loads() {
        let start = vec![stamp(1, 1)];
        let mut r = Reloader::new(start.clone());
        assert!(!r.due(&start, false), "nothing changed");
        // The file changes; the reload fails (EMFILE, say).
        let new = vec![stamp(2, 2)];
        assert!(r.due(&new, false));
        let report = r.done(new.clone(), Err("EMFILE".into()), 0, 1_000);
        assert_eq!(
            report,
            Report::Failed {
                stale: true,
                changed: vec![true],
                first: true,
                log: Some(0)
            }
        );
        // The stamps no longer change, yet every tick retries.
        for tick in 1..=5u64 {
            assert!(r.due(&new, false), "tick {tick}");
            let report = r.done(new.clone(), Err("EMFILE".into()), tick * 1_000, 0);
            assert!(
                matches!(
                    report,
                    Report::Failed {
                        stale: true,
                        first: false,
                        log: None,
                        ..
                    }
                ),
                "{report:?}"
            );
        }
        let f = r.failing().unwrap();
        assert_eq!((f.since_unix_ms, f.attempts), (1_000, 6));
        // It loads: in force, nothing due until the next change.
        assert_eq!(
            r.done(new.clone(), Ok(()), 6_000, 0),
            Report::Loaded { after_failures: 6 }
        );
        assert!(r.failing().is_none());
        assert!(!r.due(&new, false));
        assert!(r.due(&new, true), "SIGHUP forces one");
    }

    #[test]
    fn stamps_are_those_taken_before_the_read() {
        let mut r = Reloader::new(vec![stamp(1, 1)]);
        // Stamps taken, then the file changes while it is read: what loaded
        // is the older content, so the newer stamp is still due.
        let taken = vec![stamp(2, 2)];
        r.done(taken, Ok(()), 0, 0);
        assert!(r.due(&[stamp(3, 3)], false));
    }

    #[test]
    fn a_failure_of_unchanged_files_is_not_stale_and_says_which_changed() {
        let files = vec![stamp(1, 1), stamp(1, 2), stamp(1, 3)];
        let mut r = Reloader::new(files.clone());
        // SIGHUP, a transient error, the files as in force: not stale.
        let report = r.done(files.clone(), Err("EIO".into()), 0, 0);
        assert!(
            matches!(report, Report::Failed { stale: false, .. }),
            "{report:?}"
        );
        // Then the first file (the CA bundle) changes: stale, and which.
        let ca_changed = vec![stamp(2, 9), stamp(1, 2), stamp(1, 3)];
        match r.done(ca_changed, Err("half-written".into()), 1_000, 0) {
            Report::Failed { stale, changed, .. } => {
                assert!(stale);
                assert_eq!(changed, vec![true, false, false]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.failing().unwrap().last_error, "half-written");
        // A missing file is a change too.
        let gone = vec![None, stamp(1, 2), stamp(1, 3)];
        assert!(matches!(
            r.done(gone, Err("missing".into()), 2_000, 0),
            Report::Failed { stale: true, .. }
        ));
    }

    #[test]
    fn failures_are_logged_at_once_then_once_a_minute_with_the_count() {
        let mut r = Reloader::new(vec![stamp(1, 1)]);
        let bad = vec![stamp(2, 2)];
        let log = |r: &mut Reloader, t: u64| match r.done(bad.clone(), Err("x".into()), t, 0) {
            Report::Failed { log, .. } => log,
            other => panic!("{other:?}"),
        };
        assert_eq!(log(&mut r, 0), Some(0));
        for t in (1_000..FAILURE_LOG_EVERY_MS).step_by(1_000) {
            assert_eq!(log(&mut r, t), None, "{t}");
        }
        assert_eq!(log(&mut r, FAILURE_LOG_EVERY_MS), Some(59));
        // After a success, the next failure is logged at once.
        r.done(bad.clone(), Ok(()), FAILURE_LOG_EVERY_MS + 1, 0);
        let worse = vec![stamp(3, 3)];
        match r.done(worse, Err("y".into()), FAILURE_LOG_EVERY_MS + 2, 0) {
            Report::Failed { first, log, .. } => assert_eq!((first, log), (true, Some(0))),
            other => panic!("{other:?}"),
        }
    }
}
