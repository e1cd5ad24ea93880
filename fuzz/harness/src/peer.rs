//! Fuzz targets for everything that parses peer input. Not used by the node:
//! the bodies live here so that the bounded pass of `cargo test`, the long
//! `--ignored` runs and the cargo-fuzz crate (`fuzz/`) run the same code.
//!
//! * [`frame_decoder`]: bytes → [`FrameCodec`] (as a `tokio_util` decoder),
//!   fed in arbitrary chunkings and under several frame limits, and
//!   [`decode_body`]. Checks: no panic; the frames and the error do not depend
//!   on how the bytes were chunked; a smaller limit yields a prefix of a larger
//!   one's frames; the decoder never grows its buffer; every decoded frame
//!   encodes and decodes back to itself; `validate` and the request helpers
//!   accept anything.
//! * [`PeerHarness`]: bytes → frames → for each `Frame::Request`,
//!   [`Request::validate`] and, when valid, the node's real dispatcher
//!   ([`Inbound`], over a real [`Store`] in a temporary directory, a real
//!   [`ReplicaActor`], a [`NodeCore`] with a 3-member ring, a [`GossipActor`]
//!   without peers and a [`RepairService`]), exactly as a peer session does,
//!   each dispatch bounded by [`DISPATCH_TIMEOUT`]. Checks: no panic, no hang,
//!   every answer fits in a frame, and **garbage never changes stored data**:
//!   after a request that failed validation or was answered
//!   [`Response::Error`], and after an input that dispatched nothing valid,
//!   every record, tombstone index entry, hint, hint tally and meta value is
//!   byte-for-byte what it was. Valid requests may change data, but only the
//!   keys they name, never to an older version, and a purge removes only the
//!   exact tombstone it names.
//! * [`RequestGen`]: a structure-aware generator of requests (every variant,
//!   hostile sizes, cursors, leaf indices, counts at and past the limits, NUL
//!   bytes in names, gossip entries of the sending member — the only ones a
//!   node accepts — and forged ones about others and ourselves, which it
//!   must refuse…) driven by any [`Entropy`]: a seeded [`XorShift`], or the
//!   fuzzer's bytes ([`ByteEntropy`]).
//!
//! The counting runners keep a world across inputs (state built by one
//! input — keys, repair sessions — is there for the next, and a run is
//! reproduced by its seed). The cargo-fuzz entry points ([`peer_request`],
//! [`peer_request_structured`]) run every input against a freshly seeded
//! world, so that an artifact libFuzzer keeps reproduces on its own.
//!
//! The per-input checks answer an [`InputReport`] /
//! [`DecodeReport`] with `findings`; the cargo-fuzz targets panic on a finding
//! so libFuzzer keeps the input, the counting runners count them.

use actix::Actor;
use bytes::{BufMut, Bytes, BytesMut};
use ringkv_actors::antientropy::{RepairConfig, RepairService};
use ringkv_actors::coordinator::{ClusterView, MemberInfo, NodeCore, Replication};
use ringkv_actors::gossip::failure::DetectorConfig;
use ringkv_actors::gossip::{GossipActor, GossipSetup, Liveness};
use ringkv_actors::inbound::Inbound;
use ringkv_actors::layout::{Layout, Member, DEFAULT_PARTITION_BITS};
use ringkv_actors::limits::{batch_budget, FRAME_OVERHEAD, MAX_KEY_BYTES};
use ringkv_actors::merkle::MAX_DEPTH;
use ringkv_actors::metrics::Metrics;
use ringkv_actors::peer::{Dispatch, Peers};
use ringkv_actors::record::Record;
use ringkv_actors::replica::{LocalReplica, ReplicaActor};
use ringkv_actors::storage::trees::DEFAULT_TREE_DEPTH as DEFAULT_DEPTH;
use ringkv_actors::storage::{data_key, Hint, Mutation, Store, WriteOp};
use ringkv_actors::version::{node_tag, pack, Clock, Hlc, SystemClock, Version};
use ringkv_actors::wire::{
    decode_body, encode_body, encode_frame, ErrorCode, Frame, FrameCodec, Hello, MemberState,
    Received, Request, Response, WireRecord, DEFAULT_MAX_FRAME, HELLO_MAX_FRAME, MAX_ITEMS,
    MAX_MEMBERS, MAX_NAME_BYTES, MAX_TREE_INDICES, PROTOCOL_VERSION,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio_util::codec::Decoder;

// ----------------------------------------------------------------------
// Entropy
// ----------------------------------------------------------------------

/// Where a generator's choices come from.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// A seeded xorshift64* generator: the same seed gives the same run.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Scramble (splitmix64) so that nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }
}

impl Entropy for XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Choices read from a fuzzer's input, a few bytes per choice; zeros once
/// the input is used up (so every generation ends).
#[derive(Clone, Debug)]
pub struct ByteEntropy<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> ByteEntropy<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        ByteEntropy { data, at: 0 }
    }

    fn take(&mut self, n: usize) -> u64 {
        let mut x = 0u64;
        for _ in 0..n {
            let b = self.data.get(self.at).copied().unwrap_or(0);
            self.at = (self.at + 1).min(self.data.len());
            x = (x << 8) | u64::from(b);
        }
        x
    }
}

impl Entropy for ByteEntropy<'_> {
    fn next_u64(&mut self) -> u64 {
        self.take(8)
    }

    fn below(&mut self, n: u64) -> u64 {
        let bytes = match n {
            0 => return 0,
            1..=0x100 => 1,
            0x101..=0x1_0000 => 2,
            0x1_0001..=0x1_0000_0000 => 4,
            _ => 8,
        };
        self.take(bytes) % n
    }

    fn fill(&mut self, out: &mut [u8]) {
        let n = out.len().min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        out[n..].fill(0);
        self.at += n;
    }
}

// ----------------------------------------------------------------------
// Panics (for the counting runners)
// ----------------------------------------------------------------------

/// Threads whose name starts with this are the fuzz runners' (and their
/// runtimes' blocking threads): only their panics are counted.
pub const THREAD_PREFIX: &str = "ringkv-fuzz";

static PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// Installs (once) a panic hook that counts panics on [`THREAD_PREFIX`]
/// threads, then calls the previous hook (which prints the message, or —
/// under libFuzzer — aborts).
pub fn install_panic_counter() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(THREAD_PREFIX));
            if ours {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Stack of the counting runners' threads: the 2 MiB of the node's peer
/// thread in optimized builds; more in debug builds, where finding F2 (a
/// deeply nested frame overflows 2 MiB) would otherwise abort the whole
/// test process (F2 has its own regression test).
pub const RUNNER_STACK: usize = if cfg!(debug_assertions) {
    32 << 20
} else {
    2 << 20
};

/// Panics counted so far on fuzz threads (see [`install_panic_counter`]).
pub fn panics_so_far() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

// ----------------------------------------------------------------------
// Counts of long libFuzzer runs
// ----------------------------------------------------------------------

/// A libFuzzer run prints one line every this many inputs.
pub const TALLY_EVERY: u64 = 100_000;

static TALLY: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Counts one input of a cargo-fuzz target (libFuzzer does not know what is
/// garbage): every [`TALLY_EVERY`] inputs, one line on stderr with the
/// inputs, the garbage inputs, and the requests accepted and of those that
/// changed stored data so far. An input with a finding never gets here: the
/// target panics first.
pub fn tally(target: &str, garbage: bool, accepted: u64, changed: u64) {
    let n = TALLY[0].fetch_add(1, Ordering::Relaxed) + 1;
    let g = TALLY[1].fetch_add(u64::from(garbage), Ordering::Relaxed) + u64::from(garbage);
    let a = TALLY[2].fetch_add(accepted, Ordering::Relaxed) + accepted;
    let c = TALLY[3].fetch_add(changed, Ordering::Relaxed) + changed;
    if n % TALLY_EVERY == 0 {
        eprintln!(
            "ringkv-fuzz {target}: {n} inputs, {g} garbage, {a} accepted requests ({c} changed \
             stored data), 0 findings"
        );
    }
}

// ----------------------------------------------------------------------
// Target 1: the frame decoder
// ----------------------------------------------------------------------

/// Frame limits every decoder input is decoded under: none, tiny, before the
/// hello, a mid-size one and the default after the hello.
pub const FRAME_LIMITS: [usize; 5] = [0, 17, HELLO_MAX_FRAME, 1 << 20, DEFAULT_MAX_FRAME];

/// What one decoder input did.
#[derive(Clone, Debug, Default)]
pub struct DecodeReport {
    /// Frames decoded (under the largest limit).
    pub frames: u64,
    /// Of those, requests, and requests that passed validation.
    pub requests: u64,
    pub valid_requests: u64,
    /// Whether the stream ended in a decode error (under the largest limit).
    pub error: bool,
    /// Requests whose encoding exceeds `wire_bytes()` + framing overhead
    /// (the estimate claims to be an upper bound; nothing relies on it yet).
    pub wire_estimate_exceeded: u64,
    /// Broken properties; empty when all is well.
    pub findings: Vec<String>,
}

impl DecodeReport {
    /// Panics (so that libFuzzer keeps the input) when something was found.
    pub fn assert_clean(&self) {
        assert!(self.findings.is_empty(), "findings: {:#?}", self.findings);
    }
}

/// How a stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte made a frame.
    Clean,
    /// An error: corrupt or oversized frame, or bytes left at the end.
    Error(String),
}

#[derive(Debug)]
struct Decoded {
    frames: Vec<Received>,
    end: End,
}

/// Chunk sizes in which a stream is fed.
struct Chunks {
    mode: u8,
    rng: XorShift,
    /// Smallest chunk: long streams are not fed byte by byte.
    min: usize,
}

impl Chunks {
    fn new(mode: u8, seed: u64, len: usize) -> Self {
        Chunks {
            mode,
            rng: XorShift::new(seed),
            min: (len >> 12).max(1),
        }
    }

    fn next(&mut self) -> usize {
        self.min.max(self.raw())
    }

    fn raw(&mut self) -> usize {
        match self.mode % 8 {
            0 => 1,
            1 => usize::MAX,
            2 => 1 + self.rng.below(4) as usize,
            3 | 4 => 1 + self.rng.below(32) as usize,
            5 => 1 + self.rng.below(512) as usize,
            6 => [1, 3, 4, 5, 7, 4096][self.rng.below(6) as usize],
            _ => 1 + self.rng.below(1 << 16) as usize,
        }
    }
}

/// Feeds `stream` to a decoder of `limit` in chunks, the way `FramedRead`
/// does: decode until it wants more, add a chunk, again; `decode_eof` at the
/// end. Stops at the first error.
fn decode_stream(
    stream: &[u8],
    limit: usize,
    chunks: &mut Chunks,
    findings: &mut Vec<String>,
) -> Decoded {
    let mut codec = FrameCodec::new(limit);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut frames = Vec::new();
    loop {
        loop {
            let (len_before, cap_before) = (buf.len(), buf.capacity());
            match codec.decode(&mut buf) {
                Ok(Some(r)) => {
                    if len_before - buf.len() != 4 + r.len {
                        findings.push(format!(
                            "decoder consumed {} bytes for a frame of {} (limit {limit})",
                            len_before - buf.len(),
                            r.len
                        ));
                    }
                    if r.len > limit {
                        findings.push(format!("a frame of {} passed limit {limit}", r.len));
                    }
                    frames.push(r);
                }
                Ok(None) => {
                    if buf.len() != len_before {
                        findings.push("decoder consumed bytes without a frame".into());
                    }
                    break;
                }
                Err(e) => {
                    return Decoded {
                        frames,
                        end: End::Error(e.to_string()),
                    }
                }
            }
            if buf.capacity() > cap_before {
                findings.push(format!(
                    "decoder grew its buffer from {cap_before} to {} (limit {limit})",
                    buf.capacity()
                ));
            }
        }
        if fed == stream.len() {
            break;
        }
        let n = chunks.next().clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
    let end = match codec.decode_eof(&mut buf) {
        Ok(None) => End::Clean,
        Ok(Some(_)) => {
            findings.push("decode_eof produced a frame decode did not".into());
            End::Clean
        }
        Err(e) => End::Error(e.to_string()),
    };
    Decoded { frames, end }
}

/// The frame decoder target. `data[0]` picks the chunking; the rest is the
/// byte stream.
pub fn frame_decoder(data: &[u8]) -> DecodeReport {
    let mut report = DecodeReport::default();
    let Some((&mode, stream)) = data.split_first() else {
        return report;
    };
    let mut shorter: Option<Vec<Received>> = None;
    for &limit in &FRAME_LIMITS {
        let mut findings = Vec::new();
        let whole = decode_stream(stream, limit, &mut Chunks::new(1, 0, 0), &mut findings);
        let seed = u64::from(mode) ^ ((stream.len() as u64) << 8);
        let mut chunks = Chunks::new(mode, seed, stream.len());
        let chunked = decode_stream(stream, limit, &mut chunks, &mut findings);
        if whole.frames != chunked.frames || whole.end != chunked.end {
            findings.push(format!(
                "chunking (mode {mode}) changed the result under limit {limit}: \
                 {} frames / {:?} whole, {} frames / {:?} chunked",
                whole.frames.len(),
                whole.end,
                chunked.frames.len(),
                chunked.end
            ));
        }
        if let Some(prev) = &shorter {
            if prev.len() > whole.frames.len() || whole.frames[..prev.len()] != prev[..] {
                findings.push(format!(
                    "raising the limit to {limit} lost frames decoded under a smaller one"
                ));
            }
        }
        report.findings.extend(findings);
        if limit == DEFAULT_MAX_FRAME {
            report.frames = whole.frames.len() as u64;
            report.error = matches!(whole.end, End::Error(_));
            for r in &whole.frames {
                check_frame(&r.frame, &mut report);
            }
        }
        shorter = Some(whole.frames);
    }
    // The body decoder alone, on the whole stream and without the prefix.
    for body in [stream, stream.get(4..).unwrap_or_default()] {
        if let Ok(frame) = decode_body(body) {
            check_frame(&frame, &mut report);
        }
    }
    report
}

/// What every decoded frame must allow: encoding back to itself, and the
/// request helpers on any content.
fn check_frame(frame: &Frame, report: &mut DecodeReport) {
    match encode_body(frame) {
        Ok(body) => match decode_body(&body) {
            Ok(again) if again == *frame => {}
            Ok(again) => report.findings.push(format!(
                "re-encoding changed a frame: {frame:?} → {again:?}"
            )),
            Err(e) => report
                .findings
                .push(format!("a re-encoded frame does not decode: {e}")),
        },
        Err(e) => report
            .findings
            .push(format!("a decoded frame does not encode: {e}")),
    }
    if let Frame::Request { body, .. } = frame {
        report.requests += 1;
        let _ = (body.kind(), body.is_background());
        let estimate = body.wire_bytes();
        if body.validate(MAX_VALUE).is_ok() {
            report.valid_requests += 1;
            let actual = encode_body(frame).map_or(0, |b| b.len());
            if actual > estimate.saturating_add(FRAME_OVERHEAD) {
                report.wire_estimate_exceeded += 1;
            }
        }
    }
}

// ----------------------------------------------------------------------
// Target 2: peer requests through the real dispatcher
// ----------------------------------------------------------------------

/// This node's id; the ring is `n1`, `n2`, `n3`.
pub const NODE: &str = "n1";
pub const MEMBERS: [&str; 3] = ["n1", "n2", "n3"];

/// The layout of [`MEMBERS`] (N = 3, the default Q), as the world's node
/// places keys.
fn layout() -> Layout {
    Layout::initial(MEMBERS.map(Member::new), 3, DEFAULT_PARTITION_BITS)
}

/// The fingerprint of [`layout`].
fn fingerprint() -> u64 {
    static F: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *F.get_or_init(|| layout().fingerprint())
}

/// The partition of `key`.
fn partition_of(key: &[u8]) -> u32 {
    ringkv_actors::layout::partition::partition_of(
        ringkv_actors::token::key_token(key),
        DEFAULT_PARTITION_BITS,
    )
}

/// The leaf of `key` in its partition's tree.
fn leaf_of(key: &[u8]) -> u32 {
    let t = ringkv_actors::token::key_token(key) << DEFAULT_PARTITION_BITS;
    (t >> (64 - u32::from(DEFAULT_DEPTH))) as u32
}
/// The member every session of the harness comes from (its hello).
pub const FROM: &str = "n2";
/// `storage.max_value_bytes` (default), what the server validates with.
pub const MAX_VALUE: usize = 1 << 20;
/// `cluster.max_frame_bytes` (default): the session's limit after the hello.
pub const MAX_FRAME: usize = DEFAULT_MAX_FRAME;
/// `cluster.max_clock_drift_ms` (default).
pub const MAX_DRIFT_MS: u64 = 5_000;
/// `repair.tombstone_grace_ms` (default).
pub const GRACE_MS: u64 = 10 * 24 * 3600 * 1000;
/// Longest a dispatch may take before it counts as a hang.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Seeded records: values and tombstones, and hints.
const SEED_VALUES: usize = 30;
const SEED_TOMBSTONES: usize = 10;
const SEED_HINTS: usize = 6;
/// A world whose store grew past these is replaced by a fresh one.
const RESET_RECORDS: usize = 200;
const RESET_HINTS: usize = 64;
const RESET_BYTES: usize = 256 << 10;

/// What the generator may aim at: what the harness seeded, and its clock.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Seeded records (values and tombstones), by key.
    pub records: Vec<(Bytes, Record)>,
    /// This node's restart generation (what its gossip entry says).
    pub generation: u64,
    /// Wall clock (ms) when the world was made.
    pub now_ms: u64,
}

impl Facts {
    /// Facts without a store (for generating bytes elsewhere).
    pub fn synthetic(now_ms: u64) -> Self {
        Facts {
            records: seed_records(now_ms),
            generation: now_ms,
            now_ms,
        }
    }
}

fn seed_records(now_ms: u64) -> Vec<(Bytes, Record)> {
    let mut out = Vec::new();
    for i in 0..SEED_VALUES {
        let key = Bytes::from(format!("key-{i:02}"));
        let ts = pack(now_ms - 3_600_000 + i as u64 * 1000, i as u64 % 3);
        let value = Bytes::from(vec![b'a' + (i % 26) as u8; 1 + i * 13]);
        out.push((key, Record::value(Version::new(ts, node_tag(NODE)), value)));
    }
    for i in 0..SEED_TOMBSTONES {
        let key = Bytes::from(format!("dead-{i:02}"));
        // Half older than the grace period (purgeable), half recent.
        let age = if i % 2 == 0 {
            GRACE_MS + 3_600_000
        } else {
            60_000
        };
        let ts = pack(now_ms - age + i as u64, 0);
        out.push((key, Record::tombstone(Version::new(ts, node_tag("n2")))));
    }
    out
}

/// Everything stored, for byte-for-byte comparison.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Snapshot {
    records: BTreeMap<Bytes, Record>,
    tombstone_index: Vec<Vec<u8>>,
    /// Hint id → (target, key, encoded record, stored at).
    hints: BTreeMap<Vec<u8>, (String, Bytes, Vec<u8>, u64)>,
    tallies: BTreeMap<String, (u64, u64)>,
    last_alive_ms: Option<u64>,
    clock_ceiling_ms: Option<u64>,
    len: u64,
}

impl Snapshot {
    fn take(store: &Store) -> Result<Snapshot, String> {
        let e = |e: ringkv_actors::storage::StoreError| format!("reading the store: {e}");
        let records = store
            .scan(0, u64::MAX, None, usize::MAX)
            .map_err(e)?
            .into_iter()
            .map(|(_, k, r)| (k, r))
            .collect();
        let tombstone_index = store
            .tombstones_before(u64::MAX, None, usize::MAX)
            .map_err(e)?
            .into_iter()
            .map(|(ik, _)| ik)
            .collect();
        let tallies: BTreeMap<String, (u64, u64)> = store
            .hint_tallies()
            .into_iter()
            .map(|(t, v)| (t, (v.count, v.bytes)))
            .collect();
        let mut targets: BTreeSet<String> = tallies.keys().cloned().collect();
        targets.extend(MEMBERS.iter().map(|m| m.to_string()));
        let mut hints = BTreeMap::new();
        for t in targets {
            let page = store
                .hints_for(&t, None, usize::MAX, usize::MAX)
                .map_err(e)?;
            for (id, h) in page.hints {
                hints.insert(id, (h.target, h.key, h.record.encode(), h.stored_ms));
            }
            for id in page.corrupt {
                hints.insert(id, (t.clone(), Bytes::new(), b"corrupt".to_vec(), 0));
            }
        }
        Ok(Snapshot {
            records,
            tombstone_index,
            hints,
            tallies,
            last_alive_ms: store.last_alive_ms().map_err(e)?,
            clock_ceiling_ms: store.clock_ceiling_ms().map_err(e)?,
            len: store.len().map_err(e)?,
        })
    }

