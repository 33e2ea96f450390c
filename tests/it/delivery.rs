//! Delivery across instances: every member everywhere, in publish order, one PUBLISH each.

use herald::config::NamespaceConfig;
use serde_json::json;

use crate::harness::{Client, Node, Redis, config, eventually};

/// A gateway config on `redis` whose `chat` namespace accepts client publishes.
fn chat_config(redis: &Redis, node: &str) -> herald::config::Config {
    let mut config = config(Some(redis), node);
    config
        .namespaces
        .insert("chat".into(), NamespaceConfig { client_publish: true, ..NamespaceConfig::default() });
    // The ordering test publishes a pipelined burst well above the default rate limit.
    config.rate_limit_burst = 1000;
    config
}

async fn three_nodes(redis: &Redis) -> [Node; 3] {
    [
        Node::ready(chat_config(redis, "gw-1")).await,
        Node::ready(chat_config(redis, "gw-2")).await,
        Node::ready(chat_config(redis, "gw-3")).await,
    ]
}

#[tokio::test]
async fn a_publish_reaches_every_member_on_every_instance() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        assert_eq!(client.welcome["node"], node.id.as_str());
        client.subscribe("chat.room").await;
        clients.push(client);
    }
    let mut outsider = nodes[1].client().await;
    outsider.subscribe("chat.elsewhere").await;

    let answer = clients[0].publish("chat.room", json!({"text": "hello"})).await;
    assert_eq!(answer["type"], "reply", "{answer}");
    assert_eq!(nodes[2].publish("chat.room", json!([1, 2])).await.0, 200);

    for client in &mut clients {
        assert_eq!(client.message().await, ("chat.room".into(), json!({"text": "hello"})));
        assert_eq!(client.message().await, ("chat.room".into(), json!([1, 2])));
    }
    outsider.assert_no_message().await;
}

#[tokio::test]
async fn messages_of_one_publisher_arrive_in_order_everywhere() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let mut members = Vec::new();
    for node in &nodes[1..] {
        for _ in 0..2 {
            let mut client = node.client().await;
            client.subscribe("chat.order").await;
            members.push(client);
        }
    }
    // Pipelined: the publisher does not wait for replies between messages.
    let mut publisher = nodes[0].client().await;
    const COUNT: u64 = 300;
    for seq in 0..COUNT {
        publisher.send_text(json!({"type": "publish", "group": "chat.order", "data": seq}).to_string()).await;
    }
    for member in &mut members {
        for seq in 0..COUNT {
            assert_eq!(member.message().await.1, json!(seq));
        }
    }
}

#[tokio::test]
async fn unsubscribing_stops_delivery_and_the_last_member_drops_the_redis_subscription() {
    let redis = Redis::start().await;
    let node = Node::ready(chat_config(&redis, "gw-1")).await;
    let channel = "herald:group:{chat.unsub}";
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.subscribe("chat.unsub").await;
    b.subscribe("chat.unsub").await;
    a.subscribe("chat.unsub").await; // idempotent
    assert_eq!(redis.shard_numsub(channel).await, 1, "one subscription per instance, not per member");

    a.unsubscribe("chat.unsub").await;
    a.unsubscribe("chat.unsub").await; // idempotent
    assert_eq!(redis.shard_numsub(channel).await, 1, "b is still a member");
    node.publish("chat.unsub", json!("after")).await;
    assert_eq!(b.message().await.1, json!("after"));
    a.assert_no_message().await;

    b.unsubscribe("chat.unsub").await;
    eventually("subscription dropped", || async { redis.shard_numsub(channel).await == 0 }).await;

    // A member that disconnects leaves too.
    let mut c = node.client().await;
    c.subscribe("chat.unsub").await;
    assert_eq!(redis.shard_numsub(channel).await, 1);
    c.close().await;
    eventually("subscription dropped on disconnect", || async { redis.shard_numsub(channel).await == 0 })
        .await;
}

#[tokio::test]
async fn requests_sent_before_the_welcome_are_answered_after_it_in_order() {
    let redis = Redis::start().await;
    let node = Node::ready(chat_config(&redis, "gw-1")).await;
    let mut client = Client::open(&node.ws_url("/ws"), &[]).await.unwrap();
    client.send_text(r#"{"type":"subscribe","group":"chat.early","id":1}"#).await;
    client.send_text(r#"{"type":"ping","id":2}"#).await;
    assert_eq!(client.recv().await["type"], "welcome");
    assert_eq!(client.recv().await, json!({"type": "reply", "id": 1}));
    assert_eq!(client.recv().await, json!({"type": "reply", "id": 2}));
    node.publish("chat.early", json!("hello")).await;
    assert_eq!(client.message().await, ("chat.early".to_string(), json!("hello")));
}

#[tokio::test]
async fn one_publish_per_message_whatever_the_member_and_instance_count() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let mut clients = Vec::new();
    for node in &nodes {
        for _ in 0..3 {
            let mut client = node.client().await;
            client.subscribe("chat.count").await;
            clients.push(client);
        }
    }
    let before = redis.command_calls("spublish").await;
    for i in 0..10 {
        assert_eq!(nodes[i % 3].publish("chat.count", json!(i)).await.0, 200);
    }
    for client in &mut clients {
        for i in 0..10 {
            assert_eq!(client.message().await.1, json!(i));
        }
    }
    assert_eq!(redis.command_calls("spublish").await - before, 10);
}

#[tokio::test]
async fn a_publish_is_one_redis_command_on_a_connection_reused_without_a_check() {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw-1")).await;
    let (publishes, pings) = (redis.command_calls("spublish").await, redis.command_calls("ping").await);
    for i in 0..20 {
        assert_eq!(node.publish("news", json!(i)).await.0, 200);
    }
    assert_eq!(redis.command_calls("spublish").await - publishes, 20);
    // A check of the connection that sat idle since start, and perhaps the subscriber's own
    // probe of its pub/sub connection; checking every reuse would have been 20.
    let checks = redis.command_calls("ping").await - pings;
    assert!(checks <= 2, "{checks} PINGs for 20 publishes");
}

#[tokio::test]
async fn standalone_delivers_on_the_in_memory_broker() {
    let mut config = crate::harness::config(None, "solo");
    config
        .namespaces
        .insert("chat".into(), NamespaceConfig { client_publish: true, ..NamespaceConfig::default() });
    let node = Node::ready(config).await;
    let mut a = node.client().await;
    let mut b = node.client().await;
    b.subscribe("chat.solo").await;
    assert_eq!(a.publish("chat.solo", json!({"n": 1})).await["type"], "reply");
    assert_eq!(b.message().await, ("chat.solo".into(), json!({"n": 1})));
    a.assert_no_message().await;
}
