//! `[proxy]`: the application's backend decides, over HTTP, who connects (`auth = "proxy"`), who
//! may subscribe and what is published, for namespaces that ask for it.
//!
//! ```toml
//! auth = "proxy"
//! [proxy]
//! connect_url = "http://app:8000/herald/connect"
//! subscribe_url = "http://app:8000/herald/subscribe"   # for namespaces with subscribe_proxy
//! publish_url = "http://app:8000/herald/publish"       # for namespaces with publish_proxy
//! timeout = "2s"
//! forward_headers = ["Cookie", "Authorization"]
//! max_concurrent = 256
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthMode, Config, ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Authenticates every connection when `auth = "proxy"`.
    pub connect_url: Option<String>,
    /// Authorizes subscribes to namespaces with `subscribe_proxy = true`.
    pub subscribe_url: Option<String>,
    /// Receives client publishes to namespaces with `publish_proxy = true`.
    pub publish_url: Option<String>,
    /// How long one hook call may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Handshake headers copied onto the connect hook's request.
    pub forward_headers: Vec<String>,
    /// Hook calls in flight at once per gateway.
    pub max_concurrent: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_url: None,
            subscribe_url: None,
            publish_url: None,
            timeout: Duration::from_secs(2),
            forward_headers: vec!["Cookie".into(), "Authorization".into()],
            max_concurrent: 256,
        }
    }
}

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let proxy = &config.proxy;
    for (key, url) in [
        ("proxy.connect_url", &proxy.connect_url),
        ("proxy.subscribe_url", &proxy.subscribe_url),
        ("proxy.publish_url", &proxy.publish_url),
    ] {
        if let Some(url) = url {
            let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, e))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(key, "must be an http or https URL"));
            }
        }
    }
    if config.auth == Some(AuthMode::Proxy) && proxy.connect_url.is_none() {
        return Err(invalid("proxy.connect_url", "auth = \"proxy\" needs it"));
    }
    for (name, namespace) in &config.namespaces {
        if namespace.subscribe_proxy && proxy.subscribe_url.is_none() {
            return Err(invalid(format!("namespaces.{name}.subscribe_proxy"), "needs proxy.subscribe_url"));
        }
        if namespace.publish_proxy && proxy.publish_url.is_none() {
            return Err(invalid(format!("namespaces.{name}.publish_proxy"), "needs proxy.publish_url"));
        }
    }
    if proxy.timeout < Duration::from_millis(10) {
        return Err(invalid("proxy.timeout", "must be at least 10ms"));
    }
    if proxy.max_concurrent == 0 {
        return Err(invalid("proxy.max_concurrent", "must be at least 1"));
    }
    if let Some(bad) =
        proxy.forward_headers.iter().find(|h| reqwest::header::HeaderName::try_from(h.as_str()).is_err())
    {
        return Err(invalid("proxy.forward_headers", format!("{bad:?} is not a header name")));
    }
    Ok(())
}
