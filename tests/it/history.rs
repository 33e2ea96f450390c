//! History and recovery: offsets, epochs, and clients that come back on another instance.

use std::time::Duration;

use herald::config::NamespaceConfig;
use serde_json::{Value, json};

use crate::harness::{Client, GatewayProcess, Node, Redis, config, eventually, http};

fn history_namespace(size: usize) -> NamespaceConfig {
    NamespaceConfig { history_size: size, client_publish: true, ..NamespaceConfig::default() }
}

fn gateway_toml(redis: &Redis, node: &str) -> String {
    format!(
        "redis_url = \"{}\"\nnode_id = \"{node}\"\nauth = \"off\"\n[namespaces.feed]\nhistory_size = 5000\nhistory_ttl = \"10m\"\n",
        redis.url()
    )
}

/// `(offset, epoch, seq)` of a message frame.
fn position(frame: &Value) -> (u64, String, u64) {
    assert_eq!(frame["type"], "message", "{frame}");
    let epoch = frame["epoch"].as_str().unwrap().to_string();
    (frame["offset"].as_u64().unwrap(), epoch, frame["data"]["seq"].as_u64().unwrap())
}

/// Reads message frames until the connection ends.
async fn read_until_closed(client: &mut Client, seen: &mut Vec<(u64, String, u64)>) {
    while let Some(frame) = client.try_recv().await {
        if frame["type"] == "message" {
            seen.push(position(&frame));
        }
    }
}

