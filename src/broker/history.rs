//! Positions in a group's history, and the rule that decides whether a client that comes back
//! can be given everything it missed.
//!
//! A group's history starts with its first publish (never on a read, so subscribing to any
//! number of new names creates no state) and has an *epoch* naming that life of it; offsets count
//! 1, 2, 3 … within the epoch. A group with no history yet still has a position to report: offset
//! 0 of a *waiting epoch* `0-<ms>`, which records when it was read (the broker's clock). Real
//! epochs are 16 hex digits, so the two never clash.
//!
//! A client at offset 0 of a waiting epoch read at `t` missed nothing if the history that exists
//! now is the first one since `t`:
//! - the broker's data has not been lost since: its current life began (Redis's `LASTSAVE`, which
//!   a restart without persistence resets, in whole seconds; the in-memory broker's process start)
//!   a full second before `t`;
//! - and the current epoch started no later than `t + ttl`: an epoch that started after `t` and
//!   expired before now would have needed at least `ttl` of silence after its last publish.
//!
//! Where the broker cannot say when its life began, a waiting epoch never recovers.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use super::{BrokerError, History};
use crate::config::NamespaceConfig;
use crate::group::GroupName;
use crate::protocol::Since;

/// History kept for a group: the last `size` messages, for `ttl` after the last publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryPolicy {
    pub(crate) size: usize,
    pub(crate) ttl: Duration,
}

impl HistoryPolicy {
    /// The history a namespace keeps for its groups, if any.
    pub(crate) fn of(namespace: &NamespaceConfig) -> Option<Self> {
        (namespace.history_size > 0)
            .then_some(Self { size: namespace.history_size, ttl: namespace.history_ttl })
    }
}

/// Where a group's history stands: the offset of its newest message (0 before the first) and
/// the epoch that offset belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Position {
    pub(crate) offset: u64,
    pub(crate) epoch: String,
}

/// A group's history as one atomic read found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryState {
    /// The current epoch and when it started (ms, broker clock), if the group has a history.
    pub(crate) epoch: Option<(String, u64)>,
    /// The newest offset (0 without history).
    pub(crate) top: u64,
    /// The oldest offset still retained (0 when none is).
    pub(crate) first: u64,
    /// The broker's clock at the read, ms.
    pub(crate) now_ms: u64,
    /// When the broker's current data life began (ms, broker clock), if it can tell.
    pub(crate) life_began_ms: Option<u64>,
    /// The epoch the current one continues after a takeover by another Redis timeline, and the
    /// last offset of it that this timeline has (the fork): offsets after the fork in the old
    /// epoch are gone; those before it are this epoch's too.
    pub(crate) continues: Option<Position>,
}

/// What a client that left off at some position can be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Every message after `after` of the current epoch is retained: read them (none may be
    /// missing, when `after` is the top).
    Recover { after: u64 },
    /// Something it missed is gone (another epoch, trimmed, or the data was lost).
    Lost,
}

impl HistoryState {
    /// The position to report to a client: the current epoch's top, or a waiting epoch.
    pub(crate) fn position(&self) -> Position {
        match &self.epoch {
            Some((epoch, _)) => Position { offset: self.top, epoch: epoch.clone() },
            None => Position { offset: 0, epoch: format!("0-{}", self.now_ms) },
        }
    }

    /// Whether a client that has seen everything up to `since` can be brought up to date.
    pub(crate) fn plan(&self, since: &Since, ttl: Duration) -> Plan {
        let here = self.position();
        if since.offset == here.offset && since.epoch == here.epoch {
            return Plan::Recover { after: since.offset };
        }
        let covered = |offset: u64| {
            offset <= self.top && (offset == self.top || (self.first != 0 && self.first <= offset + 1))
        };
        let continued = self.continues.as_ref().is_some_and(|fork| fork.epoch == since.epoch);
        match &self.epoch {
            Some((epoch, _)) if *epoch == since.epoch => {
                if covered(since.offset) {
                    Plan::Recover { after: since.offset }
                } else {
                    Plan::Lost
                }
            }
            // Across a takeover: what the client has must be what this timeline has.
            Some(_) if continued => {
                let fork = self.continues.as_ref().map_or(0, |fork| fork.offset);
                if since.offset <= fork && covered(since.offset) {
                    Plan::Recover { after: since.offset }
                } else {
                    Plan::Lost
                }
            }
            current => match waiting_epoch(since) {
                Some(read_ms) if self.life_began_ms.is_some_and(|began| began + 1000 <= read_ms) => {
                    match current {
                        None => Plan::Recover { after: 0 },
                        Some((_, started_ms)) => {
                            let first_since = *started_ms <= read_ms.saturating_add(ttl.as_millis() as u64);
                            if first_since && self.first == 1 {
                                Plan::Recover { after: 0 }
                            } else {
                                Plan::Lost
                            }
                        }
                    }
                }
                _ => Plan::Lost,
            },
        }
    }
}

/// The read time of a waiting epoch, if `since` is offset 0 of one.
fn waiting_epoch(since: &Since) -> Option<u64> {
    if since.offset != 0 {
        return None;
    }
    since.epoch.strip_prefix("0-")?.parse().ok()
}

/// Messages read from a group's history: `(offset, frame)`, oldest first.
pub(crate) type Page = Vec<(u64, Utf8Bytes)>;

/// Entries and bytes one read of missed messages takes at most (at least one entry).
const PAGE_ENTRIES: usize = 500;
const PAGE_BYTES: usize = 256 * 1024;

