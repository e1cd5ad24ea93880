//! ringkv engine: the pure modules that hold what the system knows, and the
//! actors that own mailboxes, timers and sockets and call into them.
//!
//! # Layout
//! Pure (no I/O, time passed in), bottom of the import graph:
//! * [`limits`]: size limits and the byte arithmetic of batches and pages.
//! * [`token`]: a key's token (xxHash64).
//! * [`layout`]: Q partitions of the token space and the layout that maps
//!   each to its N replicas (deterministic, balanced, minimal movement).
//! * [`version`]: hybrid logical clock and the total order of versions.
//! * [`record`]: a value or tombstone with its version, and its byte encoding.
//! * [`quorum`]: consistency levels and reconciliation.
//! * [`membership`]: gossiped member states and what a peer may claim.
//! * [`failure`]: phi-accrual failure detector with the local-stall rule.
//! * [`clock_check`]: whose clock is wrong, from gossiped offsets.
//! * [`merkle`], [`merge_join`]: Merkle trees and the side-by-side walk that
//!   finds where two replicas differ; [`partition_trees`]: one live tree per
//!   partition, kept by the store.
//! * [`wire`]: the peer protocol's frames (the only module naming rmp-serde).
//! * [`faults`]: test-only fault switches.
//!
//! Storage and transport:
//! * [`storage`] (+ `storage_backend`): redb tables and batched durable writes
//!   (the only modules naming redb).
//! * [`peer`]: the peer layer — one client per remote node with a single
//!   `call`, and a server handing requests to a dispatcher.
//!
//! Agents, top of the graph:
//! * [`replica`]: the replica actor, owner of the local write path (group commit).
//! * [`coordinator`]: quorum reads and writes, called by the HTTP handlers
//!   on their own worker (no mailbox on the request path).
//! * [`partition`]: one actor per partition this node replicates, owning
//!   its anti-entropy state and running its exchanges.
//! * [`gossip`], [`hint`], [`antientropy`], [`gc`], [`repair`]: membership,
//!   hinted handoff, anti-entropy, tombstone GC, and their scheduling;
//!   [`repair_mode`]: when a node serves no reads until a pass completed.
//! * [`inbound`]: answers peers' requests.
//! * [`node`]: `Node::start` assembles a node from its settings and returns
//!   its handle (the top of the graph).
//! * [`metrics`], [`error`]: counters and job progress; the crate-wide error.
//!
//! Imports only go down this list (`tests::import_graph_is_acyclic`).

pub mod antientropy;
pub mod certgen;
pub mod clock_check;
pub mod coordinator;
pub mod error;
pub mod failure;
pub mod faults;
pub mod gc;
pub mod gossip;
pub mod hint;
pub mod inbound;
pub mod key_locks;
pub mod layout;
pub mod limits;
pub mod membership;
pub mod merge_join;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod partition_trees;
pub mod peer;
pub mod quorum;
pub mod record;
pub mod repair;
pub mod repair_mode;
pub mod replica;
#[cfg(test)]
pub mod sim;
pub mod storage;
mod storage_backend;
pub mod token;
pub mod version;
pub mod wire;

pub use error::{Error, Result};

/// Mailbox bound of the actors on the request path: senders wait (back
/// pressure) when this many messages are queued.
pub const MAILBOX_CAPACITY: usize = 1 << 16;

#[cfg(test)]
mod tests;
