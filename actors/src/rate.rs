//! Token buckets per key: how often each peer may make this node do
//! something expensive on request (the anti-entropy responder's Merkle-tree
//! builds). Pure: time (monotonic ms) is passed in.
//!
//! A bucket holds at most `burst` tokens and gains one every `refill_ms`;
//! each action takes one token or is refused. A bucket starts full, so a
//! key's first `burst` actions pass at once and then one every `refill_ms`.
//! Credit is kept in milliseconds (a token is `refill_ms` of credit), so the
//! arithmetic is exact integers, and a clock read that goes backwards adds
//! nothing.
//!
//! Keys come from the network (peer ids), so the table is bounded: at most
//! `max_keys` buckets. A full bucket is the same as none, so those are
//! forgotten first when room is needed; when every bucket is still
//! refilling, a new key is refused until one is full again (with members as
//! keys and `max_keys` at least the member count, that never happens).

use std::collections::HashMap;

/// How many actions a key may take in a burst, and how fast it earns more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    /// Milliseconds per token earned.
    pub refill_ms: u64,
}

impl Rate {
    fn capacity_ms(&self) -> u64 {
        u64::from(self.burst.max(1)).saturating_mul(self.refill_ms.max(1))
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Credit in ms: `refill_ms` per token.
    credit_ms: u64,
    last_ms: u64,
}

impl Bucket {
    /// Adds the credit earned since the last update, up to the capacity.
    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let earned = now_ms.saturating_sub(self.last_ms);
        self.credit_ms = self
            .credit_ms
            .saturating_add(earned)
            .min(rate.capacity_ms());
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.credit_ms >= rate.capacity_ms()
    }
}

/// One token bucket per key, at most `max_keys` of them.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes a token of `key` at `now_ms`; `false`: refused, nothing taken.
    pub fn try_take(&mut self, key: &str, now_ms: u64) -> bool {
        let rate = self.rate;
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.max_keys {
                self.buckets.retain(|_, b| {
                    b.refill(rate, now_ms);
                    !b.is_full(rate)
                });
            }
            if self.buckets.len() >= self.max_keys {
                return false;
            }
            self.buckets.insert(
                key.to_string(),
                Bucket {
                    credit_ms: rate.capacity_ms(),
                    last_ms: now_ms,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(key) else {
            return false;
        };
        b.refill(rate, now_ms);
        let token = rate.refill_ms.max(1);
        if b.credit_ms < token {
            return false;
        }
        b.credit_ms -= token;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        refill_ms: 1_000,
    };

    /// Each step: (key, time, whether its action passes).
    fn run(limiter: &mut RateLimiter, steps: &[(&str, u64, bool)]) {
        for (i, &(key, now, want)) in steps.iter().enumerate() {
            assert_eq!(
                limiter.try_take(key, now),
                want,
                "step {i}: {key} at {now} ms"
            );
        }
    }

    #[test]
    fn a_burst_passes_then_one_per_refill() {
        let mut l = RateLimiter::new(RATE, 8);
        run(
            &mut l,
            &[
                // A fresh key has its whole burst.
                ("a", 0, true),
                ("a", 0, true),
                ("a", 0, true),
                ("a", 0, false),
                ("a", 999, false),
                // One token a second after that.
                ("a", 1_000, true),
                ("a", 1_000, false),
                ("a", 1_500, false),
                ("a", 2_000, true),
                // Idle for long: the burst again, never more.
                ("a", 60_000, true),
                ("a", 60_000, true),
                ("a", 60_000, true),
                ("a", 60_000, false),
                // Refused attempts take nothing: half a token stays earned.
                ("a", 60_500, false),
                ("a", 61_000, true),
            ],
        );
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let mut l = RateLimiter::new(RATE, 8);
        run(
            &mut l,
            &[
                ("a", 0, true),
                ("a", 0, true),
                ("a", 0, true),
                ("a", 0, false),
                // b is untouched by a's flood.
                ("b", 0, true),
                ("b", 0, true),
                ("a", 10, false),
                ("b", 10, true),
                ("b", 10, false),
            ],
        );
    }

    #[test]
    fn a_clock_read_going_back_earns_nothing() {
        let mut l = RateLimiter::new(RATE, 8);
        run(
            &mut l,
            &[
                ("a", 5_000, true),
                ("a", 5_000, true),
                ("a", 5_000, true),
                ("a", 1_000, false),
                ("a", 5_999, false),
                ("a", 6_000, true),
            ],
        );
    }

    #[test]
    fn the_table_is_bounded_and_forgets_full_buckets_first() {
        let mut l = RateLimiter::new(RATE, 2);
        run(
            &mut l,
            &[
                ("a", 0, true),
                ("b", 0, true),
                // Both still refilling: no room for c.
                ("c", 0, false),
                ("c", 999, false),
                // a and b are full again by 1 s: forgotten, c gets a bucket.
                ("c", 1_000, true),
            ],
        );
        assert!(l.len() <= 2);
        // A flood of keys never grows it.
        for i in 0..1_000 {
            l.try_take(&format!("k{i}"), 1_000);
        }
        assert!(l.len() <= 2, "{}", l.len());
    }
}
