//! The load: clients that connect, subscribe and time every delivery, and a publisher that
//! keeps a steady rate.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald::group::GroupName;
use herald::protocol::{self, ClientFrame};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::baseline::Baseline;
use super::report::{Latency, RunReport, SessionCpu, StepReport};
use super::{BenchArgs, PublishVia};

pub enum Target {
    Baseline(Box<Baseline>),
    Herald,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Histograms and counters, sharded so that clients on different threads rarely share a lock.
const SHARDS: usize = 64;
/// How long one client may take to connect and subscribe before it counts as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time given to deliveries still in flight when a step's publishing ends.
const SETTLE: Duration = Duration::from_secs(1);
/// Time the server is given to let the clients of a connect round go before the next.
const ROUND_PAUSE: Duration = Duration::from_secs(1);

struct Shard {
    latency_us: Histogram<u64>,
    deliveries: u64,
    /// When the last counted delivery arrived (µs since the epoch).
    last_us: u64,
}

struct Stats {
    shards: Vec<Mutex<Shard>>,
    /// Publish time (µs) from which deliveries count: messages of an earlier step still in
    /// flight when a step starts are not counted in it.
    since_us: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        let shard = || Mutex::new(Shard { latency_us: histogram(), deliveries: 0, last_us: 0 });
        Self {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            since_us: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        crate::lock(&self.shards[i % SHARDS])
    }

    fn deliveries(&self) -> u64 {
        (0..SHARDS).map(|i| self.lock(i).deliveries).sum()
    }

    /// Empties the shards, returning the merged histogram, the delivery count and the time
    /// of the last delivery.
    fn take(&self) -> (Histogram<u64>, u64, u64) {
        let mut merged = histogram();
        let (mut deliveries, mut last_us) = (0, 0);
        for i in 0..SHARDS {
            let mut shard = self.lock(i);
            merged.add(&shard.latency_us).expect("same bounds");
            shard.latency_us.reset();
            deliveries += std::mem::take(&mut shard.deliveries);
            last_us = last_us.max(std::mem::take(&mut shard.last_us));
        }
        (merged, deliveries, last_us)
    }

