//! Checks of the keys that protect the gateway: authentication, origins and per-client limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};

/// Whether clients must present a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: every client is anonymous.
    Off,
    /// A token is verified when given; clients without one are anonymous.
    Optional,
    /// Every client must authenticate, or it is closed with 4001.
    Required,
    /// The backend's connect hook (`[proxy] connect_url`) authenticates every connection.
    Proxy,
}

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let mode = config.auth.unwrap_or(AuthMode::Off);
    let has_key = config.auth_hmac_secret.is_some() || config.auth_public_key_file.is_some();
    if matches!(mode, AuthMode::Optional | AuthMode::Required) && !has_key {
        return Err(invalid(
            "auth",
            format!(
                "{:?} needs auth_hmac_secret or auth_public_key_file (set auth = \"off\" to run without tokens)",
                mode
            )
            .to_lowercase(),
        ));
    }
    if config.demo_tokens && config.auth_hmac_secret.is_none() {
        return Err(invalid("demo_tokens", "needs auth_hmac_secret to sign with"));
    }
    if config.auth_hmac_secret.as_ref().is_some_and(|s| s.len() < 16) {
        return Err(invalid("auth_hmac_secret", "must be at least 16 bytes"));
    }
    if let Some(origin) =
        config.allowed_origins.iter().find(|o| o.is_empty() || o.contains(char::is_whitespace))
    {
        return Err(invalid("allowed_origins", format!("{origin:?} is not an origin pattern")));
    }
    let positive = [
        ("max_groups_per_client", config.max_groups_per_client),
        ("rate_limit", config.rate_limit as usize),
        ("rate_limit_burst", config.rate_limit_burst as usize),
        ("rate_limit_strikes", config.rate_limit_strikes as usize),
        ("max_connections", config.max_connections),
        ("max_connections_per_ip", config.max_connections_per_ip),
        ("outbound_queue_bytes", config.outbound_queue_bytes),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(invalid(key, "must be at least 1"));
    }
    if config.outbound_queue_bytes < config.max_frame_bytes {
        return Err(invalid("outbound_queue_bytes", "must be at least max_frame_bytes"));
    }
    let durations = [
        ("auth_timeout", config.auth_timeout),
        ("handshake_timeout", config.handshake_timeout),
        ("ping_interval", config.ping_interval),
        ("pong_timeout", config.pong_timeout),
        ("write_timeout", config.write_timeout),
    ];
    if let Some((key, _)) = durations.iter().find(|(_, d)| *d < Duration::from_millis(100)) {
        return Err(invalid(key, "must be at least 100ms"));
    }
    Ok(())
}
