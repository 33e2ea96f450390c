//! `POST /api/publish` with `{"group":G,"data":X}` or `{"groups":[..],"data":X}`.
//!
//! Each group is published on its own: when some fail (Redis unreachable), the others are still
//! published, and the answer (503) lists both, so the caller retries only what failed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::gateway::Gateway;
use crate::gateway::error::ApiError;
use crate::group::GroupName;
use crate::protocol::ErrorCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    group: Option<String>,
    groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::present")]
    data: Option<Box<RawValue>>,
}

pub(super) async fn publish(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("body is larger than max_frame_bytes ({})", gateway.config.max_frame_bytes),
        ),
        _ => ApiError::bad_request(ErrorCode::BadRequest, e.body_text()),
    })?;
    let (groups, data) = parse_publish(&body)?;
    let (mut published, mut failed) = (Vec::new(), Vec::new());
    let mut last_error = None;
    for group in &groups {
        match gateway.publish(group, &data, None).await {
            Ok(()) => published.push(group),
            Err(e) => {
                failed.push(json!({"group": group, "code": ErrorCode::Unavailable}));
                last_error = Some(e);
            }
        }
    }
    let Some(e) = last_error else { return Ok(Json(json!({"ok": true})).into_response()) };
    let body = json!({
        "ok": false,
        "error": {"code": ErrorCode::Unavailable, "message": e.to_string()},
        "published": published,
        "failed": failed,
    });
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

fn parse_publish(body: &[u8]) -> Result<(Vec<GroupName>, Box<RawValue>), ApiError> {
    let bad = |message: String| ApiError::bad_request(ErrorCode::BadRequest, message);
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
        .map(|name| {
            GroupName::new(name)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidGroup, format!("{name:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((groups, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies() {
        let (groups, data) = parse_publish(br#"{"groups":["a","b.c"],"data":[1]}"#).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(data.get(), "[1]");
        let code = |b: &[u8]| parse_publish(b).unwrap_err().code;
        assert_eq!(code(br#"{"group":"a b","data":1}"#), ErrorCode::InvalidGroup);
        assert_eq!(code(br#"{"group":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"group":"a","groups":["b"],"data":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"groups":[],"data":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"group":"a","data":1,"extra":2}"#), ErrorCode::BadRequest);
        assert_eq!(code(b"not json"), ErrorCode::BadRequest);
    }
}
