//! Key tokens: where a key sits in the token space that partitions divide.
//!
//! A key's token is the xxHash64 of its bytes with the fixed seed
//! [`TOKEN_HASH_SEED`] ([`key_token`]); clients compute the same (see
//! [`HASH_FUNCTION`] and `GET /v1/ring`). The token space is every `u64`;
//! `layout::partition` cuts it into Q equal partitions by the
//! token's top bits, and storage orders records by token, so a partition is
//! one contiguous range of the store.
//!
//! The seed differs from the ones used for node tags and key-lock stripes,
//! so placement is not correlated with them. Changing the seed moves data
//! on every live cluster; the golden test pins it.

/// A position in the token space: every `u64` value.
pub type Token = u64;

/// Seed of the key hash (the bytes `"ringkv"` read as a number).
pub const TOKEN_HASH_SEED: u64 = 0x7269_6e67_6b76;

/// What a client computes to find a key's token: xxHash64 of the raw key
/// bytes with [`TOKEN_HASH_SEED`], read as an unsigned 64-bit integer.
pub const HASH_FUNCTION: &str = "xxhash64(seed=0x72696e676b76)";

/// The token of a key: xxHash64 of its bytes with [`TOKEN_HASH_SEED`].
pub fn key_token(key: &[u8]) -> Token {
    twox_hash::XxHash64::oneshot(TOKEN_HASH_SEED, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_function_names_the_seed() {
        assert_eq!(
            HASH_FUNCTION,
            format!("xxhash64(seed={TOKEN_HASH_SEED:#x})")
        );
        assert_eq!(TOKEN_HASH_SEED.to_be_bytes()[2..], *b"ringkv");
    }

    #[test]
    fn golden_tokens() {
        assert_eq!(key_token(b""), 0xd215_4309_ecf4_d9ff);
        assert_eq!(key_token(b"a"), 0x7708_e943_83d6_eecd);
        assert_eq!(key_token(b"user:42"), 0x49fd_4687_331f_2ace);
    }
}
