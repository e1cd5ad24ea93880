//! Pages of `(data key, version)` over token spans, on both sides of an
//! exchange: reading ours from the store, checking a peer's, and the token
//! spans of a partition tree's leaves.

use super::SyncError;
use crate::layout::PartitionId;
use crate::limits::MAX_KEY_BYTES;
use crate::merkle::MAX_DEPTH;
use crate::record::Record;
use crate::storage::trees::PartitionTrees;
use crate::storage::{data_key_token, Store, StoreError};
use crate::token::{key_token, Token};
use crate::version::Version;
use crate::wire::KeyVersion;
use bytes::Bytes;

/// A page of data keys and versions, and where to resume when more remain.
pub(super) type VersionPage = (Vec<(Bytes, Version)>, Option<Bytes>);

/// Inclusive token spans of `leaves` of partition `p`'s tree, sorted and
/// without duplicates; `None` when a leaf does not exist. Linear in the
/// leaves, so a peer naming every leaf costs what it sent.
pub(super) fn leaf_spans(
    trees: &PartitionTrees,
    p: PartitionId,
    leaves: &[u32],
) -> Option<Vec<(Token, Token)>> {
    let depth = trees.depth();
    if depth == 0 || depth > MAX_DEPTH {
        return None;
    }
    let mut leaves = leaves.to_vec();
    leaves.sort_unstable();
    leaves.dedup();
    if leaves
        .last()
        .is_some_and(|&l| u64::from(l) >= 1u64 << depth)
    {
        return None;
    }
    Some(leaves.into_iter().map(|l| trees.leaf_span(p, l)).collect())
}

/// Whether `dk`'s token lies in one of the sorted `spans`.
pub(super) fn in_spans(dk: &[u8], spans: &[(Token, Token)]) -> bool {
    // A data key is its key's token, then the key: a peer's claimed token
    // must be the key's own, and the key within the limit.
    if dk.len() <= 8 || dk.len() > 8 + MAX_KEY_BYTES {
        return false;
    }
    let t = data_key_token(dk);
    if t != key_token(&dk[8..]) {
        return false;
    }
    let at = spans.partition_point(|&(_, e)| e < t);
    spans.get(at).is_some_and(|&(s, _)| s <= t)
}

/// Keys and versions in `spans` (sorted), after the data key `after`, at
/// most `max_items` and about `max_bytes`; the cursor to resume from when
/// more may remain.
pub(super) fn versions_in_spans(
    store: &Store,
    spans: &[(Token, Token)],
    after: Option<&[u8]>,
    max_items: usize,
    max_bytes: usize,
) -> Result<VersionPage, StoreError> {
    let after_token = after.map(data_key_token);
    let mut out: Vec<(Bytes, Version)> = Vec::new();
    let mut bytes = 0usize;
    for &(s, e) in spans {
        if after_token.is_some_and(|t| t > e) {
            continue;
        }
        let resume = after.filter(|_| after_token.is_some_and(|t| t >= s));
        let room_items = max_items - out.len();
        let room_bytes = max_bytes.saturating_sub(bytes).max(1);
        let page = store.scan_versions(s, e, resume, room_items, room_bytes)?;
        // The page may have stopped for its bounds rather than at the end of
        // the span: then resume after its last key (at worst one more call).
        // An empty page means the span is done.
        let page_bytes: usize = page.iter().map(|(k, _)| k.len() + 24).sum();
        let full = !page.is_empty()
            && (page.len() >= room_items || page_bytes + MAX_KEY_BYTES + 32 > room_bytes);
        for (k, v) in page {
            bytes += k.len() + 24;
            out.push((k, v));
        }
        if full {
            let next = out.last().map(|(k, _)| k.clone());
            return Ok((out, next));
        }
    }
    Ok((out, None))
}

/// Checks a peer's page of versions: keys strictly increasing from the last
/// key it sent, all inside the requested spans, and a resume point (if any)
/// at or after its last key. A page that breaks these could make the walk
/// repeat forever or pull keys nobody asked about.
pub(super) fn check_page(
    items: &[KeyVersion],
    next: Option<&Bytes>,
    last: Option<&Bytes>,
    spans: &[(Token, Token)],
) -> Result<(), SyncError> {
    let bad = |why: &str| {
        Err(SyncError::Protocol(format!(
            "a bad page of versions: {why}"
        )))
    };
    if next.is_some() && items.is_empty() {
        return bad("empty, yet it continues");
    }
    let mut prev = last;
    for (k, _, _) in items {
        if prev.is_some_and(|p| k <= p) {
            return bad("keys out of order");
        }
        if !in_spans(k, spans) {
            return bad("a key outside the requested leaves");
        }
        prev = Some(k);
    }
    if let (Some(n), Some(p)) = (next, prev) {
        if n < p {
            return bad("it resumes before its last key");
        }
    }
    Ok(())
}

/// The key inside a data key (`token || key`).
pub(super) fn user_key(dk: &Bytes) -> Bytes {
    if dk.len() > 8 {
        dk.slice(8..)
    } else {
        Bytes::new()
    }
}

pub(super) fn value_len(r: &Record) -> usize {
    r.value.as_ref().map_or(0, |v| v.len())
}

/// Whether a value of `len` bytes is within `max_value`; one over it
/// (stored before the limit was lowered, or sent by a lying peer) is left
/// out of what `path` moves, with a warning naming the sizes, never the
/// key or value.
pub(super) fn within_value_limit(len: usize, max_value: usize, path: &str) -> bool {
    let fits = len <= max_value;
    if !fits {
        log::warn!(
            "a record of {len} value bytes, over the {max_value}-byte limit, is left out of {path}"
        );
    }
    fits
}
