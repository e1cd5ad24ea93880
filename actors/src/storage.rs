//! Durable storage on redb: the only module that names redb.
//!
//! Tables (all declared here):
//! * `data`: `token (8 bytes BE) || key` → encoded [`Record`] (value or
//!   tombstone with version). Prefixing the ring token orders records by ring
//!   position, so anti-entropy reads one token range with one range scan
//!   instead of scanning every key. Lookups compute the token (one xxHash).
//! * `tombstones`: `token || key` → version timestamp of every tombstone, so
//!   tombstone GC visits tombstones only.
//! * `hints`: `target node id || 0x00 || seq (8 bytes BE)` → encoded hint (a
//!   write kept for a replica that was down; see [`Hint`]).
//! * `meta`: string → bytes: the node id the directory belongs to, the storage
//!   format, and the restart generation.
//!
//! Every change goes through [`Store::apply`], which runs a whole batch of
//! [`Mutation`]s in one write transaction and commits once: the replica actor
//! uses it for group commit. Record writes carry their version and apply only
//! if newer than the stored one (last write wins), so replaying, reordering or
//! duplicating writes never moves a key backwards. Reads ([`Store::get`],
//! [`Store::scan`]) open their own MVCC read transaction and never wait for the
//! writer.
//!
//! Hints are bounded per target node by count and bytes: storing one beyond
//! the bound drops that target's oldest hints (never the new write), and the
//! number dropped is reported so the caller can count it and schedule
//! anti-entropy.
//!
//! Redb allows one writer at a time and many concurrent readers; with
//! `Durability::Immediate` a commit returns only once it is on disk (fsync).

use crate::record::{decode_header, DecodeError, Record};
use crate::ring::{key_token, Token};
use crate::version::Version;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
pub const TOMBSTONES: TableDefinition<&[u8], u64> = TableDefinition::new("tombstones");
pub const HINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hints");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Version of the on-disk layout (tables and record format) this code writes.
pub const STORAGE_FORMAT: u8 = 2;
const META_NODE_ID: &str = "node_id";
const META_FORMAT: &str = "format";
const META_GENERATION: &str = "generation";
const META_LAST_ALIVE: &str = "last_alive_ms";
/// File name of the database inside a node's data directory.
pub const DB_FILE: &str = "ringkv.redb";

/// What went wrong in storage, grouped by what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: refuse writes (HTTP 507) until space is freed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Another process has this data directory open.
    #[error("data directory {0} is already in use by another ringkv process")]
    AlreadyOpen(PathBuf),
    /// The directory belongs to another node or another format.
    #[error("{0}")]
    Mismatch(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt record for a key: {0}")]
    Corrupt(#[from] DecodeError),
    /// Any other I/O or engine failure.
    #[error("storage error: {0}")]
    Engine(String),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen(PathBuf::new()),
            redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull(io.to_string()),
            redb::Error::PreviousIo => StoreError::Engine(
                "an earlier I/O error (often a full disk) stopped writes; reopening the database"
                    .into(),
            ),
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

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
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
}

/// What happened to one mutation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored; `replaced_live` tells whether a live value was there before.
    Applied { replaced_live: bool },
    /// The stored version is newer than (or equal to) the write's; nothing changed.
    Superseded { current: Version },
    /// A hint was stored; `dropped` older hints of its target made room.
    Hinted { dropped: u64 },
    /// Hints deleted or a tombstone purged (`changed`: whether anything was removed).
    Done { changed: bool },
}

/// Bounds on the hints kept for one target node.
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    pub max_count: u64,
    pub max_bytes: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            max_count: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

/// Hints held for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintTally {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct HintState {
    next_seq: u64,
    tallies: HashMap<String, HintTally>,
}

