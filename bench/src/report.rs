//! Results: the tables printed at the end of each phase and the JSON file.

use crate::cli::Settings;
use crate::metrics::FsyncReport;
use crate::stats::{OpStats, PhaseStats};
use crate::verify::{describe_kind, VerifyStats};
use crate::workload::OpKind;
use serde::Serialize;
use std::collections::BTreeMap;

/// `812µs`, `1.24ms`, `2.31s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct OpReport {
    /// Answered operations (ok + misses).
    pub count: u64,
    pub ok: u64,
    /// Reads answered 404.
    pub misses: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    pub ops_per_sec: f64,
    /// Microseconds; absent when nothing was answered.
    pub latency_us: Option<Latency>,
}

impl OpReport {
    pub fn new(s: &OpStats, secs: f64) -> OpReport {
        let h = &s.latency;
        let latency_us = (!h.is_empty()).then(|| Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        });
        OpReport {
            count: s.answered(),
            ok: s.ok,
            misses: s.misses,
            errors: s.error_count(),
            errors_by_kind: s.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            error_samples: s
                .error_samples
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ops_per_sec: if secs > 0.0 {
                s.answered() as f64 / secs
            } else {
                0.0
            },
            latency_us,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct PhaseReport {
    pub elapsed_s: f64,
    pub read: OpReport,
    pub write: OpReport,
    pub delete: OpReport,
    pub total: OpReport,
    pub reconnects: u64,
    pub clients_gave_up: u64,
}

impl PhaseReport {
    pub fn new(p: &PhaseStats) -> PhaseReport {
        let secs = p.elapsed.as_secs_f64();
        PhaseReport {
            elapsed_s: secs,
            read: OpReport::new(p.get(OpKind::Read), secs),
            write: OpReport::new(p.get(OpKind::Write), secs),
            delete: OpReport::new(p.get(OpKind::Delete), secs),
            total: OpReport::new(&p.total(), secs),
            reconnects: p.reconnects,
            clients_gave_up: p.clients_gave_up,
        }
    }

    fn ops(&self) -> [(&'static str, &OpReport); 4] {
        [
            ("read", &self.read),
            ("write", &self.write),
            ("delete", &self.delete),
            ("total", &self.total),
        ]
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct VerifyReport {
    pub passed: bool,
    pub keys: u64,
    pub ok: u64,
    pub mismatches: u64,
    pub mismatches_by_kind: BTreeMap<String, u64>,
    pub unreadable: u64,
    pub examples: Vec<String>,
    pub elapsed_s: f64,
}

impl VerifyReport {
    pub fn new(v: &VerifyStats) -> VerifyReport {
        VerifyReport {
            passed: v.passed(),
            keys: v.keys,
            ok: v.ok,
            mismatches: v.mismatch_count(),
            mismatches_by_kind: v
                .mismatches
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            unreadable: v.unreadable,
            examples: v.examples.clone(),
            elapsed_s: v.elapsed.as_secs_f64(),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct FsyncJson {
    pub commits_per_acked_write: Option<f64>,
    /// Why it is `null`.
    pub unavailable: Option<String>,
    pub commits_delta: Option<f64>,
    pub writes_total_delta: Option<f64>,
    pub acked_writes: u64,
    /// Why the figure may be off (connections broke: a node may have
    /// restarted and reset its counters).
    pub caveat: Option<String>,
}

impl FsyncJson {
    pub fn new(f: &FsyncReport, reconnects: u64) -> FsyncJson {
        FsyncJson {
            caveat: (reconnects > 0 && f.commits_per_acked_write.is_ok()).then(|| {
                format!(
                    "{reconnects} reconnects during the run: a node that restarted \
                     has reset counters, so this may be off"
                )
            }),
            commits_per_acked_write: f.commits_per_acked_write.as_ref().ok().copied(),
            unavailable: f.commits_per_acked_write.as_ref().err().cloned(),
            commits_delta: f.commits_delta,
            writes_total_delta: f.writes_delta,
            acked_writes: f.acked_writes,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct ConfigJson {
    pub nodes: Vec<String>,
    pub clients: usize,
    pub keys: u64,
    pub distribution: &'static str,
    pub zipf_theta: f64,
    pub value_size: usize,
    pub workload: String,
    pub read_ratio: f64,
    pub write_ratio: f64,
    pub delete_ratio: f64,
    pub read_consistency: &'static str,
    pub write_consistency: &'static str,
    pub duration_s: f64,
    pub ops: Option<u64>,
    pub rate: Option<f64>,
    pub seed: u64,
    pub run_id: String,
    pub phases: Vec<&'static str>,
    pub timeout_s: f64,
    pub key_prefix: String,
}

impl ConfigJson {
    pub fn new(s: &Settings, seed: u64, run_id: u32) -> ConfigJson {
        ConfigJson {
            nodes: s.nodes.iter().map(|n| n.host.clone()).collect(),
            clients: s.clients,
            keys: s.keys,
            distribution: s.distribution.name(),
            zipf_theta: s.zipf_theta,
            value_size: s.value_size,
            workload: s.workload.clone(),
            read_ratio: s.mix.read,
            write_ratio: s.mix.write(),
            delete_ratio: s.mix.delete,
            read_consistency: s.read_consistency.name(),
            write_consistency: s.write_consistency.name(),
            duration_s: s.duration.as_secs_f64(),
            ops: s.ops,
            rate: s.rate,
            seed,
            run_id: format!("{run_id:08x}"),
            phases: s.phases.names(),
            timeout_s: s.timeout.as_secs_f64(),
            key_prefix: s.key_prefix.clone(),
        }
    }
}

/// The whole JSON document.
#[derive(Serialize, Clone, Debug)]
pub struct Results {
    pub config: ConfigJson,
    pub cores: usize,
    pub load: Option<PhaseReport>,
    pub run: Option<PhaseReport>,
    /// Run-phase answered operations per second divided by `cores`.
    pub run_ops_per_sec_per_core: Option<f64>,
    pub fsyncs: Option<FsyncJson>,
    pub verify: Option<VerifyReport>,
}

/// The per-operation table of a phase.
pub fn print_table(p: &PhaseReport) {
    println!(
        "  {:<7} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "max", "errors"
    );
    for (name, op) in p.ops() {
        let lat = |f: fn(&Latency) -> u64| {
            op.latency_us
                .as_ref()
                .map_or_else(|| "-".to_string(), |l| fmt_us(f(l)))
        };
        println!(
            "  {:<7} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            name,
            op.count,
            op.ops_per_sec,
            lat(|l| l.p50),
            lat(|l| l.p90),
            lat(|l| l.p99),
            lat(|l| l.p999),
            lat(|l| l.max),
            op.errors
        );
    }
    for (name, op) in p.ops().into_iter().take(3) {
        for (kind, n) in &op.errors_by_kind {
            let sample = op
                .error_samples
                .get(kind)
                .map(|s| format!(" (first: {})", s.trim()))
                .unwrap_or_default();
            println!("  {name} errors: {kind} x{n}{sample}");
        }
    }
    if p.read.misses > 0 {
        println!("  reads answered 404 (no value): {}", p.read.misses);
    }
    if p.reconnects > 0 || p.clients_gave_up > 0 {
        println!(
            "  reconnect attempts after failures: {}, clients that gave up: {}",
            p.reconnects, p.clients_gave_up
        );
    }
}

pub fn print_verify(v: &VerifyReport) {
    println!(
        "== verify: {} keys read back at quorum in {:.2} s: {} ok, {} mismatches, {} unreadable -> {}",
        v.keys,
        v.elapsed_s,
        v.ok,
        v.mismatches,
        v.unreadable,
        if v.passed { "PASS" } else { "FAIL" }
    );
    for (kind, n) in &v.mismatches_by_kind {
        println!("  {kind} x{n}: {}", describe_kind(kind));
    }
    for e in &v.examples {
        println!("  - {e}");
    }
}

pub fn print_fsyncs(f: &FsyncJson, nodes: usize) {
    match f.commits_per_acked_write {
        Some(v) => {
            let writes = f
                .writes_total_delta
                .map_or("n/a".to_string(), |w| format!("{w:.0}"));
            println!(
                "  fsyncs (commits) per acknowledged write: {v:.3} \
                 (commits +{:.0} over {nodes} node(s), ringkv_writes_total +{writes}, \
                 {} writes/deletes acknowledged)",
                f.commits_delta.unwrap_or(0.0),
                f.acked_writes
            );
            if let Some(c) = &f.caveat {
                println!("    caution: {c}");
            }
        }
        None => println!(
            "  fsyncs (commits) per acknowledged write: n/a ({})",
            f.unavailable.as_deref().unwrap_or("node has no /metrics")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_formatting() {
        assert_eq!(fmt_us(812), "812µs");
        assert_eq!(fmt_us(1_240), "1.24ms");
        assert_eq!(fmt_us(2_310_000), "2.31s");
    }

    #[test]
    fn report_numbers_come_from_the_stats() {
        let mut p = PhaseStats::default();
        for us in 1..=1000u64 {
            p.op(OpKind::Read).ok += 1;
            p.op(OpKind::Read).record_latency(Duration::from_micros(us));
        }
        p.op(OpKind::Write)
            .record_error_detail(crate::stats::ErrorKind::Status(503), || "{}".into());
        p.elapsed = Duration::from_secs(2);
        let r = PhaseReport::new(&p);
        assert_eq!(r.read.count, 1000);
        assert_eq!(r.read.ops_per_sec, 500.0);
        let l = r.read.latency_us.as_ref().unwrap();
        assert!((495..=505).contains(&l.p50), "{l:?}");
        assert!((985..=995).contains(&l.p99), "{l:?}");
        assert!(l.max >= 1000);
        assert!(r.write.latency_us.is_none());
        assert_eq!(r.write.errors_by_kind["http_503"], 1);
        assert_eq!(r.total.errors, 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["read"]["count"], 1000);
    }
}
