//! The checkers: what a history and the final state must satisfy. Pure.
//!
//! * **Set** — every acknowledged write is readable at `all` and present on
//!   every replica of its key (else it is *lost*); a write answered
//!   `not_applied` never appears (else a *failed write appeared*).
//! * **Register** — garage's read-after-write property, which is the right
//!   one for last-write-wins (not linearizable): a read returns a value whose
//!   write completed before the read began and was not yet overwritten by
//!   another completed write, or one whose write was still in flight (an
//!   indeterminate write is in flight forever). A value no write produced is
//!   *never written*; an older one is *stale*.
//! * **Delete** — a key whose delete was acknowledged, and which is never
//!   written again, reads absent from then on and is absent (or a tombstone)
//!   on every replica at the end; otherwise it was *resurrected*.

use crate::history::{Kind, Op, Outcome};
use std::collections::HashMap;

/// What the end of a run found for one key.
#[derive(Clone, Debug, Default)]
pub struct Final {
    /// The id read at `all` (`None`: absent).
    pub read: Option<String>,
    /// Whether the read at `all` succeeded at all.
    pub read_ok: bool,
    /// Per replica: the id it stores as a live value (`None`: nothing or a
    /// tombstone).
    pub replicas: Vec<(String, Option<String>)>,
    /// Whether every replica answered (else `replicas` proves nothing).
    pub replicas_ok: bool,
}

/// How long after an indeterminate write was first seen a later write must
/// begin to be guaranteed a higher version: the cluster's allowed clock drift
/// (`cluster.max_clock_drift_ms` of the suite's nodes). See ARCHITECTURE.md,
/// "A write is versioned above what the cluster has stored".
pub const VISIBLE_MARGIN_MS: u64 = 5_000;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub indeterminate: u64,
    pub lost: u64,
    pub stale: u64,
    pub never_written: u64,
    pub failed_appeared: u64,
    pub resurrected: u64,
    /// Keys whose final state could not be read from every replica.
    pub unverified: u64,
    pub converge_ms: Option<u64>,
    pub crashes: u64,
    /// One line per anomaly (capped), for the log.
    pub anomalies: Vec<String>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.stale == 0
            && self.never_written == 0
            && self.failed_appeared == 0
            && self.resurrected == 0
            && self.unverified == 0
            && self.crashes == 0
            && self.converge_ms.is_some()
    }

    fn note(&mut self, line: String) {
        if self.anomalies.len() < 50 {
            self.anomalies.push(line);
        }
    }
}

/// Counts operations by outcome.
pub fn tally(history: &[Op], report: &mut Report) {
    for op in history {
        report.attempted += 1;
        match op.outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Fail => report.failed += 1,
            Outcome::Indeterminate => report.indeterminate += 1,
        }
    }
}

/// The set check over keys starting with `s`.
pub fn check_set(history: &[Op], finals: &HashMap<String, Final>, report: &mut Report) {
    for op in history
        .iter()
        .filter(|o| o.kind == Kind::Put && o.key.starts_with('s'))
    {
        let Some(f) = finals.get(&op.key) else {
            continue;
        };
        match op.outcome {
            Outcome::Ok => {
                if !f.read_ok || f.read.as_deref() != op.value.as_deref() {
                    report.lost += 1;
                    report.note(format!(
                        "lost: {} (acknowledged at {} ms) reads {:?} at all",
                        op.key, op.complete_ms, f.read
                    ));
                }
                if !f.replicas_ok {
                    report.unverified += 1;
                    report.note(format!(
                        "unverified: a replica of {} did not answer",
                        op.key
                    ));
                }
                for (node, held) in &f.replicas {
                    if held.as_deref() != op.value.as_deref() {
                        report.lost += 1;
                        report.note(format!(
                            "lost: replica {node} lacks {} (has {held:?})",
                            op.key
                        ));
                    }
                }
            }
            Outcome::Fail => {
                let seen = f.read.is_some() || f.replicas.iter().any(|(_, h)| h.is_some());
                if seen {
                    report.failed_appeared += 1;
                    report.note(format!(
                        "failed write appeared: {} ({} {})",
                        op.key, op.status, op.error
                    ));
                }
            }
            Outcome::Indeterminate => {}
        }
    }
}

