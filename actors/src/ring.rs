//! The consistent-hash ring: which nodes hold which keys.
//!
//! Keys and nodes are placed on one circle of 2^64 [`Token`]s. A key's token is
//! the xxHash64 of its bytes with the fixed seed [`RING_HASH_SEED`]
//! ([`key_token`]; clients compute the same, see [`HASH_FUNCTION`]). Each
//! physical node owns `vnodes` tokens ("virtual nodes"): vnode `v` of node `id`
//! sits at the xxHash64, same seed, of the bytes `id as UTF-8 || 0x00 ||
//! v as u32 big-endian` ([`vnode_token`]). Because the vnode number has a fixed
//! width, that encoding is unambiguous even for ids that contain a NUL.
//!
//! A key belongs to the vnode at the first token clockwise from it, that is the
//! smallest vnode token `>=` the key's token, wrapping past `u64::MAX` to the
//! smallest token of all. The node of that vnode is the key's *primary*. The
//! key's *preference list* of length `n` continues the same clockwise walk and
//! takes the first `n` distinct physical nodes, skipping vnodes of nodes
//! already taken; with fewer than `n` members it is all of them. The same walk
//! carried on to the end ([`Ring::walk`]) gives every member once, which is
//! where a sloppy quorum looks for the next healthy node.
//!
//! Seen from the vnodes, the circle falls into *primary ranges*
//! `(previous token, token]`, one per vnode token ([`Ring::ranges`]). Every
//! key token in one range walks the same path, so the `n` nodes replicating a
//! whole range are the preference list of its end token
//! ([`Ring::replicas_of_range`]); that is what anti-entropy compares.
//!
//! Placement is a pure function of the member ids and `vnodes`: the order the
//! members are given in, the machine and the process do not matter (nothing
//! here uses std's randomly seeded hashers). Adding a node only inserts its
//! vnodes, so the only keys that change primary are the ones the new node now
//! takes, about `1/(members + 1)` of them, and a preference list changes only
//! by admitting the new node. Removing a node is the mirror image.
//!
//! The ring also carries an `epoch`: membership changes bump it
//! ([`Ring::adding`], [`Ring::removing`]) and gossip carries it, so that nodes
//! can tell which view of the membership is newer. The epoch does not affect
//! placement.
//!
//! Caveats:
//! * Two vnodes (of different nodes, or by chance of one node) may hash to the
//!   same token. Both are kept, ordered by node id: the lower id comes first
//!   clockwise and owns the key range up to that token, the other owns an empty
//!   range but still follows it immediately in every walk. This is
//!   deterministic, and with 2^64 tokens it practically never happens.
//! * Balance is statistical, not exact: with 256 vnodes per node the most
//!   loaded of five nodes holds about 8% more than the mean (measured in the
//!   tests), and the spread shrinks only as `1/sqrt(vnodes)`.
//! * Nodes are not weighted: every member owns the same number of vnodes.
//! * The ring knows members, not health: [`Ring::walk`] yields every member,
//!   and skipping the unreachable ones is the caller's business.
//! * The seed differs from the ones used for node tags and key-lock stripes,
//!   so that placement is not correlated with them.
//! * Changing [`RING_HASH_SEED`], the vnode encoding or the collision rule
//!   moves data on every live cluster; the golden tests pin them.

use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;

/// A position on the ring: the circle of all `u64` values.
pub type Token = u64;

/// Seed of every placement hash (the bytes `"ringkv"` read as a number).
pub const RING_HASH_SEED: u64 = 0x7269_6e67_6b76;

/// What a client computes to find a key's token: xxHash64 of the raw key
/// bytes with [`RING_HASH_SEED`], read as an unsigned 64-bit integer.
pub const HASH_FUNCTION: &str = "xxhash64(seed=0x72696e676b76)";

/// Virtual nodes per physical node when the configuration does not say.
pub const DEFAULT_VNODES: u32 = 256;

/// Number of tokens on the circle, as a `u128` so that it fits.
const RING_SIZE: u128 = 1 << 64;

/// Separates the node id from the vnode number in [`vnode_token`].
const VNODE_SEPARATOR: u8 = 0x00;

/// The token of a key: xxHash64 of its bytes with [`RING_HASH_SEED`].
pub fn key_token(key: &[u8]) -> Token {
    twox_hash::XxHash64::oneshot(RING_HASH_SEED, key)
}

