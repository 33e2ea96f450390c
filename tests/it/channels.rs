//! The Channels bridge against the real Python packages: `group_send` from channels_redis (core
//! and pubsub layers, with and without encryption) reaches Herald clients on two gateways exactly
//! once and in order; Herald publishes reach a channels_redis `receive()`; a scheduler takeover
//! in the middle of a stream loses nothing; bad bytes are counted and skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use herald::config::{ChannelsConfig, ChannelsLayer, Config, NamespaceConfig};
use herald::metrics::ChannelsEvent;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{Client, InProcessScheduler, Node, Process, Redis, config, eventually, python};

pub(crate) const GROUP: &str = "chat.lobby";

fn bridged_config(redis: &Redis, node: &str, layer: ChannelsLayer, keys: &[&str]) -> Config {
    let mut config = config(Some(redis), node);
    config.namespaces.insert(
        "chat".into(),
        NamespaceConfig { history_size: 1000, client_publish: true, ..NamespaceConfig::default() },
    );
    config.scheduler.lease_ttl = Duration::from_secs(1);
    config.channels = Some(ChannelsConfig {
        layer,
        groups: vec!["chat.*".into()],
        symmetric_encryption_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..ChannelsConfig::default()
    });
    config
}

fn layer_name(layer: ChannelsLayer) -> &'static str {
    match layer {
        ChannelsLayer::Core => "core",
        ChannelsLayer::Pubsub => "pubsub",
    }
}

/// `tests/channels/layer.py <command> <layer> <url> asgi chat.lobby <count> ...`.
pub(crate) fn layer_py(
    command: &str,
    layer: ChannelsLayer,
    redis: &Redis,
    count: u64,
    extra: &[&str],
) -> Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/channels/layer.py");
    Command::new(python())
        .arg(script)
        .args([command, layer_name(layer), &redis.url(), "asgi", GROUP, &count.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs")
}

fn keys_arg(keys: &[&str]) -> Vec<String> {
    match keys {
        [] => vec![],
        keys => vec!["--keys".into(), keys.join(",")],
    }
}

/// Waits until the bridge takes the group's events: a member of the Channels group (core) or
/// subscribed to its channel (pubsub).
pub(crate) async fn bridge_joined(redis: &Redis, layer: ChannelsLayer) {
    eventually("the bridge joins the Channels group", || async {
        match layer {
            ChannelsLayer::Core => {
                let members: Vec<String> = redis.query(&["ZRANGE", "asgi:group:chat.lobby", "0", "-1"]).await;
                members.iter().any(|m| m == "herald.herald!chat.lobby")
            }
            ChannelsLayer::Pubsub => redis.numsub("asgi__group__chat.lobby").await >= 1,
        }
    })
    .await;
}

/// The `seq` of the next `count` messages of `client`, each checked to be the event as sent.
pub(crate) async fn seqs(client: &mut Client, count: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        let (group, data) = client.message().await;
        assert_eq!(group, GROUP);
        assert_eq!(data["type"], "chat.message", "the event's own type stays: {data}");
        assert_eq!(data["blob"], "AP8=", "bytes become base64: {data}");
        seqs.push(data["seq"].as_u64().unwrap());
    }
    seqs
}

async fn group_send_reaches_two_gateways_exactly_once_in_order(layer: ChannelsLayer, keys: &[&str]) {
    let redis = Redis::start().await;
    let config = bridged_config(&redis, "gw-1", layer, keys);
    let nodes = [
        Node::ready(config.clone()).await,
        Node::ready(Config { node_id: "gw-2".into(), ..config.clone() }).await,
    ];
    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = node.client().await;
        client.subscribe(GROUP).await;
        clients.push(client);
    }
    bridge_joined(&redis, layer).await;
    const COUNT: u64 = 300;
    let mut sender = layer_py(
        "send",
        layer,
        &redis,
        COUNT,
        &keys_arg(keys).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(sender.wait().await.unwrap().success());
    for client in &mut clients {
        assert_eq!(seqs(client, COUNT).await, (0..COUNT).collect::<Vec<_>>());
        client.assert_no_message().await;
    }
    let bridged = ChannelsEvent { layer: layer_name(layer), outcome: "bridged" };
    assert_eq!(scheduler.scheduler.metrics().channels_events.get_or_create(&bridged).get(), COUNT);
    scheduler.stop().await;
}

#[tokio::test]
async fn core_layer_group_send_reaches_herald_clients() {
    group_send_reaches_two_gateways_exactly_once_in_order(ChannelsLayer::Core, &[]).await;
}

#[tokio::test]
async fn encrypted_core_layer_group_send_reaches_herald_clients() {
    group_send_reaches_two_gateways_exactly_once_in_order(ChannelsLayer::Core, &["old-key", "new-key"]).await;
}

#[tokio::test]
async fn pubsub_layer_group_send_reaches_herald_clients() {
    group_send_reaches_two_gateways_exactly_once_in_order(ChannelsLayer::Pubsub, &[]).await;
}

