//! The baseline: a minimal WebSocket broadcast server, the machine's own ceiling for a load.
//!
//! It runs as a process of its own (`herald-bench` starts itself with `--serve-baseline`), like
//! a gateway, so its CPU and memory are measured the same way and it does not share a runtime
//! with the load's clients. It does what the best possible server would do for a broadcast and
//! nothing more: every message is one shared frame sent to every client, by one task per client
//! that takes everything queued and flushes once per burst; no protocol, no broker, no limits.
//! Its intakes are the ones Herald has, minus the work: `SSUBSCRIBE` to the bench groups'
//! channels on Redis (the frame is the message as published), `POST /api/publish` (`{"group",
//! "data"}`, answered at once), and `publish` frames from its WebSocket clients.

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use herald::group::GroupName;
use herald::protocol;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

/// Frames in flight per client before a lagging client is dropped (Herald's `outbound_queue`).
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
    let (frames, _) = broadcast::channel::<Utf8Bytes>(LAG);
    let groups: Vec<GroupName> =
        (0..args.groups).map(|n| GroupName::new(&format!("bench.{n}")).expect("bench group")).collect();
    let channels = groups.iter().map(|g| herald::group_channel(args.redis_prefix, g)).collect();
    tokio::spawn(redis_intake(args.redis_url.to_string(), channels, frames.clone()).await?);
    let app =
        Router::new().route("/ws", get(upgrade)).route("/api/publish", post(http_intake)).with_state(frames);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("listening on {addr}\n").as_bytes()).await?;
    stdout.flush().await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    State(frames): State<broadcast::Sender<Utf8Bytes>>,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    ws.read_buffer_size(4096).write_buffer_size(8192).on_upgrade(move |socket| client(socket, frames))
}

/// One client: every frame queued for it is written, a burst at a time with one flush; its own
/// `publish` frames are broadcast.
async fn client(socket: WebSocket, frames: broadcast::Sender<Utf8Bytes>) {
    let mut queue = frames.subscribe();
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = queue.recv() => {
                let Ok(frame) = frame else { return }; // lagged or closed: a slow consumer
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                loop {
                    match queue.try_recv() {
                        Ok(frame) => if sink.feed(Message::Text(frame)).await.is_err() { return },
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(publish) = serde_json::from_str::<Publish>(&text) {
                        let _ = frames.send(publish.frame());
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// A message handed to the baseline: `{"group": G, "data": D}` (with `"type": "publish"` from a
/// WebSocket client).
#[derive(Deserialize)]
struct Publish {
    group: GroupName,
    data: Box<RawValue>,
}

impl Publish {
    fn frame(&self) -> Utf8Bytes {
        protocol::message(&self.group, &self.data)
    }
}

async fn http_intake(
    State(frames): State<broadcast::Sender<Utf8Bytes>>,
    body: Bytes,
) -> axum::http::StatusCode {
    match serde_json::from_slice::<Publish>(&body) {
        Ok(publish) => {
            let _ = frames.send(publish.frame());
            axum::http::StatusCode::OK
        }
        Err(_) => axum::http::StatusCode::BAD_REQUEST,
    }
}

/// Subscribes to `channels` on the Redis at `url` (raw RESP2, as little work as a subscriber can
/// do) and returns the task that broadcasts every message, once every subscription is confirmed.
async fn redis_intake(
    url: String,
    channels: Vec<String>,
    frames: broadcast::Sender<Utf8Bytes>,
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
    Ok(async move {
        let _writer = writer;
        while let Some(Ok(BytesFrame::Array(mut parts))) = reader.next().await {
            if let (3, Some(BytesFrame::BulkString(payload))) = (parts.len(), parts.pop())
                && let Ok(frame) = Utf8Bytes::try_from(payload)
            {
                let _ = frames.send(frame);
            }
        }
    })
}
