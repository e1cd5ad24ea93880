//! The peer wire protocol: MessagePack frames over TCP. The only module that
//! names rmp-serde.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! MessagePack, encoded with named fields (maps, not arrays) so fields can be
//! added without breaking older readers. A frame longer than the limit is
//! refused from its length prefix alone, before any of its body is read or any
//! memory is set aside for it; until the hello is accepted the limit is
//! [`HELLO_MAX_FRAME`].
//!
//! A connection starts with each side sending [`Frame::Hello`] (cluster name,
//! protocol version, node id); the dialer speaks first and the listener answers
//! with its own hello. A mismatch closes the connection and is logged. After
//! that the dialer sends [`Frame::Request`]s, each with a request id chosen by
//! the dialer, and the listener answers each with a [`Frame::Response`] of the
//! same id, in any order: one connection carries many requests at once.
//!
//! Every request and response is bounded in bytes by construction: batches and
//! pages are filled up to a byte budget ([`crate::limits`]), and a receiver
//! checks what a peer claims ([`Request::validate`]) before acting on it.
//!
//! The decoder tells "incomplete" (wait for more bytes) from "corrupt" (close
//! the session): a clean end of stream between frames is not an error.

use crate::limits::{record_wire_bytes, MAX_KEY_BYTES};
use crate::merkle::MAX_DEPTH;
use crate::record::Record;
use crate::storage::WriteOutcome;
use crate::version::Version;
use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

/// Version of this protocol; peers speaking another are refused.
pub const PROTOCOL_VERSION: u32 = 3;
/// Default largest frame accepted or sent.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Largest frame accepted before the peer's hello was accepted.
pub const HELLO_MAX_FRAME: usize = 4096;
/// Most items one batch request, page or key list may carry.
pub const MAX_ITEMS: usize = 16_384;
/// Most tree nodes one hash request may name.
pub const MAX_TREE_INDICES: usize = 1 << MAX_DEPTH;
/// Most members one gossip message may carry.
pub const MAX_MEMBERS: usize = 1024;
/// A layout record names no more members than a frame may.
const _: () = assert!(MAX_MEMBERS == crate::layout::record::MAX_RECORD_MEMBERS);
/// Longest node id or cluster name accepted from a peer.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest error message sent to a peer.
pub const MAX_ERROR_BYTES: usize = 512;

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
    /// The fingerprint of the layout the speaker places keys by
    /// (`Layout::fingerprint`); 0: not stated (tools, tests). Two nodes
    /// stating different ones place keys differently and may not talk.
    #[serde(default)]
    pub layout: u64,
}

impl Hello {
    /// Why `other` may not talk to us, if it may not.
    pub fn mismatch(&self, other: &Hello) -> Option<String> {
        if other.protocol != self.protocol {
            return Some(format!(
                "peer {} speaks protocol {}, we speak {}",
                printable(&other.node_id),
                other.protocol,
                self.protocol
            ));
        }
        if other.layout != 0 && self.layout != 0 && other.layout != self.layout {
            return Some(format!(
                "peer {} places keys by layout {:#x}, we by {:#x}: cluster.partitions, \
                 cluster.replication_factor and [[nodes]] must be the same on every node",
                printable(&other.node_id),
                other.layout,
                self.layout
            ));
        }
        if other.cluster != self.cluster {
            return Some(format!(
                "peer {} belongs to cluster '{}', we are '{}'",
                printable(&other.node_id),
                printable(&other.cluster),
                self.cluster
            ));
        }
        None
    }
}

/// A peer-supplied name, shortened and stripped of control characters so it
/// can be logged.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A record as it travels: `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub ts: u64,
    pub node: u64,
    pub value: Option<Bytes>,
}

impl WireRecord {
    pub fn version(&self) -> Version {
        Version::new(self.ts, self.node)
    }

    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }
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

/// A key and its version, as anti-entropy compares them.
pub type KeyVersion = (Bytes, u64, u64);

