//! `POST /api/publish`: one message to one group (`{"group":G,"data":X}`), one message to several
//! (`{"groups":[..],"data":X}`), or a batch (a JSON array of messages, or NDJSON; see `batch`).
//!
//! Every form goes to the broker in one pipeline. When some groups of a multi-group publish
//! fail (Redis unreachable), the others are still published, and the answer (503) lists both,
//! so the caller retries only what failed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::batch;
use crate::gateway::Gateway;
use crate::gateway::error::ApiError;
use crate::group::GroupName;
use crate::protocol::ErrorCode;

/// The media type of a batch with one message per line.
pub(super) const NDJSON: &str = "application/x-ndjson";

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let config = &gateway.config;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "body is larger than max_batch_bytes ({})",
                config.max_batch_bytes.max(config.max_frame_bytes)
            ),
        ),
        _ => ApiError::bad_request(ErrorCode::BadRequest, e.body_text()),
    })?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(NDJSON));
    if ndjson {
        return publish_batch(&gateway, batch::from_lines(&body, config.max_frame_bytes)).await;
    }
    if body.trim_ascii_start().starts_with(b"[") {
        let messages = batch::from_array(&body, config.max_frame_bytes).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::BadRequest, "invalid body: not a JSON array of messages")
        })?;
        return publish_batch(&gateway, messages).await;
    }
    if body.len() > config.max_frame_bytes {
        let message = format!("body is larger than max_frame_bytes ({})", config.max_frame_bytes);
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message));
    }
    let (groups, data) = parse_publish(&body)?;
    let messages: Vec<_> = groups.iter().map(|group| (group.clone(), data.clone())).collect();
    let _admitted = admit(&gateway, messages.len()).await?;
    let outcomes = gateway.publish_all(&messages, None).await;
    let (mut published, mut failed) = (Vec::new(), Vec::new());
    let mut last_error = None;
    for (group, outcome) in groups.iter().zip(outcomes) {
        match outcome {
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

/// Publishes the valid messages of a batch in one go and answers for each, in order: 200 when
/// all were published, 503 when the broker failed some (retry those), 400 when only invalid
/// messages failed.
async fn publish_batch(gateway: &Gateway, messages: Vec<batch::Message>) -> Result<Response, ApiError> {
    let valid: Vec<_> = messages.iter().filter_map(|m| m.as_ref().ok().cloned()).collect();
    let _admitted = admit(gateway, valid.len()).await?;
    let mut outcomes = gateway.publish_all(&valid, None).await.into_iter();
    let mut status = StatusCode::OK;
    let results: Vec<_> = messages
        .into_iter()
        .map(|message| {
            let outcome = match message {
                Ok(_) => outcomes
                    .next()
                    .expect("one outcome per valid message")
                    .map_err(|e| (ErrorCode::Unavailable, e.to_string())),
                Err(invalid) => Err(invalid),
            };
            status = match (&outcome, status) {
                (Err((ErrorCode::Unavailable, _)), _) => StatusCode::SERVICE_UNAVAILABLE,
                (Err(_), StatusCode::OK) => StatusCode::BAD_REQUEST,
                (_, status) => status,
            };
            batch::result(outcome)
        })
        .collect();
    Ok((status, Json(json!({ "results": results }))).into_response())
}

/// Waits for room for `messages` more publishes in flight (see `intake`); 503 past the wait.
async fn admit(gateway: &Gateway, messages: usize) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    gateway.intake.admit(messages, &*gateway.hub.broker().subscriber).await.map_err(|overloaded| {
        gateway.metrics.dropped("publish_overloaded");
        ApiError::overloaded(overloaded.retry_after)
    })
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