/// Why missed messages could not all be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MissedError {
    /// Some are gone since the plan was made: trimmed, expired or lost with Redis's data.
    #[error("the history moved on while it was read")]
    Gone,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Reads the messages a client missed, page by page: every offset after the one it has, up to
/// the position the plan was made at, and nothing more. Each page is bounded in entries and
/// bytes, so a large recovery never holds more than one page in memory.
pub(crate) struct Missed {
    group: GroupName,
    epoch: String,
    /// The last offset read so far (or the client's own).
    last: u64,
    top: u64,
}

impl Missed {
    /// From `after` up to `until`, which must be of the same epoch.
    pub(crate) fn new(group: &GroupName, after: u64, until: &Position) -> Self {
        Self { group: group.clone(), epoch: until.epoch.clone(), last: after, top: until.offset }
    }

    /// The next page, `None` once everything up to the target was read.
    pub(crate) async fn next(&mut self, history: &dyn History) -> Result<Option<Page>, MissedError> {
        if self.last >= self.top {
            return Ok(None);
        }
        let limit = ((self.top - self.last) as usize).min(PAGE_ENTRIES);
        let page = history.read(&self.group, &self.epoch, self.last, limit, PAGE_BYTES).await?;
        let page = page.ok_or(MissedError::Gone)?;
        // Entries are consecutive offsets; anything else means the oldest were trimmed.
        let contiguous = page.iter().zip(self.last + 1..).all(|((offset, _), expected)| *offset == expected);
        if page.is_empty() || !contiguous {
            return Err(MissedError::Gone);
        }
        self.last = page.last().map_or(self.last, |(offset, _)| *offset);
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn since(offset: u64, epoch: &str) -> Since {
        Since { offset, epoch: epoch.into() }
    }

    fn with_history(top: u64, first: u64, started_ms: u64) -> HistoryState {
        HistoryState {
            epoch: Some(("e1".into(), started_ms)),
            top,
            first,
            now_ms: 5_000_000,
            life_began_ms: Some(0),
            continues: None,
        }
    }

    #[test]
    fn same_epoch_recovers_while_nothing_missed_was_trimmed() {
        let state = with_history(10, 8, 0);
        assert_eq!(state.plan(&since(7, "e1"), TTL), Plan::Recover { after: 7 });
        assert_eq!(state.plan(&since(10, "e1"), TTL), Plan::Recover { after: 10 });
        assert_eq!(state.plan(&since(6, "e1"), TTL), Plan::Lost, "7 was trimmed");
        assert_eq!(state.plan(&since(11, "e1"), TTL), Plan::Lost, "ahead of the history");
        assert_eq!(state.plan(&since(7, "e0"), TTL), Plan::Lost, "another epoch");
        assert_eq!(state.position(), Position { offset: 10, epoch: "e1".into() });
    }

    #[test]
    fn a_takeover_recovers_positions_up_to_the_fork_only() {
        // e0 reached 12 on the old master; the new one had it up to 10, and went on as e1.
        let state = HistoryState {
            continues: Some(Position { offset: 10, epoch: "e0".into() }),
            ..with_history(14, 3, 0)
        };
        assert_eq!(state.plan(&since(9, "e0"), TTL), Plan::Recover { after: 9 });
        assert_eq!(state.plan(&since(10, "e0"), TTL), Plan::Recover { after: 10 });
        assert_eq!(state.plan(&since(12, "e0"), TTL), Plan::Lost, "11 and 12 are not this timeline's");
        assert_eq!(state.plan(&since(1, "e0"), TTL), Plan::Lost, "2 was trimmed");
        assert_eq!(state.plan(&since(13, "e1"), TTL), Plan::Recover { after: 13 });
        assert_eq!(state.plan(&since(9, "e9"), TTL), Plan::Lost, "an older epoch");
    }

    #[test]
    fn a_waiting_epoch_recovers_the_first_history_after_it() {
        let none = HistoryState {
            epoch: None,
            top: 0,
            first: 0,
            now_ms: 10_000,
            life_began_ms: Some(0),
            continues: None,
        };
        let waiting = none.position();
        assert_eq!(waiting, Position { offset: 0, epoch: "0-10000".into() });
        let since = since(0, &waiting.epoch);
        assert_eq!(none.plan(&since, TTL), Plan::Recover { after: 0 }, "still nothing published");
        assert_eq!(with_history(3, 1, 12_000).plan(&since, TTL), Plan::Recover { after: 0 });
        assert_eq!(with_history(3, 2, 12_000).plan(&since, TTL), Plan::Lost, "offset 1 was trimmed");
        let late = 10_000 + TTL.as_millis() as u64 + 1;
        assert_eq!(with_history(3, 1, late).plan(&since, TTL), Plan::Lost, "an epoch may have come and gone");
        for began in [Some(9_500), Some(11_000), None] {
            let restarted = HistoryState { life_began_ms: began, now_ms: 20_000, ..none.clone() };
            assert_eq!(
                restarted.plan(&since, TTL),
                Plan::Lost,
                "the data may have been lost since: {began:?}"
            );
        }
        assert_eq!(none.plan(&self::since(1, &waiting.epoch), TTL), Plan::Lost);
        let fresh = HistoryState { life_began_ms: None, ..none.clone() };
        assert_eq!(fresh.plan(&since, TTL), Plan::Recover { after: 0 }, "where it stands is always covered");
    }
}