    fn bytes(&self) -> usize {
        let records: usize = self
            .records
            .iter()
            .map(|(k, r)| k.len() + r.value.as_ref().map_or(0, |v| v.len()) + 18)
            .sum();
        let hints: usize = self.hints.values().map(|h| h.1.len() + h.2.len()).sum();
        records + hints
    }

    /// Storage invariants that hold after anything: the tombstone index
    /// lists exactly the stored tombstones; the record count matches.
    fn check(&self, findings: &mut Vec<String>) {
        let mut expected: Vec<Vec<u8>> = self
            .records
            .iter()
            .filter(|(_, r)| r.is_tombstone())
            .map(|(k, r)| {
                let mut ik = r.version.ts.to_be_bytes().to_vec();
                ik.extend_from_slice(&data_key(k));
                ik
            })
            .collect();
        expected.sort();
        if expected != self.tombstone_index {
            findings.push(format!(
                "the tombstone index ({} entries) does not match the stored tombstones ({})",
                self.tombstone_index.len(),
                expected.len()
            ));
        }
        if self.len != self.records.len() as u64 {
            findings.push(format!(
                "the store counts {} records but scans {}",
                self.len,
                self.records.len()
            ));
        }
    }
}

/// One node's worth of real engine parts, on its own actix system.
struct World {
    sys: actix::SystemRunner,
    inbound: Inbound,
    store: Store,
    facts: Facts,
    snapshot: Snapshot,
    dir: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static WORLDS: AtomicU64 = AtomicU64::new(0);

impl World {
    fn new() -> World {
        let dir = std::env::temp_dir().join(format!(
            "ringkv-fuzz-{}-{}",
            std::process::id(),
            WORLDS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("{THREAD_PREFIX}-blocking"))
                .build()
                .expect("a tokio runtime")
        });
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let now_ms = clock.now_ms();
        // Not durable: these stores live for seconds, and fsync would make
        // the fuzzer measure the disk.
        let store = Store::open(&dir, NODE, false).expect("open the fuzz store");
        let generation = store.bump_generation(now_ms).expect("generation");
        let records = seed_records(now_ms);
        let mut seed: Vec<Mutation> = records
            .iter()
            .map(|(k, r)| {
                Mutation::Put(WriteOp {
                    key: k.clone(),
                    record: r.clone(),
                })
            })
            .collect();
        for i in 0..SEED_HINTS {
            let (key, record) = records[i * 3].clone();
            seed.push(Mutation::Hint(Hint {
                target: MEMBERS[1 + i % 2].to_string(),
                key,
                record,
                stored_ms: now_ms - 1000,
            }));
        }
        store.apply(&seed).expect("seed the fuzz store");
        let facts = Facts {
            records,
            generation,
            now_ms,
        };
        let store2 = store.clone();
        let inbound = sys.block_on(async move {
            let metrics = Arc::new(Metrics::default());
            let writer = ReplicaActor::new(store2.clone(), metrics.clone()).start();
            let hlc = Arc::new(Hlc::new(node_tag(NODE), clock.clone(), MAX_DRIFT_MS));
            let local = LocalReplica {
                store: store2,
                writer,
                hlc: hlc.clone(),
                stats: metrics.clone(),
                repairing: Arc::new(AtomicBool::new(false)),
                repair_wanted: Arc::default(),
            };
            let members: Vec<MemberInfo> = MEMBERS
                .iter()
                .enumerate()
                .map(|(i, m)| MemberInfo {
                    id: m.to_string(),
                    http_addr: format!("127.0.0.1:{}", 7101 + i),
                    peer_addr: format!("127.0.0.1:{}", 7201 + i),
                })
                .collect();
            let view = ClusterView::stable(Arc::new(layout()), members, Peers::default());
            let liveness = Arc::new(Liveness::new(MEMBERS[1..].iter().map(|m| m.to_string())));
            let core = Arc::new(NodeCore::new(
                NODE.to_string(),
                local.clone(),
                Replication {
                    n: 3,
                    r: 2,
                    w: 2,
                    request_timeout: Duration::from_secs(2),
                    background_timeout: Duration::from_secs(30),
                    hinted_handoff: true,
                    sloppy_quorum: true,
                    read_repair_blocking_all: false,
                },
                liveness.clone(),
                view,
            ));
            let repair = RepairService::new(
                core,
                RepairConfig {
                    interval: Duration::from_secs(600),
                    bandwidth_bytes_per_sec: 16 << 20,
                    gc_grace_ms: GRACE_MS,
                    max_frame: MAX_FRAME,
                    max_value: MAX_FRAME / 2,
                    peer_budget: Duration::from_secs(60),
                },
            );
            let state = |id: &str, generation| member_state(id, generation, 0);
            let floor_store = local.store.clone();
            let gossip = GossipActor::new(GossipSetup {
                me: state(NODE, generation),
                others: MEMBERS[1..].iter().map(|m| state(m, 0)).collect(),
                detector: DetectorConfig::with_interval(200),
                peers: Peers::default(),
                liveness,
                on_up: Vec::new(),
                metrics,
                clock,
                hlc,
                interval: Duration::from_millis(200),
                // As the server: this node's hint floor, from its store.
                hints_floor: Arc::new(move || floor_store.hints_floor()),
            })
            .start();
            Inbound {
                local,
                gossip,
                repair,
                members: Arc::new(MEMBERS.iter().map(|m| m.to_string()).collect()),
                node_id: NODE.into(),
                // Consensus messages are fuzzed against a running
                // metadata service in `ringkv-actors` (`meta::tests`).
                meta: None,
            }
        });
        // Let the actors start now: an actor first polled while its runtime
        // is being dropped would start its timers without a reactor.
        sys.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
        let snapshot = Snapshot::take(&store).expect("snapshot of the seeded store");
        World {
            sys,
            inbound,
            store,
            facts,
            snapshot,
            dir,
        }
    }
}

/// A member's gossip entry with empty addresses.
pub fn member_state(id: &str, generation: u64, heartbeat: u64) -> MemberState {
    MemberState::new(id, generation, heartbeat)
}

/// What one input did to the dispatcher.
#[derive(Clone, Debug, Default)]
pub struct InputReport {
    /// Frames decoded, and of those requests.
    pub frames: u32,
    pub requests: u32,
    /// Requests that failed validation (answered `Invalid`, not dispatched).
    pub invalid: u32,
    /// Requests dispatched and answered `Response::Error`.
    pub error_answers: u32,
    /// Requests dispatched and answered otherwise.
    pub accepted: u32,
    /// Accepted requests after which stored data differed.
    pub changed: u32,
    /// Requests of a known, reported finding: not dispatched (see
    /// [`known_finding`]), or their known finding not reported again.
    pub quarantined: u32,
    /// Nothing in the input was accepted: it was garbage as a whole.
    pub garbage: bool,
    /// Garbage (a request, or the input as a whole) after which stored
    /// data differed. Must stay 0.
    pub garbage_changes: u32,
    /// Dispatches that did not answer within [`DISPATCH_TIMEOUT`].
    pub hangs: u32,
    /// Requests refused as invalid since the store was last compared.
    unchecked: bool,
    /// Broken properties; empty when all is well.
    pub findings: Vec<String>,
}

impl InputReport {
    /// Panics (so that libFuzzer keeps the input) when something was found.
    pub fn assert_clean(&self) {
        assert!(self.findings.is_empty(), "findings: {:#?}", self.findings);
    }

    /// What a cargo-fuzz target does with each input's report: panics on a
    /// finding, else counts it in `target`'s progress line ([`tally`]).
    pub fn assert_clean_and_tally(&self, target: &str) {
        self.assert_clean();
        tally(
            target,
            self.garbage,
            u64::from(self.accepted),
            u64::from(self.changed),
        );
    }
}

/// Valid requests that trigger a finding already reported and not fixed
/// yet: the harness does not dispatch them while quarantine is on (the
/// default; `RINGKV_FUZZ_QUARANTINE=0` turns it off), so that runs go on to
/// find other things, and each gets a regression test below. None at the
/// moment. Fixed findings and their regression tests:
/// * F1, a gossip claim of our own heartbeat at `u64::MAX` overflowed our
///   heartbeat (membership.rs of 37ad4e6): claims about ourselves are now
///   refused (only a member speaks for itself);
///   `fuzz_regression_f1_gossip_claiming_our_heartbeat_at_u64_max`.
/// * F2, a deeply nested frame overflows a 2 MiB stack in debug builds
///   (open, debug builds only); `fuzz_regression_f2_nested_frame_fits_a_2_mib_stack`.
/// * F3, a `LeafVersions` answer over the bytes reserved for it;
///   `fuzz_regression_f3_leaf_versions_answer_fits_its_reservation` and
///   `wire::tests::leaf_versions_answers_fit_their_reservation_whatever_max_bytes`.
pub fn known_finding(request: &Request, facts: &Facts) -> Option<&'static str> {
    let _ = (request, facts);
    None
}

/// Runs peer inputs against one world after another.
pub struct PeerHarness {
    world: Option<World>,
    /// Skip requests of known findings ([`known_finding`]).
    pub quarantine: bool,
    /// Run every input against a freshly seeded world: a world an input
    /// dispatched anything to (which may have stored data, opened a repair
    /// session, advanced a member's gossip entry) is dropped after it. On
    /// for the cargo-fuzz targets, so an artifact reproduces on its own; off
    /// for the counting runners, which keep state across inputs.
    pub isolated: bool,
    /// Worlds made so far.
    pub worlds: u64,
}

impl Default for PeerHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerHarness {
    pub fn new() -> Self {
        PeerHarness {
            world: None,
            quarantine: std::env::var("RINGKV_FUZZ_QUARANTINE").map_or(true, |v| v != "0"),
            isolated: false,
            worlds: 0,
        }
    }

    fn world(&mut self) -> &mut World {
        if self.world.is_none() {
            self.worlds += 1;
        }
        self.world.get_or_insert_with(World::new)
    }

    /// What the current world seeded (for generators).
    pub fn facts(&mut self) -> Facts {
        self.world().facts.clone()
    }