/// The token of virtual node `vnode` of `node_id`: xxHash64, seed
/// [`RING_HASH_SEED`], of `node_id as UTF-8 || 0x00 || vnode.to_be_bytes()`.
pub fn vnode_token(node_id: &str, vnode: u32) -> Token {
    let mut buf = Vec::with_capacity(node_id.len() + 5);
    buf.extend_from_slice(node_id.as_bytes());
    buf.push(VNODE_SEPARATOR);
    buf.extend_from_slice(&vnode.to_be_bytes());
    twox_hash::XxHash64::oneshot(RING_HASH_SEED, &buf)
}

/// A consistent-hash ring over a set of members, each owning `vnodes` tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    epoch: u64,
    vnodes: u32,
    /// Member ids, sorted and without duplicates; a node's index is its rank.
    nodes: Vec<Arc<str>>,
    /// Every vnode as `(token, node index)`, sorted. Since indices follow the
    /// id order, this is also the order by `(token, node id)`.
    points: Vec<(Token, u32)>,
}

/// One primary range of the ring: the key tokens in `(start, end]`, going
/// clockwise and wrapping past `u64::MAX`. `start == end` only when the ring
/// has a single distinct token, and then the range is the whole circle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRange<'a> {
    /// Exclusive start: the previous vnode token.
    pub start: Token,
    /// Inclusive end: the vnode token that owns the range.
    pub end: Token,
    /// The node of that vnode, first in the preference list of every key here.
    pub primary: &'a str,
}

