//! The crate-wide error, grouped by what the caller does next.
//!
//! A missing key is not an error (`Ok(None)`). The HTTP layer maps each kind to
//! a status code and a JSON body; see `src/http/error.rs` in the binary.

use crate::peer::PeerError;
use crate::quorum::Consistency;
use crate::storage::StoreError;
use crate::version::Version;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; retrying it unchanged fails again.
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// A conditional write's condition did not hold against the current version.
    #[error("precondition failed")]
    PreconditionFailed { current: Option<Version> },
    /// Too few replicas answered in time. A write may still have been applied on
    /// some of them (`indeterminate`).
    #[error("{consistency} needs {required} replica answers, got {received}")]
    Unavailable {
        consistency: Consistency,
        required: usize,
        received: usize,
        errors: Vec<String>,
        indeterminate: bool,
    },
    /// This node (or the replicas it needs) is overloaded: nothing was done;
    /// retry after `retry_after_ms`.
    #[error("overloaded: {message}")]
    Overloaded {
        message: String,
        retry_after_ms: u64,
    },
    /// This node's clock runs ahead of the cluster's: it refuses to issue
    /// versions (other nodes can coordinate the request).
    #[error("{0}")]
    ClockSkew(String),
    /// This node is placed by no live layout version (a standby node not
    /// yet joined, or one that left): it coordinates nothing.
    #[error("{0}")]
    NotAMember(String),
    /// The local disk is full; writes are refused until space is freed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Local storage failed in another way; a write may have been applied.
    #[error("storage error: {0}")]
    Storage(String),
    /// A peer's answer was an error, or never came.
    #[error("{0}")]
    Peer(PeerError),
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How long a client should wait before retrying an overloaded node.
pub const RETRY_AFTER_MS: u64 = 1000;

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(m) => Error::DiskFull(m),
            StoreError::Overloaded(m) => Error::Overloaded {
                message: m,
                retry_after_ms: RETRY_AFTER_MS,
            },
            other => Error::Storage(other.to_string()),
        }
    }
}

impl From<PeerError> for Error {
    fn from(e: PeerError) -> Self {
        Error::Peer(e)
    }
}

impl Error {
    /// Whether the operation certainly was not applied where this came from.
    pub fn is_definite(&self) -> bool {
        match self {
            Error::Peer(e) => e.is_definite(),
            Error::Unavailable { indeterminate, .. } => !indeterminate,
            Error::Storage(_) | Error::Internal(_) => false,
            Error::InvalidInput { .. }
            | Error::PreconditionFailed { .. }
            | Error::Overloaded { .. }
            | Error::ClockSkew(_)
            | Error::NotAMember(_)
            | Error::DiskFull(_) => true,
        }
    }
}

impl Error {
    /// The error code a peer answered with, if this is a peer's answer.
    pub fn peer_code(&self) -> Option<crate::wire::ErrorCode> {
        match self {
            Error::Peer(e) => e.code(),
            _ => None,
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::Internal(format!("actor mailbox: {e}"))
    }
}
