//! Orchestration: startup check, the phases in order, the report, the exit
//! status.

use crate::cli::Settings;
use crate::conn::{CallError, Client, ReconnectPolicy};
use crate::ctx::{Ctx, Live};
use crate::keys::{KeyChooser, KeySpace};
use crate::ledger::Ledger;
use crate::report::{self, ConfigJson, FsyncJson, PhaseReport, Results, VerifyReport};
use crate::rng::mix_seed;
use crate::{load, metrics, run, verify};
use bytes::Bytes;
use hyper::Method;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Timeout of a `/metrics` scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

fn entropy() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix_seed(&[nanos, u64::from(std::process::id())])
}

/// Checks every node answers `GET /health` before any load is sent.
async fn check_nodes(s: &Settings) -> Result<(), String> {
    for node in &s.nodes {
        let mut client = Client::new(
            node.clone(),
            ReconnectPolicy {
                connect_timeout: s.connect_timeout,
                max_reconnects: 0,
            },
        );
        let timeout = s.connect_timeout.max(Duration::from_secs(1));
        match client
            .call(Method::GET, "/health", Bytes::new(), timeout)
            .await
        {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                return Err(format!(
                    "node {node} answered HTTP {} to GET /health: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                ))
            }
            Err(CallError::Timeout) => {
                return Err(format!(
                    "node {node} did not answer GET /health within {timeout:?}"
                ))
            }
            Err(CallError::Connection(e) | CallError::GaveUp(e)) => {
                return Err(format!("node {node} is unreachable: {e}"))
            }
        }
    }
    Ok(())
}

fn print_header(s: &Settings, seed: u64, run_id: u32, cores: usize) {
    let nodes: Vec<&str> = s.nodes.iter().map(|n| n.host.as_str()).collect();
    let dist = match s.distribution {
        crate::keys::DistKind::Uniform => "uniform".to_string(),
        d => format!("{}(theta {})", d.name(), s.zipf_theta),
    };
    println!(
        "ringkv-bench: {} clients over {} node(s) [{}], {} keys ({}), {}-byte values",
        s.clients,
        nodes.len(),
        nodes.join(", "),
        s.keys,
        dist,
        s.value_size
    );
    println!(
        "  workload {} (read {:.1}% / write {:.1}% / delete {:.1}%), consistency read={} write={}",
        s.workload,
        s.mix.read * 100.0,
        s.mix.write() * 100.0,
        s.mix.delete * 100.0,
        s.read_consistency.name(),
        s.write_consistency.name()
    );
    let bound = match s.ops {
        Some(n) => format!("{:?} or {n} ops", s.duration),
        None => format!("{:?}", s.duration),
    };
    let pacing = match s.rate {
        Some(r) => format!("open loop at {r} ops/s (latency from scheduled start)"),
        None => "closed loop (unthrottled)".into(),
    };
    println!(
        "  phases {}, run {bound}, {pacing}, timeout {:?}, seed {seed}, run id {run_id:08x}, {cores} core(s)",
        s.phases.names().join(","),
        s.timeout
    );
}

/// Runs everything; returns the process exit status.
pub async fn run(s: Settings) -> u8 {
    let seed = s.seed.unwrap_or_else(entropy);
    let run_id = (entropy() >> 32) as u32;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    print_header(&s, seed, run_id, cores);

    if let Err(e) = check_nodes(&s).await {
        eprintln!("ringkv-bench: {e}");
        return 1;
    }
    let chooser = match KeyChooser::new(s.distribution, s.keys, s.zipf_theta) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv-bench: {e}");
            return 2;
        }
    };
    let policy = ReconnectPolicy {
        connect_timeout: s.connect_timeout,
        max_reconnects: s.max_reconnects,
    };
    let ctx = Arc::new(Ctx {
        keyspace: KeySpace::new(&s.key_prefix),
        chooser,
        ledger: Ledger::new(s.keys),
        run_id,
        seed,
        stop: AtomicBool::new(false),
        live: Live::default(),
        settings: s.clone(),
    });
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("ringkv-bench: interrupted, reporting what was measured");
                ctx.stop.store(true, Ordering::Relaxed);
            }
        });
    }

    let mut results = Results {
        config: ConfigJson::new(&s, seed, run_id),
        cores,
        load: None,
        run: None,
        run_ops_per_sec_per_core: None,
        fsyncs: None,
        verify: None,
    };
    let mut failed = false;

    if s.phases.load && !ctx.stopped() {
        let stats = load::run(ctx.clone(), policy).await;
        let r = PhaseReport::new(&stats);
        println!(
            "== load: {} of {} keys written in {:.2} s ({:.0} writes/s), {} errors",
            r.write.ok, s.keys, r.elapsed_s, r.write.ops_per_sec, r.write.errors
        );
        report::print_table(&r);
        failed |= r.clients_gave_up > 0;
        results.load = Some(r);
    }

    if s.phases.run && !ctx.stopped() {
        let before = metrics::scrape_all(&s.nodes, SCRAPE_TIMEOUT).await;
        let stats = run::run(ctx.clone(), policy).await;
        let after = metrics::scrape_all(&s.nodes, SCRAPE_TIMEOUT).await;
        let r = PhaseReport::new(&stats);
        println!(
            "== run: {:.2} s, {} ops answered ({:.0} ops/s), {} errors",
            r.elapsed_s, r.total.count, r.total.ops_per_sec, r.total.errors
        );
        report::print_table(&r);
        if let Some(rate) = s.rate {
            println!(
                "  target rate {rate:.0} ops/s, achieved {:.0} ops/s",
                (r.total.count + r.total.errors) as f64 / r.elapsed_s.max(1e-9)
            );
        }
        let per_core = r.total.ops_per_sec / cores as f64;
        println!(
            "  ops/s per core: {per_core:.0} ({:.0} ops/s / {cores} cores; the bench shares them if run on the same machine)",
            r.total.ops_per_sec
        );
        let fsync = FsyncJson::new(
            &metrics::fsync_report(&before, &after, stats.acked_writes()),
            stats.reconnects,
        );
        report::print_fsyncs(&fsync, s.nodes.len());
        failed |= r.clients_gave_up > 0;
        results.run_ops_per_sec_per_core = Some(per_core);
        results.fsyncs = Some(fsync);
        results.run = Some(r);
    }

    if s.phases.verify {
        let v = VerifyReport::new(&verify::run(ctx.clone(), policy).await);
        report::print_verify(&v);
        if s.write_consistency == crate::cli::Level::One && !v.passed {
            println!(
                "  note: writes were acknowledged at consistency=one; a quorum read may \
                 legitimately miss them"
            );
        }
        failed |= !v.passed;
        results.verify = Some(v);
    }

    if let Some(path) = &s.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialize");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("ringkv-bench: cannot write {}: {e}", path.display());
            return 1;
        }
        println!("results written to {}", path.display());
    }
    if ctx.stopped() {
        return 130;
    }
    u8::from(failed)
}
