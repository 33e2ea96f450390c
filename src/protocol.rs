//! Client protocol v1: the JSON text frames spoken on a WebSocket, error codes and close codes.
//!
//! Decoding is two-step on purpose: a frame is first read into a loose `RawFrame` (every field
//! optional, unknown fields ignored) so that a bad frame still yields its `id` and a precise
//! [`ErrorCode`]; only then is it turned into a typed [`Request`]. Nothing in here panics on any
//! input. Encoding produces shared [`Utf8Bytes`]: a group message is encoded once per instance and
//! the same bytes go to every local member.

use std::borrow::Cow;
use std::cell::RefCell;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::group::{GroupName, InvalidGroup};

/// WebSocket close codes Herald sends.
pub(crate) mod close {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// A client frame exceeded `max_frame_bytes`.
    pub(crate) const TOO_LARGE: u16 = 1009;
    /// The instance is shutting down; reconnect (to another instance).
    pub(crate) const RESTARTING: u16 = 1012;
    /// The instance could not complete something with its broker for this client (bringing it
    /// up to date after a gap); reconnect and recover.
    pub(crate) const TRY_AGAIN: u16 = 1013;
    /// Missing, invalid or expired credentials.
    pub(crate) const UNAUTHORIZED: u16 = 4001;
    /// The backend refused the connection (its connect hook answered 403).
    pub(crate) const FORBIDDEN: u16 = 4003;
    /// The client did not read fast enough and its outbound queue overflowed.
    pub(crate) const SLOW_CONSUMER: u16 = 4008;
    /// The client kept exceeding its rate limit.
    pub(crate) const RATE_LIMITED: u16 = 4029;
    /// The client answered no ping for `ping_interval + pong_timeout`.
    pub(crate) const NO_PONG: u16 = 4000;
    /// The connection broke (reset by the client, say): no close frame is written to it, as
    /// the protocol reserves 1006 for closes without one.
    pub(crate) const GONE: u16 = 1006;
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    InvalidGroup,
    Forbidden,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

/// A request a client may send.
#[derive(Debug)]
pub enum Request {
    Subscribe {
        group: GroupName,
        since: Option<Since>,
    },
    Unsubscribe {
        group: GroupName,
    },
    Publish {
        group: GroupName,
        data: Box<RawValue>,
    },
    Presence {
        group: GroupName,
    },
    /// The first frame of a client that did not put its token in the URL.
    Auth {
        token: String,
    },
    /// A newer token for the same user, before the current one expires.
    Refresh {
        token: String,
    },
    Ping,
}

/// Where a recovering client left off: the last offset it saw, in that epoch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// A client as others see it in presence and join/leave events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientInfo {
    pub client: String,
    pub user: Option<String>,
    pub node: String,
    /// The `info` claim of the client's token, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// A decoded client frame: the request and the `id` to echo in its answer.
#[derive(Debug)]
pub struct Incoming {
    pub id: Option<u64>,
    pub request: Request,
}

/// Why a client frame was refused; becomes an `error` frame and the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub(crate) fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { id, code, message: message.into() }
    }
}

/// Every field a v1 client frame may carry; all optional so that errors can be precise. The
/// strings stay in the frame's text (read by [`string`]) rather than being copied out.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    id: Option<serde_json::Value>,
    #[serde(default, borrow, deserialize_with = "present")]
    group: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    since: Option<serde_json::Value>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as a value (plain `Option` would read it as absent): `"data": null`
/// is data, and a `null` left in the frame's text is a value of the wrong type, not a missing
/// field.
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The text of a JSON string, borrowed from the frame unless it has escapes; `None` when `raw`
/// is not a string.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str(raw.get()).map(Cow::Owned))
        .ok()
}

