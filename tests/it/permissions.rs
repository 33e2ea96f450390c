//! Permissions only narrow: a route, a refresh or a late `auth` can restrict what a token allows,
//! never widen it; `require_auth` namespaces refuse anonymous clients; `personal` namespaces
//! give each user its own group alone; odd tokens and binary frames get no way around the rules.

use herald::config::{AuthMode, NamespaceConfig, RouteConfig};
use serde_json::json;

use crate::harness::{Client, Node};
use crate::security::{auth_config, now, token};

fn chat_route() -> RouteConfig {
    RouteConfig {
        path: "/ws/chat/{room}".into(),
        subscribe: vec!["chat.{room}".into()],
        publish: Some(vec!["chat.{room}".into()]),
    }
}

#[tokio::test]
async fn a_route_cannot_widen_what_the_token_allows() {
    let mut config = auth_config(AuthMode::Required);
    config.routes.push(chat_route());
    let node = Node::ready(config).await;
    let lobby_only = token(json!({"sub": "ann", "exp": now() + 600, "publish": ["chat.lobby"]}));
    let mut client = Client::connect(&node.ws_url(&format!("/ws/chat/admins?token={lobby_only}"))).await;
    let answer = client.publish("chat.admins", json!("let me in")).await;
    assert_eq!(answer["code"], "forbidden", "the route's publish group is outside the token's: {answer}");

    let lobby_member = token(json!({"sub": "bob", "exp": now() + 600, "groups": ["chat.lobby"]}));
    let mut outsider = Client::connect(&node.ws_url(&format!("/ws/chat/admins?token={lobby_member}"))).await;
    let refused = outsider.recv().await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")));
    outsider.assert_no_message().await; // still connected
    assert_eq!(node.publish("chat.admins", json!("secret")).await.0, 200);
    outsider.assert_no_message().await;
}

#[tokio::test]
async fn require_auth_namespaces_refuse_anonymous_clients() {
    let mut config = auth_config(AuthMode::Optional);
    config.namespaces.insert(
        "staff".into(),
        NamespaceConfig { client_publish: true, presence: true, require_auth: true, ..Default::default() },
    );
    let node = Node::ready(config).await;
    let mut anonymous = node.client().await;
    for request in [
        json!({"type": "subscribe", "group": "staff.room"}),
        json!({"type": "publish", "group": "staff.room", "data": 1}),
        json!({"type": "presence", "group": "staff.room"}),
    ] {
        let answer = anonymous.request(request.clone()).await;
        assert_eq!(answer["code"], "forbidden", "{request}: {answer}");
    }
    anonymous.subscribe("chat.open").await;

    let named = token(json!({"sub": "ann", "exp": now() + 600}));
    let mut member = Client::connect(&node.ws_url(&format!("/ws?token={named}"))).await;
    member.subscribe("staff.room").await;
    assert_eq!(member.publish("staff.room", json!("hi")).await["type"], "reply");
    assert_eq!(member.message().await.1, json!("hi"));
}

#[tokio::test]
async fn personal_namespaces_give_each_user_its_own_group_and_no_other() {
    let mut config = auth_config(AuthMode::Optional);
    config.namespaces.insert("inbox".into(), NamespaceConfig { personal: true, ..Default::default() });
    let node = Node::ready(config).await;
    // No claim is needed for one's own group, and none grants another user's.
    let ann = token(json!({"sub": "ann", "exp": now() + 600, "groups": ["inbox.*", "chat.*"]}));
    let mut client = Client::connect(&node.ws_url(&format!("/ws?token={ann}"))).await;
    client.subscribe("inbox.ann").await;
    let answer = client.request(json!({"type": "subscribe", "group": "inbox.bob"})).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    let answer = client.request(json!({"type": "subscribe", "group": "inbox.ann.extra"})).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    let bob = token(json!({"sub": "bob", "exp": now() + 600, "groups": ["chat.*"]}));
    let mut other = Client::connect(&node.ws_url(&format!("/ws?token={bob}"))).await;
    other.subscribe("inbox.bob").await;
    let mut anonymous = node.client().await;
    let answer = anonymous.request(json!({"type": "subscribe", "group": "inbox.ann"})).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");

    assert_eq!(node.publish("inbox.ann", json!("for ann")).await.0, 200);
    assert_eq!(node.publish("inbox.bob", json!("for bob")).await.0, 200);
    assert_eq!(client.message().await, ("inbox.ann".into(), json!("for ann")));
    assert_eq!(other.message().await, ("inbox.bob".into(), json!("for bob")));
    client.assert_no_message().await;
}

#[tokio::test]
async fn a_narrower_refresh_or_late_auth_leaves_the_groups_it_no_longer_allows() {
    let node = Node::ready(auth_config(AuthMode::Optional)).await;
    let wide = token(json!({"sub": "ann", "exp": now() + 600, "groups": ["chat.*"]}));
    let mut client = Client::connect(&node.ws_url(&format!("/ws?token={wide}"))).await;
    client.subscribe("chat.a").await;
    client.subscribe("chat.b").await;
    let narrow = token(json!({"sub": "ann", "exp": now() + 600, "groups": ["chat.a"]}));
    assert_eq!(client.request(json!({"type": "refresh", "token": narrow})).await["type"], "reply");
    assert_eq!(
        client.next_event().await,
        json!({"type": "unsubscribed", "group": "chat.b", "reason": "forbidden"})
    );
    node.publish("chat.b", json!("gone")).await;
    node.publish("chat.a", json!("kept")).await;
    assert_eq!(client.message().await, ("chat.a".into(), json!("kept")));

    let mut anonymous = node.client().await;
    anonymous.subscribe("chat.a").await;
    anonymous.subscribe("news").await;
    let news_only = token(json!({"sub": "bob", "exp": now() + 600, "groups": ["news"]}));
    assert_eq!(anonymous.request(json!({"type": "auth", "token": news_only})).await["type"], "reply");
    assert_eq!(anonymous.next_event().await["group"], "chat.a");
    node.publish("chat.a", json!("gone")).await;
    node.publish("news", json!("kept")).await;
    assert_eq!(anonymous.message().await, ("news".into(), json!("kept")));
}

#[tokio::test]
async fn far_future_expiry_works_and_not_before_is_checked() {
    let node = Node::ready(auth_config(AuthMode::Required)).await;
    let forever = token(json!({"sub": "ann", "exp": u64::MAX}));
    let mut client = Client::connect(&node.ws_url(&format!("/ws?token={forever}"))).await;
    client.subscribe("news").await;
    client.assert_no_message().await;

    let later = token(json!({"sub": "ann", "exp": now() + 600, "nbf": now() + 300}));
    let mut early = Client::open(&node.ws_url(&format!("/ws?token={later}")), &[]).await.unwrap();
    assert_eq!(early.close_code().await, 4001, "not valid before nbf");
}

#[tokio::test]
async fn binary_frames_count_against_the_rate_limit() {
    let mut config = auth_config(AuthMode::Off);
    config.rate_limit = 1;
    config.rate_limit_burst = 2;
    config.rate_limit_strikes = 3;
    let node = Node::ready(config).await;
    let mut flooder = node.client().await;
    for _ in 0..10 {
        flooder.ws_binary(b"\x00\x01").await;
    }
    let mut codes = Vec::new();
    while let Some(frame) = flooder.try_recv().await {
        codes.push(frame["code"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(flooder.last_close_code(), Some(4029), "{codes:?}");
    assert_eq!(codes[..2], ["bad_request", "bad_request"], "the burst, then the limit: {codes:?}");
    assert!(codes[2..].iter().all(|c| c == "rate_limited"), "{codes:?}");
}
