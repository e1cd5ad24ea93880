//! The quorum decisions of a coordinator, as pure state machines the async
//! code feeds one reply at a time: [`WriteTally`] (has this write attempt
//! gathered its W acknowledgements, met a newer version, or failed — and
//! may it have been applied anyway?) and [`ReadTally`] (has this read heard
//! R replicas?). No I/O, no clocks: the tests drive them by hand through
//! the scenarios the fault suite met.

use crate::error::Error;
use crate::quorum::Consistency;
use crate::record::Record;
use crate::version::Version;
use std::collections::{BTreeMap, BTreeSet};

/// How one replica's part of a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// The replica stored it.
    Direct { node: String, replaced_live: bool },
    /// `holder` stored it as a hint for `target`, which failed for `why`.
    Hinted {
        holder: String,
        target: String,
        why: String,
    },
    /// The replica holds a newer (or equal) version (`tombstone`: a delete).
    Superseded {
        node: String,
        current: Version,
        tombstone: bool,
    },
    /// Neither the replica nor a hint holder took it; `definite`: certainly
    /// not applied anywhere; `disk_full`: the replica refused for a full disk.
    Failed {
        why: String,
        definite: bool,
        disk_full: bool,
    },
}

/// How a write attempt counts its acknowledgements: `need` in **each**
/// replica set it was given (one per live layout version; capped at the
/// set's size), never `need` in total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePolicy {
    /// Acknowledgements needed (W at the request's level).
    pub need: usize,
    /// Hint holders count toward `need` (sloppy quorum).
    pub sloppy_quorum: bool,
    /// A replica holding a newer version counts as an acknowledgement (the
    /// last attempt of an unconditional write: a concurrent later write
    /// superseded it, and that replica holds what supersedes it).
    pub superseded_acks: bool,
    /// Hear every replica out before deciding (a conditional write: a
    /// newer version arriving after W acknowledgements still breaks it).
    pub wait_all: bool,
    pub consistency: Consistency,
}

/// What a write attempt came to.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// W acknowledgements: `created` when no live value was replaced,
    /// `hinted` of them from hint holders.
    Acked {
        created: bool,
        hinted: usize,
    },
    /// A replica holds `newest`; `maybe_applied`: this attempt may be
    /// stored somewhere anyway.
    Superseded {
        newest: Version,
        tombstone: bool,
        maybe_applied: bool,
    },
    Failed(Error),
}

/// The acknowledgements of one write attempt.
#[derive(Debug)]
pub struct WriteTally {
    policy: WritePolicy,
    /// The replica set of each live layout version.
    sets: Vec<BTreeSet<String>>,
    /// Nodes that durably hold the write (or a newer version that
    /// supersedes it, when that counts).
    direct: BTreeSet<String>,
    /// With sloppy quorum: per hint holder, the replicas it holds it for.
    hints: BTreeMap<String, BTreeSet<String>>,
    replaced_live: bool,
    newest: Option<(Version, bool)>,
    errors: Vec<String>,
    disk_full: usize,
    failed: usize,
    /// An acknowledgement, a hint (replayed later even when it does not
    /// count) or a failure of unknown effect: the attempt may be stored.
    maybe_applied: bool,
}

impl WriteTally {
    /// A tally needing `policy.need` acknowledgements in each of `sets`.
    pub fn new(policy: WritePolicy, sets: Vec<Vec<String>>) -> WriteTally {
        WriteTally {
            policy,
            sets: sets.into_iter().map(|s| s.into_iter().collect()).collect(),
            direct: BTreeSet::new(),
            hints: BTreeMap::new(),
            replaced_live: false,
            newest: None,
            errors: Vec::new(),
            disk_full: 0,
            failed: 0,
            maybe_applied: false,
        }
    }

    /// Distinct nodes holding the write for `set`: its members that store
    /// it, and (sloppy quorum) hint holders for its members, each once.
    fn count(&self, set: &BTreeSet<String>) -> usize {
        let own = set.iter().filter(|n| self.direct.contains(*n)).count();
        let holders = self
            .hints
            .iter()
            .filter(|(h, targets)| {
                !(set.contains(*h) && self.direct.contains(*h))
                    && targets.iter().any(|t| set.contains(t))
            })
            .count();
        own + holders
    }

