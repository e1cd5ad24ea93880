//! The run phase: every client loops over chosen operations until the
//! duration or the operation budget is used up; closed loop by default, open
//! loop at a fixed schedule with `--rate`.

use crate::conn::{Client, ReconnectPolicy};
use crate::ctx::Ctx;
use crate::ops::{execute, Outcome};
use crate::progress;
use crate::rng::{mix_seed, Rng};
use crate::stats::PhaseStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sleeps until `due`, waking early (returning `false`) on Ctrl-C.
async fn sleep_until(ctx: &Ctx, due: Instant) -> bool {
    loop {
        let now = Instant::now();
        if now >= due {
            return true;
        }
        if ctx.stopped() {
            return false;
        }
        let step = (due - now).min(Duration::from_millis(100));
        tokio::time::sleep(step).await;
    }
}

pub async fn run(ctx: Arc<Ctx>, policy: ReconnectPolicy) -> PhaseStats {
    let s = &ctx.settings;
    let tickets = Arc::new(AtomicU64::new(0));
    // Per client: one operation every `clients / rate` seconds.
    let interval = s
        .rate
        .map(|r| Duration::from_secs_f64(s.clients as f64 / r));
    let ticker = progress::spawn(ctx.clone(), "run", s.ops);
    let start = Instant::now();
    let deadline = start + s.duration;
    let mut tasks = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        let ctx = ctx.clone();
        let tickets = tickets.clone();
        let node = s.nodes[i % s.nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let s = &ctx.settings;
            let mut client = Client::new(node, policy);
            let mut stats = PhaseStats::default();
            let mut rng = Rng::seeded(mix_seed(&[ctx.seed, i as u64]));
            // Stagger the clients' schedules evenly over one interval.
            let mut next_due = interval.map(|iv| start + iv.mul_f64(i as f64 / s.clients as f64));
            loop {
                if ctx.stopped() || Instant::now() >= deadline {
                    break;
                }
                if let Some(limit) = s.ops {
                    if tickets.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                }
                let intended = match (&mut next_due, interval) {
                    (Some(due), Some(iv)) => {
                        let this = *due;
                        *due += iv;
                        if this >= deadline || !sleep_until(&ctx, this).await {
                            break;
                        }
                        // Behind schedule: send at once, but count the wait.
                        this
                    }
                    _ => Instant::now(),
                };
                let op = s.mix.choose(rng.next_f64());
                let key = ctx.chooser.pick(op, &mut rng);
                if let Outcome::GaveUp(why) =
                    execute(&ctx, &mut client, &mut stats, op, key, intended).await
                {
                    eprintln!("ringkv-bench: run client {i} stopped: {why}");
                    stats.clients_gave_up += 1;
                    break;
                }
            }
            stats.reconnects = client.reconnects.into();
            stats
        }));
    }
    PhaseStats::gather("run", tasks, start, ticker).await
}
