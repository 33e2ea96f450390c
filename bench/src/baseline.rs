//! The baseline: a minimal WebSocket broadcast server, the machine's own ceiling for a load.
//!
//! It runs as a process of its own (`herald-bench` starts itself with `--serve-baseline`), like
//! a gateway, so its CPU and memory are measured the same way and it does not share a runtime
//! with the load's clients. It does what the best possible server would do for a broadcast and
//! nothing more: every message is one shared frame pushed to the queue of each member of its
//! group, and one task per client takes everything queued and flushes once per burst; no
//! protocol, no broker, no limits. A client joins its groups (bench groups by number) the way
//! Herald's clients of the same load do, so that both servers hear the same conversation: from
//! the URL (`/ws?groups=0,5`) where a gateway route joins them, or with a `subscribe` frame
//! (`{"type":"subscribe","group":"bench.5","id":1}`) answered with a fixed `reply`.
//! Its intakes are the ones Herald has, minus the work: `SSUBSCRIBE` to the bench groups'
//! channels on Redis (the frame is the message as published), `POST /api/publish` (`{"group",
//! "data"}` or an array of them, answered at once), and `publish` frames from its WebSocket
//! clients; and one Herald has not, a timer in the server itself (`POST /timer`), for the
//! ceiling of fan-out with no publisher in the way.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use herald::group::GroupName;
use herald::protocol;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;

use crate::load::{Pace, bench_group, payload};
use crate::lock;

/// Frames queued per client before a lagging client is dropped (Herald's `outbound_queue`).
const LAG: usize = 1024;

/// What the baseline process needs to know: where the gateways' Redis is, and the groups.
pub struct ServeArgs<'a> {
    pub redis_url: &'a str,
    pub redis_prefix: &'a str,
    pub groups: usize,
}

/// The baseline server process, killed on drop.
pub struct Baseline {
    pub addr: SocketAddr,
    pub pid: u32,
    child: tokio::process::Child,
}

