//! The Raft log in redb: entries by index, and the vote, committed and
//! purged log ids, in `meta.redb` beside the data (its own file, so the
//! data writer never waits on consensus, nor consensus on group commit).
//! Every change is one transaction committed durably (fsync) before
//! openraft is told it is done: a vote or an entry acknowledged to a peer
//! survives a crash.

use super::{storage_error, Entry, LogId, MetaTypes, StorageError};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorVerb, LogState, RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

const VOTE: &str = "vote";
pub const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// The file holding the metadata log and snapshots.
pub const META_FILE: &str = "meta.redb";

/// Opens (or creates) `dir/meta.redb` with both tables.
pub fn open(dir: &Path) -> Result<Arc<Database>, String> {
    let path = dir.join(META_FILE);
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    // Private like the data file (0600 whatever the umask).
    let file = crate::storage::open_private(&path).map_err(|e| at(&e))?;
    let backend = redb::backends::FileBackend::new(file).map_err(|e| at(&e))?;
    let db = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| at(&e))?;
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    tx.open_table(LOG).map_err(|e| e.to_string())?;
    tx.open_table(STATE).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(Arc::new(db))
}

/// Reads a value of the state table.
pub fn get_state<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let t = tx.open_table(STATE).map_err(|e| e.to_string())?;
    match t.get(key).map_err(|e| e.to_string())? {
        Some(v) => crate::wire::decode_value(v.value())
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
        None => Ok(None),
    }
}

/// Writes a value of the state table durably.
pub fn put_state<T: serde::Serialize>(db: &Database, key: &str, value: &T) -> Result<(), String> {
    let bytes = crate::wire::encode_value(value).map_err(|e| e.to_string())?;
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = tx.open_table(STATE).map_err(|e| e.to_string())?;
        t.insert(key, bytes.as_slice()).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

/// The log store openraft drives.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn last_entry(&self) -> Result<Option<LogId>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = tx.open_table(LOG).map_err(|e| e.to_string())?;
        let last = t.last().map_err(|e| e.to_string())?;
        let id = match last {
            Some((_, v)) => {
                let e: Entry = crate::wire::decode_value(v.value()).map_err(|e| e.to_string())?;
                Some(e.log_id)
            }
            None => None,
        };
        Ok(id)
    }

    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = tx.open_table(LOG).map_err(|e| e.to_string())?;
            t.retain_in(range, |_, _| false)
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl RaftLogReader<MetaTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = || -> Result<Vec<Entry>, String> {
            let tx = self.db.begin_read().map_err(|e| e.to_string())?;
            let t = tx.open_table(LOG).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for item in t.range(range).map_err(|e| e.to_string())? {
                let (_, v) = item.map_err(|e| e.to_string())?;
                out.push(crate::wire::decode_value(v.value()).map_err(|e| e.to_string())?);
            }
            Ok(out)
        };
        read().map_err(|e| storage_error(ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<MetaTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<MetaTypes>, StorageError> {
        let purged: Option<LogId> =
            get_state(&self.db, PURGED).map_err(|e| storage_error(ErrorVerb::Read, e))?;
        let last = self
            .last_entry()
            .map_err(|e| storage_error(ErrorVerb::Read, e))?
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        put_state(&self.db, VOTE, vote).map_err(|e| storage_error(ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        get_state(&self.db, VOTE).map_err(|e| storage_error(ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        put_state(&self.db, COMMITTED, &committed).map_err(|e| storage_error(ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        get_state::<Option<LogId>>(&self.db, COMMITTED)
            .map(Option::flatten)
            .map_err(|e| storage_error(ErrorVerb::Read, e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaTypes>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let write = || -> Result<(), String> {
            let tx = self.db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut t = tx.open_table(LOG).map_err(|e| e.to_string())?;
                for e in entries {
                    let bytes = crate::wire::encode_value(&e).map_err(|e| e.to_string())?;
                    t.insert(e.log_id.index, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().map_err(|e| e.to_string())
        };
        match write() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(storage_error(ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove(log_id.index..)
            .map_err(|e| storage_error(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purged id first: a crash between the two leaves entries that
        // are already counted as purged, which the next purge removes.
        put_state(&self.db, PURGED, &log_id).map_err(|e| storage_error(ErrorVerb::Write, e))?;
        self.remove(..=log_id.index)
            .map_err(|e| storage_error(ErrorVerb::Delete, e))
    }
}
