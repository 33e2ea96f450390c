//! The HTTP API: `POST /api/publish`, `GET /healthz`, `GET /readyz`.
//!
//! Publishing requires `Authorization: Bearer <key>` when `api_keys` is set (keys compared in
//! constant time, any of them valid so keys can be rotated); with no keys configured only
//! loopback callers may publish. Errors are JSON: `{"ok":false,"error":{"code":..,"message":..}}`
//! with the same codes as the WebSocket protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::Gateway;
use crate::group::GroupName;
use crate::protocol::ErrorCode;

pub(super) fn router(gateway: &Gateway) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/publish", post(publish).layer(DefaultBodyLimit::max(gateway.config.max_frame_bytes)))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
}

/// A JSON error body with the protocol's error code.
pub(super) fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(json!({"ok": false, "error": {"code": code, "message": message}}))).into_response()
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.hub.broker().is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = Json(json!({"status": "unavailable", "reason": "broker is not connected"}));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    group: Option<String>,
    groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::present")]
    data: Option<Box<RawValue>>,
}

async fn publish(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err((status, message)) = authorize(&gateway.config.api_keys, &headers, peer) {
        let mut response = error_response(status, ErrorCode::Forbidden, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return response;
    }
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("body is larger than max_frame_bytes ({})", gateway.config.max_frame_bytes);
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, &message);
        }
        Err(e) => return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &e.body_text()),
    };
    let (groups, data) = match parse_publish(&body) {
        Ok(parsed) => parsed,
        Err((code, message)) => return error_response(StatusCode::BAD_REQUEST, code, &message),
    };
    for group in &groups {
        if let Err(e) = gateway.publish(group, &data).await {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, &e.to_string());
        }
    }
    Json(json!({"ok": true})).into_response()
}

fn parse_publish(body: &[u8]) -> Result<(Vec<GroupName>, Box<RawValue>), (ErrorCode, String)> {
    let bad = |message: String| (ErrorCode::BadRequest, message);
    let body: PublishBody = serde_json::from_slice(body).map_err(|e| bad(format!("invalid body: {e}")))?;
    let names = match (body.group, body.groups) {
        (Some(group), None) => vec![group],
        (None, Some(groups)) if !groups.is_empty() => groups,
        (None, Some(_)) => return Err(bad("groups must not be empty".into())),
        (Some(_), Some(_)) => return Err(bad("give either group or groups, not both".into())),
        (None, None) => return Err(bad("missing field group".into())),
    };
    let data = body.data.ok_or_else(|| bad("missing field data".into()))?;
    let groups = names
        .iter()
        .map(|name| GroupName::new(name).map_err(|e| (ErrorCode::InvalidGroup, format!("{name:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok((groups, data))
}

/// With keys configured, one of them must be presented; with none, only loopback may call.
fn authorize(
    keys: &[String],
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(), (StatusCode, &'static str)> {
    if keys.is_empty() {
        return match peer.ip().is_loopback() {
            true => Ok(()),
            false => {
                Err((StatusCode::FORBIDDEN, "no api_keys are configured: only loopback callers may publish"))
            }
        };
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare against every key, without stopping early, so timing says nothing about which
    // key (or how much of one) matched.
    let matched = keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| acc | key.as_bytes().ct_eq(presented.as_bytes()));
    if bool::from(matched) && !presented.is_empty() {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or invalid API key"))
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
        assert_eq!(authorize(&[], &HeaderMap::new(), remote).unwrap_err().0, StatusCode::FORBIDDEN);
        let keys = vec!["old-key".to_string(), "new-key".to_string()];
        assert!(authorize(&keys, &bearer("old-key"), remote).is_ok());
        assert!(authorize(&keys, &bearer("new-key"), remote).is_ok());
        assert_eq!(authorize(&keys, &bearer("new-ke"), loopback).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert_eq!(authorize(&keys, &HeaderMap::new(), loopback).unwrap_err().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn publish_bodies() {
        let (groups, data) = parse_publish(br#"{"groups":["a","b.c"],"data":[1]}"#).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(data.get(), "[1]");
        let code = |b: &[u8]| parse_publish(b).unwrap_err().0;
        assert_eq!(code(br#"{"group":"a b","data":1}"#), ErrorCode::InvalidGroup);
        assert_eq!(code(br#"{"group":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"group":"a","groups":["b"],"data":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"groups":[],"data":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"group":"a","data":1,"extra":2}"#), ErrorCode::BadRequest);
        assert_eq!(code(b"not json"), ErrorCode::BadRequest);
    }
}
