//! `[[routes]]`: WebSocket paths that auto-subscribe their clients and grant them publishing,
//! the counterpart of Django Channels' `routing.py`.
//!
//! ```toml
//! [[routes]]
//! path = "/ws/chat/{room}"
//! subscribe = ["chat.{room}"]
//! publish = ["chat.{room}"]
//! ```
//! Path parameters are whole segments written `{name}`; group templates may use them. A route
//! narrows what its clients may do, never widens it: its `subscribe` groups are joined only where
//! the client's identity allows, and with a `publish` list its clients may publish to those
//! groups only (and only where their identity and namespace allow). The
//! gateway compiles paths and templates at start (`gateway::routes`), naming the key of any
//! error (`routes[0].subscribe[1]`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Path under `/ws/`, in axum syntax: `/ws/chat/{room}`.
    pub path: String,
    /// Group templates every client on this path is subscribed to on connect.
    pub subscribe: Vec<String>,
    /// The only group templates clients on this path may publish to; unset: no narrowing.
    pub publish: Option<Vec<String>>,
}
