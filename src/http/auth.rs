//! Token checks in front of every route (when the config names a tokens
//! file), as middleware: they run before a handler reads a body or touches
//! a key, so a refused request learns nothing about the data.
//!
//! * `/health` is open; `/ready`, `/metrics`, `/v1/cluster`, `/v1/ring` need
//!   `read`; `GET`/`HEAD` of a key `read`, `PUT`/`DELETE` `write`, with the
//!   token's prefix covering the key; `/v1/admin/*` needs `admin`.
//! * 401 `unauthorized` (with `WWW-Authenticate: Bearer`) for a missing,
//!   malformed, unknown, revoked or expired token — one answer for all, so
//!   it tells nothing about which; 403 `forbidden` when the role or prefix
//!   does not cover the request; 429 `throttled` with `Retry-After` while the
//!   client's address, its IPv6 /48, or the whole node is refusing failures
//!   after too many ([`crate::auth::throttle`]).
//! * 503 `tokens_unavailable` (`Retry-After: 1`, `"outcome": "not_applied"`)
//!   for every token while the tokens file has changed and cannot be loaded:
//!   the token may be fine, but the node cannot tell whether the new file
//!   revokes it ([`crate::auth`]). `/health` stays open.
//! * Each refusal is counted in `/metrics`; 401 and 403 are logged with the
//!   address and the token id (never the secret), at most
//!   [`crate::auth::REFUSAL_LINES`] lines of each kind per
//!   [`crate::auth::REFUSAL_WINDOW_MS`], then one line saying how many were
//!   suppressed ([`crate::auth::log_limit`]).
//!
//! The route is classified on the path actix routes on (percent-decoded
//! except `%`, `/` and `+`), so an encoded path cannot reach a route under
//! a weaker rule; the key is decoded from the raw path exactly as the
//! handlers decode it.

use super::body_budget::TokenId;
use super::cluster::LOCAL_PREFIX;
use super::error::ApiError;
use super::request::KV_PREFIX;
use super::ApiState;
use crate::auth::throttle::Scope;
use crate::auth::token::{allows, parse_header, Need, Refusal, Role};
use crate::auth::Auth;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use percent_encoding::percent_decode_str;
use ringkv_actors::metrics::Metrics;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a route needs, from the routing path, the raw path and the method;
/// `None`: open to anyone.
pub fn classify(
    routing_path: &str,
    raw_path: &str,
    method: &Method,
) -> Option<(Role, Option<Vec<u8>>)> {
    let key = |prefix: &str| -> Vec<u8> {
        percent_decode_str(raw_path.strip_prefix(prefix).unwrap_or("")).collect()
    };
    if routing_path == "/health" {
        return None;
    }
    if routing_path.starts_with("/v1/kv") {
        let role = match *method {
            Method::PUT | Method::DELETE | Method::POST | Method::PATCH => Role::Write,
            _ => Role::Read,
        };
        return Some((role, Some(key(KV_PREFIX))));
    }
    if routing_path.starts_with("/v1/admin/local") {
        return Some((Role::Admin, Some(key(LOCAL_PREFIX))));
    }
    if routing_path.starts_with("/v1/admin") {
        return Some((Role::Admin, None));
    }
    Some((Role::Read, None))
}

fn unauthorized() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid token is required: Authorization: Bearer <id>.<secret>",
    );
    e.www_authenticate = true;
    e
}

/// Every token is refused while the tokens file cannot be loaded.
fn tokens_unavailable() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "tokens_unavailable",
        "the tokens file changed and cannot be loaded yet, so no token can be checked; \
         retry shortly",
    )
    .with("outcome", "not_applied");
    e.retry_after_s = Some(1);
    e
}

