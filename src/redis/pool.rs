//! Command connections to whichever Redis the config names, behind one type.
//!
//! - One server: a deadpool of multiplexed connections.
//! - Sentinel: the same, for the master the sentinels name now ([`SentinelPool`]).
//! - Cluster: a deadpool of redis-rs cluster connections, which route each command by its key's
//!   slot and follow `MOVED`/`ASK` and failovers on their own.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::Unavailable;
use super::sentinel::SentinelPool;
use crate::config::{ConfigError, RedisTarget};

/// Pooled command connections; each is multiplexed, so a few carry any publish rate.
pub(super) const POOL_SIZE: usize = 8;

/// A pool of command connections. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub(crate) enum Pool {
    Single(deadpool_redis::Pool),
    Sentinel(Arc<SentinelPool>),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection taken from a [`Pool`]; returns to it when dropped.
pub(crate) enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl Pool {
    /// A pool for `target`, whose config key names errors. Redis need not be reachable yet:
    /// connections are made on use.
    pub(crate) fn new(target: &RedisTarget) -> Result<Self, ConfigError> {
        match target {
            RedisTarget::Single(url) => Self::single(url).map_err(|e| ConfigError::new("redis_url", e)),
            RedisTarget::Cluster(nodes) => {
                let builder = deadpool_redis::cluster::Config::from_urls(nodes.clone()).builder();
                let builder = builder.map_err(|e| ConfigError::new("redis_cluster_nodes", e))?;
                Ok(Self::Cluster(
                    bounded!(builder).build().map_err(|e| ConfigError::new("redis_cluster_nodes", e))?,
                ))
            }
            RedisTarget::Sentinel { sentinels, master } => Ok(Self::Sentinel(Arc::new(
                SentinelPool::new(sentinels, master).map_err(|e| ConfigError::new("redis_sentinels", e))?,
            ))),
        }
    }

    /// A pool for one server at `url` (a Channels layer host, say).
    pub(crate) fn single(url: &str) -> Result<Self, String> {
        let builder = deadpool_redis::Config::from_url(url).builder().map_err(|e| e.to_string())?;
        Ok(Self::Single(bounded!(builder).build().map_err(|e| e.to_string())?))
    }

    /// Whether commands of different hash slots must go in separate pipelines.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub(crate) async fn get(&self) -> Result<Conn, Unavailable> {
        match self {
            Self::Single(pool) => pool.get().await.map(Conn::Single).map_err(Unavailable::from_error),
            Self::Sentinel(pool) => pool.get().await.map(Conn::Single),
            Self::Cluster(pool) => pool.get().await.map(Conn::Cluster).map_err(Unavailable::from_error),
        }
    }
}

/// The same pool bounds for every kind of pool builder: size, and every wait within
/// [`super::COMMAND_TIMEOUT`].
macro_rules! bounded {
    ($builder:expr) => {
        $builder
            .max_size($crate::redis::pool::POOL_SIZE)
            .wait_timeout(Some($crate::redis::COMMAND_TIMEOUT))
            .create_timeout(Some($crate::redis::COMMAND_TIMEOUT))
            .recycle_timeout(Some($crate::redis::COMMAND_TIMEOUT))
            .runtime(deadpool_redis::Runtime::Tokio1)
    };
}
pub(super) use bounded;

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