impl TokenRange<'_> {
    /// Whether the key token `token` falls in this range.
    pub fn contains(&self, token: Token) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => self.start < token && token <= self.end,
            std::cmp::Ordering::Greater => token > self.start || token <= self.end,
        }
    }

    /// Number of tokens in the range (up to 2^64, hence `u128`).
    pub fn len(&self) -> u128 {
        if self.start == self.end {
            RING_SIZE
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }

    /// Always false: a range holds at least its end token.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Ring {
    /// A ring at epoch 0 over `members` (duplicates ignored, order irrelevant),
    /// each owning `vnodes` tokens. A `vnodes` of 0 is taken as 1, so that
    /// every member owns something and walks reach every member.
    pub fn new<I>(members: I, vnodes: u32) -> Ring
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let vnodes = vnodes.max(1);
        let mut nodes: Vec<Arc<str>> = members.into_iter().map(|m| Arc::from(m.as_ref())).collect();
        nodes.sort_unstable();
        nodes.dedup();
        assert!(u32::try_from(nodes.len()).is_ok(), "too many ring members");
        let mut points = Vec::with_capacity(nodes.len() * vnodes as usize);
        for (idx, node) in nodes.iter().enumerate() {
            points.extend((0..vnodes).map(|v| (vnode_token(node, v), idx as u32)));
        }
        points.sort_unstable();
        Ring {
            epoch: 0,
            vnodes,
            nodes,
            points,
        }
    }

    /// The same ring at `epoch`.
    pub fn with_epoch(mut self, epoch: u64) -> Ring {
        self.epoch = epoch;
        self
    }

    /// A ring with `node` added (same vnodes), at the next epoch.
    pub fn adding(&self, node: &str) -> Ring {
        let members = self.members().chain(std::iter::once(node));
        Ring::new(members, self.vnodes).with_epoch(self.epoch + 1)
    }

    /// A ring with `node` removed (same vnodes), at the next epoch.
    pub fn removing(&self, node: &str) -> Ring {
        let members = self.members().filter(|m| *m != node);
        Ring::new(members, self.vnodes).with_epoch(self.epoch + 1)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// Member ids in ascending order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.nodes.iter().map(|n| &**n)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, node: &str) -> bool {
        self.index_of(node).is_some()
    }

    /// The tokens of `node`'s vnodes, ascending; empty if it is not a member.
    pub fn tokens_of(&self, node: &str) -> Vec<Token> {
        if !self.contains(node) {
            return Vec::new();
        }
        let mut tokens: Vec<Token> = (0..self.vnodes).map(|v| vnode_token(node, v)).collect();
        tokens.sort_unstable();
        tokens
    }

    /// The primary node of `key`; `None` only for an empty ring.
    pub fn primary(&self, key: &[u8]) -> Option<&str> {
        self.primary_for_token(key_token(key))
    }

    /// The primary node of the key token `token`.
    pub fn primary_for_token(&self, token: Token) -> Option<&str> {
        let i = self.first_point(token)?;
        Some(self.node_name(self.points[i].1))
    }

    /// The first `n` distinct nodes clockwise from `key` (all members if there
    /// are fewer than `n`).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&str> {
        self.preference_list_for_token(key_token(key), n)
    }

    /// The first `n` distinct nodes clockwise from the key token `token`.
    pub fn preference_list_for_token(&self, token: Token, n: usize) -> Vec<&str> {
        self.walk_from_token(token).take(n).collect()
    }

    /// Every member once, in clockwise order from `key`: the preference list
    /// of `key` first, then the nodes a sloppy quorum would fall back to.
    pub fn walk(&self, key: &[u8]) -> Walk<'_> {
        self.walk_from_token(key_token(key))
    }

    /// Every member once, in clockwise order from the key token `token`.
    pub fn walk_from_token(&self, token: Token) -> Walk<'_> {
        Walk {
            ring: self,
            next: self.first_point(token).unwrap_or(0),
            steps_left: self.points.len(),
            seen: vec![false; self.nodes.len()],
            remaining: self.nodes.len(),
        }
    }

    /// The primary ranges in clockwise order, starting with the one that wraps
    /// past `u64::MAX` (or holds 0). Ranges are per vnode and not merged, even
    /// when neighbours share a primary, because their later replicas differ.
    /// A vnode that lost a token collision owns an empty range and is left out.
    pub fn ranges(&self) -> Vec<TokenRange<'_>> {
        (0..self.points.len())
            .filter(|&i| self.range_len(i) > 0)
            .map(|i| self.range_at(i))
            .collect()
    }

    /// The primary range holding the key token `token`.
    pub fn range_for_token(&self, token: Token) -> Option<TokenRange<'_>> {
        self.first_point(token).map(|i| self.range_at(i))
    }

    /// The `n` nodes that replicate the whole range ending at `range_end` (a
    /// [`TokenRange::end`]): the preference list of that token.
    pub fn replicas_of_range(&self, range_end: Token, n: usize) -> Vec<&str> {
        self.preference_list_for_token(range_end, n)
    }

    /// The fraction of the token space for which `node` is the primary; 0 for
    /// a non-member. Over all members the shares sum to 1.
    pub fn owned_share(&self, node: &str) -> f64 {
        let Some(idx) = self.index_of(node) else {
            return 0.0;
        };
        let owned: u128 = (0..self.points.len())
            .filter(|&i| self.points[i].1 == idx)
            .map(|i| self.range_len(i))
            .sum();
        owned as f64 / RING_SIZE as f64
    }

    /// [`Ring::owned_share`] of every member, in member order.
    pub fn owned_shares(&self) -> Vec<(&str, f64)> {
        let mut owned = vec![0u128; self.nodes.len()];
        for (i, &(_, idx)) in self.points.iter().enumerate() {
            owned[idx as usize] += self.range_len(i);
        }
        self.members()
            .zip(owned)
            .map(|(node, o)| (node, o as f64 / RING_SIZE as f64))
            .collect()
    }

    fn index_of(&self, node: &str) -> Option<u32> {
        self.nodes
            .binary_search_by(|n| (**n).cmp(node))
            .ok()
            .map(|i| i as u32)
    }

    fn node_name(&self, idx: u32) -> &str {
        &self.nodes[idx as usize]
    }

    /// Index in `points` of the first vnode clockwise from `token`: the first
    /// token `>= token`, wrapping to 0.
    fn first_point(&self, token: Token) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&(t, _)| t < token);
        Some(if i == self.points.len() { 0 } else { i })
    }

    /// The start (exclusive) of the range that point `i` ends.
    fn range_start(&self, i: usize) -> Token {
        let prev = if i == 0 { self.points.len() - 1 } else { i - 1 };
        self.points[prev].0
    }

    /// Tokens in the range ending at point `i`; 0 for a collision loser.
    fn range_len(&self, i: usize) -> u128 {
        let end = self.points[i].0;
        let start = self.range_start(i);
        if i == 0 {
            // Wraps: everything after the last token plus everything up to the
            // first, which is the whole circle when all tokens are equal.
            RING_SIZE - u128::from(start - end)
        } else {
            u128::from(end - start)
        }
    }

    fn range_at(&self, i: usize) -> TokenRange<'_> {
        TokenRange {
            start: self.range_start(i),
            end: self.points[i].0,
            primary: self.node_name(self.points[i].1),
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("vnodes", &self.vnodes)
            .field("members", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Clockwise walk over the distinct members of a ring; see [`Ring::walk`].
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    ring: &'a Ring,
    /// Next index into `ring.points`.
    next: usize,
    /// Points not visited yet; the walk stops after one full turn.
    steps_left: usize,
    /// Members already yielded, by index.
    seen: Vec<bool>,
    /// Members not yielded yet; the walk stops early when it reaches 0.
    remaining: usize,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let ring: &'a Ring = self.ring;
        while self.remaining > 0 && self.steps_left > 0 {
            let idx = ring.points[self.next].1;
            self.next += 1;
            if self.next == ring.points.len() {
                self.next = 0;
            }
            self.steps_left -= 1;
            if !self.seen[idx as usize] {
                self.seen[idx as usize] = true;
                self.remaining -= 1;
                return Some(ring.node_name(idx));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every member owns at least one vnode, so a full turn meets them all.
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Walk<'_> {}

impl FusedIterator for Walk<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::fmt::Write as _;

    const FIVE: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

    fn five() -> Ring {
        Ring::new(FIVE, DEFAULT_VNODES)
    }

    /// Every vnode of `ring` as `(token, node)`, recomputed from the hashes
    /// and sorted, to check the ring against.
    fn vnodes_by_hand(ring: &Ring) -> Vec<(Token, &str)> {
        let mut vnodes: Vec<(Token, &str)> = ring
            .members()
            .flat_map(|m| (0..ring.vnodes()).map(move |v| (vnode_token(m, v), m)))
            .collect();
        vnodes.sort();
        vnodes
    }

    /// Brute force: the node of the smallest vnode token `>= token`, else of
    /// the smallest token, with ties broken by the smaller id.
    fn primary_by_scan<'a>(vnodes: &[(Token, &'a str)], token: Token) -> &'a str {
        let (_, node) = vnodes
            .iter()
            .find(|(t, _)| *t >= token)
            .unwrap_or(&vnodes[0]);
        node
    }

    #[test]
    fn hash_function_names_the_seed() {
        assert_eq!(HASH_FUNCTION, format!("xxhash64(seed={RING_HASH_SEED:#x})"));
        assert_eq!(RING_HASH_SEED.to_be_bytes()[2..], *b"ringkv");
    }

    #[test]
    fn golden_tokens() {
        assert_eq!(key_token(b""), 0xd215_4309_ecf4_d9ff);
        assert_eq!(key_token(b"a"), 0x7708_e943_83d6_eecd);
        assert_eq!(key_token(b"user:42"), 0x49fd_4687_331f_2ace);
        assert_eq!(vnode_token("n1", 0), 0x6d39_cc35_ea2e_6a25);
        assert_eq!(vnode_token("n1", 1), 0xe83e_9cd2_99d6_6e18);
    }

    #[test]
    fn golden_preference_lists() {
        let ring = five();
        let golden: [(&str, [&str; 3]); 5] = [
            ("", ["n4", "n3", "n5"]),
            ("a", ["n4", "n5", "n2"]),
            ("user:42", ["n2", "n5", "n1"]),
            ("cart/7", ["n3", "n2", "n5"]),
            ("zebra", ["n5", "n1", "n3"]),
        ];
        for (key, want) in golden {
            assert_eq!(ring.preference_list(key.as_bytes(), 3), want, "key {key:?}");
        }
    }

    #[test]
    fn vnode_token_uses_explicit_encoding() {
        let mut bytes = b"node-a".to_vec();
        bytes.push(0);
        bytes.extend_from_slice(&[0, 0, 1, 2]);
        assert_eq!(
            vnode_token("node-a", 0x0102),
            twox_hash::XxHash64::oneshot(RING_HASH_SEED, &bytes)
        );
    }

    #[test]
    fn preference_list_basics() {
        let ring = five();
        let vnodes = vnodes_by_hand(&ring);
        for i in 0..2_000 {
            let key = format!("k{i}");
            let list = ring.preference_list(key.as_bytes(), 3);
            assert_eq!(list.len(), 3);
            assert_eq!(list.iter().collect::<HashSet<_>>().len(), 3);
            assert_eq!(list[0], primary_by_scan(&vnodes, key_token(key.as_bytes())));
            assert_eq!(Some(list[0]), ring.primary(key.as_bytes()));
            let walk: Vec<&str> = ring.walk(key.as_bytes()).collect();
            assert_eq!(walk.len(), 5);
            assert_eq!(walk[..3], list[..]);
        }
    }

    #[test]
    fn short_rings_and_edges() {
        let ring = Ring::new(["b", "a"], 4);
        assert_eq!(ring.preference_list(b"x", 5).len(), 2);
        assert_eq!(ring.preference_list(b"x", 0), Vec::<&str>::new());
        assert_eq!(ring.members().collect::<Vec<_>>(), ["a", "b"]);

        let empty = Ring::new(Vec::<String>::new(), 8);
        assert!(empty.is_empty());
        assert_eq!(empty.preference_list(b"x", 3), Vec::<&str>::new());
        assert_eq!(empty.walk(b"x").count(), 0);
        assert!(empty.ranges().is_empty());
        assert_eq!(empty.primary(b"x"), None);

        let one = Ring::new(["solo"], 0);
        assert_eq!(one.vnodes(), 1);
        assert_eq!(one.preference_list(b"x", 3), ["solo"]);
        let ranges = one.ranges();
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].start, ranges[0].end);
        assert_eq!(ranges[0].len(), RING_SIZE);
        assert!(ranges[0].contains(0) && ranges[0].contains(u64::MAX));
        assert_eq!(one.owned_share("solo"), 1.0);
        assert_eq!(one.owned_share("other"), 0.0);
        assert!(one.tokens_of("other").is_empty());
    }

    #[test]
    fn duplicate_members_are_ignored() {
        let a = Ring::new(["n1", "n2", "n1"], 16);
        let b = Ring::new(["n2", "n1"], 16);
        assert_eq!(a, b);
    }

    #[test]
    fn token_collisions_order_by_node_id() {
        // Force a collision by hand: two nodes on one token.
        let mut ring = Ring::new(["a", "b"], 1);
        ring.points = vec![(100, 0), (100, 1)];
        assert_eq!(ring.preference_list_for_token(50, 2), ["a", "b"]);
        assert_eq!(ring.preference_list_for_token(100, 2), ["a", "b"]);
        assert_eq!(ring.preference_list_for_token(101, 2), ["a", "b"]);
        assert_eq!(ring.owned_share("a"), 1.0);
        assert_eq!(ring.owned_share("b"), 0.0);
        assert_eq!(ring.ranges().len(), 1);
        assert_eq!(ring.ranges()[0].primary, "a");
    }

    #[test]
    fn tokens_of_are_sorted_and_on_the_ring() {
        let ring = five();
        let tokens = ring.tokens_of("n3");
        assert_eq!(tokens.len(), DEFAULT_VNODES as usize);
        assert!(tokens.windows(2).all(|w| w[0] <= w[1]));
        for t in tokens {
            assert_eq!(ring.primary_for_token(t), Some("n3"));
        }
    }

    #[test]
    fn ranges_partition_the_circle() {
        let ring = five();
        let ranges = ring.ranges();
        assert_eq!(ranges.len(), 5 * DEFAULT_VNODES as usize);
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<u128>(), RING_SIZE);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(ranges.last().unwrap().end, ranges[0].start);
        for i in 0..500 {
            let key = format!("r{i}");
            let t = key_token(key.as_bytes());
            let r = ring.range_for_token(t).unwrap();
            assert!(r.contains(t));
            assert_eq!(ranges.iter().filter(|r| r.contains(t)).count(), 1);
            assert_eq!(Some(r.primary), ring.primary_for_token(t));
            assert_eq!(
                ring.replicas_of_range(r.end, 3),
                ring.preference_list_for_token(t, 3)
            );
        }
    }

    #[test]
    fn owned_shares_sum_to_one() {
        let ring = five();
        let shares = ring.owned_shares();
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "total {total}");
        for (node, share) in &shares {
            assert_eq!(*share, ring.owned_share(node));
        }
        let max = shares.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        let min = shares.iter().map(|s| s.1).fold(f64::MAX, f64::min);
        println!("owned_share: min {min:.4} max {max:.4} (mean 0.2000)");
        // Measured: min 0.1853, max 0.2164.
        assert!(max <= 0.2164 + 0.002 && min >= 0.1853 - 0.002);
    }

    #[test]
    fn balance_of_a_million_keys() {
        const KEYS: u32 = 1_000_000;
        let ring = five();
        let mut counts = [0u64; 5];
        let mut key = String::with_capacity(16);
        for i in 0..KEYS {
            key.clear();
            write!(key, "key-{i}").unwrap();
            let p = ring.first_point(key_token(key.as_bytes())).unwrap();
            counts[ring.points[p].1 as usize] += 1;
        }
        let mean = f64::from(KEYS) / 5.0;
        let max = *counts.iter().max().unwrap() as f64 / mean;
        println!("counts {counts:?}, max/mean {max:.4}");
        // Measured 1.0800; placement is deterministic, so this only moves when
        // placement does (and the golden tests fail too).
        assert!(max <= 1.09, "max/mean {max}");
    }

    #[test]
    fn adding_a_sixth_node_moves_a_sixth() {
        const KEYS: u32 = 100_000;
        let before = five();
        let after = before.adding("n6");
        assert_eq!(after.epoch(), before.epoch() + 1);
        let mut moved = 0u32;
        for i in 0..KEYS {
            let key = format!("key-{i}");
            let (old, new) = (
                before.primary(key.as_bytes()),
                after.primary(key.as_bytes()),
            );
            if old != new {
                assert_eq!(new, Some("n6"));
                moved += 1;
            }
        }
        let fraction = f64::from(moved) / f64::from(KEYS);
        println!("moved {fraction:.4} of primaries (ideal {:.4})", 1.0 / 6.0);
        assert!((0.12..=0.22).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn removing_a_node_keeps_other_primaries() {
        let before = five();
        let after = before.removing("n2");
        assert!(!after.contains("n2"));
        for i in 0..20_000 {
            let key = format!("key-{i}");
            let old = before.primary(key.as_bytes()).unwrap();
            if old != "n2" {
                assert_eq!(after.primary(key.as_bytes()), Some(old));
            }
        }
    }

    fn member_ids() -> impl Strategy<Value = Vec<String>> {
        prop::collection::hash_set("[a-z0-9:.-]{1,12}", 3..=8).prop_map(|s| s.into_iter().collect())
    }

    fn keys() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 2_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn prop_order_of_members_does_not_matter(members in member_ids(), keys in keys()) {
            let a = Ring::new(&members, 64);
            let mut reordered = members.clone();
            reordered.reverse();
            reordered.rotate_left(1);
            let b = Ring::new(&reordered, 64);
            prop_assert_eq!(&a, &b);
            for key in &keys {
                let list = a.preference_list(key, 3);
                prop_assert_eq!(&list, &b.preference_list(key, 3));
                prop_assert_eq!(list.len(), 3);
                prop_assert_eq!(list.iter().collect::<HashSet<_>>().len(), 3);
            }
        }

        #[test]
        fn prop_adding_a_node_only_admits_it(
            members in member_ids(),
            new in "[a-z0-9:.-]{1,12}",
            keys in keys(),
        ) {
            prop_assume!(!members.contains(&new));
            let before = Ring::new(&members, 64);
            let after = before.adding(&new);
            for key in &keys {
                let (old, now) = (before.preference_list(key, 3), after.preference_list(key, 3));
                if old[0] != now[0] {
                    prop_assert_eq!(now[0], new.as_str());
                }
                if old != now {
                    prop_assert!(now.contains(&new.as_str()));
                }
                // The walk without the new node is the old walk.
                let walk: Vec<&str> = after.walk(key).filter(|n| *n != new).collect();
                prop_assert_eq!(walk, before.walk(key).collect::<Vec<_>>());
            }
        }

        #[test]
        fn prop_removing_a_node_keeps_the_rest(members in member_ids(), pick in any::<prop::sample::Index>(), keys in keys()) {
            let gone = &members[pick.index(members.len())];
            let before = Ring::new(&members, 64);
            let after = before.removing(gone);
            for key in &keys {
                let old = before.primary(key).unwrap();
                if old != gone {
                    prop_assert_eq!(after.primary(key), Some(old));
                }
            }
        }

        #[test]
        fn prop_shares_sum_to_one(members in member_ids()) {
            let ring = Ring::new(&members, 64);
            let total: f64 = ring.owned_shares().iter().map(|(_, s)| s).sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
        }
    }
}