    /// Lets the world's actors run for `d` (timers fire: gossip rounds).
    pub fn idle(&mut self, d: Duration) {
        self.world()
            .sys
            .block_on(async { tokio::time::sleep(d).await });
    }

    /// Drops the world (after a panic); the next input gets a fresh one.
    pub fn reset(&mut self) {
        self.world = None;
    }

    /// Bytes as a peer session reads them after the hello: frames until the
    /// stream ends or a frame is corrupt, oversized or not a request.
    pub fn run_bytes(&mut self, data: &[u8]) -> InputReport {
        let (quarantine, isolated) = (self.quarantine, self.isolated);
        let world = self.world();
        let mut report = InputReport::default();
        let mut codec = FrameCodec::new(MAX_FRAME);
        let mut buf = BytesMut::from(data);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Received {
                    frame: Frame::Request { id, body },
                    ..
                })) => {
                    report.frames += 1;
                    report.requests += 1;
                    handle_request(world, id, body, quarantine, &mut report);
                }
                // Anything else closes the session.
                Ok(Some(_)) => {
                    report.frames += 1;
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        report.garbage = report.accepted == 0;
        if report.garbage || report.unchecked {
            match Snapshot::take(&world.store) {
                Ok(now) if now == world.snapshot => {}
                Ok(now) => {
                    report.garbage_changes += 1;
                    report.findings.push(format!(
                        "garbage (an input, or requests refused as invalid) changed stored \
                         data: {}",
                        describe_change(&world.snapshot, &now)
                    ));
                    world.snapshot = now;
                }
                Err(e) => report.findings.push(e),
            }
        }
        let s = &world.snapshot;
        let dispatched = report.accepted + report.error_answers > 0;
        if (isolated && dispatched)
            || s.records.len() > RESET_RECORDS
            || s.hints.len() > RESET_HINTS
            || s.bytes() > RESET_BYTES
        {
            self.world = None;
        }
        report
    }

    /// Requests generated from `entropy`, framed and run as bytes.
    pub fn run_generated(&mut self, entropy: &mut impl Entropy) -> InputReport {
        let facts = self.facts();
        let bytes = RequestGen::new(entropy, &facts).frames();
        self.run_bytes(&bytes)
    }

    /// The structure-aware target: the fuzzer's bytes drive the generator.
    pub fn run_structured(&mut self, data: &[u8]) -> InputReport {
        self.run_generated(&mut ByteEntropy::new(data))
    }
}

/// Validates and dispatches one request as the peer server does, and checks
/// what it did to the store.
fn handle_request(
    world: &mut World,
    id: u64,
    body: Request,
    quarantine: bool,
    report: &mut InputReport,
) {
    let invalid = body.validate(MAX_VALUE).err();
    if invalid.is_none() && quarantine && known_finding(&body, &world.facts).is_some() {
        report.quarantined += 1;
        return;
    }
    let sent = body.clone();
    // The server reserves the answer's worst case before serving.
    let worst = body.max_response_bytes(MAX_VALUE, batch_budget(MAX_FRAME));
    let response = match &invalid {
        Some(why) => Response::error(ErrorCode::Invalid, why.clone()),
        None => {
            let dispatch = world.inbound.dispatch(Rc::from(FROM), body);
            match world
                .sys
                .block_on(async { tokio::time::timeout(DISPATCH_TIMEOUT, dispatch).await })
            {
                Ok(r) => r,
                Err(_) => {
                    report.hangs += 1;
                    report.findings.push(format!(
                        "no answer within {DISPATCH_TIMEOUT:?} to {}",
                        summarize(&sent)
                    ));
                    Response::error(ErrorCode::Internal, "hang")
                }
            }
        }
    };
    // The server encodes every answer into a frame of the session's limit
    // (one that does not fit would be replaced by an error: a bug), and
    // the answer must fit the worst case it reserved.
    match encode_frame(
        &Frame::Response {
            id,
            body: response.clone(),
        },
        MAX_FRAME,
    ) {
        Ok(bytes) if bytes.len() > worst => report.findings.push(format!(
            "the answer to {} ({}) is {} bytes, over the {worst} bytes reserved for it",
            summarize(&sent),
            summarize_response(&response),
            bytes.len()
        )),
        Ok(_) => {}
        Err(e) => report.findings.push(format!(
            "the answer to {} cannot be sent: {e}",
            summarize(&sent)
        )),
    }
    let garbage = match (&invalid, &response) {
        (Some(_), _) => {
            // Not dispatched: checked with whatever follows (below, or at
            // the end of the input).
            report.invalid += 1;
            report.unchecked = true;
            return;
        }
        (None, Response::Error { .. }) => {
            report.error_answers += 1;
            true
        }
        (None, _) => {
            report.accepted += 1;
            false
        }
    };
    let after = match Snapshot::take(&world.store) {
        Ok(s) => s,
        Err(e) => {
            report.findings.push(e);
            return;
        }
    };
    after.check(&mut report.findings);
    report.unchecked = false;
    if after != world.snapshot {
        if garbage {
            report.garbage_changes += 1;
            report.findings.push(format!(
                "{} answered {} yet changed stored data: {}",
                summarize(&sent),
                summarize_response(&response),
                describe_change(&world.snapshot, &after)
            ));
        } else {
            report.changed += 1;
            check_legitimate_change(&world.snapshot, &after, &sent, &mut report.findings);
        }
        world.snapshot = after;
    }
}

/// A valid request changed stored data: only the keys it names, only to
/// newer versions it carried; a purge removes only the tombstone it names; a
/// hint only adds the hint asked for.
fn check_legitimate_change(
    before: &Snapshot,
    after: &Snapshot,
    request: &Request,
    findings: &mut Vec<String>,
) {
    let what = summarize(request);
    let mut written: BTreeMap<&Bytes, Vec<Record>> = BTreeMap::new();
    let mut purged: BTreeMap<&Bytes, Vec<Version>> = BTreeMap::new();
    match request {
        Request::Write { key, record, .. } => {
            written
                .entry(key)
                .or_default()
                .push(Record::from(record.clone()));
        }
        Request::WriteBatch { items } => {
            for (k, r) in items {
                written.entry(k).or_default().push(Record::from(r.clone()));
            }
        }
        Request::PurgeMany { items } => {
            for (k, ts, node) in items {
                purged.entry(k).or_default().push(Version::new(*ts, *node));
            }
        }
        _ => {}
    }
    let keys: BTreeSet<&Bytes> = before.records.keys().chain(after.records.keys()).collect();
    for k in keys {
        let (b, a) = (before.records.get(k), after.records.get(k));
        if b == a {
            continue;
        }
        match (b, a) {
            (_, Some(a)) => {
                let carried = written.get(k).is_some_and(|rs| rs.contains(a));
                let newer = b.is_none_or(|b| a.version > b.version);
                if !carried || !newer {
                    findings.push(format!(
                        "{what} stored {:?} at {} over {:?}: not a newer record it carried",
                        String::from_utf8_lossy(k),
                        a.version,
                        b.map(|b| b.version)
                    ));
                }
            }
            (Some(b), None) => {
                let named = purged.get(k).is_some_and(|vs| vs.contains(&b.version));
                if !b.is_tombstone() || !named {
                    findings.push(format!(
                        "{what} removed {:?} ({} at {}) without naming that exact tombstone",
                        String::from_utf8_lossy(k),
                        if b.is_tombstone() {
                            "tombstone"
                        } else {
                            "value"
                        },
                        b.version
                    ));
                }
            }
            (None, None) => {}
        }
    }
    if before.hints != after.hints || before.tallies != after.tallies {
        let removed = before
            .hints
            .keys()
            .filter(|id| !after.hints.contains_key(*id))
            .count();
        let added: Vec<_> = after
            .hints
            .iter()
            .filter(|(id, _)| !before.hints.contains_key(*id))
            .collect();
        let expected = match request {
            Request::StoreHint {
                target,
                key,
                record,
            } => {
                removed == 0
                    && added.len() == 1
                    && added[0].1 .0 == *target
                    && added[0].1 .1 == *key
                    && added[0].1 .2 == Record::from(record.clone()).encode()
            }
            _ => false,
        };
        if !expected {
            findings.push(format!(
                "{what} changed hints: {removed} removed, {} added",
                added.len()
            ));
        }
    }
    if (before.last_alive_ms, before.clock_ceiling_ms)
        != (after.last_alive_ms, after.clock_ceiling_ms)
    {
        findings.push(format!("{what} changed the node's meta data"));
    }
}

fn describe_change(before: &Snapshot, after: &Snapshot) -> String {
    let changed: Vec<String> = before
        .records
        .keys()
        .chain(after.records.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| before.records.get(*k) != after.records.get(*k))
        .take(4)
        .map(|k| format!("{:?}", String::from_utf8_lossy(k)))
        .collect();
    format!(
        "records {} → {} (changed keys {changed:?}), hints {} → {}, tombstone index {} → {}, meta {}",
        before.records.len(),
        after.records.len(),
        before.hints.len(),
        after.hints.len(),
        before.tombstone_index.len(),
        after.tombstone_index.len(),
        if (before.last_alive_ms, before.clock_ceiling_ms)
            == (after.last_alive_ms, after.clock_ceiling_ms)
        {
            "same"
        } else {
            "changed"
        }
    )
}

