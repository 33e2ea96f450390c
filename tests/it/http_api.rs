//! `POST /api/publish` auth, validation and back-pressure, health endpoints.

use std::time::Duration;

use herald::config::NamespaceConfig;
use serde_json::{Value, json};

use crate::harness::{Node, Redis, config, http, http_raw, metric};

#[tokio::test]
async fn publish_requires_one_of_the_configured_keys() {
    let mut config = config(None, "solo");
    config.api_keys = vec!["old-key".into(), "new-key".into()];
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    member.subscribe("alerts").await;
    let body = json!({"group": "alerts", "data": "fire"}).to_string();
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let body = body.clone();
        let addr = node.addr;
        async move { http(addr, "POST", "/api/publish", headers, &body).await }
    };

    let (status, error) = post(&[]).await;
    assert_eq!(status, 401);
    assert_eq!(error["ok"], false);
    assert_eq!(post(&[("authorization", "Bearer wrong-key")]).await.0, 401);
    assert_eq!(post(&[("authorization", "Basic old-key")]).await.0, 401);
    member.assert_no_message().await;

    let (status, ok) = post(&[("authorization", "Bearer old-key")]).await;
    assert_eq!((status, ok), (200, json!({"ok": true})));
    assert_eq!(post(&[("authorization", "Bearer new-key")]).await.0, 200);
    assert_eq!(member.message().await.1, json!("fire"));
    assert_eq!(member.message().await.1, json!("fire"));
}

#[tokio::test]
async fn bad_and_oversize_bodies_get_json_errors() {
    let node = Node::ready(config(None, "solo")).await;
    let mut member = node.client().await;
    member.subscribe("a").await;
    member.subscribe("b").await;
    let post = |body: String| http(node.addr, "POST", "/api/publish", &[], Box::leak(body.into_boxed_str()));

    for (body, code) in [
        ("nope".to_string(), "bad_request"),
        (json!({"data": 1}).to_string(), "bad_request"),
        (json!({"group": "a"}).to_string(), "bad_request"),
        (json!({"group": "a b", "data": 1}).to_string(), "invalid_group"),
        (json!({"groups": ["a", "b c"], "data": 1}).to_string(), "invalid_group"),
    ] {
        let (status, error) = post(body.clone()).await;
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some(code)), "for {body}");
    }
    let huge = json!({"group": "a", "data": "x".repeat(herald::config::Config::default().max_frame_bytes)});
    let (status, error) = post(huge.to_string()).await;
    assert_eq!((status, error["error"]["code"].as_str()), (413, Some("too_large")));
    member.assert_no_message().await;

    assert_eq!(post(json!({"groups": ["a", "b"], "data": null}).to_string()).await.0, 200);
    assert_eq!(member.message().await, ("a".into(), json!(null)));
    assert_eq!(member.message().await, ("b".into(), json!(null)));
}

#[tokio::test]
async fn health_endpoints() {
    let node = Node::ready(config(None, "solo")).await;
    assert_eq!(node.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(node.get("/readyz").await, (200, json!({"status": "ready"})));
    let (status, _) = node.get("/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_web_page_cannot_publish_through_a_loopback_gateway() {
    let mut config = config(None, "solo");
    config.allowed_origins = vec!["https://app.example.com".into()];
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    member.subscribe("alerts").await;
    let body = json!({"group": "alerts", "data": "x"}).to_string();
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let body = body.clone();
        let addr = node.addr;
        async move { http_raw(addr, "POST", "/api/publish", headers, &body).await.0 }
    };
    // What `fetch(..., {mode: "no-cors"})` from a foreign page sends.
    assert_eq!(post(&[("origin", "https://evil.test"), ("content-type", "text/plain")]).await, 403);
    for content_type in
        ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(Box::new([("content-type", content_type)]));
        assert_eq!(post(headers).await, 415, "{content_type}");
    }
    member.assert_no_message().await;
    assert_eq!(post(&[]).await, 200, "no Content-Type");
    assert_eq!(post(&[("content-type", "application/json; charset=utf-8")]).await, 200);
    assert_eq!(
        post(&[("origin", "https://app.example.com"), ("content-type", "application/json")]).await,
        200
    );
    for _ in 0..3 {
        assert_eq!(member.message().await.1, json!("x"));
    }
}

