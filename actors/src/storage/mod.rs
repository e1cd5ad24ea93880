//! Durable storage on redb: with `backend.rs`, the only code that
//! names redb.
//!
//! Tables (all declared here):
//! * `data`: `token (8 bytes BE) || key` → encoded [`Record`] (value or
//!   tombstone with version). Prefixing the ring token orders records by ring
//!   position, so anti-entropy reads one token range with one range scan
//!   instead of scanning every key. Lookups compute the token (one xxHash).
//! * `tombstone_index`: `version timestamp (8 bytes BE) || token || key` → ()
//!   for every tombstone, in time order, so tombstone GC reads only the
//!   tombstones old enough to purge and never walks the others.
//! * `hints`: `target node id || 0x00 || seq (8 bytes BE)` → encoded hint (a
//!   write kept for a replica that was down; see [`Hint`]).
//! * `meta`: string → bytes: the node id the directory belongs to, the storage
//!   format, the restart generation, when the node was last alive, the
//!   clock reservation (the highest timestamp this node may have issued),
//!   and whether repair mode is pending (see `repair/mode.rs`).
//!
//! Every change goes through [`Store::apply`], which runs a whole batch of
//! [`Mutation`]s in one write transaction and commits once: the replica actor
//! uses it for group commit. A batch fails as a whole only when the commit
//! does; a mutation that cannot apply (a corrupt stored record under its key)
//! fails alone and the rest commit. Record writes carry their version and
//! apply only if newer than the stored one (last write wins), so replaying,
//! reordering or duplicating writes never moves a key backwards. Reads
//! ([`Store::get`], the scans) open their own MVCC read transaction and never
//! wait for the writer.
//!
//! Hints are bounded per target node by count and bytes: storing one beyond
//! the bound drops that target's oldest hints (never the new write, even when
//! it alone exceeds the bound), and the number dropped is reported so the
//! caller can count it and schedule anti-entropy.
//!
//! Errors are grouped by what the caller does next ([`StoreError`]): a full
//! disk refuses writes until space is freed (the handle is reopened, since
//! redb refuses every later write on a handle that saw an I/O error); any
//! other I/O failure of a commit is [`StoreError::Io`], after which the page
//! cache may hold data that is not on disk — the replica actor stops the node
//! (fail-stop) and recovery reads the file again.
//!
//! Redb allows one writer at a time and many concurrent readers; with
//! `Durability::Immediate` a commit returns only once it is on disk (fsync).

mod backend;
pub use backend::open_private;
mod stale;
pub mod trees;

use crate::faults::Faults;
use crate::layout::PartitionId;
use crate::record::{decode_header, DecodeError, Record};
use crate::storage::backend::FaultyFileBackend;
use crate::storage::trees::{Change, PartitionTrees, DEFAULT_TREE_DEPTH};
use crate::token::{key_token, Token};
use crate::version::Version;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
pub const TOMBSTONE_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("tombstone_index");
pub const HINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hints");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The tombstone index of storage format 2 (`token || key` → timestamp),
/// migrated to [`TOMBSTONE_INDEX`] at the first open by this build.
const TOMBSTONES_V2: TableDefinition<&[u8], u64> = TableDefinition::new("tombstones");

/// Version of the on-disk layout (tables and record format) this code writes.
pub const STORAGE_FORMAT: u8 = 3;
/// The older layout this build upgrades in place.
const STORAGE_FORMAT_V2: u8 = 2;
const META_NODE_ID: &str = "node_id";
const META_FORMAT: &str = "format";
const META_GENERATION: &str = "generation";
const META_LAST_ALIVE: &str = "last_alive_ms";
const META_CLOCK_CEILING: &str = "clock_ceiling_ms";
/// The largest value limit this data directory has run with.
const META_MAX_VALUE: &str = "max_value_bytes";
/// Present while the node is in repair mode (serves no reads until an
/// anti-entropy pass completes); survives restarts.
const META_REPAIR_PENDING: &str = "repair_pending";
/// File name of the database inside a node's data directory.
pub const DB_FILE: &str = "ringkv.redb";

/// What went wrong in storage, grouped by what the caller does next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: refuse writes (HTTP 507) until space is freed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The write queue is full: nothing was done; retry later (HTTP 503).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Another process has this data directory open.
    #[error("data directory {0} is already in use by another ringkv process")]
    AlreadyOpen(PathBuf),
    /// The directory belongs to another node or another format.
    #[error("{0}")]
    Mismatch(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt record for a key: {0}")]
    Corrupt(#[from] DecodeError),
    /// This replica serves no reads yet (it is catching up after an outage).
    #[error("{0}")]
    NotServing(String),
    /// A mutation that can never apply (it fails alone).
    #[error("invalid mutation: {0}")]
    Invalid(String),
    /// A commit's I/O (a write or an fsync) failed: what is on disk is
    /// unknown. The node must stop; a restart reads the file again.
    #[error("I/O failure: {0}")]
    Io(String),
    /// Any other engine failure.
    #[error("storage error: {0}")]
    Engine(String),
}

impl StoreError {
    /// Whether the store can no longer be trusted (fail-stop).
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Io(_))
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen(PathBuf::new()),
            redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull(io.to_string()),
            redb::Error::Io(io) => StoreError::Io(io.to_string()),
            redb::Error::PreviousIo => {
                StoreError::Io("an earlier I/O error stopped writes on this handle".into())
            }
            other => StoreError::Engine(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::from(redb::Error::from(e)) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// ENOSPC, EDQUOT (a quota) and EFBIG (a file size limit): the write did
/// not happen for want of space. (An fsync that fails for any reason,
/// ENOSPC included, is an I/O failure instead: see `backend.rs`.)
fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(ENOSPC | EFBIG | EDQUOT))
}

