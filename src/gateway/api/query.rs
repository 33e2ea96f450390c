//! `GET /api/history` and `GET /api/presence`: what a backend may read about a group.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::broker::HistoryPolicy;
use crate::config::NamespaceConfig;
use crate::gateway::Gateway;
use crate::gateway::error::ApiError;
use crate::group::GroupName;
use crate::protocol::ErrorCode;

#[derive(Deserialize)]
pub(super) struct GroupQuery {
    group: String,
    since: Option<u64>,
    limit: Option<usize>,
}

/// The query's group and its namespace, which must have `feature` on.
fn query_group<'a>(
    gateway: &'a Gateway,
    query: Result<Query<GroupQuery>, QueryRejection>,
    feature: &str,
    enabled: fn(&NamespaceConfig) -> bool,
) -> Result<(GroupName, &'a NamespaceConfig, GroupQuery), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    let group = GroupName::new(&query.group)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidGroup, e.to_string()))?;
    let namespace = gateway.config.namespace(group.namespace());
    if !enabled(namespace) {
        let message = format!("{feature} is off for namespace {:?}", group.namespace());
        return Err(ApiError::bad_request(ErrorCode::BadRequest, message));
    }
    Ok((group, namespace, query))
}

/// Bytes of messages one history answer holds at most (at least one message).
const HISTORY_BYTES: usize = 1024 * 1024;

/// `GET /api/history?group=G&since=N&limit=L`: the retained messages after offset N (default
/// 0: all), at most L (default and at most `history_size`) and about 1 MiB, with the group's
/// position; page on with `since` set to the last offset returned.
pub(super) async fn history(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<GroupQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (group, namespace, query) =
        query_group(&gateway, query, "history", |ns| HistoryPolicy::of(ns).is_some())?;
    let policy = HistoryPolicy::of(namespace).expect("checked by query_group");
    let limit = query.limit.unwrap_or(policy.size).min(policy.size);
    let history = &gateway.hub.broker().history;
    let state = history.state(&group).await?;
    let position = state.position();
    let page = match &state.epoch {
        Some((epoch, _)) => {
            let after = query.since.unwrap_or(0);
            history.read(&group, epoch, after, limit, HISTORY_BYTES).await?.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let messages: Vec<&RawValue> =
        page.iter().filter_map(|(_, frame)| serde_json::from_str(frame.as_str()).ok()).collect();
    Ok(Json(json!({
        "offset": position.offset,
        "epoch": position.epoch,
        "first": state.first,
        "messages": messages,
    })))
}

/// `GET /api/presence?group=G`: who is subscribed, across instances.
pub(super) async fn presence(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<GroupQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (group, _, _) = query_group(&gateway, query, "presence", |ns| ns.presence)?;
    let clients = gateway.hub.broker().presence.list(&group).await?;
    Ok(Json(json!({ "clients": clients })))
}