/// What one node asks another. Client-path requests (`Read`, `Write`,
/// `StoreHint`, `Gossip`) travel at foreground priority; the rest at
/// background priority (see `peer/client.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Send back the stored record of `key`.
    Read { key: Bytes },
    /// Store `record` under `key` durably if it is newer than the stored one.
    Write {
        key: Bytes,
        record: WireRecord,
        /// The newest layout version the coordinator routes by (0: not
        /// said). A replica whose oldest live version is newer refuses it:
        /// the coordinator routes by a history already dropped (a skipped
        /// or lagging node), and its write would miss the new owners.
        #[serde(default)]
        layout: u64,
    },
    /// Keep this write durably for `target`, which is down (hinted handoff).
    StoreHint {
        target: String,
        key: Bytes,
        record: WireRecord,
    },
    /// Store many records (hint replay, anti-entropy push, tombstone GC),
    /// each if newer, in one commit. The sender bounds the batch in bytes.
    WriteBatch { items: Vec<(Bytes, WireRecord)> },
    /// Gossip: the sender's view of every member; answered with the receiver's.
    Gossip { members: Vec<MemberState> },
    /// Anti-entropy: the roots of the receiver's live Merkle trees of
    /// `partitions` (each one both replicate), in order. `layout` is the
    /// sender's layout fingerprint and `depth` its partition trees' depth;
    /// the receiver refuses the request unless both match its own.
    PartitionRoots {
        layout: u64,
        depth: u8,
        partitions: Vec<u32>,
    },
    /// Anti-entropy: hashes of the nodes at `level` for `indices` of the
    /// receiver's live tree of `partition` (one both replicate).
    TreeHashes {
        partition: u32,
        layout: u64,
        depth: u8,
        level: u8,
        indices: Vec<u32>,
    },
    /// Anti-entropy: keys and versions of the receiver's records in the
    /// given leaves of `partition`'s tree, in storage order, after the data
    /// key `after`, at most `max_bytes` of them.
    LeafVersions {
        partition: u32,
        depth: u8,
        leaves: Vec<u32>,
        after: Option<Bytes>,
        max_bytes: u32,
    },
    /// The stored records of `keys`, in order, as many as fit in `max_bytes`
    /// (at least one).
    ReadMany { keys: Vec<Bytes>, max_bytes: u32 },
    /// Tombstone GC: delete each tombstone if it is still exactly this version.
    PurgeMany { items: Vec<KeyVersion> },
    /// Cluster metadata: one consensus message (`meta`), its body encoded
    /// by [`encode_value`] and checked by the receiver when it decodes it.
    Meta {
        rpc: MetaRpc,
        /// The sender's cluster fingerprint (members and first layout):
        /// nodes configured differently never take part in one consensus.
        cluster: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
}

/// The consensus messages between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A metadata change sent on to the leader.
    Propose,
}

/// Upper bound of a consensus answer (a vote, an append or snapshot
/// acknowledgement, a proposal's reply: a skip names up to one entry per
/// partition at risk).
pub const MAX_META_ANSWER_BYTES: usize = 2 << 20;

