//! Route paths and group templates: `/ws/chat/{room}` and `chat.{room}`.

use std::collections::HashMap;

use crate::group::{GroupName, InvalidGroup};

/// A group name with `{param}` placeholders, filled from a route's path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RouteTemplate(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

impl RouteTemplate {
    pub(super) fn parse(template: &str) -> Result<Self, String> {
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

    pub(super) fn params(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The group for one connection: each `{param}` replaced by its value (values are not
    /// re-scanned for placeholders). A missing parameter fills in as empty, which then fails
    /// validation unless the rest of the template makes a valid name.
    pub(super) fn fill(&self, values: &HashMap<String, String>) -> Result<GroupName, InvalidGroup> {
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
pub(super) fn path_params(path: &str) -> Result<Vec<&str>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_templates_without_rescanning_values() {
        let t = RouteTemplate::parse("chat.{room}.{kind}").unwrap();
        let values = HashMap::from([("room".to_string(), "{kind}".to_string()), ("kind".into(), "x".into())]);
        assert!(t.fill(&values).is_err(), "braces from a value stay literal and are invalid");
        let values = HashMap::from([("room".to_string(), "lobby".to_string()), ("kind".into(), "x".into())]);
        assert_eq!(t.fill(&values).unwrap().as_str(), "chat.lobby.x");
    }
}
