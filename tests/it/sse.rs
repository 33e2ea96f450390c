//! Server-Sent Events on gateways sharing a real Redis: the same frames as a WebSocket, event ids
//! a reconnecting stream resumes from on another gateway, and the same admission, permissions,
//! limits, drain and control API as a WebSocket.

use std::time::Duration;

use herald::config::{AuthMode, Config, NamespaceConfig};
use serde_json::{Value, json};

use crate::harness::{Node, Redis, http};
use crate::security::{auth_config, now, token};

const WAIT: Duration = Duration::from_secs(10);

/// One event of a stream.
#[derive(Debug)]
pub struct Event {
    pub kind: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A `text/event-stream` response read event by event.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines (heartbeats) read so far.
    pub comments: usize,
}

impl EventStream {
    /// Opens `url`; `Err` carries the status and JSON body of a refusal.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Self, (u16, Value)> {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("sse request");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.bytes().await.unwrap_or_default();
            return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(content_type, "text/event-stream");
        Ok(Self { response, buffer: String::new(), comments: 0 })
    }

    /// The next event (comments and `retry:` skipped); `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                self.comments += block.lines().filter(|line| line.starts_with(':')).count();
                let (mut kind, mut id, mut data) = (None, None, Vec::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        kind = Some(value.to_string());
                    } else if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_string());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    }
                }
                let Some(kind) = kind else { continue };
                let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
                return Some(Event { kind, id, data });
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk()).await.expect("an event in time");
            match chunk.expect("stream readable") {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// The next event, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Event {
        let event = self.next().await.expect("stream still open");
        assert_eq!(event.kind, kind, "{event:?}");
        event
    }
}

fn gateway_config(redis: &Redis, node: &str) -> Config {
    let mut config = auth_config(AuthMode::Optional);
    config.redis_url = Some(redis.url());
    config.node_id = node.into();
    config.ping_interval = Duration::from_millis(300);
    let history = NamespaceConfig { history_size: 100, ..NamespaceConfig::default() };
    config.namespaces.insert("feed".into(), history);
    config
}

fn sse_url(node: &Node, query: &str) -> String {
    format!("http://{}/sse?{query}", node.addr)
}

#[tokio::test]
async fn a_stream_carries_the_websocket_frames_and_resumes_on_another_gateway() {
    let redis = Redis::start().await;
    let (a, b) =
        (Node::ready(gateway_config(&redis, "a")).await, Node::ready(gateway_config(&redis, "b")).await);
    let mut stream = EventStream::open(&sse_url(&b, "groups=feed.x,news"), &[]).await.unwrap();
    assert_eq!(stream.expect("welcome").await.data["node"], "b");
    let subscribed = stream.expect("subscribed").await;
    assert_eq!(
        (subscribed.data["group"].as_str(), subscribed.data["offset"].as_u64()),
        (Some("feed.x"), Some(0))
    );
    let empty = subscribed.data["epoch"].as_str().unwrap();
    assert_eq!(subscribed.id, Some(format!("feed.x:0:{empty}")));
    assert_eq!(stream.expect("subscribed").await.data, json!({"type": "subscribed", "group": "news"}));

    let mut websocket = a.client().await;
    websocket.subscribe("news").await;
    a.publish("news", json!({"text": "plain"})).await;
    a.publish("feed.x", json!({"n": 1})).await;
    let news = stream.expect("message").await;
    assert_eq!(news.data, websocket.recv().await, "the same frame as a WebSocket gets");
    assert_eq!(news.id, None, "no history, no position");
    let first = stream.expect("message").await;
    assert_eq!((first.data["data"].clone(), first.data["offset"].as_u64()), (json!({"n": 1}), Some(1)));
    let epoch = first.data["epoch"].as_str().unwrap().to_string();
    assert_eq!(first.id, Some(format!("feed.x:1:{epoch}")));
    // Heartbeats keep an idle stream alive, and are no events.
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.publish("news", json!("after a pause")).await;
    assert_eq!(stream.expect("message").await.data["data"], "after a pause");
    assert!(stream.comments >= 1, "a heartbeat every ping_interval");
    drop(stream);

    // Missed while away; resumed from the last event id, on the other gateway.
    a.publish("feed.x", json!({"n": 2})).await;
    a.publish("feed.x", json!({"n": 3})).await;
    let last_id = format!("feed.x:1:{epoch}");
    let headers = [("last-event-id", last_id.as_str())];
    let mut resumed = EventStream::open(&sse_url(&a, "groups=feed.x"), &headers).await.unwrap();
    resumed.expect("welcome").await;
    let recovered = resumed.expect("recovered").await;
    assert_eq!(recovered.data["recovered"], true, "{recovered:?}");
    for n in [2, 3] {
        let event = resumed.expect("message").await;
        assert_eq!(event.data["data"], json!({"n": n}));
        assert_eq!(event.id, Some(format!("feed.x:{n}:{epoch}")));
    }

    let lost = [("last-event-id", "feed.x:1:another-epoch")];
    let mut gap = EventStream::open(&sse_url(&b, "groups=feed.x"), &lost).await.unwrap();
    gap.expect("welcome").await;
    let told = gap.expect("recovered").await;
    assert_eq!(
        (told.data["group"].as_str(), told.data["recovered"].as_bool()),
        (Some("feed.x"), Some(false))
    );
}

