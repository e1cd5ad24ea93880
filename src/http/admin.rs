//! Operator routes: `GET /v1/cluster` (membership, liveness, hints, repair,
//! clock, reloads of security files that keep failing), `POST /v1/admin/repair` (run anti-entropy now),
//! `GET /v1/admin/layout` (the agreed layout history) and `GET /metrics`
//! (Prometheus counters).

use super::error::ApiError;
use super::ApiState;
use actix_web::{web, HttpResponse};
use ringkv_actors::antientropy::RunSummary;
use ringkv_actors::gossip::ClusterStatus;
use ringkv_actors::metrics::Job;
use ringkv_actors::repair::RunRepair;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    let mut text = state.services.core.local.stats.render();
    state.services.conns.stats.render(&mut text);
    state.services.body_budget.render(&mut text);
    let running = state.services.meta.as_ref().map(|m| m.status());
    text.push_str(
        "# HELP ringkv_meta_running 1 while metadata consensus runs on this node\n\
         # TYPE ringkv_meta_running gauge\n",
    );
    let up = matches!(&running, Ok(s) if s.error.is_none());
    text.push_str(&format!("ringkv_meta_running {}\n", u8::from(up)));
    if let Ok(status) = running {
        status.render_metrics(&mut text);
    }
    if let Some(t) = &state.services.transition {
        t.render_metrics(&mut text);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

fn summary_json(s: &RunSummary) -> Value {
    json!({
        "peers_synced": s.peers_synced,
        "peers_failed": s.peers_failed.iter().map(|(p, e)| json!({"peer": p, "error": e})).collect::<Vec<_>>(),
        "partitions_compared": s.partitions_compared,
        "partitions_differing": s.partitions_differing,
        "hashes_compared": s.hashes_compared,
        "leaves_differing": s.leaves_differing,
        "keys_pulled": s.keys_pulled,
        "keys_pushed": s.keys_pushed,
        "bytes": s.bytes,
        "duration_ms": s.duration_ms,
    })
}

/// `GET /v1/admin/merkle`: per peer, a digest of the roots of this node's
/// partition trees over the partitions it shares with that peer (hex). Two
/// replicas hold the same records in those partitions exactly when their
/// digests for each other match.
///
/// `?verify=true` also rebuilds every partition's tree by a scan of the
/// store and lists the partitions whose live tree differs
/// (`mismatched_partitions`; empty on a quiet node unless the live trees
/// drifted from the data).
pub async fn merkle(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let roots = state.services.repair_service.shared_roots();
    let roots: serde_json::Map<String, Value> = roots
        .into_iter()
        .map(|(peer, root)| (peer, json!(format!("{root:016x}"))))
        .collect();
    let mut body = json!({
        "node": state.node_id,
        "roots": roots,
    });
    if req.query_string().split('&').any(|kv| kv == "verify=true") {
        let store = state.services.core.local.store.clone();
        let mismatched = actix_web::rt::task::spawn_blocking(move || store.verify_trees())
            .await
            .map_err(|e| ApiError::from(ringkv_actors::Error::Internal(e.to_string())))?
            .map_err(|e| ApiError::from(ringkv_actors::Error::from(e)))?;
        body["mismatched_partitions"] = json!(mismatched);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// How long `POST /v1/admin/repair` waits for its pass by default.
pub const REPAIR_WAIT_MS: u64 = 60_000;
/// The longest wait a request may ask for.
pub const MAX_REPAIR_WAIT_MS: u64 = 600_000;

/// Runs an anti-entropy pass that starts after this request (requests that
/// arrive together share one pass). Waits up to `?wait_ms=` (default
/// [`REPAIR_WAIT_MS`]); answers 200 with the pass's summary, or 202 when it
/// is still running (its result then shows in `GET /v1/cluster`).
pub async fn repair(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let wait_ms = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))?
        .into_inner()
        .into_iter()
        .find(|(k, _)| k == "wait_ms")
        .map(|(_, v)| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_query", format!("wait_ms '{v}' is not a number"))
            })
        })
        .transpose()?
        .unwrap_or(REPAIR_WAIT_MS)
        .min(MAX_REPAIR_WAIT_MS)
        // Within the handler's own deadline (a second kept to answer 202).
        .min(
            state
                .services
                .config
                .http
                .handler_timeout_ms
                .saturating_sub(1_000)
                .max(1),
        );
    let pass = state.services.repair.send(RunRepair);
    match tokio::time::timeout(std::time::Duration::from_millis(wait_ms), pass).await {
        Ok(Ok(Some(summary))) => Ok(HttpResponse::Ok().json(summary_json(&summary))),
        Ok(Ok(None)) => Err(ApiError::overloaded(
            "too many repair requests are waiting already",
            ringkv_actors::error::RETRY_AFTER_MS,
        )),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Ok(HttpResponse::Accepted().json(json!({
            "running": true,
            "waited_ms": wait_ms,
            "status": "the pass goes on; GET /v1/cluster shows its result",
        }))),
    }
}

fn jobs_json(stats: &ringkv_actors::metrics::Metrics, now_ms: u64) -> Value {
    let mut out = serde_json::Map::new();
    for job in Job::ALL {
        let (last, errors, last_error) = stats.jobs.status(job);
        out.insert(
            job.as_str().to_string(),
            json!({
                "last_progress_ms_ago": (last > 0).then(|| now_ms.saturating_sub(last)),
                "errors": errors,
                "last_error": last_error,
            }),
        );
    }
    Value::Object(out)
}

