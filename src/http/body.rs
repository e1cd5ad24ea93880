//! Reading a request body under bounds: at most `limit` bytes (a larger
//! declared `Content-Length` answers 413 before anything is read), within
//! `http.body_timeout_ms` in all and `http.idle_timeout_ms` between chunks
//! (else 408 `request_timeout`, not applied), in memory reserved from the
//! [`BodyBudget`] as it grows — never the declared size up front, so a body
//! that trickles in holds only what it sent (at its budget: 503
//! `overloaded`, not applied). Every refusal closes the connection: the
//! rest of the body is never read.

use super::body_budget::{BodyBudget, ClientKey, Exhausted, Reservation, TokenId};
use super::error::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The first buffer a body gets; it doubles as bytes arrive.
const FIRST_CAPACITY: usize = 16 << 10;

/// The deadlines of one body.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadlines {
    pub total: Duration,
    pub idle: Duration,
}

/// Whose share of the budget a request's body counts against.
pub fn client_key(req: &HttpRequest) -> ClientKey {
    if let Some(TokenId(id)) = req.extensions().get::<TokenId>() {
        return ClientKey::Token(id.clone());
    }
    let ip = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    ClientKey::Address(super::conn::table::bucket(ip))
}

fn declared_length(req: &HttpRequest) -> Result<Option<usize>, ApiError> {
    let Some(v) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_header", "header Content-Length is not a number")
                .closing()
        })
}

fn too_large(len: usize, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!("the value is {len} bytes or more; the limit is {limit} bytes"),
    )
    .with("limit", limit)
    .closing()
}

fn exhausted(which: Exhausted) -> ApiError {
    let what = match which {
        Exhausted::Node => {
            "this node is reading as many request bodies as it allows \
             (http.max_inflight_body_bytes)"
        }
        Exhausted::Client => {
            "this client is sending as many request bodies at once as one client may \
             (http.max_inflight_body_bytes_per_client)"
        }
    };
    ApiError::overloaded(what, ringkv_actors::error::RETRY_AFTER_MS).closing()
}

fn timed_out(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request body {what}; nothing was written"),
    )
    .with("outcome", "not_applied")
    .closing()
}

/// Reads the body of `req`; the bytes stay reserved until the returned
/// reservation is dropped.
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    budget: &Arc<BodyBudget>,
    deadlines: BodyDeadlines,
) -> Result<(Bytes, Reservation), ApiError> {
    let declared = declared_length(req)?;
    if let Some(len) = declared {
        if len > limit {
            return Err(too_large(len, limit));
        }
    }
    let mut reservation = budget.reservation(client_key(req));
    let mut buf = BytesMut::new();
    let start = tokio::time::Instant::now();
    let end = start + deadlines.total;
    loop {
        let idle_end = tokio::time::Instant::now() + deadlines.idle;
        let (at, what) = if idle_end < end {
            (idle_end, "stopped arriving")
        } else {
            (end, "did not arrive in time")
        };
        let chunk = match tokio::time::timeout_at(at, payload.next()).await {
            Err(_) => return Err(timed_out(what)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("could not read the body: {e}"),
                )
                .closing())
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let len = buf.len() + chunk.len();
        if len > limit {
            return Err(too_large(len, limit));
        }
        if len > buf.capacity() {
            // Grow geometrically, never beyond what is declared or allowed,
            // reserving the memory before taking it.
            let want = len
                .max(buf.capacity().saturating_mul(2))
                .max(FIRST_CAPACITY)
                .min(declared.unwrap_or(limit).max(len))
                .min(limit);
            let more = want.saturating_sub(reservation.bytes());
            reservation.grow(more).map_err(exhausted)?;
            buf.reserve(want - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), reservation))
}
