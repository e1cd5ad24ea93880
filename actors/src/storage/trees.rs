//! One incremental Merkle tree per partition, kept up to date as writes
//! commit, so anti-entropy compares partitions without scanning to rebuild
//! a tree per exchange.
//!
//! Partition `p` of 2^`bits` holds the tokens whose top `bits` bits are `p`
//! ([`crate::layout::partition`]); its tree cuts that span into 2^`depth`
//! leaves by the *next* `depth` bits of the token — a [`MerkleTree`] over
//! the token shifted left by `bits`. A partition with no entry has no tree
//! (its root is 0, as an empty tree's is), so memory follows the partitions
//! a node holds data for: `2^(depth + 1)` words each (2 KiB at depth 7).
//!
//! The trees mirror the store exactly (XOR arithmetic, see
//! [`crate::merkle`]): the store records every change of a committed
//! transaction — `(key, version before, version after)` — and applies it
//! here after the commit, in commit order, once; a transaction that fails
//! changes nothing here. At open they are built by one scan of record
//! headers.

use crate::layout::partition::{count, partition_of, PartitionId};
use crate::merkle::MerkleTree;
use crate::token::{key_token, Token};
use crate::version::Version;

/// Leaves per partition tree: 2^7.
pub const DEFAULT_TREE_DEPTH: u8 = 7;

/// What one committed mutation changed for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: bytes::Bytes,
    pub before: Option<Version>,
    pub after: Option<Version>,
}

/// The trees of every partition.
#[derive(Debug)]
pub struct PartitionTrees {
    bits: u8,
    depth: u8,
    trees: Vec<Option<MerkleTree>>,
}

impl PartitionTrees {
    pub fn new(bits: u8, depth: u8) -> PartitionTrees {
        PartitionTrees {
            bits,
            depth,
            trees: (0..count(bits)).map(|_| None).collect(),
        }
    }

    pub fn partition_bits(&self) -> u8 {
        self.bits
    }

    pub fn depth(&self) -> u8 {
        self.depth
    }

    fn place(&self, token: Token) -> (usize, Token) {
        let p = partition_of(token, self.bits) as usize;
        let within = if self.bits == 0 {
            token
        } else {
            token << u32::from(self.bits)
        };
        (p, within)
    }

    /// Adds an entry (a record as stored).
    pub fn insert(&mut self, key: &[u8], version: Version) {
        let (p, t) = self.place(key_token(key));
        let depth = self.depth;
        let tree = self.trees[p].get_or_insert_with(|| MerkleTree::new(depth));
        let leaf = tree.leaf_of(t);
        tree.toggle_in_leaf(leaf, key, version);
    }

    /// Removes an entry that was inserted. XOR makes insert and remove the
    /// same toggle, so changes applied out of order still end right.
    pub fn remove(&mut self, key: &[u8], version: Version) {
        self.insert(key, version)
    }

    /// The leaf of `key` in its partition's tree: (partition, leaf).
    pub fn leaf_of_key(&self, key: &[u8]) -> (PartitionId, u32) {
        let (p, t) = self.place(key_token(key));
        let leaf = (u128::from(t) >> (64 - u32::from(self.depth))) as u32;
        (p as PartitionId, leaf)
    }

    /// Takes partition `p`'s tree out.
    pub fn take(&mut self, p: PartitionId) -> Option<MerkleTree> {
        self.trees.get_mut(p as usize).and_then(Option::take)
    }

    /// Puts `tree` in as partition `p`'s.
    pub fn replace(&mut self, p: PartitionId, tree: Option<MerkleTree>) {
        if let Some(slot) = self.trees.get_mut(p as usize) {
            *slot = tree;
        }
    }

    /// Applies one committed change.
    pub fn apply(&mut self, c: &Change) {
        if c.before == c.after {
            return;
        }
        if let Some(v) = c.before {
            self.remove(&c.key, v);
        }
        if let Some(v) = c.after {
            self.insert(&c.key, v);
        }
    }

    /// The root of partition `p` (0: empty).
    pub fn root(&self, p: PartitionId) -> u64 {
        self.tree(p).map_or(0, MerkleTree::root)
    }

    /// The tree of partition `p`, if it holds anything.
    pub fn tree(&self, p: PartitionId) -> Option<&MerkleTree> {
        self.trees.get(p as usize).and_then(Option::as_ref)
    }

    /// The tokens leaf `leaf` of partition `p`'s tree covers.
    pub fn leaf_span(&self, p: PartitionId, leaf: u32) -> (Token, Token) {
        let (first, last) = MerkleTree::new(self.depth).leaf_span(leaf);
        if self.bits == 0 {
            return (first, last);
        }
        let shift = u32::from(self.bits);
        let base = u64::from(p) << (64 - shift);
        (base | (first >> shift), base | (last >> shift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: u64) -> Version {
        Version::new(ts, 1)
    }

    #[test]
    fn a_change_moves_only_its_partitions_root_and_undoes_exactly() {
        let mut t = PartitionTrees::new(4, 5);
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for k in &keys {
            t.insert(k, v(1));
        }
        let roots: Vec<u64> = (0..16).map(|p| t.root(p)).collect();
        let k = &keys[7];
        let p = partition_of(key_token(k), 4);
        t.apply(&Change {
            key: bytes::Bytes::copy_from_slice(k),
            before: Some(v(1)),
            after: Some(v(2)),
        });
        for q in 0..16 {
            assert_eq!(t.root(q) != roots[q as usize], q == p, "partition {q}");
        }
        t.apply(&Change {
            key: bytes::Bytes::copy_from_slice(k),
            before: Some(v(2)),
            after: Some(v(1)),
        });
        assert_eq!((0..16).map(|p| t.root(p)).collect::<Vec<_>>(), roots);
    }

    #[test]
    fn it_equals_a_tree_rebuilt_from_the_same_entries() {
        let mut live = PartitionTrees::new(2, 4);
        let mut rebuilt = PartitionTrees::new(2, 4);
        for i in 0..100u32 {
            let k = i.to_be_bytes();
            live.insert(&k, v(1));
            if i % 3 == 0 {
                live.apply(&Change {
                    key: bytes::Bytes::copy_from_slice(&k),
                    before: Some(v(1)),
                    after: None,
                });
            } else {
                rebuilt.insert(&k, v(1));
            }
        }
        for p in 0..4 {
            assert_eq!(live.root(p), rebuilt.root(p), "partition {p}");
        }
    }

    #[test]
    fn leaves_cut_their_partition_and_hold_its_keys() {
        let t = PartitionTrees::new(8, 3);
        for p in [0u32, 1, 200, 255] {
            let mut next = u64::from(p) << 56;
            for leaf in 0..8 {
                let (first, last) = t.leaf_span(p, leaf);
                assert_eq!(first, next, "p {p} leaf {leaf}");
                next = last.wrapping_add(1);
            }
            let end = if p == 255 {
                0
            } else {
                (u64::from(p) + 1) << 56
            };
            assert_eq!(next, end);
        }
        let mut t = PartitionTrees::new(8, 3);
        let key = b"some key";
        t.insert(key, v(3));
        let p = partition_of(key_token(key), 8);
        assert!(t.tree(p).is_some());
        let (q, leaf) = t.leaf_of_key(key);
        assert_eq!(q, p);
        let (first, last) = t.leaf_span(p, leaf);
        assert!(first <= key_token(key) && key_token(key) <= last);
    }
}
