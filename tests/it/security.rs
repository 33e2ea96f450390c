//! Refusals: bad tokens, foreign origins, connection limits, floods, slowloris, silent clients.
//! Each checks the close code or HTTP status, and that other clients carry on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::config::{AuthMode, Config, NamespaceConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Client, Node, WAIT, config, metric};

pub(crate) const SECRET: &str = "integration-test-secret-32-bytes!";

pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub(crate) fn token(claims: Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn valid(sub: &str) -> String {
    token(json!({"sub": sub, "exp": now() + 600}))
}

pub(crate) fn auth_config(mode: AuthMode) -> Config {
    let mut config = config(None, "solo");
    config.auth = Some(mode);
    config.auth_hmac_secret = Some(SECRET.into());
    config.auth_timeout = Duration::from_millis(500);
    config
        .namespaces
        .insert("chat".into(), NamespaceConfig { client_publish: true, ..NamespaceConfig::default() });
    config
}

/// A member of `news` on `node` that must keep receiving whatever happens to others.
async fn bystander(node: &Node, token: Option<&str>) -> Client {
    let url = match token {
        Some(t) => node.ws_url(&format!("/ws?token={t}")),
        None => node.ws_url("/ws"),
    };
    let mut client = Client::connect(&url).await;
    client.subscribe("news").await;
    client
}

async fn assert_unaffected(node: &Node, bystander: &mut Client) {
    assert_eq!(node.publish("news", json!("still flowing")).await.0, 200);
    assert_eq!(bystander.message().await.1, json!("still flowing"));
}

#[tokio::test]
async fn bad_or_missing_tokens_are_closed_with_4001_before_any_subscription() {
    let node = Node::ready(auth_config(AuthMode::Required)).await;
    let mut calm = bystander(&node, Some(&valid("calm"))).await;
    let forged = jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "x", "exp": now() + 600}),
        &EncodingKey::from_secret(b"some-other-secret-of-enough-length"),
    )
    .unwrap();
    let expired = token(json!({"sub": "x", "exp": now() - 600}));
    let no_exp = token(json!({"sub": "x"}));
    for bad in ["garbage", forged.as_str(), expired.as_str(), no_exp.as_str()] {
        let mut client = Client::open(&node.ws_url(&format!("/ws?token={bad}")), &[]).await.unwrap();
        assert_eq!(client.close_code().await, 4001, "token {bad}: closed without a welcome");
    }
    // No token, and the first frame is not `auth`, or nothing comes within auth_timeout.
    let mut eager = node.client().await;
    eager.send_text(json!({"type": "subscribe", "group": "news"}).to_string()).await;
    assert_eq!(eager.close_code().await, 4001);
    let mut silent = node.client().await;
    assert_eq!(silent.close_code().await, 4001);
    let mut wrong = node.client().await;
    wrong.send_text(json!({"type": "auth", "token": expired}).to_string()).await;
    assert_eq!(wrong.close_code().await, 4001);
    assert_unaffected(&node, &mut calm).await;

    // The first frame may carry a good token.
    let mut late = node.client().await;
    assert_eq!(late.request(json!({"type": "auth", "token": valid("late")})).await["type"], "reply");
    late.subscribe("news").await;
    assert_unaffected(&node, &mut late).await;
}

#[tokio::test]
async fn optional_auth_lets_anonymous_clients_in_and_still_refuses_bad_tokens() {
    let node = Node::ready(auth_config(AuthMode::Optional)).await;
    let mut anonymous = bystander(&node, None).await;
    let mut bad = Client::open(&node.ws_url("/ws?token=garbage"), &[]).await.unwrap();
    assert_eq!(bad.close_code().await, 4001);
    assert_eq!(anonymous.request(json!({"type": "auth", "token": valid("ann")})).await["type"], "reply");
    assert_unaffected(&node, &mut anonymous).await;
}

