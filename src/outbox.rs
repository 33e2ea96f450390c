//! A client's bounded outbound queue, its close signal, and the signal that the backend left
//! orders for its session (the control API).
//!
//! The queue is bounded both in frames (`outbound_queue`) and in bytes (`outbound_queue_bytes`),
//! and both bounds cover every frame: group messages and the session's own replies alike. The
//! frames and their byte count sit under one lock that only their pusher and the writer take: a
//! fan-out push is one uncontended lock and a wake-up (a bounded channel's semaphore cost a
//! tenth of the fan-out, and a separate atomic count shared a cache line between the two
//! threads). An idle client's queue holds no memory (a channel kept a block of 32 slots); a
//! busy one's writer and queue trade two buffers of at most 64 frames between bursts.
//!
//! - The hub pushes group messages with [`Outbox::push`], which never waits: when the queue is
//!   full the client is too slow, and it is closed with 4008 instead of slowing the broker reader
//!   or the other members of the group.
//! - The session sends replies and recovered history with [`Outbox::send`], which waits for room
//!   in frames and bytes, so a client that floods requests without reading is held back; the wait
//!   ends as soon as a close is asked for (the writer asks for one when the socket makes no
//!   progress for `write_timeout`), so the session is never wedged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::protocol::close;

pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// A ping is due: the session's reader keeps the heartbeat's time, the writer sends it.
    ping: AtomicBool,
    /// Wakes the writer when frames arrive or a ping is due.
    ready: Notify,
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
    /// The backend left orders for the session (the control API); `closed` wakes its reader.
    ordered: AtomicBool,
    closed: Notify,
}

/// Why [`Outbox::attention`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attention {
    /// A close was asked for, with this code.
    Close(u16),
    /// Orders are waiting for the session.
    Orders,
}