    /// Starts counting deliveries of messages published from now on.
    fn start_step(&self) -> u64 {
        self.take();
        let now = now_us();
        self.since_us.store(now, Ordering::Relaxed);
        now
    }
}

/// Latencies from 1 µs to 60 s, to three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The `type` of a server frame (`{"type":"reply",...}`; spaces may follow the colon, as
/// Python's `json.dumps` writes it): found without parsing the frame, whose time the generator
/// would take from the servers it measures.
fn frame_type(frame: &str) -> Option<&str> {
    let kind = after_key(frame, r#""type":"#)?.strip_prefix('"')?;
    kind.get(..kind.find('"')?)
}

/// The publish time a bench payload carries: `{"t":<µs>,...}` (a space may follow the colon,
/// as other servers re-encode the JSON).
fn publish_time(frame: &str) -> Option<u64> {
    let digits = after_key(frame, r#""t":"#)?;
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The text of `frame` after the first `key` (`"t":`, quoted and with its colon) and any
/// spaces: the start of its value. Every delivery passes here, so nothing is allocated.
fn after_key<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = frame.find(key)? + key.len();
    Some(frame[at..].trim_start())
}

impl Target {
    fn urls(&self, args: &BenchArgs) -> Vec<String> {
        match self {
            Target::Baseline(server) => vec![format!("ws://{}/ws", server.addr)],
            Target::Herald => args.url.clone(),
        }
    }

    /// The server's processes: the baseline's own, or the gateways `--pid` names (with their
    /// Redis, if it names it).
    fn pids<'a>(&'a self, args: &'a BenchArgs) -> &'a [u32] {
        match self {
            Target::Baseline(server) => std::slice::from_ref(&server.pid),
            Target::Herald => &args.pid,
        }
    }

    fn is_herald(&self) -> bool {
        matches!(self, Target::Herald)
    }
}

/// One server's connect rounds whose clients were closed again: each round's sessions per
/// second, and the CPU its processes spent on those rounds (the closes and pauses included).
pub struct Rounds {
    rates: Vec<f64>,
    /// User and system CPU ticks; `None` where the processes could not be read (no `--pid`).
    cpu: Option<(u64, u64)>,
    sessions: usize,
}

impl Default for Rounds {
    fn default() -> Self {
        Self { rates: Vec::new(), cpu: Some((0, 0)), sessions: 0 }
    }
}

impl Rounds {
    /// Takes one round against `target`, its clients closed again.
    async fn take(&mut self, args: &BenchArgs, target: &Target, stats: &Arc<Stats>) {
        let pids = target.pids(args);
        let before = cpu_ticks(pids);
        let (connected, rate) = closed_round(args, &target.urls(args), target.is_herald(), stats).await;
        let spent = before.zip(cpu_ticks(pids)).map(|((u, s), (u2, s2))| (u2 - u, s2 - s));
        self.cpu = self.cpu.zip(spent).map(|((u, s), (du, ds))| (u + du, s + ds));
        self.sessions += connected;
        self.rates.push(rate);
    }

    /// The server's CPU per session over these rounds, if it was measured.
    fn cpu_per_session(&self) -> Option<SessionCpu> {
        let (user, system) = self.cpu?;
        let per_session = |ticks: u64| ticks as f64 / CLOCK_TICKS_PER_SEC * 1e6 / self.sessions as f64;
        (self.sessions > 0).then(|| SessionCpu { user_us: per_session(user), system_us: per_session(system) })
    }
}

/// Takes all but the last of the `--connect-rounds` of the baseline and of Herald in turn, so
/// that both servers' rounds see the same moments of the machine; returns each one's rounds,
/// for [`run`] to add its last round to.
pub async fn alternate_rounds(args: &BenchArgs, baseline: &Target) -> (Rounds, Rounds) {
    let stats = Arc::new(Stats::new());
    let (mut baseline_rounds, mut herald_rounds) = (Rounds::default(), Rounds::default());
    for _ in 1..args.connect_rounds {
        baseline_rounds.take(args, baseline, &stats).await;
        herald_rounds.take(args, &Target::Herald, &stats).await;
    }
    (baseline_rounds, herald_rounds)
}

/// Runs the load against `target`; `rounds` are its connect rounds already taken
/// ([`alternate_rounds`]).
pub async fn run(args: &BenchArgs, target: Target, rounds: Rounds) -> anyhow::Result<RunReport> {
    let name = match target {
        Target::Baseline(_) => "baseline",
        Target::Herald => "herald",
    };
    let urls = target.urls(args);
    let stats = Arc::new(Stats::new());
    let pids = target.pids(args);
    let resident = || (!pids.is_empty()).then(|| pids.iter().filter_map(|p| rss_kib(*p)).sum::<u64>());
    let rss_before = resident();
    let (clients, connected, rounds) = connect_rounds(args, &target, &stats, rounds).await;
    let connect_cpu = rounds.cpu_per_session();
    let connect_rates = rounds.rates;
    let rss_kib = resident();
    let mut publisher = Publisher::new(args, &urls[0]).await?;
    let mut steps = Vec::new();
    for &rate in &args.rate {
        let step_us = stats.start_step();
        let cpu_before = cpu_ticks_each(pids);
        let started = Instant::now();
        let published = publish_steadily(args, &mut publisher, rate, &stats, name).await?;
        tokio::time::sleep(SETTLE).await;
        let elapsed = started.elapsed();
        let (latency, deliveries, last_us) = stats.take();
        // Over the time the step's messages took to arrive, backlog included.
        let delivering = Duration::from_micros(last_us.saturating_sub(step_us)).max(args.duration);
        let cpu_percent_each: Vec<f64> = cpu_before
            .zip(cpu_ticks_each(pids))
            .map(|(before, after)| {
                let percent = |(b, a): (&u64, &u64)| {
                    (a - b) as f64 / CLOCK_TICKS_PER_SEC * 100.0 / elapsed.as_secs_f64()
                };
                before.iter().zip(&after).map(percent).collect()
            })
            .unwrap_or_default();
        let cpu_percent = (!cpu_percent_each.is_empty()).then(|| cpu_percent_each.iter().sum());
        steps.push(StepReport {
            rate,
            published,
            deliveries,
            deliveries_per_sec: deliveries as f64 / delivering.as_secs_f64(),
            latency_us: Latency {
                p50: latency.value_at_quantile(0.5),
                p99: latency.value_at_quantile(0.99),
                p999: latency.value_at_quantile(0.999),
                max: latency.max(),
            },
            dropped_clients: stats.dropped.swap(0, Ordering::Relaxed),
            cpu_percent,
            cpu_percent_each,
        });
    }
    eprintln!();
    close_all(clients).await;
    if let Target::Baseline(server) = target {
        server.stop().await;
    }
    Ok(RunReport {
        target: name.into(),
        clients: args.clients,
        connected,
        connect_rate: median(&connect_rates),
        connect_rates,
        connect_cpu,
        steps,
        rss_kib,
        rss_kib_per_connection: rss_kib
            .zip(rss_before)
            .map(|(after, before)| after.saturating_sub(before) as f64 / connected.max(1) as f64),
        errors: stats.errors.load(Ordering::Relaxed),
    })
}

/// Opens every client until `--connect-rounds` rounds are taken (`rounds` holds those taken
/// before), closing them between rounds (and pausing for the server to let them go); returns
/// the last round's clients, how many connected, and the rounds with the last one's rate.
async fn connect_rounds(
    args: &BenchArgs,
    target: &Target,
    stats: &Arc<Stats>,
    mut rounds: Rounds,
) -> (JoinSet<()>, usize, Rounds) {
    while rounds.rates.len() + 1 < args.connect_rounds {
        rounds.take(args, target, stats).await;
    }
    let (clients, connected, rate) = connect_all(args, &target.urls(args), target.is_herald(), stats).await;
    rounds.rates.push(rate);
    (clients, connected, rounds)
}

/// One connect round whose clients are closed again (and the server given a pause to let them
/// go): how many connected, and the sessions per second.
async fn closed_round(args: &BenchArgs, urls: &[String], herald: bool, stats: &Arc<Stats>) -> (usize, f64) {
    let (clients, connected, rate) = connect_all(args, urls, herald, stats).await;
    close_all(clients).await;
    tokio::time::sleep(ROUND_PAUSE).await;
    (connected, rate)
}

/// Closes every client of a round (their connections reset) and waits until they are gone.
async fn close_all(mut clients: JoinSet<()>) {
    clients.abort_all();
    while clients.join_next().await.is_some() {}
}

/// The middle value (the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Opens every client, `connect_concurrency` handshakes at a time; returns the reading tasks,
/// how many connected and the sessions per second.
async fn connect_all(
    args: &BenchArgs,
    urls: &[String],
    herald: bool,
    stats: &Arc<Stats>,
) -> (JoinSet<()>, usize, f64) {
    let routed = args.url.iter().any(|url| url.contains(ROUTE_GROUP));
    let slots = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for i in 0..args.clients {
        let slot = slots.clone().acquire_owned().await.expect("semaphore open");
        // Contiguous shares, so that a group's members (see `client_groups`) are on several
        // gateways.
        let mut url = urls[i * urls.len() / args.clients].clone();
        let groups = client_groups(args, i);
        // Where the gateway joins clients by a route (a `{group}` in its URL), the baseline
        // joins them from its URL; elsewhere the clients of both send `subscribe` frames.
        let entry = match (herald, routed) {
            (_, false) => Entry::Subscribe(groups.iter().map(|&n| bench_group(n)).collect()),
            (true, true) => Entry::Routed,
            (false, true) => Entry::Joined,
        };
        url = url.replace(ROUTE_GROUP, &groups[0].to_string());
        let query = match entry {
            Entry::Joined => {
                let numbers: Vec<String> = groups.iter().map(u64::to_string).collect();
                Some(format!("groups={}", numbers.join(",")))
            }
            _ => args.token.as_ref().filter(|_| herald).map(|token| format!("token={token}")),
        };
        if let Some(query) = query {
            url = format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
        }
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % args.sources as usize) as u8));
        let (stats, ready) = (stats.clone(), ready_tx.clone());
        clients.spawn(async move {
            let joined = tokio::time::timeout(CONNECT_TIMEOUT, join(&url, source, &entry))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no session within {CONNECT_TIMEOUT:?}")));
            drop(slot);
            match joined {
                Ok(socket) => {
                    let _ = ready.send(true);
                    receive(socket, i, &stats).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client failed to connect");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = ready.send(false);
                }
            }
        });
    }
    let mut connected = 0;
    for done in 1..=args.clients {
        if ready_rx.recv().await == Some(true) {
            connected += 1;
        }
        if done % 1000 == 0 || done == args.clients {
            eprint!("\rconnecting: {connected}/{} ", args.clients);
        }
    }
    let rate = connected as f64 / started.elapsed().as_secs_f64();
    eprintln!("({rate:.0} sessions/s)");
    (clients, connected, rate)
}

