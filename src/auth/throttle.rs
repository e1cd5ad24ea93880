//! Brute-force throttling of failed token checks, at three levels:
//!
//! * per client address: after `free_failures`
//!   (`security.auth_failures_per_minute`, default [`FREE_FAILURES`]) failed
//!   checks within [`WINDOW_MS`], the address is refused (429 with
//!   `Retry-After`) for a time that doubles with every further failure, up
//!   to [`MAX_BLOCK_MS`]. IPv6 addresses count per /64, the block one host
//!   usually holds;
//! * per IPv6 /48, which holds 65,536 /64s: its /64s together may fail
//!   [`PREFIX48_MULTIPLE`] times an address's allowance, then the /48 is
//!   blocked the same way (a site rotating /64s gains a constant factor, not
//!   65,536);
//! * per node: beyond [`NODE_FAILURES_PER_SEC`] failed checks in a second,
//!   every further failure that second is refused at once, whatever its
//!   address (a guesser spread over many IPv4 addresses).
//!
//! Only failures are refused: the caller checks a valid token first, so a
//! block never locks out a client with a valid token. Each table is bounded
//! ([`MAX_ADDRESSES`]): when full, stale entries go first, then the ones
//! whose windows are oldest. Pure: the caller passes the (monotonic) time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Failures an address may have within a window before it is blocked, by
/// default.
pub const FREE_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW_MS: u64 = 60_000;
/// The first block; each further failure doubles it.
pub const FIRST_BLOCK_MS: u64 = 1_000;
pub const MAX_BLOCK_MS: u64 = 300_000;
/// Addresses (and, separately, /48 prefixes) tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;
/// A /48's /64s together may fail this many times an address's allowance.
pub const PREFIX48_MULTIPLE: u32 = 16;
/// Failed checks per second a node answers 401 before it refuses every
/// further failure of that second (429).
pub const NODE_FAILURES_PER_SEC: u32 = 100;

/// What a block is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The address (IPv6: its /64).
    Address,
    /// The address's IPv6 /48.
    Prefix48,
    /// The whole node.
    Node,
}

/// A refusal: for how long more, and on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub ms: u64,
    pub scope: Scope,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    window_start_ms: u64,
    blocked_until_ms: u64,
}

/// One bounded table of failure counts.
#[derive(Debug)]
struct Buckets {
    entries: HashMap<IpAddr, Entry>,
    free_failures: u32,
}

/// The address failures are counted under.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The IPv6 /48 of `ip` (none for IPv4).
fn prefix48(ip: IpAddr) -> Option<IpAddr> {
    match bucket(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)))
        }
    }
}

impl Buckets {
    fn new(free_failures: u32) -> Buckets {
        Buckets {
            entries: HashMap::new(),
            free_failures: free_failures.max(1),
        }
    }

    fn check(&self, key: IpAddr, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(&key) {
            Some(e) if e.blocked_until_ms > now_ms => Err(e.blocked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    fn failed(&mut self, key: IpAddr, now_ms: u64) {
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

/// Failures of the node in the current second.
#[derive(Debug, Default)]
struct NodeRate {
    second: u64,
    failures: u32,
}

#[derive(Debug)]
pub struct Throttle {
    addresses: Buckets,
    prefixes: Buckets,
    node: NodeRate,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(FREE_FAILURES)
    }
}

impl Throttle {
    /// A throttle that blocks an address at its `free_failures`-th failure
    /// within a window (at least 1).
    pub fn new(free_failures: u32) -> Throttle {
        let free = free_failures.max(1);
        Throttle {
            addresses: Buckets::new(free),
            prefixes: Buckets::new(free.saturating_mul(PREFIX48_MULTIPLE)),
            node: NodeRate::default(),
        }
    }

    /// `Err`: a failure from `ip` is refused now, for how long and why.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), Blocked> {
        let blocked = |scope| move |ms| Blocked { ms, scope };
        self.addresses
            .check(bucket(ip), now_ms)
            .map_err(blocked(Scope::Address))?;
        if let Some(p) = prefix48(ip) {
            self.prefixes
                .check(p, now_ms)
                .map_err(blocked(Scope::Prefix48))?;
        }
        if self.node.second == now_ms / 1000 && self.node.failures >= NODE_FAILURES_PER_SEC {
            return Err(Blocked {
                ms: 1000 - now_ms % 1000,
                scope: Scope::Node,
            });
        }
        Ok(())
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) {
        self.addresses.failed(bucket(ip), now_ms);
        if let Some(p) = prefix48(ip) {
            self.prefixes.failed(p, now_ms);
        }
        let second = now_ms / 1000;
        if self.node.second != second {
            self.node = NodeRate {
                second,
                failures: 0,
            };
        }
        self.node.failures = self.node.failures.saturating_add(1);
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.addresses.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.entries.is_empty()
    }

    /// IPv6 /48 prefixes tracked.
    pub fn prefixes(&self) -> usize {
        self.prefixes.entries.len()
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
        assert_eq!(t.check(a, 0).map_err(|b| b.ms), Err(FIRST_BLOCK_MS));
        assert!(t.check(ip("10.0.0.2"), 0).is_ok(), "others are not blocked");
        assert!(t.check(a, FIRST_BLOCK_MS).is_ok());
        t.failed(a, FIRST_BLOCK_MS);
        assert_eq!(
            t.check(a, FIRST_BLOCK_MS).map_err(|b| b.ms),
            Err(2 * FIRST_BLOCK_MS)
        );
        for i in 0..40 {
            t.failed(a, 10_000 + i);
        }
        assert_eq!(t.check(a, 10_039).map_err(|b| b.ms), Err(MAX_BLOCK_MS));
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

    #[test]
    fn a_48_is_blocked_when_its_64s_together_fail_too_often() {
        let mut t = Throttle::default();
        let allowance = FREE_FAILURES * PREFIX48_MULTIPLE;
        // Each failure from another /64 of 2001:db8:7::/48, spread over time
        // so the node-wide rate is not what blocks.
        let from = |i: u32| ip(&format!("2001:db8:7:{i:x}::1"));
        for i in 0..allowance - 1 {
            t.failed(from(i), u64::from(i) * 20);
            assert!(
                t.check(from(i + 1), u64::from(i) * 20).is_ok(),
                "failure {i}"
            );
        }
        let now = u64::from(allowance) * 20;
        t.failed(from(allowance), now);
        let b = t.check(from(60_000), now).unwrap_err();
        assert_eq!(b.scope, Scope::Prefix48);
        assert!(t.check(ip("2001:db8:8::1"), now).is_ok(), "another /48");
        assert!(t.check(ip("10.0.0.1"), now).is_ok(), "IPv4 has no /48");
        assert_eq!(t.prefixes(), 1);
        // The prefix table is bounded like the address table.
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            let p = ip(&format!("2001:{:x}:{:x}::1", i >> 16, i & 0xffff));
            t.failed(p, 100_000 + u64::from(i) * 20);
        }
        assert!(t.prefixes() <= MAX_ADDRESSES);
    }

    #[test]
    fn beyond_the_node_rate_every_failure_is_refused_that_second() {
        let mut t = Throttle::default();
        let v4 = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..NODE_FAILURES_PER_SEC {
            assert!(t.check(v4(i), 5_000).is_ok(), "failure {i}");
            t.failed(v4(i), 5_000);
        }
        // A fresh address, never failed before, is refused too.
        let b = t.check(v4(99_999), 5_250).unwrap_err();
        assert_eq!((b.scope, b.ms), (Scope::Node, 750));
        // The next second starts afresh.
        assert!(t.check(v4(99_999), 6_000).is_ok());
    }
}
