//! Who the client is, and what it may do.
//!
//! With `auth = "required"` a client authenticates before anything else: with `?token=` on the
//! URL, or with `{"type":"auth","token":..}` as its first frame within `auth_timeout`;
//! otherwise it is closed with 4001 before it can subscribe to anything. With `optional`, a
//! client without a token is anonymous and may send `auth` later; a bad token is refused either
//! way. An authenticated client is closed with 4001 when its token expires, unless it sent
//! `{"type":"refresh","token":..}` with a newer token for the same user.
//!
//! With `auth = "proxy"` the backend's connect hook decides instead, before the welcome, seeing
//! the handshake's forwarded headers (a session cookie): `401` closes with 4001, `403` with
//! 4003 (both with the backend's reason), and a backend that fails with 1013 (try again later).
//! Its answer gives the identity (user, info, patterns like a token's claims) and groups the
//! client is put in at once.
//!
//! What an authenticated client may do is decided in `permissions`.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::ws::{Message, WebSocket};
use axum::http::HeaderMap;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::time::Instant;

use super::Session;
use crate::auth::{AuthError, Identity};
use crate::config::AuthMode;
use crate::group::GroupName;
use crate::hooks::webhooks::Change;
use crate::hooks::{ConnectRequest, HookError};
use crate::protocol::{self, ErrorCode, Incoming, Request, RequestError, close};

/// What the handshake tells about a client: the token on its URL, and what the connect hook is
/// to see.
pub(super) struct Handshake {
    pub(super) peer: SocketAddr,
    pub(super) path: String,
    pub(super) headers: HeaderMap,
    pub(super) token: Option<String>,
    /// What the connect hook is told the client uses: `websocket` or `sse`.
    pub(super) transport: &'static str,
}

/// Why a client was not let in: the close code and the reason it is given.
pub(super) struct Refused {
    pub(super) code: u16,
    pub(super) reason: String,
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        Self { code: close::UNAUTHORIZED, reason: e.to_string() }
    }
}

/// Whether a session's welcome is written as soon as it starts: always, unless a connect hook
/// must be asked first (a token on the URL is checked at once, an `auth` frame is awaited after
/// the welcome, and a refusal is written as soon).
pub(super) fn welcome_at_once(mode: AuthMode) -> bool {
    mode != AuthMode::Proxy
}

impl Session {
    /// Settles who the client is before it may do anything, and welcomes it: the connect hook
    /// or a token in the URL before the welcome, an `auth` frame after it. Returns the groups
    /// the backend puts the client in.
    pub(super) async fn authenticate(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        handshake: Handshake,
    ) -> Result<Vec<GroupName>, Refused> {
        let mode = self.gateway.config.auth_mode();
        let assigned = self.admit(handshake).await?;
        self.send(protocol::welcome(&self.info.client, self.gateway.node_id())).await;
        if mode != AuthMode::Required || self.identity.is_some() {
            return Ok(assigned);
        }
        let first = tokio::time::timeout(self.gateway.config.auth_timeout, first_text(stream)).await;
        let Ok(Some(text)) = first else { return Err(AuthError::Missing.into()) };
        match protocol::decode(&text) {
            Ok(Incoming { id, request: Request::Auth { token } }) => {
                self.accept_token(&token)?;
                self.send(protocol::reply(id, None)).await;
                Ok(assigned)
            }
            _ => Err(AuthError::Missing.into()),
        }
    }

    /// Who the client is, from its handshake alone: the connect hook's answer, or the token of
    /// the URL (or `Authorization`). Returns the groups the backend puts the client in.
    pub(super) async fn admit(&mut self, handshake: Handshake) -> Result<Vec<GroupName>, Refused> {
        match (self.gateway.config.auth_mode(), &handshake.token) {
            // Boxed: the hook's request would make every session's future kilobytes larger.
            (AuthMode::Proxy, _) => Box::pin(self.ask_backend(handshake)).await,
            (AuthMode::Off, _) | (_, None) => Ok(Vec::new()),
            (_, Some(token)) => {
                self.accept_token(token)?;
                Ok(Vec::new())
            }
        }
    }

