//! Redis plumbing shared by the broker and the scheduler: command pools, the per-command
//! timeout, running commands and Lua scripts, and reconnect backoff. Nothing here knows what
//! Herald stores in Redis; the broker and the scheduler's coordinator own their keys and scripts.
//!
//! Every command goes through a deadpool-redis pool of multiplexed connections and is bounded
//! by [`COMMAND_TIMEOUT`], so a Redis that stops answering turns into an [`Unavailable`] error
//! within seconds instead of a task that hangs.

mod backoff;

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};

use crate::config::ConfigError;

pub(crate) use backoff::Backoff;

/// How long one Redis command may take before it is reported as unavailable.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pooled command connections; each is multiplexed, so a few carry any publish rate.
const POOL_SIZE: usize = 8;

/// Redis could not serve a command: unreachable, too slow, or it answered with an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub(crate) struct Unavailable(pub(crate) String);

impl Unavailable {
    pub(crate) fn from_error(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// A command pool for `url`. Redis need not be reachable yet: connections are made on use.
pub(crate) fn pool(url: &str) -> Result<Pool, ConfigError> {
    let bad_url = |e: &dyn std::fmt::Display| ConfigError::new("redis_url", e);
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
pub(crate) async fn query<T: ::redis::FromRedisValue>(
    pool: &Pool,
    cmd: &::redis::Cmd,
) -> Result<T, Unavailable> {
    in_time(async {
        let mut conn = pool.get().await.map_err(Unavailable::from_error)?;
        cmd.query_async::<T>(&mut conn).await.map_err(Unavailable::from_error)
    })
    .await
}

/// Runs a Lua script on a pooled connection within [`COMMAND_TIMEOUT`].
pub(crate) async fn invoke<T: ::redis::FromRedisValue>(
    pool: &Pool,
    script: &::redis::ScriptInvocation<'_>,
) -> Result<T, Unavailable> {
    in_time(async {
        let mut conn = pool.get().await.map_err(Unavailable::from_error)?;
        script.invoke_async::<T>(&mut conn).await.map_err(Unavailable::from_error)
    })
    .await
}

/// Runs many calls of one Lua script in a single pipeline (one round trip), within
/// [`COMMAND_TIMEOUT`]. The script is loaded first in the same pipeline, so none fails for
/// being unknown to the server.
pub(crate) async fn invoke_all(
    pool: &Pool,
    script: &::redis::Script,
    calls: &[::redis::ScriptInvocation<'_>],
) -> Result<(), Unavailable> {
    let mut pipe = ::redis::pipe();
    pipe.load_script(script).ignore();
    for call in calls {
        pipe.invoke_script(call).ignore();
    }
    run_pipeline(pool, &pipe).await
}

/// Runs a pipeline on a pooled connection within [`COMMAND_TIMEOUT`].
pub(crate) async fn run_pipeline<T: ::redis::FromRedisValue>(
    pool: &Pool,
    pipe: &::redis::Pipeline,
) -> Result<T, Unavailable> {
    in_time(async {
        let mut conn = pool.get().await.map_err(Unavailable::from_error)?;
        pipe.query_async::<T>(&mut conn).await.map_err(Unavailable::from_error)
    })
    .await
}

/// [`Unavailable`] when `work` takes longer than [`COMMAND_TIMEOUT`].
async fn in_time<T>(work: impl Future<Output = Result<T, Unavailable>>) -> Result<T, Unavailable> {
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| Unavailable("redis did not answer in time".into()))?
}
