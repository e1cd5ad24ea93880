//! The applied metadata state and its snapshots. The state itself is held
//! in memory (a few layout versions); a snapshot of it is kept durably in
//! `meta.redb`, and a restart loads the snapshot and lets openraft apply
//! the committed entries after it again. Readers (the HTTP layer, the
//! node) get a copy of the applied state through [`Applied`].

use super::command::MetaState;
use super::log_store::{get_state, put_state};
use super::{storage_error, Entry, LogId, MetaNode, MetaReply, MetaTypes, StorageError};
use crate::layout::record::HistoryRecord;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership,
};
use redb::Database;
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

const SNAPSHOT: &str = "snapshot";

/// What the log has applied so far.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<u64, MetaNode>,
    pub state: MetaState,
}

/// The serialized applied state: a snapshot's data.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, MetaNode>,
    history: Option<HistoryRecord>,
}

/// A stored snapshot: its meta and its data.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, MetaNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The state machine openraft drives.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// Held while a snapshot is stored: a build that finishes after a
    /// newer snapshot was installed must not overwrite it.
    storing: Arc<Mutex<()>>,
}

impl StateMachine {
    /// The state machine of `db`, starting from its stored snapshot.
    pub fn open(db: Arc<Database>) -> Result<StateMachine, String> {
        let mut applied = Applied::default();
        if let Some(s) = get_state::<StoredSnapshot>(&db, SNAPSHOT)? {
            applied = decode(&s.data)?;
        }
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            storing: Arc::default(),
        })
    }

    /// The applied state, shared with readers.
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `s` unless the stored snapshot is newer; answers whether it
    /// stored it.
    fn store(&self, s: &StoredSnapshot) -> Result<bool, StorageError> {
        let _one = self.storing.lock().unwrap_or_else(|e| e.into_inner());
        let stored: Option<StoredSnapshot> =
            get_state(&self.db, SNAPSHOT).map_err(|e| storage_error(ErrorVerb::Read, e))?;
        if stored.is_some_and(|old| old.meta.last_log_id > s.meta.last_log_id) {
            return Ok(false);
        }
        put_state(&self.db, SNAPSHOT, s).map_err(|e| storage_error(ErrorVerb::Write, e))?;
        Ok(true)
    }
}

/// Whether `data` is a valid snapshot for `meta` (checked before openraft
/// installs it: a failing install would stop its core).
pub(super) fn check_snapshot_data(
    data: &[u8],
    meta: &SnapshotMeta<u64, MetaNode>,
) -> Result<(), String> {
    let applied = decode(data)?;
    if applied.last_applied != meta.last_log_id {
        return Err("a snapshot whose data and meta disagree on its last log id".into());
    }
    Ok(())
}

fn encode(a: &Applied) -> Result<Vec<u8>, String> {
    crate::wire::encode_value(&SnapshotData {
        last_applied: a.last_applied,
        membership: a.membership.clone(),
        history: a.state.to_record(),
    })
    .map_err(|e| e.to_string())
}

/// A snapshot's data as applied state, checked whole (it may come from a
/// peer): bounded in bytes, every layout valid.
fn decode(data: &[u8]) -> Result<Applied, String> {
    if data.len() > super::MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "a snapshot of {} bytes exceeds the {}-byte limit",
            data.len(),
            super::MAX_SNAPSHOT_BYTES
        ));
    }
    let d: SnapshotData = crate::wire::decode_value(data).map_err(|e| e.to_string())?;
    Ok(Applied {
        last_applied: d.last_applied,
        membership: d.membership,
        state: MetaState::from_record(d.history.as_ref())?,
    })
}

impl RaftSnapshotBuilder<MetaTypes> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTypes>, StorageError> {
        let (data, meta) = {
            let a = self.read();
            let data = encode(&a).map_err(|e| storage_error(ErrorVerb::Read, e))?;
            let id = a.last_applied.map_or_else(
                || "0-0".to_string(),
                |l| format!("{}-{}", l.leader_id, l.index),
            );
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
                snapshot_id: id,
            };
            (data, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.store(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MetaTypes> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, MetaNode>), StorageError> {
        let a = self.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut a = self.applied.write().unwrap_or_else(|e| e.into_inner());
        let mut replies = Vec::new();
        for e in entries {
            a.last_applied = Some(e.log_id);
            let reply = match &e.payload {
                EntryPayload::Blank => MetaReply::Done,
                EntryPayload::Normal(c) => a.state.apply(c),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    MetaReply::Done
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MetaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut applied = decode(&data).map_err(|e| storage_error(ErrorVerb::Read, e))?;
        // The meta is what openraft vouches for; the data's own claim of
        // where it stands must agree with it.
        if applied.last_applied != meta.last_log_id {
            return Err(storage_error(
                ErrorVerb::Read,
                "a snapshot whose data and meta disagree on its last log id",
            ));
        }
        applied.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store(&stored)?;
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaTypes>>, StorageError> {
        let s: Option<StoredSnapshot> =
            get_state(&self.db, SNAPSHOT).map_err(|e| storage_error(ErrorVerb::Read, e))?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
