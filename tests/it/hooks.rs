//! Backend hooks against a real HTTP backend: the connect hook admits, refuses or cannot answer;
//! the subscribe and publish hooks decide per namespace; identity reaches presence and join
//! events; calls are bounded; nothing secret is logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use herald::config::{AuthMode, Config, NamespaceConfig, RouteConfig};
use serde_json::{Value, json};

use crate::harness::{Client, GatewayProcess, Node, config, eventually, http};
use crate::sse::EventStream;

/// What the backend saw: every call's path, forwarded cookie and body.
#[derive(Default)]
struct Backend {
    calls: Mutex<Vec<(String, Option<String>, Value)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    saved: AtomicUsize,
}

impl Backend {
    fn calls(&self, path: &str) -> Vec<(Option<String>, Value)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, c, b)| (c.clone(), b.clone()))
            .collect()
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({"reason": reason}))).into_response()
}

async fn connect(
    State(backend): State<Arc<Backend>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let cookie = headers.get("cookie").and_then(|c| c.to_str().ok()).map(str::to_owned);
    backend.calls.lock().unwrap().push(("connect".into(), cookie.clone(), body));
    let now = backend.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    backend.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = match cookie.as_deref() {
        Some("session=ann") => Json(json!({
            "user": "ann", "info": {"name": "Ann"}, "groups": ["chat.*", "user.ann"],
            "publish": ["chat.*"], "subscribe": ["user.ann"]
        }))
        .into_response(),
        Some("session=banned") => refuse(StatusCode::FORBIDDEN, "banned"),
        Some("session=broken") => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some("session=slow") => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Json(json!({"user": "slow"})).into_response()
        }
        Some("session=stuck") => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({})).into_response()
        }
        _ => refuse(StatusCode::UNAUTHORIZED, "log in first"),
    };
    backend.in_flight.fetch_sub(1, Ordering::SeqCst);
    answer
}

async fn subscribe(State(backend): State<Arc<Backend>>, Json(body): Json<Value>) -> Response {
    backend.calls.lock().unwrap().push(("subscribe".into(), None, body.clone()));
    match body["group"].as_str() {
        Some("chat.secret") => refuse(StatusCode::FORBIDDEN, "members only"),
        Some("chat.down") => StatusCode::BAD_GATEWAY.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

async fn publish(State(backend): State<Arc<Backend>>, Json(body): Json<Value>) -> Response {
    backend.calls.lock().unwrap().push(("publish".into(), None, body.clone()));
    if body["data"]["text"] == "spam" {
        return refuse(StatusCode::FORBIDDEN, "no spam");
    }
    let id = backend.saved.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"data": {"text": body["data"]["text"], "id": id, "by": body["user"]}})).into_response()
}

async fn start_backend() -> (SocketAddr, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    let app = Router::new()
        .route("/connect", post(connect))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, backend)
}

fn proxied(backend: SocketAddr) -> Config {
    let mut config = config(None, "gw-1");
    config.auth = Some(AuthMode::Proxy);
    config.proxy.connect_url = Some(format!("http://{backend}/connect"));
    config.proxy.subscribe_url = Some(format!("http://{backend}/subscribe"));
    config.proxy.publish_url = Some(format!("http://{backend}/publish"));
    config.proxy.timeout = Duration::from_secs(1);
    let chat = NamespaceConfig {
        client_publish: true,
        presence: true,
        join_leave: true,
        subscribe_proxy: true,
        publish_proxy: true,
        ..NamespaceConfig::default()
    };
    config.namespaces.insert("chat".into(), chat);
    config.routes.push(RouteConfig {
        path: "/ws/chat/{room}".into(),
        subscribe: vec!["chat.{room}".into()],
        publish: None,
    });
    config
}

async fn with_cookie(node: &Node, path: &str, cookie: &str) -> Result<Client, u16> {
    Client::open(&node.ws_url(path), &[("cookie", cookie), ("x-not-forwarded", "secret")]).await
}

