//! `ringkv-chaos`: ringkv's Jepsen-style suite.
//!
//! A 5-node cluster runs in network namespaces of its own ([`netns`]), the
//! clients in another; a nemesis ([`nemesis`]) mixes faults with heals on a
//! schedule drawn from a printed seed while the clients ([`workload`]) record
//! every operation in a history ([`history`]). After the last heal the suite
//! waits for hints to drain and for anti-entropy to make every replica pair's
//! Merkle roots equal (timed), reads the final state, and runs the checkers
//! ([`checker`]). It exits 0 only when every run found zero lost, stale,
//! never-written, failed-then-appeared and resurrected values and no node
//! crashed.
//!
//! ```text
//! ringkv-chaos [--short | --long] [--seed N] [--run main|clock-behind|clock-ahead|all]
//!              [--bin PATH] [--out DIR] [--duration S]
//! ```
//!
//! Without root or network-namespace support it prints `SKIPPED: <reason>`
//! and exits 0 — reported as skipped, never as passed.

mod checker;
mod history;
mod nemesis;
mod netns;
mod nodes;
mod workload;

use checker::{Final, Report};
use history::{Kind, Op, Outcome};
use nemesis::{Nemesis, Palette};
use nodes::{ClusterConfig, Node};
use ringkv_actors::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nodes in every run.
const NODES: usize = 5;
/// Client threads.
const CLIENTS: u32 = 6;
/// Namespace names start with this.
const PREFIX: &str = "rkvc";
/// How long the suite waits for hints to drain and replicas to converge.
const SETTLE: Duration = Duration::from_secs(90);

