//! Group history in Redis: a hash `<p>:history:{<group>}:meta` (`epoch`, `started`, `offset`,
//! `line`, and after a takeover `prev` and `fork`) and a stream `<p>:history:{<group>}:stream`
//! whose entry ids are `0-<offset>`, so reading "after offset N" is one `XRANGE (0-N +`. The
//! braces are a Redis Cluster hash tag: a group's keys stay on one shard. Appending and
//! publishing is one script, so every frame in the stream was published exactly once, in offset
//! order. Reads create nothing: a group's keys appear with its first publish.
//!
//! **Timelines.** Redis replicates asynchronously: a replica promoted after its master died (or a
//! master restarted from an older snapshot) may lack the last messages clients were already
//! given, and would hand their offsets out again to new messages. So each append notes the
//! replication id of the server it runs on (`line`); the first append on another one (a
//! failover, a restart, the group's slot moved to another shard) starts a new epoch that
//! continues the offsets, and records the old epoch (`prev`) and the last offset this server has
//! of it (`fork`). A client at or before the fork is recovered across the takeover; one past it
//! saw messages that are gone, and is told.

use std::sync::LazyLock;

use crate::redis::Pool;
use axum::extract::ws::Utf8Bytes;

use crate::broker::history::{HistoryState, Page, Position};
use crate::broker::{BrokerError, HistoryPolicy, ONCE_WINDOW, new_epoch};
use crate::group::GroupName;
use crate::protocol::MessageParts;
use crate::redis::{Unavailable, invoke};

/// Redis's clock in ms, as `now`.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: meta, stream, and optionally a once-key. ARGV: epoch candidate, ttl ms, channel, head,
/// middle, tail, size, stamp, once window ms. Starts an epoch when the group has none (first
/// publish, expired, or Redis lost its data), or continues the offsets under a new one on
/// another timeline. With a once-key that exists already, publishes nothing and returns 0.
pub(super) static APPEND: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
        r"{NOW}
if KEYS[3] and not redis.call('SET', KEYS[3], 1, 'NX', 'PX', ARGV[9]) then
  return 0
end
local line = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'line', 'offset')
local epoch = meta[1]
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[1], 'prev', 'fork')
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'started', now, 'offset', 0, 'line', line)
elseif meta[2] ~= line then
  redis.call('HSET', KEYS[1], 'prev', epoch, 'fork', meta[3], 'epoch', ARGV[1], 'line', line)
  epoch = ARGV[1]
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = ARGV[4] .. offset .. ARGV[5] .. epoch .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], '0-' .. offset, 'f', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SPUBLISH', ARGV[3], ARGV[8] .. frame)
return offset"
    ))
});

/// KEYS: meta, stream. Returns epoch ('' when none), started, top, first retained, now, when
/// Redis's data life began (`LASTSAVE`, which a restart resets, in ms; -1 where the ACL does not
/// allow it), and the epoch this one continues ('' when none) with its last offset here.
static STATE: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
        r"{NOW}
local life = redis.pcall('LASTSAVE')
if type(life) == 'number' then life = life * 1000 else life = -1 end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'started', 'offset', 'prev', 'fork')
local first = 0
if meta[1] then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #oldest > 0 then first = tonumber(string.sub(oldest[1][1], 3)) end
end
return {{meta[1] or '', tonumber(meta[2] or 0), tonumber(meta[3] or 0), first, now, life, meta[4] or '',
  tonumber(meta[5] or 0)}}"
    ))
});

/// KEYS: meta, stream. ARGV: epoch, after, limit, max bytes. Nil when the epoch is no longer the
/// group's; else offset/frame pairs after `after`, stopping at `limit` entries or once `max
/// bytes` were taken (at least one entry when any is there).
static READ: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return false end
local out = {}
local from = '(0-' .. ARGV[2]
local left, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
while left > 0 and budget > 0 do
  local batch = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', math.min(left, 64))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    table.insert(out, string.sub(entry[1], 3))
    table.insert(out, entry[2][2])
    left, budget = left - 1, budget - #entry[2][2]
    from = '(' .. entry[1]
    if left == 0 or budget <= 0 then break end
  end
end
return out",
    )
});

fn keys(prefix: &str, group: &GroupName) -> (String, String) {
    (format!("{prefix}:history:{{{group}}}:meta"), format!("{prefix}:history:{{{group}}}:stream"))
}

/// Appends a message to the group's history and publishes it on `channel`, atomically; with
/// `once` (a key of the group's slot), only if that key is new. Returns the offset, 0 when not
/// published.
pub(super) async fn append(
    pool: &Pool,
    prefix: &str,
    channel: &str,
    group: &GroupName,
    parts: &MessageParts,
    policy: HistoryPolicy,
    once: Option<&str>,
) -> Result<u64, Unavailable> {
    invoke(pool, &appending(prefix, channel, group, parts, policy, once)).await
}

/// The script call of [`append`], for a pipeline of many (load [`APPEND`] first).
pub(super) fn appending(
    prefix: &str,
    channel: &str,
    group: &GroupName,
    parts: &MessageParts,
    policy: HistoryPolicy,
    once: Option<&str>,
) -> ::redis::ScriptInvocation<'static> {
    let (meta, stream) = keys(prefix, group);
    let mut call = APPEND.key(meta);
    call.key(stream);
    if let Some(once) = once {
        call.key(once);
    }
    call.arg(new_epoch())
        .arg(policy.ttl.as_millis().max(1) as u64)
        .arg(channel)
        .arg(&parts.head)
        .arg(parts.middle)
        .arg(&parts.tail)
        .arg(policy.size)
        .arg(super::stamp())
        .arg(ONCE_WINDOW.as_millis() as u64);
    call
}

/// Where the group's history stands.
pub(super) async fn state(pool: &Pool, prefix: &str, group: &GroupName) -> Result<HistoryState, BrokerError> {
    let (meta, stream) = keys(prefix, group);
    let mut call = STATE.key(meta);
    call.key(stream);
    let (epoch, started, top, first, now_ms, life, prev, fork): (
        String,
        u64,
        u64,
        u64,
        u64,
        i64,
        String,
        u64,
    ) = invoke(pool, &call).await?;
    let epoch = (!epoch.is_empty()).then_some((epoch, started));
    let continues = (!prev.is_empty()).then_some(Position { offset: fork, epoch: prev });
    Ok(HistoryState { epoch, top, first, now_ms, life_began_ms: u64::try_from(life).ok(), continues })
}

/// Up to `limit` messages of `epoch` after `after`, about `max_bytes` at most; `None` when the
/// group's history is no longer that epoch.
pub(super) async fn read(
    pool: &Pool,
    prefix: &str,
    group: &GroupName,
    epoch: &str,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Option<Page>, BrokerError> {
    let (meta, stream) = keys(prefix, group);
    let mut call = READ.key(meta);
    call.key(stream).arg(epoch).arg(after).arg(limit).arg(max_bytes);
    let Some(reply): Option<Vec<String>> = invoke(pool, &call).await? else { return Ok(None) };
    let mut page = Vec::with_capacity(reply.len() / 2);
    let mut fields = reply.into_iter();
    while let (Some(offset), Some(frame)) = (fields.next(), fields.next()) {
        let offset = offset
            .parse()
            .map_err(|_| BrokerError::Unavailable("unexpected history reply from redis".into()))?;
        page.push((offset, Utf8Bytes::from(frame)));
    }
    Ok(Some(page))
}