/// What a conditional write requires of the current record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// No live value (absent or tombstone): `If-None-Match: *`.
    Absent,
    /// A live value exists: `If-Match: *`.
    Present,
    /// The live value has exactly this version: `If-Match: "<etag>"`.
    Version(Version),
}

impl Precondition {
    /// Whether the condition holds for a record at `version` (`tombstone`:
    /// a delete) — used when a newer version turns up during the write.
    pub fn holds_for(&self, version: Version, tombstone: bool) -> bool {
        let r = Record {
            version,
            value: (!tombstone).then(Bytes::new),
        };
        self.holds(Some(&r))
    }

    pub fn holds(&self, current: Option<&Record>) -> bool {
        let live = current.filter(|r| !r.is_tombstone());
        match self {
            Precondition::None => true,
            Precondition::Absent => live.is_none(),
            Precondition::Present => live.is_some(),
            Precondition::Version(v) => live.is_some_and(|r| r.version == *v),
        }
    }
}

/// One record write: store `record` under `key` if it is newer.
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub key: Bytes,
    pub record: Record,
}

/// A write kept for a replica that could not take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The replica the write is meant for.
    pub target: String,
    pub key: Bytes,
    pub record: Record,
    /// When the hint was stored (wall-clock ms).
    pub stored_ms: u64,
}

/// A stored hint's id: its key in the `hints` table.
pub type HintId = Vec<u8>;

/// One change in a batch.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Store a record if newer (last write wins).
    Put(WriteOp),
    /// Keep a hint (bounded per target: the oldest are dropped beyond it).
    Hint(Hint),
    /// Remove hints, e.g. after their target acknowledged them.
    DeleteHints(Vec<HintId>),
    /// Physically delete a tombstone if the stored record is still exactly it.
    Purge { key: Bytes, version: Version },
    /// Physically delete a record (value or tombstone) if the stored one is
    /// still exactly `version`: data of a partition this node no longer
    /// holds in any live layout version.
    Drop { key: Bytes, version: Version },
    /// Record node state: alive at `alive_ms`, and timestamps reserved up to
    /// `clock_ceiling_ms` (kept only if higher than the stored one).
    Meta {
        alive_ms: Option<u64>,
        clock_ceiling_ms: Option<u64>,
    },
    /// Record that repair mode began (`true`) or ended (`false`).
    RepairPending(bool),
}

impl Mutation {
    /// Bytes this mutation brings into memory and onto disk (for bounds).
    pub fn weight(&self) -> usize {
        const SMALL: usize = 64;
        match self {
            Mutation::Put(op) => SMALL + op.key.len() + value_len(&op.record),
            Mutation::Hint(h) => SMALL + h.key.len() + h.target.len() + value_len(&h.record),
            Mutation::DeleteHints(ids) => SMALL + ids.iter().map(|i| i.len()).sum::<usize>(),
            Mutation::Purge { key, .. } | Mutation::Drop { key, .. } => SMALL + key.len(),
            Mutation::Meta { .. } | Mutation::RepairPending(_) => SMALL,
        }
    }
}

fn value_len(r: &Record) -> usize {
    r.value.as_ref().map_or(0, |v| v.len())
}

/// What happened to one mutation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored; `replaced_live` tells whether a live value was there before.
    Applied { replaced_live: bool },
    /// The stored version is newer than (or equal to) the write's; nothing
    /// changed. `tombstone`: the stored record is a delete.
    Superseded { current: Version, tombstone: bool },
    /// A hint was stored; `dropped` older hints of its target made room.
    Hinted { dropped: u64 },
    /// Hints deleted, a tombstone purged or state recorded (`changed`:
    /// whether anything was removed or raised).
    Done { changed: bool },
}

/// The result of one mutation within a committed batch.
pub type ItemResult = Result<WriteOutcome, StoreError>;

/// Bounds on the hints kept for one target node.
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    pub max_count: u64,
    pub max_bytes: u64,
    /// Beyond the bound, drop the target's oldest hints (strict quorum: no
    /// hint holds an acknowledged write alone; anti-entropy repairs what
    /// they carried) — or, when false (sloppy quorum), refuse the new hint.
    pub evict: bool,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            max_count: 100_000,
            max_bytes: 256 << 20,
            evict: true,
        }
    }
}

/// Hints held for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintTally {
    pub count: u64,
    pub bytes: u64,
}

/// A page of hints: the readable ones, the ids of those that cannot be
/// decoded (kept, skipped, logged), and where the next page starts.
#[derive(Debug, Default)]
pub struct HintPage {
    pub hints: Vec<(HintId, Hint)>,
    pub corrupt: Vec<HintId>,
    pub next: Option<HintId>,
}

#[derive(Default, Clone)]
struct HintState {
    next_seq: u64,
    tallies: HashMap<String, HintTally>,
    /// Version timestamps of every stored hint (a multiset: ts → count), so
    /// the oldest is known at once (see [`Store::hints_floor`]).
    versions: std::collections::BTreeMap<u64, u64>,
}

impl HintState {
    fn add_version(&mut self, ts: Option<u64>) {
        if let Some(ts) = ts {
            *self.versions.entry(ts).or_default() += 1;
        }
    }

