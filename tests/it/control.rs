//! The control API on two gateways sharing a real Redis: whichever gateway is asked, it acts on
//! the user's connections on both, and counts what it did.

use std::net::SocketAddr;

use herald::config::{AuthMode, Config};
use serde_json::{Value, json};

use crate::harness::{Client, Node, Redis, http};
use crate::security::{auth_config, now, token};

fn gateway_config(redis: &Redis, node: &str) -> Config {
    let mut config = auth_config(AuthMode::Optional);
    config.redis_url = Some(redis.url());
    config.node_id = node.into();
    config.max_groups_per_client = 2;
    config
}

async fn two_gateways() -> (Redis, Node, Node) {
    let redis = Redis::start().await;
    let a = Node::ready(gateway_config(&redis, "a")).await;
    let b = Node::ready(gateway_config(&redis, "b")).await;
    (redis, a, b)
}

async fn connect_as(node: &Node, user: &str) -> Client {
    let token = token(json!({"sub": user, "exp": now() + 600, "groups": ["chat.*"]}));
    Client::connect(&node.ws_url(&format!("/ws?token={token}"))).await
}

async fn post(at: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(at, "POST", path, &[], &body.to_string()).await
}

#[tokio::test]
async fn disconnect_closes_a_users_connections_on_every_gateway() {
    let (_redis, a, b) = two_gateways().await;
    let mut ann_a = connect_as(&a, "ann").await;
    let mut ann_b = connect_as(&b, "ann").await;
    let mut bob = connect_as(&a, "bob").await;

    assert_eq!(post(b.addr, "/api/disconnect", json!({"user": "ann"})).await, (200, json!({"affected": 2})));
    for ann in [&mut ann_a, &mut ann_b] {
        assert_eq!(ann.close_frame().await, (4003, "disconnected by the server".into()));
    }
    bob.subscribe("chat.room").await;
    bob.assert_no_message().await;
    assert_eq!(post(a.addr, "/api/disconnect", json!({"user": "ann"})).await, (200, json!({"affected": 0})));

    let client = bob.welcome["client"].as_str().unwrap().to_string();
    let by_client = json!({"client": client, "code": 4000, "reason": "bye"});
    assert_eq!(post(b.addr, "/api/disconnect", by_client).await, (200, json!({"affected": 1})));
    assert_eq!(bob.close_frame().await, (4000, "bye".into()));
}

#[tokio::test]
async fn backend_subscriptions_reach_connections_on_every_gateway() {
    let (_redis, a, b) = two_gateways().await;
    let mut ann_a = connect_as(&a, "ann").await;
    let mut ann_b = connect_as(&b, "ann").await;
    let mut bob = connect_as(&b, "bob").await;

    // Trusted: the token allows only chat.*, yet the backend may put ann in news.ann.
    let join = json!({"user": "ann", "group": "news.ann"});
    assert_eq!(post(a.addr, "/api/subscribe", join.clone()).await, (200, json!({"affected": 2})));
    for ann in [&mut ann_a, &mut ann_b] {
        assert_eq!(ann.next_event().await, json!({"type": "subscribed", "group": "news.ann"}));
    }
    assert_eq!(post(b.addr, "/api/subscribe", join).await, (200, json!({"affected": 0})), "already in");
    a.publish("news.ann", json!("for ann")).await;
    assert_eq!(ann_a.message().await, ("news.ann".into(), json!("for ann")));
    assert_eq!(ann_b.message().await, ("news.ann".into(), json!("for ann")));
    bob.assert_no_message().await;

    let (status, listed) = b.get("/api/connections?user=ann").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["affected"], 2, "{listed}");
    let mut nodes: Vec<_> =
        listed["connections"].as_array().unwrap().iter().map(|c| c["node"].clone()).collect();
    nodes.sort_by_key(ToString::to_string);
    assert_eq!(nodes, [json!("a"), json!("b")]);
    for connection in listed["connections"].as_array().unwrap() {
        assert_eq!((&connection["user"], &connection["groups"]), (&json!("ann"), &json!(["news.ann"])));
    }
    let (_, nobody) = a.get("/api/connections?user=nobody").await;
    assert_eq!(nobody, json!({"affected": 0, "connections": []}));

    let leave = json!({"user": "ann", "group": "news.ann"});
    assert_eq!(post(b.addr, "/api/unsubscribe", leave).await, (200, json!({"affected": 2})));
    for ann in [&mut ann_a, &mut ann_b] {
        let event = ann.next_event().await;
        assert_eq!(event, json!({"type": "unsubscribed", "group": "news.ann", "reason": "server"}));
    }
    a.publish("news.ann", json!("gone")).await;
    ann_a.assert_no_message().await;
    ann_b.assert_no_message().await;
}

#[tokio::test]
async fn backend_subscriptions_respect_max_groups_per_client() {
    let (_redis, a, _b) = two_gateways().await;
    let mut ann = connect_as(&a, "ann").await;
    ann.subscribe("chat.one").await;
    ann.subscribe("chat.two").await;
    let join = json!({"user": "ann", "group": "news.three"});
    assert_eq!(post(a.addr, "/api/subscribe", join).await, (200, json!({"affected": 0})));
    let refused = ann.next_event().await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")));
}

#[tokio::test]
async fn bad_control_requests_are_refused_with_400() {
    let (_redis, a, _b) = two_gateways().await;
    for (path, body) in [
        ("/api/disconnect", json!({"user": "ann", "code": 1006})),
        ("/api/disconnect", json!({"user": "ann", "code": 5000})),
        ("/api/disconnect", json!({"user": "ann", "reason": "x".repeat(124)})),
        ("/api/disconnect", json!({"user": "ann", "client": "a-1"})),
        ("/api/disconnect", json!({})),
        ("/api/disconnect", json!({"usr": "ann"})),
        ("/api/subscribe", json!({"user": "ann", "group": "bad group"})),
        ("/api/subscribe", json!({"user": "ann"})),
        ("/api/unsubscribe", json!({"user": "", "group": "chat.x"})),
    ] {
        let (status, answer) = post(a.addr, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["ok"], false, "{answer}");
    }
    let (status, answer) = post(a.addr, "/api/subscribe", json!({"user": "a", "group": "bad group"})).await;
    assert_eq!((status, &answer["error"]["code"]), (400, &json!("invalid_group")));
    assert_eq!(a.get("/api/connections").await.0, 400);
}
