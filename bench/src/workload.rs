//! The operation mix: which fraction of operations are reads, writes and
//! deletes, and the named presets.

use clap::ValueEnum;
use serde::Serialize;

/// One kind of operation the bench sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Write,
    Delete,
}

impl OpKind {
    pub fn index(self) -> usize {
        match self {
            OpKind::Read => 0,
            OpKind::Write => 1,
            OpKind::Delete => 2,
        }
    }
}

/// `--workload` presets (YCSB-like names where they exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 10 reads per write (read ratio 10/11 ≈ 0.909).
    Default,
    /// YCSB A: 50% reads, 50% writes.
    A,
    /// YCSB B: 95% reads, 5% writes.
    B,
    /// YCSB C: reads only.
    C,
    /// Writes only.
    WriteOnly,
}

impl Preset {
    pub fn read_ratio(self) -> f64 {
        match self {
            Preset::Default => 10.0 / 11.0,
            Preset::A => 0.5,
            Preset::B => 0.95,
            Preset::C => 1.0,
            Preset::WriteOnly => 0.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::A => "a",
            Preset::B => "b",
            Preset::C => "c",
            Preset::WriteOnly => "write-only",
        }
    }
}

/// Fractions of reads and deletes; writes get the rest.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mix {
    pub read: f64,
    pub delete: f64,
}

impl Mix {
    /// Checks `read` and `delete` are fractions that leave a non-negative
    /// write share.
    pub fn new(read: f64, delete: f64) -> Result<Mix, String> {
        for (name, v) in [("--read-ratio", read), ("--delete-ratio", delete)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, not {v}"));
            }
        }
        // A little slack so that e.g. 0.7 + 0.3 is not refused for rounding.
        if read + delete > 1.0 + 1e-9 {
            return Err(format!(
                "--read-ratio {read} plus --delete-ratio {delete} exceed 1: \
                 deletes are taken from the non-read share"
            ));
        }
        Ok(Mix { read, delete })
    }

    pub fn write(&self) -> f64 {
        (1.0 - self.read - self.delete).max(0.0)
    }

    /// The operation for a uniform draw `u` in `[0, 1)`.
    pub fn choose(&self, u: f64) -> OpKind {
        if u < self.read {
            OpKind::Read
        } else if u < self.read + self.delete {
            OpKind::Delete
        } else if self.write() > 0.0 {
            OpKind::Write
        } else if self.delete > 0.0 {
            // Only reached through rounding when writes have no share.
            OpKind::Delete
        } else {
            OpKind::Read
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn shares(mix: Mix, n: usize) -> [f64; 3] {
        let mut rng = Rng::seeded(42);
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[mix.choose(rng.next_f64()).index()] += 1;
        }
        counts.map(|c| c as f64 / n as f64)
    }

    #[test]
    fn presets_have_the_documented_ratios() {
        assert!((Preset::Default.read_ratio() - 0.909).abs() < 0.001);
        assert_eq!(Preset::A.read_ratio(), 0.5);
        assert_eq!(Preset::B.read_ratio(), 0.95);
        assert_eq!(Preset::C.read_ratio(), 1.0);
        assert_eq!(Preset::WriteOnly.read_ratio(), 0.0);
    }

    #[test]
    fn selection_follows_the_ratios() {
        let s = shares(Mix::new(0.9, 0.05).unwrap(), 200_000);
        assert!((s[0] - 0.90).abs() < 0.01, "{s:?}");
        assert!((s[1] - 0.05).abs() < 0.01, "{s:?}");
        assert!((s[2] - 0.05).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn extreme_mixes_are_pure() {
        assert_eq!(shares(Mix::new(1.0, 0.0).unwrap(), 10_000), [1.0, 0.0, 0.0]);
        assert_eq!(shares(Mix::new(0.0, 0.0).unwrap(), 10_000), [0.0, 1.0, 0.0]);
        assert_eq!(shares(Mix::new(0.0, 1.0).unwrap(), 10_000), [0.0, 0.0, 1.0]);
        // Boundaries of the draw itself.
        let m = Mix::new(0.5, 0.25).unwrap();
        assert_eq!(m.choose(0.0), OpKind::Read);
        assert_eq!(m.choose(0.5), OpKind::Delete);
        assert_eq!(m.choose(0.75), OpKind::Write);
        assert_eq!(m.choose(0.999_999), OpKind::Write);
    }

    #[test]
    fn bad_ratios_are_refused() {
        assert!(Mix::new(1.1, 0.0).is_err());
        assert!(Mix::new(-0.1, 0.0).is_err());
        assert!(Mix::new(0.5, f64::NAN).is_err());
        let e = Mix::new(0.9, 0.2).unwrap_err();
        assert!(e.contains("exceed 1"), "{e}");
        assert!(Mix::new(0.7, 0.3).is_ok());
    }
}
