//! Server-Sent Events: `GET /sse?groups=a,b`, the same messages as a WebSocket for clients that
//! only read.
//!
//! A stream is a session like any other, without a reader: admitted, authenticated (a token in
//! `?token=` or `Authorization`, or the connect hook with its cookies) and checked the same way
//! before the response starts, so a refusal is an HTTP status (401, 403, 400, 503), not an
//! event. It counts toward the connection limits, takes the control API's orders and is closed
//! by the drain. Each frame a WebSocket client would get becomes an event named after its
//! `type` (`welcome`, `message`, `subscribed`, `recovered`, `unsubscribed`; `error` frames are
//! `herald-error`, since an `EventSource` reports its own failures as `error`) whose `data:` is
//! the same JSON; comments keep proxies from cutting an idle stream.
//!
//! In groups with history every positioned event carries `id:` with the stream's position in
//! each of them (`<group>:<offset>:<epoch>`, comma-separated). A browser's `EventSource` sends the
//! last one back as `Last-Event-ID` when it reconnects, to any gateway: the stream then resumes
//! each group from there, or says `recovered: false` for one it cannot.
//!
//! When the server ends a stream it sends `event: close` with `{"code","reason"}` (the WebSocket
//! close code): the JS helper stops reconnecting on 4001 and 4003, as the WebSocket client does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tracing::Instrument;

use super::{Grants, Session, auth};
use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::gateway::admission::{Admitted, parse_since};
use crate::gateway::error::ApiError;
use crate::group::GroupName;
use crate::outbox::{Attention, Outbox};
use crate::protocol::{ErrorCode, Since, close};

/// Frames turned into one chunk of the body at most.
const MAX_BATCH: usize = 64;
/// How soon a browser reconnects after the stream ends.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub(in crate::gateway) struct StreamQuery {
    #[serde(default)]
    groups: String,
}

/// `GET /sse?groups=a,b`: admits the client and streams its groups.
pub(in crate::gateway) async fn stream(
    State(gateway): State<Arc<Gateway>>,
    admitted: Admitted,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    let groups = parse_groups(&query.groups, gateway.config.max_groups_per_client)?;
    let Admitted { peer, token, path, headers: forwarded, mut since, slot, cork: _ } = admitted;
    since.extend(last_event_id(&headers)?);
    let grants = Grants { subscribe: groups, since, ..Grants::default() };
    let mut session = Session::open(gateway, grants);
    let token = token.or_else(|| crate::gateway::bearer(&headers).map(str::to_string));
    let handshake = auth::Handshake { peer, path, headers: forwarded, token, transport: "sse" };
    let admitted = Box::pin(session.admit(handshake)).await;
    let assigned = match admitted.and_then(|assigned| session.check_stream().map(|()| assigned)) {
        Ok(assigned) => assigned,
        Err(refused) => {
            session.refuse(refused);
            return Err(session.refused_as_http().await);
        }
    };
    let body = Body::from_stream(events(session.outbox.clone(), session.gateway.config.ping_interval));
    let span = tracing::info_span!("sse", client = %session.info.client, %peer);
    let sessions = session.gateway.sessions.clone();
    tokio::spawn(
        sessions.track_future(
            async move {
                let _slot = slot;
                session.run_stream(assigned).await;
            }
            .instrument(span),
        ),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // nginx would otherwise buffer the stream.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

impl Session {
    /// With `auth = "required"`, a stream must have come with credentials; and it may read
    /// every group it names.
    fn check_stream(&self) -> Result<(), auth::Refused> {
        if self.gateway.config.auth_mode() == AuthMode::Required && self.identity.is_none() {
            let reason = "authentication required: give a token in ?token= or Authorization".into();
            return Err(auth::Refused { code: close::UNAUTHORIZED, reason });
        }
        for group in &self.grants.subscribe {
            if let Err(e) = self.check_subscribe(group) {
                return Err(auth::Refused { code: close::FORBIDDEN, reason: e.message });
            }
        }
        Ok(())
    }

    /// Unregisters a stream that was refused, as the HTTP error its close code stands for.
    async fn refused_as_http(mut self) -> ApiError {
        let code = self.end().await.unwrap_or(close::UNAUTHORIZED);
        let reason = self.outbox.close_reason().unwrap_or("refused").to_string();
        match code {
            close::UNAUTHORIZED => ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Forbidden, reason),
            close::FORBIDDEN => ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, reason),
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, reason),
        }
    }

    /// The stream's session: joins its groups (and those the connect hook assigned), then
    /// carries out orders until it is closed (by the client going away, the drain, the control
    /// API) or its token expires.
    async fn run_stream(mut self, assigned: Vec<GroupName>) {
        tracing::debug!("stream opened");
        self.send(crate::protocol::welcome(&self.info.client, self.gateway.node_id())).await;
        Box::pin(self.join_assigned(assigned)).await;
        Box::pin(self.join_granted()).await;
        loop {
            let expiry = self.token_expiry();
            let attention = tokio::select! {
                attention = self.outbox.attention() => attention,
                _ = sleep_until(expiry) => {
                    if self.overdue() == Some(close::UNAUTHORIZED) {
                        self.outbox.close(close::UNAUTHORIZED);
                    }
                    continue;
                }
            };
            match attention {
                Attention::Close(_) => break,
                Attention::Orders => Box::pin(self.obey()).await,
            }
        }
        let code = Box::pin(self.end()).await;
        tracing::debug!(close = code, "stream closed");
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The comma-separated groups of `?groups=`: at least one, each valid, at most `max`.
fn parse_groups(list: &str, max: usize) -> Result<Vec<GroupName>, ApiError> {
    let mut groups: Vec<GroupName> = Vec::new();
    for name in list.split(',').filter(|name| !name.is_empty()) {
        let group = GroupName::new(name)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidGroup, e.to_string()))?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    if groups.is_empty() {
        return Err(ApiError::bad_request(ErrorCode::BadRequest, "name the groups to stream: ?groups=a,b"));
    }
    if groups.len() > max {
        let message = format!("more than max_groups_per_client ({max}) groups");
        return Err(ApiError::bad_request(ErrorCode::BadRequest, message));
    }
    Ok(groups)
}