    /// The connect hook: who the client is, and the groups it is put in at once.
    async fn ask_backend(&mut self, handshake: Handshake) -> Result<Vec<GroupName>, Refused> {
        let hooks = self.gateway.hooks.as_ref().expect("auth = \"proxy\" is validated to have a connect_url");
        let request = ConnectRequest {
            client: &self.info.client,
            node: self.gateway.node_id(),
            transport: handshake.transport,
            path: &handshake.path,
            params: &self.grants.params,
            remote_addr: handshake.peer.ip().to_string(),
        };
        let grant = hooks.connect(&request, handshake.headers).await.map_err(|e| match e {
            HookError::Unauthorized(reason) => Refused { code: close::UNAUTHORIZED, reason },
            HookError::Forbidden(reason) => Refused { code: close::FORBIDDEN, reason },
            HookError::Unavailable(_) => {
                Refused { code: close::TRY_AGAIN, reason: "backend unavailable".into() }
            }
        })?;
        let assigned = grant
            .subscribe
            .iter()
            .filter_map(|name| match GroupName::new(name) {
                Ok(group) => Some(group),
                Err(e) => {
                    tracing::warn!(group = name, error = %e, "the connect hook named an invalid group");
                    None
                }
            })
            .collect();
        let identity = Identity::granted(grant.user, grant.info, grant.groups, grant.publish);
        tracing::debug!(user = ?identity.user, "admitted by the backend");
        self.adopt(identity);
        Ok(assigned)
    }

    fn accept_token(&mut self, token: &str) -> Result<(), AuthError> {
        let verifier = self.gateway.verifier.as_ref().ok_or(AuthError::Missing)?;
        let identity = verifier.verify(token)?;
        if identity.expires_at.is_some_and(|at| at <= SystemTime::now()) {
            return Err(AuthError::Expired);
        }
        tracing::debug!(user = ?identity.user, "authenticated");
        self.adopt(identity);
        Ok(())
    }

    /// Takes `identity` as who the client is, here and for the control API.
    fn adopt(&mut self, identity: Identity) {
        self.gateway.live.identify(self.id, identity.user.as_deref());
        if let Some(user) = &identity.user {
            let client = self.info.client.clone();
            self.gateway.track(|| Change::Connect { client, user: user.clone() });
        }
        self.info.user = identity.user.clone();
        self.info.info = identity.info.clone();
        self.identity = Some(identity);
    }

    /// `auth` after connecting (optional mode): a bad token closes the connection. Groups the
    /// token does not allow are left (the client gets `unsubscribed`).
    pub(super) async fn late_auth(&mut self, token: &str) -> Result<(), RequestError> {
        if self.gateway.config.auth_mode() != AuthMode::Optional || self.identity.is_some() {
            let message = "auth is only accepted once, as the first frame, or later from an anonymous client when auth is optional";
            return Err(RequestError::new(None, ErrorCode::BadRequest, message));
        }
        self.accept_token(token).map_err(|e| {
            self.outbox.close(crate::protocol::close::UNAUTHORIZED);
            RequestError::new(None, ErrorCode::Forbidden, e.to_string())
        })?;
        self.leave_forbidden().await;
        Ok(())
    }

    /// `refresh`: a valid newer token for the same user extends the session. Its claims
    /// replace the old ones: groups they no longer allow are left (`unsubscribed`).
    pub(super) async fn refresh(&mut self, token: &str) -> Result<(), RequestError> {
        let refused = |e: AuthError| RequestError::new(None, ErrorCode::Forbidden, e.to_string());
        let Some(current) = self.identity.as_ref().filter(|i| i.expires_at.is_some()) else {
            return Err(RequestError::new(
                None,
                ErrorCode::BadRequest,
                "not authenticated with a token: nothing to refresh",
            ));
        };
        let verifier = self.gateway.verifier.as_ref().ok_or_else(|| refused(AuthError::Missing))?;
        let fresh = verifier.verify(token).map_err(refused)?;
        if fresh.user != current.user {
            return Err(refused(AuthError::OtherUser));
        }
        self.info.info = fresh.info.clone();
        self.identity = Some(fresh);
        self.leave_forbidden().await;
        Ok(())
    }

    /// When the token stops being valid, on the runtime's clock (at most a day ahead: the
    /// deadline is looked at again when it passes).
    pub(super) fn token_expiry(&self) -> Option<Instant> {
        let expires_at = self.identity.as_ref()?.expires_at?;
        let left = expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        Some(Instant::now() + left.min(EXPIRY_HORIZON))
    }
}

/// How far ahead a token's expiry is scheduled.
const EXPIRY_HORIZON: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The first text frame, skipping control frames; `None` if the client leaves first.
async fn first_text(stream: &mut SplitStream<WebSocket>) -> Option<String> {
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Message::Text(text) => return Some(text.to_string()),
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return None,
        }
    }
    None
}
