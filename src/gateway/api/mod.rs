//! The HTTP API: `POST /api/publish`, `GET /api/history`, `GET /api/presence`, the control API
//! (`POST /api/disconnect`, `/api/subscribe`, `/api/unsubscribe`, `GET /api/connections`),
//! `GET /api/info`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Every `/api/` route requires `Authorization: Bearer <key>` when `api_keys` is set (keys
//! compared in constant time, any of them valid so keys can be rotated); with no keys configured
//! only loopback callers are served. Browsers are kept out of it unless allowed: a request with
//! an `Origin` that `allowed_origins` does not allow gets 403, and a body of a kind a page can
//! send without a CORS preflight (`text/plain`, a form) gets 415, so a web page the operator
//! opens cannot publish through a loopback gateway. Errors are JSON,
//! `{"ok":false,"error":{"code":..,"message":..}}`, with the codes of the WebSocket protocol.

mod batch;
mod control;
mod publish;
mod query;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::Gateway;
use super::error::ApiError;
use crate::protocol::ErrorCode;

pub(super) fn router(gateway: &Arc<Gateway>) -> Router<Arc<Gateway>> {
    // A batch may be larger than one message; publish checks single messages against
    // max_frame_bytes itself.
    let body_limit =
        DefaultBodyLimit::max(gateway.config.max_batch_bytes.max(gateway.config.max_frame_bytes));
    let api = Router::new()
        .route("/api/publish", post(publish::publish).layer(body_limit))
        .route("/api/history", get(query::history))
        .route("/api/presence", get(query::presence))
        .route("/api/info", get(info))
        .route("/api/disconnect", post(control::disconnect))
        .route("/api/subscribe", post(control::subscribe))
        .route("/api/unsubscribe", post(control::unsubscribe))
        .route("/api/connections", get(control::connections))
        .route_layer(middleware::from_fn_with_state(gateway.clone(), require_access));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

/// `GET /api/info`: this node, and every live node of the cluster (each announces itself in
/// the broker with a TTL).
async fn info(State(gateway): State<Arc<Gateway>>) -> Result<Json<serde_json::Value>, ApiError> {
    let nodes = gateway.hub.broker().directory.nodes().await?;
    Ok(Json(json!({ "node": gateway.node_info(), "nodes": nodes })))
}

/// `GET /metrics`: the Prometheus text exposition; gauges are read off the live state.
async fn metrics(State(gateway): State<Arc<Gateway>>) -> String {
    let metrics = &gateway.metrics;
    metrics.connections.set(gateway.admission.connections() as i64);
    metrics.groups.set(gateway.hub.registry().group_count() as i64);
    metrics.render()
}

/// Lets a request through only if [`authorize`] accepts its caller.
async fn require_access(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let checked = browser_check(&gateway, request.headers())
        .and_then(|()| authorize(&gateway.config.api_keys, request.headers(), peer));
    match checked {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Refuses what a web page could send cross-site: a foreign `Origin`, or a body typed as a
/// form or plain text. Bodies are JSON, sent with `Content-Type: application/json` or none.
fn browser_check(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    gateway.admission.check_origin(headers)?;
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case(publish::NDJSON) {
        return Ok(());
    }
    let message =
        format!("Content-Type {essence:?} is not accepted: send application/json (or application/x-ndjson)");
    Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadRequest, message))
}

/// 200 while the instance can serve: its broker is usable and it is not draining.
async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let unready = |reason: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": reason})))
            .into_response()
    };
    if gateway.is_draining() {
        unready("shutting down")
    } else if !gateway.hub.broker().subscriber.is_ready() {
        unready("broker is not connected")
    } else if !gateway.control.is_joined() {
        unready("not yet in the control group")
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

/// With keys configured, one of them must be presented; with none, only loopback may call.
fn authorize(keys: &[String], headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    if keys.is_empty() {
        return match peer.ip().is_loopback() {
            true => Ok(()),
            false => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "no api_keys are configured: only loopback callers may use the API",
            )),
        };
    }
    let presented = super::bearer(headers).unwrap_or("");
    // Compare against every key, without stopping early, so timing says nothing about which
    // key (or how much of one) matched.
    let matched = keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| acc | key.as_bytes().ct_eq(presented.as_bytes()));
    if bool::from(matched) && !presented.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Forbidden, "missing or invalid API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        h
    }

    #[test]
    fn keys_any_of_several_and_loopback_only_without_keys() {
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let remote: SocketAddr = "203.0.113.9:1".parse().unwrap();
        assert!(authorize(&[], &HeaderMap::new(), loopback).is_ok());
        assert_eq!(authorize(&[], &HeaderMap::new(), remote).unwrap_err().status, StatusCode::FORBIDDEN);
        let keys = vec!["old-key".to_string(), "new-key".to_string()];
        assert!(authorize(&keys, &bearer("old-key"), remote).is_ok());
        assert!(authorize(&keys, &bearer("new-key"), remote).is_ok());
        assert_eq!(
            authorize(&keys, &bearer("new-ke"), loopback).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&keys, &HeaderMap::new(), loopback).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
