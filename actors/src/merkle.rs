//! Merkle trees over the token space, for anti-entropy: two replicas find the
//! keys on which they disagree by exchanging a few hashes instead of every key.
//!
//! A [`MerkleTree`] of depth `d` cuts the ring of 2^64 tokens into `2^d` equal
//! leaves: leaf `i` covers the tokens `[i << (64 - d), ((i + 1) << (64 - d)) - 1]`
//! ([`MerkleTree::leaf_span`]), so the leaf of a token is its top `d` bits
//! ([`MerkleTree::leaf_of`]). What a tree summarises is a set of entries
//! `(key, version)`, each placed by its key token ([`crate::token::key_token`]).
//!
//! * A leaf's hash is the XOR of [`entry_hash`] over the entries in it, where
//!   `entry_hash` is the xxHash64, seed [`MERKLE_HASH_SEED`], of `key bytes ||
//!   version.ts big-endian || version.node big-endian` (unambiguous, since the
//!   two numbers have a fixed width). XOR does not depend on the order of
//!   entries, and it can be undone: [`MerkleTree::insert`] XORs an entry in,
//!   [`MerkleTree::remove`] XORs it out, and overwriting version v1 by v2 is
//!   both ([`MerkleTree::replace`]). So a tree can follow a store write by
//!   write, and it equals the tree rebuilt from scratch from the same entries.
//! * An internal node's hash is the xxHash64, same seed, of `left || right`
//!   (the children's hashes, big-endian), except that a node whose children
//!   are both 0 is 0. Hence an empty subtree, of any height, hashes to 0 and
//!   an empty tree's root is 0: the node hashes depend only on the entries, and
//!   the common case of empty regions (ranges a pair of replicas does not
//!   share, a new node) is recognisable and costs no hashing.
//! * Levels are numbered from the root: level 0 is the root, level `d` the
//!   leaves, and level `l` has `2^l` nodes, node `j` covering the tokens of
//!   leaves `[j << (d - l), (j + 1) << (d - l))`. The tree is kept up to date
//!   on every change (the leaf, then its `d` ancestors), so every read is
//!   current and takes `&self`; there is no "finish" step to forget.
//!
//! Comparing two trees descends from the root and only where hashes differ:
//! the requester sends the indices of nodes at a level, the other side answers
//! their hashes ([`MerkleTree::hashes_at`]), the requester keeps the differing
//! ones ([`differing_children`]) and asks for their children at the next level
//! ([`child_indices`]), down to the leaves. [`Descent`] carries that state for a
//! networked exchange; [`diff`] and [`diff_leaves`] run it between two local
//! trees. When `k` leaves differ, at most `1 + 2·d·k` hashes are compared (21
//! for one leaf at depth 10) instead of `2^d`. The replicas then exchange the
//! `(key, version)` entries of the differing leaves and each keeps the higher
//! version of every key (last-write-wins), which makes them equal.
//!
//! Costs, per tree of `n` entries at depth `d`:
//! * full rebuild ([`MerkleTree::from_entries`]): a scan of the entries, one
//!   `entry_hash` (over the key plus 16 bytes) and an XOR per entry, then
//!   `2^d - 1` internal hashes of 16 bytes once (1023 at depth 10); the scan of
//!   the store is what dominates;
//! * incremental maintenance: per write one `entry_hash` and `d` internal
//!   hashes ([`MerkleTree::insert`], [`MerkleTree::remove`]); an overwrite is
//!   two `entry_hash`es and `d` internal hashes;
//! * memory: `2^(d+1)` `u64`s (one slot unused, so that node `(level, j)`
//!   sits at `2^level + j`): 16 KiB at depth 10, 1 MiB at the maximum depth 16.
//!
//! Caveats:
//! * The tree is a set with XOR arithmetic: it has to mirror the store
//!   exactly. Inserting the same entry twice cancels it out, and removing an
//!   entry that was never inserted adds a phantom; the tree cannot detect
//!   either. Callers insert each stored `(key, version)` once and remove
//!   exactly the version that was stored.
//! * Versions are compared, not values: two replicas holding the same key at
//!   the same version are taken to hold the same value (a version names one
//!   write). Tombstones are entries like any other, so deletes propagate.
//! * A tree covers the whole circle. Two replicas compare the entries of the
//!   token ranges they both hold, so each builds its tree from exactly those
//!   ranges; everything else stays 0 on both sides and is skipped at once.
//!   Since leaves cut the whole circle, a tree over one narrow vnode range
//!   would fall into one or two leaves: build one tree per peer over all the
//!   ranges shared with it, which are spread around the ring.
//! * Leaves are coarse: with a million shared keys at depth 10, a differing
//!   leaf means exchanging about a thousand `(key, version)` pairs. Depth is
//!   the knob; both sides must use the same (trees of different depths do not
//!   compare, and [`diff`] panics on them).
//! * Hashes are 64-bit and not cryptographic: a difference is missed only on
//!   a collision (about 2^-64 per compared node), and replicas are trusted.
//! * Changing [`MERKLE_HASH_SEED`], the entry encoding or the node rule makes
//!   trees of different versions of ringkv look entirely different (costly,
//!   not wrong); the golden test pins them.

