//! Redis backend (one server, a Sentinel-watched master, or a Cluster): pooled commands for
//! publishing and keyed state, the instance's own sharded pub/sub connections for receiving.
//!
//! Publishing ([`RedisStore`]) is one `SPUBLISH <prefix>:group:{<group>} <frame>` (or one
//! history script) on a connection from the command pool, which history, presence and the
//! directory use too. A group's channel and keys share the hash tag `{<group>}`: on a Cluster
//! they live on one shard, each script touches one slot, and a message travels only through the
//! shard that owns its group, so shards add pub/sub capacity. Receiving runs in the
//! [`subscriber`] task, which holds one pub/sub connection per master: the hub's
//! subscribe/unsubscribe calls reach it through an unbounded channel (so they never block and
//! stay in call order), and it follows failovers and slot moves, resubscribing every wanted
//! group where its slot is served now.

mod directory;
mod history;
mod subscriber;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::{
    Answer, Broker, BrokerError, Directory, History, HistoryPolicy, HistoryState, NodeInfo, ONCE_WINDOW,
    Outgoing, Page, Presence, Publisher, Sink, publish_plain,
};
use crate::config::{ConfigError, RedisTarget};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::protocol::{self, ClientInfo, MessageParts};
use crate::redis::{Nodes, Pool, Unavailable, invoke, query, run_all, script_command, slot};
use directory::Directory as Keys;

/// The broker of a gateway on `target`. Redis need not be reachable yet: the subscriber reports
/// not ready and keeps retrying until it is. Fails only on a bad URL.
pub(crate) fn start(
    target: &RedisTarget,
    prefix: &str,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<Broker, ConfigError> {
    let pool = Pool::new(target)?;
    let nodes = Nodes::new(target, &pool)?;
    let store = Arc::new(RedisStore::new(pool, prefix));
    let subscriber = subscriber::start(nodes, channel_prefix(prefix), sink, shutdown, metrics);
    Ok(Broker {
        publisher: store.clone(),
        subscriber: Arc::new(subscriber),
        history: store.clone(),
        presence: store.clone(),
        directory: store,
    })
}

/// The Redis shard channel a group's messages travel on: `<prefix>:group:{<group>}`, in the
/// group's hash slot. Anything that publishes to Herald's groups straight through Redis (the
/// load tool does) sends `SPUBLISH` to this name.
pub fn group_channel(prefix: &str, group: &GroupName) -> String {
    format!("{}{group}}}", channel_prefix(prefix))
}

/// The Redis Cluster hash slot of a group's channel and keys: the shard that carries it.
pub fn group_slot(prefix: &str, group: &GroupName) -> u16 {
    slot(&group_channel(prefix, group))
}

/// What every group channel starts with: `<prefix>:group:{`.
fn channel_prefix(prefix: &str) -> Arc<str> {
    format!("{prefix}:group:{{").into()
}

/// Publishing, history, presence and the node directory, on pooled connections. A process that
/// never subscribes (the scheduler) uses it alone, as its [`Publisher`].
pub(crate) struct RedisStore {
    pool: Pool,
    /// The configured key prefix (`redis_prefix`).
    prefix: String,
    /// `<prefix>:group:{`, the start of every group channel.
    channel_prefix: Arc<str>,
}

impl RedisStore {
    pub(crate) fn new(pool: Pool, prefix: &str) -> Self {
        Self { pool, prefix: prefix.to_string(), channel_prefix: channel_prefix(prefix) }
    }

    fn channel(&self, group: &GroupName) -> String {
        format!("{}{group}}}", self.channel_prefix)
    }
}

/// The header every Redis payload starts with: `@<publish time, µs since the epoch>\n`. It
/// never starts a JSON frame, so the subscriber can tell it apart, measure the delivery
/// latency and strip it; clients get the frame alone.
fn stamp() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("@{micros}\n")
}

/// Splits a payload into its publish time (if stamped) and the frame.
fn unstamp(payload: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(rest) = payload.strip_prefix(b"@") else { return (None, payload) };
    let Some(newline) = rest.iter().position(|b| *b == b'\n') else { return (None, payload) };
    let micros = std::str::from_utf8(&rest[..newline]).ok().and_then(|m| m.parse::<u64>().ok());
    match micros {
        Some(micros) => (Some(UNIX_EPOCH + Duration::from_micros(micros)), &rest[newline + 1..]),
        None => (None, payload),
    }
}

