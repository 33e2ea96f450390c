//! The core layer (`channels_redis.core.RedisChannelLayer`): group memberships in sorted sets
//! `<prefix>:group:<group>`, one sorted-set queue per channel (`<prefix><non-local name>`),
//! scored by send time, capped at `capacity` by the senders.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Bridge, Dict, Layer};
use crate::group::GroupName;
use crate::redis::{Backoff, Unavailable, invoke, query, run_pipeline};

/// Events moved from the queue per round trip.
const BATCH: usize = 256;
/// How long the drain waits, at most, before looking at an empty queue again.
const IDLE_MAX: Duration = Duration::from_millis(25);

/// KEYS: queue, in-flight. ARGV: how many. Moves the oldest events to the in-flight set and
/// returns them with their scores, oldest first.
static TAKE: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
local batch = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #batch, 2 do
  redis.call('ZADD', KEYS[2], batch[i + 1], batch[i])
end
if #batch > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #batch / 2 - 1)
end
return batch",
    )
});

/// channels_redis' `group_send`: drop expired messages, then queue the message where the queue
/// is under capacity. KEYS: channel queues. ARGV: a message per queue, a capacity per queue, the
/// time, the expiry. Returns how many queues were full.
static GROUP_SEND: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
local over_capacity = 0
local current_time = ARGV[#ARGV - 1]
local expiry = ARGV[#ARGV]
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, tonumber(current_time) - tonumber(expiry))
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
    redis.call('ZADD', KEYS[i], current_time, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    over_capacity = over_capacity + 1
  end
end
return over_capacity",
    )
});

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn group_key(layer: &Layer, group: &str) -> String {
    format!("{}:group:{group}", layer.prefix)
}

/// Runs the core layer's bridge until `stop`: memberships and the queue's drain.
pub(super) async fn run(
    bridge: &Bridge,
    groups: watch::Receiver<BTreeSet<GroupName>>,
    stop: &CancellationToken,
) {
    tokio::join!(keep_memberships(&bridge.layer, groups, stop), drain(bridge, stop));
}

/// Keeps the bridge a member of every bridged group with Herald subscribers: joins within a
/// poll of the first subscribe, refreshes every membership well inside `group_expiry`, and
/// leaves once a group has no subscriber.
async fn keep_memberships(
    layer: &Layer,
    mut groups: watch::Receiver<BTreeSet<GroupName>>,
    stop: &CancellationToken,
) {
    let refresh_every = Duration::from_secs((layer.group_expiry / 4).clamp(1, 3600));
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + refresh_every, refresh_every);
    let mut joined: BTreeSet<GroupName> = BTreeSet::new();
    let mut all = true;
    loop {
        let wanted = groups.borrow_and_update().clone();
        let join: Vec<_> = if all {
            wanted.iter().cloned().collect()
        } else {
            wanted.difference(&joined).cloned().collect()
        };
        let leave: Vec<_> = joined.difference(&wanted).cloned().collect();
        let failed = match update_memberships(layer, &join, &leave).await {
            Ok(()) => {
                joined = wanted;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the bridge's Channels memberships; retrying");
                true
            }
        };
        all = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = groups.changed() => {}
            _ = refresh.tick() => all = true,
            _ = tokio::time::sleep(Duration::from_secs(1)), if failed => {}
        }
    }
}

async fn update_memberships(
    layer: &Layer,
    join: &[GroupName],
    leave: &[GroupName],
) -> Result<(), Unavailable> {
    let now = now_secs();
    for group in join {
        let mut pipe = ::redis::pipe();
        let key = group_key(layer, group.as_str());
        pipe.cmd("ZADD").arg(&key).arg(now).arg(format!("{}{group}", layer.bridge)).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(layer.group_expiry).ignore();
        run_pipeline::<()>(&layer.host(group.as_str()).pool, &pipe).await?;
    }
    for group in leave {
        let mut cmd = ::redis::cmd("ZREM");
        cmd.arg(group_key(layer, group.as_str())).arg(format!("{}{group}", layer.bridge));
        query::<i64>(&layer.host(group.as_str()).pool, &cmd).await?;
    }
    Ok(())
}

