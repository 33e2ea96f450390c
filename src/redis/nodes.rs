//! Where a deployment's pub/sub is served: its masters, and which hash slots each one owns.
//!
//! One server is one shard that owns every slot. Under Sentinel, the master is whichever server
//! the sentinels named last (see [`super::sentinel`]). On a
//! Cluster, `CLUSTER SLOTS` (asked through the command pool, which reaches any live node) gives
//! each master's slot ranges; sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) on a channel is served by
//! the master of the channel's slot only.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};

use super::{Pool, Unavailable, query};
use crate::config::{ConfigError, RedisTarget};

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// How to find the masters of the configured Redis.
#[derive(Clone)]
pub(crate) enum Nodes {
    Single(ConnectionInfo),
    /// The master the pool's sentinel watcher named last.
    Sentinel(tokio::sync::watch::Receiver<Option<Master>>),
    /// The pool to ask, and how to connect to a node (credentials) but for its address.
    Cluster {
        pool: Pool,
        template: ConnectionInfo,
    },
}

/// One master: `host:port`, and how to connect to it.
#[derive(Debug, Clone)]
pub(crate) struct Master {
    pub(crate) addr: String,
    pub(crate) info: ConnectionInfo,
}

/// The masters of a deployment at one moment, and which slots each owns.
#[derive(Debug, Clone)]
pub(crate) struct Shards {
    pub(crate) masters: Vec<Master>,
    /// Slot → index in `masters`; `None` for one master that owns every slot.
    slots: Option<Vec<Option<u16>>>,
}

impl Shards {
    /// The master that serves `slot` now, if any does.
    pub(crate) fn owner(&self, slot: u16) -> Option<&Master> {
        match &self.slots {
            None => self.masters.first(),
            Some(slots) => slots.get(slot as usize).copied().flatten().map(|i| &self.masters[i as usize]),
        }
    }

    /// Whether both name the same masters for the same slots.
    pub(crate) fn same_as(&self, other: &Shards) -> bool {
        let addrs = |s: &Shards| s.masters.iter().map(|m| m.addr.clone()).collect::<Vec<_>>();
        addrs(self) == addrs(other) && self.slots == other.slots
    }
}

impl Nodes {
    /// How to find the masters of `target`; `pool` is the command pool of the same target.
    pub(crate) fn new(target: &RedisTarget, pool: &Pool) -> Result<Self, ConfigError> {
        match target {
            RedisTarget::Single(url) => Ok(Self::Single(
                url.as_str().into_connection_info().map_err(|e| ConfigError::new("redis_url", e))?,
            )),
            RedisTarget::Cluster(nodes) => {
                let first = nodes.first().map(String::as_str).unwrap_or_default();
                let template = first
                    .into_connection_info()
                    .map_err(|e| ConfigError::new("redis_cluster_nodes[0]", e))?;
                Ok(Self::Cluster { pool: pool.clone(), template })
            }
            RedisTarget::Sentinel { .. } => match pool {
                Pool::Sentinel(pool) => Ok(Self::Sentinel(pool.master())),
                _ => Err(ConfigError::new("redis_sentinels", "the pool is not a sentinel pool")),
            },
        }
    }

    /// How often the masters should be looked at even when nothing seems wrong: never on one
    /// server, soon after the sentinels name another master, every 10 s on a Cluster (slots can
    /// move without anyone's connection dropping).
    pub(crate) fn look_every(&self) -> Option<Duration> {
        match self {
            Self::Single(_) => None,
            Self::Sentinel(_) => Some(Duration::from_millis(200)),
            Self::Cluster { .. } => Some(Duration::from_secs(10)),
        }
    }

    /// The masters now, within [`super::COMMAND_TIMEOUT`].
    pub(crate) async fn discover(&self) -> Result<Shards, Unavailable> {
        match self {
            Self::Single(info) => Ok(one_master(info.clone())),
            Self::Sentinel(master) => {
                Ok(Shards { masters: vec![super::sentinel::named(master).await?], slots: None })
            }
            Self::Cluster { pool, template } => {
                let reply: Value = query(pool, ::redis::cmd("CLUSTER").arg("SLOTS")).await?;
                cluster_shards(reply, template)
            }
        }
    }
}

fn one_master(info: ConnectionInfo) -> Shards {
    Shards { masters: vec![Master { addr: address(&info), info }], slots: None }
}

pub(super) fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
    }
}

/// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …], replicas…], …]`.
fn cluster_shards(reply: Value, template: &ConnectionInfo) -> Result<Shards, Unavailable> {
    let bad = || Unavailable("unexpected CLUSTER SLOTS reply".into());
    let Value::Array(ranges) = reply else { return Err(bad()) };
    let mut masters: Vec<Master> = Vec::new();
    let mut slots = vec![None; SLOTS];
    for range in ranges {
        let Value::Array(fields) = range else { return Err(bad()) };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(Value::SimpleString(host)) => host.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else { return Err(bad()) };
        let host = match host.as_str() {
            // The node does not know its address (a cluster of one): the one it was reached at.
            "" => match template.addr() {
                ConnectionAddr::Tcp(seed, _) => seed.clone(),
                _ => continue,
            },
            "?" => continue, // the range has no reachable master yet
            _ => host,
        };
        let port = u16::try_from(*port).map_err(|_| bad())?;
        let addr = format!("{host}:{port}");
        let index = match masters.iter().position(|m| m.addr == addr) {
            Some(i) => i,
            None => {
                let info = template.clone().set_addr(ConnectionAddr::Tcp(host, port));
                masters.push(Master { addr, info });
                masters.len() - 1
            }
        };
        for slot in *start.max(&0)..=*end.min(&(SLOTS as i64 - 1)) {
            slots[slot as usize] = Some(index as u16);
        }
    }
    if masters.is_empty() {
        return Err(Unavailable("the cluster serves no slots".into()));
    }
    Ok(Shards { masters, slots: Some(slots) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn cluster_slots_map_each_slot_to_its_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("10.0.0.2", 7001)]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("10.0.0.1", 7000)]),
        ]);
        let template = "redis://:secret@seed:7000/".into_connection_info().unwrap();
        let shards = cluster_shards(reply, &template).unwrap();
        assert_eq!(shards.masters.len(), 2, "one entry per master, not per range");
        assert_eq!(shards.owner(0).unwrap().addr, "10.0.0.1:7000");
        assert_eq!(shards.owner(5461).unwrap().addr, "10.0.0.2:7001");
        assert_eq!(shards.owner(16383).unwrap().addr, "10.0.0.1:7000");
        let info = &shards.owner(6000).unwrap().info;
        assert_eq!(info.redis_settings().password(), Some("secret"), "credentials of the seed");
        assert!(shards.same_as(&shards.clone()));

        let gap =
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(99), node("10.0.0.1", 7000)])]);
        assert!(cluster_shards(gap, &template).unwrap().owner(100).is_none(), "an unserved slot");
        assert!(cluster_shards(Value::Nil, &template).is_err());
    }
}