#[tokio::test]
async fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let node = Node::ready(auth_config(AuthMode::Required)).await;
    let mut calm = bystander(&node, Some(&valid("calm"))).await;
    // exp 3 s ago is still inside the 5 s leeway: the connection lives about 2 s more.
    let short = token(json!({"sub": "ann", "exp": now() - 3}));
    let mut expiring = Client::connect(&node.ws_url(&format!("/ws?token={short}"))).await;
    let mut refreshed = Client::connect(&node.ws_url(&format!("/ws?token={short}"))).await;
    let answer = refreshed.request(json!({"type": "refresh", "token": valid("ann")})).await;
    assert_eq!(answer["type"], "reply", "{answer}");
    let other = refreshed.request(json!({"type": "refresh", "token": valid("bob")})).await;
    assert_eq!(other["code"], "forbidden", "a refresh must be for the same user");
    assert_eq!(expiring.close_code().await, 4001);
    refreshed.assert_no_message().await;
    assert_unaffected(&node, &mut calm).await;
}

#[tokio::test]
async fn token_patterns_limit_subscribe_and_publish() {
    let node = Node::ready(auth_config(AuthMode::Required)).await;
    let limited = token(
        json!({"sub": "ann", "exp": now() + 600, "groups": ["chat.*", "news"], "publish": ["chat.lobby"]}),
    );
    let mut client = Client::connect(&node.ws_url(&format!("/ws?token={limited}"))).await;
    client.subscribe("chat.lobby").await;
    let answer = client.request(json!({"type": "subscribe", "group": "secret.plans"})).await;
    assert_eq!(answer["code"], "forbidden");
    assert_eq!(client.publish("chat.lobby", json!("hi")).await["type"], "reply");
    assert_eq!(client.message().await.1, json!("hi"));
    assert_eq!(
        client.publish("chat.other", json!("no")).await["code"],
        "forbidden",
        "chat allows clients, the token does not"
    );
    client.subscribe("news").await;
    assert_unaffected(&node, &mut client).await;
}

#[tokio::test]
async fn es256_tokens_verify_with_the_public_key_file() {
    let mut config = auth_config(AuthMode::Required);
    config.auth_hmac_secret = None;
    config.auth_public_key_file =
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/es256-public.pem").into());
    let node = Node::ready(config).await;
    let key = EncodingKey::from_ec_pem(include_bytes!("../fixtures/es256-private.pem")).unwrap();
    let es = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "ann", "exp": now() + 600}),
        &key,
    )
    .unwrap();
    let mut good = Client::connect(&node.ws_url(&format!("/ws?token={es}"))).await;
    good.subscribe("news").await;
    let mut hs = Client::open(&node.ws_url(&format!("/ws?token={}", valid("x"))), &[]).await.unwrap();
    assert_eq!(hs.close_code().await, 4001, "HS256 is not accepted without a secret");
    assert_unaffected(&node, &mut good).await;
}

#[tokio::test]
async fn foreign_origins_get_403_at_the_handshake() {
    let mut config = config(None, "solo");
    config.allowed_origins = vec!["https://*.example.com".into()];
    let node = Node::ready(config).await;
    let mut calm = bystander(&node, None).await;
    let url = node.ws_url("/ws");
    assert_eq!(Client::connect_with(&url, &[("origin", "https://evil.test")]).await.err(), Some(403));
    assert!(Client::connect_with(&url, &[("origin", "https://app.example.com")]).await.is_ok());
    let own = format!("http://{}", node.addr);
    assert!(Client::connect_with(&url, &[("origin", &own)]).await.is_ok(), "the gateway's own host");
    assert_unaffected(&node, &mut calm).await;
}

#[tokio::test]
async fn connection_limits_answer_503_and_429() {
    let mut config = config(None, "solo");
    config.max_connections = 3;
    config.max_connections_per_ip = 2;
    let node = Node::ready(config).await;
    let mut calm = bystander(&node, None).await;
    let _second = node.client().await;
    let url = node.ws_url("/ws");
    assert_eq!(Client::open(&url, &[]).await.err(), Some(429), "a third from 127.0.0.1");
    let _third = Client::open_from(Some("127.0.0.2"), &url, &[]).await.expect("another address may");
    assert_eq!(
        Client::open_from(Some("127.0.0.3"), &url, &[]).await.err(),
        Some(503),
        "the instance is full"
    );
    assert_unaffected(&node, &mut calm).await;
}