/// Decodes one client text frame.
pub fn decode(text: &str) -> Result<Incoming, RequestError> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
        RequestError::new(None, ErrorCode::BadRequest, format!("frame is not a JSON object: {e}"))
    })?;
    let id = match raw.id {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            RequestError::new(None, ErrorCode::BadRequest, "id must be an unsigned integer")
        })?),
    };
    let bad = |code, message: &str| RequestError::new(id, code, message);
    let kind = match raw.kind.map(string) {
        Some(Some(kind)) => kind,
        Some(None) => return Err(bad(ErrorCode::BadRequest, "type must be a string")),
        None => return Err(bad(ErrorCode::BadRequest, "missing field type")),
    };
    let request = match &*kind {
        "subscribe" => {
            let since = match raw.since {
                None | Some(serde_json::Value::Null) => None,
                Some(since) => Some(serde_json::from_value(since).map_err(|e| {
                    RequestError::new(
                        id,
                        ErrorCode::BadRequest,
                        format!("since must be {{\"offset\":N,\"epoch\":\"..\"}}: {e}"),
                    )
                })?),
            };
            Request::Subscribe { group: group_field(raw.group, id)?, since }
        }
        "presence" => Request::Presence { group: group_field(raw.group, id)? },
        "auth" => Request::Auth { token: token_field(raw.token, id)? },
        "refresh" => Request::Refresh { token: token_field(raw.token, id)? },
        "unsubscribe" => Request::Unsubscribe { group: group_field(raw.group, id)? },
        "publish" => {
            let group = group_field(raw.group, id)?;
            let data = raw.data.ok_or_else(|| bad(ErrorCode::BadRequest, "missing field data"))?;
            Request::Publish { group, data }
        }
        "ping" => Request::Ping,
        other => {
            return Err(RequestError::new(id, ErrorCode::UnknownType, format!("unknown type {other:?}")));
        }
    };
    Ok(Incoming { id, request })
}

fn group_field(group: Option<&RawValue>, id: Option<u64>) -> Result<GroupName, RequestError> {
    match group.map(string) {
        Some(Some(name)) => GroupName::new(&name).map_err(|e| invalid_group(id, &e)),
        Some(None) => Err(RequestError::new(id, ErrorCode::BadRequest, "group must be a string")),
        None => Err(RequestError::new(id, ErrorCode::BadRequest, "missing field group")),
    }
}

fn token_field(token: Option<&RawValue>, id: Option<u64>) -> Result<String, RequestError> {
    match token.and_then(string) {
        Some(token) => Ok(token.into_owned()),
        None => Err(RequestError::new(id, ErrorCode::BadRequest, "token must be a string")),
    }
}

fn invalid_group(id: Option<u64>, e: &InvalidGroup) -> RequestError {
    RequestError::new(id, ErrorCode::InvalidGroup, e.to_string())
}

/// Frames the server sends that are specific to one client.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome {
        client: &'a str,
        node: &'a str,
    },
    Reply {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a serde_json::Value>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        code: ErrorCode,
        message: &'a str,
    },
    Message {
        group: &'a str,
        data: &'a RawValue,
    },
    Recovered {
        group: &'a str,
        recovered: bool,
        offset: u64,
        epoch: &'a str,
    },
    Subscribed {
        group: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Unsubscribed {
        group: &'a str,
        reason: &'a str,
    },
    Join {
        group: &'a str,
        client: &'a ClientInfo,
    },
    Leave {
        group: &'a str,
        client: &'a ClientInfo,
    },
}

/// A frame is serialized into this thread's buffer and copied out at its exact size: one
/// allocation per frame, where a `String` of its own took two (its buffer, then the header that
/// `Bytes` adds to a buffer with room to spare). A buffer grown past this is not kept.
const SCRATCH_KEPT: usize = 64 * 1024;

fn encode(frame: &ServerFrame<'_>) -> Utf8Bytes {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        // Serializing these types cannot fail: every key is a string and no map holds
        // non-string keys; serde_json writes UTF-8.
        serde_json::to_writer(&mut *scratch, frame).expect("server frames always serialize");
        let text = std::str::from_utf8(scratch).expect("serde_json writes UTF-8");
        let frame = Utf8Bytes::from(text);
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        frame
    })
}

/// `{"type":"welcome","client":..,"node":..}`, the first frame of every connection.
pub(crate) fn welcome(client: &str, node: &str) -> Utf8Bytes {
    encode(&ServerFrame::Welcome { client, node })
}

/// `{"type":"reply","id":..}` (with `result` where the request has one).
pub(crate) fn reply(id: Option<u64>, result: Option<&serde_json::Value>) -> Utf8Bytes {
    encode(&ServerFrame::Reply { id, result })
}

/// `{"type":"error","id":..,"code":..,"message":..}`.
pub(crate) fn error(err: &RequestError) -> Utf8Bytes {
    encode(&ServerFrame::Error { id: err.id, code: err.code, message: &err.message })
}

/// `{"type":"message","group":..,"data":..}`: the frame every member of `group` receives. Built
/// once by the publisher and carried through the broker as-is.
pub fn message(group: &GroupName, data: &RawValue) -> Utf8Bytes {
    encode(&ServerFrame::Message { group: group.as_str(), data })
}

/// A request frame as a client sends it, for Herald's own clients in Rust (the load tool):
/// `{"type":"subscribe","group":..,"id":..}` or `{"type":"publish","group":..,"data":..}`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    Subscribe {
        group: &'a GroupName,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    Publish {
        group: &'a GroupName,
        data: &'a RawValue,
    },
}

