//! The peer wire protocol: MessagePack frames over TCP. The only module that
//! names rmp-serde.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! MessagePack, encoded with named fields (maps, not arrays) so fields can be
//! added without breaking older readers. Frames longer than the configured
//! maximum are refused before their body is read.
//!
//! A connection starts with each side sending [`Frame::Hello`] (cluster name,
//! protocol version, node id); the dialer speaks first and the listener answers
//! with its own hello. A mismatch closes the connection and is logged. After
//! that the dialer sends [`Frame::Request`]s, each with a request id chosen by
//! the dialer, and the listener answers each with a [`Frame::Response`] of the
//! same id, in any order: one connection carries many requests at once.
//!
//! The decoder tells "incomplete" (wait for more bytes) from "corrupt" (close
//! the session): a clean end of stream between frames is not an error.

use crate::record::Record;
use crate::storage::WriteOutcome;
use crate::version::Version;
use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Version of this protocol; peers speaking another are refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default largest frame accepted or sent.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Request ids are chosen by the dialer and unique per connection.
pub type RequestId = u64;

/// Everything that travels on a peer connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame in each direction.
    Hello(Hello),
    /// Dialer → listener: do something and answer with the same id.
    Request { id: RequestId, body: Request },
    /// Listener → dialer: the answer to request `id`.
    Response { id: RequestId, body: Response },
}

/// Who is speaking; sent first on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub protocol: u32,
    pub node_id: String,
}

impl Hello {
    /// Why `other` may not talk to us, if it may not.
    pub fn mismatch(&self, other: &Hello) -> Option<String> {
        if other.protocol != self.protocol {
            return Some(format!(
                "peer {} speaks protocol {}, we speak {}",
                other.node_id, other.protocol, self.protocol
            ));
        }
        if other.cluster != self.cluster {
            return Some(format!(
                "peer {} belongs to cluster '{}', we are '{}'",
                other.node_id, other.cluster, self.cluster
            ));
        }
        None
    }
}

/// A record as it travels: `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub ts: u64,
    pub node: u64,
    pub value: Option<Bytes>,
}

impl From<Record> for WireRecord {
    fn from(r: Record) -> Self {
        WireRecord {
            ts: r.version.ts,
            node: r.version.node,
            value: r.value,
        }
    }
}

impl From<WireRecord> for Record {
    fn from(r: WireRecord) -> Self {
        Record {
            version: Version::new(r.ts, r.node),
            value: r.value,
        }
    }
}

/// What one node asks another. Client-path requests (`Read`, `Write`,
/// `StoreHint`) travel at foreground priority; the rest at background priority
/// (see `peer.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Send back the stored record of `key`.
    Read { key: Bytes },
    /// Store `record` under `key` durably if it is newer than the stored one.
    Write { key: Bytes, record: WireRecord },
    /// Keep this write durably for `target`, which is down (hinted handoff).
    StoreHint {
        target: String,
        key: Bytes,
        record: WireRecord,
    },
    /// Store many records (hint replay, anti-entropy push), each if newer.
    WriteBatch { items: Vec<(Bytes, WireRecord)> },
    /// Gossip: the sender's view of every member; answered with the receiver's.
    Gossip { members: Vec<MemberState> },
    /// Anti-entropy: hashes of Merkle tree nodes at `level` for `indices`, over
    /// the ranges the sender and receiver both replicate (ring `epoch`). The
    /// receiver builds its tree at the first request of a `session` and keeps it
    /// for the session's later requests.
    TreeHashes {
        session: u64,
        epoch: u64,
        depth: u8,
        level: u8,
        indices: Vec<u32>,
    },
    /// Anti-entropy: the receiver's records in the given tree leaves (shared
    /// ranges only), in token order, after the data key `after`, at most `limit`.
    LeafRecords {
        session: u64,
        leaves: Vec<u32>,
        after: Option<Bytes>,
        limit: u32,
    },
    /// Tombstone GC: delete the tombstone of `key` if it is still exactly this version.
    Purge { key: Bytes, ts: u64, node: u64 },
}

impl Request {
    /// Background requests yield to client operations on a connection.
    pub fn is_background(&self) -> bool {
        !matches!(
            self,
            Request::Read { .. }
                | Request::Write { .. }
                | Request::StoreHint { .. }
                | Request::Gossip { .. }
        )
    }
}

/// One member as gossip carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
    /// Increases on every restart of the member.
    pub generation: u64,
    /// Increases every gossip round while the member runs.
    pub heartbeat: u64,
    /// The member's wall clock (ms) when it sent this entry; fresh only in
    /// the sender's own entry. Lets nodes compare clocks.
    #[serde(default)]
    pub wall_ms: u64,
    /// Ring epoch the member routes by.
    pub ring_epoch: u64,
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Read {
        record: Option<WireRecord>,
    },
    /// `superseded`: the stored version that was newer (nothing changed).
    Write {
        applied: bool,
        replaced_live: bool,
        superseded: Option<(u64, u64)>,
    },
    /// The hint is stored durably; `dropped` older hints made room for it.
    Hinted {
        dropped: u64,
    },
    /// A batch was stored; how many records were newer than what was there.
    Batch {
        applied: u32,
    },
    Gossip {
        members: Vec<MemberState>,
    },
    /// Hashes for the requested tree nodes, in request order.
    Hashes {
        hashes: Vec<u64>,
    },
    /// Records of leaves; `next` is the resume point when more remain.
    Records {
        items: Vec<(Bytes, WireRecord)>,
        next: Option<Bytes>,
    },
    /// A purge or other action; `changed`: whether anything was removed.
    Done {
        changed: bool,
    },
    /// The replica could not do it; `code` is machine-readable.
    Error {
        code: String,
        message: String,
    },
}