/// A node's durable store. Cheap to clone; shared by the writer and readers.
#[derive(Clone)]
pub struct Store {
    /// `None` only while the database is being reopened after an I/O error.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    dir: PathBuf,
    durable: bool,
    hint_limits: HintLimits,
    /// Commits are refused (disk full) when less than this would stay free.
    min_free_bytes: u64,
    hints: Arc<Mutex<HintState>>,
}

/// How long a reopen waits for in-flight readers of the old handle.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

/// `token || key`: the `data` and `tombstones` table key of `key`.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&key_token(key).to_be_bytes());
    k.extend_from_slice(key);
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

impl Store {
    /// Opens (or creates) the store in `dir` for node `node_id`.
    /// `durable = false` commits without fsync (for tests and benchmarks only).
    pub fn open(dir: &Path, node_id: &str, durable: bool) -> Result<Store, StoreError> {
        Self::open_with(dir, node_id, durable, HintLimits::default(), 0)
    }

    pub fn open_with(
        dir: &Path,
        node_id: &str,
        durable: bool,
        hint_limits: HintLimits,
        min_free_bytes: u64,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            if is_disk_full(&e) {
                StoreError::DiskFull(e.to_string())
            } else {
                StoreError::Engine(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            }
        })?;
        let db = open_db(dir)?;
        let store = Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            dir: dir.to_path_buf(),
            durable,
            hint_limits,
            min_free_bytes,
            hints: Arc::default(),
        };
        store.init_meta(dir, node_id)?;
        store.load_hint_tallies()?;
        Ok(store)
    }

    /// The current database handle.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .expect("db lock")
            .clone()
            .ok_or_else(|| StoreError::Engine("the database is being reopened".into()))
    }

    /// Replaces the handle after an I/O error (redb refuses every later write
    /// on a handle that saw one): waits for readers of the old handle, then
    /// opens the file again.
    fn reopen(&self) {
        let mut slot = self.db.write().expect("db lock");
        let Some(old) = slot.take() else { return };
        let weak = Arc::downgrade(&old);
        drop(old);
        let started = std::time::Instant::now();
        while weak.strong_count() > 0 && started.elapsed() < REOPEN_WAIT {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        match open_db(&self.dir) {
            Ok(db) => {
                log::info!("reopened the database after an I/O error");
                *slot = Some(Arc::new(db));
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
                Some(other) => {
                    return Err(StoreError::Mismatch(format!(
                        "data directory {} has storage format {:?}; this build reads format {}",
                        dir.display(),
                        other,
                        STORAGE_FORMAT
                    )))
                }
                None => {
                    meta.insert(META_FORMAT, [STORAGE_FORMAT].as_slice())?;
                }
            }
            tx.open_table(DATA)?;
            tx.open_table(TOMBSTONES)?;
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
            let seq = u64::from_be_bytes(id[id.len() - 8..].try_into().expect("8"));
            state.next_seq = state.next_seq.max(seq + 1);
            if let Some(target) = hint_target(id) {
                let t = state.tallies.entry(target.to_string()).or_default();
                t.count += 1;
                t.bytes += v.value().len() as u64;
            }
        }
        Ok(())
    }

    /// Increments and returns the restart generation (durably).
    pub fn bump_generation(&self) -> Result<u64, StoreError> {
        let next = self.meta_u64(META_GENERATION)?.unwrap_or(0) + 1;
        self.set_meta_u64(META_GENERATION, next)?;
        Ok(next)
    }

    /// When this node last recorded itself alive (wall-clock ms), if ever.
    pub fn last_alive_ms(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64(META_LAST_ALIVE)
    }

    pub fn set_last_alive_ms(&self, ms: u64) -> Result<(), StoreError> {
        self.set_meta_u64(META_LAST_ALIVE, ms)
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let meta = tx.open_table(META)?;
        let v = meta.get(key)?;
        Ok(v.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)))
    }

    fn set_meta_u64(&self, key: &str, value: u64) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        tx.open_table(META)?
            .insert(key, value.to_be_bytes().as_slice())?;
        tx.commit()?;
        Ok(())
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
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(DATA)?;
        let start = from.to_be_bytes();
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => {
                table.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => table.range::<&[u8]>(start.as_slice()..)?,
        };
        for entry in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            let k = k.value();
            let token = u64::from_be_bytes(k[..8].try_into().expect("8"));
            if token > to {
                break;
            }
            if token < from {
                continue;
            }
            out.push((
                token,
                Bytes::copy_from_slice(&k[8..]),
                Record::decode(v.value())?,
            ));
        }
        Ok(out)
    }

    /// Tombstones (key and version timestamp) from the data key `after` on, at
    /// most `limit`.
    pub fn tombstones(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, u64)>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(TOMBSTONES)?;
        let iter = match after {
            Some(a) => {
                table.range::<&[u8]>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => table.range::<&[u8]>(..)?,
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (k, v) = entry?;
            let dk = k.value().to_vec();
            let key = Bytes::copy_from_slice(&dk[8..]);
            out.push((dk, key, v.value()));
        }
        Ok(out)
    }

    /// Up to `limit` of the oldest hints for `target`, with their ids.
    pub fn hints_for(&self, target: &str, limit: usize) -> Result<Vec<(HintId, Hint)>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(HINTS)?;
        let prefix = hint_prefix(target);
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(prefix.as_slice()..)?.take(limit) {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push((k.value().to_vec(), decode_hint(target, v.value())?));
        }
        Ok(out)
    }

    /// Hints held per target node.
    pub fn hint_tallies(&self) -> HashMap<String, HintTally> {
        self.hints.lock().expect("hint state").tallies.clone()
    }

    /// Applies a batch of mutations in one transaction and commits once.
    /// Later mutations in the batch see the effects of earlier ones.
    pub fn apply(&self, batch: &[Mutation]) -> Result<Vec<WriteOutcome>, StoreError> {
        if self.db.read().expect("db lock").is_none() {
            self.reopen();
        }
        self.check_free_space(batch)?;
        let result = self.apply_tx(batch);
        if let Err(StoreError::DiskFull(_) | StoreError::Engine(_)) = &result {
            self.reopen();
        }
        result
    }

    /// Refuses a batch that would leave less than `min_free_bytes` free.
    fn check_free_space(&self, batch: &[Mutation]) -> Result<(), StoreError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let Some(free) = free_bytes(&self.dir) else {
            return Ok(());
        };
        let needed: u64 = batch
            .iter()
            .map(|m| match m {
                Mutation::Put(op) => {
                    64 + op.key.len() + op.record.value.as_ref().map_or(0, |v| v.len())
                }
                Mutation::Hint(h) => {
                    64 + h.key.len() + h.record.value.as_ref().map_or(0, |v| v.len())
                }
                _ => 64,
            } as u64)
            .sum::<u64>()
            * 2;
        if free < self.min_free_bytes.saturating_add(needed) {
            return Err(StoreError::DiskFull(format!(
                "{free} bytes free on {}, keeping at least {} free (storage.min_free_bytes)",
                self.dir.display(),
                self.min_free_bytes
            )));
        }
        Ok(())
    }

    fn apply_tx(&self, batch: &[Mutation]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = self.db()?.begin_write()?;
        tx.set_durability(if self.durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut hints = self.hints.lock().expect("hint state").clone_state();
        {
            let mut data = tx.open_table(DATA)?;
            let mut tombs = tx.open_table(TOMBSTONES)?;
            let mut hint_table = tx.open_table(HINTS)?;
            for m in batch {
                outcomes.push(match m {
                    Mutation::Put(op) => put(&mut data, &mut tombs, op)?,
                    Mutation::Purge { key, version } => {
                        purge(&mut data, &mut tombs, key, *version)?
                    }
                    Mutation::Hint(h) => self.put_hint(&mut hint_table, &mut hints, h)?,
                    Mutation::DeleteHints(ids) => {
                        let mut changed = false;
                        for id in ids {
                            if let Some(v) = hint_table.remove(id.as_slice())? {
                                changed = true;
                                let len = v.value().len() as u64;
                                if let Some(t) =
                                    hint_target(id).and_then(|t| hints.tallies.get_mut(t))
                                {
                                    t.count = t.count.saturating_sub(1);
                                    t.bytes = t.bytes.saturating_sub(len);
                                }
                            }
                        }
                        WriteOutcome::Done { changed }
                    }
                });
            }
        }
        tx.commit()?;
        hints.tallies.retain(|_, t| t.count > 0);
        *self.hints.lock().expect("hint state") = hints;
        Ok(outcomes)
    }

    fn put_hint(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
        state: &mut HintState,
        h: &Hint,
    ) -> Result<WriteOutcome, StoreError> {
        let prefix = hint_prefix(&h.target);
        let mut id = prefix.clone();
        id.extend_from_slice(&state.next_seq.to_be_bytes());
        state.next_seq += 1;
        let bytes = encode_hint(h);
        table.insert(id.as_slice(), bytes.as_slice())?;
        let tally = state.tallies.entry(h.target.clone()).or_default();
        tally.count += 1;
        tally.bytes += bytes.len() as u64;
        let mut dropped = 0;
        while tally.count > self.hint_limits.max_count || tally.bytes > self.hint_limits.max_bytes {
            let oldest = table
                .range::<&[u8]>(prefix.as_slice()..)?
                .next()
                .transpose()?
                .filter(|(k, _)| k.value().starts_with(&prefix))
                .map(|(k, v)| (k.value().to_vec(), v.value().len() as u64));
            let Some((old_id, len)) = oldest else { break };
            table.remove(old_id.as_slice())?;
            tally.count -= 1;
            tally.bytes = tally.bytes.saturating_sub(len);
            dropped += 1;
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
}

impl HintState {
    fn clone_state(&self) -> HintState {
        HintState {
            next_seq: self.next_seq,
            tallies: self.tallies.clone(),
        }
    }
}

fn open_db(dir: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .create(dir.join(DB_FILE))
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(dir.into()),
            other => StoreError::from(other),
        })
}

