//! Herald on a real Redis Cluster of three masters with a replica each: every group's channel
//! and keys live on the shard that owns its slot, messages travel with `SPUBLISH` only, and
//! gateways follow the cluster when a subscription drops, a master dies and its replica takes
//! over, or a group's slot moves to another shard, recovering members from history across
//! each gap.

use std::time::Duration;

use herald::config::{ChannelsConfig, ChannelsLayer, Config, JobConfig, NamespaceConfig};
use serde_json::{Value, json};

use crate::channels::{GROUP, bridge_joined, layer_py, seqs};
use crate::harness::{Client, InProcessScheduler, Node, Redis, eventually, http};
use crate::recovery::{feed, publish_steadily, read_all};
use crate::redis_servers::Cluster;

fn cluster_config(cluster: &Cluster, id: &str) -> Config {
    let mut config = crate::harness::config(None, id);
    config.redis_cluster_nodes = cluster.urls();
    (config.rate_limit, config.rate_limit_burst) = (10_000, 10_000);
    config.namespaces.insert("feed".into(), NamespaceConfig { presence: true, ..feed() });
    config
}

/// The hash slot of a group (its channel's and keys' hash tag).
fn slot(group: &str) -> u16 {
    redis_protocol::redis_keyslot(format!("herald:group:{{{group}}}").as_bytes())
}

/// One group name per master, each on a different shard.
async fn group_per_shard(cluster: &Cluster) -> Vec<(u16, String)> {
    let mut groups: Vec<(u16, String)> = Vec::new();
    let masters = cluster.masters().await;
    for i in 0.. {
        let group = format!("feed.g{i}");
        let master = cluster.master_of(slot(&group)).await;
        if !groups.iter().any(|(m, _)| *m == master) {
            groups.push((master, group));
        }
        if groups.len() == masters.len() {
            return groups;
        }
    }
    unreachable!()
}

