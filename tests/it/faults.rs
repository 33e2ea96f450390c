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
    config.outbound_queue_bytes = 2 * 1024 * 1024;
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
    // The slow client reads, but a frame every 50 ms: far behind the publisher.
    let slow = tokio::spawn(async move {
        while let Some(frame) = slow.try_recv().await {
            assert_eq!(frame["type"], "message");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slow
    });
    for seq in 0..COUNT {
        let body = json!({"group": "firehose", "data": {"seq": seq, "pad": payload}}).to_string();
        assert_eq!(http(node.addr, "POST", "/api/publish", &[], &body).await.0, 200);
    }
    let mut fast = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("fast reader").unwrap();
    fast.assert_no_message().await;

    let slow = tokio::time::timeout(Duration::from_secs(60), slow).await.expect("slow reader").unwrap();
    assert_eq!(slow.last_close_code(), Some(4008));
}

#[tokio::test]
async fn a_stopping_gateway_closes_its_idle_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stopping = config(None, "gw-keep-alive");
    stopping.drain_period = Duration::from_millis(100);
    // Longer than the wait below: only the stop can close the idle connection in time.
    stopping.handshake_timeout = Duration::from_secs(600);
    let node = Node::ready(stopping).await;
    let mut keep_alive = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    keep_alive
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", node.addr).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let read = keep_alive.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..read]));

    node.stop().await;
    let closed = tokio::time::timeout(Duration::from_secs(30), keep_alive.read(&mut answer)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the idle connection is closed: {closed:?}");
}

#[tokio::test]
async fn a_stopping_gateway_drains_its_clients_over_the_drain_period_to_another_instance() {
    let redis = Redis::start().await;
    let mut draining = config(Some(&redis), "gw-a");
    draining.drain_period = Duration::from_secs(2);
    let a = Node::ready(draining).await;
    let b = Node::ready(config(Some(&redis), "gw-b")).await;
    let a_addr = a.addr;
    let mut watchers = Vec::new();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let mut client = a.client().await;
        client.subscribe("moving").await;
        watchers.push(tokio::spawn(async move { (client.close_code().await, started.elapsed()) }));
    }
    let stopping = tokio::spawn(a.stop());
    eventually("readyz says 503 while draining", || async {
        http(a_addr, "GET", "/readyz", &[], "").await.0 == 503
    })
    .await;
    let refused = crate::harness::Client::open(&format!("ws://{a_addr}/ws"), &[]).await;
    assert_eq!(refused.err(), Some(503), "no new sessions while draining");

    let mut closed_at = Vec::new();
    for watcher in watchers {
        let (code, at) = watcher.await.unwrap();
        assert_eq!(code, 1012);
        closed_at.push(at);
    }
    stopping.await.unwrap();
    let (first, last) = (closed_at.iter().min().unwrap(), closed_at.iter().max().unwrap());
    assert!(
        *last - *first >= Duration::from_millis(1000),
        "closes spread over the period: {first:?} .. {last:?}"
    );
    assert!(
        *last <= Duration::from_secs(2) + Duration::from_secs(5),
        "all closed within the period (with slack): {last:?}"
    );

    // Each reconnects to the other instance and keeps receiving.
    let mut moved = Vec::new();
    for _ in 0..20 {
        let mut client = b.client().await;
        client.subscribe("moving").await;
        moved.push(client);
    }
    assert_eq!(b.publish("moving", json!("here")).await.0, 200);
    for client in &mut moved {
        assert_eq!(client.message().await.1, json!("here"));
    }
}
