//! Error responses: every error the API returns is JSON of the shape
//! `{"error": "<message>", "code": "<code>", ...details}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use ringkv_actors::Error;
use serde_json::{json, Map, Value};
use std::fmt;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
    pub etag: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u64>,
    /// Adds `WWW-Authenticate: Bearer realm="ringkv"` (401s).
    pub www_authenticate: bool,
    /// Closes the connection after the answer (the rest of the request
    /// body is not read).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            etag: None,
            retry_after_s: None,
            www_authenticate: false,
            close: false,
        }
    }

    /// The answer closes the connection.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// As the answer to a write: an error that does not say whether the
    /// write took effect is `indeterminate` (it may have).
    pub fn for_write(self) -> Self {
        if self.details.contains_key("outcome") || self.status.is_client_error() {
            self
        } else {
            self.with("outcome", "indeterminate")
        }
    }

    /// 503 `overloaded` with `Retry-After`: nothing was done; retry later.
    pub fn overloaded(message: impl Into<String>, retry_after_ms: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            .with("outcome", "not_applied");
        e.retry_after_s = Some(retry_after_ms.div_ceil(1000).max(1));
        e
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.message));
        body.insert("code".into(), json!(self.code));
        body.extend(self.details.clone());
        let mut resp = HttpResponse::build(self.status);
        if let Some(etag) = &self.etag {
            resp.insert_header((header::ETAG, format!("\"{etag}\"")));
        }
        if let Some(s) = self.retry_after_s {
            resp.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.www_authenticate {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"ringkv\""));
        }
        if self.close {
            resp.force_close();
        }
        resp.json(Value::Object(body))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput { code, message } => ApiError::bad_request(code, message),
            Error::PreconditionFailed { current } => {
                let mut err = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    "the condition of the request does not hold for the current version",
                )
                .with("current_etag", current.map(|v| v.etag()));
                err.etag = current.map(|v| v.etag());
                err
            }
            Error::Unavailable {
                consistency,
                required,
                received,
                errors,
                indeterminate,
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "consistency level {consistency} needs {required} replica answers, received {received}"
                ),
            )
            .with("consistency", consistency.to_string())
            .with("required", required)
            .with("received", received)
            .with("peer_errors", errors)
            .with(
                "outcome",
                if indeterminate { "indeterminate" } else { "not_applied" },
            ),
            Error::Overloaded {
                message,
                retry_after_ms,
            } => ApiError::overloaded(message, retry_after_ms),
            Error::ClockSkew(m) => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "clock_skew", m)
                    .with("outcome", "not_applied");
                // Gossip measures a clock within a few rounds.
                e.retry_after_s = Some(1);
                e
            }
            Error::NotAMember(m) => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_a_member", m)
                    .with("outcome", "not_applied");
                e.retry_after_s = Some(1);
                e
            }
            Error::DiskFull(m) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                format!("the disk is full; the write was not stored: {m}"),
            ),
            Error::Storage(m) => {
                log::error!("storage error: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", m)
                    .with("outcome", "indeterminate")
            }
            Error::Peer(e) => ApiError::new(StatusCode::BAD_GATEWAY, "peer_error", e.to_string())
                .with(
                    "outcome",
                    if e.is_definite() {
                        "not_applied"
                    } else {
                        "indeterminate"
                    },
                ),
            Error::Internal(m) => {
                log::error!("internal error: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::from(Error::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step 10, item 10: a write answered 500 `internal` said nothing of
    /// its outcome, though it may have applied.
    #[test]
    fn a_write_error_that_does_not_know_its_effect_is_indeterminate() {
        let e = ApiError::from(Error::Internal("disk I/O".into())).for_write();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.details["outcome"], "indeterminate");
        // An outcome already known is kept, and client errors have none.
        let refused = ApiError::overloaded("queue full", 1000).for_write();
        assert_eq!(refused.details["outcome"], "not_applied");
        let bad = ApiError::bad_request("invalid_key", "empty").for_write();
        assert!(!bad.details.contains_key("outcome"));
    }
}