#[tokio::test]
async fn encrypted_pubsub_layer_group_send_reaches_herald_clients() {
    group_send_reaches_two_gateways_exactly_once_in_order(ChannelsLayer::Pubsub, &["a-key"]).await;
}

/// Herald publishes to a bridged group reach a channels_redis `receive()`, and nothing loops.
async fn egress(layer: ChannelsLayer) {
    let redis = Redis::start().await;
    let mut config = bridged_config(&redis, "gw-1", layer, &["k"]);
    config.channels.as_mut().unwrap().egress = true;
    let node = Node::ready(config.clone()).await;
    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    let mut member = node.client().await;
    member.subscribe(GROUP).await;
    bridge_joined(&redis, layer).await;
    let mut receiver = layer_py("receive", layer, &redis, 2, &["--keys", "k"]);
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(ready["ready"].is_string(), "{ready}");
    if layer == ChannelsLayer::Pubsub {
        // The receiver's subscription must be in place before the publish.
        eventually("the receiver subscribed", || async {
            redis.numsub("asgi__group__chat.lobby").await >= 2
        })
        .await;
    }
    assert_eq!(member.publish(GROUP, json!({"text": "from a client"})).await["type"], "reply");
    assert_eq!(node.publish(GROUP, json!({"text": "from the API"})).await.0, 200);
    let mut events = Vec::new();
    for _ in 0..2 {
        let line =
            tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await.unwrap().unwrap().unwrap();
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let client = member.welcome["client"].clone();
    assert_eq!(
        events,
        [
            json!({"type": "herald.message", "group": GROUP, "data": {"text": "from a client"}, "client": client, "user": null}),
            json!({"type": "herald.message", "group": GROUP, "data": {"text": "from the API"}, "client": null, "user": null}),
        ]
    );
    // Each Herald member got each message once: the egress did not come back through the bridge.
    assert_eq!(member.message().await.1, json!({"text": "from a client"}));
    assert_eq!(member.message().await.1, json!({"text": "from the API"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    member.assert_no_message().await;
    scheduler.stop().await;
}

#[tokio::test]
async fn core_layer_egress_reaches_a_channels_consumer() {
    egress(ChannelsLayer::Core).await;
}

#[tokio::test]
async fn pubsub_layer_egress_reaches_a_channels_consumer() {
    egress(ChannelsLayer::Pubsub).await;
}

#[tokio::test]
async fn a_scheduler_takeover_in_the_middle_of_a_stream_loses_nothing() {
    let redis = Redis::start().await;
    let toml = |node: &str| {
        format!(
            "redis_url = \"{}\"\nnode_id = \"{node}\"\nlisten = \"127.0.0.1:0\"\n[scheduler]\nlease_ttl = \"1s\"\n\
             [namespaces.chat]\nhistory_size = 1000\n[channels]\nlayer = \"core\"\ngroups = [\"chat.*\"]\n",
            redis.url()
        )
    };
    let mut schedulers =
        [Process::spawn(&["scheduler"], &toml("sched-a")), Process::spawn(&["scheduler"], &toml("sched-b"))];
    let node = Node::ready(bridged_config(&redis, "gw-1", ChannelsLayer::Core, &[])).await;
    let mut member = node.client().await;
    member.subscribe(GROUP).await;
    bridge_joined(&redis, ChannelsLayer::Core).await;
    // 50 events a second: the queue holds what arrives during the takeover (channels_redis'
    // capacity is 100).
    const COUNT: u64 = 300;
    let mut sender = layer_py("send", ChannelsLayer::Core, &redis, COUNT, &["--rate", "50"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader: String = redis.query(&["GET", "herald:scheduler:leader"]).await;
    let index = if leader.starts_with("sched-a") { 0 } else { 1 };
    schedulers[index].kill();
    assert!(sender.wait().await.unwrap().success());
    assert_eq!(seqs(&mut member, COUNT).await, (0..COUNT).collect::<Vec<_>>(), "every event once, in order");
    member.assert_no_message().await;
    let survivor: String = redis.query(&["GET", "herald:scheduler:leader"]).await;
    assert_ne!(survivor, leader, "the standby took over");
}

#[tokio::test]
async fn bytes_that_are_not_an_event_are_counted_and_skipped() {
    let redis = Redis::start().await;
    let config = bridged_config(&redis, "gw-1", ChannelsLayer::Core, &[]);
    let node = Node::ready(config.clone()).await;
    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    let mut member = node.client().await;
    member.subscribe(GROUP).await;
    bridge_joined(&redis, ChannelsLayer::Core).await;
    for garbage in ["short", "twelve bytes\u{1}not msgpack at all", "twelve bytes\u{93}\u{1}\u{2}\u{3}"] {
        let _: i64 = redis.query(&["ZADD", "asgiherald.herald!", "0", garbage]).await;
    }
    let mut sender = layer_py("send", ChannelsLayer::Core, &redis, 1, &[]);
    assert!(sender.wait().await.unwrap().success());
    assert_eq!(seqs(&mut member, 1).await, [0], "the bridge kept going");
    let bad = ChannelsEvent { layer: "core", outcome: "bad_input" };
    eventually("counted", || async {
        scheduler.scheduler.metrics().channels_events.get_or_create(&bad).get() == 3
    })
    .await;
    scheduler.stop().await;
}

#[tokio::test]
async fn events_a_dead_leader_left_in_flight_are_published_once() {
    use sha2::{Digest, Sha256};
    let redis = Redis::start().await;
    let config = bridged_config(&redis, "gw-1", ChannelsLayer::Core, &[]);
    let node = Node::ready(config.clone()).await;
    let mut member = node.client().await;
    member.subscribe(GROUP).await;
    // A leader had joined the group, taken three events into flight, published the first, and
    // died.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let _: i64 = redis.query(&["ZADD", "asgi:group:chat.lobby", &now, "herald.herald!chat.lobby"]).await;
    let mut sender = layer_py("send", ChannelsLayer::Core, &redis, 3, &[]);
    assert!(sender.wait().await.unwrap().success());
    let queued: Vec<(Vec<u8>, f64)> =
        redis.query_bytes(&[b"ZRANGE", b"asgiherald.herald!", b"0", b"-1", b"WITHSCORES"]).await;
    assert_eq!(queued.len(), 3);
    for (event, score) in &queued {
        let _: i64 = redis
            .query_bytes(&[
                b"ZADD",
                b"asgiherald.herald!$herald-in-flight",
                score.to_string().as_bytes(),
                event,
            ])
            .await;
    }
    let _: i64 = redis.query(&["DEL", "asgiherald.herald!"]).await;
    let id: String = Sha256::digest(&queued[0].0)[..16].iter().map(|b| format!("{b:02x}")).collect();
    let _: String =
        redis.query(&["SET", &format!("herald:once:{{chat.lobby}}:{id}"), "1", "PX", "60000"]).await;

    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    assert_eq!(seqs(&mut member, 2).await, [1, 2], "the first was published already");
    member.assert_no_message().await;
    // The batch leaves the in-flight set once all of it is published, maybe just after the
    // member has the last one.
    eventually("in-flight set emptied", || async {
        redis.query::<i64>(&["ZCARD", "asgiherald.herald!$herald-in-flight"]).await == 0
    })
    .await;
    scheduler.stop().await;
}

#[tokio::test]
async fn the_bridge_leaves_a_group_without_subscribers_and_standalone_bridges_too() {
    let redis = Redis::start().await;
    let port = crate::harness::free_port();
    let toml = format!(
        "[channels]\nlayer = \"core\"\nhosts = [\"{}\"]\ngroups = [\"chat.*\"]\n[namespaces.chat]\nhistory_size = 10\n",
        redis.url()
    );
    // Standalone: the in-memory broker, the bridge in the in-process scheduler.
    let standalone = Process::spawn(&["standalone", "--listen", &format!("127.0.0.1:{port}")], &toml);
    let url = format!("ws://127.0.0.1:{port}/ws");
    standalone.listening(([127, 0, 0, 1], port).into()).await;
    let mut member = Client::connect(&url).await;
    member.subscribe(GROUP).await;
    bridge_joined(&redis, ChannelsLayer::Core).await;
    let mut sender = layer_py("send", ChannelsLayer::Core, &redis, 5, &[]);
    assert!(sender.wait().await.unwrap().success());
    assert_eq!(seqs(&mut member, 5).await, [0, 1, 2, 3, 4]);
    member.unsubscribe(GROUP).await;
    eventually("the bridge left the Channels group", || async {
        redis.query::<Vec<String>>(&["ZRANGE", "asgi:group:chat.lobby", "0", "-1"]).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn pubsub_bytes_that_are_not_an_event_are_counted_and_skipped() {
    let redis = Redis::start().await;
    let config = bridged_config(&redis, "gw-1", ChannelsLayer::Pubsub, &[]);
    let node = Node::ready(config.clone()).await;
    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    let mut member = node.client().await;
    member.subscribe(GROUP).await;
    bridge_joined(&redis, ChannelsLayer::Pubsub).await;
    let _: i64 = redis.query(&["PUBLISH", "asgi__group__chat.lobby", "not msgpack \u{c1}"]).await;
    let mut sender = layer_py("send", ChannelsLayer::Pubsub, &redis, 1, &[]);
    assert!(sender.wait().await.unwrap().success());
    assert_eq!(seqs(&mut member, 1).await, [0], "the bridge kept going");
    let bad = ChannelsEvent { layer: "pubsub", outcome: "bad_input" };
    assert_eq!(scheduler.scheduler.metrics().channels_events.get_or_create(&bad).get(), 1);
    scheduler.stop().await;
}
