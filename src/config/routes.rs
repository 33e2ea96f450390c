//! `[[routes]]`: WebSocket paths that auto-subscribe their clients and grant them publishing,
//! the counterpart of Django Channels' `routing.py`.
//!
//! ```toml
//! [[routes]]
//! path = "/ws/chat/{room}"
//! subscribe = ["chat.{room}"]
//! publish = ["chat.{room}"]
//! ```
//! Path parameters are whole segments written `{name}`; group templates may use them. The
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
    /// Group templates clients on this path may publish to.
    pub publish: Vec<String>,
}
