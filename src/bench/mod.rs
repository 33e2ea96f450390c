//! `herald bench`: a load tool anyone can run against their own gateways.
//!
//! It opens N WebSocket clients (spread over local source addresses 127.0.0.1..N so large
//! counts do not run out of ephemeral ports), subscribes them to G groups over the normal
//! protocol, publishes at rate R with S-byte payloads (through Redis directly, `POST
//! /api/publish`, or a client's `publish`) for a duration, and reports connected clients,
//! connect rate, deliveries per second, publish-to-receive latency percentiles (an HDR
//! histogram; the publish time travels in the payload), errors and drops, with a progress line
//! while it runs. `--baseline` first runs the same load against an in-process minimal broadcast
//! server ([`baseline`]), so every Herald figure comes with its ratio to the machine's ceiling.

pub mod baseline;
mod load;
mod report;

use std::time::Duration;

use clap::{Args, ValueEnum};

pub use report::{RunReport, StepReport};

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Gateway WebSocket URLs (comma-separated); clients are spread over them.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Groups the clients are spread over (client i joins `bench.<i % groups>`).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Messages per second in total; a comma-separated list runs one step per rate.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rate: Vec<u64>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// How long each rate step lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How messages are published to the gateways.
    #[arg(long, value_enum, default_value = "redis")]
    pub publish: PublishVia,
    /// Redis of the gateways (for `--publish redis`).
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    #[arg(long, default_value = "herald")]
    pub redis_prefix: String,
    /// API key for `--publish http`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Client token, sent as `?token=`.
    #[arg(long)]
    pub token: Option<String>,
    /// Local source addresses to spread clients over: 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// First run the same load against an in-process minimal broadcast server.
    #[arg(long)]
    pub baseline: bool,
    /// Process ids of the gateways (comma-separated), to report their memory and CPU.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishVia {
    /// `PUBLISH` to the group's Redis channel: the cheapest publisher.
    Redis,
    /// `POST /api/publish` on the first URL's host.
    Http,
    /// A WebSocket client's `publish` request (the group's namespace must allow it, and the
    /// gateway's per-connection `rate_limit` applies).
    Ws,
}

/// Runs the baseline (if asked) and then Herald (if URLs are given), and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.baseline || !args.url.is_empty(), "give --url (Herald gateways) and/or --baseline");
    anyhow::ensure!(
        args.clients > 0 && args.groups > 0 && args.sources > 0,
        "clients, groups and sources must be positive"
    );
    let mut reports = Vec::new();
    if args.baseline {
        let server = baseline::Baseline::start().await?;
        reports.push(load::run(&args, load::Target::Baseline(server)).await?);
    }
    if !args.url.is_empty() {
        reports.push(load::run(&args, load::Target::Herald).await?);
    }
    report::print(&reports, args.json);
    Ok(())
}