use crate::token::Token;
use crate::version::Version;
use std::borrow::Borrow;
use std::fmt;
use std::hash::Hasher;

/// Depth of a tree when the configuration does not say: 1024 leaves.
pub const DEFAULT_DEPTH: u8 = 10;

/// Deepest tree allowed: 65536 leaves, 1 MiB of hashes.
pub const MAX_DEPTH: u8 = 16;

/// Seed of every hash in a tree (the bytes `"merkle"` read as a number); not
/// the ring's, so that tree hashes are not correlated with placement.
pub const MERKLE_HASH_SEED: u64 = 0x6d65_726b_6c65;

/// Hash of an empty subtree (and of an empty leaf).
const EMPTY: u64 = 0;

/// Hash of one entry: xxHash64, seed [`MERKLE_HASH_SEED`], of `key ||
/// version.ts.to_be_bytes() || version.node.to_be_bytes()`.
pub fn entry_hash(key: &[u8], version: Version) -> u64 {
    let mut h = twox_hash::XxHash64::with_seed(MERKLE_HASH_SEED);
    h.write(key);
    h.write(&version.ts.to_be_bytes());
    h.write(&version.node.to_be_bytes());
    h.finish()
}

/// Hash of an internal node from its children's: 0 when both are 0.
fn combine(left: u64, right: u64) -> u64 {
    if left == EMPTY && right == EMPTY {
        return EMPTY;
    }
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&left.to_be_bytes());
    buf[8..].copy_from_slice(&right.to_be_bytes());
    twox_hash::XxHash64::oneshot(MERKLE_HASH_SEED, &buf)
}

/// A Merkle tree of fixed depth over the token circle; see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct MerkleTree {
    depth: u8,
    /// Node `(level, j)` at `(1 << level) + j`; slot 0 unused.
    nodes: Vec<u64>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree::new(DEFAULT_DEPTH)
    }
}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("depth", &self.depth)
            .field("root", &format_args!("{:016x}", self.root()))
            .finish_non_exhaustive()
    }
}

impl MerkleTree {
    /// An empty tree with `2^depth` leaves.
    ///
    /// # Panics
    /// If `depth` exceeds [`MAX_DEPTH`].
    pub fn new(depth: u8) -> Self {
        assert!(
            depth <= MAX_DEPTH,
            "Merkle tree depth {depth} exceeds the maximum {MAX_DEPTH}"
        );
        MerkleTree {
            depth,
            nodes: vec![EMPTY; 2usize << depth],
        }
    }

