//! `herald-bench`: a load tool anyone can run against their own gateways.
//!
//! It opens N WebSocket clients (spread over local source addresses 127.0.0.1..N so large
//! counts do not run out of ephemeral ports), subscribes each to K of G groups over the normal
//! protocol (or lets a gateway route join each to its group), publishes at rate R with S-byte
//! payloads (through Redis directly, `POST /api/publish` one message or a batch at a time, or a
//! client's `publish`) for a duration, and reports connected clients, connect rate, deliveries
//! per second, publish-to-receive latency percentiles (an HDR histogram; the publish time
//! travels in the payload), errors and drops, with a progress line while it runs. `--baseline`
//! first runs the same load against a minimal broadcast server in a process of its own
//! ([`baseline`]), so every Herald figure comes with its ratio to the machine's ceiling.
//! `--chart` draws the reports as SVG ([`chart`]).

mod baseline;
mod chart;
mod load;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Parser, Clone, Debug)]
#[command(name = "herald-bench", version, about = "Load-tests Herald gateways against a baseline server")]
struct BenchArgs {
    /// Gateway WebSocket URLs (comma-separated); clients are spread over them. A `{group}` in
    /// a URL is replaced by the client's group number, for a gateway route that joins its
    /// clients on connect (`path = "/ws/bench/{n}"`, `subscribe = ["bench.{n}"]`): the clients
    /// then wait for its `subscribed` frame instead of sending `subscribe`.
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Groups the clients are spread over, `bench.0` to `bench.<groups - 1>`.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Groups each client joins: client i joins `bench.<(i + j * groups / K) % groups>` for j
    /// below K, so every group gets the same number of members.
    #[arg(long, default_value_t = 1)]
    groups_per_client: usize,
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
    /// Messages per request with `--publish http`: more than 1 sends JSON arrays (batches).
    #[arg(long, default_value_t = 1)]
    http_batch: usize,
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
    /// Open every client this many times (closing them between rounds) and report the median
    /// round's sessions per second; the last round's clients stay for the load. With
    /// `--baseline` and `--url`, the two servers' rounds alternate.
    #[arg(long, default_value_t = 1)]
    connect_rounds: usize,
    /// First run the same load against the baseline server (a process of its own): the ceiling.
    #[arg(long)]
    baseline: bool,
    /// Process ids of the gateways (comma-separated), to report their memory and CPU (in total,
    /// and each one's).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw SVG charts of the JSON reports in this directory (as `scripts/bench.sh` writes
    /// them) into `--chart-out`, instead of running a load.
    #[arg(long, requires = "chart_out")]
    chart: Option<std::path::PathBuf>,
    #[arg(long)]
    chart_out: Option<std::path::PathBuf>,
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
    /// A timer inside the baseline server (`--baseline` alone, no `--url`): the ceiling of the
    /// fan-out itself, with no publisher in the way.
    Timer,
}

/// Locks `mutex`, ignoring poisoning: a panicking client task must not take the run's counts
/// (or the baseline's queues) down with it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    if let (Some(results), Some(out)) = (&args.chart, &args.chart_out) {
        return chart::draw_all(results, out);
    }
    anyhow::ensure!(
        args.baseline || args.serve_baseline || !args.url.is_empty(),
        "give --url (Herald gateways) and/or --baseline"
    );
    anyhow::ensure!(
        args.clients > 0 && args.groups > 0 && args.sources > 0 && args.http_batch > 0,
        "clients, groups, sources and http-batch must be positive"
    );
    anyhow::ensure!(
        args.publish != PublishVia::Timer || args.url.is_empty(),
        "--publish timer is the baseline's own: give --baseline without --url"
    );
    anyhow::ensure!(
        (1..=args.groups).contains(&args.groups_per_client),
        "groups-per-client must be between 1 and groups"
    );
    anyhow::ensure!(
        args.groups_per_client == 1 || !args.url.iter().any(|url| url.contains(load::ROUTE_GROUP)),
        "a route joins one group: {} in --url needs --groups-per-client 1",
        load::ROUTE_GROUP
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
    let mut herald_rounds = load::Rounds::default();
    if args.baseline {
        let server = load::Target::Baseline(Box::new(baseline::Baseline::start(&serve).await?));
        let mut rounds = load::Rounds::default();
        if !args.url.is_empty() {
            (rounds, herald_rounds) = load::alternate_rounds(&args, &server).await;
        }
        reports.push(load::run(&args, server, rounds).await?);
    }
    if !args.url.is_empty() {
        reports.push(load::run(&args, load::Target::Herald, herald_rounds).await?);
    }
    report::print(&reports, args.json);
    Ok(())
}