/// The register check over keys starting with `r`.
pub fn check_register(history: &[Op], report: &mut Report) {
    let mut writes: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in history
        .iter()
        .filter(|o| o.kind == Kind::Put && o.key.starts_with('r'))
    {
        writes.entry(op.key.as_str()).or_default().push(op);
    }
    let by_value: HashMap<(&str, &str), &Op> = writes
        .values()
        .flatten()
        .filter_map(|w| w.value.as_deref().map(|v| ((w.key.as_str(), v), *w)))
        .collect();
    // An indeterminate write took effect by the end of the first read that
    // returned it.
    let mut first_seen: HashMap<(&str, &str), u64> = HashMap::new();
    for read in history
        .iter()
        .filter(|o| o.kind == Kind::Get && o.key.starts_with('r') && o.outcome == Outcome::Ok)
    {
        if let Some(v) = read.value.as_deref() {
            let seen = first_seen.entry((read.key.as_str(), v)).or_insert(u64::MAX);
            *seen = (*seen).min(read.complete_ms);
        }
    }
    for read in history
        .iter()
        .filter(|o| o.kind == Kind::Get && o.key.starts_with('r') && o.outcome == Outcome::Ok)
    {
        let key = read.key.as_str();
        let acked = writes.get(key).map(Vec::as_slice).unwrap_or_default();
        match read.value.as_deref() {
            None => {
                if let Some(w) = acked
                    .iter()
                    .find(|w| w.outcome == Outcome::Ok && w.complete_ms < read.invoke_ms)
                {
                    report.stale += 1;
                    report.note(format!(
                        "stale: {key} read absent at {} ms after {:?} was acknowledged at {} ms",
                        read.invoke_ms, w.value, w.complete_ms
                    ));
                }
            }
            Some(v) => {
                let Some(w) = by_value.get(&(key, v)) else {
                    report.never_written += 1;
                    report.note(format!("never written: {key} read {v:?}"));
                    continue;
                };
                if w.invoke_ms > read.complete_ms {
                    report.never_written += 1;
                    report.note(format!(
                        "from the future: {key} read {v:?} before it was written"
                    ));
                    continue;
                }
                if w.outcome == Outcome::Fail {
                    report.failed_appeared += 1;
                    report.note(format!("failed write appeared: {key} read {v:?}"));
                    continue;
                }
                // When it surely took effect: its acknowledgement; for an
                // indeterminate write, the first read of it plus the margin
                // within which a later write may still be versioned below it.
                let settled = if w.outcome == Outcome::Ok {
                    w.complete_ms
                } else {
                    first_seen
                        .get(&(key, v))
                        .map_or(u64::MAX, |t| t.saturating_add(VISIBLE_MARGIN_MS))
                };
                if let Some(newer) = acked.iter().find(|w2| {
                    w2.outcome == Outcome::Ok
                        && settled < w2.invoke_ms
                        && w2.complete_ms < read.invoke_ms
                }) {
                    report.stale += 1;
                    report.note(format!(
                        "stale: {key} read {v:?} at {} ms; {:?} overwrote it at {}–{} ms",
                        read.invoke_ms, newer.value, newer.invoke_ms, newer.complete_ms
                    ));
                }
            }
        }
    }
}

