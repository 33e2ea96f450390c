//! One WebSocket client, from upgrade to close.
//!
//! A session is two tasks: the [`writer`] owns the socket's sending half, drains the client's
//! [`Outbox`] and pings the client; the reader (this task) authenticates the client, then reads
//! frames and hands each to [`dispatch`]. Either side can end the session by asking the outbox
//! to close with a code; the writer then sends that close frame, the reader waits briefly for
//! the client's answer, and the session leaves every group it joined.

mod auth;
mod dispatch;
mod membership;
mod permissions;
pub(super) mod sse;
mod writer;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tracing::Instrument;

use super::Gateway;
use super::admission::Admitted;
use super::live;
use crate::auth::Identity;
use crate::group::GroupName;
use crate::hooks::webhooks::Change;
use crate::hub::MemberId;
use crate::metrics;
use crate::outbox::{Attention, Outbox};
use crate::protocol::{ClientInfo, Since, close};

/// Read buffer per connection; tungstenite grows it for larger frames.
const READ_BUFFER: usize = 256;
/// Bytes the writer gathers before writing to the socket (it also flushes when idle).
const WRITE_BUFFER: usize = 8 * 1024;
/// How long to wait for the client's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the route a client connected to does for it: groups it joins on connect, and the
/// groups it may publish to (a narrowing of what its identity allows; `None`: no narrowing).
#[derive(Debug, Default)]
pub(super) struct Grants {
    /// Groups the client is subscribed to on connect.
    pub(super) subscribe: Vec<GroupName>,
    /// Where the client left off in those groups (`?since=` on the URL), to recover from.
    pub(super) since: HashMap<GroupName, Since>,
    /// The only groups the client may publish to, if the route limits it.
    pub(super) publish: Option<HashSet<GroupName>>,
    /// The route's path parameters (what the connect hook is told).
    pub(super) params: HashMap<String, String>,
}

/// `GET /ws`: the generic endpoint, no grants beyond namespace policy.
pub(super) async fn generic(
    State(gateway): State<Arc<Gateway>>,
    admitted: Admitted,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(gateway, ws, admitted, Grants::default())
}

/// Accepts the WebSocket with Herald's buffer and size limits and starts the session.
pub(super) fn upgrade(
    gateway: Arc<Gateway>,
    ws: WebSocketUpgrade,
    admitted: Admitted,
    grants: Grants,
) -> Response {
    let max = gateway.config.max_frame_bytes;
    if auth::welcome_at_once(gateway.config.auth_mode())
        && let Some(cork) = &admitted.cork
    {
        cork.ask();
    }
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let sessions = gateway.sessions.clone();
            sessions.track_future(run(gateway, socket, admitted, grants))
        })
}

/// The per-connection state the dispatcher works on.
pub(super) struct Session {
    gateway: Arc<Gateway>,
    id: MemberId,
    outbox: Arc<Outbox>,
    /// How other clients see this one (presence, join/leave).
    info: ClientInfo,
    /// The verified token, if the client authenticated.
    identity: Option<Identity>,
    /// Groups this session joined (with the member's gate where the group has history), so it
    /// can recover in them and leave them all when it ends.
    groups: membership::Joined,
    grants: Grants,
    limiter: DefaultDirectRateLimiter,
    /// Requests refused by the rate limit in a row.
    strikes: u32,
    /// When the client last sent anything (a pong counts): the heartbeat's reference.
    last_seen: Instant,
    /// When the writer is to ping the client next (every `ping_interval`).
    next_ping: Instant,
}

/// Sets the session up and returns its task: a plain function, so the task holds only what the
/// async block below captures (an `async fn` kept the setup's locals too: 1.3 KiB more per
/// connection).
fn run(
    gateway: Arc<Gateway>,
    socket: WebSocket,
    admitted: Admitted,
    mut grants: Grants,
) -> impl Future<Output = ()> {
    let Admitted { peer, token, path, headers, since, slot, cork } = admitted;
    grants.since = since;
    let handshake = auth::Handshake { peer, path, headers, token, transport: "websocket" };
    let mut session = Session::open(gateway, grants);
    let span = tracing::info_span!("session", client = %session.info.client, %peer);
    let (sink, mut stream) = socket.split();
    let writer = writer::run(sink, session.outbox.clone(), session.gateway.config.write_timeout, cork);
    let writer = tokio::spawn(writer.instrument(span.clone()));
    // What is larger than the read loop runs boxed: a session's task is as large as its largest
    // state, and every idle connection would pay for it (the hooks', egress' and recovery's
    // futures once tripled the memory per connection). The end is smaller, and not boxed: a box
    // is an allocation per session.
    async move {
        // Counted against the connection limits until the session ends.
        let _slot = slot;
        tracing::debug!("connected");
        match Box::pin(session.authenticate(&mut stream, handshake)).await {
            Ok(assigned) => {
                // Boxed only when there is a group to join: each box is an allocation.
                if !assigned.is_empty() {
                    Box::pin(session.join_assigned(assigned)).await;
                }
                if !session.grants.subscribe.is_empty() {
                    Box::pin(session.join_granted()).await;
                }
                session.read(&mut stream).await;
            }
            Err(refused) => session.refuse(refused),
        }
        let code = session.end().await;
        let _ = writer.await;
        drain_until_closed(stream).await;
        tracing::debug!(close = code, "disconnected");
    }
    .instrument(span)
}

fn rate_limiter(per_second: u32, burst: u32, clock: &DefaultClock) -> DefaultDirectRateLimiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(per_second).allow_burst(burst), clock.clone())
}

