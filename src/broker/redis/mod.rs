//! Redis broker: pooled commands for publishing, one dedicated pub/sub connection for receiving.
//!
//! Publishing ([`RedisPublisher`]) is one `PUBLISH <prefix>:group:<group> <frame>` on a
//! connection from a deadpool-redis pool. Receiving runs in the [`subscriber`] task, which owns
//! the instance's only pub/sub connection: the hub's subscribe/unsubscribe calls reach it
//! through an unbounded channel (so they never block and stay in call order), and it reconnects
//! with backoff and resubscribes every wanted group when Redis comes back.

mod directory;
mod history;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use deadpool_redis::{Pool, Runtime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use serde_json::value::RawValue;

use super::{
    Answer, Broker, BrokerError, HistoryPolicy, HistorySlice, NodeInfo, Publisher, Sink, Subscription,
    publish_plain,
};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::protocol::{ClientInfo, MessageParts};
use directory::Directory;
use subscriber::{Command, Subscriber};

/// How long one Redis command may take before it is reported as `unavailable`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pooled command connections; each is multiplexed, so a few carry any publish rate.
const POOL_SIZE: usize = 8;

/// A command pool for `url`. Redis need not be reachable yet: connections are made on use.
pub fn pool(url: &str) -> Result<Pool, BrokerError> {
    deadpool_redis::Config::from_url(url)
        .builder()
        .map_err(bad_url)?
        .max_size(POOL_SIZE)
        .wait_timeout(Some(COMMAND_TIMEOUT))
        .create_timeout(Some(COMMAND_TIMEOUT))
        .recycle_timeout(Some(COMMAND_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(bad_url)
}

/// Runs one command on a pooled connection within [`COMMAND_TIMEOUT`].
pub async fn query<T: redis::FromRedisValue>(pool: &Pool, cmd: &redis::Cmd) -> Result<T, BrokerError> {
    in_time(async {
        let mut conn = pool.get().await.map_err(unavailable)?;
        cmd.query_async::<T>(&mut conn).await.map_err(unavailable)
    })
    .await
}

/// Runs a Lua script on a pooled connection within [`COMMAND_TIMEOUT`].
pub async fn invoke<T: redis::FromRedisValue>(
    pool: &Pool,
    script: &redis::ScriptInvocation<'_>,
) -> Result<T, BrokerError> {
    in_time(async {
        let mut conn = pool.get().await.map_err(unavailable)?;
        script.invoke_async::<T>(&mut conn).await.map_err(unavailable)
    })
    .await
}

/// `unavailable` when Redis takes longer than [`COMMAND_TIMEOUT`].
async fn in_time<T>(work: impl Future<Output = Result<T, BrokerError>>) -> Result<T, BrokerError> {
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| BrokerError::Unavailable("redis did not answer in time".into()))?
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

fn bad_url(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis_url: {e}"))
}

/// Publishes frames to Redis; what a process that never subscribes (the scheduler) uses.
pub struct RedisPublisher {
    pool: Pool,
    /// The configured key prefix (`redis_prefix`).
    prefix: String,
    /// `<prefix>:group:`, prepended to a group name to form its Redis channel.
    channel_prefix: Arc<str>,
}

impl RedisPublisher {
    pub fn new(pool: Pool, prefix: &str) -> Self {
        Self { pool, prefix: prefix.to_string(), channel_prefix: channel_prefix(prefix) }
    }

    fn channel(&self, group: &GroupName) -> String {
        format!("{}{}", self.channel_prefix, group)
    }
}

/// The header every Redis payload starts with: `@<publish time, µs since the epoch>\n`. It
/// never starts a JSON frame, so the subscriber can tell it apart, measure the delivery
/// latency and strip it; clients get the frame alone.
pub(crate) fn stamp() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("@{micros}\n")
}

/// Splits a payload into its publish time (if stamped) and the frame.
pub(crate) fn unstamp(payload: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(rest) = payload.strip_prefix(b"@") else { return (None, payload) };
    let Some(newline) = rest.iter().position(|b| *b == b'\n') else { return (None, payload) };
    let micros = std::str::from_utf8(&rest[..newline]).ok().and_then(|m| m.parse::<u64>().ok());
    match micros {
        Some(micros) => (Some(UNIX_EPOCH + Duration::from_micros(micros)), &rest[newline + 1..]),
        None => (None, payload),
    }
}

fn channel_prefix(prefix: &str) -> Arc<str> {
    format!("{prefix}:group:").into()
}

impl Publisher for RedisPublisher {
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("PUBLISH");
            let mut payload = stamp().into_bytes();
            payload.extend_from_slice(frame.as_bytes());
            cmd.arg(self.channel(group)).arg(payload);
            query::<i64>(&self.pool, &cmd).await.map(drop)
        })
    }

    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
    ) -> Answer<'a, ()> {
        let Some(policy) = history else { return publish_plain(self, group, data) };
        Box::pin(async move {
            let parts = MessageParts::new(group, data);
            history::append(&self.pool, &self.prefix, &self.channel(group), group, &parts, policy)
                .await
                .map(drop)
        })
    }
}