    fn remove_version(&mut self, ts: Option<u64>) {
        let Some(ts) = ts else { return };
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.versions.entry(ts) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The version timestamp of the record inside an encoded hint.
fn hint_version_ts(bytes: &[u8]) -> Option<u64> {
    let klen = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let (version, _) = decode_header(bytes.get(12usize.checked_add(klen)?..)?).ok()?;
    Some(version.ts)
}

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Commit with fsync (false only for tests and benchmarks).
    pub durable: bool,
    pub hint_limits: HintLimits,
    /// Commits are refused (disk full) when less than this would stay free.
    pub min_free_bytes: u64,
    /// Test-only storage faults.
    pub faults: Arc<Faults>,
    /// The store keeps one Merkle tree per partition of 2^this
    /// ([`crate::storage::trees`]).
    pub partition_bits: u8,
}

impl StoreOptions {
    pub fn new(durable: bool) -> Self {
        StoreOptions {
            durable,
            hint_limits: HintLimits::default(),
            min_free_bytes: 0,
            faults: Arc::default(),
            partition_bits: crate::layout::DEFAULT_PARTITION_BITS,
        }
    }
}

/// A node's durable store. Cheap to clone; shared by the writer and readers.
#[derive(Clone)]
pub struct Store {
    /// `None` only while the database is being reopened after a full disk.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    dir: PathBuf,
    options: StoreOptions,
    hints: Arc<Mutex<HintState>>,
    /// One Merkle tree per partition over the records, updated after each
    /// commit with what it changed.
    trees: Arc<Mutex<PartitionTrees>>,
    /// Partitions whose tree must be rebuilt from the data (an unreadable
    /// record was replaced) and whose rebuild has not succeeded yet.
    stale_trees: Arc<Mutex<stale::StaleTrees>>,
    /// When the last reopen was tried (reopens are retried at most once per
    /// [`REOPEN_RETRY`]).
    last_reopen: Arc<Mutex<Option<std::time::Instant>>>,
}

/// How long a reopen waits for in-flight readers of the old handle.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Least time between two attempts to reopen the database.
const REOPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes available to unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// `token || key`: the `data` table key of `key`.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&key_token(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The ring token at the front of a data key (0 for a malformed one).
pub fn data_key_token(dk: &[u8]) -> Token {
    u64_prefix(dk)
}

/// The big-endian u64 in the first 8 bytes (0 when there are fewer).
fn u64_prefix(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// `ts || token || key`: the `tombstone_index` key of a tombstone.
fn tombstone_index_key(ts: u64, dk: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + dk.len());
    k.extend_from_slice(&ts.to_be_bytes());
    k.extend_from_slice(dk);
    k
}

fn hint_prefix(target: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(target.len() + 1);
    p.extend_from_slice(target.as_bytes());
    p.push(0);
    p
}

fn encode_hint(h: &Hint) -> Vec<u8> {
    let rec = h.record.encode();
    let mut out = Vec::with_capacity(12 + h.key.len() + rec.len());
    out.extend_from_slice(&h.stored_ms.to_be_bytes());
    out.extend_from_slice(&(h.key.len() as u32).to_be_bytes());
    out.extend_from_slice(&h.key);
    out.extend_from_slice(&rec);
    out
}

fn decode_hint(target: &str, bytes: &[u8]) -> Result<Hint, StoreError> {
    let bad = || StoreError::Engine("corrupt hint".into());
    let stored_ms = u64::from_be_bytes(bytes.get(0..8).ok_or_else(bad)?.try_into().expect("8"));
    let klen =
        u32::from_be_bytes(bytes.get(8..12).ok_or_else(bad)?.try_into().expect("4")) as usize;
    let key = bytes.get(12..12 + klen).ok_or_else(bad)?;
    let record = Record::decode(&bytes[12 + klen..])?;
    Ok(Hint {
        target: target.to_string(),
        key: Bytes::copy_from_slice(key),
        record,
        stored_ms,
    })
}

fn hint_target(id: &[u8]) -> Option<&str> {
    let end = id.len().checked_sub(9)?;
    std::str::from_utf8(&id[..end]).ok()
}

fn hint_seq(id: &[u8]) -> Option<u64> {
    let at = id.len().checked_sub(8)?;
    be_u64(&id[at..])
}

impl Store {
    /// Opens (or creates) the store in `dir` for node `node_id`.
    /// `durable = false` commits without fsync (for tests and benchmarks only).
    pub fn open(dir: &Path, node_id: &str, durable: bool) -> Result<Store, StoreError> {
        Self::open_with(dir, node_id, StoreOptions::new(durable))
    }

    pub fn open_with(
        dir: &Path,
        node_id: &str,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        crate::storage::backend::prepare_data_dir(dir).map_err(|e| {
            if is_disk_full(&e) {
                StoreError::DiskFull(e.to_string())
            } else {
                StoreError::Engine(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            }
        })?;
        let db = open_db(dir, &options.faults)?;
        let trees = PartitionTrees::new(options.partition_bits, DEFAULT_TREE_DEPTH);
        let store = Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            dir: dir.to_path_buf(),
            options,
            hints: Arc::default(),
            trees: Arc::new(Mutex::new(trees)),
            stale_trees: Arc::default(),
            last_reopen: Arc::default(),
        };
        store.init_meta(dir, node_id)?;
        store.load_hint_tallies()?;
        store.build_trees()?;
        Ok(store)
    }