/// A short description of a request for findings (never its values).
pub fn summarize(r: &Request) -> String {
    match r {
        Request::Read { key } => format!("Read(key {} B)", key.len()),
        Request::Write { key, record, .. } => format!(
            "Write(key {} B, {}, ts {:#x}, node {:#x})",
            key.len(),
            record
                .value
                .as_ref()
                .map_or("tombstone".to_string(), |v| format!("{} B", v.len())),
            record.ts,
            record.node
        ),
        Request::StoreHint { target, key, .. } => format!(
            "StoreHint(target {:?}, key {} B)",
            ringkv_actors::wire::printable(target),
            key.len()
        ),
        Request::WriteBatch { items } => format!("WriteBatch({} items)", items.len()),
        Request::Gossip { members } => format!(
            "Gossip({} members: {:?})",
            members.len(),
            members
                .iter()
                .take(4)
                .map(|m| (
                    ringkv_actors::wire::printable(&m.id),
                    m.generation,
                    m.heartbeat
                ))
                .collect::<Vec<_>>()
        ),
        Request::PartitionRoots {
            layout,
            depth,
            partitions,
        } => format!(
            "PartitionRoots(layout {layout:#x}, depth {depth}, {} partitions)",
            partitions.len()
        ),
        Request::TreeHashes {
            partition,
            layout,
            depth,
            level,
            indices,
        } => format!(
            "TreeHashes(partition {partition}, layout {layout:#x}, depth {depth}, level {level}, {} indices)",
            indices.len()
        ),
        Request::LeafVersions {
            partition,
            depth,
            leaves,
            after,
            max_bytes,
        } => format!(
            "LeafVersions(partition {partition}, depth {depth}, {} leaves, cursor {:?} B, max {max_bytes} B)",
            leaves.len(),
            after.as_ref().map(|a| a.len())
        ),
        Request::ReadMany { keys, max_bytes } => {
            format!("ReadMany({} keys, max {max_bytes} B)", keys.len())
        }
        Request::PurgeMany { items } => format!("PurgeMany({} items)", items.len()),
        Request::Meta { rpc, payload, .. } => format!("Meta({rpc:?}, {} B)", payload.len()),
    }
}

fn summarize_response(r: &Response) -> String {
    match r {
        Response::Error { code, message } => format!("{code}: {message}"),
        Response::Read { record } => format!("Read(found {})", record.is_some()),
        Response::Write { applied, .. } => format!("Write(applied {applied})"),
        Response::Hinted { dropped } => format!("Hinted(dropped {dropped})"),
        Response::Batch { applied, refused } => {
            format!("Batch(applied {applied}, refused {})", refused.len())
        }
        Response::Gossip { members } => format!("Gossip({} members)", members.len()),
        Response::Hashes { hashes } => format!("Hashes({})", hashes.len()),
        Response::Versions { items, next } => format!(
            "Versions({} items, next {:?} B)",
            items.len(),
            next.as_ref().map(|n| n.len())
        ),
        Response::Records { items } => format!("Records({})", items.len()),
        Response::Purged { purged } => format!("Purged({purged})"),
        Response::Meta { payload } => format!("Meta({} B)", payload.len()),
    }
}

thread_local! {
    static HARNESS: RefCell<Option<PeerHarness>> = const { RefCell::new(None) };
}

fn with_harness<T>(f: impl FnOnce(&mut PeerHarness) -> T) -> T {
    HARNESS.with(|h| {
        f(h.borrow_mut().get_or_insert_with(|| PeerHarness {
            isolated: true,
            ..PeerHarness::new()
        }))
    })
}

/// The peer request target on raw bytes (one harness per thread, every
/// input against a freshly seeded world: see [`PeerHarness::isolated`]).
pub fn peer_request(data: &[u8]) -> InputReport {
    with_harness(|h| h.run_bytes(data))
}

/// The structure-aware peer request target: the bytes drive [`RequestGen`].
pub fn peer_request_structured(data: &[u8]) -> InputReport {
    with_harness(|h| h.run_structured(data))
}

// ----------------------------------------------------------------------
// The structure-aware generator
// ----------------------------------------------------------------------

/// Generates requests that reach the handlers: every variant, sizes at and
/// past every limit, real and forged keys, versions, cursors, sessions and
/// leaves, names with NUL and control bytes, gossip claims about any member.
pub struct RequestGen<'a, E: Entropy> {
    e: &'a mut E,
    f: &'a Facts,
    /// Keep counts and values small (cheap frames).
    small: bool,
}

impl<'a, E: Entropy> RequestGen<'a, E> {
    pub fn new(e: &'a mut E, f: &'a Facts) -> Self {
        RequestGen { e, f, small: false }
    }

