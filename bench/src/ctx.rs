//! What every client task of every phase shares.

use crate::cli::Settings;
use crate::keys::{KeyChooser, KeySpace};
use crate::ledger::Ledger;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters for the once-a-second progress line.
#[derive(Default)]
pub struct Live {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
    }
}

pub struct Ctx {
    pub settings: Settings,
    pub keyspace: KeySpace,
    pub chooser: KeyChooser,
    pub ledger: Ledger,
    /// Names this invocation in every value it writes.
    pub run_id: u32,
    /// The seed of the run phase's choices.
    pub seed: u64,
    /// Set on Ctrl-C: phases wind down and report what they measured.
    pub stop: AtomicBool,
    pub live: Live,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