#[tokio::test]
async fn too_many_groups_is_forbidden() {
    let mut config = config(None, "solo");
    config.max_groups_per_client = 2;
    let node = Node::ready(config).await;
    let mut client = node.client().await;
    client.subscribe("news").await;
    client.subscribe("two").await;
    assert_eq!(client.request(json!({"type": "subscribe", "group": "three"})).await["code"], "forbidden");
    assert_unaffected(&node, &mut client).await;
}

#[tokio::test]
async fn a_flooder_is_limited_then_closed_while_100_others_get_every_message() {
    let mut config = auth_config(AuthMode::Off);
    config.rate_limit = 20;
    config.rate_limit_burst = 20;
    config.rate_limit_strikes = 50;
    let node = Node::ready(config).await;
    let mut receivers = Vec::new();
    for _ in 0..100 {
        receivers.push(bystander(&node, None).await);
    }
    let mut flooder = node.client().await;
    let flood = json!({"type": "publish", "group": "chat.flood", "data": "x"}).to_string();
    let steady = async {
        for n in 0..20 {
            assert_eq!(node.publish("news", json!(n)).await.0, 200);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let flooding = async {
        let mut limited = 0;
        for _ in 0..500 {
            flooder.send_text(flood.clone()).await;
        }
        loop {
            match flooder.try_recv().await {
                Some(frame) if frame["code"] == "rate_limited" => limited += 1,
                Some(_) => {}
                None => break,
            }
        }
        limited
    };
    let ((), limited) = tokio::join!(steady, flooding);
    assert!(limited > 0, "the flooder got rate_limited errors");
    for receiver in &mut receivers {
        for n in 0..20 {
            assert_eq!(receiver.message().await.1, json!(n));
        }
    }
    let mut again = node.client().await;
    for _ in 0..200 {
        again.send_text(flood.clone()).await;
    }
    assert_eq!(again.close_code().await, 4029);
}

#[tokio::test]
async fn a_slowloris_connection_is_dropped_after_the_handshake_timeout() {
    let mut config = config(None, "solo");
    config.handshake_timeout = Duration::from_millis(300);
    let node = Node::ready(config).await;
    let mut calm = bystander(&node, None).await;
    let mut slow = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closed the half-sent request");
    assert_unaffected(&node, &mut calm).await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4000() {
    let mut config = config(None, "solo");
    config.ping_interval = Duration::from_millis(200);
    config.pong_timeout = Duration::from_millis(200);
    let node = Node::ready(config).await;
    let mut live = bystander(&node, None).await;
    let mut silent = node.client().await;
    // `live` reads (and so answers pings) throughout; `silent` reads nothing until the end.
    for _ in 0..8 {
        live.assert_no_message().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(silent.close_code().await, 4000);
    assert_unaffected(&node, &mut live).await;
}

#[tokio::test]
async fn a_client_that_asks_for_much_and_never_reads_is_closed_once_writes_stall() {
    let mut config = config(None, "solo");
    config.write_timeout = Duration::from_secs(1);
    config.max_frame_bytes = 64 * 1024;
    config
        .namespaces
        .insert("feed".into(), NamespaceConfig { history_size: 400, ..NamespaceConfig::default() });
    let node = Node::ready(config).await;
    let mut live = bystander(&node, None).await;
    let pad = "x".repeat(30_000);
    for n in 0..300 {
        assert_eq!(node.publish("feed.big", json!({"n": n, "pad": pad})).await.0, 200);
    }
    let epoch = node.get("/api/history?group=feed.big&limit=1").await.1["epoch"].clone();
    // 9 MB of recovery, asked for by a client that never reads and keeps sending requests.
    let mut hoarder = Client::open(&node.ws_url("/ws"), &[]).await.unwrap();
    let since = json!({"offset": 0, "epoch": epoch});
    hoarder.send_text(json!({"type": "subscribe", "group": "feed.big", "since": since}).to_string()).await;
    for _ in 0..20 {
        hoarder.send_text(json!({"type": "ping"}).to_string()).await;
    }
    crate::harness::eventually("the hoarder is closed as a slow consumer", || async {
        let text = node.metrics().await;
        metric(&text, r#"herald_closes_total{code="4008"}"#) == Some(1.0)
            && metric(&text, "herald_connections") == Some(1.0)
    })
    .await;
    assert_unaffected(&node, &mut live).await;
}
