//! Catching members of a group with history up: after they subscribe with `since`, and after a
//! gap in this instance's Redis subscription, in place, without closing anyone.
//!
//! Each member's gate holds its live frames meanwhile. One round reads where the group stands,
//! decides for each member whether everything it missed is retained ([`Plan`]), reads the
//! missing offsets once for all of them in bounded pages, sends each member the ones it lacks,
//! then opens its gate. A member whose gap cannot be filled is told so (a `recovered` frame with
//! `recovered: false` and the group's position) before it continues: no member ever continues
//! past a gap without being told. A member whose gate reports another gap goes round again.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{History, HistoryPolicy, HistoryState, Missed, MissedError, Plan, Position};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::{self, Since, close};

use super::gate::Gate;

/// Attempts of a round against a broker that fails before the members are given up on.
const ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// How a catch-up hands frames to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Wait for room in the member's queue: one member recovering on its own request.
    Wait,
    /// Push without waiting: many members at once after a gap; one that cannot take what it
    /// missed is closed as a slow consumer (and recovers by reconnecting).
    Push,
}

/// A member whose gate holds its live frames, and what it has seen.
pub(crate) struct Catching {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) seen: Since,
}

/// Brings `members` of `group` up to date and opens their gates. `state` is where the group
/// stood when the caller last looked, if it did (the first round then reads nothing more).
pub(crate) async fn catch_up(
    history: &dyn History,
    metrics: &Metrics,
    group: &GroupName,
    policy: HistoryPolicy,
    mut members: Vec<Catching>,
    mut state: Option<HistoryState>,
    pace: Pace,
) {
    let mut failures = 0;
    while !members.is_empty() {
        let current = match state.take() {
            Some(state) => state,
            None => match read_state(history, group).await {
                Some(state) => state,
                None => return give_up(group, &members),
            },
        };
        let failed;
        (members, failed) = round(history, metrics, group, policy, members, &current, pace).await;
        failures = if failed { failures + 1 } else { 0 };
        if failures >= ATTEMPTS {
            return give_up(group, &members);
        }
    }
}

async fn read_state(history: &dyn History, group: &GroupName) -> Option<HistoryState> {
    for attempt in 1..=ATTEMPTS {
        match history.state(group).await {
            Ok(state) => return Some(state),
            Err(e) => tracing::warn!(%group, attempt, error = %e, "cannot read the group's history"),
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    None
}

/// The broker keeps failing: the members cannot be caught up here. Closing them makes their
/// clients reconnect and recover, so nothing is skipped silently.
fn give_up(group: &GroupName, members: &[Catching]) {
    tracing::warn!(%group, members = members.len(), "closing members that could not be caught up");
    for member in members {
        member.outbox.close(close::TRY_AGAIN);
    }
}

/// One round: returns the members that must go round again (a new gap, or the history moved
/// while it was read), and whether the broker failed.
async fn round(
    history: &dyn History,
    metrics: &Metrics,
    group: &GroupName,
    policy: HistoryPolicy,
    members: Vec<Catching>,
    state: &HistoryState,
    pace: Pace,
) -> (Vec<Catching>, bool) {
    let position = state.position();
    let mut again = Vec::new();
    let mut recovering = Vec::new();
    for member in members {
        match state.plan(&member.seen, policy.ttl) {
            Plan::Recover { after } => {
                if after < position.offset {
                    metrics.catch_up("recovered");
                }
                recovering.push((member, after));
            }
            Plan::Lost => {
                metrics.catch_up("lost");
                send(
                    &member.outbox,
                    protocol::recovered(group, false, position.offset, &position.epoch),
                    pace,
                )
                .await;
                open(member, &position, &mut again);
            }
        }
    }
    let Some(from) = recovering.iter().map(|(_, after)| *after).min() else { return (again, false) };
    let mut missed = Missed::new(group, from, &position);
    loop {
        match missed.next(history).await {
            Ok(Some(page)) => {
                for (member, after) in &mut recovering {
                    let from = *after;
                    for (offset, frame) in page.iter().filter(|(offset, _)| *offset > from) {
                        send(&member.outbox, frame.clone(), pace).await;
                        *after = *offset;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let failed = matches!(e, MissedError::Broker(_));
                if failed {
                    tracing::warn!(%group, error = %e, "reading missed messages failed; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                // Round again from what each was sent: the next plan says what is still there.
                for (mut member, after) in recovering {
                    member.seen = Since { offset: after, epoch: position.epoch.clone() };
                    again.push(member);
                }
                return (again, failed);
            }
        }
    }
    for (member, _) in recovering {
        open(member, &position, &mut again);
    }
    (again, false)
}

/// Opens the member's gate at `position`, or queues it for another round.
fn open(mut member: Catching, position: &Position, again: &mut Vec<Catching>) {
    if let Err(from) = member.gate.go_live(position, &member.outbox) {
        member.seen = Since { offset: from.offset, epoch: from.epoch };
        again.push(member);
    }
}

async fn send(outbox: &Outbox, frame: axum::extract::ws::Utf8Bytes, pace: Pace) {
    match pace {
        Pace::Wait => {
            outbox.send(frame).await;
        }
        Pace::Push => {
            outbox.push(frame);
        }
    }
}