/// The delete check over keys starting with `d`: reads during the run, and
/// the final state — deleted keys stay absent, and a key whose delete failed
/// (`not_applied`) still holds its value.
pub fn check_delete(history: &[Op], finals: &HashMap<String, Final>, report: &mut Report) {
    for op in history
        .iter()
        .filter(|o| o.kind == Kind::Delete && o.outcome == Outcome::Fail && o.key.starts_with('d'))
    {
        let Some(f) = finals.get(&op.key) else {
            continue;
        };
        if f.read_ok && f.read.is_none() {
            report.failed_appeared += 1;
            report.note(format!(
                "failed delete took effect: {} ({} {})",
                op.key, op.status, op.error
            ));
        }
    }
    let deleted: HashMap<&str, u64> = history
        .iter()
        .filter(|o| o.kind == Kind::Delete && o.outcome == Outcome::Ok && o.key.starts_with('d'))
        .map(|o| (o.key.as_str(), o.complete_ms))
        .collect();
    for read in history
        .iter()
        .filter(|o| o.kind == Kind::Get && o.outcome == Outcome::Ok && o.key.starts_with('d'))
    {
        if let Some(&at) = deleted.get(read.key.as_str()) {
            if at < read.invoke_ms && read.value.is_some() {
                report.resurrected += 1;
                report.note(format!(
                    "resurrected: {} read back at {} ms after its delete at {at} ms",
                    read.key, read.invoke_ms
                ));
            }
        }
    }
    for key in deleted.keys() {
        let Some(f) = finals.get(*key) else { continue };
        if !f.read_ok || !f.replicas_ok {
            report.unverified += 1;
            report.note(format!(
                "unverified: the final state of {key} could not be read"
            ));
        }
        if f.read.is_some() || f.replicas.iter().any(|(_, h)| h.is_some()) {
            report.resurrected += 1;
            report.note(format!(
                "resurrected: {key} at the end (read {:?}, replicas {:?})",
                f.read, f.replicas
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, key: &str, value: Option<&str>, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            client: 0,
            kind,
            key: key.into(),
            value: value.map(String::from),
            len: 0,
            invoke_ms: t.0,
            complete_ms: t.1,
            outcome,
            status: 200,
            consistency: "quorum".into(),
            coordinator: String::new(),
            error: String::new(),
        }
    }

    use Kind::*;
    use Outcome::*;

    #[test]
    fn register_reads_of_overwritten_values_are_stale() {
        let h = vec![
            op(Put, "r0", Some("a"), (0, 10), Ok),
            op(Put, "r0", Some("b"), (20, 30), Ok),
            op(Get, "r0", Some("a"), (40, 50), Ok),
            op(Get, "r0", Some("a"), (25, 50), Ok), // concurrent with b: fine
            op(Get, "r0", Some("b"), (40, 50), Ok),
            op(Get, "r0", Some("zz"), (40, 50), Ok),
            op(Get, "r0", None, (40, 50), Ok),
        ];
        let mut r = Report::default();
        check_register(&h, &mut r);
        assert_eq!((r.stale, r.never_written), (2, 1), "{:?}", r.anomalies);
    }

    #[test]
    fn in_flight_writes_may_be_read_any_time_failed_ones_never() {
        let h = vec![
            op(Put, "r0", Some("a"), (0, 10), Ok),
            op(Put, "r0", Some("x"), (5, 15), Indeterminate),
            op(Put, "r0", Some("b"), (20, 30), Ok),
            op(Put, "r0", Some("f"), (21, 31), Fail),
            op(Get, "r0", Some("x"), (100, 110), Ok),
            op(Get, "r0", Some("f"), (100, 110), Ok),
        ];
        let mut r = Report::default();
        check_register(&h, &mut r);
        assert_eq!((r.stale, r.failed_appeared), (0, 1), "{:?}", r.anomalies);
    }

    #[test]
    fn set_and_delete_checks() {
        let h = vec![
            op(Put, "s1", Some("s1"), (0, 1), Ok),
            op(Put, "s2", Some("s2"), (0, 1), Fail),
            op(Put, "d1", Some("d1"), (0, 1), Ok),
            op(Delete, "d1", None, (2, 3), Ok),
            op(Get, "d1", Some("d1"), (4, 5), Ok),
        ];
        let mut finals = HashMap::new();
        finals.insert(
            "s1".to_string(),
            Final {
                read: Some("s1".into()),
                read_ok: true,
                replicas: vec![("n1".into(), Some("s1".into())), ("n2".into(), None)],
                replicas_ok: true,
            },
        );
        finals.insert(
            "s2".to_string(),
            Final {
                read: None,
                read_ok: true,
                replicas: vec![("n1".into(), Some("s2".into()))],
                replicas_ok: true,
            },
        );
        finals.insert("d1".to_string(), Final::default());
        let mut r = Report::default();
        check_set(&h, &finals, &mut r);
        check_delete(&h, &finals, &mut r);
        assert_eq!(
            (r.lost, r.failed_appeared, r.resurrected, r.unverified),
            (1, 1, 1, 1),
            "{:?}",
            r.anomalies
        );
        assert!(!r.clean());
    }

    /// Review of 06: an indeterminate write counted as "in flight forever",
    /// so reading it after a later acknowledged overwrite was never stale.
    #[test]
    fn an_indeterminate_write_is_settled_once_read() {
        let m = VISIBLE_MARGIN_MS;
        let h = vec![
            op(Put, "r1", Some("w"), (0, 2 * m), Indeterminate),
            op(Get, "r1", Some("w"), (100, 110), Ok),
            // Begun within the margin after w was seen: may be ordered below.
            op(Put, "r1", Some("w2"), (200, 210), Ok),
            op(Get, "r1", Some("w"), (300, 310), Ok),
        ];
        let mut r = Report::default();
        check_register(&h, &mut r);
        assert_eq!(r.stale, 0, "{:?}", r.anomalies);
        let mut h = h;
        h.push(op(Put, "r1", Some("w3"), (110 + m + 1, 110 + m + 5), Ok));
        h.push(op(Get, "r1", Some("w"), (110 + m + 10, 110 + m + 20), Ok));
        let mut r = Report::default();
        check_register(&h, &mut r);
        assert_eq!(r.stale, 1, "{:?}", r.anomalies);
    }

    #[test]
    fn a_failed_delete_that_took_effect_is_caught() {
        let h = vec![
            op(Put, "d2", Some("d2"), (0, 1), Ok),
            op(Delete, "d2", None, (2, 3), Fail),
        ];
        let mut finals = HashMap::new();
        finals.insert(
            "d2".to_string(),
            Final {
                read: None,
                read_ok: true,
                replicas: vec![],
                replicas_ok: true,
            },
        );
        let mut r = Report::default();
        check_delete(&h, &finals, &mut r);
        assert_eq!(r.failed_appeared, 1, "{:?}", r.anomalies);
    }
}
