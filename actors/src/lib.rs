//! ringkv engine: the pure modules that hold what the system knows, and the
//! actors that own mailboxes, timers and sockets and call into them.
//!
//! # Layout
//! Pure cores (no I/O, time passed in), bottom of the import graph:
//! * [`limits`]: size limits and the byte arithmetic of batches and pages.
//! * [`token`]: a key's token (xxHash64); [`node_id`]: a node's id.
//! * [`layout`]: Q partitions of the token space and the layout that maps
//!   each to its N replicas (deterministic, balanced, minimal movement).
//! * [`version`]: hybrid logical clock and the total order of versions;
//!   [`clock_check`]: whose clock is wrong, from gossiped offsets.
//! * [`record`]: a value or tombstone with its version, and its byte encoding.
//! * [`quorum`]: consistency levels and reconciliation.
//! * [`merkle`], [`merge_join`]: Merkle trees and the side-by-side walk that
//!   finds where two replicas differ.
//! * [`wire`]: the peer protocol's frames (the only module naming rmp-serde;
//!   its `encode_value`/`decode_value` serve the metadata log too).
//! * [`faults`]: test-only fault switches; [`certgen`]: test certificates.
//!
//! Storage and transport:
//! * [`storage`]: redb tables and batched durable writes (with
//!   `storage/backend.rs`, the only code naming redb); `storage/trees.rs`:
//!   one live Merkle tree per partition, kept as writes commit.
//! * [`peer`]: the peer layer — one client per remote node with a single
//!   `call` over a [`peer::Transport`] (TCP sessions, or the simulated
//!   network), and a server handing requests to a dispatcher.
//!
//! Agents, top of the graph (each folder: the actor in `mod.rs`, its pure
//! decisions beside it):
//! * [`replica`]: the replica actor, owner of the local write path (group
//!   commit); [`key_locks`]: per-key locks of conditional writes.
//! * [`coordinator`]: quorum reads and writes, called by the HTTP handlers
//!   on their own worker (no mailbox on the request path); `tally.rs` and
//!   `holders.rs` are its pure cores.
//! * [`gossip`]: the gossip actor; `failure.rs` (phi-accrual detector),
//!   `membership.rs` (what a peer may claim), `liveness.rs` (the shared
//!   status and hint-floor table).
//! * [`hint`]: hinted handoff (the actor; `hint::pass`, its pure choice of pass).
//! * [`antientropy`]: the exchange over live trees (initiator, responder,
//!   pages, mover); [`partition`]: one actor per partition this node
//!   replicates, owning its anti-entropy state and running its exchanges.
//! * [`repair`]: the repair actor scheduling passes; `gc.rs` (tombstone
//!   GC), `mode.rs` (when a node serves no reads until a pass completed).
//! * [`meta`]: cluster metadata agreed by Raft (openraft): the layout
//!   history as a replicated state machine, its log and snapshots in
//!   `meta.redb` (`meta/log_store.rs` is the other code naming redb).
//! * [`inbound`]: answers peers' requests.
//! * [`node`]: `Node::start` assembles a node from its settings and returns
//!   its handle (the top of the graph).
//! * [`metrics`], [`error`]: counters and job progress; the crate-wide error.
//! * `sim` (tests only): the simulated cluster and its golden scripts.
//!
//! Imports only go down this list (`tests::import_graph_is_acyclic`).

pub mod antientropy;
pub mod certgen;
pub mod clock_check;
pub mod coordinator;
pub mod error;
pub mod faults;
pub mod gossip;
pub mod hint;
pub mod inbound;
pub mod key_locks;
pub mod layout;
pub mod limits;
pub mod merge_join;
pub mod merkle;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod node_id;
pub mod partition;
pub mod peer;
pub mod quorum;
pub mod record;
pub mod repair;
pub mod replica;
#[cfg(test)]
pub mod sim;
pub mod storage;
pub mod token;
pub mod transition;
pub mod version;
pub mod wire;

pub use error::{Error, Result};
pub use node_id::NodeId;

/// Mailbox bound of the actors on the request path: senders wait (back
/// pressure) when this many messages are queued.
pub const MAILBOX_CAPACITY: usize = 1 << 16;

#[cfg(test)]
mod tests;