    /// Only small counts and values: for targets that need many frames
    /// more than big ones.
    pub fn small(mut self) -> Self {
        self.small = true;
        self
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.e.below(xs.len() as u64) as usize].clone()
    }

    fn existing(&mut self) -> (Bytes, Record) {
        let i = self.e.below(self.f.records.len() as u64) as usize;
        self.f.records[i].clone()
    }

    pub fn key(&mut self) -> Bytes {
        match self.e.below(16) {
            0..=6 => self.existing().0,
            7 => {
                let n = 1 + self.e.below(16) as usize;
                Bytes::from(self.e.bytes(n))
            }
            8 => Bytes::new(),
            9 => Bytes::from(vec![b'k'; MAX_KEY_BYTES]),
            10 => Bytes::from(vec![b'k'; MAX_KEY_BYTES + 1]),
            11 => Bytes::from(
                self.pick(&[&b"\0"[..], b"a\0b", b"\0\0\0\0\0\0\0\0\0", b"\xff"])
                    .to_vec(),
            ),
            12 => {
                // A near miss of a seeded key.
                let (k, _) = self.existing();
                if self.e.chance(50) {
                    k.slice(..k.len() - 1)
                } else {
                    let mut v = k.to_vec();
                    v.push(self.e.below(256) as u8);
                    Bytes::from(v)
                }
            }
            13 => Bytes::from(vec![0xff; 1 + self.e.below(64) as usize]),
            _ => {
                let n = self.e.below(40) as usize;
                Bytes::from(self.e.bytes(n))
            }
        }
    }

    pub fn value(&mut self) -> Option<Bytes> {
        let range = if self.small { 180 } else { 200 };
        match self.e.below(range) {
            0..=39 => None,
            40..=59 => Some(Bytes::new()),
            60..=179 => {
                let n = 1 + self.e.below(200) as usize;
                Some(Bytes::from(self.e.bytes(n)))
            }
            180..=195 => Some(Bytes::from(vec![0x5a; 1 + self.e.below(64 << 10) as usize])),
            196..=197 => Some(Bytes::from(vec![0; MAX_VALUE])),
            _ => Some(Bytes::from(vec![0; MAX_VALUE + 1])),
        }
    }

    pub fn version(&mut self) -> (u64, u64) {
        let now = self.f.now_ms;
        let ts = match self.e.below(14) {
            0..=3 => pack(now + self.e.below(2000), self.e.below(4)),
            4 => pack(now - self.e.below(7_200_000), 0),
            5 => 0,
            6 => 1,
            7 => u64::MAX,
            8 => pack(now + MAX_DRIFT_MS + 60_000, 0),
            9 => pack(now + MAX_DRIFT_MS / 2, 0xffff),
            10 | 11 => self.existing().1.version.ts,
            12 => self.existing().1.version.ts.wrapping_add(1),
            _ => self.e.next_u64(),
        };
        let node = match self.e.below(6) {
            0 => node_tag(NODE),
            1 => node_tag("n2"),
            2 => node_tag("n3"),
            3 => 0,
            4 => u64::MAX,
            _ => self.e.next_u64(),
        };
        (ts, node)
    }

    pub fn record(&mut self) -> WireRecord {
        if self.e.chance(15) {
            // A seeded record exactly, or its tombstone.
            let (_, r) = self.existing();
            let mut w = WireRecord::from(r);
            if self.e.chance(30) {
                w.value = None;
            }
            return w;
        }
        let (ts, node) = self.version();
        WireRecord {
            ts,
            node,
            value: self.value(),
        }
    }

    pub fn name(&mut self) -> String {
        match self.e.below(16) {
            0..=2 => "n1".into(),
            3..=5 => "n2".into(),
            6..=7 => "n3".into(),
            8 => "n4".into(),
            9 => String::new(),
            10 => self.pick(&["n2\0", "\0", "\0n2", "n\u{0}3"]).to_string(),
            11 => "x".repeat(MAX_NAME_BYTES),
            12 => "x".repeat(MAX_NAME_BYTES + 1),
            13 => self
                .pick(&[
                    "ñ-节点-🦀",
                    "\u{7}\u{1b}[2J",
                    "n2\n",
                    "\u{202e}n2",
                    "\u{feff}",
                ])
                .to_string(),
            _ => {
                let n = self.e.below(300) as usize;
                let bytes = self.e.bytes(n);
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }

    /// A count: mostly small, sometimes at or one past `max`.
    fn count(&mut self, typical: u64, max: usize) -> usize {
        if self.small {
            return self.e.below(typical + 1) as usize;
        }
        match self.e.below(40) {
            0 | 1 => 0,
            2 => max,
            3 => max + 1,
            _ => 1 + self.e.below(typical) as usize,
        }
    }

    fn partition(&mut self) -> u32 {
        let q = 1u64 << DEFAULT_PARTITION_BITS;
        match self.e.below(8) {
            // The partition of a seeded key.
            0..=3 => {
                let (k, _) = self.existing();
                partition_of(&k)
            }
            4..=5 => self.e.below(q) as u32,
            6 => q as u32,
            _ => self.e.next_u64() as u32,
        }
    }

    fn max_bytes(&mut self) -> u32 {
        match self.e.below(8) {
            0 => 0,
            1 => 1,
            2 => u32::MAX,
            3 => 100,
            4 => 1 << 20,
            _ => self.e.next_u64() as u32,
        }
    }

    fn leaf(&mut self) -> u32 {
        match self.e.below(12) {
            // The leaf of a seeded key (most leaves hold no record).
            0..=1 => {
                let (k, _) = self.existing();
                leaf_of(&k)
            }
            // The leaf of the longest key `key` makes.
            2 => leaf_of(&[b'k'; MAX_KEY_BYTES]),
            3..=7 => self.e.below(1 << DEFAULT_DEPTH) as u32,
            8 => (1 << DEFAULT_DEPTH) - 1,
            9 => 1 << DEFAULT_DEPTH,
            10 => u32::MAX,
            _ => self.e.next_u64() as u32,
        }
    }

    fn cursor(&mut self) -> Option<Bytes> {
        match self.e.below(10) {
            0..=2 => None,
            3..=4 => Some(Bytes::from(data_key(&self.existing().0))),
            5 => Some(Bytes::from(vec![0xff; 8])),
            6 => Some(Bytes::from(vec![0; 8])),
            7 => Some(Bytes::from(vec![1; 7])),
            8 => Some(Bytes::from(vec![
                7;
                8 + MAX_KEY_BYTES
                    + self.e.below(2) as usize
            ])),
            _ => {
                let n = self.e.below(48) as usize;
                Some(Bytes::from(self.e.bytes(n)))
            }
        }
    }

    /// A gossip entry. A node accepts only the sender's own entry (the
    /// harness's sessions come from [`FROM`]), so that one is the most
    /// frequent; entries about ourselves, the other member and strangers
    /// are forgeries it must refuse.
    fn member(&mut self) -> MemberState {
        let now = self.f.now_ms;
        let ours = self.f.generation;
        let id = match self.e.below(8) {
            0..=3 => FROM.to_string(),
            4 => NODE.to_string(),
            5 => "n3".to_string(),
            _ => self.name(),
        };
        let generation = match self.e.below(12) {
            0 => 0,
            1 => 1,
            2..=4 => ours,
            5 => ours + 1,
            6 => ours.saturating_sub(1),
            7 => now,
            8 => now + MAX_DRIFT_MS - 1,
            9 => now + MAX_DRIFT_MS + 1,
            10 => u64::MAX,
            _ => self.e.next_u64(),
        };
        let heartbeat = match self.e.below(10) {
            0 => 0,
            1 => 1,
            2 | 3 => self.e.below(100),
            4 => 100_000,
            5 => u64::MAX,
            6 => u64::MAX - 1,
            7 => u64::MAX - 1000,
            _ => self.e.next_u64(),
        };
        MemberState {
            id,
            http_addr: self.name(),
            peer_addr: self.name(),
            generation,
            heartbeat,
            wall_ms: match self.e.below(4) {
                0 => 0,
                1 => now,
                2 => u64::MAX,
                _ => self.e.next_u64(),
            },
            ring_epoch: if self.e.chance(80) {
                0
            } else {
                self.e.next_u64()
            },
            hints_floor: match self.e.below(5) {
                0 => 0,
                1 => u64::MAX,
                2 => pack(now - self.e.below(GRACE_MS), 0),
                3 => pack(now + MAX_DRIFT_MS * 10, 0),
                _ => self.e.next_u64(),
            },
            hlc_ts: self.e.next_u64(),
        }
    }

    /// One request of any variant.
    pub fn request(&mut self) -> Request {
        match self.e.below(18) {
            0 | 1 => Request::Read { key: self.key() },
            2..=4 => Request::Write {
                layout: 0,
                key: self.key(),
                record: self.record(),
            },
            5 => Request::StoreHint {
                target: self.name(),
                key: self.key(),
                record: self.record(),
            },
            6 | 7 => {
                let n = self.count(24, MAX_ITEMS);
                let items = if n > 64 {
                    // Many items: small ones, so the frame stays in bounds.
                    (0..n)
                        .map(|i| {
                            let key = Bytes::from(vec![(i % 251) as u8 + 1]);
                            let (ts, node) = self.version();
                            (
                                key,
                                WireRecord {
                                    ts,
                                    node,
                                    value: None,
                                },
                            )
                        })
                        .collect()
                } else {
                    (0..n).map(|_| (self.key(), self.record())).collect()
                };
                Request::WriteBatch { items }
            }
            8 | 9 => {
                let n = match self.e.below(12) {
                    _ if self.small => self.e.below(4) as usize,
                    0 => 0,
                    1 => MAX_MEMBERS,
                    2 => MAX_MEMBERS + 1,
                    _ => 1 + self.e.below(4) as usize,
                };
                Request::Gossip {
                    members: (0..n).map(|_| self.member()).collect(),
                }
            }
            10..=12 => {
                let depth = match self.e.below(8) {
                    0..=4 => DEFAULT_DEPTH,
                    5 => 0,
                    6 => MAX_DEPTH + self.e.below(2) as u8,
                    _ => self.e.below(256) as u8,
                };
                let level = match self.e.below(6) {
                    0..=3 => self.e.below(u64::from(depth) + 1) as u8,
                    4 => depth.saturating_add(1),
                    _ => self.e.below(256) as u8,
                };
                let n = self.count(8, MAX_TREE_INDICES);
                let span = 1u64 << level.min(32);
                let indices = (0..n)
                    .map(|_| match self.e.below(10) {
                        0..=7 => self.e.below(span) as u32,
                        8 => span.min(u64::from(u32::MAX)) as u32,
                        _ => u32::MAX,
                    })
                    .collect();
                let layout = if self.e.chance(85) {
                    fingerprint()
                } else {
                    self.e.next_u64()
                };
                if self.e.chance(25) {
                    let n = self.count(8, MAX_TREE_INDICES);
                    Request::PartitionRoots {
                        layout,
                        depth,
                        partitions: (0..n).map(|_| self.partition()).collect(),
                    }
                } else {
                    Request::TreeHashes {
                        partition: self.partition(),
                        layout,
                        depth,
                        level,
                        indices,
                    }
                }
            }
            13 | 14 => {
                let n = self.count(16, MAX_TREE_INDICES);
                Request::LeafVersions {
                    partition: self.partition(),
                    depth: if self.e.chance(90) {
                        DEFAULT_DEPTH
                    } else {
                        self.e.below(256) as u8
                    },
                    leaves: (0..n).map(|_| self.leaf()).collect(),
                    after: self.cursor(),
                    max_bytes: self.max_bytes(),
                }
            }
            15 | 16 => {
                let n = self.count(16, MAX_ITEMS);
                let keys = if n > 64 {
                    (0..n)
                        .map(|i| Bytes::from(format!("key-{:02}", i % 40)))
                        .collect()
                } else {
                    (0..n).map(|_| self.key()).collect()
                };
                Request::ReadMany {
                    keys,
                    max_bytes: self.max_bytes(),
                }
            }
            _ => {
                let n = self.count(8, MAX_ITEMS);
                let items = (0..n)
                    .map(|_| {
                        let (key, rec) = self.existing();
                        match self.e.below(6) {
                            // Exactly a seeded record's version (a
                            // tombstone's purges it; a value's must not).
                            0..=2 => (key, rec.version.ts, rec.version.node),
                            3 => (key, rec.version.ts + 1, rec.version.node),
                            _ => {
                                let (ts, node) = self.version();
                                (self.key(), ts, node)
                            }
                        }
                    })
                    .collect();
                Request::PurgeMany { items }
            }
        }
    }

    /// A session's worth of bytes: one to three request frames, sometimes
    /// behind a hello or a response (which end the session), sometimes
    /// damaged.
    pub fn frames(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.e.chance(3) {
            let hello = Frame::Hello(Hello {
                cluster: self.name(),
                protocol: PROTOCOL_VERSION,
                node_id: self.name(),
                layout: 0,
            });
            push_frame(&mut out, &hello);
        }
        let n = 1 + self.e.below(3);
        for _ in 0..n {
            let frame = if self.e.chance(3) {
                Frame::Response {
                    id: self.e.next_u64(),
                    body: Response::Purged { purged: 1 },
                }
            } else {
                Frame::Request {
                    id: self.e.next_u64(),
                    body: self.request(),
                }
            };
            push_frame(&mut out, &frame);
        }
        if self.e.chance(8) {
            mutate(self.e, &mut out);
        }
        out
    }
}

/// Appends one frame, length prefix included. A body over the frame limit
/// gets its true length prefix and only a few bytes of body: the decoder
/// refuses it from the prefix alone.
fn push_frame(out: &mut Vec<u8>, frame: &Frame) {
    let body = encode_body(frame).expect("generated frames encode");
    out.put_u32(body.len() as u32);
    if body.len() > MAX_FRAME {
        out.extend_from_slice(&body[..16]);
    } else {
        out.extend_from_slice(&body);
    }
}

/// Damages bytes: flips, truncates, duplicates, or rewrites a length.
pub fn mutate(e: &mut impl Entropy, bytes: &mut Vec<u8>) {
    for _ in 0..1 + e.below(4) {
        if bytes.is_empty() {
            bytes.push(e.below(256) as u8);
            continue;
        }
        let at = e.below(bytes.len() as u64) as usize;
        match e.below(7) {
            0 => bytes[at] ^= 1 << e.below(8),
            1 => bytes[at] = e.below(256) as u8,
            2 => bytes.truncate(at),
            3 => {
                let end = (at + 1 + e.below(16) as usize).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                bytes.splice(at..at, piece);
            }
            4 => {
                let end = (at + 1 + e.below(16) as usize).min(bytes.len());
                bytes.drain(at..end);
            }
            5 => {
                let n = e.below(4) as usize;
                let junk = e.bytes(n);
                bytes.splice(at..at, junk);
            }
            _ => {
                if bytes.len() >= 4 {
                    let len = match e.below(4) {
                        0 => 0,
                        1 => u32::MAX,
                        2 => (bytes.len() - 4) as u32 + 1,
                        _ => e.next_u64() as u32,
                    };
                    bytes[..4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
    }
}

/// `{"Request": {"x": [[[…nil…]]], "id": 1, ...}}`: an unknown field whose
/// value nests `depth` arrays (the decoder skips it recursively), then a
/// well-formed rest of a `Read` request.
pub fn nested_request(depth: usize) -> Vec<u8> {
    let mut b = vec![0x81, 0xa7];
    b.extend_from_slice(b"Request");
    b.extend_from_slice(&[0x83, 0xa1, b'x']);
    b.extend(std::iter::repeat_n(0x91, depth));
    b.push(0xc0);
    b.extend_from_slice(&[0xa2, b'i', b'd', 0x01, 0xa4]);
    b.extend_from_slice(b"body");
    b.extend_from_slice(&[0x81, 0xa4]);
    b.extend_from_slice(b"Read");
    b.extend_from_slice(&[0x81, 0xa3]);
    b.extend_from_slice(b"key");
    b.extend_from_slice(&[0xc4, 0x01, b'k']);
    let mut out = (b.len() as u32).to_be_bytes().to_vec();
    out.extend(b);
    out
}

fn generate(e: &mut impl Entropy, facts: &Facts, small: bool) -> Vec<u8> {
    let mut g = RequestGen::new(e, facts);
    g.small = small;
    g.frames()
}

/// Raw bytes for the decoder and the byte-level peer target: pure noise,
/// noise behind a plausible length, deep nesting, or damaged real frames.
pub fn arbitrary_bytes(e: &mut impl Entropy, facts: &Facts, small: bool) -> Vec<u8> {
    match e.below(20) {
        0..=3 => {
            let n = e.below(64) as usize;
            e.bytes(n)
        }
        4..=5 => {
            let n = e.below(256) as usize;
            let mut out = (n as u32).to_be_bytes().to_vec();
            out.extend(e.bytes(n));
            out
        }
        6 => {
            let depth = match e.below(5) {
                0 => 100,
                1 => 1023,
                2 => 1024,
                3 => 1025,
                _ => 1 + e.below(4000) as usize,
            };
            nested_request(depth)
        }
        7..=9 => generate(e, facts, small),
        _ => {
            let mut bytes = generate(e, facts, small);
            mutate(e, &mut bytes);
            bytes
        }
    }
}

#[cfg(test)]
mod tests {
    //! The bounded pass (part of `cargo test`), the long runs
    //! (`RINGKV_FUZZ_RUNS`, `--ignored`) and regression tests.

    use super::*;
    use std::time::Instant;

    /// Inputs per target in the bounded pass (debug build, CI).
    const BOUNDED_RUNS: u64 = 2_000;
    const BOUNDED_SEED: u64 = 0x7269_6e67_6b76;

    /// What a run counted.
    #[derive(Debug, Default)]
    pub(super) struct Counts {
        pub target: &'static str,
        pub inputs: u64,
        pub panics: u64,
        pub garbage: u64,
        pub garbage_changes: u64,
        pub frames: u64,
        pub requests: u64,
        pub invalid: u64,
        pub error_answers: u64,
        pub accepted: u64,
        pub changed: u64,
        pub quarantined: u64,
        pub hangs: u64,
        pub findings: u64,
        pub wire_estimate_exceeded: u64,
        pub worlds: u64,
        pub examples: Vec<String>,
        pub wall: Duration,
    }

    impl Counts {
        fn print(&self) {
            println!(
                "fuzz {}: inputs {}, panics {}, garbage inputs {}, stored data changed by garbage \
                 {}, hangs {}, findings {}, frames {}, requests {} (invalid {}, error answers {}, \
                 accepted {}, of which changed data {}), quarantined {}, wire estimate exceeded \
                 {}, worlds {}, wall {:.1} s",
                self.target,
                self.inputs,
                self.panics,
                self.garbage,
                self.garbage_changes,
                self.hangs,
                self.findings,
                self.frames,
                self.requests,
                self.invalid,
                self.error_answers,
                self.accepted,
                self.changed,
                self.quarantined,
                self.wire_estimate_exceeded,
                self.worlds,
                self.wall.as_secs_f64()
            );
            for e in &self.examples {
                println!("  {e}");
            }
        }

        fn assert_clean(&self) {
            assert!(
                self.panics == 0
                    && self.garbage_changes == 0
                    && self.hangs == 0
                    && self.findings == 0,
                "fuzz {} found problems: {self:#?}",
                self.target
            );
        }

        fn example(&mut self, what: String) {
            if self.examples.len() < 8 {
                self.examples.push(what);
            }
        }
    }

    fn hex(b: &[u8]) -> String {
        let shown: String = b.iter().take(512).map(|x| format!("{x:02x}")).collect();
        if b.len() > 512 {
            format!("{shown}… ({} bytes)", b.len())
        } else {
            shown
        }
    }

    /// Aborts the process when one input runs longer than this (a hang the
    /// dispatch timeout could not catch, e.g. a loop that never yields).
    const WATCHDOG: Duration = Duration::from_secs(120);

    /// Runs `body` on a thread named for the panic counter, with a watchdog.
    fn on_fuzz_thread<T: Send + 'static>(
        name: &str,
        body: impl FnOnce(Arc<AtomicU64>) -> T + Send + 'static,
    ) -> T {
        install_panic_counter();
        let started = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (started.clone(), done.clone());
        let epoch = Instant::now();
        let watchdog = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let at = s.load(Ordering::Relaxed);
                if at > 0 && epoch.elapsed().as_millis() as u64 > at + WATCHDOG.as_millis() as u64 {
                    eprintln!("fuzz: one input ran longer than {WATCHDOG:?}: aborting");
                    std::process::abort();
                }
            }
        });
        let stamp = started.clone();
        let result = std::thread::Builder::new()
            .name(format!("{THREAD_PREFIX}-{name}"))
            .stack_size(RUNNER_STACK)
            .spawn(move || {
                // Each input stores when it started (ms since `epoch`, +1).
                let _ = epoch;
                body(stamp)
            })
            .expect("spawn the fuzz thread")
            .join()
            .expect("the fuzz thread itself must not panic");
        done.store(true, Ordering::Relaxed);
        let _ = watchdog.join();
        result
    }

    pub(super) fn run_frame_decoder(runs: u64, seed: u64) -> Counts {
        on_fuzz_thread("frame-decoder", move |_stamp| {
            let started = Instant::now();
            let mut c = Counts {
                target: "frame_decoder",
                ..Counts::default()
            };
            let mut e = XorShift::new(seed);
            let facts = Facts::synthetic(SystemClock::default().now_ms());
            for _ in 0..runs {
                let mut input = vec![e.below(256) as u8];
                // Mostly small frames (many of them); big ones now and then.
                let small = !e.chance(5);
                input.extend(arbitrary_bytes(&mut e, &facts, small));
                let before = panics_so_far();
                let result = std::panic::catch_unwind(|| frame_decoder(&input));
                c.inputs += 1;
                let panicked = result.is_err() || panics_so_far() > before;
                if let Ok(r) = result {
                    c.frames += r.frames;
                    c.requests += r.requests;
                    c.accepted += r.valid_requests;
                    c.wire_estimate_exceeded += r.wire_estimate_exceeded;
                    if r.frames == 0 {
                        c.garbage += 1;
                    }
                    if !r.findings.is_empty() {
                        c.findings += 1;
                        c.example(format!("{:?} on {}", r.findings, hex(&input)));
                    }
                }
                if panicked {
                    c.panics += 1;
                    c.example(format!("panic on {}", hex(&input)));
                }
            }
            c.wall = started.elapsed();
            c
        })
    }

    #[derive(Clone, Copy)]
    pub(super) enum Mode {
        /// Noise and damaged frames through `run_bytes`.
        Bytes,
        /// Generated requests (`RequestGen`), framed, through `run_bytes`.
        Structured,
    }

    pub(super) fn run_peer(mode: Mode, runs: u64, seed: u64) -> Counts {
        let name = match mode {
            Mode::Bytes => "peer_request",
            Mode::Structured => "peer_request_structured",
        };
        on_fuzz_thread(name, move |stamp| {
            let started = Instant::now();
            let mut c = Counts {
                target: name,
                ..Counts::default()
            };
            let mut e = XorShift::new(seed);
            let mut h = PeerHarness::new();
            for i in 0..runs {
                let facts = h.facts();
                let input = match mode {
                    Mode::Bytes => arbitrary_bytes(&mut e, &facts, false),
                    Mode::Structured => RequestGen::new(&mut e, &facts).frames(),
                };
                stamp.store(started.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                let before = panics_so_far();
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.run_bytes(&input)));
                stamp.store(0, Ordering::Relaxed);
                c.inputs += 1;
                let panicked = result.is_err() || panics_so_far() > before;
                if let Ok(r) = &result {
                    c.frames += u64::from(r.frames);
                    c.requests += u64::from(r.requests);
                    c.invalid += u64::from(r.invalid);
                    c.error_answers += u64::from(r.error_answers);
                    c.accepted += u64::from(r.accepted);
                    c.changed += u64::from(r.changed);
                    c.quarantined += u64::from(r.quarantined);
                    c.hangs += u64::from(r.hangs);
                    c.garbage_changes += u64::from(r.garbage_changes);
                    c.garbage += u64::from(r.garbage);
                    if !r.findings.is_empty() {
                        c.findings += 1;
                        c.example(format!("{:?} on {}", r.findings, hex(&input)));
                    }
                }
                if panicked {
                    c.panics += 1;
                    c.example(format!("panic at input {i} on {}", hex(&input)));
                    h.reset();
                }
                if (i + 1) % 100_000 == 0 {
                    println!(
                        "fuzz {name}: {} inputs, {:.0} s",
                        i + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            c.worlds = h.worlds;
            c.wall = started.elapsed();
            c
        })
    }

    // ------------------------------------------------------------------
    // The bounded pass (CI)
    // ------------------------------------------------------------------

    #[test]
    fn fuzz_bounded_frame_decoder() {
        let c = run_frame_decoder(3 * BOUNDED_RUNS, BOUNDED_SEED);
        c.print();
        c.assert_clean();
        assert!(
            c.frames > 0 && c.accepted > 0,
            "the inputs reach decoded requests"
        );
    }

    #[test]
    fn fuzz_bounded_peer_request_bytes() {
        let c = run_peer(Mode::Bytes, BOUNDED_RUNS, BOUNDED_SEED);
        c.print();
        c.assert_clean();
        assert!(c.accepted > 0 && c.invalid > 0 && c.error_answers > 0);
    }

    #[test]
    fn fuzz_bounded_peer_request_structured() {
        let c = run_peer(Mode::Structured, BOUNDED_RUNS * 3 / 4, BOUNDED_SEED + 1);
        c.print();
        c.assert_clean();
        assert!(c.accepted > 0 && c.changed > 0 && c.error_answers > 0);
    }

    // ------------------------------------------------------------------
    // The long runs
    // ------------------------------------------------------------------

    fn env_u64(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    }

    /// `RINGKV_FUZZ_RUNS` inputs (default 1,000,000) per target;
    /// `RINGKV_FUZZ_SEED` picks the seed; `RINGKV_FUZZ_TARGETS` (comma
    /// separated: frame_decoder, peer_request, peer_request_structured)
    /// limits the targets.
    #[test]
    #[ignore = "long: cargo test --release -p ringkv-actors fuzz -- --ignored --nocapture"]
    fn fuzz_long_runs() {
        let runs = env_u64("RINGKV_FUZZ_RUNS", 1_000_000);
        let seed = env_u64("RINGKV_FUZZ_SEED", 1);
        let targets = std::env::var("RINGKV_FUZZ_TARGETS")
            .unwrap_or_else(|_| "frame_decoder,peer_request,peer_request_structured".into());
        let mut all = Vec::new();
        for t in targets.split(',').map(str::trim) {
            let c = match t {
                "frame_decoder" => run_frame_decoder(runs, seed),
                "peer_request" => run_peer(Mode::Bytes, runs, seed),
                "peer_request_structured" => run_peer(Mode::Structured, runs, seed),
                other => panic!("unknown fuzz target {other}"),
            };
            c.print();
            all.push(c);
        }
        for c in &all {
            c.assert_clean();
        }
    }

    /// Writes a seed corpus for the cargo-fuzz targets (generated frames,
    /// small ones) under `$RINGKV_FUZZ_SEED_DIR/<target>/`.
    #[test]
    #[ignore = "writes files: RINGKV_FUZZ_SEED_DIR=fuzz/corpus, see docs/RELIABILITY.md"]
    fn fuzz_write_seed_corpus() {
        let Some(dir) = std::env::var_os("RINGKV_FUZZ_SEED_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let facts = Facts::synthetic(SystemClock::default().now_ms());
        let mut e = XorShift::new(7);
        for (target, n) in [("frame_decoder", 256), ("peer_request", 512)] {
            let d = dir.join(target);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let mut input = Vec::new();
                if target == "frame_decoder" {
                    input.push(e.below(256) as u8);
                }
                input.extend(generate(&mut e, &facts, true));
                std::fs::write(d.join(format!("seed-{i:04}")), input).unwrap();
            }
        }
    }

    // ------------------------------------------------------------------
    // Regressions
    // ------------------------------------------------------------------

    #[test]
    fn fuzz_deeply_nested_frames_are_refused() {
        // Frames nest at most `wire::MAX_NESTING` levels (F2: skipping an
        // unknown field recurses once per level).
        on_fuzz_thread("nesting", |_| {
            for depth in [
                10, 20, 25, 30, 40, 500, 1000, 1022, 1023, 1024, 1025, 100_000,
            ] {
                let bytes = nested_request(depth);
                let mut input = vec![1u8];
                input.extend_from_slice(&bytes);
                frame_decoder(&input).assert_clean();
                let decoded = decode_body(&bytes[4..]);
                if depth <= 20 {
                    assert!(
                        matches!(
                            decoded,
                            Ok(Frame::Request {
                                body: Request::Read { .. },
                                ..
                            })
                        ),
                        "depth {depth}: {decoded:?}"
                    );
                } else if depth > ringkv_actors::wire::MAX_NESTING {
                    assert!(decoded.is_err(), "depth {depth} decoded");
                }
            }
        });
    }

    /// The child of `fuzz_regression_f2_…`: decodes a frame nested at the
    /// depth limit on a thread with the default 2 MiB stack (the node's
    /// peer thread). Does nothing unless the parent asked for it.
    #[test]
    #[ignore = "child process of fuzz_regression_f2_nested_frame_fits_a_2_mib_stack"]
    fn fuzz_f2_child() {
        if std::env::var_os("RINGKV_FUZZ_F2_CHILD").is_none() {
            return;
        }
        let frame = nested_request(1022);
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let mut codec = FrameCodec::new(HELLO_MAX_FRAME);
                let _ = codec.decode(&mut BytesMut::from(&frame[..]));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Finding F2: a frame of 1,059 bytes — small enough to be the first
    /// frame of a connection, before any hello was checked — whose unknown
    /// field nests 1022 arrays makes `decode_body` (rmp-serde skipping the
    /// field, one recursion per level, depth limit 1024) use ~2.8 KiB of
    /// stack per level in a debug build: past ~730 levels it overflows the
    /// peer thread's 2 MiB stack and aborts the process. Optimized builds
    /// use ~100 KiB at the limit, so release nodes are not affected.
    /// A stack overflow aborts, so the decode runs in a child process.
    #[test]
    fn fuzz_regression_f2_nested_frame_fits_a_2_mib_stack() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["peer::tests::fuzz_f2_child", "--exact", "--ignored"])
            .env("RINGKV_FUZZ_F2_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "decoding a nested frame on a 2 MiB stack: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn fuzz_byte_entropy_ends_generation_on_any_input() {
        let facts = Facts::synthetic(1_700_000_000_000);
        for input in [&b""[..], b"\xff", &[0xff; 64], &[0x80; 300]] {
            let mut e = ByteEntropy::new(input);
            let bytes = RequestGen::new(&mut e, &facts).frames();
            assert!(!bytes.is_empty());
        }
    }

    #[test]
    fn fuzz_seeded_store_is_checked_byte_for_byte() {
        // The oracle itself: a garbage input leaves the snapshot equal, a
        // valid write changes it and passes the legitimacy check.
        let mut h = PeerHarness::new();
        let facts = h.facts();
        let garbage = h.run_bytes(b"\x00\x00\x00\x03abc");
        assert!(
            garbage.garbage && garbage.findings.is_empty(),
            "{garbage:?}"
        );
        let write = Request::Write {
            layout: 0,
            key: facts.records[0].0.clone(),
            record: WireRecord {
                ts: pack(facts.now_ms + 1, 0),
                node: node_tag("n2"),
                value: Some(Bytes::from_static(b"new")),
            },
        };
        let mut bytes = Vec::new();
        push_frame(&mut bytes, &Frame::Request { id: 1, body: write });
        let r = h.run_bytes(&bytes);
        assert_eq!((r.accepted, r.changed), (1, 1), "{r:?}");
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    /// The cargo-fuzz entry points run each input against a freshly seeded
    /// world, so that an input that made state (a key, a repair session)
    /// cannot leave it for the next one, and an artifact reproduces alone.
    #[test]
    fn fuzz_isolated_harness_starts_every_dispatching_input_afresh() {
        let mut h = PeerHarness {
            isolated: true,
            ..PeerHarness::new()
        };
        let facts = h.facts();
        let mut write = Vec::new();
        push_frame(
            &mut write,
            &Frame::Request {
                id: 1,
                body: Request::Write {
                    layout: 0,
                    key: Bytes::from_static(b"fresh"),
                    record: WireRecord {
                        ts: pack(facts.now_ms, 0),
                        node: node_tag("n2"),
                        value: Some(Bytes::from_static(b"v")),
                    },
                },
            },
        );
        assert_eq!(h.run_bytes(&write).changed, 1);
        // Garbage (nothing dispatched) keeps the world; the write did not.
        assert!(h.run_bytes(b"\x00\x00\x00\x03abc").garbage);
        assert_eq!(h.worlds, 2);
        assert!(!h.world().snapshot.records.contains_key(&b"fresh"[..]));
        assert_eq!(h.run_bytes(&write).changed, 1, "the key is new again");
    }

    /// Finding F3: a node holding a key of 1024 bytes answers
    /// `LeafVersions { max_bytes: 0 }` for that key's leaf with one item
    /// (its 1032-byte data key) and a `next` cursor (the same 1032 bytes):
    /// 2,136 bytes in a frame, while the peer server reserved
    /// `max_response_bytes` = 1,857 bytes for it (it logged "a leaf_versions
    /// answer of … bytes exceeds its reserved … bytes" and sent it anyway).
    /// Found by `cargo fuzz run peer_request` when the harness kept its
    /// world across inputs (the artifact's requests needed a key and a
    /// repair session earlier inputs had made, so it did not reproduce on
    /// its own); this test builds both. Fixed in `Request::max_response_bytes`
    /// (room for the first item whatever `max_bytes`).
    #[test]
    fn fuzz_regression_f3_leaf_versions_answer_fits_its_reservation() {
        let key = Bytes::from(vec![b'k'; MAX_KEY_BYTES]);
        let (partition, leaf) = (partition_of(&key), leaf_of(&key));
        let mut h = PeerHarness::new();
        h.quarantine = false;
        let facts = h.facts();
        let mut bytes = Vec::new();
        for (id, body) in [
            Request::Write {
                layout: 0,
                key,
                record: WireRecord {
                    ts: pack(facts.now_ms, 0),
                    node: node_tag("n2"),
                    value: Some(Bytes::from_static(b"v")),
                },
            },
            Request::TreeHashes {
                partition,
                layout: fingerprint(),
                depth: DEFAULT_DEPTH,
                level: 0,
                indices: vec![0],
            },
            Request::LeafVersions {
                partition,
                depth: DEFAULT_DEPTH,
                leaves: vec![leaf],
                after: None,
                max_bytes: 0,
            },
        ]
        .into_iter()
        .enumerate()
        {
            push_frame(
                &mut bytes,
                &Frame::Request {
                    id: id as u64,
                    body,
                },
            );
        }
        let r = h.run_bytes(&bytes);
        assert_eq!(r.accepted, 3, "{r:?}");
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
    }

    /// Finding F1: a member's gossip that claims our own entry at our
    /// generation with heartbeat `u64::MAX` made the merge of claims about
    /// ourselves (membership.rs as committed in 37ad4e6, `me.heartbeat =
    /// claim.heartbeat + 1`) overflow: a panic ("attempt to add with
    /// overflow") in builds with overflow checks (debug, cargo-fuzz), which
    /// killed the gossip actor; in release builds our heartbeat wrapped to
    /// 0, below what every peer had seen. Gossip is now first-hand only: a
    /// member's entry is accepted only from that member, and a claim about
    /// ourselves is refused, so our heartbeat keeps counting our rounds.
    #[test]
    fn fuzz_regression_f1_gossip_claiming_our_heartbeat_at_u64_max() {
        let (before, after, panics, report) = on_fuzz_thread("f1", |_| {
            let mut h = PeerHarness::new();
            h.quarantine = false;
            let facts = h.facts();
            let gossip = |members: Vec<MemberState>| {
                let mut bytes = Vec::new();
                push_frame(
                    &mut bytes,
                    &Frame::Request {
                        id: 1,
                        body: Request::Gossip { members },
                    },
                );
                bytes
            };
            let ours = |h: &mut PeerHarness| {
                let w = h.world();
                let answer = w.sys.block_on(
                    w.inbound
                        .dispatch(Rc::from(FROM), Request::Gossip { members: vec![] }),
                );
                match answer {
                    Response::Gossip { members } => members
                        .into_iter()
                        .find(|m| m.id == NODE)
                        .map(|m| m.heartbeat),
                    _ => None,
                }
            };
            h.idle(Duration::from_millis(500));
            let before = ours(&mut h);
            let panics = panics_so_far();
            let report = h.run_bytes(&gossip(vec![member_state(
                NODE,
                facts.generation,
                u64::MAX,
            )]));
            let after = ours(&mut h);
            // A few rounds more: bumping the heartbeat must not overflow.
            h.idle(Duration::from_millis(500));
            (before, after, panics_so_far() - panics, report)
        });
        assert_eq!(panics, 0, "the gossip actor panicked: {report:?}");
        assert!(
            before.is_some_and(|b| b > 0)
                && after >= before
                && after.is_some_and(|a| a <= before.unwrap_or(0) + 5),
            "our heartbeat went from {before:?} to {after:?}"
        );
    }
}
