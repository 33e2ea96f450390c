//! Webhooks on a real Redis, with two gateways, a scheduler leading, and a real HTTP endpoint
//! that checks every signature: each event once per deployment, `group_vacated` only after
//! `vacate_delay` with nobody anywhere, a SIGKILLed gateway's clients leaving once its liveness
//! expires, and events kept while the endpoint is down.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use herald::config::{AuthMode, Config};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::harness::{Client, GatewayProcess, InProcessScheduler, Node, Redis, eventually};
use crate::security::{auth_config, now, token};

const SECRET: &str = "webhook-secret";

/// The backend's webhook endpoint: events in arrival order, signatures checked.
#[derive(Default)]
struct Endpoint {
    events: Mutex<Vec<Value>>,
    /// While set, every delivery gets 503.
    down: AtomicBool,
    refused: Mutex<usize>,
}

impl Endpoint {
    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// `(event, group or user)` of every event received, in order.
    fn seen(&self) -> Vec<(String, String)> {
        let key = |e: &Value| e["group"].as_str().or(e["user"].as_str()).unwrap_or("").to_string();
        self.events().iter().map(|e| (e["event"].as_str().unwrap().to_string(), key(e))).collect()
    }

    fn count(&self, event: &str, subject: &str) -> usize {
        self.seen().iter().filter(|(e, s)| e == event && s == subject).count()
    }
}

async fn receive(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if endpoint.down.load(Ordering::SeqCst) {
        *endpoint.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let signature = headers["x-herald-signature"].to_str().unwrap();
    assert_eq!(signature, format!("sha256={expected}"), "signed with the secret");
    endpoint.events.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

async fn start_endpoint() -> (SocketAddr, Arc<Endpoint>) {
    let endpoint = Arc::new(Endpoint::default());
    let app = Router::new().route("/events", post(receive)).with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, endpoint)
}

fn webhook_config(redis: &Redis, node: &str, endpoint: SocketAddr) -> Config {
    let mut config = auth_config(AuthMode::Optional);
    config.redis_url = Some(redis.url());
    config.node_id = node.into();
    config.presence_ttl = Duration::from_secs(1);
    config.webhooks.url = Some(format!("http://{endpoint}/events"));
    config.webhooks.secret = Some(SECRET.into());
    config.webhooks.vacate_delay = Duration::from_secs(1);
    config
}

async fn connect_as(node: &Node, user: &str) -> Client {
    let token = token(json!({"sub": user, "exp": now() + 600}));
    Client::connect(&node.ws_url(&format!("/ws?token={token}"))).await
}

#[tokio::test]
async fn each_event_is_sent_once_per_deployment() {
    let redis = Redis::start().await;
    let (at, endpoint) = start_endpoint().await;
    let a = Node::ready(webhook_config(&redis, "a", at)).await;
    let b = Node::ready(webhook_config(&redis, "b", at)).await;
    let _leader = InProcessScheduler::start(&webhook_config(&redis, "scheduler", at));

    let mut ann_a = connect_as(&a, "ann").await;
    let mut ann_b = connect_as(&b, "ann").await;
    ann_a.subscribe("chat.x").await;
    ann_b.subscribe("chat.x").await;
    eventually("online, occupied, two joins", || async { endpoint.events().len() == 4 }).await;
    assert_eq!(
        endpoint.seen()[..2],
        [("user_online".into(), "ann".into()), ("group_occupied".into(), "chat.x".into())]
    );
    let joins: HashSet<_> =
        endpoint.events().iter().filter(|e| e["event"] == "join").map(|e| e["node"].clone()).collect();
    assert_eq!(joins, HashSet::from([json!("a"), json!("b")]), "one join per connection");
    let join = endpoint.events().into_iter().find(|e| e["event"] == "join").unwrap();
    assert_eq!((join["user"].as_str(), join["group"].as_str()), (Some("ann"), Some("chat.x")));
    assert!(join["client"].is_string() && join["time"].is_string() && join["id"].is_string(), "{join}");

    // Ann leaves on a but is still on b: no vacated, no offline.
    ann_a.close().await;
    eventually("a leave", || async { endpoint.count("leave", "chat.x") == 1 }).await;
    // A member leaving and coming back within vacate_delay does not flap the group.
    ann_b.unsubscribe("chat.x").await;
    ann_b.subscribe("chat.x").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!((endpoint.count("group_vacated", "chat.x"), endpoint.count("user_offline", "ann")), (0, 0));
    assert_eq!(endpoint.count("group_occupied", "chat.x"), 1);

    ann_b.close().await;
    eventually("vacated and offline", || async {
        endpoint.count("group_vacated", "chat.x") == 1 && endpoint.count("user_offline", "ann") == 1
    })
    .await;
    let ids: HashSet<_> = endpoint.events().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids.len(), endpoint.events().len(), "every id is new: {:?}", endpoint.seen());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(endpoint.count("group_vacated", "chat.x"), 1, "{:?}", endpoint.seen());
}

