//! `GET /v1/ring` (the layout, for partition-aware clients) and
//! `GET /v1/admin/local/{key}` (this node's own record, uncoordinated).

use super::error::ApiError;
use super::request;
use super::ApiState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ringkv_actors::token::HASH_FUNCTION;
use serde_json::json;

/// Prefix of the admin route that reads the local record.
pub const LOCAL_PREFIX: &str = "/v1/admin/local/";

pub async fn ring(state: web::Data<ApiState>) -> HttpResponse {
    let view = state.services.core.view();
    let layout = &view.layout;
    let members: Vec<_> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "http_addr": m.http_addr,
                "peer_addr": m.peer_addr,
            })
        })
        .collect();
    let replicas: Vec<Vec<&str>> = (0..layout.partitions())
        .map(|p| layout.replicas(p))
        .collect();
    HttpResponse::Ok().json(json!({
        "hash_function": HASH_FUNCTION,
        "key_token": "hash_function(key bytes), an unsigned 64-bit integer",
        "partitions": layout.partitions(),
        "partition_bits": layout.partition_bits(),
        "key_partition": "key_token >> (64 - partition_bits); 0 when partition_bits is 0",
        "replication_factor": state.services.core.replication.n,
        "layout_version": layout.version(),
        "fingerprint": layout.fingerprint(),
        "members": members,
        "replicas": replicas,
    }))
}

pub async fn local(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let key = request::key(&req, LOCAL_PREFIX)?;
    let record = state
        .services
        .core
        .local
        .store
        .get(&key)
        .map_err(|e| ApiError::from(ringkv_actors::Error::from(e)))?;
    let Some(record) = record else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node stores no record for the key",
        )
        .with("node", state.node_id.clone()));
    };
    // `?value_prefix=N` shows only the first N bytes of the value.
    let prefix = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| {
            q.into_inner()
                .into_iter()
                .find(|(k, _)| k == "value_prefix")
                .and_then(|(_, v)| v.parse::<usize>().ok())
        });
    let value = record
        .value
        .as_ref()
        .map(|v| v.slice(..prefix.unwrap_or(v.len()).min(v.len())));
    let value = value.as_ref();
    Ok(HttpResponse::Ok().json(json!({
        "node": state.node_id,
        "tombstone": record.is_tombstone(),
        "etag": record.version.etag(),
        "timestamp_ms": record.version.physical_ms(),
        "value_len": record.value.as_ref().map(|v| v.len()),
        "value_utf8": value.and_then(|v| std::str::from_utf8(v).ok()),
        "value_hex": value.map(|v| v.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    })))
}
