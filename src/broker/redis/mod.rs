//! Redis broker: pooled commands for publishing, one dedicated pub/sub connection for receiving.
//!
//! Publishing is one `PUBLISH <prefix>:group:<group> <frame>` on a connection from a
//! deadpool-redis pool. Receiving runs in the [`subscriber`] task, which owns the instance's only
//! pub/sub connection: the hub's subscribe/unsubscribe calls reach it through an unbounded
//! channel (so they never block and stay in call order), and it reconnects with backoff and
//! resubscribes every wanted group when Redis comes back.

mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use deadpool_redis::{Pool, Runtime};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError, Sink, Subscription};
use crate::group::GroupName;
use subscriber::{Command, Subscriber};

/// How long a publish may take before it is reported as `unavailable`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pooled command connections; each is multiplexed, so a few carry any publish rate.
const POOL_SIZE: usize = 8;

pub struct RedisBroker {
    pool: Pool,
    /// `<prefix>:group:`, prepended to a group name to form its Redis channel.
    channel_prefix: Arc<str>,
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
        let bad_url = |e: &dyn std::fmt::Display| BrokerError::Unavailable(format!("redis_url: {e}"));
        let client = redis::Client::open(url).map_err(|e| bad_url(&e))?;
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| bad_url(&e))?
            .max_size(POOL_SIZE)
            .wait_timeout(Some(COMMAND_TIMEOUT))
            .create_timeout(Some(COMMAND_TIMEOUT))
            .recycle_timeout(Some(COMMAND_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| bad_url(&e))?;
        let channel_prefix: Arc<str> = format!("{prefix}:group:").into();
        let ready = Arc::new(AtomicBool::new(false));
        let (commands, rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber::new(client, channel_prefix.clone(), sink, rx, ready.clone());
        tokio::spawn(subscriber.run(shutdown));
        Ok(Self { pool, channel_prefix, commands, ready })
    }

    async fn publish_now(&self, group: &GroupName, frame: Utf8Bytes) -> Result<(), BrokerError> {
        let unavailable = |e: &dyn std::fmt::Display| BrokerError::Unavailable(e.to_string());
        let mut conn = self.pool.get().await.map_err(|e| unavailable(&e))?;
        let channel = format!("{}{}", self.channel_prefix, group);
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(frame.as_bytes())
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        frame: Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            tokio::time::timeout(COMMAND_TIMEOUT, self.publish_now(group, frame))
                .await
                .map_err(|_| BrokerError::Unavailable("redis did not answer in time".into()))?
        })
    }

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
}
