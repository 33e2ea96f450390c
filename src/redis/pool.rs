//! Command connections to whichever Redis the config names, behind one type.
//!
//! - One server: a deadpool of multiplexed connections.
//! - Sentinel: the same, for the master the sentinels name now ([`SentinelPool`]).
//! - Cluster: a deadpool of redis-rs cluster connections, which route each command by its key's
//!   slot and follow `MOVED`/`ASK` and failovers on their own.
//!
//! deadpool-redis makes the connections, through [`Reusing`], which changes two things:
//! - **Where their drivers run.** A connection's driver (the task that writes its commands and
//!   reads its replies) is spawned where the connection is made. They are made on the Redis I/O
//!   thread ([`io`](super::io)), so a command's round trip does not wait behind the fan-out's
//!   thousands of writer tasks in the workers' queues.
//! - **What reuse costs.** deadpool-redis checks a connection with a `PING` each time it leaves
//!   the pool, which doubled the round trips of every publish. A connection handed out within
//!   [`TRUSTED_FOR`], whose command then did not fail for the connection's sake, goes back to
//!   work at once; one that sat idle longer is still checked. A connection to one server whose
//!   command failed that way, or was abandoned half-way (timed out), is replaced; a Cluster
//!   connection reconnects its nodes itself, and is kept. The pool hands out the connection
//!   returned last, so the busy ones stay trusted and the spare ones age into a check.
//!
//! The price: a connection that worked a moment ago and died since (Redis restarted) fails its
//! next command once instead of being replaced by its check, as one whose check had just passed
//! could before. Callers already treat any command as one that may fail: a publish is answered
//! `unavailable`, and a catch-up from history retries.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::sentinel::SentinelPool;
use super::{Unavailable, io};
use crate::config::{ConfigError, RedisTarget};

/// Pooled command connections. A command holds its connection until the reply, so there are
/// enough for the concurrent publishes of a busy API (with 8, every second request of 16 at once
/// waited for another's round trip); a pool makes them only as concurrency asks.
pub(super) const POOL_SIZE: usize = 32;
/// A connection handed out this recently, whose command then did not fail for the connection's
/// sake, is reused without a check.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// A pool of connections to one server.
pub(super) type SinglePool = managed::Pool<Reusing<deadpool_redis::Manager>>;
type ClusterPool = managed::Pool<Reusing<deadpool_redis::cluster::Manager>>;

/// A pool of command connections. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub(crate) enum Pool {
    Single(SinglePool),
    Sentinel(Arc<SentinelPool>),
    Cluster(ClusterPool),
}

/// A connection taken from a [`Pool`]; returns to it when dropped.
pub(crate) enum Conn {
    Single(managed::Object<Reusing<deadpool_redis::Manager>>),
    Cluster(managed::Object<Reusing<deadpool_redis::cluster::Manager>>),
}

impl Pool {
    /// A pool for `target`, whose config key names errors. Redis need not be reachable yet:
    /// connections are made on use.
    pub(crate) fn new(target: &RedisTarget) -> Result<Self, ConfigError> {
        match target {
            RedisTarget::Single(url) => Self::single(url).map_err(|e| ConfigError::new("redis_url", e)),
            RedisTarget::Cluster(nodes) => {
                let pool = deadpool_redis::cluster::Manager::new(nodes.clone(), false)
                    .map_err(|e| e.to_string())
                    .and_then(|manager| bounded(manager, false).map_err(|e| e.to_string()));
                Ok(Self::Cluster(pool.map_err(|e| ConfigError::new("redis_cluster_nodes", e))?))
            }
            RedisTarget::Sentinel { sentinels, master } => Ok(Self::Sentinel(Arc::new(
                SentinelPool::new(sentinels, master).map_err(|e| ConfigError::new("redis_sentinels", e))?,
            ))),
        }
    }

    /// A pool for one server at `url` (a Channels layer host, say).
    pub(crate) fn single(url: &str) -> Result<Self, String> {
        single(url).map(Self::Single).map_err(|e| e.to_string())
    }

