//! The simulated cluster's steppable clock: real time, plus an amount every
//! node's clock was moved forward together (`advance`, time passing: wall and
//! monotonic readings move alike, so no node sees a step), plus this node's
//! own offset (a clock set wrong: a lagging or racing node).
//!
//! Protocol time — versions, the tombstone grace, hint floors and ages, the
//! clock check — reads this clock, so a script makes a minute pass in one
//! step. Deadlines and timers (calls, gossip rounds, the failure detector)
//! run on real time, so waiting for an answer still takes its milliseconds.

use crate::version::{Clock, SystemClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How far the cluster's clocks were moved forward; shared by every node.
#[derive(Clone, Debug, Default)]
pub struct Advance(Arc<AtomicU64>);

impl Advance {
    pub fn by(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One node's clock.
#[derive(Debug)]
pub struct SimClock {
    pub advance: Advance,
    /// This node's clock error (negative: behind).
    pub offset_ms: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let real = SystemClock {
            offset_ms: self.offset_ms,
            faults: None,
        };
        real.now_ms().saturating_add(self.advance.ms())
    }

    fn advanced_ms(&self) -> u64 {
        self.advance.ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{node_tag, Hlc};

    #[test]
    fn time_moved_forward_is_no_step_and_moves_the_monotonic_clock() {
        let advance = Advance::default();
        let clock = Arc::new(SimClock {
            advance: advance.clone(),
            offset_ms: 0,
        });
        let hlc = Hlc::new(node_tag("n1"), clock.clone(), 5_000);
        hlc.vouch();
        let (wall, mono) = (hlc.wall_ms(), hlc.mono_ms());
        advance.by(60_000);
        assert!(hlc.wall_ms() >= wall + 60_000);
        assert!(hlc.mono_ms() >= mono + 60_000);
        assert!(!hlc.stepped(), "time passing is not a step of the clock");
    }
}
