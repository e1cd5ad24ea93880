//! What the bench wrote, per key: the sequence numbers it handed out and which
//! writes and deletes were acknowledged, kept just long enough to decide what
//! a final read may legitimately return.
//!
//! # The rule `verify` checks
//! Each write or delete of a key gets the next sequence number of that key
//! when it is issued. An operation A is *superseded* when some acknowledged
//! operation B of the same key was issued after A was acknowledged: then every
//! correct store must return B's effect, or that of something even later,
//! never A's. Operations that are concurrent with the newest acknowledged one
//! (overlapping in time), or that were never acknowledged (failed, timed
//! out: they may still have been applied), stay possible outcomes.
//!
//! So a final read is correct when it returns the value of a write that is not
//! superseded, or 404 when a delete that is not superseded exists. Since
//! sequence numbers are handed out at issue time, "B issued after A was
//! acknowledged" is `seq(B) > issued_when_acked(A)`, and superseded operations
//! can be forgotten as soon as they are.

use std::fmt;
use std::sync::Mutex;

/// A write sets a value; a delete removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Put,
    Delete,
}

#[derive(Clone, Debug)]
struct OpRecord {
    seq: u32,
    change: Change,
    /// When acknowledged: how many sequence numbers had been issued then.
    acked_at: Option<u32>,
}

/// The live history of one key.
#[derive(Clone, Debug, Default)]
pub struct KeyLog {
    /// Sequence numbers issued so far (they are `1..=issued`).
    issued: u32,
    /// Highest acknowledged sequence number (0: none).
    max_acked: u32,
    /// Operations not yet superseded, oldest first.
    live: Vec<OpRecord>,
}

/// What a final read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// 404.
    Absent,
    /// A value this run wrote with this sequence number (bytes checked).
    Value(u32),
    /// Something else (other run, other key, corrupted), with the reason.
    Foreign(String),
}

/// Why a final read is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The key reads 404 but no delete that may be the latest exists.
    LostWrite { newest_acked: u32 },
    /// The value of a write that an acknowledged later write superseded.
    Stale { read: u32, newest_acked: u32 },
    /// A sequence number the bench never used for a write of this key.
    NeverWritten { read: u32 },
    /// A value the bench did not write for this key.
    Foreign(String),
}

impl Mismatch {
    pub fn kind(&self) -> &'static str {
        match self {
            Mismatch::LostWrite { .. } => "lost_write",
            Mismatch::Stale { .. } => "stale_value",
            Mismatch::NeverWritten { .. } => "never_written",
            Mismatch::Foreign(_) => "foreign_value",
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::LostWrite { newest_acked } => write!(
                f,
                "reads 404, but write #{newest_acked} was acknowledged last and no delete may be later (lost write)"
            ),
            Mismatch::Stale { read, newest_acked } => write!(
                f,
                "reads the value of write #{read}, but #{newest_acked} was issued after #{read} was acknowledged and was acknowledged too (stale value)"
            ),
            Mismatch::NeverWritten { read } => {
                write!(f, "reads a value with seq #{read}, which the bench never wrote")
            }
            Mismatch::Foreign(why) => write!(f, "reads a value the bench did not write: {why}"),
        }
    }
}

impl KeyLog {
    /// Issues the next sequence number for `change`.
    pub fn begin(&mut self, change: Change) -> u32 {
        self.issued = self
            .issued
            .checked_add(1)
            .expect("more than 4 billion writes to one key");
        self.live.push(OpRecord {
            seq: self.issued,
            change,
            acked_at: None,
        });
        self.issued
    }

    /// Records that `seq` was acknowledged, and forgets what it supersedes.
    pub fn ack(&mut self, seq: u32) {
        let now = self.issued;
        if let Some(op) = self.live.iter_mut().find(|o| o.seq == seq) {
            op.acked_at = Some(now);
        } else {
            debug_assert!(false, "ack of unknown or superseded seq {seq}");
            return;
        }
        self.max_acked = self.max_acked.max(seq);
        let max = self.max_acked;
        self.live.retain(|o| o.acked_at.is_none_or(|at| at >= max));
    }

    /// Whether any write or delete of this key was acknowledged.
    pub fn any_acked(&self) -> bool {
        self.max_acked > 0
    }

    #[cfg(test)]
    pub fn issued(&self) -> u32 {
        self.issued
    }

    /// Checks a final read (see the module doc).
    pub fn check(&self, observed: &Observed) -> Result<(), Mismatch> {
        match observed {
            Observed::Foreign(why) => Err(Mismatch::Foreign(why.clone())),
            Observed::Absent => {
                if self.live.iter().any(|o| o.change == Change::Delete) {
                    Ok(())
                } else {
                    Err(Mismatch::LostWrite {
                        newest_acked: self.max_acked,
                    })
                }
            }
            &Observed::Value(read) => match self.live.iter().find(|o| o.seq == read) {
                Some(op) if op.change == Change::Put => Ok(()),
                Some(_) => Err(Mismatch::NeverWritten { read }),
                None if read == 0 || read > self.issued => Err(Mismatch::NeverWritten { read }),
                None => Err(Mismatch::Stale {
                    read,
                    newest_acked: self.max_acked,
                }),
            },
        }
    }
}

/// Every key's log, sharded under a few mutexes.
pub struct Ledger {
    shards: Vec<Mutex<Vec<KeyLog>>>,
}

const SHARDS: u64 = 256;