impl Publisher for RedisStore {
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("SPUBLISH");
            let mut payload = stamp().into_bytes();
            payload.extend_from_slice(frame.as_bytes());
            cmd.arg(self.channel(group)).arg(payload);
            Ok(query::<i64>(&self.pool, &cmd).await.map(drop)?)
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
            history::append(&self.pool, &self.prefix, &self.channel(group), group, &parts, policy, None)
                .await?;
            Ok(())
        })
    }

    fn publish_all<'a>(&'a self, batch: &'a [Outgoing<'a>]) -> Answer<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(async move {
            let script = batch.iter().any(|m| m.history.is_some()).then_some(&*history::APPEND);
            let commands = batch
                .iter()
                .map(|message| {
                    let channel = self.channel(message.group);
                    let command = match message.history {
                        Some(policy) => {
                            let parts = MessageParts::new(message.group, message.data);
                            script_command(&history::appending(
                                &self.prefix,
                                &channel,
                                message.group,
                                &parts,
                                policy,
                                None,
                            ))
                        }
                        None => {
                            let mut payload = stamp().into_bytes();
                            payload
                                .extend_from_slice(protocol::message(message.group, message.data).as_bytes());
                            let mut cmd = ::redis::cmd("SPUBLISH");
                            cmd.arg(&channel).arg(payload);
                            cmd
                        }
                    };
                    (slot(&channel), command)
                })
                .collect();
            let replies = run_all(&self.pool, script, commands).await?;
            Ok(replies
                .into_iter()
                .map(|reply| reply.map(drop).map_err(|e| Unavailable::from_error(e).into()))
                .collect())
        })
    }

    fn publish_once<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
        id: &'a str,
    ) -> Answer<'a, bool> {
        Box::pin(async move {
            // In the group's hash slot, like its history and channel.
            let once = format!("{}:once:{{{group}}}:{id}", self.prefix);
            let channel = self.channel(group);
            let Some(policy) = history else {
                let mut call = PUBLISH_ONCE.key(&once);
                let mut payload = stamp().into_bytes();
                payload.extend_from_slice(protocol::message(group, data).as_bytes());
                call.arg(&channel).arg(payload).arg(ONCE_WINDOW.as_millis() as u64);
                return Ok(invoke::<i64>(&self.pool, &call).await? == 1);
            };
            let parts = MessageParts::new(group, data);
            let offset =
                history::append(&self.pool, &self.prefix, &channel, group, &parts, policy, Some(&once))
                    .await?;
            Ok(offset > 0)
        })
    }
}

/// KEYS: once-key. ARGV: channel, payload, window ms. Publishes unless the key exists already.
static PUBLISH_ONCE: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('SPUBLISH', ARGV[1], ARGV[2])
return 1",
    )
});

impl History for RedisStore {
    fn state<'a>(&'a self, group: &'a GroupName) -> Answer<'a, HistoryState> {
        Box::pin(history::state(&self.pool, &self.prefix, group))
    }

    fn read<'a>(
        &'a self,
        group: &'a GroupName,
        epoch: &'a str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Answer<'a, Option<Page>> {
        Box::pin(history::read(&self.pool, &self.prefix, group, epoch, after, limit, max_bytes))
    }
}

impl Presence for RedisStore {
    fn set<'a>(&'a self, group: &'a GroupName, clients: &'a [ClientInfo], ttl: Duration) -> Answer<'a, ()> {
        Box::pin(async move {
            let entries = clients.iter().map(|c| (c.client.as_str(), c));
            Ok(Keys::presence(&self.prefix, group).set(&self.pool, entries, ttl).await?)
        })
    }

    fn refresh<'a>(&'a self, groups: &'a [(GroupName, Vec<ClientInfo>)], ttl: Duration) -> Answer<'a, ()> {
        Box::pin(async move { Ok(Keys::refresh_presence(&self.pool, &self.prefix, groups, ttl).await?) })
    }

    fn remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()> {
        Box::pin(async move { Ok(Keys::presence(&self.prefix, group).remove(&self.pool, client).await?) })
    }

    fn list<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>> {
        Box::pin(async move { Ok(Keys::presence(&self.prefix, group).list(&self.pool).await?) })
    }
}

impl Directory for RedisStore {
    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> Answer<'a, ()> {
        Box::pin(async move {
            Ok(Keys::nodes(&self.prefix).set(&self.pool, [(node.node.as_str(), node)], ttl).await?)
        })
    }

    fn nodes(&self) -> Answer<'_, Vec<NodeInfo>> {
        Box::pin(async move { Ok(Keys::nodes(&self.prefix).list(&self.pool).await?) })
    }

    fn groups(&self) -> Answer<'_, Vec<GroupName>> {
        Box::pin(async move {
            // Every master's shard channels, on a Cluster (each shard lists its own).
            let mut cmd = ::redis::cmd("PUBSUB");
            cmd.arg("SHARDCHANNELS").arg(format!("{}*", self.channel_prefix));
            let channels: Vec<String> = query(&self.pool, &cmd).await?;
            let mut groups: Vec<GroupName> = channels
                .iter()
                .filter_map(|c| {
                    GroupName::new(c.strip_prefix(&*self.channel_prefix)?.strip_suffix('}')?).ok()
                })
                .collect();
            groups.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            groups.dedup();
            Ok(groups)
        })
    }
}
