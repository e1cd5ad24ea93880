//! Durable storage on redb: the only module that names redb.
//!
//! Tables (all declared here):
//! * `data`: key bytes → encoded [`Record`] (value or tombstone with version);
//! * `meta`: string → bytes: the node id the directory belongs to and the
//!   storage format version;
//! * `hints`: reserved for hinted handoff (step 04) so its table name is fixed.
//!
//! Writes go through [`Store::apply`], which runs a whole batch in one write
//! transaction and commits once: the replica actor uses it for group commit.
//! Every write carries its version and applies only if it is newer than the
//! stored one (last write wins), so replaying, reordering or duplicating writes
//! never moves a key backwards. Reads ([`Store::get`]) open their own MVCC read
//! transaction and never wait for the writer.
//!
//! Redb allows one writer at a time and many concurrent readers; with
//! `Durability::Immediate` a commit returns only once it is on disk (fsync).

use crate::record::{decode_header, DecodeError, Record};
use crate::version::Version;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const HINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hints");

/// Version of the on-disk layout (tables and record format) this code writes.
pub const STORAGE_FORMAT: u8 = 1;
const META_NODE_ID: &str = "node_id";
const META_FORMAT: &str = "format";
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

/// What a write requires of the stored record before it applies.
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

/// One write in a batch: store `record` under `key` if it is newer.
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub key: Bytes,
    pub record: Record,
}

/// What happened to one write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored; `replaced_live` tells whether a live value was there before.
    Applied { replaced_live: bool },
    /// The stored version is newer than (or equal to) the write's; nothing changed.
    Superseded { current: Version },
}

/// A node's durable store. Cheap to clone; shared by the writer and readers.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    durable: bool,
}

impl Store {
    /// Opens (or creates) the store in `dir` for node `node_id`.
    /// `durable = false` commits without fsync (for tests and benchmarks only).
    pub fn open(dir: &Path, node_id: &str, durable: bool) -> Result<Store, StoreError> {
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
        let db = Database::builder()
            .create(dir.join(DB_FILE))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(dir.into()),
                other => StoreError::from(other),
            })?;
        let store = Store {
            db: Arc::new(db),
            durable,
        };
        store.init_meta(dir, node_id)?;
        Ok(store)
    }

    fn init_meta(&self, dir: &Path, node_id: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
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
            tx.open_table(HINTS)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads the record stored for `key` (value or tombstone), if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DATA)?;
        let found = table.get(key)?;
        match found {
            Some(bytes) => Ok(Some(Record::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Applies a batch of writes in one transaction and commits once.
    /// Later operations in the batch see the effects of earlier ones.
    pub fn apply(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if self.durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut table = tx.open_table(DATA)?;
            for op in ops {
                let current = match table.get(op.key.as_ref())? {
                    Some(bytes) => Some(decode_header(bytes.value())?),
                    None => None,
                };
                outcomes.push(match current {
                    Some((cur, _)) if cur >= op.record.version => {
                        WriteOutcome::Superseded { current: cur }
                    }
                    _ => {
                        table.insert(op.key.as_ref(), op.record.encode().as_slice())?;
                        WriteOutcome::Applied {
                            replaced_live: matches!(current, Some((_, false))),
                        }
                    }
                });
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Number of records (values and tombstones) stored; O(1) in redb.
    pub fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DATA)?;
        Ok(table.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
