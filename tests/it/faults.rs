//! Faults: Redis going away and coming back, and clients too slow to keep up.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Node, Redis, config, eventually, http};

#[tokio::test]
async fn clients_survive_a_redis_restart_and_delivery_resumes_without_client_action() {
    let mut redis = Redis::start().await;
    let nodes =
        [Node::ready(config(Some(&redis), "gw-1")).await, Node::ready(config(Some(&redis), "gw-2")).await];
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        client.subscribe("news").await;
        clients.push(client);
    }

    redis.kill();
    for node in &nodes {
        eventually("readyz reports 503", || async { node.get("/readyz").await.0 == 503 }).await;
        assert_eq!(node.get("/healthz").await.0, 200, "the process is alive");
    }
    let (status, body) = nodes[0].publish("news", json!("lost")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));
    let mut late = nodes[1].client().await;
    let answer = late.request(json!({"type": "subscribe", "group": "late"})).await;
    assert_eq!(answer["code"], "unavailable", "{answer}");
    for client in &mut clients {
        client.assert_no_message().await; // still connected and answering
    }

    redis.restart().await;
    for node in &nodes {
        eventually("readyz reports 200", || async { node.get("/readyz").await.0 == 200 }).await;
    }
    // Publish until one is accepted: the first command on a stale pooled connection may fail.
    eventually("publish accepted", || async { nodes[1].publish("news", json!("back")).await.0 == 200 }).await;
    for client in &mut clients {
        assert_eq!(client.message().await.1, json!("back"));
    }
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_while_a_fast_one_gets_everything() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.outbound_queue = 8;
    config.max_frame_bytes = 512 * 1024;
    let node = Node::ready(config).await;
    let mut slow = node.client().await;
    slow.subscribe("firehose").await;
    let mut fast = node.client().await;
    fast.subscribe("firehose").await;

    // Enough data to fill the slow client's socket buffers and then its queue.
    const COUNT: usize = 160;
    let payload = "x".repeat(400 * 1024);
    let reader = tokio::spawn(async move {
        for seq in 0..COUNT {
            assert_eq!(fast.message().await.1["seq"], json!(seq));
        }
        fast
    });
    for seq in 0..COUNT {
        let body = json!({"group": "firehose", "data": {"seq": seq, "pad": payload}}).to_string();
        assert_eq!(http(node.addr, "POST", "/api/publish", &[], &body).await.0, 200);
    }
    let mut fast = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("fast reader").unwrap();
    fast.assert_no_message().await;

    assert_eq!(slow.close_code().await, 4008);
}

#[tokio::test]
async fn stopping_a_gateway_closes_its_clients_with_1012() {
    let node = Node::ready(config(None, "solo")).await;
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.subscribe("g").await;
    node.stop().await;
    assert_eq!(a.close_code().await, 1012);
    assert_eq!(b.close_code().await, 1012);
}