impl ClientFrame<'_> {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

/// A message frame of a group with history, in three parts around its offset and epoch, so the
/// broker that assigns the offset (a Redis script) can finish it without knowing the format:
/// `head + offset + middle + epoch + tail`.
pub(crate) struct MessageParts {
    pub head: String,
    pub middle: &'static str,
    pub tail: String,
}

impl MessageParts {
    pub(crate) fn new(group: &GroupName, data: &RawValue) -> Self {
        // Group names and epochs need no JSON escaping: both use a plain ASCII alphabet.
        Self {
            head: format!(r#"{{"type":"message","group":"{group}","offset":"#),
            middle: r#","epoch":""#,
            tail: format!(r#"","data":{}}}"#, data.get()),
        }
    }

    pub(crate) fn finish(&self, offset: u64, epoch: &str) -> Utf8Bytes {
        Utf8Bytes::from(format!("{}{offset}{}{epoch}{}", self.head, self.middle, self.tail))
    }
}

/// The offset and epoch of a message frame of a group with history, read from the fixed
/// prefix [`MessageParts`] gives it; `None` for any other frame.
pub(crate) fn frame_position(frame: &str) -> Option<(u64, &str)> {
    let rest = frame.strip_prefix(r#"{"type":"message","group":""#)?;
    let (_, rest) = rest.split_once('"')?;
    let digits = rest.strip_prefix(r#","offset":"#)?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    let offset = digits[..end].parse().ok()?;
    let epoch = digits[end..].strip_prefix(r#","epoch":""#)?;
    let (epoch, _) = epoch.split_once('"')?;
    Some((offset, epoch))
}

/// `{"type":"recovered","group":..,"recovered":..,"offset":..,"epoch":..}`: whether a member
/// that was not sent a reply (it joined through its route, or the instance's Redis subscription
/// had a gap) has every message up to `offset` of `epoch`. After `false`, messages continue
/// from there.
pub(crate) fn recovered(group: &GroupName, recovered: bool, offset: u64, epoch: &str) -> Utf8Bytes {
    encode(&ServerFrame::Recovered { group: group.as_str(), recovered, offset, epoch })
}

/// `{"type":"subscribed","group":..}`: the server put the client in a group (with the group's
/// position, `offset` and `epoch`, when it keeps history).
pub(crate) fn subscribed(group: &GroupName, position: Option<(u64, &str)>) -> Utf8Bytes {
    let (offset, epoch) = position.map_or((None, None), |(o, e)| (Some(o), Some(e)));
    encode(&ServerFrame::Subscribed { group: group.as_str(), offset, epoch })
}

/// `{"type":"unsubscribed","group":..,"reason":..}`: the server took the client out of a group.
pub(crate) fn unsubscribed(group: &GroupName, reason: &str) -> Utf8Bytes {
    encode(&ServerFrame::Unsubscribed { group: group.as_str(), reason })
}

/// `{"type":"join","group":..,"client":{..}}`.
pub(crate) fn join(group: &GroupName, client: &ClientInfo) -> Utf8Bytes {
    encode(&ServerFrame::Join { group: group.as_str(), client })
}

/// `{"type":"leave","group":..,"client":{..}}`.
pub(crate) fn leave(group: &GroupName, client: &ClientInfo) -> Utf8Bytes {
    encode(&ServerFrame::Leave { group: group.as_str(), client })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> (Option<u64>, ErrorCode) {
        let e = decode(text).unwrap_err();
        (e.id, e.code)
    }

    #[test]
    fn decodes_every_request() {
        let s = decode(r#"{"type":"subscribe","group":"chat.a","id":1}"#).unwrap();
        assert_eq!(s.id, Some(1));
        assert!(matches!(s.request, Request::Subscribe { group, since: None } if group.as_str() == "chat.a"));
        let r = decode(r#"{"type":"subscribe","group":"g","since":{"offset":7,"epoch":"e1"}}"#).unwrap();
        let since = Some(Since { offset: 7, epoch: "e1".into() });
        assert!(matches!(r.request, Request::Subscribe { since: s, .. } if s == since));
        assert!(matches!(
            decode(r#"{"type":"presence","group":"g"}"#).unwrap().request,
            Request::Presence { .. }
        ));
        let p = decode(r#"{"type":"publish","group":"g","data":{"x":[1,2]}}"#).unwrap();
        assert!(matches!(p.request, Request::Publish { data, .. } if data.get() == r#"{"x":[1,2]}"#));
        let n = decode(r#"{"type":"publish","group":"g","data":null}"#).unwrap();
        assert!(matches!(n.request, Request::Publish { data, .. } if data.get() == "null"));
        assert!(matches!(decode(r#"{"type":"ping"}"#).unwrap().request, Request::Ping));
        assert!(matches!(
            decode(r#"{"type":"unsubscribe","group":"g","extra":true}"#).unwrap().request,
            Request::Unsubscribe { .. }
        ));
        // Strings with escapes are read as well as plain ones.
        let escaped = decode(r#"{"type":"sub\u0073cribe","group":"chat\u002ea"}"#).unwrap();
        assert!(matches!(escaped.request, Request::Subscribe { group, .. } if group.as_str() == "chat.a"));
        let auth = decode(r#"{"type":"auth","token":"a\"b"}"#).unwrap();
        assert!(matches!(auth.request, Request::Auth { token } if token == "a\"b"));
    }

    #[test]
    fn errors_are_precise_and_keep_the_id() {
        assert_eq!(code_of("nope"), (None, ErrorCode::BadRequest));
        assert_eq!(code_of("[1]"), (None, ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":"ping","id":-1}"#), (None, ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":"dance","id":7}"#), (Some(7), ErrorCode::UnknownType));
        assert_eq!(code_of(r#"{"id":7}"#), (Some(7), ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":"subscribe","id":2}"#), (Some(2), ErrorCode::BadRequest));
        assert_eq!(
            code_of(r#"{"type":"subscribe","group":"a b","id":3}"#),
            (Some(3), ErrorCode::InvalidGroup)
        );
        assert_eq!(code_of(r#"{"type":"subscribe","group":5,"id":3}"#), (Some(3), ErrorCode::BadRequest));
        // A field given as null is of the wrong type, not missing.
        let message = |text| decode(text).unwrap_err().message;
        assert_eq!(message(r#"{"type":null}"#), "type must be a string");
        assert_eq!(message(r#"{"type":"subscribe","group":null}"#), "group must be a string");
        assert_eq!(message(r#"{"type":"subscribe"}"#), "missing field group");
        assert_eq!(message(r#"{"type":"auth","token":null}"#), "token must be a string");
        assert_eq!(code_of(r#"{"type":"publish","group":"g","id":4}"#), (Some(4), ErrorCode::BadRequest));
        assert_eq!(
            code_of(r#"{"type":"subscribe","group":"g","since":{"offset":-1,"epoch":"e"},"id":5}"#),
            (Some(5), ErrorCode::BadRequest)
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","group":"g","since":5,"id":6}"#),
            (Some(6), ErrorCode::BadRequest)
        );
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(welcome("c1", "n1").as_str(), r#"{"type":"welcome","client":"c1","node":"n1"}"#);
        assert_eq!(reply(Some(3), None).as_str(), r#"{"type":"reply","id":3}"#);
        assert_eq!(reply(None, None).as_str(), r#"{"type":"reply"}"#);
        let e = RequestError::new(Some(1), ErrorCode::InvalidGroup, "bad");
        assert_eq!(error(&e).as_str(), r#"{"type":"error","id":1,"code":"invalid_group","message":"bad"}"#);
        let data = RawValue::from_string(r#"{"a": 1}"#.into()).unwrap();
        let g = GroupName::new("chat.x").unwrap();
        assert_eq!(message(&g, &data).as_str(), r#"{"type":"message","group":"chat.x","data":{"a": 1}}"#);
        let with_offset = MessageParts::new(&g, &data).finish(42, "ep0ch");
        assert_eq!(
            with_offset.as_str(),
            r#"{"type":"message","group":"chat.x","offset":42,"epoch":"ep0ch","data":{"a": 1}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&with_offset).unwrap();
        assert_eq!(parsed["offset"], 42);
        assert_eq!(frame_position(&with_offset), Some((42, "ep0ch")));
        assert_eq!(frame_position(&message(&g, &data)), None);
        assert_eq!(frame_position(r#"{"type":"join","group":"g"}"#), None);
    }

    #[test]
    fn client_frames_decode_as_what_they_encode() {
        let g = GroupName::new("chat.x").unwrap();
        let subscribe = ClientFrame::Subscribe { group: &g, id: Some(1) }.encode();
        assert_eq!(subscribe, r#"{"type":"subscribe","group":"chat.x","id":1}"#);
        assert!(
            matches!(decode(&subscribe).unwrap().request, Request::Subscribe { group, .. } if group == g)
        );
        let data = RawValue::from_string("[1]".into()).unwrap();
        let publish = ClientFrame::Publish { group: &g, data: &data }.encode();
        assert!(
            matches!(decode(&publish).unwrap().request, Request::Publish { data, .. } if data.get() == "[1]")
        );
    }
}
