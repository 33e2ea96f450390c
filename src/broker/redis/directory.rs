//! Expiring directories in Redis: a sorted set of ids scored by expiry (Redis's own clock, so
//! instances' clocks do not matter) and a hash of their JSON descriptions. Writers re-add their
//! entries before they expire; reading drops the expired ones, so a crashed instance leaves no
//! ghosts. Two directories use it: presence per group (`<p>:presence:{<group>}` and
//! `…:info`), and the deployment's live nodes (`<p>:{nodes}`, `<p>:{nodes}:info`). A
//! directory's two keys share a hash tag, so each script touches one Redis Cluster slot.

use std::sync::LazyLock;
use std::time::Duration;

use crate::redis::Pool;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::group::GroupName;
use crate::protocol::ClientInfo;
use crate::redis::{Unavailable, invoke, invoke_all, slot};

/// Groups whose presence one heartbeat pipeline refreshes.
const PIPELINE_GROUPS: usize = 256;

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
static SET: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
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
static LIST: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(&format!(
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

/// One directory's two keys.
pub(super) struct Directory {
    set: String,
    info: String,
}

impl Directory {
    /// Who is subscribed to `group`.
    pub(super) fn presence(prefix: &str, group: &GroupName) -> Self {
        let set = format!("{prefix}:presence:{{{group}}}");
        Self { info: format!("{set}:info"), set }
    }

    /// The deployment's live gateway instances.
    pub(super) fn nodes(prefix: &str) -> Self {
        Self { set: format!("{prefix}:{{nodes}}"), info: format!("{prefix}:{{nodes}}:info") }
    }

    /// Adds or refreshes `(id, description)` entries for `ttl`.
    pub(super) async fn set<'e, T: Serialize + 'e>(
        &self,
        pool: &Pool,
        entries: impl IntoIterator<Item = (&'e str, &'e T)>,
        ttl: Duration,
    ) -> Result<(), Unavailable> {
        match self.setting(entries, ttl) {
            Some(call) => invoke::<i64>(pool, &call).await.map(drop),
            None => Ok(()),
        }
    }

    /// The script call that adds or refreshes `entries`; `None` when there are none.
    fn setting<'e, T: Serialize + 'e>(
        &self,
        entries: impl IntoIterator<Item = (&'e str, &'e T)>,
        ttl: Duration,
    ) -> Option<::redis::ScriptInvocation<'static>> {
        let mut call = SET.key(&self.set);
        call.key(&self.info).arg(ttl.as_millis().max(1) as u64);
        let mut any = false;
        for (id, description) in entries {
            call.arg(id).arg(serde_json::to_string(description).expect("descriptions serialize"));
            any = true;
        }
        any.then_some(call)
    }

    /// Refreshes the presence entries of many groups, one pipelined batch per chunk of groups,
    /// the chunks in flight together.
    pub(super) async fn refresh_presence(
        pool: &Pool,
        prefix: &str,
        groups: &[(GroupName, Vec<ClientInfo>)],
        ttl: Duration,
    ) -> Result<(), Unavailable> {
        let calls: Vec<_> = groups
            .iter()
            .filter_map(|(group, clients)| {
                let directory = Self::presence(prefix, group);
                let call = directory.setting(clients.iter().map(|c| (c.client.as_str(), c)), ttl)?;
                Some((slot(&directory.set), call))
            })
            .collect();
        let pipelines = calls.chunks(PIPELINE_GROUPS).map(|chunk| invoke_all(pool, &SET, chunk));
        futures_util::future::try_join_all(pipelines).await.map(drop)
    }

    pub(super) async fn remove(&self, pool: &Pool, id: &str) -> Result<(), Unavailable> {
        static SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(REMOVE));
        let mut call = SCRIPT.key(&self.set);
        call.key(&self.info).arg(id);
        invoke::<i64>(pool, &call).await.map(drop)
    }

    /// The descriptions of every live entry.
    pub(super) async fn list<T: DeserializeOwned>(&self, pool: &Pool) -> Result<Vec<T>, Unavailable> {
        let mut call = LIST.key(&self.set);
        call.key(&self.info);
        let descriptions: Vec<Option<String>> = invoke(pool, &call).await?;
        Ok(descriptions.into_iter().flatten().filter_map(|d| serde_json::from_str(&d).ok()).collect())
    }
}
