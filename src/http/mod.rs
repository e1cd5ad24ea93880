//! The HTTP API (actix-web): routes, and the mapping between HTTP and the
//! engine's messages.
//!
//! * [`kv`]: `GET|HEAD|PUT|DELETE /v1/kv/{key}`
//! * `GET /health` (the process is up), `GET /ready` (it serves requests)
//! * [`cluster`]: `GET /v1/ring`, `GET /v1/admin/local/{key}`
//! * [`admin`]: `GET /v1/cluster`, `POST /v1/admin/repair`, `GET /metrics`
//! * [`request`]: keys, consistency levels, conditional headers, bounded bodies
//! * [`error`]: the JSON error shape every error response has

pub mod admin;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod request;

use crate::server::Services;
use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use error::ApiError;
use ringkv_actors::partition::PartitionActor;
use serde_json::json;
use std::sync::Arc;

/// What every handler of one worker can reach.
pub struct ApiState {
    pub node_id: String,
    pub partition: Addr<PartitionActor>,
    pub services: Arc<Services>,
    pub max_value_bytes: usize,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(admin::metrics))
        .route("/v1/ring", web::get().to(cluster::ring))
        .route("/v1/cluster", web::get().to(admin::cluster))
        .route("/v1/admin/repair", web::post().to(admin::repair))
        .route("/v1/admin/local/{key:.*}", web::get().to(cluster::local))
        .service(
            web::resource("/v1/kv/{key:.*}")
                .route(web::get().to(kv::get))
                .route(web::head().to(kv::get))
                .route(web::put().to(kv::put))
                .route(web::delete().to(kv::delete))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

async fn health(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "node": state.node_id}))
}

/// How long after start `/ready` waits for every peer connection before it
/// reports ready anyway (peers may be down; quorums decide per request).
pub const READY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Ready once every peer connection is up (or [`READY_GRACE`] passed), so a
/// load balancer does not send requests a fresh node cannot coordinate yet.
async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let links = &state.services.peer_links;
    let connected = links
        .values()
        .filter(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .count();
    let serving_reads = !state
        .services
        .core
        .local
        .repairing
        .load(std::sync::atomic::Ordering::Relaxed);
    if connected < links.len() && state.services.started.elapsed() < READY_GRACE {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("connected to {connected} of {} peers", links.len()),
        )
        .with("node", state.node_id.clone())
        .with("peers_connected", connected)
        .with("peers", links.len())
        .error_response();
    }
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "node": state.node_id,
        "peers_connected": connected,
        "peers": links.len(),
        "serving_reads": serving_reads,
    }))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "use GET, HEAD, PUT or DELETE on /v1/kv/{key}",
    )
    .error_response()
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route").error_response()
}
