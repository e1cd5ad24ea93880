//! Counters and background-job progress of one node, shared by the actors
//! and rendered by `GET /metrics` in the Prometheus text format.
//!
//! Each counter is a relaxed atomic: cheap on hot paths, and exact enough for
//! monitoring (a reader may see one counter a moment before another).
//!
//! Each background job ([`Job`]: hint replay, anti-entropy, tombstone GC,
//! gossip) records when it last made progress and its last error, so an
//! operator (and the tests) can tell a job that is idle from one that is
//! stuck: `ringkv_job_last_progress_ms{job=...}` is the wall-clock time of the
//! last progress, `ringkv_job_errors_total{job=...}` counts failed attempts.
//!
//! Each file set a node reloads while it runs ([`Reloadable`]) has a gauge,
//! `ringkv_reload_failing{file=...}`, 1 while its reload keeps failing (the
//! node retries every second), with since when and the last error for
//! `GET /v1/cluster` ([`Reloads`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Monotonic counters of this node, and its jobs' progress.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
            pub jobs: Jobs,
            /// Reloads that keep failing.
            pub reloads: Reloads,
            /// Unix time (s) when the first of this node's certificates
            /// expires (0: no TLS).
            pub cert_expiry_unix: AtomicU64,
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
    writes_overloaded: "mutations refused because the write queue was full",
    clock_refusals: "versions refused because they were too far ahead of the local clock",
    hints_stored: "hints stored here for other nodes",
    hints_dropped: "hints dropped because their target's bound was reached",
    hints_replayed: "hints delivered to their target and deleted",
    hints_rescued: "hints older than hints.max_age_ms handed to another live replica of their key",
    read_repairs: "stale replicas sent the newest version after a read",
    read_tails_dropped: "reads that answered without awaiting their late replicas (too many awaited at once: no read repair, anti-entropy repairs)",
    ae_rounds: "anti-entropy exchanges completed",
    ae_hashes_compared: "Merkle tree nodes compared",
    ae_keys_pulled: "records taken from peers by anti-entropy",
    ae_keys_pushed: "records sent to peers by anti-entropy",
    ae_bytes: "bytes of records moved by anti-entropy",
    tombstones_purged: "tombstones removed after the grace period",
    gossip_rounds: "gossip exchanges completed",
    gossip_refused: "gossip entries refused (not about the sender itself, impossible generation or heartbeat)",
    peer_requests_refused: "peer requests refused as invalid",
    auth_failures: "client requests refused 401: missing, malformed, unknown, revoked or expired token",
    auth_forbidden: "client requests refused 403: the token lacks the role or the key prefix",
    auth_throttled: "client requests refused 429: too many failed attempts from the address, its /48 (IPv6), or the whole node",
    auth_unavailable: "client requests refused 503 tokens_unavailable: the tokens file changed and cannot be loaded",
    tls_reloads: "certificate and CA files reloaded",
    tls_reload_failures: "certificate or CA reload attempts refused because the files failed their checks (retried every second; see ringkv_reload_failing)",
    tokens_reloads: "tokens file reloaded",
    tokens_reload_failures: "tokens file reload attempts refused (unreadable or invalid; retried every second; while a changed file fails, every token is refused 503)",
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter, named
    /// `ringkv_<name>_total`, and of every job's progress.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in self.snapshot() {
            let _ = writeln!(out, "# HELP ringkv_{name}_total {help}");
            let _ = writeln!(out, "# TYPE ringkv_{name}_total counter");
            let _ = writeln!(out, "ringkv_{name}_total {value}");
        }
        let _ = writeln!(
            out,
            "# HELP ringkv_tls_cert_expiry_timestamp_seconds when the first of this node's certificates expires (0: no TLS)"
        );
        let _ = writeln!(out, "# TYPE ringkv_tls_cert_expiry_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "ringkv_tls_cert_expiry_timestamp_seconds {}",
            self.cert_expiry_unix.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_reload_failing 1 while the reload of the file keeps failing (retried every second)"
        );
        let _ = writeln!(out, "# TYPE ringkv_reload_failing gauge");
        for what in Reloadable::ALL {
            let _ = writeln!(
                out,
                "ringkv_reload_failing{{file=\"{}\"}} {}",
                what.as_str(),
                u8::from(self.reloads.get(what).is_some())
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringkv_job_last_progress_ms wall-clock ms of the job's last progress (0: none yet)"
        );
        let _ = writeln!(out, "# TYPE ringkv_job_last_progress_ms gauge");
        for job in Job::ALL {
            let s = self.jobs.get(job);
            let _ = writeln!(
                out,
                "ringkv_job_last_progress_ms{{job=\"{}\"}} {}",
                job.as_str(),
                s.last_progress_ms.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringkv_job_errors_total failed attempts of the job"
        );
        let _ = writeln!(out, "# TYPE ringkv_job_errors_total counter");
        for job in Job::ALL {
            let s = self.jobs.get(job);
            let _ = writeln!(
                out,
                "ringkv_job_errors_total{{job=\"{}\"}} {}",
                job.as_str(),
                s.errors.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The file sets a node reloads while it runs, each tracked on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloadable {
    /// `security.tokens_file`.
    Tokens,
    /// The node certificate, key and CA bundle.
    Tls,
    /// The HTTPS port's own certificate and key.
    Https,
}

impl Reloadable {
    pub const ALL: [Reloadable; 3] = [Reloadable::Tokens, Reloadable::Tls, Reloadable::Https];

    pub fn as_str(self) -> &'static str {
        match self {
            Reloadable::Tokens => "tokens",
            Reloadable::Tls => "tls",
            Reloadable::Https => "https",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A reload that keeps failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Wall-clock ms of the first failure of this run of failures.
    pub since_unix_ms: u64,
    /// Failed attempts in this run.
    pub attempts: u64,
    pub last_error: String,
}

/// Which reloads are failing now.
#[derive(Debug, Default)]
pub struct Reloads {
    failing: Mutex<[Option<ReloadFailure>; 3]>,
}

impl Reloads {
    /// Records the state of `what`'s reload (`None`: not failing).
    pub fn set(&self, what: Reloadable, state: Option<ReloadFailure>) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())[what.index()] = state;
    }

    pub fn get(&self, what: Reloadable) -> Option<ReloadFailure> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())[what.index()].clone()
    }

    /// Every failing reload.
    pub fn failing(&self) -> Vec<(Reloadable, ReloadFailure)> {
        Reloadable::ALL
            .into_iter()
            .filter_map(|w| Some((w, self.get(w)?)))
            .collect()
    }
}

/// The background jobs whose progress is tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    HintReplay,
    AntiEntropy,
    TombstoneGc,
    Gossip,
}

