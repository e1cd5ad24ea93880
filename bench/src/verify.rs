//! The verify phase: every key with an acknowledged write or delete is read
//! back at `quorum` and checked against the ledger (see [`crate::ledger`]).

use crate::conn::{CallError, Client, ReconnectPolicy};
use crate::ctx::Ctx;
use crate::ledger::Observed;
use crate::progress;
use crate::value::{self, Decoded};
use hyper::Method;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds over the nodes before a key counts as unreadable.
const ATTEMPTS: u32 = 3;
/// Mismatch descriptions kept for the report.
const EXAMPLES: usize = 20;

#[derive(Clone, Debug, Default)]
pub struct VerifyStats {
    pub keys: u64,
    pub ok: u64,
    /// Count per kind ([`Mismatch::kind`]).
    pub mismatches: BTreeMap<&'static str, u64>,
    pub unreadable: u64,
    /// "key: what is wrong" for the first mismatches and unreadable keys.
    pub examples: Vec<String>,
    pub elapsed: Duration,
}

impl VerifyStats {
    pub fn mismatch_count(&self) -> u64 {
        self.mismatches.values().sum()
    }

    pub fn passed(&self) -> bool {
        self.mismatch_count() == 0 && self.unreadable == 0
    }

    fn merge(&mut self, o: VerifyStats) {
        self.keys += o.keys;
        self.ok += o.ok;
        for (k, v) in o.mismatches {
            *self.mismatches.entry(k).or_default() += v;
        }
        self.unreadable += o.unreadable;
        for e in o.examples {
            if self.examples.len() < EXAMPLES {
                self.examples.push(e);
            }
        }
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// Reads one key at quorum: what it holds, or why it could not be read.
/// `clients` holds a connection per node, the client's own node first; a
/// node that cannot be reached moves to the back, so verify checks the data
/// through whichever nodes are up.
async fn read_back(ctx: &Ctx, clients: &mut [Client], key: u64) -> Result<Observed, String> {
    let path = ctx.keyspace.path(key, Some("quorum"));
    let mut errors = Vec::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for _ in 0..clients.len() {
            let client = &mut clients[0];
            let node = client.node_name().to_string();
            match client
                .call(
                    Method::GET,
                    &path,
                    bytes::Bytes::new(),
                    ctx.settings.timeout,
                )
                .await
            {
                Ok(r) if r.status == 200 => {
                    let s = &ctx.settings;
                    return Ok(
                        match value::decode(ctx.run_id, key as u32, s.value_size, &r.body) {
                            Decoded::Ours { seq } => Observed::Value(seq),
                            Decoded::Foreign(why) => Observed::Foreign(why),
                        },
                    );
                }
                Ok(r) if r.status == 404 => return Ok(Observed::Absent),
                Ok(r) => {
                    // The node answers but cannot serve a quorum read now:
                    // try the next attempt through it.
                    errors.push(format!(
                        "{node}: HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    ));
                    break;
                }
                Err(CallError::Timeout) => errors.push(format!("{node}: timeout")),
                Err(CallError::Connection(e) | CallError::GaveUp(e)) => errors.push(e),
            }
            clients.rotate_left(1);
        }
    }
    errors.dedup();
    Err(errors.join("; "))
}

pub async fn run(ctx: Arc<Ctx>, policy: ReconnectPolicy) -> VerifyStats {
    let keys = Arc::new(ctx.ledger.acked_keys());
    let next = Arc::new(AtomicU64::new(0));
    let ticker = progress::spawn(ctx.clone(), "verify", Some(keys.len() as u64));
    let start = Instant::now();
    let s = &ctx.settings;
    let mut tasks = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        let ctx = ctx.clone();
        let keys = keys.clone();
        let next = next.clone();
        let n = s.nodes.len();
        let mut clients: Vec<Client> = (0..n)
            .map(|k| Client::new(s.nodes[(i + k) % n].clone(), policy))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut stats = VerifyStats::default();
            while !ctx.stopped() {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&key) = keys.get(n) else { break };
                stats.keys += 1;
                let name = ctx.keyspace.name(key);
                match read_back(&ctx, &mut clients, key).await {
                    Ok(observed) => match ctx.ledger.with(key, |k| k.check(&observed)) {
                        Ok(()) => stats.ok += 1,
                        Err(m) => {
                            *stats.mismatches.entry(m.kind()).or_default() += 1;
                            stats.example(format!("{name}: {m}"));
                        }
                    },
                    Err(why) => {
                        stats.unreadable += 1;
                        ctx.live.errors.fetch_add(1, Ordering::Relaxed);
                        stats.example(format!("{name}: could not be read: {why}"));
                    }
                }
                ctx.live.done.fetch_add(1, Ordering::Relaxed);
            }
            stats
        }));
    }
    let mut total = VerifyStats::default();
    for t in tasks {
        total.merge(t.await.expect("verify client panicked"));
    }
    // Keys never reached (Ctrl-C) count as unreadable: nothing was checked.
    let unchecked = keys.len() as u64 - total.keys;
    if unchecked > 0 {
        total.unreadable += unchecked;
        total.example(format!("{unchecked} keys were not checked (interrupted)"));
    }
    total.elapsed = start.elapsed();
    ticker.abort();
    total
}

/// A mismatch kind ([`crate::ledger::Mismatch::kind`]) in words.
pub fn describe_kind(kind: &str) -> &'static str {
    match kind {
        "lost_write" => "key reads 404 although a write was acknowledged last",
        "stale_value" => "key reads a value superseded by a later acknowledged write",
        "never_written" => "key reads a sequence number the bench never wrote",
        "foreign_value" => "key reads bytes the bench did not write for it",
        _ => "other",
    }
}
