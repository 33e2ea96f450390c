//! A client's bounded outbound queue and its close signal.
//!
//! The queue is bounded both in frames (`outbound_queue`) and in bytes (`outbound_queue_bytes`),
//! and both bounds cover every frame: group messages and the session's own replies alike.
//!
//! - The hub pushes group messages with [`Outbox::push`], which never waits: when the queue is
//!   full the client is too slow, and it is closed with 4008 instead of slowing the broker reader
//!   or the other members of the group.
//! - The session sends replies and recovered history with [`Outbox::send`], which waits for room
//!   in frames and bytes, so a client that floods requests without reading is held back; the wait
//!   ends as soon as a close is asked for (the writer asks for one when the socket makes no
//!   progress for `write_timeout`), so the session is never wedged.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

pub(crate) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes queued and not yet taken by the writer, bounded by `max_bytes`.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Senders waiting for bytes to be taken; the writer wakes them only when there are any,
    /// so fan-out pays nothing for the wake-up.
    waiting: AtomicUsize,
    room: Notify,
    /// The close code asked for, 0 while none; the first request wins.
    close_code: AtomicU16,
    /// The reason of the first close request, when it gave one.
    close_reason: OnceLock<String>,
    /// Cancelled when a close is asked for; wakes the session's reader, its writer and senders.
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
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            close_code: AtomicU16::new(0),
            close_reason: OnceLock::new(),
            closing: CancellationToken::new(),
        };
        (outbox, rx)
    }

    /// Queues a fan-out frame without waiting; a full queue (in frames or bytes) closes the
    /// client with 4008. Returns whether the frame was queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        if !self.reserve(len, false) {
            self.close(close::SLOW_CONSUMER);
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.release(len);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.close(close::SLOW_CONSUMER);
                }
                false
            }
        }
    }

    /// Queues a frame for this client alone, waiting for room in frames and bytes (a frame
    /// larger than the byte bound goes alone into an empty queue). False once a close was asked
    /// for or the writer is gone.
    pub(crate) async fn send(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        if !self.wait_for_bytes(len).await {
            return false;
        }
        let sent = tokio::select! {
            biased;
            _ = self.closing.cancelled() => false,
            sent = self.tx.send(frame) => sent.is_ok(),
        };
        if !sent {
            self.release(len);
        }
        sent
    }

    async fn wait_for_bytes(&self, len: usize) -> bool {
        loop {
            if self.closing.is_cancelled() {
                return false;
            }
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let reserved = self.reserve(len, true);
            if !reserved {
                tokio::select! {
                    _ = &mut room => {}
                    _ = self.closing.cancelled() => {}
                }
            }
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if reserved {
                return true;
            }
        }
    }

    /// Counts `len` bytes as queued if they fit (or, when `alone_if_empty`, if nothing is queued).
    fn reserve(&self, len: usize, alone_if_empty: bool) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let fits = queued + len <= self.max_bytes || (alone_if_empty && queued == 0);
                fits.then_some(queued + len)
            })
            .is_ok()
    }

    fn release(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }

    /// The writer took a frame of `len` bytes off the queue.
    pub(crate) fn taken(&self, len: usize) {
        self.release(len);
    }

    /// Asks the writer to close the connection with `code`. Later requests are ignored.
    pub(crate) fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.closing.cancel();
        }
    }

    /// [`Outbox::close`] with a reason for the client (the backend's, say).
    pub(crate) fn close_with(&self, code: u16, reason: &str) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let _ = self.close_reason.set(reason.to_string());
            self.closing.cancel();
        }
    }

    /// The reason given with the close request, if any.
    pub(crate) fn close_reason(&self) -> Option<&str> {
        self.close_reason.get().map(String::as_str)
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
    use std::sync::Arc;
    use std::time::Duration;

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

    #[tokio::test(start_paused = true)]
    async fn replies_wait_for_bytes_to_be_taken_and_stop_waiting_on_close() {
        let (outbox, mut rx) = Outbox::new(100, 10);
        let outbox = Arc::new(outbox);
        assert!(outbox.send(Utf8Bytes::from_static("1234567")).await);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(Utf8Bytes::from_static("abcdef")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "7 + 6 bytes do not fit in 10");
        let frame = rx.recv().await.unwrap();
        outbox.taken(frame.len());
        assert!(waiting.await.unwrap(), "sent once the first was taken");

        let blocked = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(Utf8Bytes::from_static("abcdef")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        outbox.close(close::SLOW_CONSUMER);
        assert!(!blocked.await.unwrap(), "a close ends the wait");
        assert!(!outbox.send(Utf8Bytes::from_static("x")).await);
    }

    #[tokio::test]
    async fn a_reply_larger_than_the_bound_goes_alone() {
        let (outbox, mut rx) = Outbox::new(100, 4);
        assert!(outbox.send(Utf8Bytes::from_static("large reply")).await);
        assert_eq!(rx.recv().await.unwrap().as_str(), "large reply");
    }
}
