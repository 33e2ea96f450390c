//! The `herald` command: `standalone` (default), `gateway` and `scheduler`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::StartError;
use herald::config::{Config, Mode, Overrides};
use herald::gateway::{self, Gateway};
use herald::metrics::Metrics;
use herald::scheduler::Scheduler;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "WebSocket pub/sub gateway: groups shared across instances through Redis"
)]
struct Cli {
    /// TOML config file.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Redis URL (overrides `redis_url`).
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// This instance's id (overrides `node_id`).
    #[arg(long, global = true)]
    node_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// One self-contained instance with the demo chat; in-memory broker unless redis_url is set.
    Standalone,
    /// A stateless gateway instance; needs redis_url so instances share groups.
    Gateway,
    /// Runs the config's [[jobs]]; any number of replicas elect one leader through Redis.
    Scheduler,
    /// Exits 0 if the URL answers 2xx within 3 s (a container health check without curl).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8000/healthz")]
        url: String,
    },
}

/// Exit code for a configuration error (as for a usage error).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let command = cli.command.clone().unwrap_or(Command::Standalone);
    let mode = match command {
        Command::Health { .. } => None,
        Command::Standalone => Some(Mode::Standalone),
        Command::Gateway => Some(Mode::Gateway),
        Command::Scheduler => Some(Mode::Scheduler),
    };
    let config = match mode.map(|mode| load_config(&cli, mode)).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.as_ref().map(|c| c.workers).filter(|w| *w > 0) {
        runtime.worker_threads(workers);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(command, config)),
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command`; `config` is loaded for every command but `health`.
async fn run(command: Command, config: Option<Config>) -> ExitCode {
    let outcome = match (command, config) {
        (Command::Health { url }, _) => return health(&url).await,
        (Command::Scheduler, Some(config)) => run_scheduler(config).await,
        (Command::Standalone, Some(config)) => run_gateway(config, true).await,
        (Command::Gateway, Some(config)) => run_gateway(config, false).await,
        (_, None) => unreachable!("the config is loaded for every serving command"),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            // A config that loaded but does not compile (a route, a key file, a job) is a
            // config error too.
            match e.downcast_ref::<StartError>() {
                Some(StartError::Config(_)) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn load_config(cli: &Cli, mode: Mode) -> Result<Config, herald::config::ConfigError> {
    let overrides =
        Overrides { listen: cli.listen, redis_url: cli.redis_url.clone(), node_id: cli.node_id.clone() };
    Config::load(cli.config.as_deref(), overrides, mode)
}

/// A gateway; in standalone mode with the scheduler running in the same process.
async fn run_gateway(config: Config, with_scheduler: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    herald::shutdown::on_signal(shutdown.clone());
    let listen = config.listen;
    let broker = config.redis().map_or_else(|| "memory".to_string(), |target| target.describe());
    let scheduler_config = with_scheduler.then(|| config.clone());
    let gateway = Gateway::new(config, shutdown.clone())?;
    let scheduler = scheduler_config.map(|config| Scheduler::in_process(&config, &gateway)).transpose()?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(scheduler) = scheduler {
        tokio::spawn(Arc::new(scheduler).run(shutdown));
    }
    tracing::info!(%listen, node = gateway.node_id(), broker, "herald listening on http://{listen}/");
    gateway::serve(listener, gateway).await.context("server failed")
}

/// A scheduler replica on Redis, with `/healthz` and `/metrics` on `listen`; runs until
/// SIGTERM, then releases its lease.
async fn run_scheduler(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    herald::shutdown::on_signal(shutdown.clone());
    let listen = config.listen;
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::on_redis(&config, metrics.clone())?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tokio::spawn(herald::scheduler::serve_status(listener, metrics, shutdown.clone()));
    tracing::info!(%listen, "scheduler status on http://{listen}/healthz and /metrics");
    Arc::new(scheduler).run(shutdown).await;
    Ok(())
}

async fn health(url: &str) -> ExitCode {
    let answer = reqwest::Client::new().get(url).timeout(std::time::Duration::from_secs(3)).send().await;
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("herald: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("herald: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}
