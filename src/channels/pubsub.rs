//! The pubsub layer (`channels_redis.pubsub.RedisPubSubChannelLayer`): `group_send` publishes
//! to the Redis channel `<prefix>__group__<group>` on the host it hashes to.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Bridge, Dict, Layer};
use crate::group::GroupName;
use crate::redis::{Backoff, Unavailable, query};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn group_channel(layer: &Layer, group: &str) -> String {
    format!("{}__group__{group}", layer.prefix)
}

/// Runs the pubsub layer's bridge until `stop`: one subscriber per host of the layer.
pub(super) async fn run(
    bridge: &Bridge,
    groups: watch::Receiver<BTreeSet<GroupName>>,
    stop: &CancellationToken,
) {
    let hosts = (0..bridge.layer.hosts.len()).map(|host| subscribe(bridge, host, groups.clone(), stop));
    futures_util::future::join_all(hosts).await;
}

/// Keeps one host's subscriptions to the bridged groups it carries, reconnecting with backoff.
async fn subscribe(
    bridge: &Bridge,
    host: usize,
    mut groups: watch::Receiver<BTreeSet<GroupName>>,
    stop: &CancellationToken,
) {
    let layer = &bridge.layer;
    let mut backoff = Backoff::default();
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = tokio::time::timeout(CONNECT_TIMEOUT, layer.hosts[host].client.get_async_pubsub()) => connected,
        };
        let lost = match connected {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                serve(bridge, host, pubsub, &mut groups, stop).await
            }
            Ok(Err(e)) => Unavailable::from_error(e),
            Err(_) => Unavailable("connect timed out".into()),
        };
        if stop.is_cancelled() {
            return;
        }
        tracing::warn!(host, error = %lost, "channels bridge: pub/sub connection lost; events sent meanwhile are not bridged");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.fail()) => {}
        }
    }
}

/// Serves one connection until it fails (or `stop`), returning why.
async fn serve(
    bridge: &Bridge,
    host: usize,
    pubsub: ::redis::aio::PubSub,
    groups: &mut watch::Receiver<BTreeSet<GroupName>>,
    stop: &CancellationToken,
) -> Unavailable {
    let layer = &bridge.layer;
    let (mut sink, mut stream) = pubsub.split();
    let mut active: HashSet<String> = HashSet::new();
    let prefix = group_channel(layer, "");
    loop {
        let wanted: HashSet<String> = groups
            .borrow_and_update()
            .iter()
            .map(|g| group_channel(layer, g.as_str()))
            .filter(|channel| super::codec::shard(channel, layer.hosts.len()) == host)
            .collect();
        let add: Vec<&String> = wanted.difference(&active).collect();
        let drop: Vec<&String> = active.difference(&wanted).collect();
        if !add.is_empty()
            && let Err(e) = sink.subscribe(&add).await
        {
            return Unavailable::from_error(e);
        }
        if !drop.is_empty()
            && let Err(e) = sink.unsubscribe(&drop).await
        {
            return Unavailable::from_error(e);
        }
        active = wanted;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Unavailable("stopped".into()),
                _ = groups.changed() => break,
                message = stream.next() => {
                    let Some(message) = message else { return Unavailable("pub/sub stream ended".into()) };
                    let group = message.get_channel_name().strip_prefix(prefix.as_str()).unwrap_or_default().to_string();
                    // Pub/sub keeps nothing to retry: a failed publish is counted and lost.
                    if let Err(e) = bridge.publish(message.get_payload_bytes(), Some(&group), None).await {
                        tracing::warn!(%group, error = %e, "channels bridge: an event was lost");
                    }
                }
            }
        }
    }
}

/// `group_send` as channels_redis' pubsub layer does it.
pub(super) async fn group_send(layer: &Layer, group: &GroupName, event: &Dict) -> Result<(), Unavailable> {
    let channel = group_channel(layer, group.as_str());
    let mut cmd = ::redis::cmd("PUBLISH");
    cmd.arg(&channel).arg(layer.codec.encode(event));
    query::<i64>(&layer.host(&channel).pool, &cmd).await.map(drop)
}
