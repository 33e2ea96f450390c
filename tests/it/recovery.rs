//! No silent gaps: members of history groups are caught up in place when the instance's Redis
//! subscription drops and comes back, route-joined members recover too, and recovery reads only
//! what is missing.

use std::time::Duration;

use herald::config::{NamespaceConfig, RouteConfig};
use serde_json::{Value, json};

use crate::harness::{Client, Node, Redis, config, http, metric};

pub(crate) fn feed() -> NamespaceConfig {
    NamespaceConfig { history_size: 1000, client_publish: true, ..NamespaceConfig::default() }
}

async fn feed_node(redis: &Redis, id: &str) -> Node {
    let mut config = config(Some(redis), id);
    // The tests' clients make hundreds of requests in a row.
    (config.rate_limit, config.rate_limit_burst) = (10_000, 10_000);
    config.namespaces.insert("feed".into(), feed());
    config.routes.push(RouteConfig {
        path: "/ws/feed/{room}".into(),
        subscribe: vec!["feed.{room}".into()],
        publish: None,
    });
    Node::ready(config).await
}

/// Publishes `count` messages `{"seq": n}` to `group` through `node`, a few milliseconds apart.
pub(crate) fn publish_steadily(node: &Node, group: &str, count: u64) -> tokio::task::JoinHandle<()> {
    let (addr, group) = (node.addr, group.to_string());
    tokio::spawn(async move {
        for seq in 0..count {
            let body = json!({"group": group, "data": {"seq": seq}}).to_string();
            // A publish may fail while Redis is away; retried until it is accepted.
            while http(addr, "POST", "/api/publish", &[], &body).await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    })
}

/// The `seq` of every message `client` receives until it has `count`, asserting offsets go up
/// by one with no `recovered` notice in between.
pub(crate) async fn read_all(client: &mut Client, count: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut last_offset = None;
    while (seqs.len() as u64) < count {
        let frame: Value = client.recv().await;
        assert_eq!(frame["type"], "message", "nothing but messages: {frame}");
        let offset = frame["offset"].as_u64().unwrap();
        if let Some(last) = last_offset {
            assert_eq!(offset, last + 1, "offsets go up by one");
        }
        last_offset = Some(offset);
        seqs.push(frame["data"]["seq"].as_u64().unwrap());
    }
    seqs
}

#[tokio::test]
async fn members_are_caught_up_in_place_when_the_redis_subscription_drops() {
    let redis = Redis::start().await;
    let (a, b) = (feed_node(&redis, "gw-a").await, feed_node(&redis, "gw-b").await);
    let mut member = a.client().await;
    member.subscribe("feed.live").await;
    const COUNT: u64 = 400;
    let publisher = publish_steadily(&b, "feed.live", COUNT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let killed: i64 = redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        assert!(killed >= 1, "the gateways' pub/sub connections were killed");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let seqs = read_all(&mut member, COUNT).await;
    assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "every message once, in order, no reconnect");
    publisher.await.unwrap();
    member.assert_no_message().await;
    let metrics = a.metrics().await;
    assert!(metric(&metrics, r#"herald_catch_ups_total{outcome="recovered"}"#) >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_route_joined_member_recovers_from_since_on_the_url_or_a_subscribe() {
    let redis = Redis::start().await;
    let node = feed_node(&redis, "gw-1").await;
    let mut publisher = node.client().await;
    for n in 1..=10 {
        assert_eq!(publisher.publish("feed.r", json!(n)).await["type"], "reply");
    }
    let epoch = node.get("/api/history?group=feed.r&limit=1").await.1["epoch"].as_str().unwrap().to_string();

    let mut on_url = Client::connect(&node.ws_url(&format!("/ws/feed/r?since=feed.r:7:{epoch}"))).await;
    let told = on_url.recv().await;
    assert_eq!(
        told,
        json!({"type": "recovered", "group": "feed.r", "recovered": true, "offset": 10, "epoch": epoch})
    );
    for n in 8..=10 {
        assert_eq!(on_url.message().await.1, json!(n));
    }

    // A client that asks with `subscribe … since` right after connecting to the route.
    let mut asking = Client::connect(&node.ws_url("/ws/feed/r")).await;
    let joined = json!({"type": "subscribed", "group": "feed.r", "offset": 10, "epoch": epoch});
    assert_eq!(asking.recv().await, joined, "a route join says where the group stands");
    let since = json!({"offset": 8, "epoch": epoch});
    let answer = asking.request(json!({"type": "subscribe", "group": "feed.r", "since": since})).await;
    assert_eq!(answer["result"], json!({"recovered": true, "offset": 10, "epoch": epoch}), "{answer}");
    for n in 9..=10 {
        assert_eq!(asking.message().await.1, json!(n));
    }
    publisher.publish("feed.r", json!(11)).await;
    for client in [&mut on_url, &mut asking] {
        assert_eq!(client.message().await.1, json!(11), "then live, once");
        client.assert_no_message().await;
    }

    // Once newer messages were sent to it, older ones cannot be put in order: it is told.
    let answer = asking
        .request(json!({"type": "subscribe", "group": "feed.r", "since": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(answer["result"]["recovered"], false, "{answer}");
    let stale = Client::connect(&node.ws_url("/ws/feed/r?since=feed.r:3:not-the-epoch")).await;
    let mut stale = stale;
    assert_eq!(stale.recv().await["recovered"], false);
}

#[tokio::test]
async fn recovery_reads_only_what_is_missing_and_new_names_create_nothing_in_redis() {
    let redis = Redis::start().await;
    let node = feed_node(&redis, "gw-1").await;
    let mut publisher = node.client().await;
    for n in 1..=300 {
        publisher.publish("feed.big", json!(n)).await;
    }
    let epoch =
        node.get("/api/history?group=feed.big&limit=1").await.1["epoch"].as_str().unwrap().to_string();
    let mut client = node.client().await;

    // Recovery with a wrong epoch reads the group's state (one XRANGE for its oldest entry) and
    // no message.
    let before = redis.command_calls("xrange").await;
    for _ in 0..50 {
        let since = json!({"offset": 299, "epoch": "0123456789abcdef"});
        let answer = client.request(json!({"type": "subscribe", "group": "feed.big", "since": since})).await;
        assert_eq!(answer["result"]["recovered"], false);
        client.unsubscribe("feed.big").await;
    }
    assert_eq!(redis.command_calls("xrange").await - before, 50);
    client.assert_no_message().await;

    // Three missing messages: three sent, nothing else.
    let since = json!({"offset": 297, "epoch": epoch});
    let answer = client.request(json!({"type": "subscribe", "group": "feed.big", "since": since})).await;
    assert_eq!(answer["result"]["recovered"], true);
    for n in 298..=300 {
        assert_eq!(client.message().await.1, json!(n));
    }
    client.assert_no_message().await;

    // Subscribing to hundreds of new names leaves no key behind.
    let keys: i64 = redis.query(&["DBSIZE"]).await;
    for n in 0..300 {
        let group = format!("feed.new-{n}");
        let answer = client.request(json!({"type": "subscribe", "group": group})).await;
        assert_eq!(answer["result"]["offset"], 0);
        client.unsubscribe(&group).await;
    }
    assert_eq!(redis.query::<i64>(&["DBSIZE"]).await, keys);
}

#[tokio::test]
async fn a_client_of_a_quiet_group_recovers_its_first_messages() {
    let redis = Redis::start().await;
    let node = feed_node(&redis, "gw-1").await;
    redis.settled().await;
    let mut client = node.client().await;
    let waiting = client.request(json!({"type": "subscribe", "group": "feed.quiet"})).await["result"].clone();
    assert_eq!(waiting["offset"], 0);
    client.close().await;
    for n in 1..=3 {
        node.publish("feed.quiet", json!(n)).await;
    }
    let mut back = node.client().await;
    let answer = back.request(json!({"type": "subscribe", "group": "feed.quiet", "since": waiting})).await;
    assert_eq!(answer["result"]["recovered"], true, "the history began after it left: {answer}");
    for n in 1..=3 {
        assert_eq!(back.message().await.1, json!(n));
    }

    // Redis lost its data since: the same kind of position is not trusted.
    let mut redis = redis;
    let mut quiet = node.client().await;
    let waiting = quiet.request(json!({"type": "subscribe", "group": "feed.other"})).await["result"].clone();
    redis.restart().await;
    crate::harness::eventually("ready again", || async { node.get("/readyz").await.0 == 200 }).await;
    let told = quiet.recv().await;
    assert_eq!(
        (told["type"].as_str(), told["recovered"].as_bool()),
        (Some("recovered"), Some(false)),
        "{told}"
    );
    let mut late = node.client().await;
    let answer = late.request(json!({"type": "subscribe", "group": "feed.other", "since": waiting})).await;
    assert_eq!(answer["result"]["recovered"], false, "{answer}");
}
