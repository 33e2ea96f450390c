//! Bad input gets a precise error frame and hurts nobody; oversize frames close with 1009.

use herald::config::NamespaceConfig;
use serde_json::{Value, json};

use crate::harness::{Client, Node, config};

async fn node() -> Node {
    let mut config = config(None, "solo");
    config
        .namespaces
        .insert("chat".into(), NamespaceConfig { client_publish: true, ..NamespaceConfig::default() });
    Node::ready(config).await
}

async fn error_for(client: &mut Client, text: &str) -> Value {
    client.send_text(text).await;
    let frame = client.recv().await;
    assert_eq!(frame["type"], "error", "for {text}: {frame}");
    frame
}

#[tokio::test]
async fn each_bad_frame_gets_its_error_code_and_the_connection_stays_usable() {
    let node = node().await;
    let mut bystander = node.client().await;
    bystander.subscribe("chat.calm").await;
    let mut client = node.client().await;
    client.subscribe("chat.calm").await;

    let cases = [
        ("not json", None, "bad_request"),
        ("[1,2]", None, "bad_request"),
        (r#"{"id":1}"#, Some(1), "bad_request"),
        (r#"{"type":"dance","id":2}"#, Some(2), "unknown_type"),
        (r#"{"type":"subscribe","id":3}"#, Some(3), "bad_request"),
        (r#"{"type":"subscribe","group":"no spaces","id":4}"#, Some(4), "invalid_group"),
        (r#"{"type":"subscribe","group":"","id":5}"#, Some(5), "invalid_group"),
        (r#"{"type":"publish","group":"chat.calm","id":6}"#, Some(6), "bad_request"),
        (r#"{"type":"publish","group":"news.x","data":1,"id":7}"#, Some(7), "forbidden"),
        (r#"{"type":"ping","id":"eight"}"#, None, "bad_request"),
    ];
    for (text, id, code) in cases {
        let frame = error_for(&mut client, text).await;
        assert_eq!(frame["code"], code, "for {text}: {frame}");
        assert_eq!(frame.get("id").and_then(Value::as_u64), id, "for {text}: {frame}");
        assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    client.ws_binary(b"\x00\x01").await;
    assert_eq!(client.recv().await["code"], "bad_request");

    // Still subscribed, still usable, and nobody else noticed.
    assert_eq!(client.publish("chat.calm", json!("still here")).await["type"], "reply");
    assert_eq!(client.message().await.1, json!("still here"));
    assert_eq!(bystander.message().await.1, json!("still here"));
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_closes_with_1009_and_others_carry_on() {
    let node = node().await;
    let mut bystander = node.client().await;
    bystander.subscribe("chat.big").await;
    let mut client = node.client().await;
    let limit = herald::config::Config::default().max_frame_bytes;

    let at_limit = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(limit - 24));
    assert_eq!(at_limit.len(), limit);
    client.send_text(at_limit).await;
    assert_eq!(client.recv().await["type"], "reply", "a frame of exactly the limit is fine");

    client.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(limit))).await;
    assert_eq!(client.close_code().await, 1009);

    let mut publisher = node.client().await;
    assert_eq!(publisher.publish("chat.big", json!(1)).await["type"], "reply");
    assert_eq!(bystander.message().await.1, json!(1));
}
