//! Golden scripts for the simulated cluster: each line is a command, each
//! following line starting with `> ` is what it must print. Run with
//! `UPDATE_GOLDEN=1` to rewrite the expected lines from what the commands
//! print now (then read the diff).
//!
//! Commands (`key=value` arguments):
//! * `cluster nodes=3 n=3 [sloppy=true] [hints=false] [hint_max_age_ms=…]
//!   [grace_ms=…] [request_timeout_ms=…]`
//! * `stabilize`: waits until every failure detector agrees with the
//!   network and every node vouches for its clock, then prints who sees
//!   whom down.
//! * `put <key>=<value> via=<node> [consistency=one|quorum|all]`,
//!   `delete <key> via=… [consistency=…]`: prints `ok` (with `hinted=N`
//!   when hint holders acknowledged) or the error and its outcome.
//! * `get <key> via=… [consistency=…]`: the value, `not found`, or the error.
//! * `local <key>`: each node's own record of the key; `replicas <key>`: its
//!   sloppy-quorum walk (its N replicas first).
//! * `partition n1 n2 | n3`: cuts the network into groups; `heal`.
//! * `hints`: hints pending on each node; `wait_hints`: waits until none is.
//! * `repair <node>`: one anti-entropy pass on that node; what it moved.
//! * `hold n1>n3 [what=write]`: frames n1 → n3 (of that request kind) are
//!   held, neither delivered nor lost; `wait_held n1>n3` waits until one is;
//!   `release n1>n3` delivers them late, except those held longer than the
//!   connection's stall limit (see `net`); prints how many of each.
//! * `advance ms=N`: every node's clock moves forward N ms together (time
//!   passing for versions, grace, floors; see `clock`).
//! * `restart <node> [clock_ms=±N]`: the node crashes and starts again on
//!   its data, its clock N ms off.
//! * `wait_floors`: waits until every node has heard each peer it reaches
//!   gossip its hint floor again (after an `advance`, the floors heard
//!   before it look old and hold GC back).
//! * `gc`: one tombstone GC pass on every node.
//! * `sleep ms=N`.

use super::cluster::{Settings, SimCluster};
use super::net::Hold;
use crate::error::Error;
use crate::quorum::Consistency;
use crate::storage::Precondition;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One command: its words, and `key=value` options.
struct Command {
    words: Vec<String>,
    opts: BTreeMap<String, String>,
}

fn parse(line: &str) -> Command {
    let mut words = Vec::new();
    let mut opts = BTreeMap::new();
    for w in line.split_whitespace() {
        match w.split_once('=') {
            Some((k, v))
                if [
                    "via",
                    "consistency",
                    "nodes",
                    "n",
                    "sloppy",
                    "hints",
                    "ms",
                    "hint_max_age_ms",
                    "grace_ms",
                    "request_timeout_ms",
                    "what",
                    "clock_ms",
                ]
                .contains(&k) =>
            {
                opts.insert(k.to_string(), v.to_string());
            }
            _ => words.push(w.to_string()),
        }
    }
    Command { words, opts }
}

/// What an engine error prints as.
fn error_line(e: &Error) -> String {
    match e {
        Error::Unavailable {
            required,
            received,
            indeterminate,
            ..
        } => format!(
            "error unavailable: {received} of {required} answered, outcome={}",
            if *indeterminate {
                "indeterminate"
            } else {
                "not_applied"
            }
        ),
        Error::PreconditionFailed { .. } => "error precondition_failed".into(),
        Error::Overloaded { .. } => "error overloaded".into(),
        Error::ClockSkew(_) => "error clock_skew".into(),
        other => format!("error {other}"),
    }
}

