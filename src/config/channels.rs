//! `[channels]`: the bridge from a Django Channels layer (channels_redis) to Herald groups.
//!
//! ```toml
//! [channels]
//! layer = "core"            # channels_redis.core.RedisChannelLayer, or "pubsub"
//! hosts = ["redis://127.0.0.1:6379/0"]   # CHANNEL_LAYERS hosts (default: redis_url)
//! prefix = "asgi"           # CHANNEL_LAYERS prefix
//! groups = ["chat.*"]       # glob patterns of Channels group names to bridge
//! symmetric_encryption_keys = []
//! egress = false            # true: Herald publishes to bridged groups reach Channels consumers
//! ```
//! `expiry`, `group_expiry`, `capacity`, `random_prefix_length` and `serializer_format` mirror
//! the CHANNEL_LAYERS options of the same names, with channels_redis' defaults.

use serde::{Deserialize, Serialize};

use super::{ConfigError, RedisTarget, invalid};

/// Which channels_redis layer the Django app runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsLayer {
    /// `channels_redis.core.RedisChannelLayer`: sorted-set queues per channel.
    #[default]
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer`: Redis pub/sub channels per group.
    Pubsub,
}

/// How channels_redis turns a message into bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerializerFormat {
    #[default]
    Msgpack,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    pub layer: ChannelsLayer,
    /// Redis URLs of the layer, in CHANNEL_LAYERS order (groups are sharded over them as
    /// channels_redis shards them). Empty: `redis_url`.
    pub hosts: Vec<String>,
    pub prefix: String,
    /// Glob patterns (`chat.*`) of the Channels groups to bridge.
    pub groups: Vec<String>,
    /// As in CHANNEL_LAYERS: messages are Fernet-encrypted with keys derived from these.
    pub symmetric_encryption_keys: Vec<String>,
    /// Whether Herald publishes to bridged groups are sent into the layer too.
    pub egress: bool,
    /// Seconds a queued message lives (core layer).
    pub expiry: u64,
    /// Seconds a group membership lives without being refreshed (core layer).
    pub group_expiry: u64,
    /// Messages a channel queue holds before senders drop more (core layer).
    pub capacity: usize,
    /// Random bytes in front of each serialized message (core layer).
    pub random_prefix_length: usize,
    pub serializer_format: SerializerFormat,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            layer: ChannelsLayer::Core,
            hosts: Vec::new(),
            prefix: "asgi".into(),
            groups: Vec::new(),
            symmetric_encryption_keys: Vec::new(),
            egress: false,
            expiry: 60,
            group_expiry: 86400,
            capacity: 100,
            random_prefix_length: 12,
            serializer_format: SerializerFormat::Msgpack,
        }
    }
}

impl ChannelsConfig {
    /// The layer's hosts: the configured ones, or Herald's own Redis when that is one server
    /// (channels_redis cannot use a Redis Cluster, and reaches Sentinel its own way).
    pub fn hosts_or<'a>(&'a self, redis: Option<&'a RedisTarget>) -> Vec<&'a str> {
        match (self.hosts.is_empty(), redis) {
            (true, Some(RedisTarget::Single(url))) => vec![url.as_str()],
            (true, _) => Vec::new(),
            (false, _) => self.hosts.iter().map(String::as_str).collect(),
        }
    }
}

pub(super) fn validate(channels: &ChannelsConfig, redis: Option<&RedisTarget>) -> Result<(), ConfigError> {
    let hosts = channels.hosts_or(redis);
    if hosts.is_empty() {
        return Err(invalid(
            "channels.hosts",
            "give the layer's Redis hosts (they default to redis_url, a single Redis)",
        ));
    }
    for (i, host) in hosts.iter().enumerate() {
        ::redis::Client::open(*host).map_err(|e| invalid(format!("channels.hosts[{i}]"), e))?;
    }
    if channels.groups.is_empty() {
        return Err(invalid(
            "channels.groups",
            "name at least one pattern of groups to bridge (e.g. \"chat.*\")",
        ));
    }
    let pattern_char = |c: char| c.is_ascii_alphanumeric() || "_.-*?".contains(c);
    if let Some((i, bad)) =
        channels.groups.iter().enumerate().find(|(_, p)| p.is_empty() || !p.chars().all(pattern_char))
    {
        return Err(invalid(
            format!("channels.groups[{i}]"),
            format!("{bad:?} is not a pattern of group names"),
        ));
    }
    if channels.prefix.is_empty() {
        return Err(invalid("channels.prefix", "must not be empty"));
    }
    if channels.symmetric_encryption_keys.iter().any(String::is_empty) {
        return Err(invalid("channels.symmetric_encryption_keys", "keys must not be empty"));
    }
    if channels.expiry == 0 || channels.group_expiry == 0 || channels.capacity == 0 {
        return Err(invalid("channels", "expiry, group_expiry and capacity must be at least 1"));
    }
    Ok(())
}