/// The bench groups client `i` is in: `--groups-per-client` of them, a stride apart, so every
/// group has the same number of members.
fn client_groups(args: &BenchArgs, i: usize) -> Vec<u64> {
    let (groups, per_client) = (args.groups, args.groups_per_client);
    (0..per_client).map(|j| ((i + j * (groups / per_client)) % groups) as u64).collect()
}

/// The placeholder in a `--url` path that a client's group number replaces.
pub const ROUTE_GROUP: &str = "{group}";

/// How a client gets into its groups.
enum Entry {
    /// The baseline put it there from the URL: nothing to wait for.
    Joined,
    /// It sends a `subscribe` for each and waits for the replies.
    Subscribe(Vec<GroupName>),
    /// A gateway route joins it on connect: it waits for the `subscribed` frame.
    Routed,
}

/// Connects from `source` and gets into its groups the `entry` way.
async fn join(url: &str, source: IpAddr, entry: &Entry) -> anyhow::Result<Socket> {
    let request = url.into_client_request()?;
    let authority = request.uri().authority().context("url without host")?.as_str().to_string();
    let addr: SocketAddr = tokio::net::lookup_host(&authority).await?.next().context("unresolved host")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    // Closed with a reset when the run ends: tens of thousands of TIME_WAIT sockets would hold
    // their source ports and slow, then starve, the connects of the runs that follow.
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    // Small buffers: tens of thousands of clients share this process.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(stream), Some(config))
            .await?;
    let (expected, answer) = match entry {
        Entry::Joined => return Ok(ws),
        Entry::Routed => (1, "subscribed"),
        Entry::Subscribe(groups) => {
            // Sent without waiting for the welcome, as the protocol allows: the session
            // answers them right after the welcome, and the frames often share one packet.
            for (id, group) in (1..).zip(groups) {
                ws.feed(Message::text(ClientFrame::Subscribe { group, id: Some(id) }.encode())).await?;
            }
            ws.flush().await?;
            (groups.len(), "reply")
        }
    };
    let mut answers = 0;
    while answers < expected {
        let frame = ws.next().await.context("closed while joining")??;
        let Message::Text(text) = frame else { continue };
        match frame_type(&text) {
            Some(kind) if kind == answer => answers += 1,
            Some("error") => anyhow::bail!("not let into the group: {text}"),
            _ => {}
        }
    }
    Ok(ws)
}