impl Job {
    pub const ALL: [Job; 4] = [
        Job::HintReplay,
        Job::AntiEntropy,
        Job::TombstoneGc,
        Job::Gossip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::HintReplay => "hint_replay",
            Job::AntiEntropy => "anti_entropy",
            Job::TombstoneGc => "tombstone_gc",
            Job::Gossip => "gossip",
        }
    }
}

/// One job's progress.
#[derive(Debug, Default)]
pub struct JobState {
    pub last_progress_ms: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// Every job's progress.
#[derive(Debug, Default)]
pub struct Jobs {
    hint_replay: JobState,
    anti_entropy: JobState,
    tombstone_gc: JobState,
    gossip: JobState,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Jobs {
    pub fn get(&self, job: Job) -> &JobState {
        match job {
            Job::HintReplay => &self.hint_replay,
            Job::AntiEntropy => &self.anti_entropy,
            Job::TombstoneGc => &self.tombstone_gc,
            Job::Gossip => &self.gossip,
        }
    }

    /// The job did useful work (or found nothing to do) just now.
    pub fn progress(&self, job: Job) {
        self.get(job)
            .last_progress_ms
            .store(wall_ms(), Ordering::Relaxed);
    }

    /// An attempt of the job failed.
    pub fn failed(&self, job: Job, why: impl Into<String>) {
        let s = self.get(job);
        s.errors.fetch_add(1, Ordering::Relaxed);
        *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
    }

    /// `(last progress ms, errors, last error)` of a job.
    pub fn status(&self, job: Job) -> (u64, u64, Option<String>) {
        let s = self.get(job);
        (
            s.last_progress_ms.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            s.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_counters_and_jobs() {
        let m = Metrics::default();
        Metrics::add(&m.commits, 3);
        m.jobs.failed(Job::HintReplay, "x");
        m.jobs.progress(Job::Gossip);
        let text = m.render();
        assert!(text.contains("# TYPE ringkv_commits_total counter\nringkv_commits_total 3\n"));
        assert!(text.contains("ringkv_writes_total 0\n"));
        assert!(text.contains("ringkv_job_errors_total{job=\"hint_replay\"} 1\n"));
        assert!(!text.contains("ringkv_job_last_progress_ms{job=\"gossip\"} 0\n"));
        assert!(text.contains("ringkv_job_last_progress_ms{job=\"tombstone_gc\"} 0\n"));
        assert_eq!(m.jobs.status(Job::HintReplay).2.as_deref(), Some("x"));
    }

    #[test]
    fn failing_reloads_are_gauges() {
        let m = Metrics::default();
        assert!(m
            .render()
            .contains("ringkv_reload_failing{file=\"tokens\"} 0\n"));
        let f = ReloadFailure {
            since_unix_ms: 5,
            attempts: 2,
            last_error: "no".into(),
        };
        m.reloads.set(Reloadable::Tokens, Some(f.clone()));
        let text = m.render();
        assert!(text.contains("ringkv_reload_failing{file=\"tokens\"} 1\n"));
        assert!(text.contains("ringkv_reload_failing{file=\"tls\"} 0\n"));
        assert_eq!(m.reloads.failing(), vec![(Reloadable::Tokens, f)]);
        m.reloads.set(Reloadable::Tokens, None);
        assert!(m
            .render()
            .contains("ringkv_reload_failing{file=\"tokens\"} 0\n"));
    }
}
