//! The HTTP API (actix-web): routes, and the mapping between HTTP and the
//! engine's messages.
//!
//! * [`kv`]: `GET|HEAD|PUT|DELETE /v1/kv/{key}`
//! * `GET /health` (the process is up), `GET /ready` (it serves requests)
//! * [`cluster`]: `GET /v1/ring`, `GET /v1/admin/local/{key}`
//! * [`admin`]: `GET /v1/cluster`, `POST /v1/admin/repair`, `GET /metrics`
//! * [`request`]: keys, consistency levels, conditional headers
//! * [`body`], [`body_budget`]: request bodies under deadlines and a
//!   budget shared fairly between clients
//! * [`conn`]: client connections under caps and deadlines
//! * [`error`]: the JSON error shape every error response has
//! * [`membership`]: `POST /v1/admin/layout/{op}`, `GET /v1/admin/transfers`
//! * [`auth`]: token checks in front of every route but `/health`

pub mod admin;
pub mod auth;
pub mod body;
pub mod body_budget;
pub mod cluster;
pub mod conn;
pub mod error;
pub mod kv;
pub mod membership;
pub mod request;

use crate::server::Services;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use error::ApiError;
use serde_json::json;
use std::sync::Arc;

/// What every handler of one worker can reach.
pub struct ApiState {
    pub node_id: String,
    pub services: Arc<Services>,
    pub max_value_bytes: usize,
}

/// Routes. The key routes are scopes matched by static prefix, with the
/// method dispatched here: a `{key:.*}` pattern would run a regex on every
/// request (it showed up at 6% of CPU in the GET profile).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/v1/kv").default_service(web::to(kv_routes)))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(admin::metrics))
        .route("/v1/ring", web::get().to(cluster::ring))
        .route("/v1/cluster", web::get().to(admin::cluster))
        .route("/v1/admin/repair", web::post().to(admin::repair))
        .route("/v1/admin/merkle", web::get().to(admin::merkle))
        .route("/v1/admin/layout", web::get().to(admin::layout))
        .route("/v1/admin/layout/{op}", web::post().to(membership::change))
        .route("/v1/admin/transfers", web::get().to(membership::transfers))
        .service(web::scope("/v1/admin/local").default_service(web::to(local_routes)))
        .default_service(web::to(not_found));
}

/// The key-value routes. Writes are bounded by `http.handler_timeout_ms`,
/// their body included: beyond, 503 `timeout`, `indeterminate` (the write
/// may yet be applied), and the connection closes. (A read needs no such
/// bound: the local replica is read synchronously, and every remote replica
/// within `cluster.request_timeout_ms`.)
async fn kv_routes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let write = match *req.method() {
        Method::GET | Method::HEAD => return kv::get(req, state).await,
        Method::PUT => futures_util::future::Either::Left(kv::put(req, payload, state.clone())),
        Method::DELETE => futures_util::future::Either::Right(kv::delete(req, state.clone())),
        _ => {
            return Ok(method_not_allowed(
                "use GET, HEAD, PUT or DELETE on /v1/kv/{key}",
            ))
        }
    };
    let limit = std::time::Duration::from_millis(state.services.config.http.handler_timeout_ms);
    match tokio::time::timeout(limit, write).await {
        Ok(answer) => answer,
        Err(_) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the write did not complete within http.handler_timeout_ms ({} ms)",
                    limit.as_millis()
                ),
            )
            .with("outcome", "indeterminate")
            .closing();
            e.retry_after_s = Some(1);
            Err(e)
        }
    }
}

async fn local_routes(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    match *req.method() {
        Method::GET => cluster::local(req, state).await,
        _ => Ok(method_not_allowed("use GET on /v1/admin/local/{key}")),
    }
}

/// Open without a token, so it also says which security files fail to
/// reload (the routes with details need a token, and a tokens file that
/// fails to load refuses every token): only their names, never an error.
async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let failing: Vec<&str> = state
        .services
        .core
        .local
        .stats
        .reloads
        .failing()
        .into_iter()
        .map(|(what, _)| what.as_str())
        .collect();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "node": state.node_id,
        "reload_failing": failing,
    }))
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
    let clock_vouched = !state.services.core.hlc.stepped();
    let waiting = connected < links.len() || !clock_vouched;
    if waiting && state.services.started.elapsed() < READY_GRACE {
        let why = if connected < links.len() {
            format!("connected to {connected} of {} peers", links.len())
        } else {
            "the clock has not been measured against the cluster yet".to_string()
        };
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
            .with("node", state.node_id.clone())
            .with("peers_connected", connected)
            .with("peers", links.len())
            .with("clock_vouched", clock_vouched)
            .error_response();
    }
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "node": state.node_id,
        "peers_connected": connected,
        "peers": links.len(),
        "serving_reads": serving_reads,
        "clock_vouched": clock_vouched,
    }))
}

fn method_not_allowed(message: &str) -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
    .error_response()
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route").error_response()
}
