//! ringkv engine: the pure modules that hold what the system knows, and the
//! actors that own mailboxes, timers and sockets and call into them.
//!
//! # Layout
//! * [`ring`]: the consistent-hash ring with virtual nodes: key tokens,
//!   preference lists and primary ranges.
//! * [`version`]: hybrid logical clock and the total order of versions.
//! * [`failure`]: phi-accrual failure detector over gossiped heartbeats, with
//!   the local-stall rule.
//! * [`merkle`]: Merkle trees over the token space and the descent that finds
//!   where two replicas differ (anti-entropy).
//! * [`record`]: a value or tombstone with its version, and its byte encoding.
//! * [`storage`]: redb tables and batched durable writes (the only module that
//!   names redb).
//! * [`replica`]: the replica actor, owner of the local write path (group commit).
//! * [`partition`]: the partition actor, coordinator of client requests.
//! * [`error`]: the crate-wide error, grouped by what the caller does next.

pub mod coordinator;
pub mod error;
pub mod failure;
pub mod gossip;
pub mod hint;
pub mod inbound;
pub mod membership;
pub mod merkle;
pub mod metrics;
pub mod partition;
pub mod peer;
pub mod quorum;
pub mod record;
pub mod repair;
pub mod replica;
pub mod ring;
pub mod storage;
pub mod version;
pub mod wire;

pub use error::{Error, Result};

/// Mailbox bound of the actors on the request path: senders wait (back
/// pressure) when this many messages are queued.
pub const MAILBOX_CAPACITY: usize = 1 << 16;
