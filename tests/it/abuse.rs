//! Memory stays bounded whatever clients do: rounds of every abusive pattern against one
//! gateway process, whose resident memory must level off instead of growing with each round.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::harness::{GatewayProcess, Redis, http};

const TOML_LIMITS: &str = "auth = \"off\"\nhandshake_timeout = \"300ms\"\nping_interval = \"500ms\"\n\
    pong_timeout = \"500ms\"\noutbound_queue_bytes = 262144\nrate_limit = 20\nrate_limit_burst = 20\n\
    rate_limit_strikes = 20\n[namespaces.chat]\nclient_publish = true\n";

/// One round: slowloris sockets, clients that never read a busy group, flooders, oversize
/// frames and connection churn. Everything the round opened is gone when it returns.
async fn abuse(gateway: &GatewayProcess) {
    let addr = gateway.addr;
    let mut slowloris = Vec::new();
    for _ in 0..200 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slowloris.push(socket);
    }
    let mut sleepers = Vec::new();
    for _ in 0..100 {
        let mut client = gateway.client().await;
        client.subscribe("firehose").await;
        sleepers.push(client);
    }
    let payload = "x".repeat(32 * 1024);
    for n in 0..100 {
        let body = json!({"group": "firehose", "data": {"n": n, "pad": payload}}).to_string();
        assert_eq!(http(addr, "POST", "/api/publish", &[], &body).await.0, 200);
    }
    let flood = json!({"type": "publish", "group": "chat.flood", "data": "x"}).to_string();
    for _ in 0..20 {
        let mut flooder = gateway.client().await;
        for _ in 0..100 {
            flooder.send_text(flood.clone()).await;
        }
        assert_eq!(flooder.close_code().await, 4029);
    }
    for _ in 0..20 {
        let mut big = gateway.client().await;
        big.send_text("x".repeat(70 * 1024)).await;
        assert_eq!(big.close_code().await, 1009);
    }
    for _ in 0..100 {
        gateway.client().await.close().await;
    }
    drop((slowloris, sleepers));
    // Let the gateway notice every dropped socket (pong deadline, close grace).
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn resident_memory_levels_off_under_repeated_abuse() {
    let redis = Redis::start().await;
    let toml = format!("redis_url = \"{}\"\nnode_id = \"target\"\n{TOML_LIMITS}", redis.url());
    let gateway = GatewayProcess::start(&toml).await;

    // Two rounds warm the allocator up; later rounds must not keep adding.
    abuse(&gateway).await;
    abuse(&gateway).await;
    let warm = gateway.process.rss_kib();
    for _ in 0..3 {
        abuse(&gateway).await;
    }
    let after = gateway.process.rss_kib();
    eprintln!("gateway resident memory: {warm} KiB after two rounds, {after} KiB after five");
    assert!(
        after <= warm + 16 * 1024,
        "resident memory grew from {warm} KiB to {after} KiB over three rounds"
    );

    // And it still serves.
    let mut calm = gateway.client().await;
    calm.subscribe("calm").await;
    let body = json!({"group": "calm", "data": "fine"}).to_string();
    assert_eq!(http(gateway.addr, "POST", "/api/publish", &[], &body).await.0, 200);
    assert_eq!(calm.message().await.1, json!("fine"));
}
