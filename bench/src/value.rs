//! Values the bench writes: a fixed header naming the bench run, the key and
//! the key's write sequence number, then filler derived from those three, so
//! a read-back value can be traced to exactly one write and checked byte for
//! byte.
//!
//! ```text
//! bytes 0..8    run id   (8 lowercase hex digits)
//! bytes 8..16   key index (8 hex digits)
//! bytes 16..24  sequence number of the write for this key (8 hex digits)
//! bytes 24..    filler: lowercase letters from a PRNG seeded by the three
//! ```

use crate::rng::{mix_seed, Rng};
use bytes::Bytes;

/// Length of the header; the smallest value the bench can write.
pub const HEADER_LEN: usize = 24;

/// Encodes the value of write `seq` to key `key` in run `run_id`.
pub fn encode(run_id: u32, key: u32, seq: u32, size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size.max(HEADER_LEN));
    out.extend_from_slice(format!("{run_id:08x}{key:08x}{seq:08x}").as_bytes());
    fill(&mut out, run_id, key, seq, size);
    Bytes::from(out)
}

fn fill(out: &mut Vec<u8>, run_id: u32, key: u32, seq: u32, size: usize) {
    let mut rng = Rng::seeded(mix_seed(&[run_id.into(), key.into(), seq.into()]));
    while out.len() < size {
        let word = rng.next_u64().to_le_bytes();
        let take = (size - out.len()).min(8);
        out.extend(word[..take].iter().map(|b| b'a' + b % 26));
    }
}

/// What a read-back value is, for key `key` of run `run_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Exactly the bytes write `seq` of this run sent for this key.
    Ours { seq: u32 },
    /// Anything else, with the reason.
    Foreign(String),
}

fn hex_u32(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

pub fn decode(run_id: u32, key: u32, size: usize, bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER_LEN {
        return Decoded::Foreign(format!(
            "{} bytes, shorter than a bench value header",
            bytes.len()
        ));
    }
    let (Some(run), Some(k), Some(seq)) = (
        hex_u32(&bytes[0..8]),
        hex_u32(&bytes[8..16]),
        hex_u32(&bytes[16..24]),
    ) else {
        return Decoded::Foreign("not a ringkv-bench value (bad header)".into());
    };
    if run != run_id {
        return Decoded::Foreign(format!(
            "written by another bench run ({run:08x}, this run is {run_id:08x})"
        ));
    }
    if k != key {
        return Decoded::Foreign(format!("holds the value of key index {k} (seq {seq})"));
    }
    let expected = encode(run_id, key, seq, size);
    if bytes != expected.as_ref() {
        return Decoded::Foreign(format!(
            "header says seq {seq} but the {} bytes differ from what that write sent ({} bytes)",
            bytes.len(),
            expected.len()
        ));
    }
    Decoded::Ours { seq }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let v = encode(0xabc, 42, 7, 1024);
        assert_eq!(v.len(), 1024);
        assert_eq!(&v[..24], b"00000abc0000002a00000007");
        assert!(v[24..].iter().all(|b| b.is_ascii_lowercase()));
        assert_eq!(decode(0xabc, 42, 1024, &v), Decoded::Ours { seq: 7 });
        // Different seqs give different filler.
        assert_ne!(encode(0xabc, 42, 8, 1024)[24..], v[24..]);
        // The smallest size is the header.
        assert_eq!(encode(1, 2, 3, 0).len(), HEADER_LEN);
    }

    #[test]
    fn foreign_values_are_named() {
        let v = encode(1, 2, 3, 100);
        let foreign = |d: Decoded| match d {
            Decoded::Foreign(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(foreign(decode(9, 2, 100, &v)).contains("another bench run"));
        assert!(foreign(decode(1, 5, 100, &v)).contains("key index 2"));
        assert!(foreign(decode(1, 2, 100, b"hello")).contains("shorter"));
        assert!(foreign(decode(1, 2, 100, &[b'z'; 100])).contains("bad header"));
        let mut corrupt = v.to_vec();
        corrupt[50] ^= 1;
        assert!(foreign(decode(1, 2, 100, &corrupt)).contains("differ"));
        assert!(foreign(decode(1, 2, 100, &v[..99])).contains("differ"));
    }
}
