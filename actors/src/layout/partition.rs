//! Fixed partitions of the token space: Q = 2^bits equal, contiguous ranges
//! of the circle of 2^64 tokens. A key's partition is the top `bits` bits of
//! its token ([`crate::token::key_token`]), so partition `p` holds the tokens
//! `[p << (64 - bits), ((p + 1) << (64 - bits)) - 1]` — one contiguous range
//! of the store, which is ordered by token. Q is fixed when a cluster is
//! created (`cluster.partitions`); changing it moves every key.

use crate::token::Token;

/// The default number of partitions is 2^8.
pub const DEFAULT_PARTITION_BITS: u8 = 8;
/// At most 2^16 partitions (the layout holds N node indices per partition).
pub const MAX_PARTITION_BITS: u8 = 16;

/// A partition's number, `0..Q`.
pub type PartitionId = u32;

/// The partition of `token` among 2^`bits`.
pub fn partition_of(token: Token, bits: u8) -> PartitionId {
    if bits == 0 {
        0
    } else {
        (token >> (64 - u32::from(bits))) as PartitionId
    }
}

/// The first and last token of partition `p` among 2^`bits`.
pub fn span(p: PartitionId, bits: u8) -> (Token, Token) {
    if bits == 0 {
        return (0, Token::MAX);
    }
    let shift = 64 - u32::from(bits);
    let first = u64::from(p) << shift;
    (first, first | ((1u64 << shift) - 1))
}

/// The number of partitions, 2^`bits`.
pub fn count(bits: u8) -> u32 {
    1u32 << bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_the_circle_into_equal_contiguous_spans() {
        for bits in [0u8, 1, 8, 16] {
            let q = count(bits);
            let mut next = 0u64;
            for p in 0..q {
                let (first, last) = span(p, bits);
                assert_eq!(first, next, "bits {bits} partition {p}");
                assert_eq!(partition_of(first, bits), p);
                assert_eq!(partition_of(last, bits), p);
                next = last.wrapping_add(1);
            }
            assert_eq!(next, 0, "the last span ends at u64::MAX");
        }
    }

    #[test]
    fn a_token_falls_in_the_partition_of_its_top_bits() {
        assert_eq!(partition_of(0xff00_0000_0000_0000, 8), 255);
        assert_eq!(partition_of(0x0100_0000_0000_0000, 8), 1);
        assert_eq!(partition_of(0x00ff_ffff_ffff_ffff, 8), 0);
        assert_eq!(partition_of(u64::MAX, 0), 0);
    }
}