    /// The tree of `entries` (`(key, version)`, each key placed at its
    /// [`key_token`](crate::token::key_token)), built in one pass: the leaves
    /// first, then every internal node once.
    ///
    /// # Panics
    /// If `depth` exceeds [`MAX_DEPTH`].
    pub fn from_entries<K, V, I>(depth: u8, entries: I) -> Self
    where
        K: AsRef<[u8]>,
        V: Borrow<Version>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut tree = MerkleTree::new(depth);
        let first_leaf = tree.first_leaf();
        for (key, version) in entries {
            let key = key.as_ref();
            let leaf = tree.leaf_of(crate::token::key_token(key)) as usize;
            tree.nodes[first_leaf + leaf] ^= entry_hash(key, *version.borrow());
        }
        for id in (1..first_leaf).rev() {
            tree.nodes[id] = combine(tree.nodes[2 * id], tree.nodes[2 * id + 1]);
        }
        tree
    }

    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Number of leaves, `2^depth`.
    pub fn leaf_count(&self) -> u32 {
        1 << self.depth
    }

    /// The root hash; 0 for a tree without entries.
    pub fn root(&self) -> u64 {
        self.nodes[1]
    }

    /// Adds the entry `(key, version)` at `token`, which must be
    /// `key_token(key)` (checked in debug builds).
    pub fn insert(&mut self, token: Token, key: &[u8], version: Version) {
        self.toggle(token, key, entry_hash(key, version));
    }

    /// Removes the entry `(key, version)` at `token`; it must have been
    /// inserted (XOR cannot tell, see the caveats).
    pub fn remove(&mut self, token: Token, key: &[u8], version: Version) {
        self.toggle(token, key, entry_hash(key, version));
    }

    /// `key` at `token` went from version `old` to `new`: a remove and an
    /// insert, with one pass up the tree.
    pub fn replace(&mut self, token: Token, key: &[u8], old: Version, new: Version) {
        self.toggle(token, key, entry_hash(key, old) ^ entry_hash(key, new));
    }

    /// Adds or removes (XOR) the entry `(key, version)` in leaf `leaf`, for a
    /// tree whose leaves are placed by the caller (a partition's tree cuts
    /// its partition, not the circle: `storage/trees.rs`).
    pub fn toggle_in_leaf(&mut self, leaf: u32, key: &[u8], version: Version) {
        let mut id = self.first_leaf() + (leaf as usize % self.first_leaf());
        self.nodes[id] ^= entry_hash(key, version);
        while id > 1 {
            id /= 2;
            self.nodes[id] = combine(self.nodes[2 * id], self.nodes[2 * id + 1]);
        }
    }

    /// Empties the tree, keeping its depth.
    pub fn clear(&mut self) {
        self.nodes.fill(EMPTY);
    }

    /// The hash of node `index` at `level` (0 = root, `depth` = leaves), or
    /// `None` when there is no such node.
    pub fn hash_at(&self, level: u8, index: u32) -> Option<u64> {
        self.node_id(level, index).map(|id| self.nodes[id])
    }

    /// The hashes of `indices` at `level`, as the other side of a descent
    /// answers them; `None` if any index is out of range.
    pub fn hashes_at(&self, level: u8, indices: &[u32]) -> Option<Vec<u64>> {
        indices.iter().map(|&i| self.hash_at(level, i)).collect()
    }

    /// Indices at `level + 1` of the two children of node `index` at
    /// `level`; `None` for a leaf or a node that does not exist.
    pub fn children(&self, level: u8, index: u32) -> Option<[u32; 2]> {
        if level >= self.depth {
            return None;
        }
        self.node_id(level, index)?;
        Some([2 * index, 2 * index + 1])
    }

    /// The tokens leaf `index` covers: `(first, last)`, both inclusive.
    ///
    /// # Panics
    /// If `index >= leaf_count()`.
    pub fn leaf_span(&self, index: u32) -> (Token, Token) {
        assert!(index < self.leaf_count(), "leaf {index} out of range");
        let shift = 64 - u32::from(self.depth);
        let start = u128::from(index) << shift;
        let end = (u128::from(index + 1) << shift) - 1;
        (start as Token, end as Token)
    }

    /// The leaf whose span holds `token`: its top `depth` bits.
    pub fn leaf_of(&self, token: Token) -> u32 {
        (u128::from(token) >> (64 - u32::from(self.depth))) as u32
    }

    /// Index of the first leaf in `nodes`.
    fn first_leaf(&self) -> usize {
        1 << self.depth
    }

    fn node_id(&self, level: u8, index: u32) -> Option<usize> {
        (level <= self.depth && index < (1u32 << level)).then(|| (1usize << level) + index as usize)
    }

    /// XORs `delta` into the leaf of `token`, then recomputes its ancestors.
    fn toggle(&mut self, token: Token, key: &[u8], delta: u64) {
        debug_assert_eq!(
            token,
            crate::token::key_token(key),
            "token is not the key's token"
        );
        let mut id = self.first_leaf() + self.leaf_of(token) as usize;
        self.nodes[id] ^= delta;
        while id > 1 {
            id /= 2;
            self.nodes[id] = combine(self.nodes[2 * id], self.nodes[2 * id + 1]);
        }
    }
}

