//! The scheduler: publishes job data to groups on a schedule, from a process of its own (or
//! inside a standalone gateway), so no gateway ever runs a push loop.
//!
//! Any number of replicas may run. The `lease` elects one leader, which alone starts ticks;
//! each tick is claimed in the `coordinator` before it runs, so it is published at most once
//! across replicas even while leadership changes hands. A job's runs never overlap (a tick that
//! finds the previous run still going is skipped and logged) and jobs never wait for each other:
//! each has its own timer task and each run is a task of its own. A failing run is logged with
//! the job's name and counted; nothing is published for that tick and the schedule goes on.
//! Publishing goes through the same broker `Publisher` as every other publish: one frame, one
//! `SPUBLISH` per tick.

mod coordinator;
mod job;
mod lease;
mod source;
mod status;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use status::serve_status;

use crate::StartError;
use crate::broker::redis::RedisStore;
use crate::broker::{Directory, HistoryPolicy, Publisher};
use crate::channels::{Bridge, Egress, Layer};
use crate::config::{Config, ConfigError};
use crate::hooks::webhooks::Deliverer;
use crate::metrics::{self, Metrics};
use crate::redis::Pool;
use coordinator::{Coordinator, MemoryCoordinator, RedisCoordinator};
use job::Job;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use source::FetchContext;
use source::{HttpClients, SourceError};

pub struct Scheduler {
    jobs: Vec<Arc<Job>>,
    /// Runs, publishes, failures and skips per job.
    metrics: Arc<Metrics>,
    publisher: Arc<dyn Publisher>,
    coordinator: Arc<dyn Coordinator>,
    /// This replica's lease identity: node id plus a random suffix, unique per process.
    holder: String,
    lease_ttl: Duration,
    max_bytes: usize,
    http: HttpClients,
    /// The Channels bridge, run while leading, when the config has a `[channels]` section.
    bridge: Option<Arc<Bridge>>,
    /// Sends job publishes to bridged groups into the Channels layer, when egress is on.
    egress: Option<Egress>,
    /// Delivers the deployment's webhooks, run while leading, when `[webhooks]` has a URL.
    webhooks: Option<Arc<Deliverer>>,
}

impl Scheduler {
    /// A scheduler process on Redis (which a validated scheduler config names): publishes and
    /// coordinates through one command pool.
    pub fn on_redis(config: &Config, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let target = config.redis().ok_or_else(|| ConfigError::new("redis_url", "is required"))?;
        let pool = Pool::new(&target)?;
        let store = Arc::new(RedisStore::new(pool.clone(), &config.redis_prefix));
        let coordinator = Arc::new(RedisCoordinator::new(pool, &config.redis_prefix));
        Self::new(config, store.clone(), store, coordinator, metrics)
    }

    /// A scheduler inside a gateway process: publishes through the gateway's broker, and
    /// coordinates through Redis when there is one (else it is the only replica).
    pub fn in_process(config: &Config, gateway: &crate::gateway::Gateway) -> Result<Self, StartError> {
        let coordinator: Arc<dyn Coordinator> = match config.redis() {
            Some(target) => Arc::new(RedisCoordinator::new(Pool::new(&target)?, &config.redis_prefix)),
            None => Arc::new(MemoryCoordinator::default()),
        };
        let broker = gateway.hub().broker();
        Self::new(
            config,
            broker.publisher.clone(),
            broker.directory.clone(),
            coordinator,
            gateway.metrics().clone(),
        )
    }

