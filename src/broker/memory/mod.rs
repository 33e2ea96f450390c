//! In-process broker for standalone mode and tests: one instance, no network.
//!
//! Publishing hands the frame straight to the local sink, so the [`Broker`] contract holds
//! trivially: every subscription is in effect at once and order is the publisher's call order.
//! History and presence live in maps with the same semantics as the Redis broker (offsets,
//! epochs, trimming, expiry); presence needs no expiry, since a crash takes every entry with it.

mod logs;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{
    Answer, Broker, BrokerError, Directory, History, HistoryPolicy, HistoryState, NodeInfo, ONCE_WINDOW,
    Outgoing, Page, Presence, Publisher, Sink, Subscriber, Subscription, publish_plain,
};
use crate::group::GroupName;
use crate::lock;
use crate::protocol::{ClientInfo, MessageParts};
use logs::Logs;

/// Every part of the broker contract, in this process's memory.
pub(crate) struct MemoryBroker {
    sink: Arc<dyn Sink>,
    logs: Mutex<Logs>,
    /// The groups the hub subscribed (all local: there is one instance).
    subscribed: Mutex<HashSet<GroupName>>,
    /// Ids given to `publish_once` within its window.
    once: Mutex<Once>,
    presence: Mutex<HashMap<GroupName, BTreeMap<String, ClientInfo>>>,
    /// The one node there is, once announced.
    node: Mutex<Option<NodeInfo>>,
}

impl MemoryBroker {
    /// A broker whose every part is this one in-memory store.
    pub(crate) fn start(sink: Arc<dyn Sink>) -> Broker {
        let broker = Arc::new(Self {
            sink,
            logs: Mutex::new(Logs::new()),
            subscribed: Mutex::default(),
            once: Mutex::default(),
            presence: Mutex::default(),
            node: Mutex::default(),
        });
        Broker {
            publisher: broker.clone(),
            subscriber: broker.clone(),
            history: broker.clone(),
            presence: broker.clone(),
            directory: broker,
        }
    }
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
        let mut logs = lock(&self.logs);
        let frame = logs.append(group, &parts, policy);
        // Delivered under the lock, so offsets reach members in order.
        self.sink.deliver(group.as_str(), frame);
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish_all<'a>(&'a self, batch: &'a [Outgoing<'a>]) -> Answer<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(batch.len());
            for message in batch {
                results.push(self.publish(message.group, message.data, message.history).await);
            }
            Ok(results)
        })
    }

    fn publish_once<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
        id: &'a str,
    ) -> Answer<'a, bool> {
        if !lock(&self.once).first_time(group, id) {
            return Box::pin(std::future::ready(Ok(false)));
        }
        Box::pin(async move { self.publish(group, data, history).await.map(|()| true) })
    }
}

/// The ids `publish_once` saw within its window: a set to look them up, and a queue, oldest
/// first, to forget them on time.
#[derive(Default)]
struct Once {
    seen: HashSet<(GroupName, String)>,
    order: VecDeque<(Instant, (GroupName, String))>,
}

impl Once {
    /// Records `id` for `group`; false if it was seen within the window.
    fn first_time(&mut self, group: &GroupName, id: &str) -> bool {
        let now = Instant::now();
        while let Some((_, key)) = self.order.front().filter(|(at, _)| now.duration_since(*at) > ONCE_WINDOW)
        {
            self.seen.remove(key);
            self.order.pop_front();
        }
        let key = (group.clone(), id.to_string());
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }
}

impl Subscriber for MemoryBroker {
    fn subscribe(&self, group: &GroupName) -> Subscription {
        lock(&self.subscribed).insert(group.clone());
        Subscription::confirmed()
    }

    fn unsubscribe(&self, group: &GroupName) {
        lock(&self.subscribed).remove(group);
    }

    fn is_ready(&self) -> bool {
        true
    }
}

impl History for MemoryBroker {
    fn state<'a>(&'a self, group: &'a GroupName) -> Answer<'a, HistoryState> {
        Box::pin(std::future::ready(Ok(lock(&self.logs).state(group))))
    }

    fn read<'a>(
        &'a self,
        group: &'a GroupName,
        epoch: &'a str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Answer<'a, Option<Page>> {
        Box::pin(std::future::ready(Ok(lock(&self.logs).read(group, epoch, after, limit, max_bytes))))
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

    fn refresh<'a>(&'a self, groups: &'a [(GroupName, Vec<ClientInfo>)], _ttl: Duration) -> Answer<'a, ()> {
        let mut presence = lock(&self.presence);
        for (group, clients) in groups {
            let entries = presence.entry(group.clone()).or_default();
            entries.extend(clients.iter().map(|c| (c.client.clone(), c.clone())));
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

    fn groups(&self) -> Answer<'_, Vec<GroupName>> {
        let subscribed = lock(&self.subscribed);
        let groups = subscribed.iter().filter(|g| !GroupName::is_reserved(g.as_str())).cloned().collect();
        Box::pin(std::future::ready(Ok(groups)))
    }
}
