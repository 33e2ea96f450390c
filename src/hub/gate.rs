//! The gate between a member of a group with history and the live stream.
//!
//! While a member recovers, live frames of the group are held here instead of being queued;
//! the session meanwhile sends the member the history it missed. Going live then releases the
//! held frames newer than the last offset sent, and from then on every frame at or below the
//! last delivered offset of the same epoch is dropped. That merge by offset is what gives a
//! recovering client every message once, in order, whichever way (history or live) it came:
//! a live frame read from Redis after the history that already contained it is a duplicate.
//! A frame of another epoch (the history was lost and offsets restarted) always passes.

use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;

use crate::outbox::Outbox;
use crate::protocol::close;

pub(crate) struct Gate {
    state: Mutex<State>,
    /// Frames that may be held while recovering; past it the member is a slow consumer.
    limit: usize,
}

enum State {
    Holding(Vec<(Option<(u64, String)>, Utf8Bytes)>),
    Live { last: u64, epoch: String },
}

impl Gate {
    /// A gate that holds live frames until [`Gate::go_live`].
    pub(crate) fn holding(limit: usize) -> Self {
        Self { state: Mutex::new(State::Holding(Vec::new())), limit }
    }

    /// Fan-out: hands a frame (with its offset and epoch, when it has them) to the member.
    pub(crate) fn offer(&self, position: Option<(u64, &str)>, frame: Utf8Bytes, outbox: &Outbox) {
        let mut state = crate::lock(&self.state);
        match &mut *state {
            State::Holding(held) if held.len() >= self.limit => outbox.close(close::SLOW_CONSUMER),
            State::Holding(held) => held.push((position.map(|(o, e)| (o, e.to_string())), frame)),
            State::Live { last, epoch } => {
                if advance(last, epoch, position) {
                    outbox.push(frame);
                }
            }
        }
    }

    /// Releases held frames newer than `last` (of `epoch`) and lets live frames through.
    pub(crate) fn go_live(&self, last: u64, epoch: &str, outbox: &Outbox) {
        let mut state = crate::lock(&self.state);
        let State::Holding(held) = &mut *state else { return };
        let (mut last, mut epoch) = (last, epoch.to_string());
        for (position, frame) in std::mem::take(held) {
            if advance(&mut last, &mut epoch, position.as_ref().map(|(o, e)| (*o, e.as_str()))) {
                outbox.push(frame);
            }
        }
        // Still under the lock: no live frame can slip in between the held ones and this.
        *state = State::Live { last, epoch };
    }
}

/// Whether a frame at `position` is new for a member that has seen up to `last` of `epoch`;
/// if so, records it as seen. Frames without a position (join/leave events) always pass.
fn advance(last: &mut u64, epoch: &mut String, position: Option<(u64, &str)>) -> bool {
    let Some((offset, frame_epoch)) = position else { return true };
    if frame_epoch != epoch.as_str() {
        *epoch = frame_epoch.to_string();
    } else if offset <= *last {
        return false;
    }
    *last = offset;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Utf8Bytes {
        Utf8Bytes::from(n.to_string())
    }

    #[tokio::test]
    async fn merges_held_and_live_frames_by_offset() {
        let (outbox, mut rx) = Outbox::new(16, 1 << 20);
        let gate = Gate::holding(8);
        for n in [3, 4, 5] {
            gate.offer(Some((n, "e")), frame(n), &outbox);
        }
        gate.offer(None, Utf8Bytes::from_static("join"), &outbox);
        // History delivered up to 4 meanwhile: 3 and 4 are duplicates.
        gate.go_live(4, "e", &outbox);
        gate.offer(Some((5, "e")), frame(5), &outbox); // a late duplicate from the live stream
        gate.offer(Some((6, "e")), frame(6), &outbox);
        gate.offer(Some((1, "new")), frame(1), &outbox); // history lost: a new epoch passes
        drop(outbox);
        let mut got = Vec::new();
        while let Some(f) = rx.recv().await {
            got.push(f.to_string());
        }
        assert_eq!(got, ["5", "join", "6", "1"]);
    }

    #[test]
    fn holding_too_much_closes_the_member() {
        let (outbox, _rx) = Outbox::new(16, 1 << 20);
        let gate = Gate::holding(2);
        for n in 1..=3 {
            gate.offer(Some((n, "e")), frame(n), &outbox);
        }
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER));
    }
}
