//! Client authentication: JWT verification and what a token permits.
//!
//! Tokens are verified with a well-kept crate (`jsonwebtoken`): HS256 with the shared
//! `auth_hmac_secret`, RS256 or ES256 with the PEM key in `auth_public_key_file` (both may be
//! configured; the token's header picks). Claims: `sub` (the user, shown in presence), `exp`
//! (required), `nbf` (checked when present), `groups` and `publish` (glob patterns such as `chat.*` limiting what the client
//! may subscribe and publish to), and `info` (JSON shown to others in presence).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use wildmatch::WildMatch;

use crate::config::{Config, ConfigError};
use crate::group::GroupName;

/// Seconds of clock difference tolerated between the token issuer and the gateway.
const LEEWAY_SECS: u64 = 5;

/// Why a token was refused; the client is closed with 4001 and this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token required")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("refresh token is for another user")]
    OtherUser,
}

/// What a verified token says about its client.
#[derive(Debug)]
pub struct Identity {
    /// The `sub` claim.
    pub user: Option<String>,
    /// The `info` claim, shown to others in presence.
    pub info: Option<serde_json::Value>,
    /// When the token stops being valid; `None` for an identity the backend vouched for.
    pub expires_at: Option<SystemTime>,
    subscribe: Option<Vec<WildMatch>>,
    publish: Option<Vec<WildMatch>>,
}

impl Identity {
    /// An identity the backend's connect hook gave: `groups` and `publish` are patterns like a
    /// token's claims; it does not expire.
    pub(crate) fn granted(
        user: Option<String>,
        info: Option<serde_json::Value>,
        groups: Option<Vec<String>>,
        publish: Option<Vec<String>>,
    ) -> Self {
        Self { user, info, expires_at: None, subscribe: patterns(groups), publish: patterns(publish) }
    }

    /// `Some(allowed)` when the token limits subscriptions, `None` when it does not.
    pub(crate) fn may_subscribe(&self, group: &GroupName) -> Option<bool> {
        self.subscribe.as_ref().map(|patterns| matches(patterns, group))
    }

    /// `Some(allowed)` when the token grants or limits publishing, `None` when it says nothing.
    pub(crate) fn may_publish(&self, group: &GroupName) -> Option<bool> {
        self.publish.as_ref().map(|patterns| matches(patterns, group))
    }
}

fn patterns(list: Option<Vec<String>>) -> Option<Vec<WildMatch>> {
    list.map(|l| l.iter().map(|p| WildMatch::new(p)).collect())
}

fn matches(patterns: &[WildMatch], group: &GroupName) -> bool {
    patterns.iter().any(|p| p.matches(group.as_str()))
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    groups: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    info: Option<serde_json::Value>,
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
}

impl Verifier {
    /// The verifier of `config`, or `None` when no key is configured. Reads and parses the
    /// public key file, if any: an error names `auth_public_key_file`.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.auth_hmac_secret {
            keys.push((DecodingKey::from_secret(secret.as_bytes()), validation(Algorithm::HS256)));
        }
        if let Some(path) = &config.auth_public_key_file {
            keys.push(read_public_key(path).map_err(|e| ConfigError::new("auth_public_key_file", e))?);
        }
        Ok((!keys.is_empty()).then_some(Self { keys }))
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let (key, validation) = self
            .keys
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or_else(|| AuthError::Malformed(format!("algorithm {:?} is not accepted", header.alg)))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed(e.to_string()),
            })?
            .claims;
        Ok(Identity {
            user: claims.sub,
            info: claims.info,
            expires_at: Some(expiry(claims.exp)),
            subscribe: patterns(claims.groups),
            publish: patterns(claims.publish),
        })
    }
}

/// When a token with `exp` stops being valid, leeway included. An `exp` too far ahead for the
/// clock (up to `u64::MAX`) means a century from now.
fn expiry(exp: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(exp.saturating_add(LEEWAY_SECS)))
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Reads a PEM public key: RSA (RS256) or EC P-256 (ES256).
fn read_public_key(path: &Path) -> Result<(DecodingKey, Validation), String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, validation(Algorithm::RS256)));
    }
    match DecodingKey::from_ec_pem(&pem) {
        Ok(key) => Ok((key, validation(Algorithm::ES256))),
        Err(e) => Err(format!("{}: not an RSA or EC public key in PEM: {e}", path.display())),
    }
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    fn verifier() -> Verifier {
        let config = Config { auth_hmac_secret: Some(SECRET.into()), ..Config::default() };
        Verifier::from_config(&config).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn claims_become_an_identity_with_patterns() {
        let t = token(
            json!({"sub": "ann", "exp": now() + 60, "groups": ["chat.*"], "publish": ["chat.lobby"]}),
            SECRET,
        );
        let id = verifier().verify(&t).unwrap();
        let g = |s: &str| GroupName::new(s).unwrap();
        assert_eq!(id.user.as_deref(), Some("ann"));
        assert_eq!(id.may_subscribe(&g("chat.x")), Some(true));
        assert_eq!(id.may_subscribe(&g("news.x")), Some(false));
        assert_eq!(id.may_publish(&g("chat.lobby")), Some(true));
        assert_eq!(id.may_publish(&g("chat.other")), Some(false));
        let open = verifier().verify(&token(json!({"exp": now() + 60}), SECRET)).unwrap();
        assert_eq!((open.may_subscribe(&g("x")), open.may_publish(&g("x"))), (None, None));
    }

    #[test]
    fn bad_tokens_are_told_apart() {
        let v = verifier();
        assert_eq!(v.verify(&token(json!({"exp": now() - 60}), SECRET)).unwrap_err(), AuthError::Expired);
        let forged = token(json!({"exp": now() + 60}), "another-secret-of-32-bytes-length");
        assert_eq!(v.verify(&forged).unwrap_err(), AuthError::BadSignature);
        assert!(
            matches!(v.verify(&token(json!({"sub": "x"}), SECRET)), Err(AuthError::Malformed(_))),
            "exp is required"
        );
        assert!(matches!(v.verify("not.a.token"), Err(AuthError::Malformed(_))));
        assert!(matches!(v.verify(""), Err(AuthError::Malformed(_))));
    }
}
