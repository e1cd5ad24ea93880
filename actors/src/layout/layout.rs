//! A layout version: which N nodes replicate each of the Q partitions
//! ([`super::assign`]), and the queries placement needs — a key's replicas,
//! the order a sloppy quorum falls back in, what two nodes share, each
//! node's share. Immutable: a change makes the next version
//! ([`Layout::next`]).

use super::assign::{assign, score, Member};
use super::partition::{count, partition_of, span, PartitionId};
use crate::token::{key_token, Token};
use std::sync::Arc;

/// One version of the placement of partitions on nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    version: u64,
    bits: u8,
    /// The configured replication factor (a partition has fewer replicas
    /// only when there are fewer nodes).
    n: usize,
    /// Sorted by id.
    members: Vec<Member>,
    ids: Vec<Arc<str>>,
    /// Per partition, indices into `members`, the first its primary.
    replicas: Vec<Vec<u16>>,
    /// [`Layout::fingerprint`].
    fingerprint: u64,
}

impl Layout {
    /// The first layout (version 1) of `members`.
    pub fn initial(members: impl IntoIterator<Item = Member>, n: usize, bits: u8) -> Layout {
        Self::build(1, members, n, bits, None)
    }

    /// The next version for `members`, moving as few replicas as balance
    /// allows.
    pub fn next(&self, members: impl IntoIterator<Item = Member>) -> Layout {
        let previous: Vec<Vec<String>> = (0..self.partitions())
            .map(|p| self.replicas(p).iter().map(|s| s.to_string()).collect())
            .collect();
        Self::build(
            self.version + 1,
            members,
            self.n,
            self.bits,
            Some(&previous),
        )
    }

    /// A layout from its stored parts (`members` sorted and distinct,
    /// `replicas` valid indices: checked by [`Layout::from_record`]).
    pub(super) fn from_parts(
        version: u64,
        bits: u8,
        n: usize,
        members: Vec<Member>,
        replicas: Vec<Vec<u16>>,
    ) -> Layout {
        let fingerprint = fingerprint(bits, n, &members, &replicas);
        Layout {
            version,
            bits,
            n,
            ids: members.iter().map(|m| Arc::from(m.id.as_str())).collect(),
            members,
            replicas,
            fingerprint,
        }
    }

    /// Per partition, indices into [`Layout::member_weights`].
    pub(super) fn replica_indices(&self) -> &[Vec<u16>] {
        &self.replicas
    }

    fn build(
        version: u64,
        members: impl IntoIterator<Item = Member>,
        n: usize,
        bits: u8,
        previous: Option<&[Vec<String>]>,
    ) -> Layout {
        let mut members: Vec<Member> = members.into_iter().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        assert!(members.len() <= usize::from(u16::MAX), "too many members");
        let replicas: Vec<Vec<u16>> = assign(&members, n, bits, previous)
            .into_iter()
            .map(|s| s.into_iter().map(|i| i as u16).collect())
            .collect();
        Self::from_parts(version, bits, n, members, replicas)
    }

    /// A hash of what placement depends on — Q, N, the member ids, every
    /// partition's replica list — not of the version number: two nodes
    /// place every key alike when their fingerprints match (anti-entropy
    /// refuses to compare trees across different ones).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Q = 2^bits.
    pub fn partition_bits(&self) -> u8 {
        self.bits
    }

    pub fn partitions(&self) -> u32 {
        count(self.bits)
    }

    /// The configured replication factor.
    pub fn replication_factor(&self) -> usize {
        self.n
    }