/// One step of a descent: given the remote hashes of the nodes `indices` at
/// `level` (in the same order), the indices whose local hash differs. The
/// caller then asks for their children at `level + 1` ([`child_indices`]);
/// at the leaf level these are the differing leaves.
///
/// A missing remote hash counts as differing (descending further is safe,
/// stopping early is not); indices that do not exist locally are dropped.
pub fn differing_children(
    local: &MerkleTree,
    level: u8,
    indices: &[u32],
    remote_hashes: &[u64],
) -> Vec<u32> {
    indices
        .iter()
        .enumerate()
        .filter_map(|(i, &index)| {
            let mine = local.hash_at(level, index)?;
            (remote_hashes.get(i) != Some(&mine)).then_some(index)
        })
        .collect()
}

/// The children, at the next level, of the nodes `indices`, in order.
pub fn child_indices(indices: &[u32]) -> Vec<u32> {
    indices.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect()
}

/// The requester's side of a root-first descent against a remote tree of the
/// same depth: ask for [`Descent::request`], feed the answer to
/// [`Descent::receive`], until [`Descent::leaves`] is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descent {
    depth: u8,
    level: u8,
    /// Nodes at `level` whose remote hashes are wanted next.
    pending: Vec<u32>,
    /// Differing leaves, once the descent is over.
    leaves: Option<Vec<u32>>,
    compared: usize,
}

impl Descent {
    /// A descent over trees of `depth`, starting at the root.
    pub fn new(depth: u8) -> Self {
        Descent {
            depth,
            level: 0,
            pending: vec![0],
            leaves: None,
            compared: 0,
        }
    }

    /// The level and node indices whose remote hashes are needed next, or
    /// `None` when the descent is over.
    pub fn request(&self) -> Option<(u8, &[u32])> {
        match self.leaves {
            Some(_) => None,
            None => Some((self.level, &self.pending)),
        }
    }

    /// The remote hashes of the nodes of the last [`Descent::request`].
    ///
    /// # Panics
    /// If `local` is not of the descent's depth.
    pub fn receive(&mut self, local: &MerkleTree, remote_hashes: &[u64]) {
        assert_eq!(local.depth(), self.depth, "trees of different depths");
        if self.leaves.is_some() {
            return;
        }
        self.compared += self.pending.len();
        let differing = differing_children(local, self.level, &self.pending, remote_hashes);
        if differing.is_empty() || self.level == self.depth {
            self.pending.clear();
            self.leaves = Some(if self.level == self.depth {
                differing
            } else {
                Vec::new()
            });
        } else {
            self.pending = child_indices(&differing);
            self.level += 1;
        }
    }

    /// The differing leaves, in ascending order, once the descent is over.
    pub fn leaves(&self) -> Option<&[u32]> {
        self.leaves.as_deref()
    }

    /// Node hashes compared so far.
    pub fn compared(&self) -> usize {
        self.compared
    }
}

/// What a local descent found: the differing leaves and its cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafDiff {
    /// Indices of the leaves whose hashes differ, ascending.
    pub leaves: Vec<u32>,
    /// Node hashes compared on the way.
    pub compared: usize,
}

/// Descends `a` against `b`, root first and only where they differ.
///
/// # Panics
/// If the trees do not have the same depth.
pub fn diff(a: &MerkleTree, b: &MerkleTree) -> LeafDiff {
    assert_eq!(a.depth(), b.depth(), "trees of different depths");
    let mut descent = Descent::new(a.depth());
    while let Some((level, indices)) = descent.request() {
        let remote = b
            .hashes_at(level, indices)
            .expect("a descent only asks for nodes that exist");
        descent.receive(a, &remote);
    }
    LeafDiff {
        compared: descent.compared(),
        leaves: descent.leaves.unwrap_or_default(),
    }
}

