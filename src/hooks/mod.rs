//! Hooks to the application's backend: it decides who connects, who may subscribe where, and
//! what is published, like Centrifugo's proxy or AnyCable's RPC.
//!
//! Each hook is a `POST` of a small JSON document to a configured URL (`[proxy]`), answered with
//! `200` (and JSON), `401`/`403` (with `{"reason": ".."}`), or anything else, which counts as the
//! backend failing. Calls share one pooled HTTP client that never follows redirects, each is
//! bounded by `timeout`, and at most `max_concurrent` are in flight per gateway: a slow backend
//! makes its callers wait (up to the timeout) but never anyone else. Hook URLs and forwarded
//! headers are never logged (reqwest's errors are logged without their URL).

pub(crate) mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::protocol::Since;

/// Largest answer a hook may give (a publish hook returns the message's data).
const MAX_ANSWER: usize = 1024 * 1024;

/// What a hook said, when it did not say yes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HookError {
    /// `401`: the client is not authenticated.
    #[error("{0}")]
    Unauthorized(String),
    /// `403`: not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A timeout, a connection error, another status or a malformed answer.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// The connect hook's question: a new connection, before its welcome.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectRequest<'a> {
    pub(crate) client: &'a str,
    pub(crate) node: &'a str,
    /// `websocket`.
    pub(crate) transport: &'a str,
    pub(crate) path: &'a str,
    /// The route's path parameters (`{"room": "lobby"}`), empty on `/ws`.
    pub(crate) params: &'a HashMap<String, String>,
    pub(crate) remote_addr: String,
}

/// The connect hook's answer: who the client is and what it may do.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Grant {
    pub(crate) user: Option<String>,
    pub(crate) info: Option<Value>,
    /// Patterns of the groups it may subscribe to (like a token's `groups` claim).
    pub(crate) groups: Option<Vec<String>>,
    /// Patterns of the groups it may publish to (like a token's `publish` claim).
    pub(crate) publish: Option<Vec<String>>,
    /// Groups it is put in at once (server-side subscriptions).
    pub(crate) subscribe: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SubscribeRequest<'a> {
    pub(crate) client: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) group: &'a str,
    pub(crate) since: Option<&'a Since>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PublishRequest<'a> {
    pub(crate) client: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) info: Option<&'a Value>,
    pub(crate) group: &'a str,
    pub(crate) data: &'a RawValue,
}

#[derive(Default, Deserialize)]
struct PublishAnswer {
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Refusal {
    reason: Option<String>,
}

/// The configured hooks of one gateway.
pub(crate) struct Hooks {
    http: reqwest::Client,
    connect_url: Option<reqwest::Url>,
    subscribe_url: Option<reqwest::Url>,
    publish_url: Option<reqwest::Url>,
    /// Handshake headers the connect hook receives.
    forward: Vec<HeaderName>,
    /// Calls in flight, at most `max_concurrent`.
    slots: Arc<Semaphore>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Hooks {
    /// The hooks `config` names; `None` when it names none.
    pub(crate) fn from_config(config: &Config, metrics: &Arc<Metrics>) -> Result<Option<Self>, ConfigError> {
        let proxy = &config.proxy;
        let url = |key: &str, url: &Option<String>| {
            url.as_deref().map(|u| reqwest::Url::parse(u).map_err(|e| ConfigError::new(key, e))).transpose()
        };
        let connect_url = url("proxy.connect_url", &proxy.connect_url)?;
        let subscribe_url = url("proxy.subscribe_url", &proxy.subscribe_url)?;
        let publish_url = url("proxy.publish_url", &proxy.publish_url)?;
        if connect_url.is_none() && subscribe_url.is_none() && publish_url.is_none() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(proxy.timeout)
            .build()
            .map_err(|e| ConfigError::new("proxy", e))?;
        let forward = proxy
            .forward_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str()).map_err(|e| ConfigError::new("proxy.forward_headers", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Self {
            http,
            connect_url,
            subscribe_url,
            publish_url,
            forward,
            slots: Arc::new(Semaphore::new(proxy.max_concurrent)),
            timeout: proxy.timeout,
            metrics: metrics.clone(),
        }))
    }

    /// The headers of a handshake the connect hook is to receive.
    pub(crate) fn forwarded(&self, headers: &HeaderMap) -> HeaderMap {
        let mut forwarded = HeaderMap::new();
        for name in &self.forward {
            for value in headers.get_all(name) {
                forwarded.append(name.clone(), value.clone());
            }
        }
        forwarded
    }