/// Times every delivery until the connection ends.
async fn receive(mut ws: Socket, i: usize, stats: &Stats) {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let Some(sent) = publish_time(&text) else { continue };
                if sent < stats.since_us.load(Ordering::Relaxed) {
                    continue;
                }
                let now = now_us();
                let mut shard = stats.lock(i);
                shard.deliveries += 1;
                shard.last_us = shard.last_us.max(now);
                let _ = shard.latency_us.record(now.saturating_sub(sent).max(1));
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// A message to publish: its group and its JSON data.
type Outgoing = (GroupName, Box<RawValue>);

/// Group `n` of the run: `bench.<n>`.
pub fn bench_group(n: u64) -> GroupName {
    GroupName::new(&format!("bench.{n}")).expect("bench group names are valid")
}

enum Publisher {
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
    },
    /// A Redis Cluster: one pipeline per hash slot, all in flight at once.
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        prefix: String,
    },
    /// Concurrent requests, at most `connections` at once (so that many keep-alive connections),
    /// each with one message or an array of up to `batch`.
    Http {
        client: reqwest::Client,
        url: String,
        key: Option<String>,
        connections: Arc<Semaphore>,
        batch: usize,
    },
    Ws(SplitSink<Socket, Message>),
    /// The baseline's own timer (`POST /timer`): the whole step is one request.
    Timer {
        client: reqwest::Client,
        url: String,
    },
}

impl Publisher {
    /// A publisher to `url` (the target's first WebSocket URL) the `--publish` way.
    async fn new(args: &BenchArgs, url: &str) -> anyhow::Result<Self> {
        Ok(match args.publish {
            PublishVia::Redis if args.redis_cluster => {
                let client = redis::cluster::ClusterClient::new(vec![args.redis_url.as_str()])?;
                let conn = client.get_async_connection().await.context("connecting to the redis cluster")?;
                Self::Cluster { conn, prefix: args.redis_prefix.clone() }
            }
            PublishVia::Redis => {
                let client = redis::Client::open(args.redis_url.as_str())?;
                let conn = client.get_multiplexed_async_connection().await.context("connecting to redis")?;
                Self::Redis { conn, prefix: args.redis_prefix.clone() }
            }
            PublishVia::Http => Self::Http {
                client: reqwest::Client::new(),
                url: format!("{}/api/publish", http_origin(url)),
                key: args.api_key.clone(),
                connections: Arc::new(Semaphore::new(args.http_connections.max(1))),
                batch: args.http_batch,
            },
            PublishVia::Timer => {
                Self::Timer { client: reqwest::Client::new(), url: format!("{}/timer", http_origin(url)) }
            }
            PublishVia::Ws => {
                let url = url.replace(ROUTE_GROUP, "0");
                let ws = join(&url, IpAddr::V4(Ipv4Addr::LOCALHOST), &Entry::Joined).await?;
                let (sink, mut stream) = ws.split();
                // Replies are read and dropped so the gateway never sees a slow publisher.
                tokio::spawn(async move { while stream.next().await.is_some() {} });
                Self::Ws(sink)
            }
        })
    }

