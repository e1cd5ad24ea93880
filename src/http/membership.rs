//! Membership changes: `POST /v1/admin/layout/{join|leave|remove|replace|
//! skip}?node=ID[&with=NEW][&force=true]` proposes the next layout version
//! through metadata consensus ([`ringkv_actors::meta::change`]), and
//! `GET /v1/admin/transfers` shows the partitions this node pulls for the
//! change in flight.

use super::error::ApiError;
use super::ApiState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ringkv_actors::meta::change::{plan, Change};
use ringkv_actors::meta::command::{MetaCommand, MetaReply};
use ringkv_actors::meta::service::{MetaError, MetaService};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuery {
    node: String,
    /// The new node of a `replace`.
    with: Option<String>,
    #[serde(default)]
    force: bool,
}

fn meta(state: &ApiState) -> Result<&MetaService, ApiError> {
    state.services.meta.as_ref().map_err(|why| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "meta_unavailable",
            format!("metadata consensus is not running on this node: {why}"),
        )
    })
}

fn refused(why: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "change_refused", why).with("outcome", "not_applied")
}

fn meta_error(e: MetaError) -> ApiError {
    let outcome = match e {
        MetaError::Indeterminate(_) => "indeterminate",
        _ => "not_applied",
    };
    let mut err = match e {
        MetaError::Refused(why) => return refused(why),
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "meta_unavailable",
            e.to_string(),
        ),
    };
    err.retry_after_s = Some(1);
    err.with("outcome", outcome)
}

/// Proposes `command`; a refusal by the state machine is a 409.
async fn propose(meta: &MetaService, command: MetaCommand) -> Result<MetaReply, ApiError> {
    match meta.propose(command).await.map_err(meta_error)? {
        MetaReply::Refused(why) => Err(refused(why)),
        reply => Ok(reply),
    }
}

pub async fn change(
    state: web::Data<ApiState>,
    op: web::Path<String>,
    query: web::Query<ChangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let meta = meta(&state)?;
    let q = query.into_inner();
    if op.as_str() == "skip" {
        let core = &state.services.core;
        let placed_newest = meta
            .history()
            .is_some_and(|h| h.current().contains(&q.node));
        let up = q.node == core.node_id.as_str() || !core.liveness.is_down(&q.node);
        let why = if up {
            Some(format!(
                "{} is up: a skipped node's requests are not fenced and its data is not \
                 waited for; skip only a dead node",
                q.node
            ))
        } else if placed_newest {
            Some(format!(
                "{} is placed by the newest layout version: skipping it would switch reads to \
                 replicas that lack its partitions' data; `remove` or `replace` it instead",
                q.node
            ))
        } else {
            None
        };
        if let (Some(why), false) = (why, q.force) {
            return Err(refused(format!("{why} (force=true to do it anyway)")));
        }
        let reply = propose(meta, MetaCommand::Skip { node: q.node }).await?;
        let w = state.services.core.replication.w;
        return Ok(HttpResponse::Ok().json(json!({ "at_risk": at_risk(&reply, w) })));
    }
    let change = match (op.as_str(), q.with) {
        ("join", None) => Change::Join(q.node),
        ("leave", None) => Change::Leave(q.node),
        ("remove", None) => Change::Remove(q.node),
        ("replace", Some(new)) => Change::Replace { dead: q.node, new },
        ("replace", None) => {
            return Err(ApiError::bad_request(
                "invalid_change",
                "replace needs the new node: ?node=DEAD&with=NEW",
            ))
        }
        (other, _) => {
            return Err(ApiError::bad_request(
                "invalid_change",
                format!(
                    "unknown change '{}' (join, leave, remove, replace, skip; `with` is for \
                     replace only)",
                    other.chars().take(64).collect::<String>()
                ),
            ))
        }
    };
    let Some(history) = meta.history() else {
        return Err(meta_error(MetaError::NoLeader(
            "no layout version is agreed yet".into(),
        )));
    };
    let configured: Vec<String> = state
        .services
        .config
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let core = &state.services.core;
    let me = core.node_id.as_str();
    let is_down = |n: &str| n != me && core.liveness.is_down(n);
    let p = plan(&history, &change, &configured, is_down, q.force).map_err(refused)?;
    let summary = p.summary();
    let command = MetaCommand::Propose {
        layout: p.layout.to_record(),
        force: q.force,
    };
    propose(meta, command).await?;
    log::info!(
        "layout version {} proposed here ({change:?}): {} partitions move",
        summary.version,
        summary.moved_partitions
    );
    let mut body = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(dead) = p.skip {
        // The version is agreed; a failed skip is retried with `skip`.
        match propose(meta, MetaCommand::Skip { node: dead.clone() }).await {
            Ok(reply) => body["at_risk"] = at_risk(&reply, core.replication.w),
            Err(e) => {
                body["skip_error"] = json!(format!(
                    "layout version {} is agreed, but skipping {dead} failed: {} — run `ringkv \
                     admin skip {dead}`",
                    summary.version, e.message
                ))
            }
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

/// What a skip may lose: partitions where skipped nodes held writes that
/// a consistency level may have acknowledged on them alone.
fn at_risk(reply: &MetaReply, w: usize) -> serde_json::Value {
    match reply {
        MetaReply::Skipped(risk) => json!(risk
            .iter()
            .map(|r| json!({
                "partition": r.partition,
                "skipped_replicas": r.skipped,
                "replicas": r.replicas,
                "writes_at_one_may_be_lost": r.loses_writes_at(1),
                "writes_at_quorum_may_be_lost": r.loses_writes_at(r.replicas / 2 + 1),
                "writes_at_default_w_may_be_lost": r.loses_writes_at(w),
            }))
            .collect::<Vec<_>>()),
        _ => json!([]),
    }
}

/// `GET /v1/admin/transfers`: what this node pulls for the change in
/// flight, partition by partition.
pub async fn transfers(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Some(t) = &state.services.transition else {
        return Err(meta(&state).err().unwrap_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "meta_unavailable",
                "this node follows no layout history",
            )
        }));
    };
    Ok(HttpResponse::Ok().json(json!({
        "node": state.services.core.node_id.as_str(),
        "transfers": t.transfers(),
        "last_error": t.last_error(),
    })))
}
