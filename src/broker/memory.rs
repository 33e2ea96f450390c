//! In-process broker for standalone mode and tests: one instance, no network.
//!
//! Publishing hands the frame straight to the local sink, so the [`Broker`] contract holds
//! trivially: every subscription is in effect at once and order is the publisher's call order.
//! History and presence live in maps with the same semantics as the Redis broker (offsets,
//! epochs, trimming, expiry); presence needs no expiry, since a crash takes every entry with it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{
    Answer, Broker, Directory, History, HistoryPolicy, HistorySlice, NodeInfo, Position, Presence, Publisher,
    Sink, Subscriber, Subscription, new_epoch, publish_plain,
};
use crate::group::GroupName;
use crate::lock;
use crate::protocol::{ClientInfo, MessageParts};

/// Every part of the broker contract, in this process's memory.
pub(crate) struct MemoryBroker {
    sink: Arc<dyn Sink>,
    histories: Mutex<HashMap<GroupName, Log>>,
    presence: Mutex<HashMap<GroupName, BTreeMap<String, ClientInfo>>>,
    /// The one node there is, once announced.
    node: Mutex<Option<NodeInfo>>,
}

/// One group's history: its epoch, newest offset, retained frames and expiry.
struct Log {
    epoch: String,
    offset: u64,
    messages: VecDeque<(u64, Utf8Bytes)>,
    expires: Instant,
}

impl MemoryBroker {
    /// A broker whose every part is this one in-memory store.
    pub(crate) fn start(sink: Arc<dyn Sink>) -> Broker {
        let broker = Arc::new(Self::new(sink));
        Broker {
            publisher: broker.clone(),
            subscriber: broker.clone(),
            history: broker.clone(),
            presence: broker.clone(),
            directory: broker,
        }
    }

    pub(crate) fn new(sink: Arc<dyn Sink>) -> Self {
        Self { sink, histories: Mutex::default(), presence: Mutex::default(), node: Mutex::default() }
    }
}

/// Groups tracked before expired histories are swept out.
const SWEEP_ABOVE: usize = 1024;

/// The group's history, started afresh (new epoch) if it has none or it expired.
fn live<'a>(histories: &'a mut HashMap<GroupName, Log>, group: &GroupName, ttl: Duration) -> &'a mut Log {
    let now = Instant::now();
    if histories.len() >= SWEEP_ABOVE && !histories.contains_key(group) {
        histories.retain(|_, h| h.expires > now);
    }
    let history = histories.entry(group.clone()).or_insert_with(|| Log {
        epoch: new_epoch(),
        offset: 0,
        messages: VecDeque::new(),
        expires: now + ttl,
    });
    if history.expires <= now {
        *history = Log { epoch: new_epoch(), offset: 0, messages: VecDeque::new(), expires: now + ttl };
    }
    history
}

impl Publisher for MemoryBroker {
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()> {
        // Groups without local members are dropped by the sink, as Redis drops them.
        self.sink.deliver(group.as_str(), frame);
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
    ) -> Answer<'a, ()> {
        let Some(policy) = history else { return publish_plain(self, group, data) };
        let parts = MessageParts::new(group, data);
        let mut histories = lock(&self.histories);
        let history = live(&mut histories, group, policy.ttl);
        history.offset += 1;
        let frame = parts.finish(history.offset, &history.epoch);
        history.messages.push_back((history.offset, frame.clone()));
        while history.messages.len() > policy.size {
            history.messages.pop_front();
        }
        history.expires = Instant::now() + policy.ttl;
        // Delivered under the lock, so offsets reach members in order.
        self.sink.deliver(group.as_str(), frame);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Subscriber for MemoryBroker {
    fn subscribe(&self, _group: &GroupName) -> Subscription {
        Subscription::confirmed()
    }

    fn unsubscribe(&self, _group: &GroupName) {}

    fn is_ready(&self) -> bool {
        true
    }
}

impl History for MemoryBroker {
    fn read<'a>(
        &'a self,
        group: &'a GroupName,
        since: u64,
        limit: usize,
        policy: HistoryPolicy,
    ) -> Answer<'a, HistorySlice> {
        let mut histories = lock(&self.histories);
        let history = live(&mut histories, group, policy.ttl);
        let slice = HistorySlice {
            position: Position { offset: history.offset, epoch: history.epoch.clone() },
            first: history.messages.front().map_or(0, |(offset, _)| *offset),
            messages: history
                .messages
                .iter()
                .filter(|(offset, _)| *offset > since)
                .take(limit)
                .cloned()
                .collect(),
        };
        Box::pin(std::future::ready(Ok(slice)))
    }
}

impl Presence for MemoryBroker {
    fn set<'a>(&'a self, group: &'a GroupName, clients: &'a [ClientInfo], _ttl: Duration) -> Answer<'a, ()> {
        let mut presence = lock(&self.presence);
        let entries = presence.entry(group.clone()).or_default();
        for client in clients {
            entries.insert(client.client.clone(), client.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()> {
        let mut presence = lock(&self.presence);
        if let Some(entries) = presence.get_mut(group) {
            entries.remove(client);
            if entries.is_empty() {
                presence.remove(group);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn list<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>> {
        let clients =
            lock(&self.presence).get(group).map(|e| e.values().cloned().collect()).unwrap_or_default();
        Box::pin(std::future::ready(Ok(clients)))
    }
}

impl Directory for MemoryBroker {
    fn announce<'a>(&'a self, node: &'a NodeInfo, _ttl: Duration) -> Answer<'a, ()> {
        *lock(&self.node) = Some(node.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn nodes(&self) -> Answer<'_, Vec<NodeInfo>> {
        let nodes = lock(&self.node).iter().cloned().collect();
        Box::pin(std::future::ready(Ok(nodes)))
    }
}