    /// Publishes one batch of `(group, data)` messages, all in flight at once: one Redis
    /// pipeline, concurrent HTTP requests, or WebSocket frames flushed together. Returns how
    /// many failed.
    async fn publish(&mut self, batch: &[Outgoing]) -> u64 {
        match self.try_publish(batch).await {
            Ok(failed) => failed,
            Err(e) => {
                tracing::debug!(error = %e, "publish failed");
                batch.len() as u64
            }
        }
    }

    /// [`Publisher::publish`], failing as a whole except for HTTP, where each request counts.
    async fn try_publish(&mut self, batch: &[Outgoing]) -> anyhow::Result<u64> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut pipe = redis::pipe();
                for (group, data) in batch {
                    pipe.cmd("SPUBLISH")
                        .arg(herald::group_channel(prefix, group))
                        .arg(protocol::message(group, data).as_str())
                        .ignore();
                }
                pipe.query_async::<()>(conn).await?;
            }
            Self::Cluster { conn, prefix } => {
                let mut slots: std::collections::HashMap<u16, redis::Pipeline> =
                    std::collections::HashMap::new();
                for (group, data) in batch {
                    slots
                        .entry(herald::group_slot(prefix, group))
                        .or_insert_with(redis::pipe)
                        .cmd("SPUBLISH")
                        .arg(herald::group_channel(prefix, group))
                        .arg(protocol::message(group, data).as_str())
                        .ignore();
                }
                let sends = slots.values().map(|pipe| {
                    let mut conn = conn.clone();
                    async move { pipe.query_async::<()>(&mut conn).await }
                });
                futures_util::future::try_join_all(sends).await?;
            }
            Self::Http { client, url, key, connections, batch: per_request } => {
                let requests = batch.chunks(*per_request).map(|chunk| {
                    let messages: Vec<_> = chunk
                        .iter()
                        .map(|(group, data)| serde_json::json!({"group": group.as_str(), "data": data}))
                        .collect();
                    let body = match &messages[..] {
                        [one] if *per_request == 1 => one.to_string(),
                        _ => serde_json::Value::from(messages).to_string(),
                    };
                    let mut request =
                        client.post(url.as_str()).header("content-type", "application/json").body(body);
                    if let Some(key) = key {
                        request = request.bearer_auth(key);
                    }
                    let connections = connections.clone();
                    async move {
                        let _connection = connections.acquire_owned().await?;
                        let response = request.send().await?;
                        anyhow::ensure!(
                            response.status().is_success(),
                            "publish answered {}",
                            response.status()
                        );
                        Ok(refused_in_batch(&response.bytes().await?))
                    }
                });
                let answers = futures_util::future::join_all(requests).await;
                let mut failed = 0;
                for (answer, chunk) in answers.into_iter().zip(batch.chunks(*per_request)) {
                    match answer {
                        Ok(refused) => failed += refused,
                        Err(e) => {
                            tracing::debug!(error = %e, "publish failed");
                            failed += chunk.len() as u64;
                        }
                    }
                }
                return Ok(failed);
            }
            Self::Timer { .. } => anyhow::bail!("the timer publishes by itself"),
            Self::Ws(sink) => {
                for (group, data) in batch {
                    let frame = ClientFrame::Publish { group, data }.encode();
                    sink.feed(Message::text(frame)).await?;
                }
                sink.flush().await?;
            }
        }
        Ok(0)
    }
}

/// The HTTP origin (`http://host:port`) of a WebSocket URL.
fn http_origin(url: &str) -> String {
    let base = url.replacen("ws://", "http://", 1).replacen("wss://", "https://", 1);
    base.split('/').take(3).collect::<Vec<_>>().join("/")
}

