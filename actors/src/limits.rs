//! Size limits shared by the engine and the binary, and the arithmetic that
//! keeps every batch, page and response of the peer protocol below the frame
//! limit. Pure: no I/O.
//!
//! Everything that crosses a peer connection is sized *before* it is built:
//! [`record_wire_bytes`] is an upper bound of what one record adds to a
//! MessagePack frame, so a sender can fill a batch up to a byte budget and a
//! responder can stop a page before it would overflow. A record that alone
//! exceeds the budget still travels, in a frame of its own (the frame limit is
//! validated to be larger than the largest record).

/// Longest key in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Upper bound of the MessagePack framing one record adds beside its key and
/// value bytes (array and map headers, field names, version integers, the
/// bin headers of key and value).
pub const RECORD_OVERHEAD: usize = 96;
/// Room in a frame for everything but the records (frame header, request id,
/// variant names, cursors).
pub const FRAME_OVERHEAD: usize = 4096;
/// Byte budget of one background batch or page (hint replay, anti-entropy,
/// tombstone GC): big enough to amortize a round trip and a commit, small
/// enough that a client request never waits long behind one on a connection.
pub const BACKGROUND_BATCH_BYTES: usize = 1 << 20;
/// Most records in one background batch, whatever their size.
pub const BACKGROUND_BATCH_ITEMS: usize = 4096;

/// Upper bound of the bytes one record adds to a frame.
pub fn record_wire_bytes(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + RECORD_OVERHEAD
}

/// The byte budget of a batch or page on connections whose frames may be
/// `max_frame` bytes: [`BACKGROUND_BATCH_BYTES`], never more than what leaves
/// room for the frame's own overhead.
pub fn batch_budget(max_frame: usize) -> usize {
    BACKGROUND_BATCH_BYTES.min(max_frame.saturating_sub(FRAME_OVERHEAD).max(1))
}

/// Splits items of the given wire sizes into consecutive batches of at most
/// `budget` bytes and `max_items` items. An item larger than the budget goes
/// alone. Answers the length of each batch, in order.
pub fn split_by_bytes(sizes: &[usize], budget: usize, max_items: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    for &s in sizes {
        if n > 0 && (bytes + s > budget || n == max_items.max(1)) {
            out.push(n);
            n = 0;
            bytes = 0;
        }
        n += 1;
        bytes += s;
    }
    if n > 0 {
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_oversized_item_goes_alone() {
        assert_eq!(split_by_bytes(&[10, 500, 10, 10], 100, 10), vec![1, 1, 2]);
        assert_eq!(split_by_bytes(&[], 100, 10), Vec::<usize>::new());
        assert_eq!(split_by_bytes(&[1, 1, 1], 100, 2), vec![2, 1]);
    }

    #[test]
    fn budget_leaves_room_for_framing() {
        assert_eq!(batch_budget(16 << 20), BACKGROUND_BATCH_BYTES);
        assert_eq!(batch_budget(FRAME_OVERHEAD + 10), 10);
    }

    proptest! {
        #[test]
        fn batches_cover_everything_in_order_and_respect_the_budget(
            sizes in proptest::collection::vec(1usize..3000, 0..200),
            budget in 1usize..5000,
            max_items in 1usize..50,
        ) {
            let batches = split_by_bytes(&sizes, budget, max_items);
            prop_assert_eq!(batches.iter().sum::<usize>(), sizes.len());
            let mut at = 0;
            for n in batches {
                prop_assert!(n >= 1 && n <= max_items);
                let total: usize = sizes[at..at + n].iter().sum();
                prop_assert!(n == 1 || total <= budget, "{n} items of {total} bytes");
                at += n;
            }
        }
    }
}