/// Each security material whose reload keeps failing: which, since when
/// (wall-clock ms), how many attempts, and the last error.
fn reload_failing_json(stats: &ringkv_actors::metrics::Metrics) -> Value {
    let failing: Vec<Value> = stats
        .reloads
        .failing()
        .into_iter()
        .map(|(what, f)| {
            json!({
                "file": what.as_str(),
                "since_unix_ms": f.since_unix_ms,
                "attempts": f.attempts,
                "last_error": f.last_error,
            })
        })
        .collect();
    Value::Array(failing)
}

/// A hint floor (a version timestamp; `u64::MAX`: no hints) as the time of
/// the oldest hint's version, in ms.
fn hint_floor_ms(floor: u64) -> Option<u64> {
    (floor != u64::MAX).then_some(floor >> ringkv_actors::version::LOGICAL_BITS)
}

pub async fn cluster(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let svc = &state.services;
    let core = &svc.core;
    let view = core.view();
    let members = svc.gossip.send(ClusterStatus).await?;
    let tallies = core.local.store.hint_tallies();
    let stats = &core.local.stats;
    let members: Vec<Value> = members
        .into_iter()
        .map(|m| {
            let hints = tallies.get(&m.state.id).copied().unwrap_or_default();
            json!({
                "id": m.state.id,
                "self": m.is_self,
                "http_addr": m.state.http_addr,
                "peer_addr": m.state.peer_addr,
                "status": m.status.as_str(),
                "generation": m.state.generation,
                "heartbeat": m.state.heartbeat,
                "phi": m.phi,
                "last_seen_ms_ago": m.last_seen_ms_ago,
                // The fingerprint of its layout as it gossiped it (0: not
                // heard yet); one differing from ours places keys otherwise.
                "layout_fingerprint": m.state.ring_epoch,
                "clock_offset_ms": m.clock_offset_ms,
                // Our outbound peer connection to it is up (null: ourselves).
                "connected": svc
                    .peer_links
                    .get(&m.state.id)
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed)),
                // Partitions it is the primary of (sums to 1) and of which it
                // holds a replica (sums to N), as fractions of all.
                "owned_share": view.layout.primary_share(&m.state.id),
                "stored_share": view.layout.share(&m.state.id),
                "pending_hints": hints.count,
                "pending_hint_bytes": hints.bytes,
                // The time (ms) of the oldest hint's version this member
                // holds, as it gossiped it (ours: our store's); null: it
                // holds none; 0 for a member never heard from, as GC counts
                // it. Tombstone GC purges nothing above the lowest: the
                // member showing it is the one holding GC back.
                "hint_floor_ms": hint_floor_ms(if m.is_self {
                    core.local.store.hints_floor()
                } else {
                    core.liveness.reported_floor(&m.state.id).unwrap_or(0)
                }),
            })
        })
        .collect();
    let repair = svc
        .repair_service
        .status
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(json!({
        "node": core.node_id,
        "generation": svc.generation,
        "layout": {
            "version": view.layout.version(),
            "fingerprint": view.layout.fingerprint(),
            "partitions": view.layout.partitions(),
        },
        "replication": {
            "n": core.replication.n,
            "r": core.replication.r,
            "w": core.replication.w,
            "sloppy_quorum": core.replication.sloppy_quorum,
        },
        "members": members,
        "hints": {
            "pending": tallies.values().map(|t| t.count).sum::<u64>(),
            "stored": counter(&stats.hints_stored),
            "replayed": counter(&stats.hints_replayed),
            "dropped": counter(&stats.hints_dropped),
            "rescued": counter(&stats.hints_rescued),
        },
        "repair": {
            "running": repair.running,
            "current_peer": repair.current_peer,
            "passes": repair.passes,
            "last": repair.last.as_ref().map(summary_json),
            "last_finished_ms": repair.last_finished_ms,
            "serving_reads": !core.local.repairing.load(Ordering::Relaxed),
            "read_repairs": counter(&stats.read_repairs),
            "keys_pulled": counter(&stats.ae_keys_pulled),
            "keys_pushed": counter(&stats.ae_keys_pushed),
            "bytes": counter(&stats.ae_bytes),
            "tombstone_grace_ms": svc.config.repair.tombstone_grace_ms,
            "tombstones_purged": counter(&stats.tombstones_purged),
        },
        "reload_failing": reload_failing_json(stats),
        "jobs": jobs_json(stats, std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)),
        "clock": {
            "wall_ms": core.hlc.wall_ms(),
            "max_drift_ms": svc.config.cluster.max_clock_drift_ms,
            "refused_versions": counter(&stats.clock_refusals),
            "cluster_offset_ms": core.hlc.cluster_offset_ms(),
            "ahead_of_cluster": core.hlc.is_ahead_of_cluster(),
            "vouched": !core.hlc.stepped(),
        },
    })))
}

/// `GET /v1/admin/layout`: the layout history agreed by metadata consensus
/// as this node holds it (live versions with each member's share, each
/// node's fence/sync/switch progress), this node's Raft role, term, leader
/// and voters, and whether the newest agreed version is the configured
/// layout the data path serves (`matches_config`). Answers from local state:
/// it works when no leader is known (then `leader` is null).
pub async fn layout(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let status = match &state.services.meta {
        Ok(meta) => meta.status(),
        Err(why) => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "meta_unavailable",
                format!("metadata consensus is not running on this node: {why}"),
            ))
        }
    };
    // The version the data path routes by (the newest it writes to).
    let configured = format!(
        "{:016x}",
        state.services.core.view().history.current().fingerprint()
    );
    let matches = status
        .versions
        .last()
        .is_some_and(|v| v.fingerprint == configured);
    let mut body = serde_json::to_value(&status)
        .map_err(|e| ApiError::from(ringkv_actors::Error::Internal(e.to_string())))?;
    body["configured_fingerprint"] = json!(configured);
    body["matches_config"] = json!(matches);
    Ok(HttpResponse::Ok().json(body))
}
