//! The stored record: a value or a tombstone, with its version.
//!
//! Encoding (all integers big-endian):
//!
//! ```text
//! byte 0      format (1)
//! byte 1      kind: 0 = value, 1 = tombstone
//! bytes 2..10 version timestamp
//! bytes 10..18 version node tag
//! bytes 18..  the value (kind 0 only)
//! ```
//!
//! The leading format byte lets the encoding evolve: a reader refuses formats it
//! does not know instead of misreading them.

use crate::version::Version;
use bytes::Bytes;

pub const FORMAT_V1: u8 = 1;
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
pub const HEADER_LEN: usize = 18;

/// A value (`Some`) or a tombstone (`None`) at a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub version: Version,
    pub value: Option<Bytes>,
}

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("tombstone carries {0} bytes of value")]
    TombstoneWithValue(usize),
}

impl Record {
    pub fn value(version: Version, value: Bytes) -> Self {
        Record {
            version,
            value: Some(value),
        }
    }

    pub fn tombstone(version: Version) -> Self {
        Record {
            version,
            value: None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER_LEN + self.value.as_ref().map_or(0, |v| v.len());
        let mut out = Vec::with_capacity(len);
        encode_header(&mut out, self.version, self.value.is_none());
        if let Some(v) = &self.value {
            out.extend_from_slice(v);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let (version, tombstone) = decode_header(bytes)?;
        let body = &bytes[HEADER_LEN..];
        if tombstone {
            if !body.is_empty() {
                return Err(DecodeError::TombstoneWithValue(body.len()));
            }
            return Ok(Record::tombstone(version));
        }
        Ok(Record::value(version, Bytes::copy_from_slice(body)))
    }
}

fn encode_header(out: &mut Vec<u8>, version: Version, tombstone: bool) {
    out.push(FORMAT_V1);
    out.push(if tombstone {
        KIND_TOMBSTONE
    } else {
        KIND_VALUE
    });
    out.extend_from_slice(&version.ts.to_be_bytes());
    out.extend_from_slice(&version.node.to_be_bytes());
}

/// Decodes only the header: the version and whether it is a tombstone.
pub fn decode_header(bytes: &[u8]) -> Result<(Version, bool), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(DecodeError::UnknownFormat(bytes[0]));
    }
    let tombstone = match bytes[1] {
        KIND_VALUE => false,
        KIND_TOMBSTONE => true,
        k => return Err(DecodeError::UnknownKind(k)),
    };
    let ts = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let node = u64::from_be_bytes(bytes[10..18].try_into().expect("8 bytes"));
    Ok((Version::new(ts, node), tombstone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_of_a_tombstone() {
        let r = Record::tombstone(Version::new(0x0102, 0x0a0b));
        assert_eq!(
            r.encode(),
            vec![1, 1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b]
        );
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(Record::decode(&[1, 0]), Err(DecodeError::Truncated(2)));
        let mut b = Record::tombstone(Version::default()).encode();
        b[0] = 9;
        assert_eq!(Record::decode(&b), Err(DecodeError::UnknownFormat(9)));
        b[0] = 1;
        b[1] = 7;
        assert_eq!(Record::decode(&b), Err(DecodeError::UnknownKind(7)));
        b[1] = 1;
        b.push(0);
        assert_eq!(Record::decode(&b), Err(DecodeError::TombstoneWithValue(1)));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(ts: u64, node: u64, value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))) {
            let r = Record { version: Version::new(ts, node), value: value.map(Bytes::from) };
            prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
    }
}
