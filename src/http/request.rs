//! Parsing what a client sends: the key from the raw path, the consistency
//! level and the conditional headers (bodies: `body.rs`).

use super::error::ApiError;
use crate::config::MAX_KEY_BYTES;
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::Bytes;
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
