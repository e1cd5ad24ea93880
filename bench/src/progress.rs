//! The progress line printed (to stderr) every second while a phase runs.

use crate::ctx::Ctx;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Prints `[phase  3s] 12345 ops/s, 37012 done, 0 errors` (with `n/total`
/// when the phase has a known size) until aborted.
pub fn spawn(ctx: Arc<Ctx>, phase: &'static str, total: Option<u64>) -> JoinHandle<()> {
    ctx.live.reset();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_done = 0u64;
        let mut last_at = Instant::now();
        loop {
            tick.tick().await;
            let done = ctx.live.done.load(Ordering::Relaxed);
            let errors = ctx.live.errors.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (done - last_done) as f64 / now.duration_since(last_at).as_secs_f64();
            last_done = done;
            last_at = now;
            let progress = match total {
                Some(t) if t > 0 => {
                    format!("{done}/{t} ({:.0}%)", done as f64 * 100.0 / t as f64)
                }
                _ => format!("{done} done"),
            };
            eprintln!(
                "[{phase:<6} {:>4.0}s] {rate:>9.0} ops/s  {progress}  {errors} errors",
                start.elapsed().as_secs_f64()
            );
        }
    })
}