#[tokio::test]
async fn streams_are_admitted_and_limited_like_websockets() {
    let redis = Redis::start().await;
    let mut config = gateway_config(&redis, "a");
    config.auth = Some(AuthMode::Required);
    config.max_connections = 2;
    let node = Node::ready(config).await;
    let (status, body) = EventStream::open(&sse_url(&node, "groups=chat.x"), &[]).await.err().unwrap();
    assert_eq!((status, &body["error"]["code"]), (401, &json!("forbidden")), "{body}");
    let ann = token(json!({"sub": "ann", "exp": now() + 600, "groups": ["chat.*"]}));
    let in_query = sse_url(&node, &format!("groups=chat.x&token={ann}"));
    let mut first = EventStream::open(&in_query, &[]).await.unwrap();
    first.expect("welcome").await;
    let bearer = format!("Bearer {ann}");
    let forbidden = EventStream::open(&sse_url(&node, "groups=news"), &[("authorization", &bearer)]).await;
    assert_eq!(forbidden.err().unwrap().0, 403, "outside the token's groups");
    for bad in ["groups=", "groups=bad%20name", "groups=chat.x&since=chat.x:1"] {
        let refused = EventStream::open(&sse_url(&node, bad), &[("authorization", &bearer)]).await;
        assert_eq!(refused.err().unwrap().0, 400, "{bad}");
    }
    let mut second =
        EventStream::open(&sse_url(&node, "groups=chat.x"), &[("authorization", &bearer)]).await.unwrap();
    second.expect("welcome").await;
    let full = EventStream::open(&sse_url(&node, "groups=chat.y"), &[("authorization", &bearer)]).await;
    assert_eq!(full.err().unwrap().0, 503, "max_connections counts streams");

    // The control API reaches streams; the close event says why.
    let (status, answer) = http(node.addr, "POST", "/api/disconnect", &[], r#"{"user":"ann"}"#).await;
    assert_eq!((status, answer), (200, json!({"affected": 2})));
    for stream in [&mut first, &mut second] {
        let event = stream.expect("subscribed").await;
        assert_eq!(event.data["group"], "chat.x");
        assert_eq!(
            stream.expect("close").await.data,
            json!({"code": 4003, "reason": "disconnected by the server"})
        );
        assert!(stream.next().await.is_none(), "the stream ends");
    }
}

#[tokio::test]
async fn the_drain_ends_streams_with_a_close_event() {
    let node = Node::ready(crate::harness::config(None, "solo")).await;
    let mut stream = EventStream::open(&sse_url(&node, "groups=news"), &[]).await.unwrap();
    stream.expect("welcome").await;
    stream.expect("subscribed").await;
    let stopping = tokio::spawn(node.stop());
    assert_eq!(stream.expect("close").await.data["code"], 1012);
    assert!(stream.next().await.is_none());
    stopping.await.unwrap();
}
