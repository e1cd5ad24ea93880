//! Key choice: uniform, zipfian (YCSB's generator, Gray et al. 1994) and
//! "latest" (zipfian over recency), plus key names and their URL paths.

use crate::rng::Rng;
use crate::workload::OpKind;
use clap::ValueEnum;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `--distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DistKind {
    /// Every key equally likely.
    Uniform,
    /// Key 0 is the hottest, key i has weight 1/(i+1)^theta.
    Zipfian,
    /// Writes advance through the key space like inserts; reads and deletes
    /// prefer the most recently written keys (zipfian over recency).
    Latest,
}

impl DistKind {
    pub fn name(self) -> &'static str {
        match self {
            DistKind::Uniform => "uniform",
            DistKind::Zipfian => "zipfian",
            DistKind::Latest => "latest",
        }
    }
}

/// Up to this many terms of zeta(n, theta) are summed exactly; the rest is
/// approximated by an integral (error far below the sampling noise).
const ZETA_EXACT_TERMS: u64 = 1_000_000;

/// zeta(n, theta) = sum over i in 1..=n of 1 / i^theta.
pub fn zeta(n: u64, theta: f64) -> f64 {
    let exact = n.min(ZETA_EXACT_TERMS);
    let mut sum = 0.0;
    for i in 1..=exact {
        sum += 1.0 / (i as f64).powf(theta);
    }
    if n > exact {
        // Midpoint-rule tail: integral of x^-theta from exact+0.5 to n+0.5.
        let a = exact as f64 + 0.5;
        let b = n as f64 + 0.5;
        sum += (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
    }
    sum
}

/// Zipfian over `[0, items)`: item 0 is the most popular. `theta` in `[0, 1)`.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    /// 1 + 0.5^theta: the cumulative weight of the first two items.
    two_head: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Result<Zipfian, String> {
        if items == 0 {
            return Err("a zipfian distribution needs at least one item".into());
        }
        if !(0.0..1.0).contains(&theta) {
            return Err(format!(
                "--zipf-theta must be at least 0 and below 1, not {theta}"
            ));
        }
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Ok(Zipfian {
            items,
            alpha,
            zetan,
            eta,
            two_head: 1.0 + 0.5f64.powf(theta),
        })
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// Probability of item 0 (the hottest).
    #[cfg(test)]
    pub fn head_probability(&self) -> f64 {
        1.0 / self.zetan
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.two_head || self.items <= 2 {
            return 1.min(self.items - 1);
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }
}

/// Picks key indices in `[0, keys)` for each operation.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform {
        keys: u64,
    },
    Zipfian(Zipfian),
    /// `cursor` is the index of the most recently written key (shared by all
    /// clients, so "recent" is global).
    Latest {
        zipf: Zipfian,
        cursor: Arc<AtomicU64>,
    },
}

impl KeyChooser {
    pub fn new(kind: DistKind, keys: u64, theta: f64) -> Result<KeyChooser, String> {
        Ok(match kind {
            DistKind::Uniform => KeyChooser::Uniform { keys },
            DistKind::Zipfian => KeyChooser::Zipfian(Zipfian::new(keys, theta)?),
            DistKind::Latest => KeyChooser::Latest {
                zipf: Zipfian::new(keys, theta)?,
                // The load phase writes keys in index order, so the last one
                // written is keys - 1.
                cursor: Arc::new(AtomicU64::new(keys - 1)),
            },
        })
    }

    pub fn pick(&self, op: OpKind, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.below(*keys),
            KeyChooser::Zipfian(z) => z.sample(rng),
            KeyChooser::Latest { zipf, cursor } => {
                let n = zipf.items();
                if op == OpKind::Write {
                    (cursor.fetch_add(1, Ordering::Relaxed).wrapping_add(1)) % n
                } else {
                    let latest = cursor.load(Ordering::Relaxed) % n;
                    (latest + n - zipf.sample(rng)) % n
                }
            }
        }
    }
}

/// Characters left as they are in a key's path segment (RFC 3986 unreserved).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Builds the names and request paths of the bench's keys: `{prefix}-{index}`.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
    encoded_prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> KeySpace {
        KeySpace {
            prefix: prefix.to_string(),
            encoded_prefix: utf8_percent_encode(prefix, PATH_SEGMENT).to_string(),
        }
    }

    pub fn name(&self, index: u64) -> String {
        format!("{}-{index}", self.prefix)
    }

    /// `/v1/kv/{percent-encoded key}` plus `?consistency=…` when given.
    pub fn path(&self, index: u64, consistency: Option<&str>) -> String {
        match consistency {
            Some(level) => format!("/v1/kv/{}-{index}?consistency={level}", self.encoded_prefix),
            None => format!("/v1/kv/{}-{index}", self.encoded_prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeta_matches_direct_sum_and_tail_is_close() {
        let direct: f64 = (1..=1000u64).map(|i| 1.0 / (i as f64).powf(0.99)).sum();
        assert!((zeta(1000, 0.99) - direct).abs() < 1e-9);
        // The integral tail: compare against an exact sum just past the cutoff.
        let n = ZETA_EXACT_TERMS + 200_000;
        let exact: f64 = (1..=n).map(|i| 1.0 / (i as f64).powf(0.8)).sum();
        assert!((zeta(n, 0.8) - exact).abs() / exact < 1e-9);
    }

    #[test]
    fn zipfian_stays_in_bounds() {
        for items in [1u64, 2, 3, 10, 1000, 100_000] {
            for theta in [0.0, 0.5, 0.99] {
                let z = Zipfian::new(items, theta).unwrap();
                let mut rng = Rng::seeded(items ^ (theta * 100.0) as u64);
                for _ in 0..20_000 {
                    assert!(z.sample(&mut rng) < items, "items {items} theta {theta}");
                }
            }
        }
    }

    #[test]
    fn zipfian_is_skewed_like_the_formula() {
        let items = 10_000;
        let z = Zipfian::new(items, 0.99).unwrap();
        let mut rng = Rng::seeded(3);
        let n = 400_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..n {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        // Item 0 gets 1/zeta(n) of the draws (about 10% for 10k items).
        let head = counts[0] as f64 / n as f64;
        assert!((head - z.head_probability()).abs() < 0.01, "head {head}");
        // Popularity falls with rank: item 0 > item 1 > item 10 > item 1000.
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[1000]);
        // The top 1% of items receive far more than 1% of the draws.
        let top: u64 = counts[..(items as usize / 100)].iter().sum();
        assert!(
            top as f64 / n as f64 > 0.4,
            "top 1% share {}",
            top as f64 / n as f64
        );
        // Every item has a chance: the tail is not empty.
        let tail: u64 = counts[(items as usize / 2)..].iter().sum();
        assert!(tail > 0);
    }

    #[test]
    fn theta_zero_is_uniform() {
        let z = Zipfian::new(10, 0.0).unwrap();
        let mut rng = Rng::seeded(9);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 / 100_000.0 - 0.1).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn bad_theta_is_refused() {
        assert!(Zipfian::new(10, 1.0).is_err());
        assert!(Zipfian::new(10, -0.5).is_err());
        assert!(Zipfian::new(10, f64::NAN).is_err());
        assert!(Zipfian::new(0, 0.5).is_err());
    }

    #[test]
    fn latest_prefers_recent_writes() {
        let chooser = KeyChooser::new(DistKind::Latest, 1000, 0.99).unwrap();
        let mut rng = Rng::seeded(5);
        // Writes walk forward from the end of the load phase, wrapping.
        assert_eq!(chooser.pick(OpKind::Write, &mut rng), 0);
        assert_eq!(chooser.pick(OpKind::Write, &mut rng), 1);
        // Reads mostly hit the 100 keys written last (indices 1, 0, 999, …,
        // 902): about zeta(100)/zeta(1000) = 70% of them, not 10%.
        let mut near = 0;
        let mut latest = 0;
        for _ in 0..10_000 {
            let k = chooser.pick(OpKind::Read, &mut rng);
            assert!(k < 1000);
            if k <= 1 || k >= 902 {
                near += 1;
            }
            if k == 1 {
                latest += 1;
            }
        }
        assert!(near > 6_000, "near {near}");
        assert!(latest > 1_000, "the latest key is the hottest: {latest}");
    }

    #[test]
    fn key_paths_are_percent_encoded() {
        let ks = KeySpace::new("a b/c");
        assert_eq!(ks.name(7), "a b/c-7");
        assert_eq!(ks.path(7, None), "/v1/kv/a%20b%2Fc-7");
        assert_eq!(
            ks.path(7, Some("quorum")),
            "/v1/kv/a%20b%2Fc-7?consistency=quorum"
        );
    }
}
