//! `herald-bench`: a load tool anyone can run against their own gateways.
//!
//! It opens N WebSocket clients (spread over local source addresses 127.0.0.1..N so large
//! counts do not run out of ephemeral ports), subscribes them to G groups over the normal
//! protocol, publishes at rate R with S-byte payloads (through Redis directly, `POST
//! /api/publish`, or a client's `publish`) for a duration, and reports connected clients,
//! connect rate, deliveries per second, publish-to-receive latency percentiles (an HDR
//! histogram; the publish time travels in the payload), errors and drops, with a progress line
//! while it runs. `--baseline` first runs the same load against an in-process minimal broadcast
//! server ([`baseline`]), so every Herald figure comes with its ratio to the machine's ceiling.

mod baseline;
mod load;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Parser, Clone, Debug)]
#[command(name = "herald-bench", version, about = "Load-tests Herald gateways against a baseline server")]
struct BenchArgs {
    /// Gateway WebSocket URLs (comma-separated); clients are spread over them.
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Groups the clients are spread over (client i joins `bench.<i % groups>`).
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Messages per second in total; a comma-separated list runs one step per rate.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    rate: Vec<u64>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// How long each rate step lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How messages are published to the gateways.
    #[arg(long, value_enum, default_value = "redis")]
    publish: PublishVia,
    /// Redis of the gateways (for `--publish redis`).
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    #[arg(long, default_value = "herald")]
    redis_prefix: String,
    /// `--redis-url` is a node of a Redis Cluster: publish to each group's shard.
    #[arg(long)]
    redis_cluster: bool,
    /// Requests in flight at once with `--publish http`: that many keep-alive connections.
    #[arg(long, default_value_t = 16)]
    http_connections: usize,
    /// API key for `--publish http`.
    #[arg(long)]
    api_key: Option<String>,
    /// Client token, sent as `?token=`.
    #[arg(long)]
    token: Option<String>,
    /// Local source addresses to spread clients over: 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// First run the same load against an in-process minimal broadcast server.
    #[arg(long)]
    baseline: bool,
    /// Process ids of the gateways (comma-separated), to report their memory and CPU (in total,
    /// and each one's).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Serve the baseline in this process (how `--baseline` starts it).
    #[arg(long, hide = true)]
    serve_baseline: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PublishVia {
    /// `SPUBLISH` to the group's Redis channel: the cheapest publisher.
    Redis,
    /// `POST /api/publish` on the first URL's host.
    Http,
    /// A WebSocket client's `publish` request (the group's namespace must allow it, and the
    /// gateway's per-connection `rate_limit` applies).
    Ws,
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the baseline (if asked) and then Herald (if URLs are given), and prints the report.
async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.baseline || args.serve_baseline || !args.url.is_empty(),
        "give --url (Herald gateways) and/or --baseline"
    );
    anyhow::ensure!(
        args.clients > 0 && args.groups > 0 && args.sources > 0,
        "clients, groups and sources must be positive"
    );
    let serve = baseline::ServeArgs {
        redis_url: &args.redis_url,
        redis_prefix: &args.redis_prefix,
        groups: args.groups,
    };
    if args.serve_baseline {
        return baseline::serve(serve).await;
    }
    let mut reports = Vec::new();
    if args.baseline {
        let server = baseline::Baseline::start(&serve).await?;
        reports.push(load::run(&args, load::Target::Baseline(Box::new(server))).await?);
    }
    if !args.url.is_empty() {
        reports.push(load::run(&args, load::Target::Herald).await?);
    }
    report::print(&reports, args.json);
    Ok(())
}