    /// The fewest acknowledgements any set has.
    fn received(&self) -> usize {
        self.sets.iter().map(|s| self.count(s)).min().unwrap_or(0)
    }

    /// `need` (capped at each set's size) in every set; no set is never met.
    fn met(&self) -> bool {
        !self.sets.is_empty()
            && self.sets.iter().all(|s| {
                let need = self.policy.need.max(1).min(s.len());
                need > 0 && self.count(s) >= need
            })
    }

    /// Counts one replica's answer; `Some` once the attempt is decided
    /// before every replica answered.
    pub fn record(&mut self, ack: Ack) -> Option<Verdict> {
        match ack {
            Ack::Direct {
                node,
                replaced_live,
            } => {
                self.maybe_applied = true;
                self.replaced_live |= replaced_live;
                self.direct.insert(node);
            }
            Ack::Hinted {
                holder,
                target,
                why,
            } => {
                self.maybe_applied = true;
                self.errors.push(format!("{why} (hint stored at {holder})"));
                if self.policy.sloppy_quorum {
                    self.hints.entry(holder).or_default().insert(target);
                }
            }
            Ack::Superseded { node, .. } if self.policy.superseded_acks => {
                self.direct.insert(node);
            }
            Ack::Superseded {
                current, tombstone, ..
            } => {
                if self.newest.is_none_or(|(v, _)| current > v) {
                    self.newest = Some((current, tombstone));
                }
            }
            Ack::Failed {
                why,
                definite,
                disk_full,
            } => {
                self.failed += 1;
                self.disk_full += usize::from(disk_full);
                self.maybe_applied |= !definite;
                self.errors.push(why);
            }
        }
        (!self.policy.wait_all && self.met() && self.newest.is_none()).then(|| self.acked())
    }

    fn acked(&self) -> Verdict {
        // A holder that also stored it directly is no hint.
        let hinted = self
            .hints
            .keys()
            .filter(|h| !self.direct.contains(*h))
            .count();
        Verdict::Acked {
            created: !self.replaced_live,
            hinted,
        }
    }

    /// Every replica answered (or the channel closed): the decision.
    pub fn finish(self) -> Verdict {
        if let Some((newest, tombstone)) = self.newest {
            return Verdict::Superseded {
                newest,
                tombstone,
                maybe_applied: self.maybe_applied,
            };
        }
        if self.met() {
            return self.acked();
        }
        if self.disk_full > 0 && self.disk_full == self.failed && !self.maybe_applied {
            return Verdict::Failed(Error::DiskFull(self.errors.join("; ")));
        }
        Verdict::Failed(Error::Unavailable {
            consistency: self.policy.consistency,
            required: self.policy.need,
            received: self.received(),
            errors: self.errors,
            indeterminate: self.maybe_applied,
        })
    }
}

/// The replies of one read.
#[derive(Debug)]
pub struct ReadTally {
    need: usize,
    replies: Vec<(String, Option<Record>)>,
    errors: Vec<String>,
}