struct Args {
    seed: u64,
    runs: Vec<String>,
    bin: PathBuf,
    out: Option<PathBuf>,
    main_s: u64,
    clock_s: u64,
    /// Run with sloppy quorum on (its weaker guarantee is documented; this
    /// shows what the checkers find then).
    sloppy: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        runs: vec!["main".into(), "clock-behind".into(), "clock-ahead".into()],
        bin: default_bin(),
        out: None,
        main_s: 75,
        clock_s: 30,
        sloppy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--run" => {
                let v = value()?;
                args.runs = if v == "all" {
                    args.runs.clone()
                } else {
                    vec![v]
                };
            }
            "--bin" => args.bin = PathBuf::from(value()?),
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--duration" => {
                args.main_s = value()?.parse().map_err(|e| format!("--duration: {e}"))?
            }
            "--short" => {
                args.main_s = 75;
                args.clock_s = 30;
            }
            "--sloppy" => args.sloppy = true,
            "--long" => {
                args.main_s = 1_500;
                args.clock_s = 150;
            }
            "-h" | "--help" => {
                println!(
                    "ringkv-chaos [--short | --long] [--seed N] [--run main|clock-behind|clock-ahead|all] [--bin PATH] [--out DIR] [--duration S]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `target/debug/ringkv` beside this binary's own directory.
fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ringkv")))
        .unwrap_or_else(|| PathBuf::from("target/debug/ringkv"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringkv-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = netns::unsupported() {
        println!("chaos: SKIPPED: {why}");
        return ExitCode::SUCCESS;
    }
    if !args.bin.exists() {
        eprintln!("ringkv-chaos: no ringkv binary at {}", args.bin.display());
        return ExitCode::from(2);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ringkv-chaos-{}", args.seed)));
    println!(
        "chaos: seed {} (replay: --seed {}), output in {}",
        args.seed,
        args.seed,
        out.display()
    );
    let mut all_clean = true;
    for (i, name) in args.runs.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        let plan = match name.as_str() {
            "main" => Plan {
                palette: Palette::All,
                seconds: args.main_s,
                fixed_clock: None,
                mix: workload::Mix {
                    set: 3,
                    register: 4,
                    delete: 2,
                },
            },
            "clock-behind" => Plan {
                palette: Palette::NoClock,
                seconds: args.clock_s,
                fixed_clock: Some((1, -60_000)),
                mix: workload::Mix {
                    set: 1,
                    register: 6,
                    delete: 1,
                },
            },
            "clock-ahead" => Plan {
                palette: Palette::NoClock,
                seconds: args.clock_s,
                fixed_clock: Some((1, 3_600_000)),
                mix: workload::Mix {
                    set: 1,
                    register: 6,
                    delete: 1,
                },
            },
            other => {
                eprintln!("ringkv-chaos: unknown run {other}");
                return ExitCode::from(2);
            }
        };
        let dir = out.join(name);
        let started = Instant::now();
        match run(name, seed, &plan, &args.bin, &dir, args.sloppy) {
            Ok(report) => {
                let clean = report.clean();
                all_clean &= clean;
                println!(
                    "chaos {name}: {} in {:.0?}; attempted {}, ok {}, failed {}, indeterminate {}, lost {}, stale {}, never-written {}, failed-appeared {}, resurrected {}, unverified {}, converged in {}, crashes {}",
                    if clean { "CLEAN" } else { "ANOMALIES" },
                    started.elapsed(),
                    report.attempted,
                    report.ok,
                    report.failed,
                    report.indeterminate,
                    report.lost,
                    report.stale,
                    report.never_written,
                    report.failed_appeared,
                    report.resurrected,
                    report.unverified,
                    report
                        .converge_ms
                        .map_or("never".to_string(), |ms| format!("{ms} ms")),
                    report.crashes
                );
                for a in &report.anomalies {
                    println!("  {a}");
                }
            }
            Err(e) => {
                all_clean = false;
                println!("chaos {name}: ERROR: {e}");
            }
        }
    }
    if all_clean {
        ExitCode::SUCCESS
    } else {
        println!("chaos: histories and node logs are in {}", out.display());
        ExitCode::FAILURE
    }
}

struct Plan {
    palette: Palette,
    seconds: u64,
    fixed_clock: Option<(usize, i64)>,
    mix: workload::Mix,
}

/// One run: network, cluster, clients, nemesis, settling, checks.
fn run(
    name: &str,
    seed: u64,
    plan: &Plan,
    bin: &Path,
    dir: &Path,
    sloppy: bool,
) -> Result<Report, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // A private copy: a rebuild meanwhile cannot swap the binary mid-run.
    let copy = dir.join("ringkv");
    std::fs::copy(bin, &copy).map_err(|e| format!("copy {}: {e}", bin.display()))?;
    let bin = copy.as_path();
    let net = netns::Net::create(PREFIX, NODES)?;
    nodes::kill_strays(&net);
    let config = nodes::write_config(
        dir,
        &net,
        &ClusterConfig {
            tombstone_grace_ms: 3_000,
            sloppy_quorum: sloppy,
        },
    )?;
    let mut nodes: Vec<Node> = (0..NODES).map(|i| Node::new(&net, i, dir)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        match plan.fixed_clock {
            Some((c, ms)) if c == i => n.set_faults(&format!("clock_offset_ms = {ms}\n")),
            _ => n.set_faults(""),
        }
        n.start(bin, &config)?;
    }
    let addrs: Vec<SocketAddrV4> = nodes.iter().map(|n| n.http).collect();
    nodes::wait_healthy(&net.client_ns(), &addrs)?;
    std::thread::sleep(Duration::from_secs(2));
    let steps = nemesis::schedule(seed, NODES, plan.seconds, plan.palette);
    let log: Vec<String> = steps
        .iter()
        .map(|s| format!("{} for {} s, heal {} s", s.fault, s.hold_s, s.heal_s))
        .collect();
    std::fs::write(dir.join("schedule.txt"), log.join("\n")).map_err(|e| e.to_string())?;
    println!(
        "chaos {name}: seed {seed}, {} steps over ~{} s",
        steps.len(),
        plan.seconds
    );

    let shared = Arc::new(workload::Shared {
        recorder: history::Recorder::create(&dir.join("history.jsonl"))?,
        nodes: addrs.clone(),
        stop: std::sync::atomic::AtomicBool::new(false),
        mix: plan.mix,
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let shared = shared.clone();
            let ns = net.client_ns();
            std::thread::spawn(move || {
                if netns::enter(&ns).is_ok() {
                    workload::client(id, seed, shared);
                }
            })
        })
        .collect();

    let nemesis = Nemesis {
        net: &net,
        bin,
        config: &config,
        keep_clock: plan.fixed_clock,
    };
    for step in &steps {
        println!(
            "  [{:>5.1}s] {}",
            shared.recorder.elapsed().as_secs_f64(),
            step.fault
        );
        nemesis.apply(&mut nodes, &step.fault)?;
        watch(&mut nodes, Duration::from_secs(step.hold_s));
        nemesis.heal(&mut nodes)?;
        watch(&mut nodes, Duration::from_secs(step.heal_s));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    shared.recorder.flush();
    nemesis.heal(&mut nodes)?;
    nodes::wait_healthy(&net.client_ns(), &addrs)?;

    let mut report = Report::default();
    let t = Instant::now();
    report.converge_ms = settle(&net.client_ns(), &addrs, &mut nodes)?;
    let settled = t.elapsed();
    let history = history::read(&dir.join("history.jsonl"))?;
    let t = Instant::now();
    let finals = final_state(&net.client_ns(), &addrs, &history)?;
    println!(
        "chaos {name}: settled in {settled:.1?}; read the final state of {} keys in {:.1?}",
        finals.len(),
        t.elapsed()
    );
    checker::tally(&history, &mut report);
    checker::check_set(&history, &finals, &mut report);
    checker::check_register(&history, &mut report);
    checker::check_delete(&history, &finals, &mut report);
    for n in nodes.iter_mut() {
        n.check();
        report.crashes += n.crashes.len() as u64;
        for c in &n.crashes {
            report
                .anomalies
                .push(format!("crash: {c}\n{}", n.log_tail(20)));
        }
        n.shutdown();
    }
    // The private copy of the binary (hundreds of MB in a debug build) is
    // not needed afterwards; the nodes' data is kept only when the run found
    // anomalies, to inspect. Histories, logs and the report always stay.
    let _ = std::fs::remove_file(bin);
    if report.clean() {
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(report)
}

/// Sleeps `d`, noticing nodes that exit by themselves.
fn watch(nodes: &mut [Node], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for n in nodes.iter_mut().filter(|n| !n.stopped_on_purpose) {
            n.check();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After the last heal: waits for every hint to drain, runs anti-entropy on
/// every node, and waits until every replica pair's Merkle roots agree.
/// Answers how long convergence took (`None`: not within [`SETTLE`]).
fn settle(ns: &str, addrs: &[SocketAddrV4], nodes: &mut [Node]) -> Result<Option<u64>, String> {
    let addrs = addrs.to_vec();
    let started = Instant::now();
    let converged = netns::in_ns(ns, move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let json = |url: &str| -> Option<serde_json::Value> {
            serde_json::from_str(&agent.get(url).call().ok()?.into_string().ok()?).ok()
        };
        let deadline = Instant::now() + SETTLE;
        // Hints drain.
        while Instant::now() < deadline {
            // A node that does not answer counts as holding hints.
            let pending: u64 = addrs
                .iter()
                .map(|a| {
                    json(&format!("http://{a}/v1/cluster"))
                        .map_or(1, |s| s["hints"]["pending"].as_u64().unwrap_or(1))
                })
                .sum();
            if pending == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // Anti-entropy until every pair agrees.
        while Instant::now() < deadline {
            for a in &addrs {
                let _ = agent
                    .post(&format!("http://{a}/v1/admin/repair?wait_ms=60000"))
                    .call();
            }
            let roots: Vec<HashMap<String, String>> = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    json(&format!("http://{a}/v1/admin/merkle"))
                        .and_then(|v| serde_json::from_value(v["roots"].clone()).ok())
                        .unwrap_or_else(|| {
                            let mut m = HashMap::new();
                            m.insert(format!("n{}", i + 1), "unreachable".into());
                            m
                        })
                })
                .collect();
            let agree = (0..addrs.len()).all(|i| {
                (0..addrs.len()).filter(|j| *j != i).all(|j| {
                    let mine = roots[i].get(&format!("n{}", j + 1));
                    let theirs = roots[j].get(&format!("n{}", i + 1));
                    mine.is_some() && mine == theirs
                })
            });
            // And every node's live trees match its data.
            let verified = agree
                && addrs.iter().all(|a| {
                    json(&format!("http://{a}/v1/admin/merkle?verify=true")).is_some_and(|v| {
                        v["mismatched_partitions"]
                            .as_array()
                            .is_some_and(|m| m.is_empty())
                    })
                });
            if verified {
                return Some(started.elapsed().as_millis() as u64);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    })?;
    for n in nodes.iter_mut() {
        n.check();
    }
    Ok(converged)
}

/// Reads, for every key the checkers need, its value at `all` and each
/// replica's own record.
fn final_state(
    ns: &str,
    addrs: &[SocketAddrV4],
    history: &[Op],
) -> Result<HashMap<String, Final>, String> {
    let mut keys: Vec<String> = history
        .iter()
        .filter(|o| {
            (o.key.starts_with('s') && o.kind == Kind::Put && o.outcome != Outcome::Indeterminate)
                || (o.key.starts_with('d')
                    && o.kind == Kind::Delete
                    && matches!(o.outcome, Outcome::Ok | Outcome::Fail))
        })
        .map(|o| o.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    let ids: Vec<String> = (0..addrs.len()).map(|i| format!("n{}", i + 1)).collect();
    // The nodes' layout: their config sets N = 3 and the default Q.
    let ring = Layout::initial(
        ids.iter().map(|id| Member::new(id.as_str())),
        3,
        DEFAULT_PARTITION_BITS,
    );
    let addrs = Arc::new(addrs.to_vec());
    let ring = Arc::new(ring);
    let keys = Arc::new(keys);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..FINAL_READERS)
        .map(|_| {
            let (addrs, ring, keys, next, ns) = (
                addrs.clone(),
                ring.clone(),
                keys.clone(),
                next.clone(),
                ns.to_string(),
            );
            std::thread::spawn(move || -> Result<Vec<(String, Final)>, String> {
                netns::enter(&ns)?;
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                let mut out = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(k) else {
                        return Ok(out);
                    };
                    out.push((key.clone(), read_final(&agent, &addrs, &ring, k, key)));
                }
            })
        })
        .collect();
    let mut out = HashMap::new();
    for w in workers {
        let part = w
            .join()
            .map_err(|_| "a final-state reader panicked".to_string())??;
        out.extend(part);
    }
    Ok(out)
}

/// Threads reading the final state.
const FINAL_READERS: usize = 8;

/// One key's value at `all` and each replica's own record.
fn read_final(
    agent: &ureq::Agent,
    addrs: &[SocketAddrV4],
    ring: &Layout,
    k: usize,
    key: &str,
) -> Final {
    let via = addrs[k % addrs.len()];
    let mut f = Final::default();
    match agent
        .get(&format!("http://{via}/v1/kv/{key}?consistency=all"))
        .call()
    {
        Ok(r) => {
            let mut body = Vec::new();
            let _ = std::io::Read::read_to_end(&mut r.into_reader(), &mut body);
            f.read = Some(workload::id_of(&body));
            f.read_ok = true;
        }
        Err(ureq::Error::Status(404, r)) => f.read_ok = not_found(r),
        Err(_) => {}
    }
    f.replicas_ok = true;
    for replica in ring.preference_list(key.as_bytes(), 3) {
        let i: usize = replica[1..].parse::<usize>().unwrap_or(1) - 1;
        let url = format!("http://{}/v1/admin/local/{key}?value_prefix=64", addrs[i]);
        // 404 is "holds nothing"; any other failure leaves the key unverified.
        let doc = match agent.get(&url).call() {
            Ok(r) => r.into_string().ok(),
            Err(ureq::Error::Status(404, r)) => {
                f.replicas_ok &= not_found(r);
                None
            }
            Err(_) => {
                f.replicas_ok = false;
                None
            }
        };
        let held = doc
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["tombstone"] == false)
            .and_then(|v| {
                v["value_utf8"]
                    .as_str()
                    .map(|s| workload::id_of(s.as_bytes()))
            });
        f.replicas.push((replica.to_string(), held));
    }
    f
}

/// Whether a 404 is the store's own "not found" (not, say, a router's).
fn not_found(r: ureq::Response) -> bool {
    let text = r.into_string().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["code"] == "not_found")
}
