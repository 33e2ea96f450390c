//! `[[routes]]`: auto-subscription and publish grants from the connection path.

use herald::config::RouteConfig;
use serde_json::json;

use crate::harness::{Client, Node, config};

#[tokio::test]
async fn a_route_subscribes_on_connect_and_grants_publishing_to_its_groups() {
    let mut config = config(None, "solo");
    config.routes.push(RouteConfig {
        path: "/ws/chat/{room}".into(),
        subscribe: vec!["chat.{room}".into(), "announcements".into()],
        publish: vec!["chat.{room}".into()],
    });
    let node = Node::ready(config).await;

    let mut routed = Client::connect(&node.ws_url("/ws/chat/lobby")).await;
    let mut generic = node.client().await;
    generic.subscribe("chat.lobby").await;

    // Auto-subscribed to both groups of the route: the HTTP publishes reach it.
    node.publish("announcements", json!("welcome")).await;
    node.publish("chat.lobby", json!("hi")).await;
    assert_eq!(routed.message().await, ("announcements".into(), json!("welcome")));
    assert_eq!(routed.message().await, ("chat.lobby".into(), json!("hi")));
    assert_eq!(generic.message().await.1, json!("hi"));

    // Publishing is granted on the route's group only; /ws clients get the namespace policy.
    assert_eq!(routed.publish("chat.lobby", json!("from route")).await["type"], "reply");
    assert_eq!(generic.message().await.1, json!("from route"));
    assert_eq!(routed.publish("chat.other", json!(1)).await["code"], "forbidden");
    assert_eq!(generic.publish("chat.lobby", json!(1)).await["code"], "forbidden");

    // A path value that makes an invalid group is refused at the handshake.
    let refused = Client::open(&node.ws_url("/ws/chat/no%20spaces"), &[]).await;
    assert_eq!(refused.err(), Some(400));
}