    /// Asks the connect hook about a new connection, with its forwarded handshake headers.
    pub(crate) async fn connect(
        &self,
        request: &ConnectRequest<'_>,
        headers: HeaderMap,
    ) -> Result<Grant, HookError> {
        let url = self.connect_url.as_ref().ok_or_else(|| HookError::Unavailable("no connect_url".into()))?;
        let body = self.call("connect", url, request, headers).await?;
        parse(&body)
    }

    /// Asks the subscribe hook whether a client may join a group.
    pub(crate) async fn subscribe(&self, request: &SubscribeRequest<'_>) -> Result<(), HookError> {
        let url =
            self.subscribe_url.as_ref().ok_or_else(|| HookError::Unavailable("no subscribe_url".into()))?;
        self.call("subscribe", url, request, HeaderMap::new()).await.map(drop)
    }

    /// Hands a client publish to the publish hook; `Some(data)` when the backend replaced it.
    pub(crate) async fn publish(
        &self,
        request: &PublishRequest<'_>,
    ) -> Result<Option<Box<RawValue>>, HookError> {
        let url = self.publish_url.as_ref().ok_or_else(|| HookError::Unavailable("no publish_url".into()))?;
        let body = self.call("publish", url, request, HeaderMap::new()).await?;
        Ok(parse::<PublishAnswer>(&body)?.data)
    }

    /// One call: waits for a slot (within the timeout), posts, and sorts the answer out.
    async fn call(
        &self,
        hook: &'static str,
        url: &reqwest::Url,
        body: &impl Serialize,
        headers: HeaderMap,
    ) -> Result<Vec<u8>, HookError> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let _slot = self.slots.acquire().await.map_err(|_| HookError::Unavailable("closed".into()))?;
            let body = serde_json::to_vec(body).expect("hook requests serialize");
            let request =
                self.http.post(url.clone()).headers(headers).header(CONTENT_TYPE, "application/json");
            let response = request.body(body).send().await.map_err(failed)?;
            let status = response.status();
            let body = read_limited(response).await?;
            answer(status, body)
        })
        .await
        .unwrap_or_else(|_| Err(HookError::Unavailable("timed out".into())));
        let label = match &outcome {
            Ok(_) => "ok",
            Err(HookError::Unauthorized(_)) => "unauthorized",
            Err(HookError::Forbidden(_)) => "forbidden",
            Err(HookError::Unavailable(why)) => {
                tracing::warn!(hook, error = %why, "backend hook failed");
                "unavailable"
            }
        };
        self.metrics.hook_call(hook, label);
        outcome
    }
}

fn failed(e: reqwest::Error) -> HookError {
    // Without the URL: it may carry credentials.
    HookError::Unavailable(e.without_url().to_string())
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, HookError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(HookError::Unavailable("answer too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A 2xx answer's body; a refusal with its reason; anything else is the backend failing.
fn answer(status: StatusCode, body: Vec<u8>) -> Result<Vec<u8>, HookError> {
    let reason = |default: &str| {
        serde_json::from_slice::<Refusal>(&body)
            .ok()
            .and_then(|r| r.reason)
            .unwrap_or_else(|| default.to_string())
    };
    match status {
        s if s.is_success() => Ok(body),
        StatusCode::UNAUTHORIZED => Err(HookError::Unauthorized(reason("unauthorized"))),
        StatusCode::FORBIDDEN => Err(HookError::Forbidden(reason("forbidden"))),
        other => Err(HookError::Unavailable(format!("status {other}"))),
    }
}

/// A JSON answer; an empty body reads as `{}`.
fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, HookError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| HookError::Unavailable(format!("malformed answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_status_with_the_backends_reason() {
        assert_eq!(answer(StatusCode::OK, b"{}".to_vec()), Ok(b"{}".to_vec()));
        assert_eq!(
            answer(StatusCode::FORBIDDEN, br#"{"reason":"not in this room"}"#.to_vec()),
            Err(HookError::Forbidden("not in this room".into()))
        );
        assert_eq!(
            answer(StatusCode::UNAUTHORIZED, b"nope".to_vec()),
            Err(HookError::Unauthorized("unauthorized".into()))
        );
        assert!(matches!(answer(StatusCode::BAD_GATEWAY, vec![]), Err(HookError::Unavailable(_))));
        assert!(matches!(answer(StatusCode::FOUND, vec![]), Err(HookError::Unavailable(_))), "no redirects");
        let grant: Grant = parse(br#"{"user":"42","groups":["chat.*"],"subscribe":["user.42"]}"#).unwrap();
        assert_eq!((grant.user.as_deref(), grant.subscribe.len()), (Some("42"), 1));
        assert!(parse::<Grant>(b"").unwrap().user.is_none());
        assert!(matches!(parse::<Grant>(b"[1]"), Err(HookError::Unavailable(_))));
    }
}
