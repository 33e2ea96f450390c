//! Configured WebSocket routes: `[[routes]]` paths whose clients are subscribed on connect and
//! may publish to the route's groups. Each route is compiled once at start; a bad path or
//! template stops the gateway with an error naming its key (`routes[0].subscribe[1]`).

mod template;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};

use super::Gateway;
use super::admission::Admitted;
use super::error::ApiError;
use super::session::{self, Grants};
use crate::config::{ConfigError, RouteConfig};
use crate::protocol::ErrorCode;
use template::{RouteTemplate, path_params};

/// A route with its templates parsed once at start.
pub(super) struct CompiledRoute {
    pub(super) path: String,
    subscribe: Vec<RouteTemplate>,
    publish: Option<Vec<RouteTemplate>>,
}

impl CompiledRoute {
    /// Compiles `routes`, checking each path, that paths are unique, and that every template
    /// uses only its path's parameters and makes a valid group name.
    pub(super) fn compile_all(routes: &[RouteConfig]) -> Result<Vec<Arc<Self>>, ConfigError> {
        let mut paths = HashSet::new();
        let mut compiled = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let key = format!("routes[{i}].path");
            let params = path_params(&route.path).map_err(|e| ConfigError::new(&key, e))?;
            if !paths.insert(route.path.as_str()) {
                return Err(ConfigError::new(&key, "duplicate path"));
            }
            let sample: HashMap<String, String> =
                params.iter().map(|p| (p.to_string(), "x".into())).collect();
            let parse = |field: &str, templates: &[String]| {
                templates
                    .iter()
                    .enumerate()
                    .map(|(j, template)| {
                        let key = format!("routes[{i}].{field}[{j}]");
                        let parsed = RouteTemplate::parse(template).map_err(|e| ConfigError::new(&key, e))?;
                        if let Some(unknown) = parsed.params().find(|p| !params.contains(p)) {
                            let why = format!("{{{unknown}}} is not a parameter of the path");
                            return Err(ConfigError::new(&key, why));
                        }
                        parsed.fill(&sample).map_err(|e| ConfigError::new(&key, e))?;
                        Ok(parsed)
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            compiled.push(Arc::new(Self {
                path: route.path.clone(),
                subscribe: parse("subscribe", &route.subscribe)?,
                publish: route.publish.as_deref().map(|publish| parse("publish", publish)).transpose()?,
            }));
        }
        Ok(compiled)
    }

    /// The grants of one connection, from its path parameters (kept for the connect hook).
    fn grants(&self, params: HashMap<String, String>) -> Result<Grants, String> {
        let fill =
            |t: &RouteTemplate| t.fill(&params).map_err(|e| format!("path gives an invalid group: {e}"));
        Ok(Grants {
            subscribe: self.subscribe.iter().map(fill).collect::<Result<_, _>>()?,
            publish: self
                .publish
                .as_ref()
                .map(|p| p.iter().map(fill).collect::<Result<_, _>>())
                .transpose()?,
            since: HashMap::new(),
            params,
        })
    }
}

/// The GET handler of one route: fills its groups from the path, then upgrades.
pub(super) fn handler(route: Arc<CompiledRoute>) -> MethodRouter<Arc<Gateway>> {
    get(
        move |State(gateway): State<Arc<Gateway>>,
              Path(params): Path<HashMap<String, String>>,
              admitted: Admitted,
              ws: WebSocketUpgrade| async move {
            match route.grants(params) {
                Ok(grants) => session::upgrade(gateway, ws, admitted, grants),
                Err(message) => ApiError::bad_request(ErrorCode::InvalidGroup, message).into_response(),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, subscribe: &[&str]) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            publish: None,
        }
    }

    #[test]
    fn compiling_names_the_route_and_the_problem() {
        assert!(CompiledRoute::compile_all(&[route("/ws/chat/{room}", &["chat.{room}", "lobby"])]).is_ok());
        let err =
            |routes: &[RouteConfig]| CompiledRoute::compile_all(routes).err().unwrap().message().to_string();
        assert!(err(&[route("/chat/{room}", &[])]).starts_with("routes[0].path: must start with /ws/"));
        assert!(err(&[route("/ws/{a}/{a}", &[])]).contains("appears twice"));
        assert!(err(&[route("/ws/{Room}", &[])]).contains("bad parameter name"));
        assert!(
            err(&[route("/ws/chat/{room}", &["chat.{user}"])]).starts_with("routes[0].subscribe[0]: {user}")
        );
        assert!(err(&[route("/ws/chat/{room}", &["chat {room}"])]).starts_with("routes[0].subscribe[0]:"));
        assert!(err(&[route("/ws/a", &[]), route("/ws/a", &[])]).starts_with("routes[1].path: duplicate"));
    }
}
