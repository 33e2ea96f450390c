//! Group history in Redis: a hash `<p>:history:{<group>}:meta` (`epoch`, `offset`) and a stream
//! `<p>:history:{<group>}:stream` whose entry ids are `0-<offset>`, so reading "after offset N"
//! is one `XRANGE (0-N +`. The braces are a Redis Cluster hash tag: a group's keys stay on one
//! shard. Appending and publishing is one script, so every frame in the stream was published
//! exactly once, in offset order.

use std::sync::LazyLock;

use axum::extract::ws::Utf8Bytes;
use deadpool_redis::Pool;

use crate::broker::{BrokerError, HistoryPolicy, HistorySlice, Position, new_epoch};
use crate::group::GroupName;
use crate::protocol::MessageParts;
use crate::redis::{Unavailable, invoke};

/// Starts an epoch when the group has none (first publish, expired, or Redis lost its data).
const START_EPOCH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
";

/// KEYS: meta, stream. ARGV: epoch candidate, ttl ms, channel, head, middle, tail, size, stamp.
static APPEND: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
        r"{START_EPOCH}
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = ARGV[4] .. offset .. ARGV[5] .. epoch .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], '0-' .. offset, 'f', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[8] .. frame)
return offset"
    ))
});

/// KEYS: meta, stream. ARGV: epoch candidate, ttl ms, since, limit.
/// Returns epoch, offset, first retained offset, then offset/frame pairs.
static READ: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
        r"{START_EPOCH}
local out = {{epoch, redis.call('HGET', KEYS[1], 'offset'), '0'}}
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then out[3] = string.sub(first[1][1], 3) end
if tonumber(ARGV[4]) > 0 then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '(0-' .. ARGV[3], '+', 'COUNT', ARGV[4])) do
    table.insert(out, string.sub(entry[1], 3))
    table.insert(out, entry[2][2])
  end
end
return out"
    ))
});

fn keys(prefix: &str, group: &GroupName) -> (String, String) {
    (format!("{prefix}:history:{{{group}}}:meta"), format!("{prefix}:history:{{{group}}}:stream"))
}

fn ttl_ms(policy: HistoryPolicy) -> u64 {
    policy.ttl.as_millis().max(1) as u64
}

/// Appends a message to the group's history and publishes it on `channel`, atomically.
pub(super) async fn append(
    pool: &Pool,
    prefix: &str,
    channel: &str,
    group: &GroupName,
    parts: &MessageParts,
    policy: HistoryPolicy,
) -> Result<u64, Unavailable> {
    let (meta, stream) = keys(prefix, group);
    let mut call = APPEND.key(meta);
    call.key(stream)
        .arg(new_epoch())
        .arg(ttl_ms(policy))
        .arg(channel)
        .arg(&parts.head)
        .arg(parts.middle)
        .arg(&parts.tail)
        .arg(policy.size)
        .arg(super::stamp());
    invoke(pool, &call).await
}

/// Reads up to `limit` retained messages after `since` (none for 0), with the group's position.
pub(super) async fn read(
    pool: &Pool,
    prefix: &str,
    group: &GroupName,
    since: u64,
    limit: usize,
    policy: HistoryPolicy,
) -> Result<HistorySlice, BrokerError> {
    let (meta, stream) = keys(prefix, group);
    let mut call = READ.key(meta);
    call.key(stream).arg(new_epoch()).arg(ttl_ms(policy)).arg(since).arg(limit);
    let reply: Vec<String> = invoke(pool, &call).await?;
    parse(reply).ok_or_else(|| BrokerError::Unavailable("unexpected history reply from redis".into()))
}

fn parse(reply: Vec<String>) -> Option<HistorySlice> {
    let mut fields = reply.into_iter();
    let epoch = fields.next()?;
    let offset = fields.next()?.parse().ok()?;
    let first = fields.next()?.parse().ok()?;
    let mut messages = Vec::new();
    while let Some(entry) = fields.next() {
        messages.push((entry.parse().ok()?, Utf8Bytes::from(fields.next()?)));
    }
    Some(HistorySlice { position: Position { offset, epoch }, first, messages })
}
