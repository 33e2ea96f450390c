//! `[webhooks]`: events of the deployment POSTed to the application's backend.
//!
//! ```toml
//! [webhooks]
//! url = "http://app/herald/events"
//! secret = "..."            # signs each body: X-Herald-Signature: sha256=<hex HMAC-SHA256>
//! events = ["group_occupied", "group_vacated", "join", "leave", "user_online", "user_offline"]
//! vacate_delay = "3s"       # a group is vacated only after this long with no member anywhere
//! timeout = "5s"            # per delivery attempt
//! max_backlog = 100000      # events kept in Redis while the endpoint is down
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Every event a webhook can carry.
pub const WEBHOOK_EVENTS: [&str; 6] =
    ["group_occupied", "group_vacated", "join", "leave", "user_online", "user_offline"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events are POSTed; unset: no webhooks.
    pub url: Option<String>,
    /// The HMAC-SHA256 key of `X-Herald-Signature`.
    pub secret: Option<String>,
    /// The events sent (default: all of them).
    pub events: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub vacate_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_backlog: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
            vacate_delay: Duration::from_secs(3),
            timeout: Duration::from_secs(5),
            max_backlog: 100_000,
        }
    }
}

impl WebhooksConfig {
    /// Whether webhooks are on.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

pub(super) fn validate(webhooks: &WebhooksConfig, has_redis: bool) -> Result<(), ConfigError> {
    let Some(url) = &webhooks.url else { return Ok(()) };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("webhooks.url", e))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("webhooks.url", "must be an http:// or https:// URL"));
    }
    if !has_redis {
        return Err(invalid(
            "webhooks",
            "need Redis (redis_url, redis_cluster_nodes or redis_sentinels): the deployment's events are kept there",
        ));
    }
    if webhooks.secret.as_deref().is_none_or(str::is_empty) {
        return Err(invalid("webhooks.secret", "is required: every delivery is signed with it"));
    }
    if let Some(bad) = webhooks.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
        let known = WEBHOOK_EVENTS.join(", ");
        return Err(invalid("webhooks.events", format!("{bad:?} is not an event (known: {known})")));
    }
    if webhooks.vacate_delay > Duration::from_secs(3600) {
        return Err(invalid("webhooks.vacate_delay", "must be at most 1h"));
    }
    if webhooks.timeout.is_zero() || webhooks.timeout > Duration::from_secs(60) {
        return Err(invalid("webhooks.timeout", "must be between 1ms and 60s"));
    }
    if !(1..=10_000_000).contains(&webhooks.max_backlog) {
        return Err(invalid("webhooks.max_backlog", "must be between 1 and 10000000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_need_redis_a_secret_and_known_events() {
        let on = WebhooksConfig {
            url: Some("https://app.example/events".into()),
            secret: Some("s".into()),
            ..WebhooksConfig::default()
        };
        assert!(validate(&on, true).is_ok());
        assert!(validate(&WebhooksConfig::default(), false).is_ok(), "off needs nothing");
        let key = |config: &WebhooksConfig, redis| validate(config, redis).unwrap_err().to_string();
        assert!(key(&on, false).contains("webhooks"), "no Redis");
        assert!(key(&WebhooksConfig { secret: None, ..on.clone() }, true).contains("webhooks.secret"));
        let typo = WebhooksConfig { events: vec!["joined".into()], ..on.clone() };
        assert!(key(&typo, true).contains("webhooks.events"));
        let ftp = WebhooksConfig { url: Some("ftp://x/".into()), ..on };
        assert!(key(&ftp, true).contains("webhooks.url"));
    }
}
