//! Per-operation counters and latency histograms, merged across clients.

use crate::workload::OpKind;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Largest latency the histograms track exactly (1 hour, in µs); larger
/// values are recorded as this.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The server answered with an unexpected HTTP status.
    Status(u16),
    /// No complete answer within `--timeout`.
    Timeout,
    /// The connection could not be made or broke during the request.
    Connection,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "http_{code}"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Connection => f.write_str("connection"),
        }
    }
}

/// Outcomes and latencies of one kind of operation.
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latency of every answered operation (successes and read misses), µs.
    pub latency: Histogram<u64>,
    /// Successful operations (for reads: 200 only).
    pub ok: u64,
    /// Reads answered 404 (the key has no value): correct answers, not errors.
    pub misses: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first detail seen for each error kind (an error body, a message).
    pub error_samples: BTreeMap<ErrorKind, String>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid bounds"),
            ok: 0,
            misses: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }
}

impl OpStats {
    pub fn record_latency(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(us.min(MAX_TRACKED_US));
    }

    pub fn record_error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Counts an error and keeps `detail` if it is the first of its kind.
    pub fn record_error_detail(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        self.record_error(kind);
        self.error_samples.entry(kind).or_insert_with(detail);
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Operations answered (ok + misses).
    pub fn answered(&self) -> u64 {
        self.ok + self.misses
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.latency.add(&other.latency).expect("same bounds");
        self.ok += other.ok;
        self.misses += other.misses;
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, v) in &other.error_samples {
            self.error_samples.entry(*k).or_insert_with(|| v.clone());
        }
    }
}

/// Everything one phase measured.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    /// Indexed by [`OpKind::index`].
    pub ops: [OpStats; 3],
    /// Times a client re-established its connection after a failure.
    pub reconnects: u64,
    /// Clients that stopped because their node stayed unreachable.
    pub clients_gave_up: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl PhaseStats {
    /// Waits for a phase's client tasks, merges their stats, stamps the
    /// elapsed time since `start` and stops the phase's progress ticker.
    pub async fn gather(
        phase: &str,
        tasks: Vec<tokio::task::JoinHandle<PhaseStats>>,
        start: std::time::Instant,
        ticker: tokio::task::JoinHandle<()>,
    ) -> PhaseStats {
        let mut total = PhaseStats::default();
        for t in tasks {
            match t.await {
                Ok(stats) => total.merge(&stats),
                Err(e) => panic!("{phase} client panicked: {e}"),
            }
        }
        total.elapsed = start.elapsed();
        ticker.abort();
        total
    }

    pub fn op(&mut self, kind: OpKind) -> &mut OpStats {
        &mut self.ops[kind.index()]
    }

    pub fn get(&self, kind: OpKind) -> &OpStats {
        &self.ops[kind.index()]
    }

    pub fn merge(&mut self, other: &PhaseStats) {
        for (a, b) in self.ops.iter_mut().zip(&other.ops) {
            a.merge(b);
        }
        self.reconnects += other.reconnects;
        self.clients_gave_up += other.clients_gave_up;
    }

    /// All operation kinds together.
    pub fn total(&self) -> OpStats {
        let mut t = OpStats::default();
        for op in &self.ops {
            t.merge(op);
        }
        t
    }

    /// Acknowledged writes and deletes.
    pub fn acked_writes(&self) -> u64 {
        self.get(OpKind::Write).ok + self.get(OpKind::Delete).ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = PhaseStats::default();
        a.op(OpKind::Read).ok = 2;
        a.op(OpKind::Read)
            .record_latency(Duration::from_micros(100));
        a.op(OpKind::Read)
            .record_latency(Duration::from_micros(300));
        a.op(OpKind::Write).record_error(ErrorKind::Status(503));
        let mut b = PhaseStats::default();
        b.op(OpKind::Read).misses = 1;
        b.op(OpKind::Read).record_latency(Duration::from_millis(5));
        b.op(OpKind::Write).record_error(ErrorKind::Status(503));
        b.op(OpKind::Write).record_error(ErrorKind::Timeout);
        b.reconnects = 3;
        a.merge(&b);
        let r = a.get(OpKind::Read);
        assert_eq!(r.answered(), 3);
        assert_eq!(r.latency.len(), 3);
        assert!(r.latency.max() >= 4_990);
        let w = a.get(OpKind::Write);
        assert_eq!(w.errors[&ErrorKind::Status(503)], 2);
        assert_eq!(w.error_count(), 3);
        assert_eq!(a.reconnects, 3);
        assert_eq!(a.total().latency.len(), 3);
        assert_eq!(ErrorKind::Status(503).to_string(), "http_503");
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut s = OpStats::default();
        s.record_latency(Duration::from_secs(10_000));
        s.record_latency(Duration::ZERO);
        assert_eq!(s.latency.len(), 2);
    }
}
