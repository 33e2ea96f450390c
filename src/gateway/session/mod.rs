//! One WebSocket client, from upgrade to close.
//!
//! A session is two tasks: the [`writer`] owns the socket's sending half and drains the
//! client's [`Outbox`]; the reader (this task) reads frames and hands each to [`dispatch`].
//! Either side can end the session by asking the outbox to close with a code; the writer then
//! sends that close frame, the reader waits briefly for the client's answer, and the session
//! leaves every group it joined.

mod dispatch;
mod membership;
mod writer;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tracing::Instrument;

use super::Gateway;
use super::routes::Grants;
use crate::group::GroupName;
use crate::hub::MemberId;
use crate::outbox::Outbox;
use crate::protocol::{self, ClientInfo, close};

/// Read buffer per connection; tungstenite grows it for larger frames.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes the writer gathers before writing to the socket (it also flushes when idle).
const WRITE_BUFFER: usize = 8 * 1024;
/// How long to wait for the client's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `GET /ws`: the generic endpoint, no grants beyond namespace policy.
pub(super) async fn generic(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(gateway, ws, peer, Grants::default())
}

/// Accepts the WebSocket with Herald's buffer and size limits and starts the session.
pub(super) fn upgrade(
    gateway: Arc<Gateway>,
    ws: WebSocketUpgrade,
    peer: SocketAddr,
    grants: Grants,
) -> Response {
    let max = gateway.config.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let sessions = gateway.sessions.clone();
            sessions.track_future(run(gateway, socket, peer, grants))
        })
}

/// The per-connection state the dispatcher works on.
pub(super) struct Session {
    gateway: Arc<Gateway>,
    id: MemberId,
    outbox: Arc<Outbox>,
    /// How other clients see this one (presence, join/leave).
    info: ClientInfo,
    /// Groups this session joined, so it can leave them all when it ends.
    groups: HashSet<GroupName>,
    grants: Grants,
}

async fn run(gateway: Arc<Gateway>, socket: WebSocket, peer: SocketAddr, grants: Grants) {
    let id = gateway.next_session_id();
    let client = format!("{}-{id}", gateway.node_id());
    let span = tracing::info_span!("session", %client, %peer);
    let (outbox, queue) = Outbox::new(gateway.config.outbound_queue);
    let outbox = Arc::new(outbox);
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(writer::run(sink, queue, outbox.clone()).instrument(span.clone()));
    let info = ClientInfo { client: client.clone(), user: None, node: gateway.node_id().to_string() };
    let mut session = Session { gateway, id, outbox, info, groups: HashSet::new(), grants };
    async move {
        tracing::debug!("connected");
        session.send(protocol::welcome(&client, session.gateway.node_id())).await;
        session.join_route_groups().await;
        let stream = session.read(stream).await;
        session.leave_all().await;
        let code = session.outbox.close_requested();
        let _ = writer.await;
        drain_until_closed(stream).await;
        tracing::debug!(close = code, "disconnected");
    }
    .instrument(span)
    .await;
}

impl Session {
    /// Reads and dispatches frames until the client leaves or a close is asked for.
    async fn read(&mut self, mut stream: SplitStream<WebSocket>) -> SplitStream<WebSocket> {
        let shutdown = self.gateway.shutdown.clone();
        loop {
            let frame = tokio::select! {
                _ = self.outbox.closing() => break,
                _ = shutdown.cancelled() => {
                    self.outbox.close(close::RESTARTING);
                    break;
                }
                frame = stream.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => self.dispatch(&text).await,
                Some(Ok(Message::Binary(_))) => self.refuse_binary().await,
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
        stream
    }
}

/// 1009 for a frame over `max_frame_bytes`; any other read error ends the session quietly.
fn close_code_for(e: &axum::Error) -> u16 {
    let too_large = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_large { close::TOO_LARGE } else { close::NORMAL }
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
