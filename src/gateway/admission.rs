//! Who may open a WebSocket, decided at the handshake: the browser origin, and connection
//! limits per instance and per source IP. An admitted connection holds a [`Slot`] until its
//! session ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use wildmatch::WildMatch;

use super::Gateway;
use super::cork::Cork;
use super::error::ApiError;
use crate::config::{AuthMode, Config};
use crate::group::GroupName;
use crate::protocol::{ErrorCode, Since};

/// Origin patterns and connection counts.
pub(super) struct Admission {
    /// `(matches the whole origin, pattern)`: patterns with a scheme match `scheme://host[:port]`,
    /// the others match `host[:port]`.
    origins: Vec<(bool, WildMatch)>,
    max: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Self {
        let origins = config
            .allowed_origins
            .iter()
            .map(|p| (p.contains("://"), WildMatch::new(&p.to_ascii_lowercase())))
            .collect();
        Self {
            origins,
            max: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            counts: Mutex::default(),
        }
    }

    /// Whether a browser at `origin` may connect to a gateway reached as `host`: its own host
    /// always may, other origins only when a pattern allows them.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        let authority = origin.split_once("://").map_or(origin.as_str(), |(_, rest)| rest);
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        self.origins.iter().any(|(whole, p)| p.matches(if *whole { &origin } else { authority }))
    }

    /// 403 for a browser request whose `Origin` is not allowed; requests without one are not
    /// from browsers and pass.
    pub(super) fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if origin.to_str().is_ok_and(|o| self.origin_allowed(o, host)) {
            return Ok(());
        }
        let message = "origin not allowed (see allowed_origins)";
        Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message))
    }

    fn reserve(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut counts = crate::lock(&self.counts);
        if counts.total >= self.max {
            let message = "this instance is at max_connections";
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message));
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            let message = "too many connections from this address (max_connections_per_ip)";
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message));
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(())
    }

    /// WebSocket connections currently held.
    pub(crate) fn connections(&self) -> usize {
        crate::lock(&self.counts).total
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = crate::lock(&self.counts);
        counts.total -= 1;
        if let Some(from_ip) = counts.per_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// A connection counted against the limits until dropped.
pub(super) struct Slot {
    gateway: Arc<Gateway>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gateway.admission.release(self.ip);
    }
}

/// An admitted WebSocket handshake: origin checked, slot reserved, the URL's token and
/// recovery positions taken, and what the backend's connect hook is to see of it.
pub(super) struct Admitted {
    pub(super) peer: SocketAddr,
    pub(super) token: Option<String>,
    /// The request path, for the connect hook (empty unless `auth = "proxy"`).
    pub(super) path: String,
    /// The handshake headers the connect hook receives (`[proxy] forward_headers`).
    pub(super) headers: HeaderMap,
    /// `?since=<group>:<offset>:<epoch>` (repeatable): where the client left off in groups its
    /// route joins it to.
    pub(super) since: HashMap<GroupName, Since>,
    pub(super) slot: Slot,
    /// The connection's cork, to send the `101` with the welcome.
    pub(super) cork: Option<Arc<Cork>>,
}

/// The token and `since` positions of a WebSocket URL's query.
fn parse_query(query: &str) -> Result<(Option<String>, HashMap<GroupName, Since>), ApiError> {
    let (mut token, mut since) = (None, HashMap::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "token" => token = Some(value.into_owned()),
            "since" => {
                let (group, position) = parse_since(&value).ok_or_else(|| {
                    let message = format!("since must be <group>:<offset>:<epoch>, got {value:?}");
                    ApiError::bad_request(ErrorCode::BadRequest, message)
                })?;
                since.insert(group, position);
            }
            _ => {}
        }
    }
    Ok((token, since))
}

pub(super) fn parse_since(value: &str) -> Option<(GroupName, Since)> {
    let mut parts = value.splitn(3, ':');
    let group = GroupName::new(parts.next()?).ok()?;
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next().filter(|e| !e.is_empty())?.to_string();
    Some((group, Since { offset, epoch }))
}

impl FromRequestParts<Arc<Gateway>> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, ApiError> {
        let ConnectInfo(peer) =
            ConnectInfo::<SocketAddr>::from_request_parts(parts, gateway).await.map_err(|_| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "no peer address")
            })?;
        gateway.admission.check_origin(&parts.headers)?;
        if gateway.is_draining() {
            let message = "this instance is shutting down: connect to another";
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message));
        }
        let (token, since) = parse_query(parts.uri.query().unwrap_or(""))?;
        // What only the connect hook is told: copied for no one else.
        let (path, headers) = match (&gateway.hooks, gateway.config.auth_mode()) {
            (Some(hooks), AuthMode::Proxy) => (parts.uri.path().to_string(), hooks.forwarded(&parts.headers)),
            _ => (String::new(), HeaderMap::new()),
        };
        gateway.admission.reserve(peer.ip())?;
        let slot = Slot { gateway: gateway.clone(), ip: peer.ip() };
        let cork = parts.extensions.get::<Arc<Cork>>().cloned();
        Ok(Self { peer, token, path, headers, since, slot, cork })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(origins: &[&str]) -> Admission {
        let config =
            Config { allowed_origins: origins.iter().map(|o| o.to_string()).collect(), ..Config::default() };
        Admission::new(&config)
    }

    #[test]
    fn own_host_exact_and_wildcard_origins() {
        let a = admission(&["https://app.example.com", "*.example.org", "http://localhost:*"]);
        assert!(a.origin_allowed("https://gw.test:8000", Some("gw.test:8000")), "own host");
        assert!(a.origin_allowed("https://APP.example.com", None));
        assert!(!a.origin_allowed("http://app.example.com", None), "scheme matters when given");
        assert!(a.origin_allowed("https://x.example.org", None));
        assert!(a.origin_allowed("http://a.b.example.org", None));
        assert!(!a.origin_allowed("https://example.org.evil.com", None));
        assert!(!a.origin_allowed("https://evilexample.org", None));
        assert!(a.origin_allowed("http://localhost:5173", None));
        assert!(!a.origin_allowed("https://evil.com", Some("gw.test")));
    }

    #[test]
    fn the_query_gives_a_token_and_positions_to_recover_from() {
        let (token, since) = parse_query("token=t%2B1&since=chat.a:41:9f2c&since=b:0:0-17-3&x=1").unwrap();
        assert_eq!(token.as_deref(), Some("t+1"));
        let g = |name: &str| GroupName::new(name).unwrap();
        assert_eq!(since[&g("chat.a")], Since { offset: 41, epoch: "9f2c".into() });
        assert_eq!(since[&g("b")], Since { offset: 0, epoch: "0-17-3".into() });
        for bad in ["since=a:1", "since=a b:1:e", "since=a:x:e", "since=a:1:"] {
            assert_eq!(parse_query(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn limits_per_instance_and_per_ip() {
        let a = Admission { max: 3, max_per_ip: 2, ..admission(&[]) };
        let (ip1, ip2): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        a.reserve(ip1).unwrap();
        a.reserve(ip1).unwrap();
        assert_eq!(a.reserve(ip1).unwrap_err().status, StatusCode::TOO_MANY_REQUESTS);
        a.reserve(ip2).unwrap();
        assert_eq!(a.reserve(ip2).unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
        a.release(ip1);
        a.reserve(ip2).unwrap();
        assert_eq!(a.connections(), 3);
    }
}