/// The leaves on which `a` and `b` differ, ascending; see [`diff`].
pub fn diff_leaves(a: &MerkleTree, b: &MerkleTree) -> Vec<u32> {
    diff(a, b).leaves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::key_token;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn v(ts: u64, node: u64) -> Version {
        Version::new(ts, node)
    }

    fn put(tree: &mut MerkleTree, key: &[u8], version: Version) {
        tree.insert(key_token(key), key, version);
    }

    fn entries(n: usize) -> Vec<(Vec<u8>, Version)> {
        (0..n)
            .map(|i| {
                (
                    format!("key-{i}").into_bytes(),
                    v(1_000 + i as u64, i as u64 % 3),
                )
            })
            .collect()
    }

    #[test]
    fn golden_hashes() {
        let version = v(0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let mut bytes = b"user:42".to_vec();
        bytes.extend_from_slice(&version.ts.to_be_bytes());
        bytes.extend_from_slice(&version.node.to_be_bytes());
        assert_eq!(
            entry_hash(b"user:42", version),
            twox_hash::XxHash64::oneshot(MERKLE_HASH_SEED, &bytes)
        );
        assert_eq!(MERKLE_HASH_SEED.to_be_bytes()[2..], *b"merkle");
        assert_eq!(combine(0, 0), 0);
        let mut pair = [0u8; 16];
        pair[7] = 1;
        assert_eq!(
            combine(1, 0),
            twox_hash::XxHash64::oneshot(MERKLE_HASH_SEED, &pair)
        );
        assert_ne!(combine(1, 0), combine(0, 1));
        // Pinned, so that trees of different builds compare.
        let tree = MerkleTree::from_entries(4, entries(10));
        assert_eq!(
            entry_hash(b"", v(0, 0)),
            twox_hash::XxHash64::oneshot(MERKLE_HASH_SEED, &[0; 16])
        );
        assert_eq!(tree.root(), 0xc9ed_9797_a6e7_38bc);
    }

    #[test]
    fn empty_trees_are_equal_and_zero() {
        for depth in 0..=MAX_DEPTH {
            let a = MerkleTree::new(depth);
            let b = MerkleTree::from_entries(depth, Vec::<(Vec<u8>, Version)>::new());
            assert_eq!(a, b);
            assert_eq!(a.root(), 0);
            assert_eq!(a.leaf_count(), 1 << depth);
            assert!(diff_leaves(&a, &b).is_empty());
            assert_eq!(diff(&a, &b).compared, 1);
        }
        assert_eq!(MerkleTree::default().depth(), DEFAULT_DEPTH);
        let mut t = MerkleTree::from_entries(DEFAULT_DEPTH, entries(5));
        assert_ne!(t.root(), 0);
        t.clear();
        assert_eq!(t, MerkleTree::default());
    }

    #[test]
    #[should_panic(expected = "exceeds the maximum")]
    fn depth_is_bounded() {
        MerkleTree::new(MAX_DEPTH + 1);
    }

    #[test]
    fn insert_then_remove_restores_every_node() {
        let base = MerkleTree::from_entries(8, entries(100));
        let mut t = base.clone();
        put(&mut t, b"extra", v(5, 1));
        assert_ne!(t.root(), base.root());
        t.remove(key_token(b"extra"), b"extra", v(5, 1));
        assert_eq!(t, base);
        // Removing everything leaves an empty tree.
        for (key, version) in entries(100) {
            t.remove(key_token(&key), &key, version);
        }
        assert_eq!(t, MerkleTree::new(8));
    }

    #[test]
    fn order_does_not_matter_and_increments_match_a_rebuild() {
        let all = entries(500);
        let rebuilt = MerkleTree::from_entries(DEFAULT_DEPTH, all.iter().map(|(k, v)| (k, v)));
        let mut forward = MerkleTree::default();
        for (key, version) in &all {
            put(&mut forward, key, *version);
        }
        let mut backward = MerkleTree::default();
        for (key, version) in all.iter().rev() {
            put(&mut backward, key, *version);
        }
        assert_eq!(forward, rebuilt);
        assert_eq!(backward, rebuilt);
        assert_ne!(rebuilt.root(), 0);
    }

    #[test]
    fn replace_is_remove_plus_insert() {
        let mut a = MerkleTree::from_entries(6, entries(50));
        let mut b = a.clone();
        let t = key_token(b"key-7");
        a.replace(t, b"key-7", v(1_007, 1), v(2_000, 2));
        b.remove(t, b"key-7", v(1_007, 1));
        b.insert(t, b"key-7", v(2_000, 2));
        assert_eq!(a, b);
        let mut changed = entries(50);
        changed[7].1 = v(2_000, 2);
        assert_eq!(a, MerkleTree::from_entries(6, changed));
        // A different version of the same key is a different entry.
        assert_ne!(a, MerkleTree::from_entries(6, entries(50)));
    }

    #[test]
    fn leaf_spans_tile_the_circle() {
        for depth in [0, 1, 6, DEFAULT_DEPTH, MAX_DEPTH] {
            let t = MerkleTree::new(depth);
            let mut next = 0u128;
            for i in 0..t.leaf_count() {
                let (start, end) = t.leaf_span(i);
                assert_eq!(u128::from(start), next);
                assert!(start <= end);
                assert_eq!(t.leaf_of(start), i);
                assert_eq!(t.leaf_of(end), i);
                assert_eq!(u128::from(end - start) + 1, 1u128 << (64 - depth));
                next = u128::from(end) + 1;
            }
            assert_eq!(next, 1u128 << 64);
        }
        let t = MerkleTree::default();
        assert_eq!(t.leaf_span(0), (0, (1 << 54) - 1));
        assert_eq!(t.leaf_span(1023), (1023 << 54, u64::MAX));
        assert_eq!(t.leaf_of(u64::MAX), 1023);
    }

    #[test]
    fn addressing_levels_and_children() {
        let t = MerkleTree::from_entries(3, entries(40));
        assert_eq!(t.hash_at(0, 0), Some(t.root()));
        assert_eq!(t.hash_at(0, 1), None);
        assert!(t.hash_at(3, 7).is_some());
        assert_eq!(t.hash_at(3, 8), None);
        assert_eq!(t.hash_at(4, 0), None);
        for level in 0..3u8 {
            for j in 0..(1u32 << level) {
                let [l, r] = t.children(level, j).unwrap();
                assert_eq!((l, r), (2 * j, 2 * j + 1));
                let (hl, hr) = (
                    t.hash_at(level + 1, l).unwrap(),
                    t.hash_at(level + 1, r).unwrap(),
                );
                assert_eq!(t.hash_at(level, j), Some(combine(hl, hr)));
            }
        }
        assert_eq!(t.children(3, 0), None);
        assert_eq!(t.children(1, 2), None);
        assert_eq!(t.hashes_at(2, &[0, 3]).unwrap().len(), 2);
        assert_eq!(t.hashes_at(2, &[0, 4]), None);
        assert_eq!(child_indices(&[0, 3]), [0, 1, 6, 7]);
    }

    #[test]
    fn one_differing_key_is_found_as_its_leaf_in_o_depth_comparisons() {
        let base = entries(5_000);
        let a = MerkleTree::from_entries(DEFAULT_DEPTH, base.iter().map(|(k, v)| (k, v)));
        for variant in 0..3 {
            let mut b = a.clone();
            let key = b"key-1234";
            let token = key_token(key);
            match variant {
                0 => b.replace(token, key, v(1_000 + 1234, 1234 % 3), v(9_999, 0)),
                1 => b.remove(token, key, v(1_000 + 1234, 1234 % 3)),
                _ => put(&mut b, b"only-on-b", v(1, 1)),
            }
            let d = diff(&a, &b);
            let want = if variant == 2 {
                a.leaf_of(key_token(b"only-on-b"))
            } else {
                a.leaf_of(token)
            };
            assert_eq!(d.leaves, [want]);
            assert_eq!(d.compared, 1 + 2 * usize::from(DEFAULT_DEPTH));
            assert_eq!(diff(&b, &a), d);
        }
        assert_eq!(diff(&a, &a.clone()).compared, 1);
    }

    #[test]
    fn descent_step_by_step_and_defensive_inputs() {
        let a = MerkleTree::from_entries(5, entries(300));
        let mut b = a.clone();
        put(&mut b, b"x", v(1, 1));
        put(&mut b, b"y", v(1, 1));
        let mut descent = Descent::new(5);
        let mut rounds = 0;
        while let Some((level, indices)) = descent.request() {
            assert_eq!(level, rounds);
            let indices = indices.to_vec();
            let remote = b.hashes_at(level, &indices).unwrap();
            descent.receive(&a, &remote);
            rounds += 1;
        }
        assert_eq!(rounds, 6);
        let mut want = vec![a.leaf_of(key_token(b"x")), a.leaf_of(key_token(b"y"))];
        want.sort();
        want.dedup();
        assert_eq!(descent.leaves().unwrap(), want);
        assert_eq!(diff_leaves(&a, &b), want);
        // Missing remote hashes count as differing; unknown indices are dropped.
        let root = a.root();
        assert_eq!(differing_children(&a, 0, &[0], &[]), [0]);
        assert_eq!(differing_children(&a, 0, &[0], &[root]), Vec::<u32>::new());
        assert_eq!(differing_children(&a, 0, &[0, 1], &[root ^ 1, 0]), [0]);
    }

    #[test]
    #[should_panic(expected = "different depths")]
    fn trees_of_different_depths_do_not_compare() {
        diff(&MerkleTree::new(4), &MerkleTree::new(5));
    }

    #[test]
    fn many_differences_cost_at_most_the_whole_tree() {
        let a = MerkleTree::from_entries(6, entries(2_000));
        let b = MerkleTree::from_entries(
            6,
            entries(2_000)
                .into_iter()
                .map(|(k, v)| (k, Version::new(v.ts + 1, v.node))),
        );
        let d = diff(&a, &b);
        assert_eq!(d.leaves.len(), 64);
        assert_eq!(d.compared, (2 << 6) - 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(Vec<u8>, Version),
        Drop(Vec<u8>),
    }

    /// Short keys over a small alphabet, so that sides often touch the same.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..5)
    }

    fn version() -> impl Strategy<Value = Version> {
        (0u64..40, 0u64..3).prop_map(|(ts, node)| Version::new(ts, node))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (key(), version()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => key().prop_map(Op::Drop),
        ]
    }

    /// Applies `op` to a replica and, incrementally, to its tree.
    fn apply(map: &mut BTreeMap<Vec<u8>, Version>, tree: &mut MerkleTree, op: &Op) {
        match op {
            Op::Put(key, version) => {
                let token = key_token(key);
                match map.insert(key.clone(), *version) {
                    Some(old) => tree.replace(token, key, old, *version),
                    None => tree.insert(token, key, *version),
                }
            }
            Op::Drop(key) => {
                if let Some(old) = map.remove(key) {
                    tree.remove(key_token(key), key, old);
                }
            }
        }
    }

    /// Last-write-wins: keeps `version` if it beats what `map` holds.
    fn merge(
        map: &mut BTreeMap<Vec<u8>, Version>,
        tree: &mut MerkleTree,
        key: &[u8],
        version: Version,
    ) {
        if map.get(key).is_none_or(|mine| *mine < version) {
            apply(map, tree, &Op::Put(key.to_vec(), version));
        }
    }

    fn in_leaves(
        map: &BTreeMap<Vec<u8>, Version>,
        tree: &MerkleTree,
        leaves: &BTreeSet<u32>,
    ) -> Vec<(Vec<u8>, Version)> {
        map.iter()
            .filter(|(k, _)| leaves.contains(&tree.leaf_of(key_token(k))))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_exchanging_differing_leaves_makes_replicas_equal(
            depth in 6u8..=10,
            base in prop::collection::btree_map(key(), version(), 0..200),
            ops_a in prop::collection::vec(op(), 0..60),
            ops_b in prop::collection::vec(op(), 0..60),
        ) {
            let (mut a, mut b) = (base.clone(), base.clone());
            let mut ta = MerkleTree::from_entries(depth, &base);
            let mut tb = ta.clone();
            for op in &ops_a {
                apply(&mut a, &mut ta, op);
            }
            for op in &ops_b {
                apply(&mut b, &mut tb, op);
            }
            // Incremental maintenance matches a rebuild.
            prop_assert_eq!(&ta, &MerkleTree::from_entries(depth, &a));
            prop_assert_eq!(&tb, &MerkleTree::from_entries(depth, &b));

            let mut union = a.clone();
            for (k, v) in &b {
                let e = union.entry(k.clone()).or_insert(*v);
                *e = (*e).max(*v);
            }

            let d = diff(&ta, &tb);
            let leaves: BTreeSet<u32> = d.leaves.iter().copied().collect();
            // Exactly the leaves whose entry sets differ.
            let truly: BTreeSet<u32> = a
                .iter()
                .chain(&b)
                .filter(|(k, v)| a.get(*k) != Some(*v) || b.get(*k) != Some(*v))
                .map(|(k, _)| ta.leaf_of(key_token(k)))
                .collect();
            prop_assert_eq!(&leaves, &truly);
            prop_assert!(d.compared < (2usize << depth));
            prop_assert!(d.compared <= 1 + 2 * usize::from(depth) * leaves.len());

            let (from_a, from_b) = (in_leaves(&a, &ta, &leaves), in_leaves(&b, &tb, &leaves));
            for (k, v) in from_b {
                merge(&mut a, &mut ta, &k, v);
            }
            for (k, v) in from_a {
                merge(&mut b, &mut tb, &k, v);
            }
            prop_assert_eq!(&a, &union);
            prop_assert_eq!(&b, &union);
            prop_assert_eq!(ta.root(), tb.root());
            prop_assert_eq!(&ta, &tb);
            prop_assert!(diff_leaves(&ta, &tb).is_empty());
        }
    }
}