#[tokio::test]
async fn a_multi_group_publish_that_fails_for_some_groups_says_which() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("feed".into(), NamespaceConfig { history_size: 10, ..Default::default() });
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    member.subscribe("news").await;
    // A key of the wrong type where feed.broken's history lives: Redis refuses its publish.
    let _: String = redis.query(&["SET", "herald:history:{feed.broken}:meta", "oops"]).await;
    let body = json!({"groups": ["news", "feed.broken", "feed.fine"], "data": 1}).to_string();
    let (status, answer) = http(node.addr, "POST", "/api/publish", &[], &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["published"], json!(["news", "feed.fine"]));
    assert_eq!(answer["failed"], json!([{"group": "feed.broken", "code": "unavailable"}]));
    assert_eq!(member.message().await, ("news".into(), json!(1)));
}

#[tokio::test]
async fn a_batch_is_published_in_order_and_answered_per_message() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("feed".into(), NamespaceConfig { history_size: 100, ..Default::default() });
    (config.max_frame_bytes, config.max_batch_bytes) = (2048, 4096);
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    member.subscribe("feed.a").await;
    member.subscribe("news").await;
    let batch = json!([
        {"group": "feed.a", "data": 1},
        {"group": "news", "data": "x"},
        {"group": "no good", "data": 2},
        {"group": "feed.a", "data": 3},
        {"group": "feed.a"},
    ]);
    let (status, answer) = http(node.addr, "POST", "/api/publish", &[], &batch.to_string()).await;
    assert_eq!(status, 400, "some messages were invalid: {answer}");
    let codes: Vec<Value> =
        answer["results"].as_array().unwrap().iter().map(|r| r["error"]["code"].clone()).collect();
    assert_eq!(codes, [Value::Null, Value::Null, json!("invalid_group"), Value::Null, json!("bad_request")]);
    assert_eq!(answer["results"][0], json!({"ok": true}));
    let frames: Vec<Value> = vec![member.recv().await, member.recv().await, member.recv().await];
    let seen: Vec<(Value, Value)> = frames.iter().map(|f| (f["data"].clone(), f["offset"].clone())).collect();
    assert_eq!(
        seen,
        [(json!(1), json!(1)), (json!("x"), Value::Null), (json!(3), json!(2))],
        "in order, offsets per group"
    );

    let lines = "{\"group\":\"news\",\"data\":\"a\"}\n{\"group\":\"news\",\"data\":\"b\"}\n";
    let (status, body) =
        http_raw(node.addr, "POST", "/api/publish", &[("content-type", "application/x-ndjson")], lines).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"results": [{"ok": true}, {"ok": true}]})
    );
    assert_eq!(member.message().await.1, json!("a"));
    assert_eq!(member.message().await.1, json!("b"));
    let huge = json!([{"group": "news", "data": "x".repeat(5000)}]).to_string();
    assert_eq!(http(node.addr, "POST", "/api/publish", &[], &huge).await.0, 413, "over max_batch_bytes");
    member.assert_no_message().await;
}

#[tokio::test]
async fn publishes_wait_for_room_and_are_refused_with_retry_after_beyond_the_wait() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    (config.max_pending_publishes, config.publish_wait) = (1, Duration::from_millis(300));
    let node = Node::ready(config).await;
    // Redis holds every command for 0.8 s: the first publish keeps the only slot meanwhile.
    let _: () = redis.query(&["CLIENT", "PAUSE", "800", "ALL"]).await;
    let addr = node.addr;
    let first =
        tokio::spawn(
            async move { http(addr, "POST", "/api/publish", &[], r#"{"group":"g","data":1}"#).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let body = r#"{"group":"g","data":2}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.unwrap();
    let (head, answer) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{head}");
    assert_eq!(serde_json::from_str::<Value>(answer).unwrap()["error"]["code"], "unavailable");
    let first = first.await.unwrap();
    assert_eq!(first.0, 200, "the waiting publish went through once Redis answered: {first:?}");
    let metrics = node.metrics().await;
    assert_eq!(
        metric(&metrics, r#"herald_drops_total{reason="publish_overloaded"}"#),
        Some(1.0),
        "{metrics}"
    );
}
