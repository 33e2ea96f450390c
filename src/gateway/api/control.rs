//! The control API: `POST /api/disconnect`, `POST /api/subscribe`, `POST /api/unsubscribe` and
//! `GET /api/connections`. Each names its connections by `user` (all of that user's) or by
//! `client` (one connection, by the id its welcome frame gave), and acts on every gateway of the
//! deployment (see `gateway::control`).
//!
//! Answers are `{"affected": n}`: the connections closed, whose membership changed, or listed
//! (0 for a user with no connection). When a gateway the directory lists did not answer in time,
//! `"unanswered"` names it: what it may have done is not counted.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::gateway::control::{Command, Outcome};
use crate::gateway::error::ApiError;
use crate::gateway::live::Target;
use crate::group::GroupName;
use crate::protocol::{ErrorCode, close};

/// Longest close reason: a close frame's payload is at most 125 bytes, two of them the code.
const MAX_REASON: usize = 123;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Who {
    user: Option<String>,
    client: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    client: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipBody {
    user: Option<String>,
    client: Option<String>,
    group: String,
}

/// `POST /api/disconnect {"user"|"client", "code"?, "reason"?}`: closes every matching
/// connection with `code` (default 4003, which the JS client does not reconnect after).
pub(super) async fn disconnect(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: DisconnectBody = parse(body)?;
    let target = target(body.user, body.client)?;
    let code = body.code.unwrap_or(close::FORBIDDEN);
    if !(code == close::NORMAL || (3000..=4999).contains(&code)) {
        let message = format!("code {code} cannot be sent: use 1000, or 3000 to 4999");
        return Err(ApiError::bad_request(ErrorCode::BadRequest, message));
    }
    let reason = body.reason.unwrap_or_else(|| "disconnected by the server".into());
    if reason.len() > MAX_REASON {
        let message = format!("reason is longer than {MAX_REASON} bytes");
        return Err(ApiError::bad_request(ErrorCode::BadRequest, message));
    }
    Ok(affected(gateway.command(Command::Disconnect { target, code, reason }).await?))
}

/// `POST /api/subscribe {"user"|"client", "group"}`: puts the connections in `group`. Trusted:
/// no permission or hook is asked, but a connection already in `max_groups_per_client` groups
/// is left out (and told with an `error` frame).
pub(super) async fn subscribe(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (target, group) = membership(body)?;
    Ok(affected(gateway.command(Command::Subscribe { target, group }).await?))
}

/// `POST /api/unsubscribe {"user"|"client", "group"}`: takes the connections out of `group`
/// (each gets an `unsubscribed` frame with reason `server`).
pub(super) async fn unsubscribe(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (target, group) = membership(body)?;
    Ok(affected(gateway.command(Command::Unsubscribe { target, group }).await?))
}

/// `GET /api/connections?user=U` (or `?client=C`): the connections, each with its node and
/// groups.
pub(super) async fn connections(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<Who>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(who) = query.map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    let target = target(who.user, who.client)?;
    let outcome = gateway.command(Command::Connections { target }).await?;
    let mut connections: Vec<_> = outcome.answers.iter().flat_map(|a| a.connections.iter()).collect();
    connections.sort_unstable_by(|a, b| a.client.cmp(&b.client));
    let body = json!({ "affected": connections.len(), "connections": connections });
    Ok(with_unanswered(body, &outcome))
}

/// `{"affected": n}`, summed over the answers.
fn affected(outcome: Outcome) -> Json<Value> {
    let affected: u64 = outcome.answers.iter().map(|a| a.affected).sum();
    with_unanswered(json!({ "affected": affected }), &outcome)
}

fn with_unanswered(mut body: Value, outcome: &Outcome) -> Json<Value> {
    if !outcome.missing.is_empty() {
        body["unanswered"] = json!(outcome.missing);
    }
    Json(body)
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), ErrorCode::BadRequest, e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, format!("invalid body: {e}")))
}

fn membership(body: Result<Bytes, BytesRejection>) -> Result<(Target, GroupName), ApiError> {
    let body: MembershipBody = parse(body)?;
    let group = GroupName::new(&body.group)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidGroup, e.to_string()))?;
    Ok((target(body.user, body.client)?, group))
}

/// Exactly one of `user` and `client`, not empty.
fn target(user: Option<String>, client: Option<String>) -> Result<Target, ApiError> {
    match (user, client) {
        (Some(user), None) if !user.is_empty() => Ok(Target::User(user)),
        (None, Some(client)) if !client.is_empty() => Ok(Target::Client(client)),
        _ => Err(ApiError::bad_request(ErrorCode::BadRequest, "give either a user or a client, not empty")),
    }
}