/// The positions a reconnecting `EventSource` sends back: `Last-Event-ID`, as the stream's
/// event ids write them.
fn last_event_id(headers: &HeaderMap) -> Result<HashMap<GroupName, Since>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(HashMap::new()) };
    let value = value.to_str().unwrap_or_default();
    value
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            parse_since(part).ok_or_else(|| {
                let message = format!("Last-Event-ID must be <group>:<offset>:<epoch>,..., got {value:?}");
                ApiError::bad_request(ErrorCode::BadRequest, message)
            })
        })
        .collect()
}

/// Closes the session when the body is dropped: the client went away.
struct CloseOnDrop(Arc<Outbox>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(close::NORMAL);
    }
}

/// What the body stream keeps between chunks.
struct Writer {
    outbox: CloseOnDrop,
    batch: VecDeque<Utf8Bytes>,
    /// The last position seen in each group with history: the next event id.
    positions: BTreeMap<String, (u64, String)>,
    heartbeat: tokio::time::Interval,
    closed: bool,
}

/// The response body: the outbox's frames as events, heartbeats when idle, and a `close` event
/// when the server ends the stream.
fn events(
    outbox: Arc<Outbox>,
    heartbeat: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let writer = Writer {
        outbox: CloseOnDrop(outbox),
        batch: VecDeque::new(),
        positions: BTreeMap::new(),
        heartbeat,
        closed: false,
    };
    let retry = Bytes::from(format!("retry: {}\n\n", RETRY.as_millis()));
    let events = futures_util::stream::unfold(writer, |mut writer| async move {
        let chunk = writer.next_chunk().await?;
        Some((Ok(chunk), writer))
    });
    futures_util::stream::once(std::future::ready(Ok(retry))).chain(events)
}

