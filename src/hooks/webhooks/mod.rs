//! Webhooks: the deployment's events (a group occupied or vacated, a client joining or leaving
//! a group, a user's first connection or last) POSTed to the application's backend, once per
//! deployment, at least once to the endpoint.
//!
//! - **Deciding, once.** Each gateway reports its sessions' changes ([`Tracker`]); a Lua script
//!   applies each to the deployment's counts in Redis (members per group, connections per user,
//!   and each node's own clients and memberships) and, when a count crosses zero, appends the
//!   event to an outbox list. Every key shares one hash tag, so each change is decided atomically
//!   on one shard, whichever gateway reports it: two gateways never both see a group's first
//!   member. A group whose last member left is only *vacating*: it is vacated when still empty
//!   `vacate_delay` later, so a reconnect does not flap it.
//! - **Crashed gateways.** Each gateway keeps a liveness key alive for `presence_ttl`; the
//!   leader ([`Deliverer`]) replays the leaves and disconnects of every client of a node whose
//!   key expired, through the same script.
//! - **Delivering.** The scheduler's leader sends the outbox in order: a POST of the event's JSON
//!   signed with `X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body>`, removed from the
//!   outbox only once the endpoint answered 2xx, retried with backoff meanwhile. An event may
//!   reach the endpoint twice (a leader that dies between the answer and the removal): its `id`
//!   lets the endpoint drop repeats. While the endpoint is down the outbox keeps `max_backlog`
//!   events, dropping the oldest beyond that (counted).

mod deliver;
mod track;

use std::time::{Duration, SystemTime};

pub(crate) use deliver::Deliverer;
pub(crate) use track::{Change, Tracker};

use crate::config::Config;

/// The Lua script every change of state goes through.
fn script() -> &'static ::redis::Script {
    static SCRIPT: std::sync::OnceLock<::redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| ::redis::Script::new(include_str!("transitions.lua")))
}

/// The names of the webhook state's keys; all share the hash tag `{webhooks}`.
#[derive(Clone)]
struct Keys {
    base: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self { base: format!("{prefix}:{{webhooks}}") }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.base)
    }

    /// The hash of one run of a node (`incarnation` tells a restarted node from its past self).
    fn node(&self, node: &str, incarnation: &str) -> String {
        format!("{}:node:{node}:{incarnation}", self.base)
    }

    /// The liveness key of the node whose hash is `node_key`.
    fn alive(&self, node_key: &str) -> String {
        node_key.replacen(":node:", ":alive:", 1)
    }

    /// The node name in a node hash's key.
    fn node_name<'a>(&self, node_key: &'a str) -> &'a str {
        let rest = node_key.strip_prefix(&self.base).and_then(|r| r.strip_prefix(":node:")).unwrap_or("");
        rest.rsplit_once(':').map_or(rest, |(node, _)| node)
    }

    fn slot(&self) -> u16 {
        crate::redis::slot(&self.base)
    }
}

/// What every call of the script needs besides the change itself.
#[derive(Clone)]
struct Settings {
    keys: Keys,
    vacate_delay: Duration,
    /// The enabled events, space-separated with a space on each side.
    events: String,
    max_backlog: usize,
    liveness: Duration,
}

impl Settings {
    fn new(config: &Config) -> Self {
        let webhooks = &config.webhooks;
        Self {
            keys: Keys::new(&config.redis_prefix),
            vacate_delay: webhooks.vacate_delay,
            events: format!(" {} ", webhooks.events.join(" ")),
            max_backlog: webhooks.max_backlog,
            liveness: config.presence_ttl,
        }
    }

    /// One call of the script: `op` on the node hash `node_key` of `node`, for `client`, `user`
    /// and `group` (empty where the op has none). `alive`: refresh the node's liveness key.
    fn call(
        &self,
        op: &str,
        node_key: &str,
        node: &str,
        (client, user, group): (&str, &str, &str),
        alive: bool,
    ) -> ::redis::ScriptInvocation<'static> {
        let now = SystemTime::now();
        let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let k = |name: &str| self.keys.key(name);
        let mut call = script().prepare_invoke();
        call.key(node_key)
            .key(k("groups"))
            .key(k("users"))
            .key(k("occupied"))
            .key(k("vacating"))
            .key(k("outbox"))
            .key(k("seq"))
            .key(k("nodes"))
            .key(k("epoch"))
            .key(k("dropped"))
            .key(self.keys.alive(node_key));
        call.arg(op)
            .arg(node)
            .arg(client)
            .arg(user)
            .arg(group)
            .arg(now_ms)
            .arg(humantime::format_rfc3339_millis(now).to_string())
            .arg(self.vacate_delay.as_millis() as u64)
            .arg(&self.events)
            .arg(self.max_backlog)
            .arg(format!("{:08x}", rand::random::<u32>()))
            .arg(if alive { self.liveness.as_millis().to_string() } else { String::new() });
        call
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_name_their_node_and_liveness() {
        let keys = Keys::new("herald");
        let node = keys.node("gw-1", "0a1b");
        assert_eq!(node, "herald:{webhooks}:node:gw-1:0a1b");
        assert_eq!(keys.alive(&node), "herald:{webhooks}:alive:gw-1:0a1b");
        assert_eq!(keys.node_name(&node), "gw-1");
        assert_eq!(crate::redis::slot(&keys.key("outbox")), keys.slot(), "one shard");
    }
}
