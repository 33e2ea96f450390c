//! Configured WebSocket routes: `[[routes]]` paths whose clients are subscribed on connect and
//! may publish to the route's groups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};

use super::admission::Admitted;
use super::{Gateway, api::ApiError, session};
use crate::config::{ConfigError, RouteConfig, RouteTemplate};
use crate::group::GroupName;
use crate::protocol::ErrorCode;

/// What a connection may do beyond the namespace policy.
#[derive(Debug, Default)]
pub struct Grants {
    /// Groups the client is subscribed to on connect.
    pub subscribe: Vec<GroupName>,
    /// Groups the client may publish to whatever their namespace says.
    pub publish: HashSet<GroupName>,
}

/// A route with its templates parsed once at start.
pub struct CompiledRoute {
    pub path: String,
    subscribe: Vec<RouteTemplate>,
    publish: Vec<RouteTemplate>,
}

impl CompiledRoute {
    pub fn compile(route: &RouteConfig) -> Result<Self, ConfigError> {
        let parse = |templates: &[String]| {
            templates
                .iter()
                .map(|t| {
                    RouteTemplate::parse(t).map_err(|e| ConfigError(format!("route {}: {e}", route.path)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            path: route.path.clone(),
            subscribe: parse(&route.subscribe)?,
            publish: parse(&route.publish)?,
        })
    }

    /// The grants of one connection, from its path parameters.
    fn grants(&self, params: &HashMap<String, String>) -> Result<Grants, String> {
        let fill =
            |t: &RouteTemplate| t.fill(params).map_err(|e| format!("path gives an invalid group: {e}"));
        Ok(Grants {
            subscribe: self.subscribe.iter().map(fill).collect::<Result<_, _>>()?,
            publish: self.publish.iter().map(fill).collect::<Result<_, _>>()?,
        })
    }
}

/// The GET handler of one route: fills its groups from the path, then upgrades.
pub fn handler(route: Arc<CompiledRoute>) -> MethodRouter<Arc<Gateway>> {
    get(
        move |State(gateway): State<Arc<Gateway>>,
              Path(params): Path<HashMap<String, String>>,
              admitted: Admitted,
              ws: WebSocketUpgrade| async move {
            match route.grants(&params) {
                Ok(grants) => session::upgrade(gateway, ws, admitted, grants),
                Err(message) => ApiError::bad_request(ErrorCode::InvalidGroup, message).into_response(),
            }
        },
    )
}
