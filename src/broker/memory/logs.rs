//! Group histories of the in-memory broker, with the Redis broker's semantics: epochs that start
//! with the first publish, offsets, trimming to `size`, expiry `ttl` after the last publish.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use crate::broker::{HistoryPolicy, HistoryState, Page, new_epoch};
use crate::group::GroupName;
use crate::protocol::MessageParts;

/// Histories looked at for expiry each time a new one starts.
const SWEEP_STEP: usize = 2;

/// Every group's history. Only publishing adds one, so subscribers cannot grow this map.
pub(super) struct Logs {
    by_group: HashMap<GroupName, Log>,
    /// Each group of `by_group` once, in the order their histories started. Each new history
    /// looks at the front few: expired ones are dropped, live ones go to the back. Expired
    /// histories thus leave as fast as new ones arrive, at O(1) cost per new group.
    sweep: VecDeque<GroupName>,
    /// When this process's histories began: waiting epochs of another process never recover.
    life_began_ms: u64,
}

/// One group's history.
struct Log {
    epoch: String,
    started_ms: u64,
    offset: u64,
    messages: VecDeque<(u64, Utf8Bytes)>,
    expires: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Logs {
    pub(super) fn new() -> Self {
        Self { by_group: HashMap::new(), sweep: VecDeque::new(), life_began_ms: now_ms() }
    }

    fn live(&self, group: &GroupName) -> Option<&Log> {
        self.by_group.get(group).filter(|log| log.expires > Instant::now())
    }

    /// Appends a message, starting a new epoch if the group has no live history, and returns
    /// its frame.
    pub(super) fn append(
        &mut self,
        group: &GroupName,
        parts: &MessageParts,
        policy: HistoryPolicy,
    ) -> Utf8Bytes {
        let now = Instant::now();
        if self.live(group).is_none() {
            self.sweep_some(now);
            let fresh = Log {
                epoch: new_epoch(),
                started_ms: now_ms(),
                offset: 0,
                messages: VecDeque::new(),
                expires: now,
            };
            if self.by_group.insert(group.clone(), fresh).is_none() {
                self.sweep.push_back(group.clone());
            }
        }
        let log = self.by_group.get_mut(group).expect("just made live");
        log.offset += 1;
        let frame = parts.finish(log.offset, &log.epoch);
        log.messages.push_back((log.offset, frame.clone()));
        while log.messages.len() > policy.size {
            log.messages.pop_front();
        }
        log.expires = now + policy.ttl;
        frame
    }

    fn sweep_some(&mut self, now: Instant) {
        for _ in 0..SWEEP_STEP {
            let Some(group) = self.sweep.pop_front() else { return };
            match self.by_group.get(&group) {
                Some(log) if log.expires > now => self.sweep.push_back(group),
                _ => {
                    self.by_group.remove(&group);
                }
            }
        }
    }

    pub(super) fn state(&self, group: &GroupName) -> HistoryState {
        let log = self.live(group);
        HistoryState {
            epoch: log.map(|log| (log.epoch.clone(), log.started_ms)),
            top: log.map_or(0, |log| log.offset),
            first: log.and_then(|log| log.messages.front()).map_or(0, |(offset, _)| *offset),
            now_ms: now_ms(),
            life_began_ms: Some(self.life_began_ms),
            continues: None,
        }
    }

    pub(super) fn read(
        &self,
        group: &GroupName,
        epoch: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Page> {
        let log = self.live(group).filter(|log| log.epoch == epoch)?;
        let mut budget = max_bytes;
        let mut page = Vec::new();
        for (offset, frame) in log.messages.iter().filter(|(offset, _)| *offset > after).take(limit) {
            if budget == 0 {
                break;
            }
            budget = budget.saturating_sub(frame.len());
            page.push((*offset, frame.clone()));
        }
        Some(page)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_group.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::value::RawValue;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expired_histories_are_swept_as_new_ones_start() {
        let mut logs = Logs::new();
        let policy = HistoryPolicy { size: 2, ttl: Duration::from_secs(10) };
        let data = RawValue::from_string("1".into()).unwrap();
        for n in 0..100 {
            let group = GroupName::new(&format!("g.{n}")).unwrap();
            logs.append(&group, &MessageParts::new(&group, &data), policy);
        }
        assert_eq!(logs.len(), 100);
        tokio::time::advance(Duration::from_secs(11)).await;
        for n in 100..200 {
            let group = GroupName::new(&format!("g.{n}")).unwrap();
            logs.append(&group, &MessageParts::new(&group, &data), policy);
        }
        assert_eq!(logs.len(), 100, "every expired history was dropped while new ones started");
    }

    #[test]
    fn reads_are_bounded_in_entries_and_bytes_and_know_their_epoch() {
        let mut logs = Logs::new();
        let policy = HistoryPolicy { size: 10, ttl: Duration::from_secs(10) };
        let group = GroupName::new("g").unwrap();
        let data = RawValue::from_string(r#""0123456789""#.into()).unwrap();
        for _ in 0..5 {
            logs.append(&group, &MessageParts::new(&group, &data), policy);
        }
        let state = logs.state(&group);
        let (epoch, _) = state.epoch.clone().unwrap();
        assert_eq!((state.top, state.first), (5, 1));
        let offsets = |page: Page| page.iter().map(|(o, _)| *o).collect::<Vec<_>>();
        assert_eq!(offsets(logs.read(&group, &epoch, 1, 2, 1 << 20).unwrap()), [2, 3]);
        assert_eq!(offsets(logs.read(&group, &epoch, 1, 10, 1).unwrap()), [2], "at least one entry");
        assert_eq!(logs.read(&group, "other", 1, 10, 1 << 20), None);
        assert_eq!(logs.state(&GroupName::new("none").unwrap()).epoch, None, "reads create nothing");
    }
}