/// The publishing pace shared by the load's publisher and the baseline's timer: every
/// millisecond, the numbers of the messages due by then at `rate` per second.
pub struct Pace {
    rate: u64,
    duration: Duration,
    started: Instant,
    ticks: tokio::time::Interval,
    sent: u64,
}

impl Pace {
    pub fn new(rate: u64, duration: Duration) -> Self {
        let ticks = tokio::time::interval(Duration::from_millis(1));
        Self { rate, duration, started: Instant::now(), ticks, sent: 0 }
    }

    /// The messages due at the next millisecond (maybe none); `None` once the duration is over.
    pub async fn next(&mut self) -> Option<std::ops::Range<u64>> {
        if self.started.elapsed() >= self.duration {
            return None;
        }
        self.ticks.tick().await;
        let due = ((self.rate as f64 * self.started.elapsed().as_secs_f64()) as u64).max(self.sent);
        let due_now = self.sent..due;
        self.sent = due;
        Some(due_now)
    }

    /// How many messages were due so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A bench message's data: its publish time, and `pad` to make up the size.
pub fn payload(pad: &str) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"t":{},"p":"{pad}"}}"#, now_us())).expect("JSON payload")
}

/// Messages of a batch answer (`{"results": [...]}`) that were not published.
fn refused_in_batch(body: &[u8]) -> u64 {
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let results = answer["results"].as_array().map_or(&[][..], Vec::as_slice);
    results.iter().filter(|result| result["ok"] != true).count() as u64
}

/// Publishes `rate` messages per second for the step's duration, spread over the groups; the
/// payload carries its publish time. Returns how many were published.
async fn publish_steadily(
    args: &BenchArgs,
    publisher: &mut Publisher,
    rate: u64,
    stats: &Stats,
    name: &str,
) -> anyhow::Result<u64> {
    if let Publisher::Timer { client, url } = publisher {
        let timer = serde_json::json!({
            "rate": rate, "size": args.size, "groups": args.groups, "millis": args.duration.as_millis() as u64,
        });
        let request =
            client.post(url.as_str()).header("content-type", "application/json").body(timer.to_string());
        let answer = request.send().await?.error_for_status()?.bytes().await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        eprint!("\r{name} at {rate} msg/s from its timer: {} deliveries   ", stats.deliveries());
        return answer["published"].as_u64().context("the timer's answer");
    }
    let pad = "x".repeat(args.size.saturating_sub(28));
    let mut pace = Pace::new(rate, args.duration);
    let mut next_report = Duration::from_secs(1);
    while let Some(due) = pace.next().await {
        let batch: Vec<Outgoing> =
            due.map(|n| (bench_group(n % args.groups as u64), payload(&pad))).collect();
        let failed = publisher.publish(&batch).await;
        stats.errors.fetch_add(failed, Ordering::Relaxed);
        if pace.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let sent = pace.sent();
            eprint!("\r{name} at {rate} msg/s: {sent} published, {} deliveries   ", stats.deliveries());
            let _ = std::io::stderr().flush();
        }
    }
    Ok(pace.sent())
}

/// Linux reports process CPU time in ticks of 1/100 s on every common architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU ticks of each process, if all could be read.
fn cpu_ticks_each(pids: &[u32]) -> Option<Vec<u64>> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| process_ticks(pid).map(|(user, system)| user + system)).collect()
}

/// User and system CPU ticks of the processes together, if all could be read.
fn cpu_ticks(pids: &[u32]) -> Option<(u64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0, 0), |(user, system), &pid| {
        let (u, s) = process_ticks(pid)?;
        Some((user + u, system + s))
    })
}

/// A process's user and system CPU ticks (`/proc/<pid>/stat`).
fn process_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_type_of_a_frame() {
        assert_eq!(frame_type(r#"{"type":"reply","id":1}"#), Some("reply"));
        assert_eq!(frame_type(r#"{"type":"welcome","client":"gw-1"}"#), Some("welcome"));
        assert_eq!(frame_type(r#"{"type": "reply", "id": 1}"#), Some("reply"));
        assert_eq!(frame_type(r#"{"group":"bench.0"}"#), None);
    }

    #[test]
    fn reads_the_publish_time_from_a_frame() {
        let frame = r#"{"type":"message","group":"bench.0","data":{"t":1732712345123456,"p":"xx"}}"#;
        assert_eq!(publish_time(frame), Some(1_732_712_345_123_456));
        assert_eq!(publish_time(r#"{"type": "message", "data": {"t": 17, "p": "x"}}"#), Some(17));
        assert_eq!(publish_time(r#"{"type":"reply","id":1}"#), None);
    }
}