    /// Compiles the config's jobs (errors name the job: `jobs[0] (name): ...`). The config is
    /// expected to be validated already ([`Config::load`] does it).
    fn new(
        config: &Config,
        publisher: Arc<dyn Publisher>,
        directory: Arc<dyn Directory>,
        coordinator: Arc<dyn Coordinator>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let jobs: Vec<Arc<Job>> = config
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let mut job = Job::compile(j).map_err(|e| ConfigError::new(j.key(i), e))?;
                job.history = HistoryPolicy::of(config.namespace(job.group.namespace()));
                Ok::<_, ConfigError>(Arc::new(job))
            })
            .collect::<Result<_, _>>()?;
        let http = HttpClients::new().map_err(StartError::HttpClient)?;
        let layer = Layer::compile(config)?;
        let egress = Egress::of(layer.as_ref(), &metrics);
        let metrics_for_webhooks = metrics.clone();
        let bridge = layer.map(|layer| {
            let config = Arc::new(config.clone());
            Arc::new(Bridge::new(layer, publisher.clone(), directory, config, metrics.clone()))
        });
        Ok(Self {
            jobs,
            metrics,
            publisher,
            coordinator,
            holder: format!("{}-{:08x}", config.node_id, rand::random::<u32>()),
            lease_ttl: config.scheduler.lease_ttl,
            max_bytes: config.max_frame_bytes,
            http,
            bridge,
            egress,
            webhooks: Deliverer::from_config(config, metrics_for_webhooks)?,
        })
    }

    /// This replica's metrics (the job counters among them).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn count(&self, family: &Family<metrics::Job, Counter>, job: &Job) {
        family.get_or_create(&metrics::Job { job: job.name.clone() }).inc();
    }

    fn count_skip(&self, job: &Job, reason: &'static str) {
        self.metrics.job_skipped.get_or_create(&metrics::JobSkip { job: job.name.clone(), reason }).inc();
    }

    /// Competes for leadership and runs the jobs while leading, until `shutdown`; then stops
    /// the timers and releases the lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(holder = %self.holder, jobs = self.jobs.len(), "scheduler started");
        let (leader_tx, leader_rx) = watch::channel(false);
        let stop_jobs = CancellationToken::new();
        let timers: Vec<JoinHandle<()>> = self
            .jobs
            .iter()
            .map(|job| {
                tokio::spawn(self.clone().job_timer(job.clone(), leader_rx.clone(), stop_jobs.clone()))
            })
            .collect();
        let bridging = self.bridge.clone().map(|bridge| {
            let run = move |term| bridge.clone().run(term);
            tokio::spawn(while_leading(run, leader_rx.clone(), stop_jobs.clone()))
        });
        let delivering = self.webhooks.clone().map(|webhooks| {
            let run = move |term| webhooks.clone().run(term);
            tokio::spawn(while_leading(run, leader_rx.clone(), stop_jobs.clone()))
        });
        lease::hold(self.coordinator.clone(), self.holder.clone(), self.lease_ttl, leader_tx, shutdown).await;
        stop_jobs.cancel();
        for task in timers.into_iter().chain(bridging).chain(delivering) {
            let _ = task.await;
        }
    }

    /// One job's timer: while leading, sleep until each tick and start its run.
    async fn job_timer(
        self: Arc<Self>,
        job: Arc<Job>,
        mut leader: watch::Receiver<bool>,
        stop: CancellationToken,
    ) {
        let mut running: Option<JoinHandle<()>> = None;
        let mut earliest = 0i64;
        'terms: loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                led = leader.wait_for(|leading| *leading) => if led.is_err() { break },
            }
            let anchor = match job.schedule.needs_anchor() {
                true => match self.coordinator.anchor(&job.name, now_ms()).await {
                    Ok(anchor) => anchor,
                    Err(e) => {
                        tracing::warn!(job = %job.name, error = %e, "cannot read the job's anchor; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                false => 0,
            };
            loop {
                let Some(tick) = job.schedule.next_tick(now_ms().max(earliest), anchor) else {
                    tracing::warn!(job = %job.name, "schedule has no further ticks");
                    break 'terms;
                };
                let wait = Duration::from_millis((tick - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = stop.cancelled() => break 'terms,
                    _ = leader.wait_for(|leading| !*leading) => continue 'terms,
                    _ = tokio::time::sleep(wait) => {}
                }
                earliest = tick + 1;
                if running.as_ref().is_some_and(|run| !run.is_finished()) {
                    self.count_skip(&job, "overlap");
                    tracing::warn!(job = %job.name, tick, "previous run still going; tick skipped");
                    continue;
                }
                running = Some(tokio::spawn(self.clone().run_tick(job.clone(), tick)));
            }
        }
        if let Some(run) = running {
            run.abort();
        }
    }

    /// Claims the tick, fetches the data and publishes it.
    async fn run_tick(self: Arc<Self>, job: Arc<Job>, tick: i64) {
        let fail = |error: &dyn std::fmt::Display| {
            self.count(&self.metrics.job_failures, &job);
            tracing::warn!(job = %job.name, tick, %error, "job run failed; nothing published for this tick");
        };
        // Keep the claim well past the time any replica could still run this tick.
        let keep = Duration::from_millis((2 * job.schedule.spacing_ms(tick) + 10_000) as u64);
        match self.coordinator.claim_tick(&job.name, tick, keep).await {
            Ok(true) => {}
            Ok(false) => return tracing::debug!(job = %job.name, tick, "tick already run by another replica"),
            Err(e) => return fail(&e),
        }
        self.count(&self.metrics.job_runs, &job);
        let ctx = FetchContext { http: &self.http, tick_ms: tick, max_bytes: self.max_bytes };
        let data = match tokio::time::timeout(job.timeout, job.source.fetch(&ctx)).await {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => return fail(&e),
            Err(_) => return fail(&SourceError::Timeout(job.timeout)),
        };
        if job.on_change_only {
            match self.unchanged(&job, data.get()).await {
                Ok(true) => {
                    self.count_skip(&job, "unchanged");
                    return tracing::debug!(job = %job.name, tick, "data unchanged; not published");
                }
                Ok(false) => {}
                Err(e) => return fail(&e),
            }
        }
        if let Err(e) = self.publisher.publish(&job.group, &data, job.history).await {
            return fail(&e);
        }
        if let Some(egress) = &self.egress {
            egress.send(&job.group, &data, None, None).await;
        }
        self.count(&self.metrics.job_published, &job);
        tracing::debug!(job = %job.name, tick, group = %job.group, "published");
        if job.on_change_only {
            // If this fails the next tick publishes the same data again: a repeat, never a loss.
            let record = format!("{PUBLISHED}{}", data.get());
            if let Err(e) = self.coordinator.set_last_data(&job.name, &record).await {
                tracing::warn!(job = %job.name, error = %e, "could not record the published data");
            }
        }
    }

    /// For `on_change_only`: whether `data` is what the job last published for sure. If not,
    /// records it as about to be published first, so that a replica taking over before this
    /// publish is confirmed publishes again (a repeat) rather than skip a change back to an
    /// earlier value.
    async fn unchanged(&self, job: &Job, data: &str) -> Result<bool, crate::redis::Unavailable> {
        let last = self.coordinator.last_data(&job.name).await?;
        if last.as_deref().and_then(|last| last.strip_prefix(PUBLISHED)) == Some(data) {
            return Ok(true);
        }
        self.coordinator.set_last_data(&job.name, &format!("{PENDING}{data}")).await?;
        Ok(false)
    }
}

/// Runs `run` (the Channels bridge, the webhook deliverer) during each term of leadership,
/// until `stop`; each run ends when its term's token is cancelled.
async fn while_leading<F, Fut>(run: F, mut leader: watch::Receiver<bool>, stop: CancellationToken)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            led = leader.wait_for(|leading| *leading) => if led.is_err() { return },
        }
        let term = stop.child_token();
        let running = tokio::spawn(run(term.clone()));
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = leader.wait_for(|leading| !*leading) => {}
        }
        term.cancel();
        let _ = running.await;
    }
}

/// How `on_change_only` records the data it publishes: before publishing, and once published.
const PENDING: &str = "pending:";
const PUBLISHED: &str = "published:";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
