//! The peer layer: how nodes call each other. One face on each side.
//!
//! * **Client** ([`client`]): one [`PeerClient`] per remote node, and the
//!   [`Peers`] registry holding them. Everything that talks to another node —
//!   coordinators, hint replay, anti-entropy, tombstone GC, gossip — goes
//!   through the single [`Peers::call`]: a request, a deadline, and a typed
//!   answer ([`PeerError`] says whether the request may have been applied).
//! * **Server** ([`server`]): a listener that accepts peer connections, checks
//!   each hello, and hands every decoded request to one [`Dispatch`]
//!   implementation (the node's inbound dispatcher), answering with the same
//!   request id.
//! * **Handshake** ([`handshake`]): dialing and the hello exchange, shared by
//!   both sides; the only place that knows the transport is TCP.
//!
//! # Bounds
//! Every queue, buffer and map of this layer is bounded in count and bytes,
//! and every wait has a deadline: a call that cannot be queued fails at once
//! (`Overloaded`, nothing sent); a call that gets no answer in time fails with
//! `Timeout`; a lost connection fails every call that waited on it; a peer
//! that stops reading is disconnected after [`WRITE_STALL`]; a listener takes
//! at most a bounded number of sessions and each session a bounded number of
//! requests and bytes in flight, after which it stops reading (back pressure).
//!
//! The module imports only the wire format: it never calls the engine's
//! actors, which keeps the import graph acyclic (the dispatcher is handed in).

pub mod client;
pub mod handshake;
pub mod server;
pub mod tls;

pub use client::{PeerClient, Peers, Transport, TransportCall};
pub use server::{Dispatch, PeerServer};

use crate::wire::{ErrorCode, Hello};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Redial backoff after a failed or lost connection.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long dialing may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long either side may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection on which foreground calls wait this long while no answer to
/// a call of ours arrives is replaced (frames answering ids we never wrote
/// are no sign of life; late answers to calls given up on are).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// Calls given up on whose late answers still count as signs of life, per
/// connection (the most recent ones).
pub const MAX_GIVEN_UP: usize = 1024;
/// A write that makes no progress for this long means the peer stopped
/// reading: the connection is closed.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// TCP keepalive idle time and probe interval.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// Calls waiting for an answer on one connection.
pub const MAX_PENDING_CALLS: usize = 8192;
/// Bytes of foreground frames queued for one connection, not yet written.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Background calls queued for one connection (they go one at a time).
pub const MAX_QUEUED_BACKGROUND: usize = 64;
/// Background requests in flight per connection: client requests never wait
/// behind more than this many background frames.
pub const MAX_BACKGROUND_IN_FLIGHT: usize = 1;

/// Connections a listener serves at once, hellos included.
pub const MAX_SESSIONS: usize = 64;
/// Connections that have not finished their hello, at once (each is closed
/// after [`HELLO_TIMEOUT`]); beyond, a new connection is closed at once.
pub const MAX_HANDSHAKES: usize = 16;
/// Sessions one member may hold at once; a newer one closes the oldest.
pub const MAX_SESSIONS_PER_MEMBER: usize = 4;
/// Requests one session serves concurrently; more wait unread in the socket.
pub const MAX_SESSION_IN_FLIGHT: usize = 256;
/// Bytes of requests one session may have in flight.
pub const SESSION_REQUEST_BYTES: usize = 64 << 20;
/// Bytes of requests all sessions together may have in flight.
pub const NODE_REQUEST_BYTES: usize = 256 << 20;
/// Bytes of answers one session may hold (being built or waiting to be
/// written), counted by each request's worst case before it is served.
pub const SESSION_RESPONSE_BYTES: usize = 128 << 20;
/// Bytes of answers all sessions together may hold.
pub const NODE_RESPONSE_BYTES: usize = 512 << 20;

