//! Consistency levels and the bookkeeping of a quorum: how many answers a
//! request needs, and how replies reconcile.
//!
//! With replication factor N, a read waits for R answers and a write for W
//! acknowledgements. `quorum` is ⌊N/2⌋+1, `all` is N, `one` is 1; the default
//! (no level given) uses the configured `r` and `w`. When R + W > N, every read
//! quorum overlaps every write quorum, so a read sees the latest write that was
//! acknowledged at W (without sloppy quorum).
//!
//! Reconciliation is last-write-wins: the reply with the greatest version is the
//! answer, tombstones included (a newer delete hides an older value).

use crate::record::Record;
use std::fmt;
use std::str::FromStr;

/// How many replicas a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    One,
    Quorum,
    All,
    /// The configured `r` (reads) or `w` (writes).
    Default,
}

impl Consistency {
    /// Answers needed out of `n` replicas; `default` is the configured r or w.
    pub fn required(self, n: usize, default: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Default => default,
        }
        .clamp(1, n.max(1))
    }

    /// The level a compare-and-set runs at: this one if it reads and writes
    /// a majority (so R + W > N and a second compare-and-set of the same
    /// version must see the first), else `quorum`.
    pub fn for_conditional(self, n: usize, r: usize, w: usize) -> Consistency {
        let majority = n / 2 + 1;
        if self.required(n, r) >= majority && self.required(n, w) >= majority {
            self
        } else {
            Consistency::Quorum
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
            Consistency::Default => "default",
        })
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => Err(format!(
                "unknown consistency level '{other}' (expected one, quorum or all)"
            )),
        }
    }
}

/// The newest of the replies (last write wins); `None` if no replica had the key.
pub fn reconcile<'a>(replies: impl IntoIterator<Item = &'a Option<Record>>) -> Option<Record> {
    replies
        .into_iter()
        .flatten()
        .max_by_key(|r| r.version)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;
    use bytes::Bytes;

    /// Review of 06: two compare-and-sets of one version at `one` both won
    /// (each read a different replica). A conditional write reads and
    /// writes at least a majority.
    #[test]
    fn conditional_writes_run_at_least_at_quorum() {
        let c = |level: Consistency, r, w| level.for_conditional(3, r, w);
        assert_eq!(c(Consistency::One, 2, 2), Consistency::Quorum);
        assert_eq!(c(Consistency::Default, 1, 2), Consistency::Quorum);
        assert_eq!(c(Consistency::Default, 2, 2), Consistency::Default);
        assert_eq!(c(Consistency::All, 1, 1), Consistency::All);
        assert_eq!(Consistency::One.for_conditional(1, 1, 1), Consistency::One);
    }

    #[test]
    fn required_counts() {
        assert_eq!(Consistency::One.required(3, 2), 1);
        assert_eq!(Consistency::Quorum.required(3, 2), 2);
        assert_eq!(Consistency::Quorum.required(5, 2), 3);
        assert_eq!(Consistency::All.required(3, 2), 3);
        assert_eq!(Consistency::Default.required(3, 2), 2);
        assert_eq!(Consistency::Quorum.required(1, 1), 1);
    }

    #[test]
    fn parse_levels() {
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
        assert!("two".parse::<Consistency>().unwrap_err().contains("two"));
    }

    #[test]
    fn newest_reply_wins_tombstones_included() {
        let old = Some(Record::value(Version::new(1, 1), Bytes::from_static(b"a")));
        let del = Some(Record::tombstone(Version::new(2, 1)));
        assert_eq!(reconcile(&[old.clone(), None, del.clone()]), del);
        assert_eq!(reconcile(&[None, old.clone()]), old);
        assert_eq!(reconcile(&[None, None]), None);
    }
}