impl From<WriteOutcome> for Response {
    fn from(o: WriteOutcome) -> Self {
        match o {
            WriteOutcome::Applied { replaced_live } => Response::Write {
                applied: true,
                replaced_live,
                superseded: None,
            },
            WriteOutcome::Superseded { current } => Response::Write {
                applied: false,
                replaced_live: false,
                superseded: Some((current.ts, current.node)),
            },
            WriteOutcome::Hinted { dropped } => Response::Hinted { dropped },
            WriteOutcome::Done { changed } => Response::Done { changed },
        }
    }
}

/// Why bytes from a peer could not be turned into frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
}

/// Length-prefixed MessagePack frames, bounded by a maximum size.
///
/// Stateless: a frame is consumed from the buffer only once it is complete,
/// so the length prefix is always at the front of the buffer.
#[derive(Debug)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max: max_frame }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

/// Encodes one frame body (without the length prefix).
pub fn encode_body(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(frame)?)
}

/// Decodes one frame body (without the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    Ok(rmp_serde::from_slice(body)?)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(CodecError::TooLarge { len, max: self.max });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len);
        Ok(Some(decode_body(&body)?))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = encode_body(&frame)?;
        if body.len() > self.max {
            return Err(CodecError::TooLarge {
                len: body.len(),
                max: self.max,
            });
        }
        dst.reserve(4 + body.len());
        dst.extend_from_slice(&(body.len() as u32).to_be_bytes());
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Frame {
        Frame::Hello(Hello {
            cluster: "c".into(),
            protocol: 1,
            node_id: "n1".into(),
        })
    }

    fn encode(f: Frame) -> Vec<u8> {
        let mut b = BytesMut::new();
        FrameCodec::default().encode(f, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn golden_hello_frame() {
        // fixmap{"Hello": fixmap{"cluster": "c", "protocol": 1, "node_id": "n1"}}
        let mut expected = vec![0, 0, 0, 39, 0x81, 0xa5];
        expected.extend_from_slice(b"Hello");
        expected.extend_from_slice(&[0x83, 0xa7]);
        expected.extend_from_slice(b"cluster");
        expected.extend_from_slice(&[0xa1, b'c', 0xa8]);
        expected.extend_from_slice(b"protocol");
        expected.extend_from_slice(&[0x01, 0xa7]);
        expected.extend_from_slice(b"node_id");
        expected.extend_from_slice(&[0xa2, b'n', b'1']);
        assert_eq!(encode(hello()), expected);
    }

    #[test]
    fn golden_read_request_frame() {
        let f = Frame::Request {
            id: 7,
            body: Request::Read {
                key: Bytes::from_static(b"k"),
            },
        };
        let bytes = encode(f);
        // {"Request": {"id": 7, "body": {"Read": {"key": bin8 "k"}}}}
        let mut expected = vec![0, 0, 0, 33, 0x81, 0xa7];
        expected.extend_from_slice(b"Request");
        expected.extend_from_slice(&[0x82, 0xa2, b'i', b'd', 0x07, 0xa4]);
        expected.extend_from_slice(b"body");
        expected.extend_from_slice(&[0x81, 0xa4]);
        expected.extend_from_slice(b"Read");
        expected.extend_from_slice(&[0x81, 0xa3, b'k', b'e', b'y', 0xc4, 0x01, b'k']);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let f = Frame::Request {
            id: 9,
            body: Request::Write {
                key: Bytes::from_static(b"key"),
                record: WireRecord {
                    ts: 1 << 40,
                    node: u64::MAX,
                    value: Some(Bytes::from(vec![0u8, 255, 7])),
                },
            },
        };
        let bytes = encode(f.clone());
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(f));
    }

    #[test]
    fn frames_split_at_every_byte_decode_in_sequence() {
        let frames: Vec<Frame> = (0..3)
            .map(|id| Frame::Request {
                id,
                body: Request::Read {
                    key: Bytes::from(vec![7u8; 40]),
                },
            })
            .collect();
        let stream: Vec<u8> = frames.iter().cloned().flat_map(encode).collect();
        for chunk in 1..stream.len() {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_the_body() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0u8, 0, 4, 1][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge {
                len: 1025,
                max: 1024
            })
        ));
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0xc1, 0xff, 0x00][..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Decode(_))));
    }

    #[test]
    fn hello_mismatch_names_the_reason() {
        let ours = Hello {
            cluster: "a".into(),
            protocol: 1,
            node_id: "n1".into(),
        };
        let mut theirs = ours.clone();
        assert_eq!(ours.mismatch(&theirs), None);
        theirs.cluster = "b".into();
        assert!(ours.mismatch(&theirs).unwrap().contains("cluster 'b'"));
        theirs.protocol = 2;
        assert!(ours.mismatch(&theirs).unwrap().contains("protocol 2"));
    }
}
