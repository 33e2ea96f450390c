//! Redis broker: pooled commands for publishing, one dedicated pub/sub connection for receiving.
//!
//! Publishing ([`RedisPublisher`]) is one `PUBLISH <prefix>:group:<group> <frame>` on a
//! connection from a deadpool-redis pool. Receiving runs in the [`subscriber`] task, which owns
//! the instance's only pub/sub connection: the hub's subscribe/unsubscribe calls reach it
//! through an unbounded channel (so they never block and stay in call order), and it reconnects
//! with backoff and resubscribes every wanted group when Redis comes back.

mod history;
mod presence;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use deadpool_redis::{Pool, Runtime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use serde_json::value::RawValue;

use super::{
    Answer, Broker, BrokerError, HistoryPolicy, HistorySlice, Publisher, Sink, Subscription, publish_plain,
};
use crate::group::GroupName;
use crate::protocol::{ClientInfo, MessageParts};
use subscriber::{Command, Subscriber};

/// How long one Redis command may take before it is reported as `unavailable`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pooled command connections; each is multiplexed, so a few carry any publish rate.
const POOL_SIZE: usize = 8;

/// A command pool for `url`. Redis need not be reachable yet: connections are made on use.
pub fn pool(url: &str) -> Result<Pool, BrokerError> {
    let bad_url = |e: &dyn std::fmt::Display| BrokerError::Unavailable(format!("redis_url: {e}"));
    deadpool_redis::Config::from_url(url)
        .builder()
        .map_err(|e| bad_url(&e))?
        .max_size(POOL_SIZE)
        .wait_timeout(Some(COMMAND_TIMEOUT))
        .create_timeout(Some(COMMAND_TIMEOUT))
        .recycle_timeout(Some(COMMAND_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| bad_url(&e))
}

/// Runs one command on a pooled connection within [`COMMAND_TIMEOUT`].
pub async fn query<T: redis::FromRedisValue>(pool: &Pool, cmd: &redis::Cmd) -> Result<T, BrokerError> {
    let run = async {
        let mut conn = pool.get().await.map_err(unavailable)?;
        cmd.query_async::<T>(&mut conn).await.map_err(unavailable)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| BrokerError::Unavailable("redis did not answer in time".into()))?
}

/// Runs a Lua script on a pooled connection within [`COMMAND_TIMEOUT`].
pub async fn invoke<T: redis::FromRedisValue>(
    pool: &Pool,
    script: &redis::ScriptInvocation<'_>,
) -> Result<T, BrokerError> {
    let run = async {
        let mut conn = pool.get().await.map_err(unavailable)?;
        script.invoke_async::<T>(&mut conn).await.map_err(unavailable)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| BrokerError::Unavailable("redis did not answer in time".into()))?
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
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

fn channel_prefix(prefix: &str) -> Arc<str> {
    format!("{prefix}:group:").into()
}

impl Publisher for RedisPublisher {
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(self.channel(group)).arg(frame.as_bytes());
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
    ) -> Result<Self, BrokerError> {
        let client =
            redis::Client::open(url).map_err(|e| BrokerError::Unavailable(format!("redis_url: {e}")))?;
        let publisher = RedisPublisher::new(pool(url)?, prefix);
        let ready = Arc::new(AtomicBool::new(false));
        let (commands, rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber::new(client, publisher.channel_prefix.clone(), sink, rx, ready.clone());
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
        Box::pin(presence::set(&self.publisher.pool, &self.publisher.prefix, group, clients, ttl))
    }

    fn presence_remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()> {
        Box::pin(presence::remove(&self.publisher.pool, &self.publisher.prefix, group, client))
    }

    fn presence<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>> {
        Box::pin(presence::list(&self.publisher.pool, &self.publisher.prefix, group))
    }
}
