//! Operations: Prometheus metrics, the cluster view of /api/info, JSON logs, what goes on the
//! wire when a session starts.

use std::time::Duration;

use serde_json::{Value, json};

use herald::config::AuthMode;

use crate::harness::{GatewayProcess, Node, Redis, config, eventually, metric};

#[tokio::test]
async fn metrics_count_connections_messages_drops_and_latency() {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw-1")).await;
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.subscribe("m").await;
    b.subscribe("m").await;
    assert_eq!(node.publish("m", json!(1)).await.0, 200);
    a.message().await;
    b.message().await;
    let mut big = node.client().await;
    big.send_text("x".repeat(70 * 1024)).await;
    assert_eq!(big.close_code().await, 1009);

    eventually("closes counted", || async {
        metric(&node.metrics().await, r#"herald_closes_total{code="1009"}"#) == Some(1.0)
    })
    .await;
    let text = node.metrics().await;
    assert_eq!(metric(&text, "herald_connections"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "herald_subscriptions"), Some(2.0));
    assert_eq!(metric(&text, "herald_groups"), Some(1.0));
    assert_eq!(metric(&text, "herald_messages_in_total"), Some(1.0));
    assert_eq!(metric(&text, "herald_messages_out_total"), Some(2.0));
    assert_eq!(
        metric(&text, "herald_delivery_latency_seconds_count"),
        Some(1.0),
        "measured from the publish stamp"
    );
}

#[tokio::test]
async fn api_info_lists_every_live_node_with_its_counts() {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for id in ["gw-1", "gw-2"] {
        let mut config = config(Some(&redis), id);
        config.presence_ttl = Duration::from_secs(3);
        nodes.push(Node::ready(config).await);
    }
    let mut client = nodes[1].client().await;
    client.subscribe("x").await;
    eventually("both nodes announced with their counts", || async {
        let (status, info) = nodes[0].get("/api/info").await;
        let listed: Vec<(String, u64)> = info["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|n| (n["node"].as_str().unwrap().to_string(), n["connections"].as_u64().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        status == 200
            && info["node"]["node"] == "gw-1"
            && listed.contains(&("gw-1".into(), 0))
            && listed.contains(&("gw-2".into(), 1))
    })
    .await;
}

#[tokio::test]
async fn logs_are_json_lines_with_a_span_per_connection() {
    let redis = Redis::start().await;
    let toml = format!("redis_url = \"{}\"\nnode_id = \"logger\"\nauth = \"off\"\n", redis.url());
    let gateway =
        GatewayProcess::start_with_env(&toml, &[("HERALD_LOG_FORMAT", "json"), ("RUST_LOG", "debug")]).await;
    let client = gateway.client().await;
    client.close().await;
    eventually("the session's lines are logged", || async { gateway.process.log().contains("disconnected") })
        .await;
    let log = gateway.process.log();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let session = lines.iter().find(|l| l["fields"]["message"] == "connected").expect("a connected line");
    assert_eq!(session["span"]["name"], "session");
    assert!(session["span"]["client"].as_str().unwrap().starts_with("logger-"));
}

#[tokio::test]
async fn a_new_session_sends_its_101_and_its_welcome_in_one_packet() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // With authentication required and no token on the URL, the welcome goes at once too: the
    // `auth` frame is awaited after it.
    for auth in [AuthMode::Off, AuthMode::Required] {
        let mut config = config(None, "gw-one-packet");
        config.auth = Some(auth);
        config.auth_hmac_secret = Some("a-secret-of-at-least-32-bytes-long!".into());
        let node = Node::ready(config).await;
        let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            node.addr
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        // Read as soon as anything arrives: sent apart, the 101 would come alone.
        let mut first = vec![0; 4096];
        let read = socket.read(&mut first).await.unwrap();
        let first = String::from_utf8_lossy(&first[..read]);
        assert!(first.starts_with("HTTP/1.1 101"), "{auth:?}: {first}");
        assert!(first.contains(r#"{"type":"welcome""#), "{auth:?}: the welcome came with the 101: {first:?}");
    }
}