/// Logs a refusal line, within the limit of its kind (`forbidden`: 403).
fn log_refusal(auth: &Auth, forbidden: bool, now_ms: u64, line: impl FnOnce() -> String) {
    let admitted = {
        let mut logs = auth.refusal_logs.lock().unwrap_or_else(|p| p.into_inner());
        if forbidden {
            logs.forbidden.admit(now_ms)
        } else {
            logs.unauthorized.admit(now_ms)
        }
    };
    let Some(suppressed) = admitted else {
        return;
    };
    if suppressed > 0 {
        let kind = if forbidden { "403" } else { "401" };
        log::warn!("suppressed {suppressed} similar lines (refused requests, {kind})");
    }
    log::warn!("{}", line());
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The decision for one request: `Ok(Some(token id))` when a valid token
/// allows it, `Ok(None)` for an open route.
fn check(req: &ServiceRequest, auth: &Auth, metrics: &Metrics) -> Result<Option<String>, ApiError> {
    let Some((role, key)) = classify(req.match_info().as_str(), req.uri().path(), req.method())
    else {
        return Ok(None);
    };
    if !auth.is_available() {
        Metrics::add(&metrics.auth_unavailable, 1);
        return Err(tokens_unavailable());
    }
    let ip = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let now = auth.now_ms();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let presented = parse_header(header);
    let outcome = presented.and_then(|(id, secret)| auth.tokens().check(id, secret, now_unix()));
    let grant = match outcome {
        Ok(g) => g,
        // No token guesses nothing: not counted (a load balancer probing
        // `/ready` without a token never blocks the clients behind it).
        Err(Refusal::Missing) => return Err(unauthorized()),
        Err(why) => {
            let mut throttle = auth.throttle.lock().unwrap_or_else(|p| p.into_inner());
            // A valid token is served even from a blocked address (clients
            // behind the same NAT or proxy as a guesser keep working); only
            // failures are refused early.
            if let Err(blocked) = throttle.check(ip, now) {
                drop(throttle);
                Metrics::add(&metrics.auth_throttled, 1);
                let from = match blocked.scope {
                    Scope::Address => "this address",
                    Scope::Prefix48 => "this address's /48",
                    Scope::Node => "all clients of this node",
                };
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    format!("too many failed token checks from {from}; retry later"),
                );
                e.retry_after_s = Some(blocked.ms.div_ceil(1000).max(1));
                return Err(e);
            }
            throttle.failed(ip, now);
            drop(throttle);
            Metrics::add(&metrics.auth_failures, 1);
            log_refusal(auth, false, now, || {
                format!(
                    "refused a request from {ip}: {} (token id {:?}) for {} {:?}",
                    why.as_str(),
                    presented.map_or("-", |(id, _)| id),
                    req.method(),
                    route_for_log(req.match_info().as_str())
                )
            });
            return Err(unauthorized());
        }
    };
    let need = Need {
        role,
        key: key.as_deref(),
    };
    if !allows(&grant, &need) {
        Metrics::add(&metrics.auth_forbidden, 1);
        log_refusal(auth, true, now, || {
            format!(
                "refused a request from {ip}: token {} ({}{}) may not {} {:?}",
                grant.id,
                grant.role,
                grant
                    .prefix
                    .as_deref()
                    .map_or(String::new(), |p| format!(", prefix {p:?}")),
                req.method(),
                route_for_log(req.match_info().as_str())
            )
        });
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token's role or key prefix does not allow this request (it needs {role})"
            ),
        ));
    }
    Ok(Some(grant.id))
}

/// The route of a path, without the key (keys are data, never logged).
fn route_for_log(path: &str) -> &str {
    for prefix in ["/v1/kv", "/v1/admin/local"] {
        if path.starts_with(prefix) {
            return prefix;
        }
    }
    if path.len() > 64 {
        "(long path)"
    } else {
        path
    }
}

/// The middleware: passes the request on, or answers the refusal.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let verdict = match state
        .as_ref()
        .and_then(|s| s.services.auth.as_ref().map(|a| (s, a)))
    {
        None => Ok(None),
        Some((s, auth)) => check(&req, auth, &s.services.core.local.stats),
    };
    // Its body counts against this token's share of the body budget.
    let verdict = verdict.map(|id| {
        if let Some(id) = id {
            req.extensions_mut().insert(TokenId(id));
        }
    });
    match verdict {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_the_api_promises() {
        let c = |p: &str, m: Method| classify(p, p, &m);
        assert_eq!(c("/health", Method::GET), None);
        assert_eq!(c("/ready", Method::GET), Some((Role::Read, None)));
        assert_eq!(c("/metrics", Method::GET), Some((Role::Read, None)));
        assert_eq!(c("/v1/cluster", Method::GET), Some((Role::Read, None)));
        assert_eq!(
            c("/v1/kv/a%2Fb", Method::GET),
            Some((Role::Read, Some(b"a/b".to_vec())))
        );
        assert_eq!(c("/v1/kv/a", Method::PUT).unwrap().0, Role::Write);
        assert_eq!(c("/v1/kv/a", Method::DELETE).unwrap().0, Role::Write);
        assert_eq!(
            c("/v1/admin/repair", Method::POST),
            Some((Role::Admin, None))
        );
        assert_eq!(
            c("/v1/admin/local/k", Method::GET),
            Some((Role::Admin, Some(b"k".to_vec())))
        );
        assert_eq!(c("/anything", Method::GET), Some((Role::Read, None)));
    }

    /// An encoded path is classified as actix routes it, not as it looks.
    #[actix_web::test]
    async fn an_encoded_path_cannot_dodge_the_admin_rule() {
        let req = actix_web::test::TestRequest::post()
            .uri("/v1/%61dmin/repair")
            .to_srv_request();
        assert_eq!(req.match_info().as_str(), "/v1/admin/repair");
        let need = classify(req.match_info().as_str(), req.uri().path(), req.method());
        assert_eq!(need, Some((Role::Admin, None)));
        let req = actix_web::test::TestRequest::put()
            .uri("/v1/%6Bv/x")
            .to_srv_request();
        let need = classify(req.match_info().as_str(), req.uri().path(), req.method());
        assert_eq!(need.unwrap().0, Role::Write);
    }
}
