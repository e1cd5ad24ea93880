//! Repair mode: a node that may have missed tombstone purges serves no reads
//! until an anti-entropy pass with its live peers completed.
//!
//! While it was down, its peers may have deleted keys and — the grace period
//! past — purged the tombstones. Its own old values of those keys would then
//! win quorum reads and be read-repaired back everywhere: deletes would come
//! back. So at start a node enters repair mode (`LocalReplica::repairing`)
//! when
//!
//! * repair mode was still on when it stopped (the `repair_pending` flag in
//!   its store), or
//! * it was down longer than `repair.tombstone_grace_ms`, by the last time
//!   it recorded being alive, or
//! * its wall clock reads before that record (it stepped back, or ran ahead
//!   then): how long it was down is unknown.
//!
//! Entering persists the flag before the node serves anything; only the
//! repair actor's completing pass ends repair mode ([`leave`]), and it
//! clears the flag durably *before* reads are served. So a restart during
//! repair mode — anti-entropy slow, or impossible with a peer down — stays
//! in repair mode: the liveness record it kept writing in the meantime is
//! fresh, but says nothing about what it missed. The flag needs no clock,
//! so a clock that moves cannot end repair mode either.

use crate::replica::LocalReplica;
use crate::storage::{Mutation, Store, StoreError};
use std::sync::atomic::Ordering;

/// Why a node starts in repair mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Repair mode was on when it stopped.
    Pending,
    /// The wall clock reads this many ms before the last liveness record.
    ClockBehind { by_ms: u64 },
    /// It was down this many ms, longer than the grace period.
    DownLong { for_ms: u64 },
}

/// Whether a node starts in repair mode, and why. Pure.
pub fn decide(
    pending: bool,
    last_alive_ms: Option<u64>,
    now_ms: u64,
    grace_ms: u64,
) -> Option<Why> {
    if pending {
        return Some(Why::Pending);
    }
    match last_alive_ms {
        Some(t) if now_ms < t => Some(Why::ClockBehind { by_ms: t - now_ms }),
        Some(t) if now_ms - t > grace_ms => Some(Why::DownLong { for_ms: now_ms - t }),
        _ => None,
    }
}

/// Decides at start whether this node serves reads, and persists repair
/// mode when it does not; answers whether it is in repair mode. Runs before
/// the writer starts (it commits on its own).
pub fn enter_at_start(store: &Store, now_ms: u64, grace_ms: u64) -> Result<bool, StoreError> {
    let pending = store.repair_pending()?;
    let Some(why) = decide(pending, store.last_alive_ms()?, now_ms, grace_ms) else {
        return Ok(false);
    };
    match why {
        Why::Pending => log::warn!(
            "this node was in repair mode when it stopped (no anti-entropy pass had completed): \
             it serves no reads until anti-entropy completes"
        ),
        Why::ClockBehind { by_ms } => log::warn!(
            "the wall clock reads {by_ms} ms before this node last recorded being alive: it \
             cannot tell how long it was down, so it serves no reads until anti-entropy \
             completes"
        ),
        Why::DownLong { for_ms } => log::warn!(
            "this node was down {for_ms} ms, longer than the tombstone grace period \
             ({grace_ms} ms): it serves no reads until anti-entropy completes"
        ),
    }
    if !pending {
        store.apply(&[Mutation::RepairPending(true)])?;
    }
    Ok(true)
}

/// Ends repair mode after a completing pass: clears the persisted flag,
/// then serves reads. Answers whether this call ended it (`false`: it was
/// not on). On an error repair mode stays on, and the next completing pass
/// tries again.
pub async fn leave(local: &LocalReplica) -> Result<bool, StoreError> {
    if !local.repairing.load(Ordering::Relaxed) {
        return Ok(false);
    }
    local.apply(Mutation::RepairPending(false)).await?;
    Ok(local.repairing.swap(false, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 10_000;

    #[test]
    fn a_node_enters_repair_mode_when_it_may_have_missed_a_purge() {
        // First start, and a short outage: serving.
        assert_eq!(decide(false, None, 1_000_000, GRACE), None);
        assert_eq!(decide(false, Some(995_000), 1_000_000, GRACE), None);
        assert_eq!(
            decide(false, Some(980_000), 1_000_000, GRACE),
            Some(Why::DownLong { for_ms: 20_000 })
        );
        assert_eq!(
            decide(false, Some(1_000_500), 1_000_000, GRACE),
            Some(Why::ClockBehind { by_ms: 500 })
        );
        // Pending wins over a fresh (or missing) liveness record.
        assert_eq!(
            decide(true, Some(999_999), 1_000_000, GRACE),
            Some(Why::Pending)
        );
        assert_eq!(decide(true, None, 1_000_000, GRACE), Some(Why::Pending));
    }

    /// Sweep H1: repair mode was decided from the liveness record alone,
    /// which the node rewrites every second in repair mode too: a restart
    /// during repair mode served reads at once. Now entering repair mode
    /// persists it, and only `leave` (a completing pass) clears it.
    #[actix::test]
    async fn a_restart_during_repair_mode_stays_in_repair_mode() {
        let dir = tempfile::tempdir().unwrap();
        let now = 50_000_000;
        {
            let store = Store::open(dir.path(), "n1", true).unwrap();
            let alive = |ms| Mutation::Meta {
                alive_ms: Some(ms),
                clock_ceiling_ms: None,
            };
            store.apply(&[alive(now - 3 * GRACE)]).unwrap();
            assert!(enter_at_start(&store, now, GRACE).unwrap());
            // It lives a while in repair mode, recording liveness.
            store.apply(&[alive(now + 5_000)]).unwrap();
        }
        let store = Store::open(dir.path(), "n1", true).unwrap();
        assert!(
            enter_at_start(&store, now + 6_000, GRACE).unwrap(),
            "a restart 1 s after the last liveness record ended repair mode"
        );
        let core = crate::coordinator::testing::node_core(store.clone(), &["n1", "n2"], 2);
        core.local.repairing.store(true, Ordering::Relaxed);
        assert!(leave(&core.local).await.unwrap());
        assert!(core.local.serving_reads());
        assert!(!leave(&core.local).await.unwrap(), "left twice");
        assert!(!store.repair_pending().unwrap());
        assert!(!enter_at_start(&store, now + 7_000, GRACE).unwrap());
    }
}