fn put(
    data: &mut redb::Table<&[u8], &[u8]>,
    tombs: &mut redb::Table<&[u8], u64>,
    op: &WriteOp,
) -> Result<WriteOutcome, StoreError> {
    let dk = data_key(&op.key);
    let current = match data.get(dk.as_slice())? {
        Some(bytes) => Some(decode_header(bytes.value())?),
        None => None,
    };
    if let Some((cur, _)) = current {
        if cur >= op.record.version {
            return Ok(WriteOutcome::Superseded { current: cur });
        }
    }
    data.insert(dk.as_slice(), op.record.encode().as_slice())?;
    let was_tombstone = matches!(current, Some((_, true)));
    if op.record.is_tombstone() {
        tombs.insert(dk.as_slice(), op.record.version.ts)?;
    } else if was_tombstone {
        tombs.remove(dk.as_slice())?;
    }
    Ok(WriteOutcome::Applied {
        replaced_live: matches!(current, Some((_, false))),
    })
}

fn purge(
    data: &mut redb::Table<&[u8], &[u8]>,
    tombs: &mut redb::Table<&[u8], u64>,
    key: &[u8],
    version: Version,
) -> Result<WriteOutcome, StoreError> {
    let dk = data_key(key);
    let current = match data.get(dk.as_slice())? {
        Some(bytes) => Some(decode_header(bytes.value())?),
        None => None,
    };
    if current == Some((version, true)) {
        data.remove(dk.as_slice())?;
        tombs.remove(dk.as_slice())?;
        return Ok(WriteOutcome::Done { changed: true });
    }
    Ok(WriteOutcome::Done { changed: false })
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
