//! `herald bench` against a real gateway and its own baseline: every message reaches every
//! client and is counted, whichever way it is published.

use serde_json::Value;

use crate::harness::{GatewayProcess, Redis};

const CLIENTS: u64 = 12;

async fn bench(args: &[&str]) -> Vec<Value> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .args(["--clients", &CLIENTS.to_string(), "--rate", "40", "--duration", "1s", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("herald bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("bench JSON: {e}; stderr: {stderr}"))
}

#[tokio::test]
async fn bench_counts_every_delivery_of_the_baseline_and_of_a_gateway_for_each_publish_path() {
    let redis = Redis::start().await;
    let toml = format!(
        "redis_url = \"{}\"\nnode_id = \"gw-bench\"\nauth = \"off\"\n[namespaces.bench]\nclient_publish = true\n",
        redis.url()
    );
    let gateway = GatewayProcess::start(&toml).await;
    let url = format!("ws://{}/ws", gateway.addr);
    for via in ["redis", "http", "ws"] {
        let runs = bench(&["--baseline", "--url", &url, "--redis-url", &redis.url(), "--publish", via]).await;
        let targets: Vec<_> = runs.iter().map(|r| r["target"].as_str().unwrap()).collect();
        assert_eq!(targets, ["baseline", "herald"]);
        for run in &runs {
            let what = format!("{} published via {via}: {run}", run["target"]);
            assert_eq!(run["connected"], CLIENTS, "{what}");
            assert_eq!(run["errors"], 0, "{what}");
            assert!(run["connect_rate"].as_f64().unwrap() > 0.0, "{what}");
            let step = &run["steps"][0];
            let published = step["published"].as_u64().unwrap();
            assert!(published >= 30, "about 40 messages in 1 s: {what}");
            assert_eq!(step["deliveries"].as_u64().unwrap(), published * CLIENTS, "{what}");
            assert_eq!(step["dropped_clients"], 0, "{what}");
            assert!(step["latency_us"]["p50"].as_u64().unwrap() > 0, "{what}");
        }
    }
}
