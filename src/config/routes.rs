//! `[[routes]]`: WebSocket paths that auto-subscribe their clients and grant them publishing,
//! the counterpart of Django Channels' `routing.py`.
//!
//! ```toml
//! [[routes]]
//! path = "/ws/chat/{room}"
//! subscribe = ["chat.{room}"]
//! publish = ["chat.{room}"]
//! ```
//! Path parameters are whole segments written `{name}`; group templates may use them.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::group::{GroupName, InvalidGroup};

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

/// A group name with `{param}` placeholders, filled from a route's path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

impl RouteTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or("unclosed '{'")? + open;
            let name = &rest[open + 1..close];
            if !is_param_name(name) {
                return Err(format!("bad parameter name {name:?}"));
            }
            pieces.push(Piece::Param(name.to_string()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self(pieces))
    }

    fn params(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The group for one connection: each `{param}` replaced by its value (values are not
    /// re-scanned for placeholders). A missing parameter fills in as empty, which then fails
    /// validation unless the rest of the template makes a valid name.
    pub fn fill(&self, values: &HashMap<String, String>) -> Result<GroupName, InvalidGroup> {
        let mut name = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => name.push_str(text),
                Piece::Param(param) => name.push_str(values.get(param).map_or("", String::as_str)),
            }
        }
        GroupName::new(&name)
    }
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The parameter names of a route path, or why the path is not acceptable.
fn path_params(path: &str) -> Result<Vec<&str>, String> {
    let rest = path.strip_prefix("/ws/").ok_or("must start with /ws/")?;
    let mut params = Vec::new();
    for segment in rest.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_param_name(name) {
                return Err(format!("bad parameter name {name:?}"));
            }
            if params.contains(&name) {
                return Err(format!("parameter {name:?} appears twice"));
            }
            params.push(name);
        } else if segment.is_empty() || segment.contains(['{', '}', '*', ':']) {
            return Err(format!("bad segment {segment:?}"));
        }
    }
    Ok(params)
}

pub(super) fn validate(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut paths = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        let params = path_params(&route.path).map_err(|e| invalid(format!("routes[{i}].path"), e))?;
        if !paths.insert(route.path.as_str()) {
            return Err(invalid(format!("routes[{i}].path"), "duplicate path"));
        }
        let sample: HashMap<String, String> = params.iter().map(|p| (p.to_string(), "x".into())).collect();
        for (key, templates) in [("subscribe", &route.subscribe), ("publish", &route.publish)] {
            for (j, template) in templates.iter().enumerate() {
                let key = format!("routes[{i}].{key}[{j}]");
                let parsed = RouteTemplate::parse(template).map_err(|e| invalid(&key, e))?;
                if let Some(unknown) = parsed.params().find(|p| !params.contains(p)) {
                    return Err(invalid(&key, format!("{{{unknown}}} is not a parameter of the path")));
                }
                parsed.fill(&sample).map_err(|e| invalid(&key, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, subscribe: &[&str]) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            publish: vec![],
        }
    }

    #[test]
    fn fills_templates_without_rescanning_values() {
        let t = RouteTemplate::parse("chat.{room}.{kind}").unwrap();
        let values = HashMap::from([("room".to_string(), "{kind}".to_string()), ("kind".into(), "x".into())]);
        assert!(t.fill(&values).is_err(), "braces from a value stay literal and are invalid");
        let values = HashMap::from([("room".to_string(), "lobby".to_string()), ("kind".into(), "x".into())]);
        assert_eq!(t.fill(&values).unwrap().as_str(), "chat.lobby.x");
    }

    #[test]
    fn validation_names_the_route_and_the_problem() {
        let ok = [route("/ws/chat/{room}", &["chat.{room}", "lobby"])];
        assert_eq!(validate(&ok), Ok(()));
        let err = |r: RouteConfig| validate(&[r]).unwrap_err().0;
        assert!(err(route("/chat/{room}", &[])).starts_with("routes[0].path: must start with /ws/"));
        assert!(err(route("/ws/{a}/{a}", &[])).contains("appears twice"));
        assert!(err(route("/ws/{Room}", &[])).contains("bad parameter name"));
        assert!(
            err(route("/ws/chat/{room}", &["chat.{user}"])).starts_with("routes[0].subscribe[0]: {user}")
        );
        assert!(err(route("/ws/chat/{room}", &["chat {room}"])).starts_with("routes[0].subscribe[0]:"));
        let dup = [route("/ws/a", &[]), route("/ws/a", &[])];
        assert!(validate(&dup).unwrap_err().0.starts_with("routes[1].path: duplicate"));
    }
}