/// Runs a script's commands against `cluster` (started by its first
/// `cluster` command); answers the lines each printed.
pub async fn run(script: &str) -> Vec<(String, Vec<String>)> {
    let mut cluster: Option<SimCluster> = None;
    let mut out = Vec::new();
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('>') {
            continue;
        }
        let cmd = parse(line);
        let printed = match cmd.words[0].as_str() {
            "cluster" => {
                let mut s = Settings::default();
                let num = |k: &str, d: usize| cmd.opts.get(k).map_or(d, |v| v.parse().expect(k));
                s.nodes = num("nodes", s.nodes);
                s.n = num("n", s.n);
                s.sloppy_quorum = cmd.opts.get("sloppy").is_some_and(|v| v == "true");
                s.hints = cmd.opts.get("hints").is_none_or(|v| v == "true");
                if let Some(age) = cmd.opts.get("hint_max_age_ms") {
                    s.hint_max_age_ms = age.parse().expect("hint_max_age_ms");
                }
                if let Some(g) = cmd.opts.get("grace_ms") {
                    s.tombstone_grace_ms = g.parse().expect("grace_ms");
                }
                if let Some(t) = cmd.opts.get("request_timeout_ms") {
                    s.request_timeout = Duration::from_millis(t.parse().expect("timeout"));
                }
                cluster = Some(SimCluster::start(s).await);
                // Let the actors start.
                tokio::time::sleep(Duration::from_millis(10)).await;
                vec![]
            }
            "restart" => {
                let c = cluster.as_mut().expect("a `cluster` command first");
                let offset = cmd
                    .opts
                    .get("clock_ms")
                    .map_or(0, |v| v.parse().expect("ms"));
                c.restart(&cmd.words[1], offset).await;
                vec![]
            }
            _ => {
                let c = cluster.as_ref().expect("a `cluster` command first");
                step(c, &cmd).await
            }
        };
        out.push((line.to_string(), printed));
    }
    out
}

