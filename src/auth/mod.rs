//! Client authentication: bearer tokens with roles and key prefixes
//! ([`token`]), the tokens file ([`store`]), and per-address throttling of
//! failed attempts ([`throttle`]). The HTTP layer applies them
//! (`http/auth.rs`); [`Auth`] is what it holds.

pub mod store;
pub mod throttle;
pub mod token;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use store::TokensFile;
use throttle::Throttle;
use token::TokenSet;

/// A node's client authentication state: the tokens in force (swapped as a
/// whole on reload) and the throttle.
pub struct Auth {
    pub file: PathBuf,
    tokens: RwLock<Arc<TokenSet>>,
    pub throttle: Mutex<Throttle>,
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
            throttle: Mutex::new(Throttle::new(failures_per_minute)),
            epoch: std::time::Instant::now(),
        })
    }

    /// Reads the file again; keeps the tokens in force if it is unusable.
    /// Answers how many tokens are in force now.
    pub fn reload(&self) -> Result<usize, String> {
        let set = TokensFile::load(&self.file)?.set()?;
        let n = set.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(n)
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