impl Session {
    /// A new session of `gateway`, its outbox registered, with what its route grants.
    fn open(gateway: Arc<Gateway>, grants: Grants) -> Self {
        let config = &gateway.config;
        let outbox = Arc::new(Outbox::new(config.outbound_queue, config.outbound_queue_bytes));
        let id = gateway.open_session(&outbox);
        let client = live::client_id(gateway.node_id(), id);
        let info = ClientInfo { client, user: None, node: gateway.node_id().to_string(), info: None };
        Session {
            limiter: rate_limiter(config.rate_limit, config.rate_limit_burst, &gateway.clock),
            next_ping: Instant::now() + config.ping_interval,
            gateway,
            id,
            outbox,
            info,
            identity: None,
            groups: membership::Joined::default(),
            grants,
            strikes: 0,
            last_seen: Instant::now(),
        }
    }

    /// Closes the client that was not let in, telling it why.
    fn refuse(&self, refused: auth::Refused) {
        tracing::debug!(code = refused.code, reason = %refused.reason, "not admitted");
        self.outbox.close_with(refused.code, &refused.reason);
    }

    /// Leaves every group and unregisters the session; returns the close code, counted when
    /// the server closed it.
    async fn end(&mut self) -> Option<u16> {
        self.leave_all().await;
        self.gateway.close_session(self.id);
        if self.info.user.is_some() {
            self.gateway.track(|| Change::Disconnect { client: self.info.client.clone() });
        }
        let code = self.outbox.close_requested();
        if let Some(code) = code.filter(|c| ![close::NORMAL, close::GONE].contains(c)) {
            self.gateway.metrics.closes.get_or_create(&metrics::Code { code }).inc();
        }
        code
    }

    /// Reads and dispatches frames until the client leaves, a close is asked for, the token
    /// expires, or the client stops answering pings.
    async fn read(&mut self, stream: &mut SplitStream<WebSocket>) {
        let deadline = tokio::time::sleep_until(self.deadline());
        tokio::pin!(deadline);
        loop {
            let frame = tokio::select! {
                attention = self.outbox.attention() => match attention {
                    Attention::Close(_) => break,
                    Attention::Orders => {
                        Box::pin(self.obey()).await;
                        continue;
                    }
                },
                _ = &mut deadline => {
                    if let Some(code) = self.overdue() {
                        self.outbox.close(code);
                        break;
                    }
                    if self.next_ping <= Instant::now() {
                        self.outbox.ping();
                        self.next_ping += self.gateway.config.ping_interval;
                    }
                    deadline.as_mut().reset(self.deadline());
                    continue;
                }
                frame = stream.next() => frame,
            };
            self.last_seen = Instant::now();
            match frame {
                Some(Ok(Message::Text(text))) => Box::pin(self.dispatch(&text)).await,
                Some(Ok(Message::Binary(_))) => Box::pin(self.refuse_binary()).await,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    self.outbox.close(close::NORMAL);
                    break;
                }
                Some(Err(e)) => {
                    self.outbox.close(close_code_for(&e));
                    break;
                }
            }
        }
    }

    /// The next moment the session must be checked: a ping, the heartbeat, or token expiry.
    fn deadline(&self) -> Instant {
        let next = self.silent_until().min(self.next_ping);
        match self.token_expiry() {
            Some(expiry) => next.min(expiry),
            None => next,
        }
    }

    /// When a client that stays silent (no pong either) has missed its heartbeat.
    fn silent_until(&self) -> Instant {
        let config = &self.gateway.config;
        self.last_seen + config.ping_interval + config.pong_timeout
    }

    /// Why the session must end now, if it must.
    fn overdue(&self) -> Option<u16> {
        if self
            .identity
            .as_ref()
            .and_then(|i| i.expires_at)
            .is_some_and(|at| at <= std::time::SystemTime::now())
        {
            tracing::debug!("token expired");
            return Some(close::UNAUTHORIZED);
        }
        (self.silent_until() <= Instant::now()).then_some(close::NO_PONG)
    }

    /// Queues a frame for this client (waiting for room; a gone client is noticed by the reader).
    pub(super) async fn send(&self, frame: Utf8Bytes) {
        self.outbox.send(frame).await;
    }
}

/// 1009 for a frame over `max_frame_bytes`, 1006 for a broken connection (no close frame is
/// written to it); any other read error ends the session with 1000.
fn close_code_for(e: &axum::Error) -> u16 {
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>()) {
        Some(tungstenite::Error::Capacity(_)) => close::TOO_LARGE,
        Some(tungstenite::Error::Io(_)) => close::GONE,
        _ => close::NORMAL,
    }
}

/// After our close frame, reads until the client's close (or a short grace) so the TCP
/// connection ends cleanly instead of with a reset that could drop the close frame.
async fn drain_until_closed(mut stream: SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_gets_no_close_frame_and_an_oversized_frame_gets_1009() {
        let reset = axum::Error::new(tungstenite::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(close_code_for(&reset), close::GONE);
        let capacity = tungstenite::error::CapacityError::MessageTooLong { size: 2, max_size: 1 };
        let too_large = axum::Error::new(tungstenite::Error::Capacity(capacity));
        assert_eq!(close_code_for(&too_large), close::TOO_LARGE);
        let protocol = axum::Error::new(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::NonZeroReservedBits,
        ));
        assert_eq!(close_code_for(&protocol), close::NORMAL);
    }
}