async fn step(c: &SimCluster, cmd: &Command) -> Vec<String> {
    let via = || c.node(cmd.opts.get("via").map_or("n1", String::as_str));
    let consistency = || {
        cmd.opts
            .get("consistency")
            .map_or(Consistency::Quorum, |v| v.parse().expect("consistency"))
    };
    match cmd.words[0].as_str() {
        "stabilize" => {
            let started = Instant::now();
            while !c.settled() && started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.nodes
                .iter()
                .filter_map(|a| {
                    let down: Vec<&str> = c
                        .nodes
                        .iter()
                        .filter(|b| b.id != a.id && a.core.liveness.is_down(&b.id))
                        .map(|b| b.id.as_str())
                        .collect();
                    (!down.is_empty()).then(|| format!("{} sees down: {}", a.id, down.join(" ")))
                })
                .collect()
        }
        "put" | "delete" => {
            let (key, value) = if cmd.words[0] == "put" {
                let (k, v) = cmd.words[1].split_once('=').expect("put key=value");
                (k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes())))
            } else {
                (cmd.words[1].clone(), None)
            };
            let r = via()
                .core
                .write(Bytes::from(key), value, Precondition::None, consistency())
                .await;
            vec![match r {
                Ok(w) if w.hinted > 0 => format!("ok hinted={}", w.hinted),
                Ok(_) => "ok".into(),
                Err(e) => error_line(&e),
            }]
        }
        "get" => {
            let key = Bytes::from(cmd.words[1].clone());
            vec![match via().core.read(&key, consistency()).await {
                Ok(Some(r)) => match r.value {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None => "not found".into(),
                },
                Ok(None) => "not found".into(),
                Err(e) => error_line(&e),
            }]
        }
        "local" => {
            let key = cmd.words[1].as_bytes();
            let each: Vec<String> = c
                .nodes
                .iter()
                .map(|n| {
                    let held = match n.core.local.store.get(key) {
                        Ok(Some(r)) => match r.value {
                            Some(v) => String::from_utf8_lossy(&v).into_owned(),
                            None => "(deleted)".into(),
                        },
                        Ok(None) => "-".into(),
                        Err(e) => format!("error {e}"),
                    };
                    format!("{}={held}", n.id)
                })
                .collect();
            vec![each.join(" ")]
        }
        "replicas" => {
            let layout = c.nodes[0].core.view().layout.clone();
            vec![layout.walk(cmd.words[1].as_bytes()).join(" ")]
        }
        "partition" => {
            let groups: Vec<BTreeSet<String>> = cmd.words[1..]
                .split(|w| w == "|")
                .map(|g| g.iter().cloned().collect())
                .collect();
            c.partition(groups);
            vec![]
        }
        "heal" => {
            c.heal();
            vec![]
        }
        "hints" => vec![hints_line(c)],
        "wait_hints" => {
            let started = Instant::now();
            while pending(c) > 0 && started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            vec![hints_line(c)]
        }
        "repair" => {
            let node = c.node(&cmd.words[1]);
            let sum = crate::repair::run_pass(&node.repair, &node.partitions, None).await;
            vec![format!(
                "synced={} failed={} pulled={} pushed={}",
                sum.peers_synced.join(","),
                sum.peers_failed
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                sum.keys_pulled,
                sum.keys_pushed
            )]
        }
        "hold" => {
            let (from, to) = link(&cmd.words[1]);
            c.net.hold(Hold {
                from,
                to,
                kind: cmd.opts.get("what").cloned(),
            });
            vec![]
        }
        "wait_held" => {
            let (from, to) = link(&cmd.words[1]);
            let started = Instant::now();
            while c.net.held(&from, &to) == 0 && started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            vec![format!("held={}", c.net.held(&from, &to))]
        }
        "release" => {
            let (from, to) = link(&cmd.words[1]);
            let r = c.net.release(&from, &to);
            vec![format!(
                "delivered={} discarded={}",
                r.delivered, r.discarded
            )]
        }
        "advance" => {
            c.advance
                .by(cmd.opts.get("ms").expect("ms").parse().expect("ms"));
            vec![]
        }
        "wait_floors" => {
            // A floor dated before an `advance` now looks old to GC and holds
            // it back; wait for the next gossip round's instead of sleeping.
            let since: Vec<u64> = c.nodes.iter().map(|n| n.core.hlc.mono_ms()).collect();
            let fresh = || {
                c.nodes.iter().zip(&since).all(|(a, &t)| {
                    c.nodes
                        .iter()
                        .filter(|b| b.id != a.id && c.net.connected(&a.id, &b.id))
                        .all(|b| {
                            a.core
                                .liveness
                                .floor_reported_at(&b.id)
                                .is_some_and(|at| at >= t)
                        })
                })
            };
            let started = Instant::now();
            while !fresh() && started.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if fresh() {
                vec![]
            } else {
                vec!["floors not reported again within 10 s".to_string()]
            }
        }
        "gc" => {
            for n in &c.nodes {
                let gc = crate::repair::gc::TombstoneGc::new(
                    n.core.clone(),
                    c.settings.tombstone_grace_ms,
                    crate::wire::DEFAULT_MAX_FRAME,
                );
                gc.pass().await;
            }
            vec![]
        }
        "sleep" => {
            let ms = cmd.opts.get("ms").map_or(100, |v| v.parse().expect("ms"));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            vec![]
        }
        other => panic!("unknown command {other:?}"),
    }
}

/// `n1>n3` as its two ends.
fn link(words: &str) -> (String, String) {
    let (from, to) = words.split_once('>').expect("a link: from>to");
    (from.to_string(), to.to_string())
}

fn pending(c: &SimCluster) -> u64 {
    c.nodes
        .iter()
        .map(|n| {
            n.core
                .local
                .store
                .hint_tallies()
                .values()
                .map(|t| t.count)
                .sum::<u64>()
        })
        .sum()
}

fn hints_line(c: &SimCluster) -> String {
    c.nodes
        .iter()
        .map(|n| {
            let t: u64 = n
                .core
                .local
                .store
                .hint_tallies()
                .values()
                .map(|t| t.count)
                .sum();
            format!("{}={t}", n.id)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The script with its expected lines replaced by `printed`.
pub fn rewrite(script: &str, printed: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    let mut next = printed.iter();
    for line in script.lines() {
        let t = line.trim();
        if t.starts_with('>') {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (_, lines) = next.next().expect("a result per command");
        for l in lines {
            out.push_str("> ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
