//! A client's bounded outbound queue and its close signal.
//!
//! The hub pushes group messages with [`Outbox::push`], which never waits: when the queue is
//! full the client is too slow, and it is closed with 4008 instead of slowing the broker reader
//! or the other members of the group; the queue is bounded both in frames and in bytes. The
//! session's own replies use [`Outbox::send`], which waits for room, so a client that floods
//! requests without reading is held back by TCP.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

pub(crate) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes queued and not yet taken by the writer, bounded by `max_bytes`.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// The close code asked for, 0 while none; the first request wins.
    close_code: AtomicU16,
    /// Cancelled when a close is asked for; wakes both the session's reader and its writer.
    closing: CancellationToken,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` bytes, and the receiving end for
    /// the session's writer (which must call [`Outbox::taken`] for each frame it takes).
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let outbox = Self {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            close_code: AtomicU16::new(0),
            closing: CancellationToken::new(),
        };
        (outbox, rx)
    }

    /// Queues a fan-out frame without waiting; a full queue (in frames or bytes) closes the
    /// client with 4008. Returns whether the frame was queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(close::SLOW_CONSUMER);
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.close(close::SLOW_CONSUMER);
                }
                false
            }
        }
    }

    /// Queues a frame for this client alone, waiting for room in frames (its bytes count
    /// against the bound of fan-out frames). False once the writer is gone.
    pub(crate) async fn send(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let sent = self.tx.send(frame).await.is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        }
        sent
    }

    /// The writer took a frame of `len` bytes off the queue.
    pub(crate) fn taken(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Asks the writer to close the connection with `code`. Later requests are ignored.
    pub(crate) fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.closing.cancel();
        }
    }

    /// The close code, if a close was asked for.
    pub(crate) fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Waits until a close is asked for and returns its code.
    pub(crate) async fn closing(&self) -> u16 {
        self.closing.cancelled().await;
        self.close_code.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_closes_with_slow_consumer() {
        let (outbox, mut rx) = Outbox::new(2, 1024);
        assert!(outbox.push(Utf8Bytes::from_static("a")));
        assert!(outbox.push(Utf8Bytes::from_static("b")));
        assert!(!outbox.push(Utf8Bytes::from_static("c")));
        assert_eq!(outbox.closing().await, close::SLOW_CONSUMER);
        outbox.close(close::NORMAL);
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER), "first close wins");
        assert_eq!(rx.recv().await.unwrap().as_str(), "a");
    }

    #[test]
    fn too_many_queued_bytes_close_with_slow_consumer() {
        let (outbox, _rx) = Outbox::new(100, 10);
        assert!(outbox.push(Utf8Bytes::from_static("123456")));
        assert!(!outbox.push(Utf8Bytes::from_static("123456")));
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER));
    }
}
