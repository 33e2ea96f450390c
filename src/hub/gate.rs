//! The gate between a member of a group with history and the live stream.
//!
//! While a member is being caught up, live frames of the group are held here instead of being
//! queued; meanwhile the member is sent what it missed from history. Going live then releases
//! the held frames newer than the last offset sent, and from then on every frame at or below the
//! last delivered offset of the same epoch is dropped. That merge by offset is what gives a
//! member every message once, in order, whichever way (history or live) it came: a live frame
//! read from Redis after the history that already contained it is a duplicate. A frame of
//! another epoch always passes (the hub tells the member of the gap first, see `recovery`).
//!
//! A gap can open at any time: the instance's Redis subscription drops and comes back. The hub
//! then asks every gate of the group to [`Gate::hold`] again and catches the members up from
//! where they are. A gate already catching up when that happens goes round once more: its
//! [`Gate::go_live`] answers with the position to catch up from.

use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;

use crate::broker::Position;
use crate::outbox::Outbox;
use crate::protocol::close;

pub(crate) struct Gate {
    state: Mutex<State>,
    /// Frames that may be held while catching up; past it the member is a slow consumer.
    limit: usize,
}

/// A held frame and its position, when it has one (join/leave events have none).
type Held = (Option<(u64, String)>, Utf8Bytes);

enum State {
    Holding {
        held: Vec<Held>,
        /// A gap opened while catching up: go round once more before going live.
        again: bool,
        /// Where the member went live first, if it did.
        joined: Option<u64>,
    },
    Live {
        last: u64,
        epoch: String,
        /// The offset the member first went live at: what it was sent since is `joined..=last`.
        joined: u64,
    },
}

/// Where a live member stands: the last offset delivered, and the one it joined at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reached {
    pub(crate) last: Position,
    pub(crate) joined: u64,
}

impl Gate {
    /// A gate that holds live frames until [`Gate::go_live`].
    pub(crate) fn holding(limit: usize) -> Self {
        let state = State::Holding { held: Vec::new(), again: false, joined: None };
        Self { state: Mutex::new(state), limit }
    }

    /// Fan-out: hands a frame (with its offset and epoch, when it has them) to the member.
    pub(crate) fn offer(&self, position: Option<(u64, &str)>, frame: Utf8Bytes, outbox: &Outbox) {
        let mut state = crate::lock(&self.state);
        match &mut *state {
            State::Holding { held, .. } if held.len() >= self.limit => outbox.close(close::SLOW_CONSUMER),
            State::Holding { held, .. } => held.push((position.map(|(o, e)| (o, e.to_string())), frame)),
            State::Live { last, epoch, .. } => {
                if advance(last, epoch, position) {
                    outbox.push(frame);
                }
            }
        }
    }

    /// Holds live frames again, for a catch-up after a gap. Returns the position a live member
    /// reached; `None` when it is being caught up already (it will go round again).
    pub(crate) fn hold(&self) -> Option<Reached> {
        let mut state = crate::lock(&self.state);
        match &mut *state {
            State::Holding { again, .. } => {
                *again = true;
                None
            }
            State::Live { last, epoch, joined } => {
                let reached =
                    Reached { last: Position { offset: *last, epoch: epoch.clone() }, joined: *joined };
                *state = State::Holding { held: Vec::new(), again: false, joined: Some(*joined) };
                Some(reached)
            }
        }
    }

    /// Where the member stands, if it is live.
    pub(crate) fn reached(&self) -> Option<Reached> {
        match &*crate::lock(&self.state) {
            State::Live { last, epoch, joined } => {
                Some(Reached { last: Position { offset: *last, epoch: epoch.clone() }, joined: *joined })
            }
            State::Holding { .. } => None,
        }
    }

    /// The member was sent everything up to `position`: releases the held frames newer than it
    /// and lets live frames through. If a gap opened meanwhile, keeps holding and returns the
    /// position to catch up from instead.
    pub(crate) fn go_live(&self, position: &Position, outbox: &Outbox) -> Result<(), Position> {
        let mut state = crate::lock(&self.state);
        let State::Holding { held, again, joined } = &mut *state else { return Ok(()) };
        if std::mem::take(again) {
            return Err(position.clone());
        }
        let joined = joined.unwrap_or(position.offset);
        let (mut last, mut epoch) = (position.offset, position.epoch.clone());
        for (position, frame) in std::mem::take(held) {
            if advance(&mut last, &mut epoch, position.as_ref().map(|(o, e)| (*o, e.as_str()))) {
                outbox.push(frame);
            }
        }
        // Still under the lock: no live frame can slip in between the held ones and this.
        *state = State::Live { last, epoch, joined };
        Ok(())
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

    fn at(offset: u64, epoch: &str) -> Position {
        Position { offset, epoch: epoch.into() }
    }

    fn drain(outbox: Outbox) -> Vec<String> {
        outbox.take(usize::MAX).iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn merges_held_and_live_frames_by_offset() {
        let outbox = Outbox::new(16, 1 << 20);
        let gate = Gate::holding(8);
        for n in [3, 4, 5] {
            gate.offer(Some((n, "e")), frame(n), &outbox);
        }
        gate.offer(None, Utf8Bytes::from_static("join"), &outbox);
        // History delivered up to 4 meanwhile: 3 and 4 are duplicates.
        gate.go_live(&at(4, "e"), &outbox).unwrap();
        gate.offer(Some((5, "e")), frame(5), &outbox); // a late duplicate from the live stream
        gate.offer(Some((6, "e")), frame(6), &outbox);
        gate.offer(Some((1, "new")), frame(1), &outbox); // history lost: a new epoch passes
        assert_eq!(drain(outbox), ["5", "join", "6", "1"]);
    }

    #[tokio::test]
    async fn a_gap_while_catching_up_makes_the_member_go_round_again() {
        let outbox = Outbox::new(16, 1 << 20);
        let gate = Gate::holding(8);
        assert_eq!(gate.hold(), None, "already catching up");
        assert_eq!(gate.go_live(&at(4, "e"), &outbox), Err(at(4, "e")), "once more from 4");
        gate.offer(Some((7, "e")), frame(7), &outbox);
        gate.go_live(&at(6, "e"), &outbox).unwrap();
        assert_eq!(gate.reached(), Some(Reached { last: at(7, "e"), joined: 6 }));
        // Live again: a gap holds it, and it keeps the offset it joined at.
        assert_eq!(gate.hold(), Some(Reached { last: at(7, "e"), joined: 6 }));
        gate.offer(Some((9, "e")), frame(9), &outbox);
        gate.go_live(&at(8, "e"), &outbox).unwrap();
        assert_eq!(gate.reached().unwrap().joined, 6);
        assert_eq!(drain(outbox), ["7", "9"]);
    }

    #[test]
    fn holding_too_much_closes_the_member() {
        let outbox = Outbox::new(16, 1 << 20);
        let gate = Gate::holding(2);
        for n in 1..=3 {
            gate.offer(Some((n, "e")), frame(n), &outbox);
        }
        assert_eq!(outbox.close_requested(), Some(close::SLOW_CONSUMER));
    }
}
