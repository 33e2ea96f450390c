//! Scheduler replicas as real processes: one leader, each tick once, failover on SIGKILL,
//! immediate handover on SIGTERM.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Client, Node, Process, Redis, config, eventually};

/// Two replicas' config: a clock job to `ha.ticks` every `every_ms`, aligned.
fn replica_toml(redis: &Redis, node: &str, lease_ttl: &str, every_ms: u64) -> String {
    format!(
        "redis_url = \"{}\"\nnode_id = \"{node}\"\nlisten = \"127.0.0.1:0\"\n[scheduler]\nlease_ttl = \"{lease_ttl}\"\n\
         [[jobs]]\nname = \"ticks\"\ngroup = \"ha.ticks\"\nevery = \"{every_ms}ms\"\nalign = true\nbuiltin = \"clock\"\n",
        redis.url()
    )
}

async fn next_tick(client: &mut Client) -> i64 {
    let (group, data): (String, Value) = client.message().await;
    assert_eq!(group, "ha.ticks");
    data["unix_ms"].as_i64().expect("clock data")
}

/// The node id of the replica holding the lease.
async fn leader(redis: &Redis) -> Option<String> {
    let holder: Option<String> = redis.query(&["GET", "herald:scheduler:leader"]).await;
    holder.map(|h| h.rsplit_once('-').map_or(h.clone(), |(node, _)| node.to_string()))
}

async fn setup(lease_ttl: &str, every_ms: u64) -> (Redis, Node, Client, [Process; 2]) {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    client.subscribe("ha.ticks").await;
    let replicas = [
        Process::spawn(&["scheduler"], &replica_toml(&redis, "sched-a", lease_ttl, every_ms)),
        Process::spawn(&["scheduler"], &replica_toml(&redis, "sched-b", lease_ttl, every_ms)),
    ];
    (redis, node, client, replicas)
}

#[tokio::test]
async fn two_replicas_publish_every_tick_exactly_once() {
    let (redis, _node, mut client, _replicas) = setup("2s", 300).await;
    let mut ticks = vec![next_tick(&mut client).await];
    while ticks.len() < 8 {
        ticks.push(next_tick(&mut client).await);
    }
    // A tick published twice would show as a zero gap, a missed one as a double gap.
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 300), "one message per tick, none missed: {ticks:?}");
    assert!(leader(&redis).await.is_some());
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_ttl_plus_one_tick() {
    // The period exceeds TTL + the standby's retry, so at most one tick can fall in the gap.
    const TTL_MS: u64 = 1000;
    const EVERY_MS: u64 = 2000;
    let (redis, _node, mut client, mut replicas) = setup("1s", EVERY_MS).await;
    let first = next_tick(&mut client).await;
    let mut ticks = vec![first, next_tick(&mut client).await];

    let leading = leader(&redis).await.expect("a leader holds the lease");
    let index = if leading == "sched-a" { 0 } else { 1 };
    replicas[index].kill();
    let killed_at = Instant::now();

    let after = next_tick(&mut client).await;
    let handover = killed_at.elapsed();
    ticks.push(after);
    ticks.push(next_tick(&mut client).await);
    assert_ne!(leader(&redis).await.as_deref(), Some(leading.as_str()), "the standby leads now");
    // Generous slack for a loaded machine on top of TTL + one tick.
    let bound = Duration::from_millis(TTL_MS + EVERY_MS) + Duration::from_secs(2);
    assert!(handover <= bound, "first publish after the kill took {handover:?}");
    let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g > 0), "no tick twice: {ticks:?}");
    assert!(gaps.iter().all(|g| *g <= 2 * EVERY_MS as i64), "at most one tick missed: {ticks:?}");
}

#[tokio::test]
async fn a_terminated_leader_hands_over_at_once() {
    // A long TTL: without the release on SIGTERM the standby would wait 30 s.
    let (redis, _node, mut client, replicas) = setup("30s", 300).await;
    next_tick(&mut client).await;
    let leading = leader(&redis).await.expect("a leader holds the lease");
    let index = if leading == "sched-a" { 0 } else { 1 };
    let started = Instant::now();
    replicas[index].terminate();
    eventually("the standby takes the lease", || async {
        leader(&redis).await.is_some_and(|now| now != leading)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "handover took {:?}", started.elapsed());
    next_tick(&mut client).await;
}
