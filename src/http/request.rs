//! Parsing what a client sends: the key from the raw path, the consistency
//! level, the conditional headers and a bounded body.

use super::error::ApiError;
use crate::config::MAX_KEY_BYTES;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use ringkv_actors::quorum::Consistency;
use ringkv_actors::storage::Precondition;
use ringkv_actors::version::Version;

/// Path prefix of the key-value routes.
pub const KV_PREFIX: &str = "/v1/kv/";
/// Header that sets the consistency level, like `?consistency=`.
pub const CONSISTENCY_HEADER: &str = "x-ringkv-consistency";

/// The key: everything after `/v1/kv/` in the raw path, percent-decoded, so any
/// byte (including `/` as `%2F`) can be part of a key.
pub fn key(req: &HttpRequest, prefix: &str) -> Result<Bytes, ApiError> {
    let raw = req.uri().path().strip_prefix(prefix).unwrap_or("");
    let key: Vec<u8> = percent_decode_str(raw).collect();
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_key",
            "the key must not be empty",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            "key_too_long",
            format!(
                "the key is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
                key.len()
            ),
        )
        .with("limit", MAX_KEY_BYTES));
    }
    Ok(Bytes::from(key))
}

/// The consistency level from `?consistency=` or the header (default: config).
pub fn consistency(req: &HttpRequest) -> Result<Consistency, ApiError> {
    let from_query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))?
        .into_inner()
        .into_iter()
        .find(|(k, _)| k == "consistency")
        .map(|(_, v)| v);
    let from_header = match req.headers().get(CONSISTENCY_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad_header(CONSISTENCY_HEADER, "is not ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    match from_query.or(from_header) {
        Some(level) => level
            .parse()
            .map_err(|e: String| ApiError::bad_request("invalid_consistency", e)),
        None => Ok(Consistency::Default),
    }
}

fn bad_header(name: &str, why: &str) -> ApiError {
    ApiError::bad_request("invalid_header", format!("header {name} {why}"))
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    match req.headers().get(&name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| bad_header(name.as_str(), "is not ASCII")),
    }
}

/// Parses one quoted entity tag (`"…"`, optionally weak `W/"…"`).
pub fn parse_etag(name: &str, raw: &str) -> Result<Version, ApiError> {
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    raw.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(Version::parse_etag)
        .ok_or_else(|| {
            bad_header(
                name,
                &format!("has '{raw}', not a ringkv entity tag like \"18c3a-5f2e\""),
            )
        })
}

/// The write precondition from `If-Match` / `If-None-Match`.
pub fn precondition(req: &HttpRequest) -> Result<Precondition, ApiError> {
    let if_match = header_str(req, header::IF_MATCH)?;
    let if_none_match = header_str(req, header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_header",
            "If-Match and If-None-Match cannot be combined",
        )),
        (Some("*"), None) => Ok(Precondition::Present),
        (Some(tag), None) => Ok(Precondition::Version(parse_etag("If-Match", tag)?)),
        (None, Some("*")) => Ok(Precondition::Absent),
        (None, Some(_)) => Err(bad_header(
            "If-None-Match",
            "on a write only supports '*' (create only)",
        )),
        (None, None) => Ok(Precondition::None),
    }
}

/// The `If-None-Match` entity tags of a read (`*` matches any).
pub fn read_if_none_match(req: &HttpRequest) -> Result<Option<Vec<Option<Version>>>, ApiError> {
    let Some(raw) = header_str(req, header::IF_NONE_MATCH)? else {
        return Ok(None);
    };
    raw.split(',')
        .map(|t| match t.trim() {
            "*" => Ok(None),
            t => parse_etag("If-None-Match", t).map(Some),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Reads the body, refusing more than `limit` bytes before buffering them.
/// The bytes count against `budget` (the node's bytes of bodies in flight)
/// until the returned permit is dropped; when the budget is spent the request
/// answers 503 `overloaded` at once, before its body is read.
pub async fn body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    budget: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let too_large = |len: usize| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the value is {len} bytes or more; the limit is {limit} bytes"),
        )
        .with("limit", limit)
    };
    let declared = header_str(req, header::CONTENT_LENGTH)?
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| bad_header("Content-Length", "is not a number"))
        })
        .transpose()?;
    if let Some(len) = declared {
        if len > limit {
            return Err(too_large(len));
        }
    }
    // Without a length (chunked), reserve the largest value allowed.
    let reserve = declared.unwrap_or(limit).max(1).min(u32::MAX as usize) as u32;
    let permit = budget
        .clone()
        .try_acquire_many_owned(reserve)
        .map_err(|_| {
            ApiError::overloaded(
                "this node is reading as many request bodies as it allows \
             (http.max_inflight_body_bytes)",
                ringkv_actors::error::RETRY_AFTER_MS,
            )
        })?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("could not read the body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(buf.len() + chunk.len()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), permit))
}
