//! The load phase: every key written once, by all clients together.

use crate::conn::{Client, ReconnectPolicy};
use crate::ctx::Ctx;
use crate::ops::{execute, Outcome};
use crate::progress;
use crate::stats::PhaseStats;
use crate::workload::OpKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub async fn run(ctx: Arc<Ctx>, policy: ReconnectPolicy) -> PhaseStats {
    let s = &ctx.settings;
    let next = Arc::new(AtomicU64::new(0));
    let ticker = progress::spawn(ctx.clone(), "load", Some(s.keys));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        let ctx = ctx.clone();
        let next = next.clone();
        let node = s.nodes[i % s.nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(node, policy);
            let mut stats = PhaseStats::default();
            while !ctx.stopped() {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= ctx.settings.keys {
                    break;
                }
                let outcome = execute(
                    &ctx,
                    &mut client,
                    &mut stats,
                    OpKind::Write,
                    key,
                    Instant::now(),
                )
                .await;
                if let Outcome::GaveUp(why) = outcome {
                    eprintln!("ringkv-bench: load client {i} stopped: {why}");
                    stats.clients_gave_up += 1;
                    break;
                }
            }
            stats.reconnects = client.reconnects.into();
            stats
        }));
    }
    PhaseStats::gather("load", tasks, start, ticker).await
}
