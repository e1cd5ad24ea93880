//! Client authentication: bearer tokens with roles and key prefixes
//! ([`token`]), the tokens file ([`store`]), throttling of failed attempts
//! ([`throttle`]) and rate limits for the log lines refusals cause
//! ([`log_limit`]). The HTTP layer applies them (`http/auth.rs`); [`Auth`]
//! is what it holds.
//!
//! Fail closed: while the tokens file has changed since the tokens in force
//! were read and cannot be loaded, the node cannot know what it says (a
//! revocation, say), so [`Auth::is_available`] is false and every token is
//! refused (503 `tokens_unavailable`) until the file loads again
//! (`secure.rs` retries every second).

pub mod log_limit;
pub mod store;
pub mod throttle;
pub mod token;

use log_limit::LogLimiter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use store::TokensFile;
use throttle::Throttle;
use token::TokenSet;

/// Refusal log lines logged per kind and window.
pub const REFUSAL_LINES: u32 = 20;
/// The window of [`REFUSAL_LINES`].
pub const REFUSAL_WINDOW_MS: u64 = 10_000;

/// The limits of the refusal log lines, one per kind (a read token asking
/// for writes does not hide guessed tokens).
#[derive(Debug)]
pub struct RefusalLogs {
    /// 401 and 429 lines.
    pub unauthorized: LogLimiter,
    /// 403 lines.
    pub forbidden: LogLimiter,
}

/// A node's client authentication state: the tokens in force (swapped as a
/// whole on reload), whether they may be used, the throttle and the log
/// limits.
pub struct Auth {
    pub file: PathBuf,
    tokens: RwLock<Arc<TokenSet>>,
    /// False while a changed tokens file cannot be loaded.
    available: AtomicBool,
    pub throttle: Mutex<Throttle>,
    pub refusal_logs: Mutex<RefusalLogs>,
    /// Monotonic time base of the throttle.
    epoch: std::time::Instant,
}

impl Auth {
    /// Loads the tokens file; a node does not start without a readable one.
    pub fn load(file: PathBuf, failures_per_minute: u32) -> Result<Auth, String> {
        let set = TokensFile::load(&file)?.set()?;
        Ok(Auth {
            file,
            tokens: RwLock::new(Arc::new(set)),
            available: AtomicBool::new(true),
            throttle: Mutex::new(Throttle::new(failures_per_minute)),
            refusal_logs: Mutex::new(RefusalLogs {
                unauthorized: LogLimiter::new(REFUSAL_LINES, REFUSAL_WINDOW_MS),
                forbidden: LogLimiter::new(REFUSAL_LINES, REFUSAL_WINDOW_MS),
            }),
            epoch: std::time::Instant::now(),
        })
    }

    /// Reads the file again; keeps the tokens in force if it is unusable.
    /// Answers how many tokens are in force now. A file that loads makes
    /// the tokens available again.
    pub fn reload(&self) -> Result<usize, String> {
        let set = TokensFile::load(&self.file)?.set()?;
        let n = set.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.available.store(true, Ordering::Release);
        Ok(n)
    }

    /// Whether the tokens in force may be used (false while a changed file
    /// cannot be loaded: every token is refused).
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    /// Refuses every token until the file loads again.
    pub fn refuse_all(&self) {
        self.available.store(false, Ordering::Release);
    }

    pub fn tokens(&self) -> Arc<TokenSet> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Milliseconds on the throttle's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