impl Request {
    /// Background requests yield to client operations on a connection.
    pub fn is_background(&self) -> bool {
        !matches!(
            self,
            Request::Read { .. }
                | Request::Write { .. }
                | Request::StoreHint { .. }
                | Request::Gossip { .. }
                | Request::Meta { .. }
        )
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::StoreHint { .. } => "store_hint",
            Request::WriteBatch { .. } => "write_batch",
            Request::Gossip { .. } => "gossip",
            Request::PartitionRoots { .. } => "partition_roots",
            Request::TreeHashes { .. } => "tree_hashes",
            Request::LeafVersions { .. } => "leaf_versions",
            Request::ReadMany { .. } => "read_many",
            Request::PurgeMany { .. } => "purge_many",
            Request::Meta { .. } => "meta",
        }
    }

    /// Checks what a peer claims before anything acts on it: key and value
    /// sizes, item counts, names. `max_value` is the configured value limit.
    pub fn validate(&self, max_value: usize) -> Result<(), String> {
        let key = |k: &Bytes| check_key(k);
        let record = |k: &Bytes, r: &WireRecord| {
            check_key(k)?;
            if r.value_len() > max_value {
                return Err(format!(
                    "a value of {} bytes exceeds the {max_value}-byte limit",
                    r.value_len()
                ));
            }
            Ok(())
        };
        let count = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(format!("{n} {what} exceed the limit of {max}"))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Read { key: k } => key(k),
            Request::Write {
                key: k, record: r, ..
            } => record(k, r),
            Request::StoreHint {
                target,
                key: k,
                record: r,
            } => {
                check_name("hint target", target)?;
                record(k, r)
            }
            Request::WriteBatch { items } => {
                count("items", items.len(), MAX_ITEMS)?;
                items.iter().try_for_each(|(k, r)| record(k, r))
            }
            Request::Gossip { members } => {
                count("members", members.len(), MAX_MEMBERS)?;
                members.iter().try_for_each(|m| {
                    check_name("member id", &m.id)?;
                    check_name("http address", &m.http_addr)?;
                    check_name("peer address", &m.peer_addr)
                })
            }
            Request::TreeHashes {
                depth,
                level,
                indices,
                ..
            } => {
                count("tree indices", indices.len(), MAX_TREE_INDICES)?;
                if *depth > MAX_DEPTH || level > depth {
                    return Err(format!("no level {level} in a tree of depth {depth}"));
                }
                Ok(())
            }
            Request::PartitionRoots { partitions, .. } => {
                count("partitions", partitions.len(), MAX_TREE_INDICES)
            }
            Request::LeafVersions { leaves, after, .. } => {
                count("leaves", leaves.len(), MAX_TREE_INDICES)?;
                if let Some(a) = after {
                    check_data_key(a)?;
                }
                Ok(())
            }
            Request::ReadMany { keys, .. } => {
                count("keys", keys.len(), MAX_ITEMS)?;
                keys.iter().try_for_each(key)
            }
            Request::PurgeMany { items } => {
                count("items", items.len(), MAX_ITEMS)?;
                items.iter().try_for_each(|(k, _, _)| key(k))
            }
            Request::Meta { .. } => Ok(()),
        }
    }

    /// Upper bound of the answer's size on the wire, known before the
    /// request is served: `max_value` is the value limit, `page` the byte
    /// budget of pages (answers that page clamp to it, but always carry at
    /// least one record). The server reserves this much before it serves a
    /// request, so the answers a session holds are bounded in bytes.
    pub fn max_response_bytes(&self, max_value: usize, page: usize) -> usize {
        const SMALL: usize = MAX_ERROR_BYTES + 256;
        let one_record = record_wire_bytes(MAX_KEY_BYTES, max_value);
        SMALL
            + match self {
                Request::Read { .. } => one_record,
                Request::Write { .. } | Request::StoreHint { .. } | Request::PurgeMany { .. } => 0,
                Request::WriteBatch { items } => items.len() * 5,
                Request::Gossip { .. } => gossip_answer_bytes(MAX_MEMBERS),
                Request::TreeHashes { indices, .. } => indices.len() * 9,
                Request::PartitionRoots { partitions, .. } => partitions.len() * 9,
                // Items as the responder counts them (data key + 24 bytes
                // each), at least one however small `max_bytes` is, then the
                // cursor to resume from (a data key of up to 8 + key bytes).
                Request::LeafVersions { max_bytes, .. } => {
                    (*max_bytes as usize)
                        .clamp(1, page)
                        .max(LEAF_VERSION_ITEM_BYTES)
                        + MAX_KEY_BYTES
                        + 64
                }
                Request::ReadMany { max_bytes, .. } => {
                    (*max_bytes as usize).clamp(1, page).max(one_record)
                }
                Request::Meta { .. } => MAX_META_ANSWER_BYTES,
            }
    }

    /// Upper bound of this request's size on the wire (without framing).
    pub fn wire_bytes(&self) -> usize {
        match self {
            Request::Read { key } => record_wire_bytes(key.len(), 0),
            Request::Write { key, record, .. } | Request::StoreHint { key, record, .. } => {
                record_wire_bytes(key.len(), record.value_len())
            }
            Request::WriteBatch { items } => items
                .iter()
                .map(|(k, r)| record_wire_bytes(k.len(), r.value_len()))
                .sum(),
            Request::Gossip { members } => members.len() * 256,
            Request::TreeHashes { indices, .. } => indices.len() * 5,
            Request::PartitionRoots { partitions, .. } => partitions.len() * 5,
            Request::LeafVersions { leaves, after, .. } => {
                leaves.len() * 5 + after.as_ref().map_or(0, |a| a.len())
            }
            Request::ReadMany { keys, .. } => keys.iter().map(|k| k.len() + 8).sum(),
            Request::PurgeMany { items } => items
                .iter()
                .map(|(k, _, _)| record_wire_bytes(k.len(), 0))
                .sum(),
            Request::Meta { payload, .. } => payload.len() + 16,
        }
    }
}

/// The most one `LeafVersions` item (a data key of 8 + [`MAX_KEY_BYTES`]
/// bytes, a version) counts for in the responder's page budget; its
/// encoding is smaller.
pub const LEAF_VERSION_ITEM_BYTES: usize = 8 + MAX_KEY_BYTES + 24;