impl ReadTally {
    pub fn new(need: usize) -> ReadTally {
        ReadTally {
            need,
            replies: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Counts one replica's answer (an error counts as no answer).
    pub fn record(&mut self, node: String, reply: Result<Option<Record>, String>) {
        match reply {
            Ok(r) => self.replies.push((node, r)),
            Err(e) => self.errors.push(format!("{node}: {e}")),
        }
    }

    /// R replicas answered.
    pub fn done(&self) -> bool {
        self.replies.len() >= self.need
    }

    /// The replies, or `unavailable` (never indeterminate: a read changes
    /// nothing) when fewer than R came.
    pub fn finish(self, consistency: Consistency) -> Result<Vec<(String, Option<Record>)>, Error> {
        if self.done() {
            return Ok(self.replies);
        }
        Err(Error::Unavailable {
            consistency,
            required: self.need,
            received: self.replies.len(),
            errors: self.errors,
            indeterminate: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(need: usize) -> WritePolicy {
        WritePolicy {
            need,
            sloppy_quorum: false,
            superseded_acks: false,
            wait_all: false,
            consistency: Consistency::Quorum,
        }
    }

    fn direct(n: &str) -> Ack {
        Ack::Direct {
            node: n.into(),
            replaced_live: true,
        }
    }

    fn hinted(holder: &str) -> Ack {
        Ack::Hinted {
            holder: holder.into(),
            target: "n3".into(),
            why: "n3: down".into(),
        }
    }

    fn three() -> Vec<Vec<String>> {
        vec![["n1", "n2", "n3"].map(String::from).to_vec()]
    }

    fn failed(definite: bool) -> Ack {
        Ack::Failed {
            why: "n2: timed out".into(),
            definite,
            disk_full: false,
        }
    }

    fn superseded(ts: u64) -> Ack {
        Ack::Superseded {
            node: "n2".into(),
            current: Version::new(ts, 2),
            tombstone: false,
        }
    }

    /// Each scenario: the policy, the answers in arrival order, and what the
    /// attempt must come to (and after which answer).
    #[test]
    fn write_scenarios() {
        struct Case {
            name: &'static str,
            policy: WritePolicy,
            acks: Vec<Ack>,
            decided_after: Option<usize>,
            verdict: Verdict,
        }
        let acked = |hinted| Verdict::Acked {
            created: false,
            hinted,
        };
        let unavailable = |received, indeterminate| {
            Verdict::Failed(Error::Unavailable {
                consistency: Consistency::Quorum,
                required: 2,
                received,
                errors: vec![],
                indeterminate,
            })
        };
        let cases = vec![
            Case {
                name: "quorum of three: two acks decide, the third is not awaited",
                policy: policy(2),
                acks: vec![direct("n1"), direct("n2"), direct("n3")],
                decided_after: Some(2),
                verdict: acked(0),
            },
            Case {
                name: "strict quorum: a hint for a down replica does not count",
                policy: policy(2),
                acks: vec![direct("n1"), hinted("n4"), failed(true)],
                decided_after: None,
                verdict: unavailable(1, true),
            },
            Case {
                name: "sloppy quorum: the hint holder counts, and says so",
                policy: WritePolicy {
                    sloppy_quorum: true,
                    ..policy(2)
                },
                acks: vec![direct("n1"), hinted("n4")],
                decided_after: Some(2),
                verdict: acked(1),
            },
            Case {
                name: "sloppy quorum: a holder that is also a replica counts once, not as a hint",
                policy: WritePolicy {
                    sloppy_quorum: true,
                    ..policy(3)
                },
                acks: vec![hinted("n2"), direct("n2"), direct("n1"), failed(true)],
                decided_after: None,
                verdict: Verdict::Failed(Error::Unavailable {
                    consistency: Consistency::Quorum,
                    required: 3,
                    received: 2,
                    errors: vec![],
                    indeterminate: true,
                }),
            },
            Case {
                name: "partitioned: every replica failed definitely: not applied",
                policy: policy(2),
                acks: vec![failed(true), failed(true), failed(true)],
                decided_after: None,
                verdict: unavailable(0, false),
            },
            Case {
                name: "a late reply of unknown effect makes the failure indeterminate",
                policy: policy(2),
                acks: vec![failed(true), failed(false), failed(true)],
                decided_after: None,
                verdict: unavailable(0, true),
            },
            Case {
                name: "a replica holds a newer version: retry above it",
                policy: policy(2),
                acks: vec![direct("n1"), superseded(900), direct("n3")],
                decided_after: None,
                verdict: Verdict::Superseded {
                    newest: Version::new(900, 2),
                    tombstone: false,
                    maybe_applied: true,
                },
            },
            Case {
                name: "last attempt: a newer version is a concurrent later write, an ack",
                policy: WritePolicy {
                    superseded_acks: true,
                    ..policy(2)
                },
                acks: vec![direct("n1"), superseded(900)],
                decided_after: Some(2),
                verdict: acked(0),
            },
            Case {
                name: "conditional: a newer version after W acks still breaks it",
                policy: WritePolicy {
                    wait_all: true,
                    ..policy(2)
                },
                acks: vec![direct("n1"), direct("n3"), superseded(900)],
                decided_after: None,
                verdict: Verdict::Superseded {
                    newest: Version::new(900, 2),
                    tombstone: false,
                    maybe_applied: true,
                },
            },
            Case {
                name: "full disks everywhere, nothing stored: 507",
                policy: policy(2),
                acks: vec![
                    Ack::Failed {
                        why: "full".into(),
                        definite: true,
                        disk_full: true,
                    };
                    3
                ],
                decided_after: None,
                verdict: Verdict::Failed(Error::DiskFull("full; full; full".into())),
            },
        ];
        for case in cases {
            let mut t = WriteTally::new(case.policy, three());
            let mut decided = None;
            for (i, ack) in case.acks.into_iter().enumerate() {
                if let Some(v) = t.record(ack) {
                    decided = Some((i + 1, v));
                    break;
                }
            }
            let (after, verdict) = match decided {
                Some((i, v)) => (Some(i), v),
                None => (None, t.finish()),
            };
            assert_eq!(after, case.decided_after, "{}: decided after", case.name);
            // Compare without the free-text errors.
            let strip = |v: Verdict| match v {
                Verdict::Failed(Error::Unavailable {
                    consistency,
                    required,
                    received,
                    indeterminate,
                    ..
                }) => Verdict::Failed(Error::Unavailable {
                    consistency,
                    required,
                    received,
                    errors: vec![],
                    indeterminate,
                }),
                v => v,
            };
            assert_eq!(
                format!("{:?}", strip(verdict)),
                format!("{:?}", case.verdict),
                "{}",
                case.name
            );
        }
    }

    /// Invariant 3: while a change is in flight, a write is acknowledged
    /// only with W acknowledgements in each live version's set — never W
    /// (or W + 1) in total.
    #[test]
    fn a_write_in_flight_needs_w_in_each_version_set() {
        let sets = vec![
            ["n1", "n2", "n3"].map(String::from).to_vec(),
            ["n1", "n2", "n4"].map(String::from).to_vec(),
        ];
        // n1 + n3: two in the old set, one in the new.
        let mut t = WriteTally::new(policy(2), sets.clone());
        assert!(t.record(direct("n1")).is_none());
        assert!(t.record(direct("n3")).is_none(), "W in the old set only");
        assert!(t.record(direct("n4")).is_some(), "then W in both");
        // Three acks in total, never two in the new set: not acknowledged.
        let mut t = WriteTally::new(policy(2), sets.clone());
        for n in ["n1", "n3"] {
            assert!(t.record(direct(n)).is_none());
        }
        t.record(failed(true));
        t.record(failed(false));
        match t.finish() {
            Verdict::Failed(Error::Unavailable {
                received,
                indeterminate,
                ..
            }) => {
                assert_eq!(received, 1, "the new set has one");
                assert!(indeterminate, "two replicas stored it");
            }
            v => panic!("{v:?}"),
        }
        // A shared node counts in both sets.
        let mut t = WriteTally::new(policy(2), sets.clone());
        t.record(direct("n1"));
        assert!(t.record(direct("n2")).is_some());
        // Sloppy quorum: a hint holder counts for the sets of its target
        // only.
        let sloppy = WritePolicy {
            sloppy_quorum: true,
            ..policy(2)
        };
        let mut t = WriteTally::new(sloppy, sets);
        t.record(direct("n1"));
        assert!(
            t.record(hinted("n5")).is_none(),
            "n3's hint serves the old set only"
        );
        assert!(t
            .record(Ack::Hinted {
                holder: "n5".into(),
                target: "n4".into(),
                why: "n4: down".into(),
            })
            .is_some());
    }

    #[test]
    fn a_read_needs_r_answers_and_an_error_is_none() {
        let mut t = ReadTally::new(2);
        t.record("n1".into(), Ok(None));
        t.record("n2".into(), Err("timed out".into()));
        assert!(!t.done());
        let e = t.finish(Consistency::Quorum).unwrap_err();
        assert!(matches!(
            e,
            Error::Unavailable {
                required: 2,
                received: 1,
                indeterminate: false,
                ..
            }
        ));
        let mut t = ReadTally::new(2);
        t.record("n1".into(), Ok(None));
        t.record("n3".into(), Ok(None));
        assert!(t.done());
        assert_eq!(t.finish(Consistency::Quorum).unwrap().len(), 2);
    }
}