impl Ledger {
    pub fn new(keys: u64) -> Ledger {
        let shards = SHARDS.min(keys.max(1));
        let per_shard = keys.div_ceil(shards) as usize;
        Ledger {
            shards: (0..shards)
                .map(|_| Mutex::new(vec![KeyLog::default(); per_shard]))
                .collect(),
        }
    }

    /// Runs `f` on the log of key `index`.
    pub fn with<R>(&self, index: u64, f: impl FnOnce(&mut KeyLog) -> R) -> R {
        let n = self.shards.len() as u64;
        let mut shard = self.shards[(index % n) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f(&mut shard[(index / n) as usize])
    }

    /// Indices of the keys with at least one acknowledged write or delete.
    pub fn acked_keys(&self) -> Vec<u64> {
        let n = self.shards.len() as u64;
        let mut out = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (i, log) in shard.iter().enumerate() {
                if log.any_acked() {
                    out.push(i as u64 * n + s as u64);
                }
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seq: u32) -> Observed {
        Observed::Value(seq)
    }

    #[test]
    fn sequential_writes_only_the_last_is_valid() {
        let mut k = KeyLog::default();
        for _ in 0..3 {
            let s = k.begin(Change::Put);
            k.ack(s);
        }
        assert_eq!(k.check(&value(3)), Ok(()));
        assert_eq!(
            k.check(&value(2)),
            Err(Mismatch::Stale {
                read: 2,
                newest_acked: 3
            })
        );
        assert_eq!(
            k.check(&Observed::Absent),
            Err(Mismatch::LostWrite { newest_acked: 3 })
        );
        assert_eq!(k.check(&value(4)), Err(Mismatch::NeverWritten { read: 4 }));
        assert_eq!(k.check(&value(0)), Err(Mismatch::NeverWritten { read: 0 }));
        // Superseded history is forgotten.
        assert_eq!(k.live.len(), 1);
    }

    #[test]
    fn concurrent_writes_either_may_win() {
        let mut k = KeyLog::default();
        let a = k.begin(Change::Put);
        let b = k.begin(Change::Put);
        // b is acknowledged first, then a: they overlapped in time.
        k.ack(b);
        k.ack(a);
        assert_eq!(k.check(&value(a)), Ok(()));
        assert_eq!(k.check(&value(b)), Ok(()));
        // A write issued after both acks supersedes both once acknowledged.
        let c = k.begin(Change::Put);
        k.ack(c);
        assert!(k.check(&value(a)).is_err());
        assert!(k.check(&value(b)).is_err());
        assert_eq!(k.check(&value(c)), Ok(()));
    }

    #[test]
    fn unacknowledged_writes_stay_possible() {
        let mut k = KeyLog::default();
        let a = k.begin(Change::Put);
        k.ack(a);
        let failed = k.begin(Change::Put); // e.g. 503 or timeout: may be applied
        assert_eq!(k.check(&value(a)), Ok(()));
        assert_eq!(
            k.check(&value(failed)),
            Ok(()),
            "a newer write the bench sent"
        );
        // Even after a later acknowledged write: the failed one may land late.
        let c = k.begin(Change::Put);
        k.ack(c);
        assert_eq!(k.check(&value(failed)), Ok(()));
        assert!(k.check(&value(a)).is_err());
    }

    #[test]
    fn deletes_must_read_404_unless_a_later_write_was_acknowledged() {
        let mut k = KeyLog::default();
        let w = k.begin(Change::Put);
        k.ack(w);
        let d = k.begin(Change::Delete);
        k.ack(d);
        assert_eq!(k.check(&Observed::Absent), Ok(()));
        assert!(k.check(&value(w)).is_err(), "a deleted value came back");
        assert_eq!(
            k.check(&value(d)),
            Err(Mismatch::NeverWritten { read: d }),
            "a delete's seq never carries a value"
        );
        let w2 = k.begin(Change::Put);
        k.ack(w2);
        assert!(
            k.check(&Observed::Absent).is_err(),
            "the later write is lost"
        );
        assert_eq!(k.check(&value(w2)), Ok(()));
    }

    #[test]
    fn delete_concurrent_with_a_write_allows_both() {
        let mut k = KeyLog::default();
        let w = k.begin(Change::Put);
        let d = k.begin(Change::Delete);
        k.ack(d);
        k.ack(w);
        assert_eq!(k.check(&Observed::Absent), Ok(()));
        assert_eq!(k.check(&value(w)), Ok(()));
    }

    #[test]
    fn foreign_values_are_mismatches() {
        let mut k = KeyLog::default();
        let w = k.begin(Change::Put);
        k.ack(w);
        let m = k.check(&Observed::Foreign("other run".into())).unwrap_err();
        assert_eq!(m.kind(), "foreign_value");
        assert!(m.to_string().contains("other run"));
    }

    #[test]
    fn ledger_shards_cover_every_key() {
        for keys in [1u64, 5, 256, 257, 1000] {
            let ledger = Ledger::new(keys);
            for i in 0..keys {
                let s = ledger.with(i, |k| k.begin(Change::Put));
                if i % 2 == 0 {
                    ledger.with(i, |k| k.ack(s));
                }
            }
            let acked = ledger.acked_keys();
            assert_eq!(acked, (0..keys).filter(|i| i % 2 == 0).collect::<Vec<_>>());
            for i in 0..keys {
                assert_eq!(ledger.with(i, |k| k.issued()), 1, "key {i} of {keys}");
            }
        }
    }
}