impl Baseline {
    /// Starts `herald-bench --serve-baseline` and waits until it listens and is subscribed.
    pub async fn start(args: &ServeArgs<'_>) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--serve-baseline", "--redis-url", args.redis_url, "--redis-prefix", args.redis_prefix])
            .args(["--groups", &args.groups.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the baseline server")?;
        let pid = child.id().context("the baseline server exited")?;
        let stdout = child.stdout.take().context("the baseline server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let addr = line.trim().strip_prefix("listening on ").context("the baseline server did not start")?;
        Ok(Self { addr: addr.parse()?, pid, child })
    }

    /// Stops the server; its connections go with it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Runs the baseline server in this process until it is killed: prints `listening on <addr>`
/// once it serves and its Redis subscriptions are confirmed.
pub async fn serve(args: ServeArgs<'_>) -> anyhow::Result<()> {
    let groups = Arc::new(Groups((0..args.groups).map(|_| Mutex::default()).collect()));
    let channels =
        (0..args.groups).map(|n| herald::group_channel(args.redis_prefix, &bench_group(n as u64))).collect();
    tokio::spawn(redis_intake(args.redis_url.to_string(), channels, groups.clone()).await?);
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/api/publish", post(http_intake))
        .route("/timer", post(timer_intake))
        .with_state(groups);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("listening on {addr}\n").as_bytes()).await?;
    stdout.flush().await?;
    accept(listener, app).await
}

/// Serves `app` on every connection with hyper's HTTP/1 connection and without delay on small
/// writes, as a gateway does (`axum::serve`, and hyper-util's automatic builder even when told
/// HTTP/1 only, first read each connection's opening bytes to look for HTTP/2, a cost per
/// connection Herald does not pay).
async fn accept(listener: tokio::net::TcpListener, app: Router) -> anyhow::Result<()> {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;

    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// The members of each bench group, by number.
struct Groups(Vec<Mutex<Vec<Arc<Queue>>>>);

impl Groups {
    /// Queues `frame` for every member of group `n`.
    fn deliver(&self, n: usize, frame: Utf8Bytes) {
        if let Some(members) = self.0.get(n) {
            for queue in lock(members).iter() {
                queue.push(frame.clone());
            }
        }
    }

    /// Queues a message handed over by name (`bench.<n>`).
    fn publish(&self, publish: &Publish) {
        if let Some(n) = number(&publish.group) {
            self.deliver(n, protocol::message(&publish.group, &publish.data));
        }
    }

    /// Makes `queue` a member of group `n` (a bench group by number).
    fn join(&self, n: usize, queue: &Arc<Queue>) -> bool {
        let Some(members) = self.0.get(n) else { return false };
        lock(members).push(queue.clone());
        true
    }
}

/// One client's frames, waiting for its writer.
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    ready: Notify,
    /// Set when the client fell `LAG` frames behind: it is dropped.
    lagged: AtomicBool,
}

impl Queue {
    fn push(&self, frame: Utf8Bytes) {
        let mut frames = lock(&self.frames);
        if frames.len() >= LAG {
            self.lagged.store(true, Ordering::Relaxed);
        } else {
            frames.push_back(frame);
        }
        drop(frames);
        self.ready.notify_one();
    }
}

/// The number of bench group `bench.<n>`.
fn number(group: &GroupName) -> Option<usize> {
    group.as_str().strip_prefix("bench.")?.parse().ok()
}

/// `?groups=0,5`: the bench groups a client is in from the start (none when absent: it sends
/// `subscribe` frames).
#[derive(Deserialize)]
struct Join {
    groups: Option<String>,
}

async fn upgrade(
    State(groups): State<Arc<Groups>>,
    Query(join): Query<Join>,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    let member_of: Vec<usize> =
        join.groups.iter().flat_map(|list| list.split(',')).filter_map(|n| n.parse().ok()).collect();
    // Herald's buffer sizes: a small read buffer (grown for larger frames) costs less per
    // connection.
    ws.read_buffer_size(256)
        .write_buffer_size(8192)
        .on_upgrade(move |socket| client(socket, groups, member_of))
}

/// One client: every frame queued for it is written, a burst at a time with one flush; its own
/// `publish` frames are delivered to their group, its `subscribe` frames join it and are
/// answered.
async fn client(socket: WebSocket, groups: Arc<Groups>, mut member_of: Vec<usize>) {
    let queue = Arc::new(Queue::default());
    member_of.retain(|&n| groups.join(n, &queue));
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            () = queue.ready.notified() => {
                if queue.lagged.load(Ordering::Relaxed) {
                    break; // a slow consumer
                }
                let burst = std::mem::take(&mut *lock(&queue.frames));
                let mut written = true;
                for frame in burst {
                    written = written && sink.feed(Message::Text(frame)).await.is_ok();
                }
                if !written || sink.flush().await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Incoming>(&text) {
                    Ok(Incoming { group, data: Some(data), .. }) => groups.publish(&Publish { group, data }),
                    Ok(Incoming { group, data: None, id }) => {
                        if let Some(n) = number(&group).filter(|&n| groups.join(n, &queue)) {
                            member_of.push(n);
                        }
                        let reply = format!(r#"{{"type":"reply","id":{}}}"#, id.unwrap_or_default());
                        if sink.send(Message::text(reply)).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => {}
                },
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    for &n in &member_of {
        if let Some(members) = groups.0.get(n) {
            lock(members).retain(|member| !Arc::ptr_eq(member, &queue));
        }
    }
}

/// A message handed to the baseline: `{"group": G, "data": D}`.
#[derive(Deserialize)]
struct Publish {
    group: GroupName,
    data: Box<RawValue>,
}

/// A frame from a WebSocket client: a `publish` (with `data`) or a `subscribe` (without).
#[derive(Deserialize)]
struct Incoming {
    group: GroupName,
    data: Option<Box<RawValue>>,
    id: Option<u64>,
}

/// `POST /api/publish`: one message, or an array of them.
async fn http_intake(State(groups): State<Arc<Groups>>, body: Bytes) -> axum::http::StatusCode {
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<Publish>>(&body).map(|all| all.iter().for_each(|p| groups.publish(p)))
    } else {
        serde_json::from_slice::<Publish>(&body).map(|publish| groups.publish(&publish))
    };
    match parsed {
        Ok(()) => axum::http::StatusCode::OK,
        Err(_) => axum::http::StatusCode::BAD_REQUEST,
    }
}

/// What `POST /timer` asks for: `rate` messages per second with `size`-byte payloads, spread
/// over the first `groups` bench groups, for `millis`.
#[derive(Deserialize)]
pub struct Timer {
    pub rate: u64,
    pub size: usize,
    pub groups: usize,
    pub millis: u64,
}

/// `POST /timer`: publishes as the load's publisher would, from a timer in this process, and
/// answers how many messages it published once the time is up.
async fn timer_intake(
    State(groups): State<Arc<Groups>>,
    axum::Json(timer): axum::Json<Timer>,
) -> axum::Json<serde_json::Value> {
    let pad = "x".repeat(timer.size.saturating_sub(28));
    let mut pace = Pace::new(timer.rate, std::time::Duration::from_millis(timer.millis));
    while let Some(due) = pace.next().await {
        for n in due {
            let data = payload(&pad);
            let group = (n % timer.groups.max(1) as u64) as usize;
            groups.deliver(group, protocol::message(&bench_group(group as u64), &data));
        }
    }
    axum::Json(serde_json::json!({ "published": pace.sent() }))
}

/// Subscribes to `channels` on the Redis at `url` (raw RESP2, as little work as a subscriber can
/// do) and returns the task that broadcasts every message, once every subscription is confirmed.
async fn redis_intake(
    url: String,
    channels: Vec<String>,
    groups: Arc<Groups>,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use redis_protocol::codec::Resp2;
    use redis_protocol::resp2::types::BytesFrame;
    use tokio_util::codec::FramedRead;

    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else { anyhow::bail!("a redis:// URL") };
    let stream =
        tokio::net::TcpStream::connect((host.as_str(), *port)).await.context("connecting to redis")?;
    let (reader, mut writer) = stream.into_split();
    let mut subscribe = Vec::new();
    for channel in &channels {
        redis::cmd("SSUBSCRIBE").arg(channel).write_packed_command(&mut subscribe);
    }
    writer.write_all(&subscribe).await?;
    let mut reader = FramedRead::new(reader, Resp2::default());
    let mut confirmed = 0;
    while confirmed < channels.len() {
        match reader.next().await {
            Some(Ok(BytesFrame::Array(parts)))
                if parts.first() == Some(&BytesFrame::BulkString("ssubscribe".into())) =>
            {
                confirmed += 1;
            }
            Some(Ok(other)) => anyhow::bail!("unexpected reply to SSUBSCRIBE: {other:?}"),
            _ => anyhow::bail!("redis closed the baseline's subscription"),
        }
    }
    let numbers: HashMap<Bytes, usize> =
        channels.into_iter().enumerate().map(|(n, channel)| (Bytes::from(channel), n)).collect();
    Ok(async move {
        let _writer = writer;
        while let Some(Ok(BytesFrame::Array(parts))) = reader.next().await {
            if let [_, BytesFrame::BulkString(channel), BytesFrame::BulkString(payload)] = &parts[..]
                && let Some(&n) = numbers.get(channel)
                && let Ok(frame) = Utf8Bytes::try_from(payload.clone())
            {
                groups.deliver(n, frame);
            }
        }
    })
}
