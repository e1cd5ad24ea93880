//! A bounded table of per-peer sessions (the anti-entropy responder's Merkle
//! trees). Pure: time is passed in.
//!
//! Keys are chosen by peers, so the table is bounded three ways: an entry
//! expires [`SessionTable::ttl_ms`] after it was last *used* (not created, so
//! a long exchange keeps its tree), a peer holds at most `per_peer` entries,
//! and the table at most `total`; inserting beyond a bound evicts the least
//! recently used entry (of that peer first).

use std::collections::HashMap;

#[derive(Debug)]
struct Entry<T> {
    value: T,
    last_used_ms: u64,
}

/// Sessions keyed by `(peer, session id)`.
#[derive(Debug)]
pub struct SessionTable<T> {
    entries: HashMap<(String, u64), Entry<T>>,
    pub ttl_ms: u64,
    per_peer: usize,
    total: usize,
}

impl<T: Clone> SessionTable<T> {
    pub fn new(ttl_ms: u64, per_peer: usize, total: usize) -> Self {
        SessionTable {
            entries: HashMap::new(),
            ttl_ms,
            per_peer: per_peer.max(1),
            total: total.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The session's value, marking it used at `now_ms`.
    pub fn get(&mut self, peer: &str, id: u64, now_ms: u64) -> Option<T> {
        self.expire(now_ms);
        let e = self.entries.get_mut(&(peer.to_string(), id))?;
        e.last_used_ms = now_ms;
        Some(e.value.clone())
    }

    /// Adds a session, evicting expired and least recently used ones to stay
    /// within the bounds.
    pub fn insert(&mut self, peer: &str, id: u64, value: T, now_ms: u64) {
        self.expire(now_ms);
        let key = (peer.to_string(), id);
        if !self.entries.contains_key(&key) {
            while self.entries.keys().filter(|(p, _)| p == peer).count() >= self.per_peer {
                self.evict_lru(Some(peer));
            }
            while self.entries.len() >= self.total {
                self.evict_lru(None);
            }
        }
        self.entries.insert(
            key,
            Entry {
                value,
                last_used_ms: now_ms,
            },
        );
    }

    fn expire(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_used_ms) < ttl);
    }

    fn evict_lru(&mut self, peer: Option<&str>) {
        let victim = self
            .entries
            .iter()
            .filter(|((p, _), _)| peer.is_none_or(|want| p == want))
            .min_by_key(|(_, e)| e.last_used_ms)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (05 finding 7): sessions expired 120 s after creation, so a
    /// long exchange lost its tree midway.
    #[test]
    fn sessions_expire_after_last_use_not_creation() {
        let mut t = SessionTable::new(100, 4, 10);
        t.insert("a", 1, "tree", 0);
        assert_eq!(t.get("a", 1, 90), Some("tree"));
        assert_eq!(
            t.get("a", 1, 180),
            Some("tree"),
            "used at 90, so alive at 180"
        );
        assert_eq!(t.get("a", 1, 281), None);
    }

    #[test]
    fn bounds_evict_the_least_recently_used() {
        let mut t = SessionTable::new(1_000, 2, 3);
        t.insert("a", 1, 1, 0);
        t.insert("a", 2, 2, 1);
        t.get("a", 1, 2);
        t.insert("a", 3, 3, 3); // a holds 2 at most: a/2 (least recent) goes
        assert_eq!(t.get("a", 2, 4), None);
        assert_eq!(t.get("a", 1, 4), Some(1));
        t.insert("b", 1, 4, 5);
        t.insert("c", 1, 5, 6); // 3 in all: the least recent (a/3) goes
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("a", 3, 7), None);
        // A flood of ids from one peer never grows the table.
        for i in 0..1_000 {
            t.insert("evil", i, 0, 8);
        }
        assert_eq!(t.len(), 3);
    }
}
