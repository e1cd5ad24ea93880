//! The comparison at the heart of anti-entropy: two sorted streams of
//! `(data key, version)` — ours and a peer's — walked side by side, page by
//! page, deciding for each key who has the newer record. Pure: the caller
//! fetches pages when asked ([`Step::NeedOurs`], [`Step::NeedTheirs`]) and
//! acts on the decisions, so memory stays at one page per side however large
//! the ranges are.
//!
//! Both sides order records by data key (`token || key`), so equal keys meet.
//! A peer that sends its page out of order cannot make the walk loop or
//! panic: every decision consumes at least one entry.

use crate::version::Version;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::VecDeque;

/// What the walk needs or decided next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed our next page ([`MergeJoin::feed_ours`]).
    NeedOurs,
    /// Feed the peer's next page ([`MergeJoin::feed_theirs`]).
    NeedTheirs,
    /// The peer's record of this data key is newer, or we have none: take it.
    Pull(Bytes),
    /// Ours is newer, or the peer has none: send it.
    Push(Bytes),
    /// Both streams are exhausted.
    Done,
}

/// Walks two sorted streams of `(data key, version)`.
#[derive(Debug, Default)]
pub struct MergeJoin {
    ours: VecDeque<(Bytes, Version)>,
    theirs: VecDeque<(Bytes, Version)>,
    ours_done: bool,
    theirs_done: bool,
}

impl MergeJoin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Our next page; `last`: no page follows it.
    pub fn feed_ours(&mut self, page: Vec<(Bytes, Version)>, last: bool) {
        self.ours.extend(page);
        self.ours_done |= last;
    }

    /// The peer's next page; `last`: no page follows it.
    pub fn feed_theirs(&mut self, page: Vec<(Bytes, Version)>, last: bool) {
        self.theirs.extend(page);
        self.theirs_done |= last;
    }

    /// The next decision, or the page it needs first. Keys both sides hold
    /// at the same version are skipped.
    pub fn step(&mut self) -> Step {
        loop {
            if self.ours.is_empty() && !self.ours_done {
                return Step::NeedOurs;
            }
            if self.theirs.is_empty() && !self.theirs_done {
                return Step::NeedTheirs;
            }
            let order = match (self.ours.front(), self.theirs.front()) {
                (None, None) => return Step::Done,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((o, _)), Some((t, _))) => o.cmp(t),
            };
            match order {
                Ordering::Less => {
                    let (k, _) = self.ours.pop_front().expect("front");
                    return Step::Push(k);
                }
                Ordering::Greater => {
                    let (k, _) = self.theirs.pop_front().expect("front");
                    return Step::Pull(k);
                }
                Ordering::Equal => {
                    let (k, ov) = self.ours.pop_front().expect("front");
                    let (_, tv) = self.theirs.pop_front().expect("front");
                    match ov.cmp(&tv) {
                        Ordering::Less => return Step::Pull(k),
                        Ordering::Greater => return Step::Push(k),
                        Ordering::Equal => continue,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn kv(k: u8, v: u64) -> (Bytes, Version) {
        (Bytes::from(vec![k]), Version::new(v, 0))
    }

    /// Runs the walk, feeding pages of `page` entries; answers the decisions.
    fn run(
        ours: &[(Bytes, Version)],
        theirs: &[(Bytes, Version)],
        page: usize,
    ) -> (Vec<Bytes>, Vec<Bytes>) {
        let mut j = MergeJoin::new();
        let (mut o, mut t) = (ours.chunks(page), theirs.chunks(page));
        let (mut pull, mut push) = (Vec::new(), Vec::new());
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "the walk does not end");
            match j.step() {
                Step::NeedOurs => {
                    let p = o.next().map(|p| p.to_vec()).unwrap_or_default();
                    let last = o.len() == 0;
                    j.feed_ours(p, last);
                }
                Step::NeedTheirs => {
                    let p = t.next().map(|p| p.to_vec()).unwrap_or_default();
                    let last = t.len() == 0;
                    j.feed_theirs(p, last);
                }
                Step::Pull(k) => pull.push(k),
                Step::Push(k) => push.push(k),
                Step::Done => return (pull, push),
            }
        }
    }

    #[test]
    fn newer_wins_and_equal_is_skipped() {
        let ours = [kv(1, 5), kv(2, 5), kv(4, 1)];
        let theirs = [kv(1, 5), kv(2, 6), kv(3, 1)];
        let (pull, push) = run(&ours, &theirs, 1);
        assert_eq!(pull, vec![Bytes::from(vec![2]), Bytes::from(vec![3])]);
        assert_eq!(push, vec![Bytes::from(vec![4])]);
    }

    #[test]
    fn empty_sides() {
        assert_eq!(run(&[], &[], 3), (vec![], vec![]));
        let (pull, push) = run(&[], &[kv(1, 1)], 3);
        assert_eq!((pull.len(), push.len()), (1, 0));
    }

    #[test]
    fn unsorted_peer_input_still_ends() {
        let theirs = [kv(9, 1), kv(1, 1), kv(5, 1), kv(1, 1)];
        let (pull, push) = run(&[kv(5, 1)], &theirs, 2);
        assert!(pull.len() + push.len() <= 5);
    }

    proptest! {
        #[test]
        fn decisions_converge_both_sides_to_the_union_by_version(
            a in proptest::collection::btree_map(0u8..40, 0u64..4, 0..30),
            b in proptest::collection::btree_map(0u8..40, 0u64..4, 0..30),
            page in 1usize..7,
        ) {
            let ours: Vec<_> = a.iter().map(|(k, v)| kv(*k, *v)).collect();
            let theirs: Vec<_> = b.iter().map(|(k, v)| kv(*k, *v)).collect();
            let (pull, push) = run(&ours, &theirs, page);
            let mut mine: BTreeMap<u8, u64> = a.clone();
            let mut peer: BTreeMap<u8, u64> = b.clone();
            for k in pull { let k = k[0]; mine.insert(k, b[&k]); }
            for k in push { let k = k[0]; peer.insert(k, a[&k]); }
            prop_assert_eq!(&mine, &peer);
            for (k, v) in &mine {
                let best = a.get(k).max(b.get(k)).copied().unwrap();
                prop_assert_eq!(*v, best);
            }
        }
    }
}
