//! Test harness: real `redis-server` processes on free ports, gateways on port 0, real
//! WebSocket and HTTP clients. Everything started here is stopped on `Drop`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::config::Config;
use herald::gateway::{self, Gateway};
use herald::metrics::Metrics;
use herald::scheduler::Scheduler;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for; generous so a loaded machine does not fail tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `check` until it returns true or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The Python of the test virtualenv, with the real `channels` and `channels_redis` packages
/// (`TEST_VENV_PYTHON`, which `scripts/test.sh` sets after creating `target/test-venv`).
pub fn python() -> PathBuf {
    let python = std::env::var_os("TEST_VENV_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run the tests with scripts/test.sh, which creates it",
        python.display()
    );
    python
}

/// The value of an exact metric line (`name{labels}`), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private `redis-server` without persistence.
pub struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut redis = Self { port: free_port(), child: None };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("could not start redis-server");
    }

    /// Starts the server on `self.port`; false if it did not come up (port taken).
    async fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        self.child = start_server(
            &["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            self.port,
        )
        .await;
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILLs the server (data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "redis-server did not restart on port {}", self.port);
    }

    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let value = query_port(self.port, args).await.expect("redis query");
        redis::from_redis_value(value).expect("redis reply type")
    }

    /// Waits until a position read from this Redis is trusted: a full second after it started.
    /// LASTSAVE, which a restart resets, counts whole seconds, so data lost by a restart within
    /// that second would go unnoticed: recovery from a position read earlier reports it lost.
    pub async fn settled(&self) {
        eventually("redis a full second old", || async {
            let began: i64 = self.query(&["LASTSAVE"]).await;
            let (now, _): (i64, i64) = self.query(&["TIME"]).await;
            now > began
        })
        .await;
    }

    /// A command whose arguments are bytes.
    pub async fn query_bytes<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis connection");
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.expect("redis query")
    }

    /// Subscribers of one Redis channel, across all connections (`PUBSUB NUMSUB`).
    pub async fn numsub(&self, channel: &str) -> i64 {
        let reply: (String, i64) = self.query(&["PUBSUB", "NUMSUB", channel]).await;
        reply.1
    }

    /// Subscribers of one Redis shard channel (`PUBSUB SHARDNUMSUB`), as gateways hold them.
    pub async fn shard_numsub(&self, channel: &str) -> i64 {
        let reply: (String, i64) = self.query(&["PUBSUB", "SHARDNUMSUB", channel]).await;
        reply.1
    }

    /// Calls of one command since start, from `INFO commandstats`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = self.query(&["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-server` with `args` and waits until it answers `PING` on `port`; `None` if it
/// exited or did not answer in 5 s (killed then).
pub async fn start_server(args: &[&str], port: u16) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if query_port(port, &["PING"]).await.is_ok() {
            return Some(child);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// One command to the Redis (or sentinel) on `port` of this host.
pub async fn query_port(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await
}

/// A config for a test gateway: loopback, port 0, the given Redis (or in-memory).
pub fn config(redis: Option<&Redis>, node_id: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: redis.map(Redis::url),
        node_id: node_id.into(),
        drain_period: Duration::from_millis(300),
        ..Config::default()
    }
}

/// A task of this process that runs until its token is cancelled: on `stop`, or on drop.
struct Running {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn spawn(shutdown: CancellationToken, task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self { shutdown, task: Some(tokio::spawn(task)) }
    }

    /// Cancels the token and waits until the task has finished.
    async fn stop(&mut self, what: &str) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap_or_else(|_| panic!("{what} stops")).unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One gateway instance running in this process.
pub struct Node {
    pub addr: SocketAddr,
    pub id: String,
    running: Running,
}

impl Node {
    pub async fn start(config: Config) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let id = config.node_id.clone();
        let shutdown = CancellationToken::new();
        config.validate().expect("valid config");
        let gateway = Gateway::new(config, shutdown.clone()).expect("gateway config");
        let running =
            Running::spawn(shutdown, async move { gateway::serve(listener, gateway).await.unwrap() });
        Self { addr, id, running }
    }