    /// Builds the partition trees from the stored records' headers (at
    /// open, before any write, and after a reopen, by the writer).
    fn build_trees(&self) -> Result<(), StoreError> {
        let trees = self.scan_trees()?;
        *self.trees.lock().unwrap_or_else(|p| p.into_inner()) = trees;
        Ok(())
    }

    fn scan_trees(&self) -> Result<PartitionTrees, StoreError> {
        let mut trees = PartitionTrees::new(self.options.partition_bits, DEFAULT_TREE_DEPTH);
        self.walk(0, Token::MAX, None, |_, k, v| {
            match decode_header(v) {
                Ok((version, _)) => trees.insert(&k[8..], version),
                Err(e) => log::error!("a corrupt record is left out of its Merkle tree: {e}"),
            }
            Ok(true)
        })?;
        Ok(trees)
    }

    /// The partitions whose live tree differs from one rebuilt by a scan of
    /// the store (none, unless a bug let them drift). A full scan: for
    /// checks on a quiet node (`GET /v1/admin/merkle?verify=true`; writes
    /// committing meanwhile can show as differences), not for every pass.
    pub fn verify_trees(&self) -> Result<Vec<PartitionId>, StoreError> {
        let rebuilt = self.scan_trees()?;
        Ok(self.with_trees(|live| {
            (0..crate::layout::partition::count(live.partition_bits()))
                .filter(|&p| live.root(p) != rebuilt.root(p))
                .collect()
        }))
    }

