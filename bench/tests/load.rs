//! `herald-bench` against a real gateway and its own baseline: every message reaches every
//! member of its group and is counted, whichever way it is published, one group or many, and
//! whether the clients subscribe or a route joins them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald::config::{Config, NamespaceConfig, RouteConfig};
use herald::gateway::{self, Gateway};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const CLIENTS: u64 = 12;

/// A private `redis-server` on a free port, killed on drop.
struct Redis {
    url: String,
    child: Child,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        // Owned before waiting, so a server that never answers is killed on the way out.
        let redis = Self { url: format!("redis://127.0.0.1:{port}/"), child };
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        for _ in 0..250 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench(args: &[&str]) -> Vec<Value> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(args)
        .args(["--clients", &CLIENTS.to_string(), "--rate", "40", "--duration", "1s", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("herald-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald-bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("bench JSON: {e}; stderr: {stderr}"))
}

#[tokio::test]
async fn bench_counts_every_delivery_of_the_baseline_and_of_a_gateway_for_each_publish_path() {
    let redis = Redis::start().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: Some(redis.url.clone()),
        node_id: "gw-bench".into(),
        ..Config::default()
    };
    config.namespaces.insert("bench".into(), NamespaceConfig { client_publish: true, ..Default::default() });
    config.routes.push(RouteConfig {
        path: "/ws/bench/{n}".into(),
        subscribe: vec!["bench.{n}".into()],
        publish: None,
    });
    config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let gateway = Gateway::new(config, shutdown.clone()).unwrap();
    let serving = tokio::spawn(gateway::serve(listener, gateway));
    let _stop = shutdown.clone().drop_guard();

    for via in ["redis", "http", "ws"] {
        // Two connect rounds, the servers' taken in turn; the second round's clients take the load.
        let rounds = if via == "redis" { "2" } else { "1" };
        // The gateway serves from this process, whose CPU the closed round is measured by.
        let pid = std::process::id().to_string();
        let args = [
            "--baseline",
            "--url",
            &url,
            "--redis-url",
            &redis.url,
            "--publish",
            via,
            "--connect-rounds",
            rounds,
            "--pid",
            &pid,
        ];
        let runs = bench(&args).await;
        let targets: Vec<_> = runs.iter().map(|r| r["target"].as_str().unwrap()).collect();
        assert_eq!(targets, ["baseline", "herald"]);
        for run in &runs {
            let what = format!("{} published via {via}: {run}", run["target"]);
            assert_eq!(run["connected"], CLIENTS, "{what}");
            assert_eq!(run["errors"], 0, "{what}");
            assert!(run["connect_rate"].as_f64().unwrap() > 0.0, "{what}");
            assert_eq!(run["connect_rates"].as_array().unwrap().len().to_string(), rounds, "{what}");
            // CPU per session comes from the rounds closed again: none when the only round stays.
            let cpu = &run["connect_cpu"];
            match rounds {
                "2" => assert!(cpu["user_us"].is_f64() && cpu["system_us"].is_f64(), "{what}"),
                _ => assert!(cpu.is_null(), "{what}"),
            }
            let step = &run["steps"][0];
            let published = step["published"].as_u64().unwrap();
            assert!(published >= 30, "about 40 messages in 1 s: {what}");
            assert_eq!(step["deliveries"].as_u64().unwrap(), published * CLIENTS, "{what}");
            assert_eq!(step["dropped_clients"], 0, "{what}");
            assert!(step["latency_us"]["p50"].as_u64().unwrap() > 0, "{what}");
        }
    }

    // The baseline's own timer, the ceiling with no publisher in the way.
    let runs = bench(&["--baseline", "--redis-url", &redis.url, "--publish", "timer"]).await;
    assert_eq!(runs.len(), 1);
    let step = &runs[0]["steps"][0];
    let published = step["published"].as_u64().unwrap();
    assert!(published >= 30, "about 40 messages in 1 s: {}", runs[0]);
    assert_eq!(step["deliveries"].as_u64().unwrap(), published * CLIENTS, "{}", runs[0]);

    // Many rooms: 6 groups, each client in 2 (so 4 members a group), published in batches of 8.
    let args = ["--groups", "6", "--groups-per-client", "2", "--publish", "http", "--http-batch", "8"];
    let runs = bench(&[&["--baseline", "--url", &url, "--redis-url", &redis.url][..], &args].concat()).await;
    for run in &runs {
        let what = format!("{} with many groups: {run}", run["target"]);
        assert_eq!(run["errors"], 0, "{what}");
        let step = &run["steps"][0];
        let published = step["published"].as_u64().unwrap();
        assert!(published >= 30, "about 40 messages in 1 s: {what}");
        assert_eq!(step["deliveries"].as_u64().unwrap(), published * 4, "each to its 4 members: {what}");
        assert_eq!(step["dropped_clients"], 0, "{what}");
    }
    // Clients joined by a route (`{group}` in the URL), 3 groups of 4: each waits for its
    // `subscribed`, so every message published afterwards reaches it.
    let routed = url.replace("/ws", "/ws/bench/{group}");
    let runs = bench(&["--url", &routed, "--redis-url", &redis.url, "--groups", "3"]).await;
    let run = &runs[0];
    assert_eq!((run["connected"].as_u64(), run["errors"].as_u64()), (Some(CLIENTS), Some(0)), "{run}");
    let step = &run["steps"][0];
    let published = step["published"].as_u64().unwrap();
    assert!(published >= 30, "about 40 messages in 1 s: {run}");
    assert_eq!(step["deliveries"].as_u64().unwrap(), published * 4, "each to its 4 members: {run}");

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}