/// Upper bound of a gossip answer carrying `members` entries.
pub fn gossip_answer_bytes(members: usize) -> usize {
    members * (3 * MAX_NAME_BYTES + 160)
}

/// A key's length within `1..=MAX_KEY_BYTES`.
pub fn check_key(k: &[u8]) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key of {} bytes is outside 1..={MAX_KEY_BYTES}",
            k.len()
        ));
    }
    Ok(())
}

/// A storage cursor: an 8-byte ring token followed by a key.
fn check_data_key(k: &[u8]) -> Result<(), String> {
    if k.len() < 8 || k.len() > 8 + MAX_KEY_BYTES {
        return Err(format!("a cursor of {} bytes is malformed", k.len()));
    }
    Ok(())
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_NAME_BYTES {
        return Err(format!("{what} of {} bytes is too long", s.len()));
    }
    Ok(())
}

/// One member as gossip carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
    /// Increases on every restart of the member: the member's wall clock (ms)
    /// when it started, or one more than its previous generation if that is
    /// larger.
    pub generation: u64,
    /// Increases by one every gossip round while the member runs.
    pub heartbeat: u64,
    /// The member's wall clock (ms) when it sent this entry; fresh only in
    /// the sender's own entry. Lets nodes compare clocks.
    #[serde(default)]
    pub wall_ms: u64,
    /// The fingerprint of the layout the member places keys by
    /// (`Layout::fingerprint`); the name is historical.
    pub ring_epoch: u64,
    /// The oldest version timestamp among the hints the member holds
    /// (`u64::MAX`: none; 0: unknown). Tombstone GC waits for every member's
    /// floor to pass a tombstone before purging it.
    #[serde(default)]
    pub hints_floor: u64,
    /// The highest version timestamp the member has issued or seen. Every
    /// node folds the members' into its own clock, so a write is versioned
    /// above every write any node stored a gossip round or more before it.
    #[serde(default)]
    pub hlc_ts: u64,
}

impl MemberState {
    /// `id` at `generation` and `heartbeat`, with no addresses, clock
    /// readings, layout or floors yet.
    pub fn new(id: &str, generation: u64, heartbeat: u64) -> MemberState {
        MemberState {
            id: id.to_string(),
            http_addr: String::new(),
            peer_addr: String::new(),
            generation,
            heartbeat,
            wall_ms: 0,
            ring_epoch: 0,
            hints_floor: 0,
            hlc_ts: 0,
        }
    }
}

/// Why a replica could not do what was asked; travels as a string so a
/// newer peer's codes read as [`ErrorCode::Other`] instead of failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// Its disk is full: nothing was stored.
    DiskFull,
    /// Its write queue or a session budget is full: nothing was done; retry later.
    Overloaded,
    /// The record's version is too far ahead of its clock: refused.
    ClockDrift,
    /// It was down longer than the tombstone grace period and serves no reads yet.
    NotServing,
    /// The request broke a limit or named something that does not exist.
    Invalid,
    /// Storage failed; a write may or may not have been applied.
    Storage,
    /// A bug or an impossible state on the replica.
    Internal,
    /// The coordinator routes by a layout version the replica dropped:
    /// refused, and no hint may stand in for it.
    StaleLayout,
    /// A code this build does not know.
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ClockDrift => "clock_drift",
            ErrorCode::NotServing => "not_serving",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Storage => "storage",
            ErrorCode::Internal => "internal",
            ErrorCode::StaleLayout => "stale_layout",
            ErrorCode::Other => "other",
        }
    }

    /// Whether the replica certainly did not apply the request.
    pub fn is_definite(self) -> bool {
        matches!(
            self,
            ErrorCode::DiskFull
                | ErrorCode::Overloaded
                | ErrorCode::ClockDrift
                | ErrorCode::NotServing
                | ErrorCode::Invalid
                | ErrorCode::StaleLayout
        )
    }
}

impl From<String> for ErrorCode {
    fn from(s: String) -> Self {
        match s.as_str() {
            "disk_full" => ErrorCode::DiskFull,
            "overloaded" => ErrorCode::Overloaded,
            "clock_drift" => ErrorCode::ClockDrift,
            "stale_layout" => ErrorCode::StaleLayout,
            "not_serving" => ErrorCode::NotServing,
            "invalid" => ErrorCode::Invalid,
            "storage" => ErrorCode::Storage,
            "internal" => ErrorCode::Internal,
            _ => ErrorCode::Other,
        }
    }
}

