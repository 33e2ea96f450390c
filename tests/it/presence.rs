//! Presence across instances, ghost expiry after a crash, join/leave events.

use herald::config::NamespaceConfig;
use serde_json::{Value, json};

use crate::harness::{Client, GatewayProcess, Node, Redis, config, eventually};

fn presence_namespace() -> NamespaceConfig {
    NamespaceConfig { presence: true, join_leave: true, ..NamespaceConfig::default() }
}

/// The `(client, node)` pairs a presence request returns, sorted.
async fn who(client: &mut Client, group: &str) -> Vec<(String, String)> {
    let answer = client.request(json!({"type": "presence", "group": group})).await;
    assert_eq!(answer["type"], "reply", "{answer}");
    let mut pairs: Vec<(String, String)> = answer["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["client"].as_str().unwrap().to_string(), c["node"].as_str().unwrap().to_string()))
        .collect();
    pairs.sort();
    pairs
}

fn id(client: &Client) -> String {
    client.welcome["client"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn presence_spans_instances_and_a_killed_instance_leaves_no_ghosts() {
    let redis = Redis::start().await;
    let toml = format!(
        "redis_url = \"{}\"\nnode_id = \"doomed\"\nauth = \"off\"\npresence_ttl = \"2s\"\n[namespaces.room]\npresence = true\n",
        redis.url()
    );
    let mut doomed = GatewayProcess::start(&toml).await;
    let mut config = config(Some(&redis), "survivor");
    config.presence_ttl = std::time::Duration::from_secs(2);
    config.namespaces.insert("room".into(), presence_namespace());
    let survivor = Node::ready(config).await;

    let mut a = doomed.client().await;
    let mut b = survivor.client().await;
    a.subscribe("room.1").await;
    b.subscribe("room.1").await;
    let expected = {
        let mut both = vec![(id(&a), "doomed".to_string()), (id(&b), "survivor".to_string())];
        both.sort();
        both
    };
    assert_eq!(who(&mut b, "room.1").await, expected);
    let (status, body) = survivor.get("/api/presence?group=room.1").await;
    assert_eq!((status, body["clients"].as_array().map(Vec::len)), (200, Some(2)));

    doomed.process.kill();
    eventually("the dead instance's entry expires", || async {
        survivor.get("/api/presence?group=room.1").await.1["clients"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    assert_eq!(who(&mut b, "room.1").await, vec![(id(&b), "survivor".to_string())]);

    b.unsubscribe("room.1").await;
    let (_, body) = survivor.get("/api/presence?group=room.1").await;
    assert_eq!(body["clients"], json!([]));
}

#[tokio::test]
async fn members_on_other_instances_see_join_and_leave() {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for node in ["gw-1", "gw-2"] {
        let mut config = config(Some(&redis), node);
        config.namespaces.insert("room".into(), presence_namespace());
        nodes.push(Node::ready(config).await);
    }
    let mut watcher = nodes[0].client().await;
    watcher.subscribe("room.2").await;
    assert_eq!(watcher.recv().await["type"], "join", "its own join");

    let mut visitor = nodes[1].client().await;
    visitor.subscribe("room.2").await;
    let join: Value = watcher.recv().await;
    assert_eq!(
        join,
        json!({"type": "join", "group": "room.2", "client": {"client": id(&visitor), "user": null, "node": "gw-2"}})
    );

    let visitor_id = id(&visitor);
    visitor.close().await;
    let leave: Value = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["client"]["client"].as_str()),
        (Some("leave"), Some(visitor_id.as_str()))
    );
}

#[tokio::test]
async fn presence_is_refused_where_the_namespace_has_it_off() {
    let node = Node::ready(config(None, "solo")).await;
    let mut client = node.client().await;
    let answer = client.request(json!({"type": "presence", "group": "plain.g"})).await;
    assert_eq!(answer["code"], "forbidden");
    assert_eq!(node.get("/api/presence?group=plain.g").await.0, 400);
}

#[tokio::test]
async fn a_member_whose_subscribe_fails_is_never_announced_as_leaving() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("room".into(), NamespaceConfig { history_size: 10, ..presence_namespace() });
    let node = Node::ready(config).await;
    let mut watcher = node.client().await;
    watcher.subscribe("room.a").await;
    let _ = watcher.recv().await; // its own join
    // A key of the wrong type where the group's history lives: reading it fails.
    let _: String = redis.query(&["SET", "herald:history:{room.a}:meta", "oops"]).await;
    let mut failing = node.client().await;
    let answer = failing.request(json!({"type": "subscribe", "group": "room.a"})).await;
    assert_eq!(answer["code"], "unavailable", "{answer}");
    watcher.assert_no_message().await;
}

#[tokio::test]
async fn the_heartbeat_keeps_hundreds_of_groups_present() {
    let redis = Redis::start().await;
    let mut config = config(Some(&redis), "gw-1");
    config.namespaces.insert("room".into(), presence_namespace());
    config.presence_ttl = std::time::Duration::from_secs(1);
    (config.rate_limit, config.rate_limit_burst) = (10_000, 10_000);
    config.max_groups_per_client = 300;
    let node = Node::ready(config).await;
    let mut member = node.client().await;
    for n in 0..300 {
        member.subscribe(&format!("room.{n}")).await;
    }
    // Several TTLs later every entry is still there: each round refreshed all 300 groups.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for n in [0, 150, 299] {
        let (status, body) = node.get(&format!("/api/presence?group=room.{n}")).await;
        assert_eq!((status, body["clients"].as_array().map(Vec::len)), (200, Some(1)), "room.{n}: {body}");
    }
}