    /// A started gateway whose broker is ready (its Redis subscriber connected).
    pub async fn ready(config: Config) -> Self {
        let node = Self::start(config).await;
        eventually("gateway ready", || async { node.get("/readyz").await.0 == 200 }).await;
        node
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A client on `/ws` that has read its welcome.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url("/ws")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, &[], "").await
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        http_raw(self.addr, "GET", "/metrics", &[], "").await.1
    }

    /// `POST /api/publish` from loopback without a key.
    pub async fn publish(&self, group: &str, data: Value) -> (u16, Value) {
        let body = json!({"group": group, "data": data}).to_string();
        http(self.addr, "POST", "/api/publish", &[], &body).await
    }

    /// Stops the gateway and waits until it has closed its sessions.
    pub async fn stop(mut self) {
        self.running.stop("gateway").await;
    }
}

/// A minimal HTTP/1.1 client: one request per connection with a JSON body, JSON (or empty)
/// body back.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let headers: Vec<_> =
        [("content-type", "application/json")].into_iter().chain(headers.iter().copied()).collect();
    let (status, body) = http_raw(addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// One HTTP/1.1 request with exactly the given headers; the status and the body as text.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("http response").unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    (status, text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client speaking protocol v1.
pub struct Client {
    ws: Socket,
    next_id: u64,
    /// The code of the close frame that ended [`Client::try_recv`], if one did.
    closed_with: Option<u16>,
    /// Frames read while waiting for something else (a reply), in arrival order.
    buffered: VecDeque<Value>,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[]).await.expect("websocket connect")
    }

    /// Connects with extra handshake headers and reads the welcome; `Err` carries the HTTP
    /// status of a refusal.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        let mut client = Self::open(url, headers).await?;
        client.welcome = client.read().await;
        assert_eq!(client.welcome["type"], "welcome", "first frame is the welcome");
        Ok(client)
    }

    /// Opens the WebSocket without reading anything.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        Self::open_from(None, url, headers).await
    }

    /// Opens the WebSocket from a given loopback source address (127.0.0.x), or any.
    pub async fn open_from(source: Option<&str>, url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let authority = request.uri().authority().unwrap().as_str().to_string();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(source) = source {
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        }
        let stream = socket.connect(authority.parse().unwrap()).await.expect("tcp connect");
        let stream = MaybeTlsStream::Plain(stream);
        let ws = match tokio_tungstenite::client_async(request, stream).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(response.status().as_u16());
            }
            Err(e) => panic!("websocket connect: {e}"),
        };
        Ok(Self { ws, next_id: 1, closed_with: None, buffered: VecDeque::new(), welcome: Value::Null })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send");
    }

    /// Sends a binary frame (the protocol only speaks text).
    pub async fn ws_binary(&mut self, bytes: &'static [u8]) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next text frame, parsed; panics on close or after `WAIT`.
    async fn read(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("frame in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("server frames are JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame, or `None` once the connection is closed or broken.
    pub async fn try_recv(&mut self) -> Option<Value> {
        if let Some(frame) = self.buffered.pop_front() {
            return Some(frame);
        }
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("frame in time") {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).expect("JSON")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    self.closed_with = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    return None;
                }
                _ => return None,
            }
        }
    }

    /// The next frame, buffered ones first.
    pub async fn recv(&mut self) -> Value {
        match self.buffered.pop_front() {
            Some(frame) => frame,
            None => self.read().await,
        }
    }

    /// Sends `request` with a fresh id and returns its `reply` or `error`; other frames that
    /// arrive meanwhile are kept for [`Client::recv`].
    pub async fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(request.to_string()).await;
        self.answer_to(id).await
    }

    async fn answer_to(&mut self, id: u64) -> Value {
        loop {
            let frame = self.read().await;
            if frame["id"] == json!(id) && (frame["type"] == "reply" || frame["type"] == "error") {
                return frame;
            }
            self.buffered.push_back(frame);
        }
    }

    /// The next frame that is not a message.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] != "message" {
                return frame;
            }
        }
    }

    pub async fn subscribe(&mut self, group: &str) {
        let answer = self.request(json!({"type": "subscribe", "group": group})).await;
        assert_eq!(answer["type"], "reply", "subscribe {group}: {answer}");
    }

    pub async fn unsubscribe(&mut self, group: &str) {
        let answer = self.request(json!({"type": "unsubscribe", "group": group})).await;
        assert_eq!(answer["type"], "reply", "unsubscribe {group}: {answer}");
    }

    pub async fn publish(&mut self, group: &str, data: Value) -> Value {
        self.request(json!({"type": "publish", "group": group, "data": data})).await
    }

    /// The next `message` frame's `(group, data)`, skipping join/leave events.
    pub async fn message(&mut self) -> (String, Value) {
        let mut frame = self.recv().await;
        while frame["type"] == "join" || frame["type"] == "leave" {
            frame = self.recv().await;
        }
        assert_eq!(frame["type"], "message", "expected a message, got {frame}");
        (frame["group"].as_str().unwrap().to_string(), frame["data"].clone())
    }

    /// Asserts nothing but the answer to a ping arrives: a round trip proves that any message
    /// sent before it would already be here.
    pub async fn assert_no_message(&mut self) {
        let answer = self.request(json!({"type": "ping"})).await;
        assert_eq!(answer["type"], "reply");
        assert!(self.buffered.is_empty(), "unexpected frames: {:?}", self.buffered);
    }

    /// The close code that ended [`Client::try_recv`], if the server sent one.
    pub fn last_close_code(&self) -> Option<u16> {
        self.closed_with
    }

    /// Reads until the server's close frame and returns its code (text frames are skipped).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns its code and reason.
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// A scheduler running in this process, stopped (lease released) on `stop` or drop.
pub struct InProcessScheduler {
    pub scheduler: Arc<Scheduler>,
    running: Running,
}