impl Writer {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        let outbox = self.outbox.0.clone();
        tokio::select! {
            biased;
            code = outbox.closing() => {
                self.closed = true;
                let reason = outbox.close_reason().unwrap_or_default();
                let data = serde_json::json!({ "code": code, "reason": reason }).to_string();
                let mut chunk = String::new();
                event(&mut chunk, "close", None, &data);
                Some(Bytes::from(chunk))
            }
            _ = outbox.next_batch(MAX_BATCH, 0, &mut self.batch) => {
                let mut chunk = String::new();
                for frame in self.batch.drain(..) {
                    let (kind, id) = describe(&mut self.positions, &frame);
                    event(&mut chunk, kind, id.as_deref(), &frame);
                }
                Some(Bytes::from(chunk))
            }
            _ = self.heartbeat.tick() => Some(Bytes::from_static(b": heartbeat\n\n")),
        }
    }
}

/// The event name of a frame (its `type`), and the stream's event id after it when the
/// frame moves a group's position (`positions` holds each group's last).
fn describe<'a>(
    positions: &mut BTreeMap<String, (u64, String)>,
    frame: &'a str,
) -> (&'a str, Option<String>) {
    let kind = frame
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split_once('"'))
        .map_or("message", |(kind, _)| kind);
    if !matches!(kind, "message" | "subscribed" | "recovered") {
        // An EventSource reports its own connection problems as `error`.
        return (if kind == "error" { "herald-error" } else { kind }, None);
    }
    let Ok(head) = serde_json::from_str::<Head>(frame) else { return (kind, None) };
    let (Some(group), Some(offset), Some(epoch)) = (head.group, head.offset, head.epoch) else {
        return (kind, None);
    };
    positions.insert(group, (offset, epoch));
    let id = positions.iter().map(|(g, (o, e))| format!("{g}:{o}:{e}")).collect::<Vec<_>>().join(",");
    (kind, Some(id))
}

/// The parts of a frame that place it in a group's history.
#[derive(Deserialize)]
struct Head {
    group: Option<String>,
    offset: Option<u64>,
    epoch: Option<String>,
}

/// Appends one event; `data` may span lines (a publisher's JSON keeps its whitespace), each of
/// which becomes a `data:` line that the browser joins back with newlines.
fn event(out: &mut String, kind: &str, id: Option<&str>, data: &str) {
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_events_with_the_positions_of_every_group() {
        let mut positions = BTreeMap::new();
        let a = r#"{"type":"message","group":"a","offset":4,"epoch":"e1","data":{"x":1}}"#;
        assert_eq!(describe(&mut positions, a), ("message", Some("a:4:e1".into())));
        let b = r#"{"type":"subscribed","group":"b","offset":0,"epoch":"e2"}"#;
        assert_eq!(describe(&mut positions, b), ("subscribed", Some("a:4:e1,b:0:e2".into())));
        let plain = r#"{"type":"message","group":"c","data":1}"#;
        assert_eq!(describe(&mut positions, plain), ("message", None));
        assert_eq!(
            describe(&mut positions, r#"{"type":"welcome","client":"n-1","node":"n"}"#),
            ("welcome", None)
        );
        let error = r#"{"type":"error","code":"unavailable","message":"m"}"#;
        assert_eq!(describe(&mut positions, error), ("herald-error", None));

        let mut out = String::new();
        event(&mut out, "message", Some("a:4:e1"), "{\n \"x\": 1\n}");
        assert_eq!(out, "event: message\nid: a:4:e1\ndata: {\ndata:  \"x\": 1\ndata: }\n\n");
    }

    #[test]
    fn last_event_id_gives_positions_to_resume_from() {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", "a:4:e1,b.c:0:e2".parse().unwrap());
        let since = last_event_id(&headers).unwrap();
        assert_eq!(since[&GroupName::new("b.c").unwrap()], Since { offset: 0, epoch: "e2".into() });
        headers.insert("last-event-id", "a:4".parse().unwrap());
        assert_eq!(last_event_id(&headers).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert!(parse_groups("a,,b,a", 3).unwrap().len() == 2);
        assert!(
            parse_groups("", 3).is_err()
                && parse_groups("a b", 3).is_err()
                && parse_groups("a,b", 1).is_err()
        );
    }
}
