//! Cluster metadata agreed by consensus: the layout history lives in a
//! small replicated state machine that the nodes agree on with Raft (the
//! `openraft` crate), so that every node learns the same sequence of
//! layout versions and two operators' concurrent changes can never fork it
//! (invariant 1 of ARCHITECTURE.md, "Cluster metadata").
//!
//! * [`command`]: the commands the log carries and the pure state machine
//!   that applies them to the [`crate::layout::history::LayoutHistory`].
//! * [`log_store`]: the Raft log, vote and committed index in redb
//!   (`meta.redb` in the data directory, fsynced per append).
//! * [`state_machine`]: applied state and snapshots (also in `meta.redb`).
//! * [`network`]: consensus messages as `Request::Meta` frames over the
//!   peer connections (authenticated and encrypted like every peer call).
//! * [`guard`]: what a peer's consensus message must satisfy before
//!   openraft sees it; [`answer`]: the answers to peers (snapshots
//!   assembled and validated whole).
//! * [`service`]: the running Raft node of this process: start, the
//!   initial layout, proposals sent on to the leader, answers to peers.
//! * [`status`]: what a node shows of it (JSON and Prometheus gauges).
//!
//! Voters are the first [`MAX_VOTERS`] members by id, the rest learners:
//! losing a minority of voters blocks metadata changes, never reads and
//! writes of data (the data path does not consult Raft).

// openraft's error types are large, and its traits return them.
#![allow(clippy::result_large_err)]

pub mod answer;
pub mod change;
pub mod command;
pub mod guard;
pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod status;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub use command::{MetaCommand, MetaReply, MetaState};
pub use service::{MetaConfig, MetaError, MetaService};
pub use status::MetaStatus;

/// Most voters; further members are learners.
pub const MAX_VOTERS: usize = 5;

/// Largest snapshot a node accepts (a few layout versions and trackers).
pub const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// A member as the consensus layer names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNode {
    pub id: String,
}

openraft::declare_raft_types!(
    /// The type parameters of ringkv's metadata Raft.
    pub MetaTypes:
        D = MetaCommand,
        R = MetaReply,
        NodeId = u64,
        Node = MetaNode,
        Entry = openraft::Entry<MetaTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<MetaTypes>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;

/// The Raft id of member `id`: xxHash64 of its name (the config loader
/// refuses two members whose ids collide).
pub fn raft_id(id: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0x6d65_7461);
    h.write(id.as_bytes());
    h.finish()
}

/// A storage error for openraft, from anything printable.
pub(crate) fn storage_error(
    verb: openraft::ErrorVerb,
    what: impl std::fmt::Display,
) -> StorageError {
    openraft::StorageIOError::new(
        openraft::ErrorSubject::Store,
        verb,
        openraft::AnyError::error(what),
    )
    .into()
}