/// The full broker of a gateway: a publisher plus the instance's pub/sub subscriber.
pub struct RedisBroker {
    publisher: RedisPublisher,
    commands: mpsc::UnboundedSender<Command>,
    /// True while the pub/sub connection is up and every wanted group is subscribed.
    ready: Arc<AtomicBool>,
}

impl RedisBroker {
    /// Builds the pool and starts the subscriber task. Redis need not be reachable yet: the
    /// broker reports not ready and keeps retrying until it is. Fails only on a bad URL.
    pub fn start(
        url: &str,
        prefix: &str,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(bad_url)?;
        let publisher = RedisPublisher::new(pool(url)?, prefix);
        let ready = Arc::new(AtomicBool::new(false));
        let (commands, rx) = mpsc::unbounded_channel();
        let subscriber =
            Subscriber::new(client, publisher.channel_prefix.clone(), sink, rx, ready.clone(), metrics);
        tokio::spawn(subscriber.run(shutdown));
        Ok(Self { publisher, commands, ready })
    }
}

impl Publisher for RedisBroker {
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()> {
        self.publisher.broadcast(group, frame)
    }

    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
    ) -> Answer<'a, ()> {
        self.publisher.publish(group, data, history)
    }
}

impl Broker for RedisBroker {
    fn subscribe(&self, group: &GroupName) -> Subscription {
        let (confirmation, subscription) = Subscription::pending();
        // A closed channel means the subscriber stopped (shutdown): the dropped confirmation
        // then fails the subscription, which is the right answer.
        let _ = self.commands.send(Command::Subscribe(group.clone(), confirmation));
        subscription
    }

    fn unsubscribe(&self, group: &GroupName) {
        let _ = self.commands.send(Command::Unsubscribe(group.clone()));
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        since: u64,
        limit: usize,
        policy: HistoryPolicy,
    ) -> Answer<'a, HistorySlice> {
        let p = &self.publisher;
        Box::pin(history::read(&p.pool, &p.prefix, group, since, limit, policy))
    }

    fn presence_set<'a>(
        &'a self,
        group: &'a GroupName,
        clients: &'a [ClientInfo],
        ttl: Duration,
    ) -> Answer<'a, ()> {
        Box::pin(async move {
            let entries = clients.iter().map(|c| (c.client.as_str(), c));
            Directory::presence(&self.publisher.prefix, group).set(&self.publisher.pool, entries, ttl).await
        })
    }

    fn presence_remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            Directory::presence(&self.publisher.prefix, group).remove(&self.publisher.pool, client).await
        })
    }

    fn presence<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>> {
        Box::pin(async move {
            Directory::presence(&self.publisher.prefix, group).list(&self.publisher.pool).await
        })
    }

    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> Answer<'a, ()> {
        Box::pin(async move {
            Directory::nodes(&self.publisher.prefix)
                .set(&self.publisher.pool, [(node.node.as_str(), node)], ttl)
                .await
        })
    }

    fn nodes(&self) -> Answer<'_, Vec<NodeInfo>> {
        Box::pin(async move { Directory::nodes(&self.publisher.prefix).list(&self.publisher.pool).await })
    }
}
