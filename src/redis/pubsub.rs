//! Sharded pub/sub connections of our own, in RESP2, one per master.
//!
//! redis-rs has no `SSUBSCRIBE` on a single connection, and its cluster connection resubscribes
//! by itself after a failover or a slot migration, which hides exactly the gaps Herald must see
//! to recover history across them. So the subscriber owns plain connections: it writes
//! `SSUBSCRIBE`/`SUNSUBSCRIBE`/`PING` and reads every reply and message as an [`Event`], in the
//! order the server sent them, on a channel it reads all its connections from. A `sunsubscribe`
//! it did not ask for is the server saying the channel's slot moved away.
//!
//! Payloads are slices of the read buffer: no copy between the socket and the clients.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{Cmd, ConnectionAddr, ConnectionInfo};
use redis_protocol::codec::Resp2;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tokio_util::task::AbortOnDropHandle;

use super::{COMMAND_TIMEOUT, Unavailable};

/// How long connecting (and authenticating) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a pub/sub connection read, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A message published on a shard channel.
    Message { channel: Bytes, payload: Bytes },
    /// The server confirmed a subscription.
    Subscribed(Bytes),
    /// A subscription ended: as asked, or because the channel's slot moved to another master.
    Unsubscribed(Bytes),
    /// The answer to a `PING`.
    Pong,
    /// An error reply to one of our commands (`MOVED …`, `CLUSTERDOWN …`).
    Error(String),
    /// The connection is gone; nothing more comes from it.
    Closed(String),
}

/// The writing half of a connection; its reader sends [`Event`]s tagged with the connection's
/// tag until it closes, or until this is dropped.
pub(crate) struct Link {
    writer: OwnedWriteHalf,
    _reader: AbortOnDropHandle<()>,
}

/// Connects and authenticates to `node`; what it reads goes to `events` as `(tag, event)`.
pub(crate) async fn connect(
    node: &ConnectionInfo,
    tag: u64,
    events: mpsc::Sender<(u64, Event)>,
) -> Result<Link, Unavailable> {
    let ConnectionAddr::Tcp(host, port) = node.addr() else {
        return Err(Unavailable("only TCP connections are supported".into()));
    };
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
        .await
        .map_err(|_| Unavailable(format!("connecting to {host}:{port} timed out")))?
        .map_err(Unavailable::from_error)?;
    stream.set_nodelay(true).map_err(Unavailable::from_error)?;
    let settings = node.redis_settings();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(username) = settings.username() {
            auth.arg(username);
        }
        auth.arg(password);
        timeout(CONNECT_TIMEOUT, authenticate(&mut stream, &auth))
            .await
            .map_err(|_| Unavailable("authentication timed out".into()))??;
    }
    let (reader, writer) = stream.into_split();
    let reader = FramedRead::new(reader, Resp2::default());
    let reader = AbortOnDropHandle::new(tokio::spawn(read(reader, tag, events)));
    Ok(Link { writer, _reader: reader })
}

async fn authenticate(stream: &mut TcpStream, auth: &Cmd) -> Result<(), Unavailable> {
    stream.write_all(&auth.get_packed_command()).await.map_err(Unavailable::from_error)?;
    let mut reply = FramedRead::new(&mut *stream, Resp2::default());
    match reply.next().await {
        Some(Ok(BytesFrame::SimpleString(ok))) if ok.as_ref() == b"OK" => Ok(()),
        Some(Ok(BytesFrame::Error(e))) => Err(Unavailable(format!("authentication failed: {e}"))),
        Some(Ok(other)) => Err(Unavailable(format!("unexpected reply to AUTH: {other:?}"))),
        Some(Err(e)) => Err(Unavailable::from_error(e)),
        None => Err(Unavailable("connection closed during authentication".into())),
    }
}

impl Link {
    /// Writes `commands` in one go, within [`COMMAND_TIMEOUT`]; their replies come as events.
    pub(crate) async fn send(&mut self, commands: &[Cmd]) -> Result<(), Unavailable> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for command in commands {
            command.write_packed_command(&mut bytes);
        }
        timeout(COMMAND_TIMEOUT, self.writer.write_all(&bytes))
            .await
            .map_err(|_| Unavailable("writing to redis timed out".into()))?
            .map_err(Unavailable::from_error)
    }
}

async fn read(
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, Resp2>,
    tag: u64,
    events: mpsc::Sender<(u64, Event)>,
) {
    loop {
        let event = match reader.next().await {
            Some(Ok(frame)) => match event(frame) {
                Some(event) => event,
                None => continue,
            },
            Some(Err(e)) => Event::Closed(e.to_string()),
            None => Event::Closed("closed by the server".into()),
        };
        let closed = matches!(event, Event::Closed(_));
        if events.send((tag, event)).await.is_err() || closed {
            return;
        }
    }
}

/// What a frame read on a pub/sub connection means; `None` for what the subscriber never asks
/// for (plain pub/sub).
fn event(frame: BytesFrame) -> Option<Event> {
    match frame {
        BytesFrame::Array(parts) => {
            let mut parts = parts.into_iter().map(|part| match part {
                BytesFrame::BulkString(bytes) => Some(bytes),
                _ => None,
            });
            let mut next = || parts.next().flatten();
            match next()?.as_ref() {
                b"smessage" => Some(Event::Message { channel: next()?, payload: next()? }),
                b"ssubscribe" => Some(Event::Subscribed(next()?)),
                b"sunsubscribe" => Some(Event::Unsubscribed(next()?)),
                b"pong" => Some(Event::Pong),
                _ => None,
            }
        }
        BytesFrame::SimpleString(s) if s.as_ref() == b"PONG" => Some(Event::Pong),
        BytesFrame::Error(e) => Some(Event::Error(e.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(parts: &[&str]) -> BytesFrame {
        BytesFrame::Array(
            parts.iter().map(|p| BytesFrame::BulkString(Bytes::copy_from_slice(p.as_bytes()))).collect(),
        )
    }

    #[test]
    fn frames_become_events() {
        let message = event(bulk(&["smessage", "h:group:{a}", "hi"])).unwrap();
        assert_eq!(message, Event::Message { channel: "h:group:{a}".into(), payload: "hi".into() });
        assert_eq!(event(bulk(&["ssubscribe", "c"])), Some(Event::Subscribed("c".into())));
        assert_eq!(event(bulk(&["sunsubscribe", "c"])), Some(Event::Unsubscribed("c".into())));
        assert_eq!(event(bulk(&["pong", ""])), Some(Event::Pong));
        let moved = event(BytesFrame::Error("MOVED 3999 127.0.0.1:6381".into())).unwrap();
        assert_eq!(moved, Event::Error("MOVED 3999 127.0.0.1:6381".into()));
        assert_eq!(event(bulk(&["message", "c", "plain pub/sub"])), None);
        assert_eq!(event(bulk(&["smessage", "c"])), None, "truncated");
        assert_eq!(event(BytesFrame::Integer(1)), None);
    }
}
