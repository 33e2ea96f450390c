//! Presence in Redis: per group, a sorted set `<p>:presence:{<group>}` of client ids scored by
//! expiry (Redis's own clock, so instances' clocks do not matter) and a hash
//! `<p>:presence:{<group>}:info` of their descriptions. Each instance re-adds its own clients
//! before they expire; reading drops the expired ones, so a crashed instance leaves no ghosts.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::Pool;

use super::invoke;
use crate::broker::BrokerError;
use crate::group::GroupName;
use crate::protocol::ClientInfo;

/// Shared script prelude: `now` in ms by Redis's clock, and `chunked`, which runs a bulk
/// command 1000 items at a time (Lua's `unpack` is limited by its stack).
const NOW_AND_CHUNKS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function chunked(cmd, key, items)
  local out = {}
  for i = 1, #items, 1000 do
    local part = redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
    if type(part) == 'table' then
      for _, v in ipairs(part) do table.insert(out, v) end
    end
  end
  return out
end
";

/// KEYS: set, info. ARGV: ttl ms, then client/info pairs.
static SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{NOW_AND_CHUNKS}
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1"
    ))
});

/// KEYS: set, info. Returns the descriptions of live entries after dropping expired ones.
static LIST: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{NOW_AND_CHUNKS}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  chunked('HDEL', KEYS[2], expired)
end
return chunked('HMGET', KEYS[2], redis.call('ZRANGE', KEYS[1], 0, -1))"
    ))
});

const REMOVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1";

fn keys(prefix: &str, group: &GroupName) -> (String, String) {
    (format!("{prefix}:presence:{{{group}}}"), format!("{prefix}:presence:{{{group}}}:info"))
}

pub(super) async fn set(
    pool: &Pool,
    prefix: &str,
    group: &GroupName,
    clients: &[ClientInfo],
    ttl: Duration,
) -> Result<(), BrokerError> {
    if clients.is_empty() {
        return Ok(());
    }
    let (set, info) = keys(prefix, group);
    let mut call = SET.key(set);
    call.key(info).arg(ttl.as_millis().max(1) as u64);
    for client in clients {
        let description = serde_json::to_string(client).expect("client info serializes");
        call.arg(&client.client).arg(description);
    }
    invoke::<i64>(pool, &call).await.map(drop)
}

pub(super) async fn remove(
    pool: &Pool,
    prefix: &str,
    group: &GroupName,
    client: &str,
) -> Result<(), BrokerError> {
    static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REMOVE));
    let (set, info) = keys(prefix, group);
    let mut call = SCRIPT.key(set);
    call.key(info).arg(client);
    invoke::<i64>(pool, &call).await.map(drop)
}

pub(super) async fn list(
    pool: &Pool,
    prefix: &str,
    group: &GroupName,
) -> Result<Vec<ClientInfo>, BrokerError> {
    let (set, info) = keys(prefix, group);
    let mut call = LIST.key(set);
    call.key(info);
    let descriptions: Vec<Option<String>> = invoke(pool, &call).await?;
    Ok(descriptions.into_iter().flatten().filter_map(|d| serde_json::from_str(&d).ok()).collect())
}
