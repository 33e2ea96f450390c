//! The sending half of a session: drains the outbox into the socket.
//!
//! Each burst takes every frame queued; they are written together and flushed once. A small burst
//! of fan-out frames lingers one scheduling round first, to go out with what follows it; the
//! session's own (the welcome, a reply) go at once. Taking the whole queue empties it at once: a
//! client whose writer waits on a full socket has a whole `outbound_queue` of room for what comes
//! meanwhile before it is closed as a slow consumer, as the ceiling has (BENCHMARKS.md); a large
//! burst does not hold a worker, since the socket's writes yield whenever tokio's budget for one
//! poll runs out. A close request wins over a write in progress: a slow consumer is closed with
//! 4008 at once (its queue dropped), even in the middle of a write the client is not reading. A
//! write that makes no progress for `write_timeout` (the client stopped reading and its socket
//! buffers are full) ends the session as a slow consumer too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;

use crate::gateway::cork::Cork;
use crate::outbox::Outbox;
use crate::protocol::close;

/// A writer woken for fewer frames than this, some of them fan-out's, lets the other ready
/// tasks run once before it takes them, so what arrives meanwhile goes out in the same burst.
/// When a fan-out wakes many writers one message at a time (single-message POSTs, each its own
/// Redis message), a writer that wrote at once would go out with one or two frames and be woken
/// again for the next; lingering a scheduling round lets the delivering task queue the next
/// messages first. An idle runtime gets back to the writer at once, so the wait is as long as
/// the load makes it. It took the frames per write from 12.7 to 16.6 under HTTP-published
/// fan-out (BENCHMARKS.md).
const LINGER_BELOW: usize = 32;
/// The burst buffers a writer keeps for the next burst, by capacity in frames: a busy client
/// reuses one instead of growing a new queue every burst, while a client that gets a frame now
/// and then (or once had a backlog) holds none between bursts. Keeping even the small buffers
/// of the welcome and the first reply cost every idle connection 0.3 KiB.
const SPARE_FRAMES: std::ops::RangeInclusive<usize> = 16..=64;
/// How long sending the close frame may take before the connection is simply dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(5);

type Sink = SplitSink<WebSocket, Message>;

/// Drains the outbox into `sink`, pinging the client when the session asks, until a close is
/// asked for (then sends it), the socket fails, or a write stalls for `write_timeout`. The
/// connection's `cork`, released here, lets the `101` go with the first write (the welcome).
pub(super) async fn run(
    mut sink: Sink,
    outbox: Arc<Outbox>,
    write_timeout: Duration,
    cork: Option<Arc<Cork>>,
) {
    if let Some(cork) = cork {
        cork.release();
    }
    // Registered once: every frame wakes this loop, and re-arming the wait each time cost
    // a measurable share of fan-out.
    let closing = outbox.closing();
    tokio::pin!(closing);
    // The burst being written; kept between bursts (see `SPARE_FRAMES`) to trade places with the
    // outbox's queue.
    let mut batch = VecDeque::new();
    loop {
        let ping = tokio::select! {
            biased;
            code = &mut closing => return send_close(&mut sink, &outbox, code).await,
            ping = outbox.next_batch(usize::MAX, LINGER_BELOW, &mut batch) => ping,
        };
        let written = write_batch(&mut sink, ping, &mut batch);
        // Most writes finish at once (the socket has room), and arming the write timeout's timer
        // for each cost a twentieth of the fan-out: it is armed only for a write that waits.
        let outcome = {
            let mut written = std::pin::pin!(written);
            match std::future::poll_fn(|cx| Poll::Ready(written.as_mut().poll(cx))).await {
                Poll::Ready(result) => Outcome::Written(result),
                Poll::Pending => tokio::select! {
                    biased;
                    code = &mut closing => Outcome::Closing(code),
                    result = tokio::time::timeout(write_timeout, written) => {
                        result.map_or(Outcome::Stalled, Outcome::Written)
                    }
                },
            }
        };
        let result = match outcome {
            Outcome::Written(result) => result,
            Outcome::Closing(code) => return send_close(&mut sink, &outbox, code).await,
            Outcome::Stalled => {
                tracing::debug!(?write_timeout, "write made no progress; closing");
                outbox.close(close::SLOW_CONSUMER);
                return send_close(&mut sink, &outbox, close::SLOW_CONSUMER).await;
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            // The socket is gone; tell the reader so the session ends.
            outbox.close(close::NORMAL);
            return;
        }
        if !SPARE_FRAMES.contains(&batch.capacity()) {
            batch = VecDeque::new();
        }
    }
}

/// How a write ended: done (or failed), overtaken by a close request, or stalled.
enum Outcome {
    Written(Result<(), axum::Error>),
    Closing(u16),
    Stalled,
}

/// Writes the ping if one is due, then every frame of `batch` (leaving it empty), with one
/// flush.
async fn write_batch(
    sink: &mut Sink,
    ping: bool,
    batch: &mut VecDeque<Utf8Bytes>,
) -> Result<(), axum::Error> {
    if ping {
        sink.feed(Message::Ping(Bytes::new())).await?;
    }
    while let Some(frame) = batch.pop_front() {
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await
}

/// Sends the close frame, with the reason the close was asked with or one for its code; for any
/// close but a slow consumer's, the frames already queued (an error that explains the close, say)
/// go first. All within [`CLOSE_SEND_TIMEOUT`]; nothing to a connection that broke.
async fn send_close(sink: &mut Sink, outbox: &Outbox, code: u16) {
    if code == close::GONE {
        return;
    }
    let reason = outbox.close_reason().map_or_else(|| default_reason(code), truncated);
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) };
    let send = async {
        if code != close::SLOW_CONSUMER {
            for queued in outbox.take(usize::MAX) {
                sink.feed(Message::Text(queued)).await?;
            }
        }
        sink.send(Message::Close(Some(frame))).await
    };
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, send).await;
}

/// A close reason fits in 123 bytes (a control frame's payload, less the code).
fn truncated(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn default_reason(code: u16) -> &'static str {
    match code {
        close::TOO_LARGE => "frame too large",
        close::UNAUTHORIZED => "unauthorized",
        close::FORBIDDEN => "forbidden",
        close::TRY_AGAIN => "try again later",
        close::RATE_LIMITED => "rate limited",
        close::NO_PONG => "no pong",
        close::RESTARTING => "server restarting",
        close::SLOW_CONSUMER => "slow consumer",
        _ => "",
    }
}
