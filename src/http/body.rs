//! Reading a request body under bounds: at most `limit` bytes (a larger
//! declared `Content-Length` answers 413 before anything is read), within
//! `http.body_timeout_ms` in all, `http.idle_timeout_ms` between chunks, and
//! after a grace of [`MIN_RATE_GRACE`] at `http.min_body_bytes_per_sec` on
//! average (else 408 `request_timeout`, not applied), in memory reserved
//! exactly, as it is allocated, from the
//! [`BodyBudget`] as it grows — never the declared size up front, so a body
//! that trickles in holds only what it sent (at its budget: 503
//! `overloaded`, not applied). Every refusal closes the connection: the
//! rest of the body is never read.

use super::body_budget::{BodyBudget, ClientKey, Exhausted, Reservation, TokenId};
use super::error::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The first buffer a body gets; it doubles as bytes arrive.
const FIRST_CAPACITY: usize = 16 << 10;
/// How long a body may take before its average rate is judged.
pub const MIN_RATE_GRACE: Duration = Duration::from_secs(5);

/// The deadlines of one body.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadlines {
    pub total: Duration,
    pub idle: Duration,
    /// 0: no minimum rate.
    pub min_bytes_per_sec: u64,
}

/// Which body deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Late {
    Total = 0,
    Idle = 1,
    Rate = 2,
}

impl Late {
    fn what(self) -> &'static str {
        match self {
            Late::Total => "did not arrive in time",
            Late::Idle => "stopped arriving",
            Late::Rate => "arrived too slowly (http.min_body_bytes_per_sec)",
        }
    }
}

impl BodyDeadlines {
    /// When the next bytes must have arrived, given `received` so far since
    /// `start`, the last arrival at `last`; and which deadline that is.
    pub fn next(
        &self,
        start: tokio::time::Instant,
        last: tokio::time::Instant,
        received: usize,
    ) -> (tokio::time::Instant, Late) {
        let mut at = (start + self.total, Late::Total);
        if last + self.idle < at.0 {
            at = (last + self.idle, Late::Idle);
        }
        if self.min_bytes_per_sec > 0 {
            // By then `received + 1` bytes are due at the minimum rate.
            let due =
                Duration::from_secs_f64((received + 1) as f64 / self.min_bytes_per_sec as f64);
            let rate_at = start + MIN_RATE_GRACE + due;
            if rate_at < at.0 {
                at = (rate_at, Late::Rate);
            }
        }
        at
    }
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
    let mut buf: Vec<u8> = Vec::new();
    let start = tokio::time::Instant::now();
    let mut last = start;
    loop {
        let (at, late) = deadlines.next(start, last, buf.len());
        let chunk = match tokio::time::timeout_at(at, payload.next()).await {
            Err(_) => {
                budget.timed_out[late as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(timed_out(late.what()));
            }
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
        last = tokio::time::Instant::now();
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
            reservation.grow(more).map_err(|which| {
                budget.refused[which as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                exhausted(which)
            })?;
            // Exactly what was reserved (`reserve` may double).
            buf.reserve_exact(want - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), reservation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_keep_up_the_minimum_rate_after_its_grace() {
        let d = BodyDeadlines {
            total: Duration::from_secs(30),
            idle: Duration::from_secs(3),
            min_bytes_per_sec: 1000,
        };
        let t0 = tokio::time::Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        // Fresh: the idle bound first.
        assert_eq!(d.next(t0, t0, 0), (s(3_000), Late::Idle));
        // A byte every 2 s (under the idle bound): at 6 s only 3 of the
        // 1,001 bytes due after the grace are in.
        assert_eq!(d.next(t0, s(6_000), 3), (s(5_004), Late::Rate));
        // Fast enough: the idle bound again.
        assert_eq!(d.next(t0, s(6_000), 100_000).1, Late::Idle);
        // Near the end: the total.
        assert_eq!(d.next(t0, s(29_000), 10_000_000).0, s(30_000));
        let off = BodyDeadlines {
            min_bytes_per_sec: 0,
            ..d
        };
        assert_eq!(off.next(t0, s(6_000), 3).1, Late::Idle);
    }
}