/// Drains the bridge's queue until `stop`: first whatever a previous leader left in flight,
/// then batch after batch, each published in order before it leaves the in-flight set.
async fn drain(bridge: &Bridge, stop: &CancellationToken) {
    let layer = &bridge.layer;
    let queue = format!("{}{}", layer.prefix, layer.bridge);
    let in_flight = format!("{queue}$herald-in-flight");
    let pool = &layer.host(&layer.bridge).pool;
    let mut backoff = Backoff::default();
    let mut idle = Duration::ZERO;
    let mut leftovers = true;
    while !stop.is_cancelled() {
        let batch = match leftovers {
            true => in_flight_events(pool, &in_flight).await,
            false => take(pool, &queue, &in_flight).await,
        };
        let outcome = match batch {
            Ok(batch) if batch.is_empty() => {
                leftovers = false;
                idle = (idle * 2).clamp(Duration::from_millis(1), IDLE_MAX);
                Ok(())
            }
            Ok(batch) => {
                idle = Duration::ZERO;
                publish_batch(bridge, pool, &in_flight, &batch).await
            }
            Err(e) => Err(e),
        };
        let wait = match outcome {
            Ok(()) => {
                backoff.reset();
                idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "channels bridge: will retry the events in flight");
                // What is in flight stays there and goes first next time.
                leftovers = true;
                backoff.fail()
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

type Queued = Vec<(Vec<u8>, f64)>;

async fn in_flight_events(pool: &crate::redis::Pool, in_flight: &str) -> Result<Queued, Unavailable> {
    let mut cmd = ::redis::cmd("ZRANGE");
    cmd.arg(in_flight).arg(0).arg(-1).arg("WITHSCORES");
    query(pool, &cmd).await
}

async fn take(pool: &crate::redis::Pool, queue: &str, in_flight: &str) -> Result<Queued, Unavailable> {
    let mut call = TAKE.key(queue);
    call.key(in_flight).arg(BATCH);
    invoke(pool, &call).await
}

/// Publishes a batch in order, then drops it from the in-flight set. Stops at the first event
/// Herald's broker refuses, dropping only those before it.
async fn publish_batch(
    bridge: &Bridge,
    pool: &crate::redis::Pool,
    in_flight: &str,
    batch: &Queued,
) -> Result<(), Unavailable> {
    let mut done = Vec::new();
    let mut failed = None;
    for (bytes, _) in batch {
        // The event's bytes are unique in its queue (channels_redis puts random bytes first).
        let id = hex(&Sha256::digest(bytes)[..16]);
        if let Err(e) = bridge.publish(bytes, None, Some(&id)).await {
            failed = Some(e);
            break;
        }
        done.push(bytes);
    }
    if !done.is_empty() {
        let mut cmd = ::redis::cmd("ZREM");
        cmd.arg(in_flight).arg(done);
        query::<i64>(pool, &cmd).await?;
    }
    match failed {
        Some(e) => Err(Unavailable(e.to_string())),
        None => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `group_send` as channels_redis does it, to every channel of the group but the bridge's.
pub(super) async fn group_send(layer: &Layer, group: &GroupName, event: &Dict) -> Result<(), Unavailable> {
    let now = now_secs();
    let key = group_key(layer, group.as_str());
    let host = layer.host(group.as_str());
    let mut stale = ::redis::cmd("ZREMRANGEBYSCORE");
    stale.arg(&key).arg(0).arg((now as u64).saturating_sub(layer.group_expiry));
    query::<i64>(&host.pool, &stale).await?;
    let mut members = ::redis::cmd("ZRANGE");
    members.arg(&key).arg(0).arg(-1);
    let channels: Vec<String> = query(&host.pool, &members).await?;
    // Channels sharing a queue get one message naming them all, as channels_redis sends it.
    let mut by_queue: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for channel in channels.into_iter().filter(|c| !c.starts_with(layer.bridge.as_str())) {
        let non_local = channel.find('!').map_or(channel.as_str(), |bang| &channel[..=bang]).to_string();
        let shard = super::codec::shard(&non_local, layer.hosts.len());
        by_queue.entry(format!("{}{non_local}", layer.prefix)).or_insert((shard, Vec::new())).1.push(channel);
    }
    let mut by_host: HashMap<usize, Vec<(String, Vec<u8>)>> = HashMap::new();
    for (queue, (shard, channels)) in by_queue {
        let mut message = event.clone();
        message.insert("__asgi_channel__".into(), channels.into());
        by_host.entry(shard).or_default().push((queue, layer.codec.encode(&message)));
    }
    for (shard, queues) in by_host {
        let pool = &layer.hosts[shard].pool;
        let mut call = GROUP_SEND.prepare_invoke();
        for (queue, _) in &queues {
            call.key(queue);
        }
        for (_, message) in &queues {
            call.arg(message.as_slice());
        }
        for _ in &queues {
            call.arg(layer.capacity);
        }
        call.arg(now).arg(layer.expiry);
        let full: i64 = invoke(pool, &call).await?;
        if full > 0 {
            tracing::info!(%group, full, "Channels queues over capacity: those consumers miss this message");
        }
    }
    Ok(())
}
