//! `GET|HEAD|PUT|DELETE /v1/kv/{key}`: the key-value routes.

use super::body;
use super::error::ApiError;
use super::request::{self, KV_PREFIX};
use super::ApiState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use ringkv_actors::coordinator::WriteResult;
use ringkv_actors::record::Record;
use ringkv_actors::version::Version;
use std::time::{Duration, UNIX_EPOCH};

/// Header carrying the version of the value (the ETag without quotes).
pub const VERSION_HEADER: &str = "x-ringkv-version";
/// Header of a write's answer: acknowledgements that were hints (sloppy quorum).
pub const HINTED_HEADER: &str = "x-ringkv-hinted-acks";

fn version_headers(resp: &mut actix_web::HttpResponseBuilder, v: Version) {
    let tag = v.etag();
    resp.insert_header((header::ETAG, format!("\"{tag}\"")))
        .insert_header((VERSION_HEADER, tag));
}

pub async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let key = request::key(&req, KV_PREFIX)?;
    let consistency = request::consistency(&req)?;
    let if_none_match = request::read_if_none_match(&req)?;
    let record = state.services.core.read(&key, consistency).await?;
    let Some(Record {
        version,
        value: Some(value),
    }) = record
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no value for this key",
        ));
    };
    let not_modified =
        if_none_match.is_some_and(|tags| tags.iter().any(|t| t.is_none_or(|t| t == version)));
    let mut resp = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    version_headers(&mut resp, version);
    let modified = UNIX_EPOCH + Duration::from_millis(version.physical_ms());
    resp.insert_header((header::LAST_MODIFIED, httpdate::fmt_http_date(modified)));
    if not_modified {
        return Ok(resp.finish());
    }
    // HEAD: actix-web drops the body but keeps Content-Length.
    Ok(resp.content_type("application/octet-stream").body(value))
}

fn written(result: WriteResult, created_status: StatusCode) -> HttpResponse {
    let mut resp = HttpResponse::build(if result.created {
        created_status
    } else {
        StatusCode::NO_CONTENT
    });
    version_headers(&mut resp, result.version);
    resp.insert_header((HINTED_HEADER, result.hinted.to_string()));
    resp.finish()
}

pub async fn put(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let key = request::key(&req, KV_PREFIX)?;
    let consistency = request::consistency(&req)?;
    let precondition = request::precondition(&req)?;
    let (value, _in_flight) = body::read(
        &req,
        payload,
        state.max_value_bytes,
        &state.services.body_budget,
        state.services.body_deadlines,
    )
    .await?;
    let result = state
        .services
        .core
        .write(key, Some(value), precondition, consistency)
        .await
        .map_err(|e| ApiError::from(e).for_write())?;
    Ok(written(result, StatusCode::CREATED))
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let key = request::key(&req, KV_PREFIX)?;
    let consistency = request::consistency(&req)?;
    let precondition = request::precondition(&req)?;
    let result = state
        .services
        .core
        .write(key, None, precondition, consistency)
        .await
        .map_err(|e| ApiError::from(e).for_write())?;
    Ok(written(result, StatusCode::NO_CONTENT))
}