#[tokio::test]
async fn the_connect_hook_admits_refuses_or_cannot_answer() {
    let (addr, backend) = start_backend().await;
    let node = Node::ready(proxied(addr)).await;

    let mut ann = with_cookie(&node, "/ws/chat/lobby", "session=ann").await.unwrap();
    let welcome = ann.recv().await;
    assert_eq!(welcome["type"], "welcome");
    // Put in her own group by the backend, then joined to the route's room.
    assert_eq!(ann.recv().await, json!({"type": "subscribed", "group": "user.ann"}));
    assert_eq!(ann.recv().await, json!({"type": "subscribed", "group": "chat.lobby"}));
    let (cookie, request) = backend.calls("connect").pop().unwrap();
    assert_eq!(cookie.as_deref(), Some("session=ann"), "the listed headers are forwarded");
    assert_eq!(request["client"], welcome["client"]);
    assert_eq!((request["node"].as_str(), request["transport"].as_str()), (Some("gw-1"), Some("websocket")));
    assert_eq!(
        (request["path"].as_str(), &request["params"]),
        (Some("/ws/chat/lobby"), &json!({"room": "lobby"}))
    );
    assert_eq!(request["remote_addr"], "127.0.0.1");

    for (cookie, code, reason) in [
        ("session=nobody", 4001, "log in first"),
        ("session=banned", 4003, "banned"),
        ("session=broken", 1013, "backend unavailable"),
        ("session=stuck", 1013, "backend unavailable"),
    ] {
        let mut refused = with_cookie(&node, "/ws", cookie).await.unwrap();
        assert_eq!(refused.close_frame().await, (code, reason.to_string()), "{cookie}");
    }
    // Clients already connected keep working whatever the backend does.
    assert_eq!(node.publish("user.ann", json!("still here")).await.0, 200);
    assert_eq!(ann.message().await, ("user.ann".into(), json!("still here")));
    let text = node.metrics().await;
    assert!(text.contains(r#"herald_hook_calls_total{hook="connect",outcome="unavailable"} 2"#), "{text}");
}

#[tokio::test]
async fn identity_from_the_backend_reaches_presence_and_join_events() {
    let (addr, _backend) = start_backend().await;
    let node = Node::ready(proxied(addr)).await;
    let mut ann = with_cookie(&node, "/ws", "session=ann").await.unwrap();
    let _ = ann.recv().await; // welcome
    ann.subscribe("chat.lobby").await;
    let join = loop {
        let frame = ann.recv().await;
        if frame["type"] == "join" {
            break frame;
        }
    };
    assert_eq!(join["client"]["user"], "ann");
    assert_eq!(join["client"]["info"], json!({"name": "Ann"}));
    let present = ann.request(json!({"type": "presence", "group": "chat.lobby"})).await;
    assert_eq!(present["result"]["clients"][0]["user"], "ann", "{present}");
    assert_eq!(present["result"]["clients"][0]["info"]["name"], "Ann");
}

#[tokio::test]
async fn the_subscribe_and_publish_hooks_decide_for_their_namespaces() {
    let (addr, backend) = start_backend().await;
    let node = Node::ready(proxied(addr)).await;
    let mut ann = with_cookie(&node, "/ws", "session=ann").await.unwrap();
    let welcome = ann.recv().await;
    assert_eq!(ann.recv().await["type"], "subscribed", "to user.ann, by the backend");
    ann.subscribe("chat.lobby").await;
    let refused = ann.request(json!({"type": "subscribe", "group": "chat.secret"})).await;
    assert_eq!(
        (refused["code"].as_str(), refused["message"].as_str()),
        (Some("forbidden"), Some("members only"))
    );
    let down = ann.request(json!({"type": "subscribe", "group": "chat.down"})).await;
    assert_eq!(down["code"], "unavailable", "{down}");
    let (_, asked) =
        backend.calls("subscribe").into_iter().find(|(_, b)| b["group"] == "chat.secret").unwrap();
    assert_eq!((asked["user"].as_str(), &asked["since"]), (Some("ann"), &Value::Null));
    assert_eq!(asked["client"], welcome["client"]);

    // A publish goes through the hook, which saves it and answers with the data to publish.
    assert_eq!(ann.publish("chat.lobby", json!({"text": "hi"})).await["type"], "reply");
    let (_, published) = ann.message().await;
    assert_eq!(published, json!({"text": "hi", "id": 1, "by": "ann"}));
    let (_, asked) = backend.calls("publish").pop().unwrap();
    assert_eq!((asked["group"].as_str(), &asked["info"]), (Some("chat.lobby"), &json!({"name": "Ann"})));
    let spam = ann.publish("chat.lobby", json!({"text": "spam"})).await;
    assert_eq!((spam["code"].as_str(), spam["message"].as_str()), (Some("forbidden"), Some("no spam")));
    // The HTTP API is the trusted backend: no hook.
    let calls = backend.calls("publish").len();
    assert_eq!(
        http(
            node.addr,
            "POST",
            "/api/publish",
            &[],
            &json!({"group": "chat.lobby", "data": "from the app"}).to_string()
        )
        .await
        .0,
        200
    );
    assert_eq!(ann.message().await.1, json!("from the app"));
    assert_eq!(backend.calls("publish").len(), calls);
    ann.assert_no_message().await;
}

#[tokio::test]
async fn hook_calls_are_bounded_per_gateway() {
    let (addr, backend) = start_backend().await;
    let mut config = proxied(addr);
    config.proxy.max_concurrent = 2;
    config.proxy.timeout = Duration::from_secs(3);
    let node = Node::ready(config).await;
    let mut slow = Vec::new();
    for _ in 0..6 {
        let url = node.ws_url("/ws");
        slow.push(tokio::spawn(async move {
            Client::open(&url, &[("cookie", "session=slow")]).await.unwrap().recv().await
        }));
    }
    for client in slow {
        assert_eq!(client.await.unwrap()["type"], "welcome");
    }
    assert_eq!(backend.most_in_flight.load(Ordering::SeqCst), 2, "at most max_concurrent calls at once");
}

#[tokio::test]
async fn hook_urls_and_cookies_are_never_logged() {
    let (addr, _backend) = start_backend().await;
    let redis = crate::harness::Redis::start().await;
    let toml = format!(
        "redis_url = \"{}\"\nnode_id = \"gw-log\"\nauth = \"proxy\"\n[proxy]\nconnect_url = \"http://user:hunter2@{addr}/connect\"\n",
        redis.url()
    );
    let gateway = GatewayProcess::start_with_env(&toml, &[("RUST_LOG", "debug")]).await;
    for cookie in ["session=broken", "session=secret-cookie-value"] {
        let mut client =
            Client::open(&format!("ws://{}/ws", gateway.addr), &[("cookie", cookie)]).await.unwrap();
        let _ = client.close_frame().await;
    }
    eventually("the failure is logged", || async { gateway.process.log().contains("backend hook failed") })
        .await;
    let log = gateway.process.log();
    for secret in ["hunter2", "secret-cookie-value", "session=broken"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_server_sent_events_stream_is_admitted_by_the_connect_hook_with_its_cookie() {
    let (addr, backend) = start_backend().await;
    let node = Node::ready(proxied(addr)).await;
    let url = format!("http://{}/sse?groups=chat.lobby", node.addr);
    let mut ann = EventStream::open(&url, &[("cookie", "session=ann")]).await.unwrap();
    ann.expect("welcome").await;
    assert_eq!(ann.expect("subscribed").await.data, json!({"type": "subscribed", "group": "user.ann"}));
    assert_eq!(ann.expect("subscribed").await.data["group"], "chat.lobby");
    let (cookie, request) = backend.calls("connect").pop().unwrap();
    assert_eq!((cookie.as_deref(), request["transport"].as_str()), (Some("session=ann"), Some("sse")));
    // The namespace's subscribe hook was asked, as for a WebSocket.
    assert_eq!(backend.calls("subscribe").pop().unwrap().1["group"], "chat.lobby");
    assert_eq!(ann.expect("join").await.data["client"]["user"], "ann", "join events, as on a WebSocket");
    node.publish("chat.lobby", json!("hello")).await;
    assert_eq!(ann.expect("message").await.data["data"], "hello");

    for (cookie, status) in [("session=nobody", 401), ("session=banned", 403), ("session=broken", 503)] {
        let refused = EventStream::open(&url, &[("cookie", cookie)]).await.err().unwrap();
        assert_eq!(refused.0, status, "{cookie}: {refused:?}");
    }
    let secret = format!("http://{}/sse?groups=chat.secret", node.addr);
    let mut refused = EventStream::open(&secret, &[("cookie", "session=ann")]).await.unwrap();
    refused.expect("welcome").await;
    refused.expect("subscribed").await;
    assert_eq!(refused.expect("herald-error").await.data["code"], "forbidden", "the hook said no");
}