#[tokio::test]
async fn a_killed_gateways_clients_leave_once_its_liveness_expires() {
    let redis = Redis::start().await;
    let (at, endpoint) = start_endpoint().await;
    let toml = format!(
        "redis_url = \"{}\"\nnode_id = \"doomed\"\nauth = \"optional\"\nauth_hmac_secret = \"{}\"\npresence_ttl = \"1s\"\n[webhooks]\nurl = \"http://{at}/events\"\nsecret = \"{SECRET}\"\nvacate_delay = \"500ms\"\n",
        redis.url(),
        crate::security::SECRET,
    );
    let mut gateway = GatewayProcess::start(&toml).await;
    let _leader = InProcessScheduler::start(&webhook_config(&redis, "scheduler", at));
    let mut clients = Vec::new();
    for user in ["ann", "bob", "bob"] {
        let token = token(json!({"sub": user, "exp": now() + 600}));
        let mut client = Client::connect(&format!("ws://{}/ws?token={token}", gateway.addr)).await;
        client.subscribe("chat.z").await;
        clients.push(client);
    }
    // Two users online, the group occupied, three joins.
    eventually("online, occupied, joins", || async { endpoint.events().len() == 6 }).await;
    gateway.process.kill();
    eventually("three leaves, two users offline, then vacated", || async {
        endpoint.count("leave", "chat.z") == 3
            && endpoint.count("user_offline", "ann") == 1
            && endpoint.count("user_offline", "bob") == 1
            && endpoint.count("group_vacated", "chat.z") == 1
    })
    .await;
    let leave = endpoint.events().into_iter().find(|e| e["event"] == "leave").unwrap();
    assert_eq!((leave["node"].as_str(), leave["group"].as_str()), (Some("doomed"), Some("chat.z")));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(endpoint.events().len(), 12, "once each: {:?}", endpoint.seen());
}

#[tokio::test]
async fn events_wait_in_redis_while_the_endpoint_is_down() {
    let redis = Redis::start().await;
    let (at, endpoint) = start_endpoint().await;
    endpoint.down.store(true, Ordering::SeqCst);
    let a = Node::ready(webhook_config(&redis, "a", at)).await;
    let leader = InProcessScheduler::start(&webhook_config(&redis, "scheduler", at));
    for user in ["u1", "u2", "u3"] {
        let mut client = connect_as(&a, user).await;
        client.subscribe(&format!("chat.{user}")).await;
        client.close().await;
    }
    let metrics = leader.scheduler.metrics();
    eventually("failures counted", || async { metrics.webhook_failures.get() >= 2 }).await;
    assert!(endpoint.events().is_empty());

    endpoint.down.store(false, Ordering::SeqCst);
    // Per user: online, occupied, join, leave, offline, vacated.
    eventually("every event, once", || async { endpoint.events().len() == 18 }).await;
    for user in ["u1", "u2", "u3"] {
        let group = format!("chat.{user}");
        for (event, subject) in [
            ("user_online", user),
            ("group_occupied", &group),
            ("join", &group),
            ("leave", &group),
            ("user_offline", user),
            ("group_vacated", &group),
        ] {
            assert_eq!(endpoint.count(event, subject), 1, "{event} {subject}: {:?}", endpoint.seen());
        }
    }
    assert_eq!(metrics.webhooks_sent.get(), 18);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(endpoint.events().len(), 18);
}
