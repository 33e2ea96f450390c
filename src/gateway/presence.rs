//! This instance's presence entries, and the heartbeat that keeps them and the instance's own
//! announcement alive in the broker.
//!
//! Entries are written when a client joins a group with presence and removed when it leaves;
//! the heartbeat re-adds every local entry each third of `presence_ttl`, so they survive in
//! the broker exactly as long as this instance does (and come back after a Redis restart). The
//! same beat announces the instance and its counts for `GET /api/info`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Gateway;
use crate::group::GroupName;
use crate::protocol::ClientInfo;

#[derive(Default)]
pub(crate) struct LocalPresence {
    entries: Mutex<HashMap<GroupName, HashMap<String, ClientInfo>>>,
}

impl LocalPresence {
    fn lock(&self) -> MutexGuard<'_, HashMap<GroupName, HashMap<String, ClientInfo>>> {
        crate::lock(&self.entries)
    }

    pub(crate) fn add(&self, group: &GroupName, client: &ClientInfo) {
        self.lock().entry(group.clone()).or_default().insert(client.client.clone(), client.clone());
    }

    pub(crate) fn remove(&self, group: &GroupName, client: &str) {
        let mut entries = self.lock();
        if let Some(clients) = entries.get_mut(group) {
            clients.remove(client);
            if clients.is_empty() {
                entries.remove(group);
            }
        }
    }

    fn snapshot(&self) -> Vec<(GroupName, Vec<ClientInfo>)> {
        self.lock().iter().map(|(g, clients)| (g.clone(), clients.values().cloned().collect())).collect()
    }
}

/// Refreshes every local entry and the node's announcement a few times per TTL until the
/// gateway has stopped. Every group's entries go out together (pipelined), so a round takes a
/// few round trips whatever the number of groups; a round that still runs past its third of
/// the TTL is cut short and logged, and the next one starts on time.
pub(super) async fn heartbeat(gateway: Arc<Gateway>) {
    let ttl = gateway.config.presence_ttl;
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gateway.stopped.cancelled() => return,
            _ = tick.tick() => {}
        }
        if tokio::time::timeout(ttl / 3, beat(&gateway, ttl)).await.is_err() {
            tracing::warn!(?ttl, "presence heartbeat round took longer than a third of presence_ttl");
        }
    }
}

async fn beat(gateway: &Gateway, ttl: std::time::Duration) {
    let broker = gateway.hub.broker();
    if let Err(e) = broker.directory.announce(&gateway.node_info(), ttl).await {
        tracing::warn!(error = %e, "node announcement failed");
    }
    let groups = gateway.presence.snapshot();
    if let Err(e) = broker.presence.refresh(&groups, ttl).await {
        tracing::warn!(groups = groups.len(), error = %e, "presence heartbeat failed");
    }
}