/// What both sides of a peer connection need to know.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub hello: Hello,
    pub max_frame: usize,
    /// Node ids of the configured members (ourselves included); a hello
    /// naming anyone else, or ourselves, is refused.
    pub members: Arc<BTreeSet<String>>,
    /// Largest value a peer may send (the configured value limit).
    pub max_value: usize,
    /// Test-only fault switches (`peer_delay_ms` delays every call this
    /// node makes).
    pub faults: Arc<crate::faults::Faults>,
    /// Mutual TLS, when on: every connection is TLS 1.3 with certificates
    /// of the cluster CA.
    pub tls: Option<Arc<tls::PeerTls>>,
    /// Each member's configured peer address: a member's connections must
    /// come from its address's IP (when that IP is a specific one), and this
    /// node dials from its own.
    pub addresses: Arc<std::collections::HashMap<String, std::net::SocketAddr>>,
}

impl PeerSettings {
    /// Budgets scaled so that one frame always fits.
    pub(crate) fn session_request_bytes(&self) -> usize {
        SESSION_REQUEST_BYTES.max(2 * self.max_frame)
    }

    pub(crate) fn node_request_bytes(&self) -> usize {
        NODE_REQUEST_BYTES.max(4 * self.max_frame)
    }

    pub(crate) fn session_response_bytes(&self) -> usize {
        SESSION_RESPONSE_BYTES.max(2 * self.max_frame)
    }

    pub(crate) fn node_response_bytes(&self) -> usize {
        NODE_RESPONSE_BYTES.max(4 * self.max_frame)
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        MAX_QUEUED_BYTES.max(2 * self.max_frame)
    }
}

/// Why a call to a peer failed. Each kind says whether the request may have
/// been applied there ([`PeerError::is_definite`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    #[error("{peer}: not a member")]
    Unknown { peer: String },
    #[error("{peer}: not connected")]
    NotConnected { peer: String },
    #[error("{peer}: {what} is full")]
    Overloaded { peer: String, what: &'static str },
    #[error("{peer}: a request of {len} bytes exceeds the {max}-byte frame limit")]
    FrameTooLarge {
        peer: String,
        len: usize,
        max: usize,
    },
    #[error("{peer}: cannot encode the request: {message}")]
    Encode { peer: String, message: String },
    #[error("{peer}: no answer within {after_ms} ms")]
    Timeout {
        peer: String,
        after_ms: u64,
        /// Whether the request had been written to the connection.
        sent: bool,
    },
    #[error("{peer}: connection lost ({why})")]
    ConnectionLost {
        peer: String,
        why: String,
        sent: bool,
    },
    #[error("{peer}: {code}: {message}")]
    Remote {
        peer: String,
        code: ErrorCode,
        message: String,
    },
    #[error("{peer}: unexpected answer to {request}")]
    Unexpected { peer: String, request: &'static str },
}

impl PeerError {
    /// Whether the peer certainly did not apply the request.
    pub fn is_definite(&self) -> bool {
        match self {
            PeerError::Unknown { .. }
            | PeerError::NotConnected { .. }
            | PeerError::Overloaded { .. }
            | PeerError::FrameTooLarge { .. }
            | PeerError::Encode { .. } => true,
            PeerError::Timeout { sent, .. } | PeerError::ConnectionLost { sent, .. } => !sent,
            PeerError::Remote { code, .. } => code.is_definite(),
            PeerError::Unexpected { .. } => false,
        }
    }

    /// The peer's error code, when the peer answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            PeerError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn peer(&self) -> &str {
        match self {
            PeerError::Unknown { peer }
            | PeerError::NotConnected { peer }
            | PeerError::Overloaded { peer, .. }
            | PeerError::FrameTooLarge { peer, .. }
            | PeerError::Encode { peer, .. }
            | PeerError::Timeout { peer, .. }
            | PeerError::ConnectionLost { peer, .. }
            | PeerError::Remote { peer, .. }
            | PeerError::Unexpected { peer, .. } => peer,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
