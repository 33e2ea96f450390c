//! A client's bounded outbound queue and its close signal.
//!
//! The hub pushes group messages with [`Outbox::push`], which never waits: when the queue is
//! full the client is too slow, and it is closed with 4008 instead of slowing the broker reader
//! or the other members of the group. The session's own replies use [`Outbox::send`], which
//! waits for room, so a client that floods requests without reading is held back by TCP.

use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

pub struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    /// The close code asked for, 0 while none; the first request wins.
    close_code: AtomicU16,
    /// Cancelled when a close is asked for; wakes both the session's reader and its writer.
    closing: CancellationToken,
}

impl Outbox {
    /// A queue of `capacity` frames and the receiving end for the session's writer.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let outbox = Self { tx, close_code: AtomicU16::new(0), closing: CancellationToken::new() };
        (outbox, rx)
    }

    /// Queues a fan-out frame without waiting; a full queue closes the client with 4008.
    /// Returns whether the frame was queued.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(close::SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame for this client alone, waiting for room. False once the writer is gone.
    pub async fn send(&self, frame: Utf8Bytes) -> bool {
        self.tx.send(frame).await.is_ok()
    }

    /// Asks the writer to close the connection with `code`. Later requests are ignored.
    pub fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.closing.cancel();
        }
    }

    /// The close code, if a close was asked for.
    pub fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Waits until a close is asked for and returns its code.
    pub async fn closing(&self) -> u16 {
        self.closing.cancelled().await;
        self.close_code.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_closes_with_slow_consumer() {
        let (outbox, mut rx) = Outbox::new(2);
        assert!(outbox.push(Utf8Bytes::from_static("a")));
        assert!(outbox.push(Utf8Bytes::from_static("b")));
        assert!(!outbox.push(Utf8Bytes::from_static("c")));
        assert_eq!(outbox.closing().await, close::SLOW_CONSUMER);
        outbox.close(close::NORMAL);
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER), "first close wins");
        assert_eq!(rx.recv().await.unwrap().as_str(), "a");
    }
}