/// Reads messages until one carries `{"seq": last}`: every frame a message whose offset is one
/// past the previous one's, or a `recovered` notice (a gap the client was told of). Returns
/// the seqs read and how many notices came.
pub(crate) async fn read_through(client: &mut Client, last: u64) -> (Vec<u64>, usize) {
    let (mut seqs, mut notices, mut offset) = (Vec::new(), 0, None::<u64>);
    loop {
        let frame: Value = client.recv().await;
        match frame["type"].as_str() {
            Some("recovered") => {
                notices += 1;
                offset = frame["offset"].as_u64();
            }
            Some("message") => {
                let this = frame["offset"].as_u64().unwrap();
                if let Some(previous) = offset {
                    assert_eq!(this, previous + 1, "no silent gap: {frame}");
                }
                offset = Some(this);
                let seq = frame["data"]["seq"].as_u64().unwrap();
                seqs.push(seq);
                if seq == last {
                    return (seqs, notices);
                }
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

#[tokio::test]
async fn groups_on_every_shard_reach_clients_of_two_gateways_through_spublish_only() {
    let cluster = Cluster::start(3, 1).await;
    let (a, b) = (
        Node::ready(cluster_config(&cluster, "gw-a")).await,
        Node::ready(cluster_config(&cluster, "gw-b")).await,
    );
    let groups = group_per_shard(&cluster).await;
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    for (_, group) in &groups {
        on_a.subscribe(group).await;
        on_b.subscribe(group).await;
    }
    for (n, (_, group)) in groups.iter().enumerate() {
        assert_eq!(a.publish(group, json!({"seq": n})).await.0, 200);
    }
    // One batch across the three shards, answered per message.
    let batch: Vec<Value> = groups.iter().map(|(_, g)| json!({"group": g, "data": {"seq": 9}})).collect();
    let (status, answer) = http(b.addr, "POST", "/api/publish", &[], &Value::Array(batch).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    for client in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        for _ in 0..groups.len() * 2 {
            let (group, data) = client.message().await;
            got.push((group, data["seq"].as_u64().unwrap()));
        }
        for (n, (_, group)) in groups.iter().enumerate() {
            let of_group: Vec<u64> = got.iter().filter(|(g, _)| g == group).map(|(_, s)| *s).collect();
            assert_eq!(of_group, [n as u64, 9], "{group}: in order, once");
        }
    }
    for (master, _) in &groups {
        assert_eq!(cluster.command_calls(*master, "publish").await, 0, "no cluster-wide PUBLISH on {master}");
        assert!(cluster.command_calls(*master, "spublish").await >= 2, "SPUBLISH on {master}");
    }
    // The rest works unchanged: presence, history, the node directory.
    let (_, presence) = a.get(&format!("/api/presence?group={}", groups[0].1)).await;
    assert_eq!(presence["clients"].as_array().map(Vec::len), Some(2), "{presence}");
    let (_, history) = b.get(&format!("/api/history?group={}", groups[2].1)).await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2), "{history}");
    eventually("both gateways in the directory", || async {
        a.get("/api/info").await.1["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
}

#[tokio::test]
async fn members_are_caught_up_when_a_shard_drops_the_subscription() {
    let cluster = Cluster::start(3, 1).await;
    let (a, b) = (
        Node::ready(cluster_config(&cluster, "gw-a")).await,
        Node::ready(cluster_config(&cluster, "gw-b")).await,
    );
    let (master, group) = group_per_shard(&cluster).await.remove(1);
    let mut member = a.client().await;
    member.subscribe(&group).await;
    const COUNT: u64 = 300;
    let publisher = publish_steadily(&b, &group, COUNT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let killed: i64 = cluster.query(master, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        assert!(killed >= 1, "the gateways' pub/sub connections to the shard were killed");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        read_all(&mut member, COUNT).await,
        (0..COUNT).collect::<Vec<_>>(),
        "every message once, in order"
    );
    publisher.await.unwrap();
}

#[tokio::test]
async fn a_dead_master_is_replaced_by_its_replica_and_delivery_resumes() {
    let mut cluster = Cluster::start(3, 1).await;
    let (a, b) = (
        Node::ready(cluster_config(&cluster, "gw-a")).await,
        Node::ready(cluster_config(&cluster, "gw-b")).await,
    );
    let (master, group) = group_per_shard(&cluster).await.remove(0);
    let mut member = a.client().await;
    member.subscribe(&group).await;
    const COUNT: u64 = 400;
    let publisher = publish_steadily(&b, &group, COUNT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(master);
    eventually("not ready while the shard is unreachable", || async { a.get("/readyz").await.0 == 503 })
        .await;
    eventually("the replica took over", || async { cluster.master_of(slot(&group)).await != master }).await;
    eventually("ready again", || async { a.get("/readyz").await.0 == 200 }).await;
    let (seqs, _) = read_through(&mut member, COUNT - 1).await;
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, never twice: {seqs:?}");
    publisher.await.unwrap();
    // Other shards never stopped.
    let (_, other) = group_per_shard(&cluster).await.remove(1);
    member.subscribe(&other).await;
    assert_eq!(a.publish(&other, json!({"seq": 0})).await.0, 200);
    assert_eq!(member.message().await.0, other);
}

#[tokio::test]
async fn a_group_follows_its_slot_to_another_shard() {
    let cluster = Cluster::start(3, 0).await;
    let (a, b) = (
        Node::ready(cluster_config(&cluster, "gw-a")).await,
        Node::ready(cluster_config(&cluster, "gw-b")).await,
    );
    let mut shards = group_per_shard(&cluster).await;
    let (from, group) = shards.remove(0);
    let (to, _) = shards.remove(0);
    let mut member = a.client().await;
    member.subscribe(&group).await;
    const COUNT: u64 = 300;
    let publisher = publish_steadily(&b, &group, COUNT);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.move_slot(slot(&group), from, to).await;
    assert_eq!(cluster.master_of(slot(&group)).await, to);
    let (seqs, notices) = read_through(&mut member, COUNT - 1).await;
    assert_eq!(notices, 0, "nothing was lost: the history moved with the slot");
    assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "every message once, in order");
    publisher.await.unwrap();
    eventually("the member's gateway subscribes on the new shard", || async {
        let channel = format!("herald:group:{{{group}}}");
        let on_new: (String, i64) = cluster.query(to, &["PUBSUB", "SHARDNUMSUB", &channel]).await;
        on_new.1 == 1
    })
    .await;
}

#[tokio::test]
async fn the_scheduler_and_the_channels_bridge_run_on_a_cluster() {
    let cluster = Cluster::start(3, 0).await;
    // channels_redis needs one server per host: the layer keeps its own Redis.
    let layer = Redis::start().await;
    let mut config = cluster_config(&cluster, "gw-a");
    config
        .namespaces
        .insert("chat".into(), NamespaceConfig { history_size: 100, ..NamespaceConfig::default() });
    config.channels = Some(ChannelsConfig {
        layer: ChannelsLayer::Core,
        hosts: vec![layer.url()],
        groups: vec!["chat.*".into()],
        ..ChannelsConfig::default()
    });
    config.jobs = vec![JobConfig {
        name: "tick".into(),
        group: "jobs.tick".into(),
        every: Some("200ms".into()),
        static_data: Some(json!("tick")),
        ..JobConfig::default()
    }];
    let node = Node::ready(config.clone()).await;
    let scheduler = InProcessScheduler::start(&Config { node_id: "sched".into(), ..config });
    let mut ticks = node.client().await;
    ticks.subscribe("jobs.tick").await;
    assert_eq!(ticks.message().await.0, "jobs.tick", "lease and tick claims on the cluster");
    let mut chat = node.client().await;
    chat.subscribe(GROUP).await;
    // The bridge finds the group among every shard's channels, and joins it in the layer.
    bridge_joined(&layer, ChannelsLayer::Core).await;
    let mut sender = layer_py("send", ChannelsLayer::Core, &layer, 50, &[]);
    assert!(sender.wait().await.unwrap().success());
    assert_eq!(seqs(&mut chat, 50).await, (0..50).collect::<Vec<_>>());
    scheduler.stop().await;
}
