//! Brute-force throttling per client address: after `free_failures`
//! (`security.auth_failures_per_minute`, default [`FREE_FAILURES`]) failed
//! token checks within [`WINDOW_MS`], an address is refused (429 with
//! `Retry-After`) for a time that doubles with every further failure, up to
//! [`MAX_BLOCK_MS`]. IPv6 addresses count per /64, the block one host
//! usually holds. The table is bounded ([`MAX_ADDRESSES`]): when full, stale
//! entries go first, then the one whose window is oldest. Pure: the caller
//! passes the (monotonic) time.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures an address may have within a window before it is blocked, by
/// default.
pub const FREE_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW_MS: u64 = 60_000;
/// The first block; each further failure doubles it.
pub const FIRST_BLOCK_MS: u64 = 1_000;
pub const MAX_BLOCK_MS: u64 = 300_000;
/// Addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    window_start_ms: u64,
    blocked_until_ms: u64,
}

#[derive(Debug)]
pub struct Throttle {
    entries: HashMap<IpAddr, Entry>,
    free_failures: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(FREE_FAILURES)
    }
}

/// The address failures are counted under.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Throttle {
    /// A throttle that blocks an address at its `free_failures`-th failure
    /// within a window (at least 1).
    pub fn new(free_failures: u32) -> Throttle {
        Throttle {
            entries: HashMap::new(),
            free_failures: free_failures.max(1),
        }
    }

    /// `Err(ms)`: the address is blocked for `ms` more.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(&bucket(ip)) {
            Some(e) if e.blocked_until_ms > now_ms => Err(e.blocked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) {
        let key = bucket(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ADDRESSES {
            self.make_room(now_ms);
        }
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            window_start_ms: now_ms,
            blocked_until_ms: 0,
        });
        if now_ms.saturating_sub(e.window_start_ms) > WINDOW_MS && e.blocked_until_ms <= now_ms {
            e.failures = 0;
            e.window_start_ms = now_ms;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.free_failures {
            let doublings = (e.failures - self.free_failures).min(20);
            let block = (FIRST_BLOCK_MS << doublings).min(MAX_BLOCK_MS);
            e.blocked_until_ms = now_ms + block;
            // The window restarts when the block ends.
            e.window_start_ms = now_ms + block;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| {
            e.blocked_until_ms > now_ms || now_ms.saturating_sub(e.window_start_ms) <= WINDOW_MS
        });
        if self.entries.len() >= MAX_ADDRESSES {
            // An eighth at once, unblocked addresses with the oldest windows
            // first, then the blocks that end soonest: a flood of new
            // addresses costs one selection per MAX_ADDRESSES / 8 of them.
            let mut by_age: Vec<((bool, u64), IpAddr)> = self
                .entries
                .iter()
                .map(|(k, e)| {
                    let blocked = e.blocked_until_ms > now_ms;
                    let t = if blocked {
                        e.blocked_until_ms
                    } else {
                        e.window_start_ms
                    };
                    ((blocked, t), *k)
                })
                .collect();
            let n = (MAX_ADDRESSES / 8).min(by_age.len() - 1);
            by_age.select_nth_unstable(n);
            for (_, k) in &by_age[..n] {
                self.entries.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_blocked_after_its_free_failures_and_longer_each_time() {
        let mut t = Throttle::default();
        let a = ip("10.0.0.1");
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(a, 0);
        }
        assert!(t.check(a, 0).is_ok());
        t.failed(a, 0);
        assert_eq!(t.check(a, 0), Err(FIRST_BLOCK_MS));
        assert!(t.check(ip("10.0.0.2"), 0).is_ok(), "others are not blocked");
        assert!(t.check(a, FIRST_BLOCK_MS).is_ok());
        t.failed(a, FIRST_BLOCK_MS);
        assert_eq!(t.check(a, FIRST_BLOCK_MS), Err(2 * FIRST_BLOCK_MS));
        for i in 0..40 {
            t.failed(a, 10_000 + i);
        }
        assert_eq!(t.check(a, 10_039), Err(MAX_BLOCK_MS));
    }

    #[test]
    fn failures_spread_over_windows_never_block() {
        let mut t = Throttle::default();
        let a = ip("10.0.0.1");
        for i in 0..100u64 {
            t.failed(a, i * (WINDOW_MS / 5));
            assert!(t.check(a, i * (WINDOW_MS / 5)).is_ok(), "failure {i}");
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_the_table_is_bounded() {
        let mut t = Throttle::default();
        for i in 0..FREE_FAILURES + 10 {
            t.failed(ip(&format!("2001:db8::{i:x}")), 0);
        }
        assert!(t.check(ip("2001:db8::ffff"), 0).is_err());
        assert!(t.check(ip("2001:db8:0:1::1"), 0).is_ok());
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            t.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)), 1 + u64::from(i));
        }
        assert!(t.len() <= MAX_ADDRESSES);
        assert!(
            t.check(ip("2001:db8::1"), 10_000).is_err(),
            "a flood of addresses does not lift a block"
        );
    }
}
