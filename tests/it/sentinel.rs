//! Herald under Sentinel (a master, a replica, three sentinels): gateways and the scheduler
//! find the master through the sentinels and follow `SENTINEL FAILOVER` without a restart;
//! members are caught up across it, or told what is gone.

use std::time::Duration;

use herald::config::{Config, JobConfig};
use serde_json::json;

use crate::cluster::read_through;
use crate::harness::{InProcessScheduler, Node, eventually};
use crate::recovery::{feed, publish_steadily};
use crate::redis_servers::Sentinels;

fn sentinel_config(sentinels: &Sentinels, id: &str) -> Config {
    let mut config = crate::harness::config(None, id);
    config.redis_sentinels = sentinels.urls();
    config.redis_sentinel_master = Some(Sentinels::MASTER.into());
    (config.rate_limit, config.rate_limit_burst) = (10_000, 10_000);
    config.namespaces.insert("feed".into(), feed());
    config
}

#[tokio::test]
async fn gateways_and_the_scheduler_follow_a_sentinel_failover() {
    let sentinels = Sentinels::start().await;
    let (a, b) = (
        Node::ready(sentinel_config(&sentinels, "gw-a")).await,
        Node::ready(sentinel_config(&sentinels, "gw-b")).await,
    );
    let mut member = a.client().await;
    member.subscribe("feed.live").await;
    let mut ticks = b.client().await;
    ticks.subscribe("jobs.tick").await;
    let job = JobConfig {
        name: "tick".into(),
        group: "jobs.tick".into(),
        every: Some("100ms".into()),
        static_data: Some(json!("tick")),
        ..JobConfig::default()
    };
    let scheduler =
        InProcessScheduler::start(&Config { jobs: vec![job], ..sentinel_config(&sentinels, "sched") });
    assert_eq!(ticks.message().await.0, "jobs.tick");

    const COUNT: u64 = 400;
    let publisher = publish_steadily(&b, "feed.live", COUNT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = sentinels.master_port().await;
    sentinels.failover().await;
    eventually("the sentinels name the replica", || async { sentinels.master_port().await != old }).await;
    let (seqs, _) = read_through(&mut member, COUNT - 1).await;
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, never twice: {seqs:?}");
    publisher.await.unwrap();

    // Publishing, the scheduler's lease and its ticks go on on the new master.
    let new = sentinels.master_port().await;
    let runs = || async {
        let info: String = sentinels.query(new, &["INFO", "commandstats"]).await;
        info.contains("cmdstat_spublish")
    };
    eventually("publishes reach the new master", runs).await;
    let published = |m: &herald::metrics::Metrics, job: &str| m.job(&m.job_published, job);
    let before = scheduler.count("tick", published);
    eventually("ticks resume after the failover", || async {
        scheduler.count("tick", published) >= before + 3
    })
    .await;
    assert_eq!(ticks.message().await.0, "jobs.tick");
    for node in [&a, &b] {
        eventually("ready on the new master", || async { node.get("/readyz").await.0 == 200 }).await;
    }
    scheduler.stop().await;
}