    /// Member ids, ascending.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.ids.iter().map(|s| &**s)
    }

    pub fn member_weights(&self) -> &[Member] {
        &self.members
    }

    pub fn contains(&self, node: &str) -> bool {
        self.index_of(node).is_some()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The partition of `key`.
    pub fn partition_of_key(&self, key: &[u8]) -> PartitionId {
        partition_of(key_token(key), self.bits)
    }

    /// The partition of the key token `token`.
    pub fn partition_of_token(&self, token: Token) -> PartitionId {
        partition_of(token, self.bits)
    }

    /// The first and last token of partition `p`.
    pub fn span(&self, p: PartitionId) -> (Token, Token) {
        span(p, self.bits)
    }

    /// The nodes replicating partition `p`, its primary first.
    pub fn replicas(&self, p: PartitionId) -> Vec<&str> {
        self.replicas
            .get(p as usize)
            .map(|s| s.iter().map(|&i| &*self.ids[usize::from(i)]).collect())
            .unwrap_or_default()
    }

    /// The replicas of `key`'s partition (at most `n` of them).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&str> {
        let mut r = self.replicas(self.partition_of_key(key));
        r.truncate(n);
        r
    }

    /// Every member once for `key`'s partition: its replicas first, then
    /// the others by their rendezvous score for the partition — where a
    /// sloppy quorum looks for a node to hold a hint.
    pub fn walk(&self, key: &[u8]) -> Vec<&str> {
        self.walk_partition(self.partition_of_key(key))
    }

    /// [`Layout::walk`] of partition `p`.
    pub fn walk_partition(&self, p: PartitionId) -> Vec<&str> {
        let mut out = self.replicas(p);
        let mut rest: Vec<&str> = self.members().filter(|m| !out.contains(m)).collect();
        rest.sort_by_key(|m| std::cmp::Reverse(score(p, m)));
        out.extend(rest);
        out
    }

    /// The partitions `node` replicates, ascending.
    pub fn partitions_of(&self, node: &str) -> Vec<PartitionId> {
        let Some(i) = self.index_of(node) else {
            return Vec::new();
        };
        (0..self.partitions())
            .filter(|&p| self.replicas[p as usize].contains(&i))
            .collect()
    }

    /// The partitions both `a` and `b` replicate, ascending.
    pub fn shared(&self, a: &str, b: &str) -> Vec<PartitionId> {
        match (self.index_of(a), self.index_of(b)) {
            (Some(a), Some(b)) => (0..self.partitions())
                .filter(|&p| {
                    let s = &self.replicas[p as usize];
                    s.contains(&a) && s.contains(&b)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The fraction of all keys `node` stores (over all members the shares
    /// sum to the replicas per partition, N).
    pub fn share(&self, node: &str) -> f64 {
        self.partitions_of(node).len() as f64 / f64::from(self.partitions())
    }

    /// The fraction of partitions whose primary is `node` (over all members
    /// these sum to 1).
    pub fn primary_share(&self, node: &str) -> f64 {
        let Some(i) = self.index_of(node) else {
            return 0.0;
        };
        let primaries = self
            .replicas
            .iter()
            .filter(|s| s.first() == Some(&i))
            .count();
        primaries as f64 / f64::from(self.partitions())
    }

    fn index_of(&self, node: &str) -> Option<u16> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(node))
            .ok()
            .map(|i| i as u16)
    }
}

/// [`Layout::fingerprint`]: xxHash64 of a length-prefixed encoding.
fn fingerprint(bits: u8, n: usize, members: &[Member], replicas: &[Vec<u16>]) -> u64 {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0x6c61_796f_7574);
    h.write_u8(bits);
    h.write_u64(n as u64);
    h.write_u64(members.len() as u64);
    for m in members {
        h.write_u64(m.id.len() as u64);
        h.write(m.id.as_bytes());
    }
    for set in replicas {
        h.write_u8(set.len() as u8);
        for &i in set {
            h.write_u16(i);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Layout {
        Layout::initial(["n1", "n2", "n3"].map(Member::new), 3, 8)
    }

    #[test]
    fn a_key_is_replicated_by_its_partitions_replicas() {
        let l = Layout::initial(["a", "b", "c", "d", "e"].map(Member::new), 3, 8);
        for k in 0..200u32 {
            let key = k.to_be_bytes();
            let p = l.partition_of_key(&key);
            let (first, last) = l.span(p);
            let t = key_token(&key);
            assert!(first <= t && t <= last);
            assert_eq!(l.preference_list(&key, 3), l.replicas(p));
            let walk = l.walk(&key);
            assert_eq!(walk.len(), 5);
            assert_eq!(&walk[..3], &l.replicas(p)[..]);
        }
    }

    #[test]
    fn shares_are_within_a_partition_of_fair_and_sum_to_n() {
        let l = Layout::initial(["a", "b", "c", "d", "e"].map(Member::new), 3, 8);
        let total: f64 = l.members().map(|m| l.share(m)).sum();
        assert!((total - 3.0).abs() < 1e-9, "{total}");
        for m in l.members() {
            assert!(
                (l.share(m) - 0.6).abs() <= 1.0 / 256.0,
                "{m}: {}",
                l.share(m)
            );
        }
        assert_eq!(
            three().shared("n1", "n2").len(),
            256,
            "N = members: all shared"
        );
    }

    #[test]
    fn a_change_makes_the_next_version_and_keeps_what_it_can() {
        let l = three();
        let next = l.next(["n1", "n2", "n3", "n4"].map(Member::new));
        assert_eq!((l.version(), next.version()), (1, 2));
        let kept: usize = (0..256)
            .map(|p| {
                let before = l.replicas(p);
                next.replicas(p)
                    .iter()
                    .filter(|x| before.contains(x))
                    .count()
            })
            .sum();
        assert_eq!(kept, 768 - 192);
        assert!(next.partitions_of("n4").len() == 192);
    }

    #[test]
    fn fingerprints_tell_placements_apart_not_versions() {
        let a = three();
        let b = Layout::initial(["n3", "n1", "n2"].map(Member::new), 3, 8);
        assert_eq!(a.fingerprint(), b.fingerprint(), "member order matters");
        let same = a.next(["n1", "n2", "n3"].map(Member::new));
        assert_eq!(same.version(), 2);
        assert_eq!(same.fingerprint(), a.fingerprint());
        for other in [
            Layout::initial(["n1", "n2", "n3"].map(Member::new), 3, 7),
            Layout::initial(["n1", "n2", "n3"].map(Member::new), 2, 8),
            Layout::initial(["n1", "n2", "n4"].map(Member::new), 3, 8),
            a.next(["n1", "n2", "n3", "n4"].map(Member::new)),
        ] {
            assert_ne!(other.fingerprint(), a.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn fewer_nodes_than_n_replicate_everything_everywhere() {
        let l = Layout::initial(["solo"].map(Member::new), 3, 4);
        assert_eq!(l.replicas(7), vec!["solo"]);
        assert_eq!(l.partitions_of("solo").len(), 16);
        assert!(l.partitions_of("nobody").is_empty());
    }
}
