//! The bridge between a Django Channels layer (channels_redis) and Herald groups.
//!
//! A Django app keeps calling `group_send("chat.lobby", {...})`; Herald clients of `chat.lobby`
//! receive `{"type":"message","group":"chat.lobby","data":{...the event dict...}}`, with Herald's
//! guarantees (history, recovery, one SPUBLISH per message).
//!
//! **Where it runs.** [`Bridge`] runs in the leader of the scheduler replicas (and in standalone),
//! so each event is taken from Redis once for the whole deployment and published through the
//! normal publish path. Which groups to bridge: those matching `[channels] groups` that have at
//! least one Herald subscriber anywhere (the broker's directory of subscribed groups), polled
//! twice a second.
//!
//! **Core layer** (`core`): the bridge is a member of each such Channels group, under one
//! process-specific channel per group, `herald.<redis_prefix>!<group>`, so every event lands in
//! one sorted set (`<prefix>herald.<redis_prefix>!`) and names its group. The bridge moves events
//! from that queue to an in-flight set atomically, publishes them in order, and only then drops
//! them from the in-flight set; each publish carries the event's id, so a new leader that finds
//! events in flight publishes each at most once (Herald drops a repeat within a minute).
//! Memberships are refreshed well inside `group_expiry` and left when the group has no Herald
//! subscriber any more; they are not left on a takeover, so none of the group's events is missed.
//!
//! **PubSub layer** (`pubsub`): the bridge subscribes to `<prefix>__group__<group>` on the host
//! the layer shards it to. Redis pub/sub keeps nothing: events sent while no leader is
//! subscribed (during a takeover, at most the lease TTL) are not bridged.
//!
//! **Egress** ([`Egress`], `egress = true`): a Herald publish to a bridged group is also sent into
//! the layer as `group_send` would send it, as `{"type":"herald.message","group","data","client",
//! "user"}`, by the gateway or scheduler that accepted it. No loops: the bridge's own channels
//! are left out of egress, and events of type `herald.message` are never bridged.

mod codec;
mod core;
mod pubsub;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// An event dict.
type Dict = Map<String, Value>;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wildmatch::WildMatch;

use crate::broker::{Directory, HistoryPolicy, Publisher};
use crate::config::{ChannelsLayer, Config, ConfigError};
use crate::group::GroupName;
use crate::metrics::Metrics;
use codec::{Codec, Event};

/// The type of the events Herald sends into the layer.
const EGRESS_TYPE: &str = "herald.message";
/// How often the bridge looks for groups that gained or lost Herald subscribers.
const POLL_GROUPS: Duration = Duration::from_millis(500);

/// One Redis host of the layer.
struct Host {
    pool: crate::redis::Pool,
    client: ::redis::Client,
}

/// A Channels layer as the config describes it, compiled once.
pub(crate) struct Layer {
    kind: ChannelsLayer,
    prefix: String,
    hosts: Vec<Host>,
    codec: Codec,
    patterns: Vec<WildMatch>,
    egress: bool,
    expiry: u64,
    group_expiry: u64,
    capacity: usize,
    /// The non-local part of the bridge's channel names: `herald.<redis_prefix>!`.
    bridge: String,
}

impl Layer {
    /// The layer of `config`, if it has a `[channels]` section.
    pub(crate) fn compile(config: &Config) -> Result<Option<Arc<Self>>, ConfigError> {
        let Some(channels) = &config.channels else { return Ok(None) };
        let redis = config.redis();
        let hosts = channels
            .hosts_or(redis.as_ref())
            .into_iter()
            .enumerate()
            .map(|(i, url)| {
                let key = format!("channels.hosts[{i}]");
                let client = ::redis::Client::open(url).map_err(|e| ConfigError::new(&key, e))?;
                let pool = crate::redis::Pool::single(url).map_err(|e| ConfigError::new(&key, e))?;
                Ok(Host { pool, client })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Some(Arc::new(Self {
            kind: channels.layer,
            prefix: channels.prefix.clone(),
            hosts,
            codec: Codec::new(channels)?,
            patterns: channels.groups.iter().map(|p| WildMatch::new(p)).collect(),
            egress: channels.egress,
            expiry: channels.expiry,
            group_expiry: channels.group_expiry,
            capacity: channels.capacity,
            bridge: format!("herald.{}!", config.redis_prefix),
        })))
    }

    /// Whether `group` is one of the bridged groups.
    pub(crate) fn bridges(&self, group: &GroupName) -> bool {
        self.patterns.iter().any(|p| p.matches(group.as_str()))
    }

    /// The host channels_redis keeps `value` (a group, a channel's non-local name) on.
    fn host(&self, value: &str) -> &Host {
        &self.hosts[codec::shard(value, self.hosts.len())]
    }

    fn label(&self) -> &'static str {
        match self.kind {
            ChannelsLayer::Core => "core",
            ChannelsLayer::Pubsub => "pubsub",
        }
    }
}

/// Sends Herald publishes to bridged groups into the layer.
#[derive(Clone)]
pub(crate) struct Egress {
    layer: Arc<Layer>,
    metrics: Arc<Metrics>,
}