/// The frames not yet taken by the writer, and their bytes.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
    /// Some of the frames are fan-out's ([`Outbox::push`]): more may be on their way.
    fanned: bool,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` bytes, which the session's writer
    /// empties with [`Outbox::next_batch`].
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            queue: Mutex::default(),
            max_frames: capacity.max(1),
            max_bytes,
            ping: AtomicBool::new(false),
            ready: Notify::new(),
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            close_code: AtomicU16::new(0),
            close_reason: OnceLock::new(),
            announced: AtomicBool::new(false),
            ordered: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Queues a fan-out frame without waiting; a full queue (in frames or bytes) closes the
    /// client with 4008. Returns whether the frame was queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        if self.try_queue(frame, true).is_err() {
            self.close(close::SLOW_CONSUMER);
            return false;
        }
        true
    }

    /// Queues `frame` if it fits in frames and bytes, and wakes the writer; gives the frame back
    /// otherwise. A fan-out frame (`fanned`) marks the queue as one more may follow; the
    /// session's own frame also goes alone into an empty queue, however large.
    fn try_queue(&self, frame: Utf8Bytes, fanned: bool) -> Result<(), Utf8Bytes> {
        {
            let mut queue = crate::lock(&self.queue);
            let fits = queue.frames.len() < self.max_frames && queue.bytes + frame.len() <= self.max_bytes;
            let alone = !fanned && queue.frames.is_empty();
            if !(fits || alone) {
                return Err(frame);
            }
            queue.bytes += frame.len();
            queue.fanned |= fanned;
            queue.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Asks the writer to ping the client.
    pub(crate) fn ping(&self) {
        self.ping.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// The writer's side: waits for frames or a due ping; moves up to `max` frames, oldest
    /// first, into `batch` (empty, the writer's buffer from the burst before) and tells whether
    /// to ping first. When every queued frame fits, the two buffers change places, so a busy
    /// client's queue grows its buffer once rather than on every burst. Woken for fewer than
    /// `linger_below` frames of which some are fan-out's, it first lets the runtime's other
    /// ready tasks run once, so that what they queue meanwhile goes out in the same burst;
    /// nothing is taken before that wait, so dropping this future loses no frame. The session's
    /// own frames alone (a reply, the welcome) go at once: it queued them before its writer
    /// could run, and nothing else is coming with them.
    pub(crate) async fn next_batch(
        &self,
        max: usize,
        linger_below: usize,
        batch: &mut VecDeque<Utf8Bytes>,
    ) -> bool {
        let mut lingered = false;
        loop {
            if !lingered && self.small_fanned_burst(linger_below) {
                lingered = true;
                tokio::task::yield_now().await;
            }
            let ping = self.ping.swap(false, Ordering::AcqRel);
            self.take_into(max, batch);
            if ping || !batch.is_empty() {
                return ping;
            }
            // A wake-up that came before this wait is kept by `Notify`: none is lost.
            self.ready.notified().await;
        }
    }

    /// Whether fewer than `below` frames are queued, some of them fan-out's.
    fn small_fanned_burst(&self, below: usize) -> bool {
        let queue = crate::lock(&self.queue);
        queue.fanned && (1..below).contains(&queue.frames.len())
    }

    /// Takes up to `max` queued frames without waiting.
    pub(crate) fn take(&self, max: usize) -> VecDeque<Utf8Bytes> {
        let mut batch = VecDeque::new();
        self.take_into(max, &mut batch);
        batch
    }

    /// Moves up to `max` queued frames into the empty `batch` (all of them, by swapping the
    /// buffers, when they fit) and wakes waiting senders.
    fn take_into(&self, max: usize, batch: &mut VecDeque<Utf8Bytes>) {
        {
            let mut queue = crate::lock(&self.queue);
            if queue.frames.is_empty() {
                return;
            }
            if queue.frames.len() <= max {
                std::mem::swap(&mut queue.frames, batch);
                queue.bytes = 0;
                queue.fanned = false;
            } else {
                batch.extend(queue.frames.drain(..max));
                queue.bytes -= batch.iter().map(|frame| frame.len()).sum::<usize>();
            }
        }
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Queues a frame for this client alone, waiting for room in frames and bytes (a frame
    /// larger than the byte bound goes alone into an empty queue). False once a close was asked
    /// for or the writer is gone.
    pub(crate) async fn send(&self, mut frame: Utf8Bytes) -> bool {
        loop {
            if self.announced.load(Ordering::Acquire) {
                return false;
            }
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Counted before trying: a writer taking frames in between sees the wait and wakes it.
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let unsent = self.try_queue(frame, false).err();
            if unsent.is_some() {
                tokio::select! {
                    _ = &mut room => {}
                    _ = self.closing() => {}
                }
            }
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            match unsent {
                None => return true,
                Some(unsent) => frame = unsent,
            }
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
            if let Attention::Close(code) = self.wait(false).await {
                return code;
            }
        }
    }

    /// Tells the session's reader that orders wait for it.
    pub(crate) fn order(&self) {
        self.ordered.store(true, Ordering::Release);
        self.closed.notify_waiters();
    }

    /// The session reader's wait: until a close is asked for, or orders wait (reported once
    /// per [`Outbox::order`]).
    pub(crate) async fn attention(&self) -> Attention {
        self.wait(true).await
    }

    async fn wait(&self, for_orders: bool) -> Attention {
        loop {
            // Registered before the flags are read: a close or an order in between still wakes it.
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.announced.load(Ordering::Acquire) {
                return Attention::Close(self.close_code.load(Ordering::Acquire));
            }
            if for_orders && self.ordered.swap(false, Ordering::AcqRel) {
                return Attention::Orders;
            }
            closed.await;
        }
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
        let mut frames = VecDeque::new();
        assert!(!outbox.next_batch(1, 0, &mut frames).await);
        assert_eq!(frames, ["a"]);
        frames.clear();
        outbox.ping();
        assert!(outbox.next_batch(8, 0, &mut frames).await, "a ping, then what is queued");
        assert_eq!(frames, ["b"]);
    }

    #[tokio::test]
    async fn the_writer_takes_bursts_and_frees_their_room() {
        let outbox = Arc::new(Outbox::new(3, 1024));
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut frames = VecDeque::new();
                outbox.next_batch(2, 0, &mut frames).await;
                frames
            }
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

    #[tokio::test]
    async fn a_small_fan_out_burst_waits_for_the_other_tasks_once_before_it_is_taken() {
        let outbox = Arc::new(Outbox::new(100, 1024));
        let writer = |linger_below| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut frames = VecDeque::new();
                outbox.next_batch(usize::MAX, linger_below, &mut frames).await;
                frames
            })
        };
        for (linger_below, expected) in [(0, &["a"][..]), (32, &["a", "b"][..])] {
            let taking = writer(linger_below);
            assert!(outbox.push(Utf8Bytes::from_static("a")));
            tokio::task::yield_now().await;
            assert!(outbox.push(Utf8Bytes::from_static("b")));
            assert_eq!(taking.await.unwrap(), expected, "lingering below {linger_below}");
            outbox.take(8);
        }
        // The session's own frames go at once: it queued what it had before the writer ran.
        let taking = writer(32);
        assert!(outbox.send(Utf8Bytes::from_static("reply")).await);
        tokio::task::yield_now().await;
        assert!(outbox.push(Utf8Bytes::from_static("c")));
        assert_eq!(taking.await.unwrap(), ["reply"]);
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
        assert_eq!(outbox.take(8), ["1234567"]);
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
        assert_eq!(outbox.take(8), ["large reply"]);
    }
}