impl InProcessScheduler {
    pub fn start(config: &Config) -> Self {
        assert!(config.redis().is_some(), "scheduler tests use redis");
        let metrics = Arc::new(Metrics::default());
        let scheduler = Arc::new(Scheduler::on_redis(config, metrics).expect("valid scheduler config"));
        let shutdown = CancellationToken::new();
        let running = Running::spawn(shutdown.clone(), scheduler.clone().run(shutdown));
        Self { scheduler, running }
    }

    /// The job counter `pick` of `job`.
    pub fn count(&self, job: &str, pick: fn(&Metrics, &str) -> u64) -> u64 {
        pick(self.scheduler.metrics(), job)
    }

    pub async fn stop(mut self) {
        self.running.stop("scheduler").await;
    }
}

/// A `herald gateway` process on a free port, ready when returned.
pub struct GatewayProcess {
    pub process: Process,
    pub addr: SocketAddr,
}

impl GatewayProcess {
    /// Starts `herald gateway` with `toml` (which should set `redis_url` and `node_id`).
    pub async fn start(toml: &str) -> Self {
        Self::start_with_env(toml, &[]).await
    }

    /// [`GatewayProcess::start`] with extra environment variables.
    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_at(addr, toml, env).await
    }

    /// A gateway on `addr` (e.g. again where a killed one listened).
    pub async fn start_at(addr: SocketAddr, toml: &str, env: &[(&str, &str)]) -> Self {
        let process = Process::spawn_with_env(&["gateway", "--listen", &addr.to_string()], toml, env);
        let mut ready = false;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && http(addr, "GET", "/readyz", &[], "").await.0 == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "gateway process on {addr} did not become ready: {}", process.log());
        Self { process, addr }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }
}

/// A `herald` process of this build, SIGKILLed on drop.
pub struct Process {
    child: Option<Child>,
    config: PathBuf,
    /// Where the process's stderr goes (a file, so a chatty process never blocks on a pipe).
    log: PathBuf,
}

impl Process {
    /// Runs `herald <args> --config <file>` with `toml` written to a fresh file.
    pub fn spawn(args: &[&str], toml: &str) -> Self {
        Self::spawn_with_env(args, toml, &[])
    }

    /// [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], toml: &str, env: &[(&str, &str)]) -> Self {
        let (config, log) = (temp_file("toml"), temp_file("log"));
        std::fs::write(&config, toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("herald binary");
        Self { child: Some(child), config, log }
    }

    /// Resident memory of the process, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Waits until the process accepts connections on `addr`; fails the test with the
    /// process's log if it does not within [`WAIT`].
    pub async fn listening(&self, addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("herald did not listen on {addr} within {WAIT:?}; its log:\n{}", self.log());
    }

    /// What the process has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; returns its exit code and what it wrote to stderr.
    pub fn wait_output(mut self) -> (Option<i32>, String) {
        let status = self.child.take().expect("running").wait().unwrap();
        (status.code(), std::fs::read_to_string(&self.log).unwrap())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn temp_file(ext: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("herald-test-{}-{n}.{ext}", std::process::id()))
}