    /// Whether commands of different hash slots must go in separate pipelines.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub(crate) async fn get(&self) -> Result<Conn, Unavailable> {
        match self {
            Self::Single(pool) => pool.get().await.map(Conn::Single).map_err(Unavailable::from_error),
            Self::Sentinel(pool) => pool.get().await,
            Self::Cluster(pool) => pool.get().await.map(Conn::Cluster).map_err(Unavailable::from_error),
        }
    }
}

/// A pool of connections to the server at `url`.
pub(super) fn single(url: impl redis::IntoConnectionInfo) -> Result<SinglePool, Unavailable> {
    // redis-rs gives up on a reply after 500 ms by default; every command is bounded by
    // `COMMAND_TIMEOUT` already, and a Redis that is slow for a second still answers.
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(super::COMMAND_TIMEOUT))
        .set_response_timeout(Some(super::COMMAND_TIMEOUT));
    let manager = deadpool_redis::Manager::new_with_config(url, timeouts).map_err(Unavailable::from_error)?;
    bounded(manager, true).map_err(Unavailable::from_error)
}

/// The same pool for every kind of connection: its size, and every wait within
/// [`super::COMMAND_TIMEOUT`]. `replace_lost`: whether a connection whose command failed for the
/// connection's sake is replaced.
fn bounded<M>(maker: M, replace_lost: bool) -> Result<managed::Pool<Reusing<M>>, managed::BuildError>
where
    Reusing<M>: managed::Manager,
{
    managed::Pool::builder(Reusing { maker: Arc::new(maker), replace_lost })
        .max_size(POOL_SIZE)
        .wait_timeout(Some(super::COMMAND_TIMEOUT))
        .create_timeout(Some(super::COMMAND_TIMEOUT))
        .recycle_timeout(Some(super::COMMAND_TIMEOUT))
        .queue_mode(managed::QueueMode::Lifo)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
}

/// deadpool-redis's manager `M`, making connections on the Redis I/O thread and reusing them as
/// the module says.
pub(crate) struct Reusing<M> {
    maker: Arc<M>,
    replace_lost: bool,
}

impl<M, C> managed::Manager for Reusing<M>
where
    M: managed::Manager<Type = C, Error = RedisError> + Send + Sync + 'static,
    C: ConnectionLike + Send + Sync + 'static,
{
    type Type = Tracked<C>;
    type Error = RedisError;

    async fn create(&self) -> Result<Tracked<C>, RedisError> {
        let maker = self.maker.clone();
        let made = io::run(async move { maker.create().await }).await;
        made.map_err(|e| RedisError::from(std::io::Error::other(e)))?
            .map(|conn| Tracked { conn, sound: true })
    }

    async fn recycle(&self, tracked: &mut Tracked<C>, metrics: &Metrics) -> RecycleResult<RedisError> {
        if self.replace_lost && !tracked.sound {
            return Err(RecycleError::message("its last command failed"));
        }
        if metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        self.maker.recycle(&mut tracked.conn, metrics).await
    }
}

/// A pooled connection, and whether its last command ended with a reply (or a server error).
pub(crate) struct Tracked<C> {
    conn: C,
    sound: bool,
}

impl<C: ConnectionLike + Send> Tracked<C> {
    /// Runs `command` on the connection, which counts as sound again only if it ends with a
    /// reply or an error of the server's; dropped half-way, it stays unsound.
    fn tracking<'a, T: Send + 'a>(
        &'a mut self,
        command: impl FnOnce(&'a mut C) -> RedisFuture<'a, T> + Send + 'a,
    ) -> RedisFuture<'a, T> {
        let Self { conn, sound } = self;
        Box::pin(async move {
            *sound = false;
            let reply = command(conn).await;
            *sound = reply.as_ref().err().is_none_or(|e| !lost(e));
            reply
        })
    }
}

/// Whether `e` says the connection itself failed (not the command): an I/O error (a dropped
/// connection, a reply timeout) or one redis-rs says needs a new connection.
fn lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

impl<C: ConnectionLike + Send> ConnectionLike for Tracked<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.tracking(|conn| conn.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.tracking(move |conn| conn.req_packed_commands(cmd, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
