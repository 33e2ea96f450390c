//! Redis plumbing shared by the broker and the scheduler: command pools on one server, a
//! Sentinel-watched master or a Cluster ([`Pool`]), the per-command timeout, running commands,
//! Lua scripts and pipelines, the shards of a deployment ([`Nodes`]), pub/sub connections of our
//! own ([`pubsub`]) and reconnect backoff. Nothing here knows what Herald stores in Redis; the
//! broker and the scheduler's coordinator own their keys and scripts.
//!
//! Every command goes through a pool of multiplexed connections, whose drivers run on a thread
//! of their own ([`io`]), and is bounded by [`COMMAND_TIMEOUT`], so a Redis that stops answering
//! turns into an [`Unavailable`] error within seconds instead of a task that hangs. On a
//! Cluster, every command and script must touch one hash slot; Herald's keys and channels of a
//! group share its slot (`{<group>}`).

mod backoff;
mod io;
mod nodes;
mod pool;
pub(crate) mod pubsub;
mod sentinel;

use std::collections::HashMap;
use std::time::Duration;

pub(crate) use backoff::Backoff;
pub(crate) use nodes::{Nodes, Shards};
pub(crate) use pool::Pool;

/// How long one Redis command may take before it is reported as unavailable.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis could not serve a command: unreachable, too slow, or it answered with an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub(crate) struct Unavailable(pub(crate) String);

impl Unavailable {
    pub(crate) fn from_error(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// The Redis Cluster hash slot of `key` (of its `{tag}`, when it has one).
pub(crate) fn slot(key: &str) -> u16 {
    redis_protocol::redis_keyslot(key.as_bytes())
}

/// Runs one command on a pooled connection within [`COMMAND_TIMEOUT`].
pub(crate) async fn query<T: ::redis::FromRedisValue>(
    pool: &Pool,
    cmd: &::redis::Cmd,
) -> Result<T, Unavailable> {
    in_time(async {
        let mut conn = pool.get().await?;
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
        let mut conn = pool.get().await?;
        script.invoke_async::<T>(&mut conn).await.map_err(Unavailable::from_error)
    })
    .await
}

/// Runs many calls of one Lua script pipelined (see [`run_all`]); fails if any call failed.
pub(crate) async fn invoke_all(
    pool: &Pool,
    script: &::redis::Script,
    calls: &[(u16, ::redis::ScriptInvocation<'_>)],
) -> Result<(), Unavailable> {
    let commands = calls.iter().map(|(slot, call)| (*slot, script_command(call))).collect();
    for reply in run_all(pool, Some(script), commands).await? {
        reply.map_err(Unavailable::from_error)?;
    }
    Ok(())
}

/// The `EVALSHA` command of a script call, to be sent in a pipeline after the script is loaded.
pub(crate) fn script_command(call: &::redis::ScriptInvocation<'_>) -> ::redis::Cmd {
    let mut pipe = ::redis::pipe();
    pipe.invoke_script(call);
    pipe.cmd_iter().next().expect("a script call is one command").clone()
}

/// Runs `commands`, each with the hash slot of its keys, in one round trip: one pipeline, or on
/// a Cluster one pipeline per slot (a pipeline must not cross slots there), all in flight at
/// once; commands of one slot run in the order given. `script` is loaded at the start of each
/// pipeline, so no `EVALSHA` of it fails for being unknown to the server. Returns each command's
/// reply in the order given: a failed command fails alone. Within [`COMMAND_TIMEOUT`].
pub(crate) async fn run_all(
    pool: &Pool,
    script: Option<&::redis::Script>,
    commands: Vec<(u16, ::redis::Cmd)>,
) -> Result<Vec<::redis::RedisResult<::redis::Value>>, Unavailable> {
    let pipeline = |commands: &mut dyn Iterator<Item = ::redis::Cmd>| {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        if let Some(script) = script {
            pipe.load_script(script).ignore();
        }
        for command in commands {
            pipe.add_command(command);
        }
        pipe
    };
    if !pool.is_cluster() {
        let count = commands.len();
        let pipe = pipeline(&mut commands.into_iter().map(|(_, command)| command));
        let replies: Vec<::redis::RedisResult<::redis::Value>> = run_pipeline(pool, &pipe).await?;
        return Ok(replies.into_iter().take(count).collect());
    }
    // Per slot: the positions of its commands in the batch, and its pipeline.
    let mut slots: HashMap<u16, Vec<usize>> = HashMap::new();
    for (i, (slot, _)) in commands.iter().enumerate() {
        slots.entry(*slot).or_default().push(i);
    }
    let mut commands: Vec<Option<::redis::Cmd>> = commands.into_iter().map(|(_, c)| Some(c)).collect();
    let pipelines: Vec<(Vec<usize>, ::redis::Pipeline)> = slots
        .into_values()
        .map(|positions| {
            let pipe = pipeline(&mut positions.iter().filter_map(|i| commands[*i].take()));
            (positions, pipe)
        })
        .collect();
    let runs = pipelines
        .iter()
        .map(|(_, pipe)| run_pipeline::<Vec<::redis::RedisResult<::redis::Value>>>(pool, pipe));
    let results = futures_util::future::join_all(runs).await;
    // A shard that failed fails its commands only.
    let mut replies: Vec<Option<::redis::RedisResult<::redis::Value>>> =
        (0..commands.len()).map(|_| None).collect();
    for ((positions, _), answers) in pipelines.iter().zip(results) {
        match answers {
            Ok(answers) => {
                for (i, answer) in positions.iter().zip(answers) {
                    replies[*i] = Some(answer);
                }
            }
            Err(e) => {
                for i in positions {
                    replies[*i] =
                        Some(Err((::redis::ErrorKind::Io, "shard unavailable", e.0.clone()).into()));
                }
            }
        }
    }
    Ok(replies
        .into_iter()
        .map(|reply| reply.unwrap_or_else(|| Err((::redis::ErrorKind::Io, "no reply").into())))
        .collect())
}

/// Runs a pipeline on a pooled connection within [`COMMAND_TIMEOUT`]. On a Cluster, every
/// command of it must be of one hash slot.
pub(crate) async fn run_pipeline<T: ::redis::FromRedisValue>(
    pool: &Pool,
    pipe: &::redis::Pipeline,
) -> Result<T, Unavailable> {
    in_time(async {
        let mut conn = pool.get().await?;
        pipe.query_async::<T>(&mut conn).await.map_err(Unavailable::from_error)
    })
    .await
}

/// [`Unavailable`] when `work` takes longer than [`COMMAND_TIMEOUT`].
/// A plain function, not an `async fn`: one would keep `work` as its argument beside the
/// timeout that holds it, twice the size in every caller's future.
fn in_time<T>(
    work: impl Future<Output = Result<T, Unavailable>>,
) -> impl Future<Output = Result<T, Unavailable>> {
    use futures_util::FutureExt;
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .map(|done| done.map_err(|_| Unavailable("redis did not answer in time".into()))?)
}