    /// Runs `f` over the partition trees (kept current: every committed
    /// write is in them).
    pub fn with_trees<T>(&self, f: impl FnOnce(&PartitionTrees) -> T) -> T {
        f(&self.trees.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current database handle.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .expect("db lock")
            .clone()
            .ok_or_else(|| StoreError::Engine("the database is being reopened".into()))
    }

    /// Replaces the handle after a full disk (redb refuses every later write
    /// on a handle that saw an I/O error): takes the old handle out (readers
    /// meanwhile get an error at once instead of waiting), waits for its
    /// readers to finish, then opens the file again. The lock is never held
    /// while waiting or opening. Tried at most once per [`REOPEN_RETRY`].
    fn reopen(&self) {
        {
            let mut last = self.last_reopen.lock().expect("reopen lock");
            if last.is_some_and(|t| t.elapsed() < REOPEN_RETRY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let old = self.db.write().expect("db lock").take();
        if let Some(old) = old {
            let weak = Arc::downgrade(&old);
            drop(old);
            let started = std::time::Instant::now();
            while weak.strong_count() > 0 && started.elapsed() < REOPEN_WAIT {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        match open_db(&self.dir, &self.options.faults) {
            Ok(db) => {
                log::info!("reopened the database after a full disk");
                *self.db.write().expect("db lock") = Some(Arc::new(db));
                // A commit that failed may have reached the file anyway: the
                // trees follow what the file holds, not what we applied.
                if let Err(e) = self.build_trees() {
                    log::error!("rebuilding the Merkle trees after a reopen failed: {e}");
                }
            }
            Err(e) => log::error!("reopening the database failed: {e}; retrying at the next write"),
        }
    }

    fn init_meta(&self, dir: &Path, node_id: &str) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let stored_id = meta.get(META_NODE_ID)?.map(|v| v.value().to_vec());
            match stored_id {
                Some(id) if id != node_id.as_bytes() => {
                    return Err(StoreError::Mismatch(format!(
                        "data directory {} belongs to node '{}', not '{}'",
                        dir.display(),
                        String::from_utf8_lossy(&id),
                        node_id
                    )))
                }
                Some(_) => {}
                None => {
                    meta.insert(META_NODE_ID, node_id.as_bytes())?;
                }
            }
            let format = meta.get(META_FORMAT)?.map(|v| v.value().to_vec());
            match format.as_deref() {
                Some([f]) if *f == STORAGE_FORMAT => {}
                Some([f]) if *f == STORAGE_FORMAT_V2 => {
                    let moved = migrate_tombstone_index(&tx)?;
                    log::info!(
                        "upgraded data directory {} from storage format {STORAGE_FORMAT_V2} to \
                         {STORAGE_FORMAT} ({moved} tombstones reindexed by time)",
                        dir.display()
                    );
                    meta.insert(META_FORMAT, [STORAGE_FORMAT].as_slice())?;
                }
                Some(other) => {
                    return Err(StoreError::Mismatch(format!(
                        "data directory {} has storage format {:?}; this build reads formats \
                         {STORAGE_FORMAT_V2} and {STORAGE_FORMAT}",
                        dir.display(),
                        other,
                    )))
                }
                None => {
                    meta.insert(META_FORMAT, [STORAGE_FORMAT].as_slice())?;
                }
            }
            tx.open_table(DATA)?;
            tx.open_table(TOMBSTONE_INDEX)?;
            tx.open_table(HINTS)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn load_hint_tallies(&self) -> Result<(), StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(HINTS)?;
        let mut state = self.hints.lock().expect("hint state");
        for entry in table.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            if let Some(seq) = hint_seq(id) {
                state.next_seq = state.next_seq.max(seq + 1);
            }
            if let Some(target) = hint_target(id) {
                let t = state.tallies.entry(target.to_string()).or_default();
                t.count += 1;
                t.bytes += v.value().len() as u64;
            }
            state.add_version(hint_version_ts(v.value()));
        }
        Ok(())
    }

    /// The oldest version timestamp among the stored hints (`u64::MAX` when
    /// there are none): tombstone GC may purge only tombstones older than
    /// every node's floor, so no hint can bring a purged value back.
    pub fn hints_floor(&self) -> u64 {
        self.hints
            .lock()
            .expect("hint state")
            .versions
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// Raises the restart generation durably and answers it: the larger of
    /// the stored generation plus one and `floor` (the wall clock at start,
    /// so generations bound what a member can claim; see `membership.rs`).
    pub fn bump_generation(&self, floor: u64) -> Result<u64, StoreError> {
        let next = (self.meta_u64(META_GENERATION)?.unwrap_or(0) + 1).max(floor);
        let tx = self.db()?.begin_write()?;
        tx.open_table(META)?
            .insert(META_GENERATION, next.to_be_bytes().as_slice())?;
        tx.commit()?;
        Ok(next)
    }

    /// When this node last recorded itself alive (wall-clock ms), if ever.
    pub fn last_alive_ms(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64(META_LAST_ALIVE)
    }

    /// The highest wall-clock ms this node may have issued timestamps at.
    pub fn clock_ceiling_ms(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64(META_CLOCK_CEILING)
    }

    /// Whether repair mode began and no completing pass has ended it yet.
    pub fn repair_pending(&self) -> Result<bool, StoreError> {
        let tx = self.db()?.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(META_REPAIR_PENDING)?.is_some())
    }

    /// Admits the configured value limit `max_value`: refused when it is
    /// below a limit this data directory ran with before, since values
    /// stored under that one could no longer travel as hints, repairs or
    /// pulls (each refused whole, a hint for ever, holding tombstone GC
    /// back). Otherwise the larger of the two is recorded.
    pub fn admit_value_limit(&self, max_value: u64) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let before = meta.get(META_MAX_VALUE)?.and_then(|v| be_u64(v.value()));
            if let Some(before) = before.filter(|&b| max_value < b) {
                return Err(StoreError::Invalid(format!(
                    "storage.max_value_bytes is {max_value}, but data directory {} ran with \
                     {before} and may hold values that large; a value limit cannot be lowered \
                     (values stored under the old one could not be handed off or repaired): \
                     set it to at least {before}",
                    self.dir.display()
                )));
            }
            if before != Some(max_value) {
                meta.insert(META_MAX_VALUE, max_value.to_be_bytes().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta.get(key)?;
        Ok(v.and_then(|v| be_u64(v.value())))
    }

    /// Reads the record stored for `key` (value or tombstone), if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(DATA)?;
        let found = table.get(data_key(key).as_slice())?;
        match found {
            Some(bytes) => Ok(Some(Record::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Records whose key token lies in `[from, to]` (inclusive, `from <= to`),
    /// in token order, starting after the data key `after` if given, at most
    /// `limit` of them.
    pub fn scan(
        &self,
        from: Token,
        to: Token,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Token, Bytes, Record)>, StoreError> {
        let mut out = Vec::new();
        self.walk(from, to, after, |token, k, v| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push((token, Bytes::copy_from_slice(&k[8..]), Record::decode(v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Data keys and versions (no values) whose token lies in `[from, to]`,
    /// after the data key `after`, at most `max_items` of them and about
    /// `max_bytes` of keys (at least one). A record whose header cannot be
    /// decoded is skipped and logged.
    pub fn scan_versions(
        &self,
        from: Token,
        to: Token,
        after: Option<&[u8]>,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Bytes, Version)>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        self.walk(from, to, after, |_, k, v| {
            if out.len() >= max_items || (!out.is_empty() && bytes + k.len() + 24 > max_bytes) {
                return Ok(false);
            }
            match decode_header(v) {
                Ok((version, _)) => {
                    bytes += k.len() + 24;
                    out.push((Bytes::copy_from_slice(k), version));
                }
                Err(e) => log::error!("skipping a corrupt record in a scan: {e}"),
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `visit(token, data_key, encoded_record)` for each record in
    /// `[from, to]` after `after`, in order, until it answers false.
    fn walk(
        &self,
        from: Token,
        to: Token,
        after: Option<&[u8]>,
        mut visit: impl FnMut(Token, &[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(DATA)?;
        let start = from.to_be_bytes();
        let iter = match after {
            Some(a) if a >= start.as_slice() => {
                table.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            _ => table.range::<&[u8]>(start.as_slice()..)?,
        };
        for entry in iter {
            let (k, v) = entry?;
            let k = k.value();
            let token = data_key_token(k);
            if token > to || k.len() < 8 {
                break;
            }
            if token < from {
                continue;
            }
            if !visit(token, k, v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Tombstones whose version timestamp is below `before_ts`, oldest first,
    /// after the index key `after`, at most `limit`: their index keys and keys.
    pub fn tombstones_before(
        &self,
        before_ts: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(TOMBSTONE_INDEX)?;
        let iter = match after {
            Some(a) => {
                table.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => table.range::<&[u8]>(..)?,
        };
        let mut out = Vec::new();
        for entry in iter {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let ik = k.value();
            if ik.len() < 16 || u64_prefix(ik) >= before_ts {
                break;
            }
            out.push((ik.to_vec(), Bytes::copy_from_slice(&ik[16..])));
        }
        Ok(out)
    }

    /// The oldest hints for `target` after the id `after`, with their ids: at
    /// most `max_items`, and no more than `max_bytes` once sent as records
    /// (each counted as [`crate::limits::record_wire_bytes`]; at least one).
    pub fn hints_for(
        &self,
        target: &str,
        after: Option<&[u8]>,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<HintPage, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(HINTS)?;
        let prefix = hint_prefix(target);
        let iter = match after {
            Some(a) if a.starts_with(&prefix) => {
                table.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            _ => table.range::<&[u8]>(prefix.as_slice()..)?,
        };
        let mut page = HintPage::default();
        let mut bytes = 0;
        for (seen, entry) in iter.enumerate() {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) || seen >= max_items {
                break;
            }
            // The stored hint holds key and value plus 30 bytes of header:
            // what it adds to a frame is at most this.
            let len = v.value().len() + crate::limits::RECORD_OVERHEAD;
            if seen > 0 && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            let id = k.value().to_vec();
            page.next = Some(id.clone());
            match decode_hint(target, v.value()) {
                Ok(h) => page.hints.push((id, h)),
                Err(e) => {
                    log::error!("a stored hint for {target} cannot be decoded: {e}");
                    page.corrupt.push(id);
                }
            }
        }
        Ok(page)
    }

    /// Hints held per target node.
    pub fn hint_tallies(&self) -> HashMap<String, HintTally> {
        self.hints.lock().expect("hint state").tallies.clone()
    }

    /// Applies a batch of mutations in one transaction and commits once.
    /// Later mutations in the batch see the effects of earlier ones. `Err`
    /// when the batch as a whole failed (nothing of it is stored, or — for
    /// [`StoreError::Io`] — nothing is known); otherwise one result per
    /// mutation.
    pub fn apply(&self, batch: &[Mutation]) -> Result<Vec<ItemResult>, StoreError> {
        if self.db.read().expect("db lock").is_none() {
            self.reopen();
        }
        self.check_free_space(batch)?;
        let result = self.apply_tx(batch);
        if let Err(StoreError::DiskFull(_)) = &result {
            self.reopen();
        }
        result
    }

    /// Refuses a batch that would leave less than `min_free_bytes` free.
    fn check_free_space(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        let min_free = self.options.min_free_bytes;
        if min_free == 0 {
            return Ok(());
        }
        let Some(free) = free_bytes(&self.dir) else {
            return Ok(());
        };
        // Bookkeeping (liveness, clock reservation, repair mode) is a few
        // bytes and must commit even on a full disk: a node that cannot
        // record entering or leaving repair mode cannot start or serve.
        let needed: u64 = batch
            .iter()
            .filter(|m| !matches!(m, Mutation::Meta { .. } | Mutation::RepairPending(_)))
            .map(|m| m.weight() as u64)
            .sum::<u64>()
            * 2;
        if needed == 0 {
            return Ok(());
        }
        if free < min_free.saturating_add(needed) {
            return Err(StoreError::DiskFull(format!(
                "{free} bytes free on {}, keeping at least {min_free} free (storage.min_free_bytes)",
                self.dir.display(),
            )));
        }
        Ok(())
    }

    fn apply_tx(&self, batch: &[Mutation]) -> Result<Vec<ItemResult>, StoreError> {
        let mut tx = self.db()?.begin_write()?;
        tx.set_durability(if self.options.durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut changes = Vec::new();
        let mut unreadable = Vec::new();
        let mut hints = self.hints.lock().expect("hint state").clone();
        {
            let mut data = tx.open_table(DATA)?;
            let mut tombs = tx.open_table(TOMBSTONE_INDEX)?;
            let mut hint_table = tx.open_table(HINTS)?;
            let mut meta = tx.open_table(META)?;
            for m in batch {
                outcomes.push(match m {
                    Mutation::Put(op) => item(put(
                        &mut data,
                        &mut tombs,
                        op,
                        &mut changes,
                        &mut unreadable,
                    ))?,
                    Mutation::Purge { key, version } => {
                        item(purge(&mut data, &mut tombs, key, *version, &mut changes))?
                    }
                    Mutation::Drop { key, version } => item(drop_exact(
                        &mut data,
                        &mut tombs,
                        key,
                        *version,
                        &mut changes,
                    ))?,
                    Mutation::Hint(h) => item(self.put_hint(&mut hint_table, &mut hints, h))?,
                    Mutation::DeleteHints(ids) => {
                        Ok(delete_hints(&mut hint_table, &mut hints, ids)?)
                    }
                    Mutation::Meta {
                        alive_ms,
                        clock_ceiling_ms,
                    } => Ok(record_meta(&mut meta, *alive_ms, *clock_ceiling_ms)?),
                    Mutation::RepairPending(on) => Ok(record_repair_pending(&mut meta, *on)?),
                });
            }
        }
        tx.commit()?;
        hints.tallies.retain(|_, t| t.count > 0);
        *self.hints.lock().expect("hint state") = hints;
        // After the commit, in commit order (one writer), once.
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        for c in &changes {
            trees.apply(c);
        }
        // A replaced unreadable record's old version is unknown, so its
        // partition's tree is rebuilt from the data (rare: corruption). The
        // batch is committed whatever happens here: a rebuild that fails is
        // retried after a later commit, waiting longer each time
        // (`stale.rs`), never reported as the batch failing.
        let mut stale = self.stale_trees.lock().unwrap_or_else(|p| p.into_inner());
        for k in &unreadable {
            stale.mark(trees.leaf_of_key(k).0);
        }
        drop(trees);
        if stale.is_empty() {
            return Ok(outcomes);
        }
        let now = std::time::Instant::now();
        // Every due partition is tried: one that keeps failing does not
        // hold back the others.
        let mut failed = false;
        for p in stale.due(now) {
            match self.rebuild_tree(p) {
                Ok(()) => stale.rebuilt(p),
                Err(e) => {
                    failed = true;
                    log::warn!(
                        "rebuilding the Merkle tree of partition {p} failed ({e}); retried \
                         after a later commit"
                    );
                }
            }
        }
        if failed {
            stale.failed(now);
        }
        Ok(outcomes)
    }

    /// Rebuilds partition `p`'s tree by a scan of its records.
    fn rebuild_tree(&self, p: PartitionId) -> Result<(), StoreError> {
        let (from, to) = crate::layout::partition::span(p, self.options.partition_bits);
        let mut fresh = PartitionTrees::new(self.options.partition_bits, DEFAULT_TREE_DEPTH);
        self.walk(from, to, None, |_, k, v| {
            if let Ok((version, _)) = decode_header(v) {
                fresh.insert(&k[8..], version);
            }
            Ok(true)
        })?;
        self.trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(p, fresh.take(p));
        Ok(())
    }

    fn put_hint(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
        state: &mut HintState,
        h: &Hint,
    ) -> Result<WriteOutcome, StoreError> {
        if h.target.as_bytes().contains(&0) {
            return Err(StoreError::Invalid(
                "a hint target may not contain NUL".into(),
            ));
        }
        let prefix = hint_prefix(&h.target);
        let mut id = prefix.clone();
        id.extend_from_slice(&state.next_seq.to_be_bytes());
        state.next_seq += 1;
        let bytes = encode_hint(h);
        let limits = self.options.hint_limits;
        if !limits.evict {
            // Hints count toward W (sloppy quorum): none may be dropped, so a
            // full store refuses the new one instead.
            let tally = state.tallies.get(&h.target).copied().unwrap_or_default();
            if tally.count > 0
                && (tally.count + 1 > limits.max_count
                    || tally.bytes + bytes.len() as u64 > limits.max_bytes)
            {
                return Err(StoreError::Overloaded(format!(
                    "the hints kept for {} are at their bound ({} hints, {} bytes)",
                    h.target, tally.count, tally.bytes
                )));
            }
        }
        table.insert(id.as_slice(), bytes.as_slice())?;
        state.add_version(Some(h.record.version.ts));
        let tally = state.tallies.entry(h.target.clone()).or_default();
        tally.count += 1;
        tally.bytes += bytes.len() as u64;
        let mut dropped = 0;
        let mut gone = Vec::new();
        while tally.count > limits.max_count || tally.bytes > limits.max_bytes {
            let oldest = table
                .range::<&[u8]>(prefix.as_slice()..)?
                .next()
                .transpose()?
                .filter(|(k, _)| k.value().starts_with(&prefix))
                .map(|(k, v)| (k.value().to_vec(), v.value().len() as u64));
            // Never the new hint itself: it holds the write just acknowledged.
            let Some((old_id, len)) = oldest.filter(|(old, _)| *old != id) else {
                break;
            };
            if let Some(v) = table.remove(old_id.as_slice())? {
                gone.push(hint_version_ts(v.value()));
            }
            tally.count -= 1;
            tally.bytes = tally.bytes.saturating_sub(len);
            dropped += 1;
        }
        for ts in gone {
            state.remove_version(ts);
        }
        Ok(WriteOutcome::Hinted { dropped })
    }

    /// Number of records (values and tombstones) stored; O(1) in redb.
    pub fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(DATA)?;
        Ok(table.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Overwrites the stored bytes of `key` (tests of corruption only).
    #[cfg(test)]
    pub(crate) fn corrupt_for_test(&self, key: &[u8], bytes: &[u8]) {
        let tx = self.db().unwrap().begin_write().unwrap();
        tx.open_table(DATA)
            .unwrap()
            .insert(data_key(key).as_slice(), bytes)
            .unwrap();
        tx.commit().unwrap();
    }
}

/// Splits a mutation's own failure (it fails alone) from a failure of the
/// transaction (the batch fails).
fn item(r: Result<WriteOutcome, StoreError>) -> Result<ItemResult, StoreError> {
    match r {
        Err(e @ (StoreError::Corrupt(_) | StoreError::Invalid(_) | StoreError::Overloaded(_))) => {
            log::error!("a mutation failed on its own: {e}");
            Ok(Err(e))
        }
        other => other.map(Ok),
    }
}

fn open_db(dir: &Path, faults: &Arc<Faults>) -> Result<Database, StoreError> {
    let path = dir.join(DB_FILE);
    let file = crate::storage::backend::open_private(&path).map_err(|e| {
        if is_disk_full(&e) {
            StoreError::DiskFull(e.to_string())
        } else {
            StoreError::Engine(format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let backend = redb::backends::FileBackend::new(file)?;
    Database::builder()
        .create_with_backend(FaultyFileBackend::new(backend, faults.clone()))
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(dir.into()),
            other => StoreError::from(other),
        })
}

/// Storage format 2 indexed tombstones by key; format 3 by time.
fn migrate_tombstone_index(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut moved = 0;
    {
        let old = tx.open_table(TOMBSTONES_V2)?;
        let mut new = tx.open_table(TOMBSTONE_INDEX)?;
        for entry in old.iter()? {
            let (dk, ts) = entry?;
            new.insert(tombstone_index_key(ts.value(), dk.value()).as_slice(), ())?;
            moved += 1;
        }
    }
    tx.delete_table(TOMBSTONES_V2)?;
    Ok(moved)
}

fn put(
    data: &mut redb::Table<&[u8], &[u8]>,
    tombs: &mut redb::Table<&[u8], ()>,
    op: &WriteOp,
    changes: &mut Vec<Change>,
    unreadable: &mut Vec<Bytes>,
) -> Result<WriteOutcome, StoreError> {
    let dk = data_key(&op.key);
    let current = match data.get(dk.as_slice())? {
        // A stored record that cannot be decoded is lost whatever happens;
        // a write replaces it (the other replicas hold its newest version,
        // and repair brings it back if it was newer than this one).
        Some(bytes) => match decode_header(bytes.value()) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!("a write replaces a stored record that cannot be decoded: {e}");
                unreadable.push(op.key.clone());
                None
            }
        },
        None => None,
    };
    if let Some((cur, tombstone)) = current {
        if cur >= op.record.version {
            return Ok(WriteOutcome::Superseded {
                current: cur,
                tombstone,
            });
        }
    }
    data.insert(dk.as_slice(), op.record.encode().as_slice())?;
    if let Some((cur, true)) = current {
        tombs.remove(tombstone_index_key(cur.ts, &dk).as_slice())?;
    }
    if op.record.is_tombstone() {
        tombs.insert(
            tombstone_index_key(op.record.version.ts, &dk).as_slice(),
            (),
        )?;
    }
    changes.push(Change {
        key: op.key.clone(),
        before: current.map(|(v, _)| v),
        after: Some(op.record.version),
    });
    Ok(WriteOutcome::Applied {
        replaced_live: matches!(current, Some((_, false))),
    })
}

fn purge(
    data: &mut redb::Table<&[u8], &[u8]>,
    tombs: &mut redb::Table<&[u8], ()>,
    key: &[u8],
    version: Version,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    let dk = data_key(key);
    let current = match data.get(dk.as_slice())? {
        Some(bytes) => Some(decode_header(bytes.value())?),
        None => None,
    };
    if current == Some((version, true)) {
        data.remove(dk.as_slice())?;
        tombs.remove(tombstone_index_key(version.ts, &dk).as_slice())?;
        changes.push(Change {
            key: Bytes::copy_from_slice(key),
            before: Some(version),
            after: None,
        });
        return Ok(WriteOutcome::Done { changed: true });
    }
    Ok(WriteOutcome::Done { changed: false })
}

fn drop_exact(
    data: &mut redb::Table<&[u8], &[u8]>,
    tombs: &mut redb::Table<&[u8], ()>,
    key: &[u8],
    version: Version,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    let dk = data_key(key);
    let current = match data.get(dk.as_slice())? {
        Some(bytes) => Some(decode_header(bytes.value())?),
        None => None,
    };
    let Some((v, tombstone)) = current.filter(|(v, _)| *v == version) else {
        return Ok(WriteOutcome::Done { changed: false });
    };
    data.remove(dk.as_slice())?;
    if tombstone {
        tombs.remove(tombstone_index_key(v.ts, &dk).as_slice())?;
    }
    changes.push(Change {
        key: Bytes::copy_from_slice(key),
        before: Some(v),
        after: None,
    });
    Ok(WriteOutcome::Done { changed: true })
}

fn delete_hints(
    table: &mut redb::Table<&[u8], &[u8]>,
    state: &mut HintState,
    ids: &[HintId],
) -> Result<WriteOutcome, StoreError> {
    let mut changed = false;
    for id in ids {
        if let Some(v) = table.remove(id.as_slice())? {
            changed = true;
            let len = v.value().len() as u64;
            let ts = hint_version_ts(v.value());
            if let Some(t) = hint_target(id).and_then(|t| state.tallies.get_mut(t)) {
                t.count = t.count.saturating_sub(1);
                t.bytes = t.bytes.saturating_sub(len);
            }
            state.remove_version(ts);
        }
    }
    Ok(WriteOutcome::Done { changed })
}

/// A stored big-endian u64 (`None`: not 8 bytes).
fn be_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn record_meta(
    meta: &mut redb::Table<&str, &[u8]>,
    alive_ms: Option<u64>,
    clock_ceiling_ms: Option<u64>,
) -> Result<WriteOutcome, StoreError> {
    let mut changed = false;
    if let Some(ms) = alive_ms {
        meta.insert(META_LAST_ALIVE, ms.to_be_bytes().as_slice())?;
        changed = true;
    }
    if let Some(ceiling) = clock_ceiling_ms {
        let stored = meta
            .get(META_CLOCK_CEILING)?
            .and_then(|v| be_u64(v.value()))
            .unwrap_or(0);
        if ceiling > stored {
            meta.insert(META_CLOCK_CEILING, ceiling.to_be_bytes().as_slice())?;
            changed = true;
        }
    }
    Ok(WriteOutcome::Done { changed })
}

fn record_repair_pending(
    meta: &mut redb::Table<&str, &[u8]>,
    on: bool,
) -> Result<WriteOutcome, StoreError> {
    let changed = if on {
        meta.insert(META_REPAIR_PENDING, [1u8].as_slice())?
            .is_none()
    } else {
        meta.remove(META_REPAIR_PENDING)?.is_some()
    };
    Ok(WriteOutcome::Done { changed })
}

#[cfg(test)]
mod tests;