/// Three gateway processes, a publisher at about 200 messages/s through gateway 3, a client on
/// gateway 1. Gateway 1 is SIGKILLed; after `away` the client comes back on gateway 2 with
/// `since` and must end up with every message exactly once, in order.
async fn kill_and_recover(away: Duration) {
    let redis = Redis::start().await;
    let mut gateways = Vec::new();
    for node in ["gw-1", "gw-2", "gw-3"] {
        gateways.push(GatewayProcess::start(&gateway_toml(&redis, node)).await);
    }
    let mut client = gateways[0].client().await;
    let answer = client.request(json!({"type": "subscribe", "group": "feed.live"})).await;
    assert_eq!(answer["result"]["offset"], 0, "nothing published yet: {answer}");

    const COUNT: u64 = 600;
    let publish_to = gateways[2].addr;
    let publisher = tokio::spawn(async move {
        for seq in 0..COUNT {
            let body = json!({"group": "feed.live", "data": {"seq": seq}}).to_string();
            assert_eq!(http(publish_to, "POST", "/api/publish", &[], &body).await.0, 200);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut seen = Vec::new();
    while seen.len() < 150 {
        seen.push(position(&client.recv().await));
    }
    gateways[0].process.kill();
    read_until_closed(&mut client, &mut seen).await;
    tokio::time::sleep(away).await;

    // The history started with the first publish: its epoch is the messages' one.
    let (last, epoch, _) = seen.last().unwrap().clone();
    let mut client = gateways[1].client().await;
    let since = json!({"offset": last, "epoch": epoch});
    let answer = client.request(json!({"type": "subscribe", "group": "feed.live", "since": since})).await;
    assert_eq!(answer["result"]["recovered"], true, "{answer}");
    assert_eq!(answer["result"]["epoch"], epoch.as_str());
    publisher.await.unwrap();
    while seen.len() < COUNT as usize {
        seen.push(position(&client.recv().await));
    }
    client.assert_no_message().await;
    let seqs: Vec<u64> = seen.iter().map(|(_, _, seq)| *seq).collect();
    assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "every message once, in order");
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "offsets increase by one");
}

#[tokio::test]
async fn a_client_of_a_killed_gateway_recovers_every_message_on_another() {
    kill_and_recover(Duration::ZERO).await;
}

#[tokio::test]
async fn a_client_away_for_five_seconds_recovers_every_message() {
    kill_and_recover(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn recovery_is_refused_when_the_epoch_changed_or_offsets_were_trimmed() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("feed".into(), history_namespace(3));
    let node = Node::ready(config).await;
    let mut publisher = node.client().await;
    for n in 1..=10 {
        assert_eq!(publisher.publish("feed.trim", json!(n)).await["type"], "reply");
    }
    let mut client = node.client().await;
    let position = client.request(json!({"type": "subscribe", "group": "feed.trim"})).await["result"].clone();
    assert_eq!(position["offset"], 10);
    let epoch = position["epoch"].as_str().unwrap().to_string();
    client.unsubscribe("feed.trim").await;

    let resubscribe = |offset: u64, epoch: &str| json!({"type": "subscribe", "group": "feed.trim", "since": {"offset": offset, "epoch": epoch}});
    let answer = client.request(resubscribe(7, &epoch)).await;
    assert_eq!(answer["result"], json!({"recovered": true, "offset": 10, "epoch": epoch}));
    for n in 8..=10 {
        assert_eq!(client.message().await.1, json!(n));
    }
    client.unsubscribe("feed.trim").await;
    let answer = client.request(resubscribe(10, &epoch)).await;
    assert_eq!(answer["result"]["recovered"], true, "nothing missed");
    client.assert_no_message().await;
    client.unsubscribe("feed.trim").await;

    let answer = client.request(resubscribe(5, &epoch)).await;
    assert_eq!(answer["result"]["recovered"], false, "6 and 7 were trimmed: {answer}");
    client.unsubscribe("feed.trim").await;
    let answer = client.request(resubscribe(9, "another-epoch")).await;
    assert_eq!(answer["result"]["recovered"], false, "{answer}");
    client.assert_no_message().await;

    let answer = client
        .request(json!({"type": "subscribe", "group": "chat.x", "since": {"offset": 1, "epoch": "e"}}))
        .await;
    assert_eq!(answer["code"], "bad_request", "no history in that namespace: {answer}");
}

#[tokio::test]
async fn after_redis_restarts_without_data_recovery_fails_with_a_new_epoch_and_delivery_resumes() {
    let mut redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("feed".into(), history_namespace(100));
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    member.subscribe("feed.r").await;
    node.publish("feed.r", json!("one")).await;
    let one = member.recv().await;
    assert_eq!(one["offset"], 1);
    let old_epoch = one["epoch"].as_str().unwrap().to_string();

    redis.restart().await;
    eventually("ready again", || async { node.get("/readyz").await.0 == 200 }).await;
    let mut late = node.client().await;
    let since = json!({"offset": 1, "epoch": old_epoch});
    let answer = late.request(json!({"type": "subscribe", "group": "feed.r", "since": since})).await;
    assert_eq!(answer["result"]["recovered"], false, "{answer}");
    assert_eq!(answer["result"]["offset"], 0, "no history since the restart: {answer}");
    // The member that stayed connected is told in place that its history is gone.
    let told = member.recv().await;
    assert_eq!(
        (told["type"].as_str(), told["recovered"].as_bool()),
        (Some("recovered"), Some(false)),
        "{told}"
    );
    assert_eq!(told["offset"], 0);

    eventually("publish accepted", || async { node.publish("feed.r", json!("two")).await.0 == 200 }).await;
    let mut epochs = Vec::new();
    for client in [&mut member, &mut late] {
        let frame: Value = client.recv().await;
        assert_eq!(frame["data"], json!("two"));
        assert_eq!(frame["offset"], 1, "offsets restart in the new epoch");
        epochs.push(frame["epoch"].as_str().unwrap().to_string());
    }
    assert_eq!(epochs[0], epochs[1]);
    assert_ne!(epochs[0], old_epoch);
}

#[tokio::test]
async fn concurrent_publishers_on_several_instances_get_unique_gapless_offsets() {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for id in ["gw-1", "gw-2", "gw-3"] {
        let mut config = config(Some(&redis), id);
        config.namespaces.insert("feed".into(), history_namespace(1000));
        nodes.push(Node::ready(config).await);
    }
    let mut member = nodes[0].client().await;
    member.subscribe("feed.many").await;
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for p in 0..2 {
            let addr = node.addr;
            publishers.push(tokio::spawn(async move {
                for n in 0..50 {
                    let body = json!({"group": "feed.many", "data": [i, p, n]}).to_string();
                    assert_eq!(http(addr, "POST", "/api/publish", &[], &body).await.0, 200);
                }
            }));
        }
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let received: Vec<u64> = {
        let mut offsets = Vec::new();
        for _ in 0..300 {
            offsets.push(member.recv().await["offset"].as_u64().unwrap());
        }
        offsets
    };
    assert_eq!(received, (1..=300).collect::<Vec<_>>(), "gapless, unique, in order");
    let (status, history) = nodes[1].get("/api/history?group=feed.many&since=290").await;
    assert_eq!(status, 200);
    let offsets: Vec<u64> =
        history["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (291..=300).collect::<Vec<_>>());
    assert_eq!(history["offset"], 300);
}

#[tokio::test]
async fn standalone_history_behaves_the_same() {
    let mut config = config(None, "solo");
    config.namespaces.insert("feed".into(), history_namespace(3));
    let node = Node::ready(config).await;
    let mut publisher = node.client().await;
    for n in 1..=5 {
        publisher.publish("feed.s", json!(n)).await;
    }
    let mut client = node.client().await;
    let epoch =
        client.request(json!({"type": "subscribe", "group": "feed.s"})).await["result"]["epoch"].clone();
    client.unsubscribe("feed.s").await;
    let answer = client
        .request(json!({"type": "subscribe", "group": "feed.s", "since": {"offset": 3, "epoch": epoch}}))
        .await;
    assert_eq!(answer["result"]["recovered"], true);
    assert_eq!(client.recv().await["offset"], 4);
    assert_eq!(client.recv().await["offset"], 5);
    client.unsubscribe("feed.s").await;
    let answer = client
        .request(json!({"type": "subscribe", "group": "feed.s", "since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(answer["result"]["recovered"], false, "2 was trimmed");
}
