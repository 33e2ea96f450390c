//! `[namespaces.<name>]`: per-namespace policy for every group whose name starts `<name>.`.
//!
//! ```toml
//! [namespaces.chat]
//! client_publish = true   # clients on /ws may publish
//! history_size = 100      # keep the last 100 messages of each group (0: no history)
//! history_ttl = "10m"     # ... for 10 minutes after the last publish
//! presence = true         # who is subscribed, across instances
//! join_leave = true       # members see join/leave events
//! require_auth = true     # anonymous clients may not subscribe, publish or see presence
//! subscribe_proxy = true  # the backend's subscribe hook authorizes subscribes ([proxy])
//! publish_proxy = true    # client publishes go through the backend's publish hook ([proxy])
//! personal = true         # each user may subscribe to <namespace>.<its user id> and no other
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most messages a group's history may keep.
pub const MAX_HISTORY_SIZE: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Whether clients on the generic `/ws` endpoint may publish to groups of this namespace.
    pub client_publish: bool,
    /// Messages kept per group for recovery; 0 turns history (offsets, epochs) off.
    pub history_size: usize,
    /// How long a group's history lives after its last publish.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Whether clients may ask who is subscribed (`presence` request, `GET /api/presence`).
    pub presence: bool,
    /// Whether members receive `join` and `leave` events.
    pub join_leave: bool,
    /// Whether anonymous clients (no token, with `auth = "optional"`) are refused here.
    pub require_auth: bool,
    /// Whether `[proxy] subscribe_url` authorizes subscribes to this namespace.
    pub subscribe_proxy: bool,
    /// Whether client publishes to this namespace go through `[proxy] publish_url`.
    pub publish_proxy: bool,
    /// Per-user groups: a client may subscribe to `<namespace>.<its user id>` and to no other
    /// group of the namespace, whatever its token's patterns say.
    pub personal: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            client_publish: false,
            history_size: 0,
            history_ttl: Duration::from_secs(600),
            presence: false,
            join_leave: false,
            require_auth: false,
            subscribe_proxy: false,
            publish_proxy: false,
            personal: false,
        }
    }
}

impl NamespaceConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.history_size > MAX_HISTORY_SIZE {
            return Err(format!("history_size: at most {MAX_HISTORY_SIZE}"));
        }
        if self.history_size > 0 && self.history_ttl < Duration::from_secs(1) {
            return Err("history_ttl: at least 1s".into());
        }
        Ok(())
    }
}
