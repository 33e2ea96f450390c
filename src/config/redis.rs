//! Which Redis Herald shares its groups through: exactly one of
//!
//! ```toml
//! redis_url = "redis://r:6379/"                                   # one Redis
//! redis_cluster_nodes = ["redis://r1:6379/", "redis://r2:6379/"]  # a Redis Cluster (any of its nodes)
//! redis_sentinels = ["redis://s1:26379/", "redis://s2:26379/"]    # a master watched by Sentinel
//! redis_sentinel_master = "mymaster"
//! ```
//!
//! With none, `standalone` runs on the in-memory broker. Under Sentinel, the username, password
//! and database of the first sentinel URL are also used for the master.

use super::{Config, ConfigError, invalid};

/// Where Herald's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Single(String),
    /// A Redis Cluster, reached through any of these nodes.
    Cluster(Vec<String>),
    /// The master that these sentinels know as `master`.
    Sentinel { sentinels: Vec<String>, master: String },
}

impl RedisTarget {
    /// How the target is configured, for errors and the startup log.
    pub fn describe(&self) -> String {
        match self {
            Self::Single(_) => "redis".into(),
            Self::Cluster(nodes) => format!("redis cluster ({} seed nodes)", nodes.len()),
            Self::Sentinel { sentinels, master } => {
                format!("redis master {master:?} ({} sentinels)", sentinels.len())
            }
        }
    }
}

impl Config {
    /// The Redis this config names, if any (validated: at most one is named).
    pub fn redis(&self) -> Option<RedisTarget> {
        if let Some(url) = &self.redis_url {
            Some(RedisTarget::Single(url.clone()))
        } else if !self.redis_cluster_nodes.is_empty() {
            Some(RedisTarget::Cluster(self.redis_cluster_nodes.clone()))
        } else if !self.redis_sentinels.is_empty() {
            let master = self.redis_sentinel_master.clone().unwrap_or_default();
            Some(RedisTarget::Sentinel { sentinels: self.redis_sentinels.clone(), master })
        } else {
            None
        }
    }
}

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let named = [
        config.redis_url.is_some(),
        !config.redis_cluster_nodes.is_empty(),
        !config.redis_sentinels.is_empty(),
    ];
    if named.iter().filter(|n| **n).count() > 1 {
        return Err(invalid(
            "redis_url",
            "set only one of redis_url, redis_cluster_nodes and redis_sentinels",
        ));
    }
    if let Some(url) = &config.redis_url {
        check_url("redis_url", url)?;
    }
    for (i, url) in config.redis_cluster_nodes.iter().enumerate() {
        let info = check_url(format!("redis_cluster_nodes[{i}]"), url)?;
        if info.redis_settings().db() != 0 {
            return Err(invalid(format!("redis_cluster_nodes[{i}]"), "a Redis Cluster has only database 0"));
        }
    }
    for (i, url) in config.redis_sentinels.iter().enumerate() {
        check_url(format!("redis_sentinels[{i}]"), url)?;
    }
    match (&config.redis_sentinel_master, config.redis_sentinels.is_empty()) {
        (None, false) => Err(invalid("redis_sentinel_master", "name the master the sentinels watch")),
        (Some(_), true) => Err(invalid("redis_sentinel_master", "needs redis_sentinels")),
        (Some(master), false) if master.trim().is_empty() => {
            Err(invalid("redis_sentinel_master", "must not be empty"))
        }
        _ => Ok(()),
    }
}

fn check_url(key: impl std::fmt::Display, url: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| invalid(&key, e))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(..) => Ok(info),
        _ => Err(invalid(key, "only redis:// (TCP) URLs are supported")),
    }
}
