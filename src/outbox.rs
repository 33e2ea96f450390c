//! A client's bounded outbound queue and its close signal.
//!
//! The queue is bounded both in frames (`outbound_queue`) and in bytes (`outbound_queue_bytes`),
//! and both bounds cover every frame: group messages and the session's own replies alike. Both
//! are counted in one atomic word, and the frames wait in a plain deque under a lock only their
//! pusher and the writer take: a fan-out push is one atomic update, one uncontended lock and a
//! wake-up (a bounded channel's semaphore cost a tenth of the fan-out), and an idle client's queue
//! holds no memory (a channel kept a block of 32 slots per client).
//!
//! - The hub pushes group messages with [`Outbox::push`], which never waits: when the queue is
//!   full the client is too slow, and it is closed with 4008 instead of slowing the broker reader
//!   or the other members of the group.
//! - The session sends replies and recovered history with [`Outbox::send`], which waits for room
//!   in frames and bytes, so a client that floods requests without reading is held back; the wait
//!   ends as soon as a close is asked for (the writer asks for one when the socket makes no
//!   progress for `write_timeout`), so the session is never wedged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::protocol::close;

pub(crate) struct Outbox {
    frames: Mutex<VecDeque<Utf8Bytes>>,
    /// A ping is due: the session's reader keeps the heartbeat's time, the writer sends it.
    ping: AtomicBool,
    /// Wakes the writer when frames arrive or a ping is due.
    ready: Notify,
    /// Frames and bytes queued and not yet taken by the writer (see [`Queued`]), bounded by
    /// `max_frames` and `max_bytes`.
    queued: AtomicU64,
    max_frames: u64,
    max_bytes: u64,
    /// Senders waiting for bytes to be taken; the writer wakes them only when there are any,
    /// so fan-out pays nothing for the wake-up.
    waiting: AtomicUsize,
    room: Notify,
    /// The close code asked for, 0 while none; the first request wins.
    close_code: AtomicU16,
    /// The reason of the first close request, when it gave one.
    close_reason: OnceLock<String>,
    /// Set once a close was asked for and its reason recorded; `closed` wakes the session's
    /// reader, its writer and senders then.
    announced: AtomicBool,
    closed: Notify,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` bytes, which the session's writer
    /// empties with [`Outbox::next_batch`].
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            ping: AtomicBool::new(false),
            ready: Notify::new(),
            queued: AtomicU64::new(0),
            max_frames: (capacity.max(1) as u64).min(Queued::FRAMES_MAX),
            max_bytes: (max_bytes as u64).min(Queued::BYTES_MAX),
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            close_code: AtomicU16::new(0),
            close_reason: OnceLock::new(),
            announced: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Queues a fan-out frame without waiting; a full queue (in frames or bytes) closes the
    /// client with 4008. Returns whether the frame was queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        if !self.reserve(len, false) {
            self.close(close::SLOW_CONSUMER);
            return false;
        }
        self.enqueue(frame);
        true
    }

    fn enqueue(&self, frame: Utf8Bytes) {
        crate::lock(&self.frames).push_back(frame);
        self.ready.notify_one();
    }

    /// Asks the writer to ping the client.
    pub(crate) fn ping(&self) {
        self.ping.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// The writer's side: waits for frames or a due ping; takes up to `max` frames, oldest
    /// first, and whether to ping first.
    pub(crate) async fn next_batch(&self, max: usize) -> (bool, VecDeque<Utf8Bytes>) {
        loop {
            let ping = self.ping.swap(false, Ordering::AcqRel);
            let batch = self.take(max);
            if ping || !batch.is_empty() {
                return (ping, batch);
            }
            // A wake-up that came before this wait is kept by `Notify`: none is lost.
            self.ready.notified().await;
        }
    }

    /// Takes up to `max` queued frames without waiting (all of them, in one swap, when they
    /// fit: the emptied queue then holds no memory).
    pub(crate) fn take(&self, max: usize) -> VecDeque<Utf8Bytes> {
        let batch = {
            let mut frames = crate::lock(&self.frames);
            if frames.len() <= max { std::mem::take(&mut *frames) } else { frames.drain(..max).collect() }
        };
        if !batch.is_empty() {
            let bytes: u64 = batch.iter().map(|frame| (frame.len() as u64).min(Queued::BYTES_MAX)).sum();
            self.release_many(batch.len() as u64, bytes);
        }
        batch
    }

    /// Queues a frame for this client alone, waiting for room in frames and bytes (a frame
    /// larger than the byte bound goes alone into an empty queue). False once a close was asked
    /// for or the writer is gone.
    pub(crate) async fn send(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        if !self.wait_for_room(len).await {
            return false;
        }
        self.enqueue(frame);
        true
    }

    async fn wait_for_room(&self, len: usize) -> bool {
        loop {
            if self.announced.load(Ordering::Acquire) {
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
                    _ = self.closing() => {}
                }
            }
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if reserved {
                return true;
            }
        }
    }

    /// Counts a frame of `len` bytes as queued if it fits in frames and bytes (or, when
    /// `alone_if_empty`, if nothing is queued).
    fn reserve(&self, len: usize, alone_if_empty: bool) -> bool {
        let len = (len as u64).min(Queued::BYTES_MAX);
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let (frames, bytes) = Queued::split(queued);
                let fits = frames < self.max_frames && bytes + len <= self.max_bytes;
                (fits || (alone_if_empty && frames == 0)).then_some(queued + Queued::one(len))
            })
            .is_ok()
    }

    fn release_many(&self, frames: u64, bytes: u64) {
        self.queued.fetch_sub((frames << Queued::BYTES_BITS) + bytes, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Asks the writer to close the connection with `code`. Later requests are ignored.
    pub(crate) fn close(&self, code: u16) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.announce();
        }
    }

    /// [`Outbox::close`] with a reason for the client (the backend's, say).
    pub(crate) fn close_with(&self, code: u16, reason: &str) {
        if self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let _ = self.close_reason.set(reason.to_string());
            self.announce();
        }
    }

    fn announce(&self) {
        self.announced.store(true, Ordering::Release);
        self.closed.notify_waiters();
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
        loop {
            // Registered before the code is read: a close in between still wakes it.
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.announced.load(Ordering::Acquire) {
                return self.close_code.load(Ordering::Acquire);
            }
            closed.await;
        }
    }
}

/// Frames and bytes queued, in one word: frames in the high 24 bits, bytes in the low 40.
struct Queued;

impl Queued {
    const BYTES_BITS: u32 = 40;
    const BYTES_MAX: u64 = (1 << Self::BYTES_BITS) - 1;
    const FRAMES_MAX: u64 = (1 << (64 - Self::BYTES_BITS)) - 1;

    /// One frame of `len` bytes.
    fn one(len: u64) -> u64 {
        (1 << Self::BYTES_BITS) + len
    }

    fn split(queued: u64) -> (u64, u64) {
        (queued >> Self::BYTES_BITS, queued & Self::BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn full_queue_closes_with_slow_consumer() {
        let outbox = Outbox::new(2, 1024);
        assert!(outbox.push(Utf8Bytes::from_static("a")));
        assert!(outbox.push(Utf8Bytes::from_static("b")));
        assert!(!outbox.push(Utf8Bytes::from_static("c")));
        assert_eq!(outbox.closing().await, close::SLOW_CONSUMER);
        outbox.close(close::NORMAL);
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER), "first close wins");
        let (ping, frames) = outbox.next_batch(1).await;
        assert!(!ping);
        assert_eq!(frames, ["a"]);
        outbox.ping();
        let (ping, frames) = outbox.next_batch(8).await;
        assert!(ping, "a ping, then what is queued");
        assert_eq!(frames, ["b"]);
    }

    #[tokio::test]
    async fn the_writer_takes_bursts_and_frees_their_room() {
        let outbox = Arc::new(Outbox::new(3, 1024));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.next_batch(2).await.1 }
        });
        tokio::task::yield_now().await;
        for frame in ["a", "b", "c"] {
            assert!(outbox.push(Utf8Bytes::from_static(frame)));
        }
        let first = writer.await.unwrap();
        assert!(!first.is_empty() && first.len() <= 2, "{first:?}");
        assert!(outbox.push(Utf8Bytes::from_static("d")), "what was taken made room");
        let mut all: Vec<_> = first.into_iter().collect();
        all.extend(outbox.take(8));
        assert_eq!(all, ["a", "b", "c", "d"], "in order, once");
    }

    #[test]
    fn too_many_queued_bytes_close_with_slow_consumer() {
        let outbox = Outbox::new(100, 10);
        assert!(outbox.push(Utf8Bytes::from_static("123456")));
        assert!(!outbox.push(Utf8Bytes::from_static("123456")));
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER));
    }

    #[tokio::test(start_paused = true)]
    async fn replies_wait_for_bytes_to_be_taken_and_stop_waiting_on_close() {
        let outbox = Arc::new(Outbox::new(100, 10));
        assert!(outbox.send(Utf8Bytes::from_static("1234567")).await);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(Utf8Bytes::from_static("abcdef")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "7 + 6 bytes do not fit in 10");
        assert_eq!(outbox.next_batch(8).await.1, ["1234567"]);
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
        let outbox = Outbox::new(100, 4);
        assert!(outbox.send(Utf8Bytes::from_static("large reply")).await);
        assert_eq!(outbox.next_batch(8).await.1, ["large reply"]);
    }
}