impl From<ErrorCode> for String {
    fn from(c: ErrorCode) -> Self {
        c.as_str().to_string()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Read {
        record: Option<WireRecord>,
    },
    /// `superseded`: the stored version that was newer (nothing changed);
    /// `superseded_tombstone`: that record is a delete.
    Write {
        applied: bool,
        replaced_live: bool,
        superseded: Option<(u64, u64)>,
        #[serde(default)]
        superseded_tombstone: bool,
    },
    /// The hint is stored durably; `dropped` older hints made room for it.
    Hinted {
        dropped: u64,
    },
    /// A batch was committed: `applied` records were newer than what was
    /// there; the items at the positions in `refused` were not stored (their
    /// version is too far ahead of the receiver's clock) and must be kept by
    /// the sender.
    Batch {
        applied: u32,
        #[serde(default)]
        refused: Vec<u32>,
    },
    Gossip {
        members: Vec<MemberState>,
    },
    /// Hashes for the requested tree nodes, in request order.
    Hashes {
        hashes: Vec<u64>,
    },
    /// Keys and versions in storage order; `next` is the resume point when
    /// more remain.
    Versions {
        items: Vec<KeyVersion>,
        next: Option<Bytes>,
    },
    /// Records of the first `items.len()` keys asked for, in order (`None`:
    /// no record).
    Records {
        items: Vec<(Bytes, Option<WireRecord>)>,
    },
    /// How many tombstones a purge removed.
    Purged {
        purged: u32,
    },
    /// The answer to a consensus message, encoded by [`encode_value`].
    Meta {
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The replica could not do it.
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    /// An error answer; the message is cut to [`MAX_ERROR_BYTES`].
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_BYTES {
            let mut at = MAX_ERROR_BYTES;
            while !message.is_char_boundary(at) {
                at -= 1;
            }
            message.truncate(at);
        }
        Response::Error { code, message }
    }
}

impl From<WriteOutcome> for Response {
    fn from(o: WriteOutcome) -> Self {
        match o {
            WriteOutcome::Applied { replaced_live } => Response::Write {
                applied: true,
                replaced_live,
                superseded: None,
                superseded_tombstone: false,
            },
            WriteOutcome::Superseded { current, tombstone } => Response::Write {
                applied: false,
                replaced_live: false,
                superseded: Some((current.ts, current.node)),
                superseded_tombstone: tombstone,
            },
            WriteOutcome::Hinted { dropped } => Response::Hinted { dropped },
            WriteOutcome::Done { changed } => Response::Purged {
                purged: u32::from(changed),
            },
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

/// A decoded frame and the size of its body on the wire.
#[derive(Debug, PartialEq)]
pub struct Received {
    pub frame: Frame,
    pub len: usize,
}

/// Length-prefixed MessagePack frames, bounded by a maximum size.
///
/// Stateless but for the limit: a frame is consumed from the buffer only once
/// it is complete, so the length prefix is always at the front of the buffer.
/// The decoder never reserves room for a claimed length: the buffer grows only
/// with bytes that actually arrived.
#[derive(Debug)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max: max_frame }
    }

    /// Changes the limit (raised once the peer's hello was accepted).
    pub fn set_max(&mut self, max_frame: usize) {
        self.max = max_frame;
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

/// How deeply a frame's MessagePack may nest. Our frames nest a handful of
/// levels; the decoder recurses once per level (also when it skips an
/// unknown field), so a hostile frame of a kilobyte nesting a thousand
/// arrays could overflow a thread's stack.
pub const MAX_NESTING: usize = 32;

/// Decodes one frame body (without the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_NESTING);
    Ok(Frame::deserialize(&mut de)?)
}

/// Encodes a value carried inside a frame as opaque bytes (the consensus
/// messages of `meta`).
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes a value [`encode_value`] made, nesting bounded as frames are.
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_NESTING);
    Ok(T::deserialize(&mut de)?)
}

/// Encodes a whole frame, length prefix included; refuses one whose body
/// exceeds `max` (nothing is sent, the connection is unaffected).
pub fn encode_frame(frame: &Frame, max: usize) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(&mut out, frame)?;
    let len = out.len() - 4;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(Bytes::from(out))
}

impl Decoder for FrameCodec {
    type Item = Received;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Received>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(CodecError::TooLarge { len, max: self.max });
        }
        if src.len() < 4 + len {
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len);
        Ok(Some(Received {
            frame: decode_body(&body)?,
            len,
        }))
    }
}

#[cfg(test)]
mod tests;