impl Egress {
    /// The egress of `layer`, when it is turned on.
    pub(crate) fn of(layer: Option<&Arc<Layer>>, metrics: &Arc<Metrics>) -> Option<Self> {
        let layer = layer.filter(|layer| layer.egress)?;
        Some(Self { layer: layer.clone(), metrics: metrics.clone() })
    }

    /// Sends a message just published to `group` into the layer, if the group is bridged.
    /// A failure is logged and counted; the Herald publish stands.
    pub(crate) async fn send(
        &self,
        group: &GroupName,
        data: &RawValue,
        client: Option<&str>,
        user: Option<&str>,
    ) {
        if !self.layer.bridges(group) {
            return;
        }
        let data: Value = serde_json::from_str(data.get()).expect("published data is JSON");
        let event =
            json!({"type": EGRESS_TYPE, "group": group, "data": data, "client": client, "user": user});
        let Value::Object(event) = event else { unreachable!("an object literal") };
        let sent = match self.layer.kind {
            ChannelsLayer::Core => core::group_send(&self.layer, group, &event).await,
            ChannelsLayer::Pubsub => pubsub::group_send(&self.layer, group, &event).await,
        };
        let outcome = match sent {
            Ok(()) => "egress",
            Err(e) => {
                tracing::warn!(%group, error = %e, "could not send into the Channels layer");
                "egress_failed"
            }
        };
        self.metrics.channels_event(self.layer.label(), outcome);
    }
}

/// Takes events from the layer and publishes them to Herald; runs while leading.
pub(crate) struct Bridge {
    layer: Arc<Layer>,
    publisher: Arc<dyn Publisher>,
    directory: Arc<dyn Directory>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

/// Why an event taken from the layer was not published, for the metrics.
enum Skip {
    BadInput,
    NotBridged,
    Echo,
}

impl Bridge {
    pub(crate) fn new(
        layer: Arc<Layer>,
        publisher: Arc<dyn Publisher>,
        directory: Arc<dyn Directory>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { layer, publisher, directory, config, metrics }
    }

    /// Bridges until `stop`: follows which groups have Herald subscribers, keeps the layer's
    /// memberships or subscriptions in step, and publishes what arrives.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(layer = self.layer.label(), "channels bridge started");
        let (groups_tx, groups) = watch::channel(BTreeSet::new());
        let watching = tokio::spawn(self.clone().watch_groups(groups_tx, stop.clone()));
        match self.layer.kind {
            ChannelsLayer::Core => core::run(&self, groups, &stop).await,
            ChannelsLayer::Pubsub => pubsub::run(&self, groups, &stop).await,
        }
        let _ = watching.await;
        tracing::info!("channels bridge stopped");
    }

    /// Publishes the bridged groups that have at least one Herald subscriber, as they change.
    async fn watch_groups(
        self: Arc<Self>,
        groups: watch::Sender<BTreeSet<GroupName>>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(POLL_GROUPS);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.directory.groups().await {
                Ok(subscribed) => {
                    let bridged: BTreeSet<GroupName> =
                        subscribed.into_iter().filter(|g| self.layer.bridges(g)).collect();
                    groups.send_if_modified(|current| std::mem::replace(current, bridged) != *current);
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the groups with subscribers"),
            }
        }
    }

    /// Publishes one event to Herald: to `group` (pubsub: the channel it came on), or to the
    /// group its bridge channel names (core); at most once per `id`, when given. An error means
    /// Herald's broker failed: the caller keeps the event to try again (core) or loses it
    /// (pubsub). Events that are not publishable are counted and dropped.
    async fn publish(
        &self,
        bytes: &[u8],
        group: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), crate::broker::BrokerError> {
        let (group, event) = match self.accept(bytes, group) {
            Ok(accepted) => accepted,
            Err(skip) => {
                let outcome = match skip {
                    Skip::BadInput => "bad_input",
                    Skip::NotBridged => "not_bridged",
                    Skip::Echo => "echo",
                };
                self.metrics.channels_event(self.layer.label(), outcome);
                return Ok(());
            }
        };
        let data = serde_json::value::to_raw_value(&Value::Object(event.dict)).expect("JSON maps serialize");
        let history = HistoryPolicy::of(self.config.namespace(group.namespace()));
        let published = match id {
            Some(id) => self.publisher.publish_once(&group, &data, history, id).await.map(drop),
            None => self.publisher.publish(&group, &data, history).await,
        };
        let outcome = if published.is_ok() { "bridged" } else { "failed" };
        self.metrics.channels_event(self.layer.label(), outcome);
        published
    }

    /// The group and event of bytes read from the layer, or why they are not bridged.
    fn accept(&self, bytes: &[u8], group: Option<&str>) -> Result<(GroupName, Event), Skip> {
        let event = self.layer.codec.decode(bytes).map_err(|e| {
            tracing::warn!(group, error = %e, "dropped bytes from the Channels layer that are not an event");
            Skip::BadInput
        })?;
        let named = || event.channels.iter().find_map(|c| c.strip_prefix(self.layer.bridge.as_str()));
        let group = group.or_else(named).ok_or(Skip::NotBridged)?;
        let group = GroupName::new(group).map_err(|_| Skip::NotBridged)?;
        if !self.layer.bridges(&group) {
            return Err(Skip::NotBridged);
        }
        if event.kind() == Some(EGRESS_TYPE) {
            return Err(Skip::Echo);
        }
        Ok((group, event))
    }
}
