//! Joining and leaving groups: recovery from history, presence entries, join/leave events.
//!
//! Subscribing to a group with history goes through a [`Gate`]: the member joins with live
//! frames held back, the session reads the group's history (after the subscription is
//! confirmed, so nothing falls between the two), answers with the group's position, sends
//! the missed messages when they can all be recovered, and then opens the gate, which drops
//! live frames the history already delivered.

use std::sync::Arc;

use serde_json::json;

use super::Session;
use crate::broker::{BrokerError, HistoryPolicy, Position};
use crate::group::GroupName;
use crate::hub::Gate;
use crate::protocol::{self, ErrorCode, RequestError, Since};

/// Who asked for a subscription, and so whether a reply is owed and with which id.
#[derive(Clone, Copy)]
pub(super) enum Asked {
    /// A `subscribe` request: it gets a reply.
    Client(Option<u64>),
    /// The connection's route: nobody waits for a reply (errors are still sent).
    Route,
}

impl Asked {
    fn id(self) -> Option<u64> {
        match self {
            Asked::Client(id) => id,
            Asked::Route => None,
        }
    }
}

pub(super) fn unavailable(e: BrokerError) -> RequestError {
    RequestError::new(None, ErrorCode::Unavailable, e.to_string())
}

impl Session {
    /// Joins `group` and answers (a reply, then any recovered messages). Subscribing to a
    /// group the session is in already just replies.
    pub(super) async fn subscribe(
        &mut self,
        asked: Asked,
        group: GroupName,
        since: Option<Since>,
    ) -> Result<(), RequestError> {
        let id = asked.id();
        if self.groups.contains(&group) {
            self.reply(asked, None).await;
            return Ok(());
        }
        if !self.may_subscribe(&group) {
            let message = format!("this client may not subscribe to {group}");
            return Err(RequestError::new(id, ErrorCode::Forbidden, message));
        }
        let gateway = self.gateway.clone();
        if self.groups.len() >= gateway.config.max_groups_per_client {
            let message =
                format!("already in max_groups_per_client ({}) groups", gateway.config.max_groups_per_client);
            return Err(RequestError::new(id, ErrorCode::Forbidden, message));
        }
        let namespace = gateway.config.namespace(group.namespace());
        let history = HistoryPolicy::of(namespace);
        if since.is_some() && history.is_none() {
            let message = format!("{group} has no history: subscribe without since");
            return Err(RequestError::new(id, ErrorCode::BadRequest, message));
        }
        let gate = history.map(|_| Arc::new(Gate::holding(gateway.config.outbound_queue)));
        gateway.hub.join(&group, self.id, &self.outbox, gate.clone()).await.map_err(unavailable)?;
        self.groups.insert(group.clone());
        gateway.metrics.subscriptions.inc();
        match (history, gate) {
            (Some(policy), Some(gate)) => {
                if let Err(e) = self.recover(asked, &group, since, policy, &gate).await {
                    self.unsubscribe(&group).await;
                    return Err(e);
                }
            }
            _ => self.reply(asked, None).await,
        }
        if namespace.presence {
            gateway.presence.add(&group, &self.info);
            let added = gateway.hub.broker().presence.set(
                &group,
                std::slice::from_ref(&self.info),
                gateway.config.presence_ttl,
            );
            if let Err(e) = added.await {
                tracing::warn!(%group, error = %e, "could not add presence entry; the heartbeat will retry");
            }
        }
        if namespace.join_leave {
            self.announce(&group, protocol::join(&group, &self.info)).await;
        }
        Ok(())
    }

    /// Answers with the group's position, sends what the client missed if all of it is still
    /// there, and lets live frames through.
    async fn recover(
        &self,
        asked: Asked,
        group: &GroupName,
        since: Option<Since>,
        policy: HistoryPolicy,
        gate: &Gate,
    ) -> Result<(), RequestError> {
        // Without `since` only the position is needed.
        let (after, limit) = since.as_ref().map_or((0, 0), |s| (s.offset, policy.size));
        let broker = self.gateway.hub.broker();
        let slice = broker
            .history
            .read(group, after, limit, policy)
            .await
            .map_err(|e| RequestError { id: asked.id(), ..unavailable(e) })?;
        let Position { offset, epoch } = slice.position.clone();
        let mut result = json!({ "offset": offset, "epoch": epoch });
        let recovered = since.as_ref().is_some_and(|s| slice.covers(s.offset, &s.epoch));
        if since.is_some() {
            result["recovered"] = json!(recovered);
        }
        self.reply(asked, Some(&result)).await;
        if recovered {
            for (_, frame) in slice.messages {
                self.send(frame).await;
            }
        }
        gate.go_live(offset, &epoch, &self.outbox);
        Ok(())
    }

    async fn reply(&self, asked: Asked, result: Option<&serde_json::Value>) {
        if let Asked::Client(id) = asked {
            self.send(protocol::reply(id, result)).await;
        }
    }

    /// Leaves `group` if the session is in it.
    pub(super) async fn unsubscribe(&mut self, group: &GroupName) {
        if self.groups.remove(group) {
            self.leave(group).await;
        }
    }

    /// Leaves every joined group (the last member out unsubscribes the instance).
    pub(super) async fn leave_all(&mut self) {
        for group in std::mem::take(&mut self.groups) {
            self.leave(&group).await;
        }
    }

    async fn leave(&self, group: &GroupName) {
        let gateway = &self.gateway;
        gateway.hub.leave(group, self.id);
        gateway.metrics.subscriptions.dec();
        let namespace = gateway.config.namespace(group.namespace());
        if namespace.presence {
            gateway.presence.remove(group, &self.info.client);
            if let Err(e) = gateway.hub.broker().presence.remove(group, &self.info.client).await {
                tracing::warn!(%group, error = %e, "could not remove presence entry; it will expire");
            }
        }
        if namespace.join_leave {
            self.announce(group, protocol::leave(group, &self.info)).await;
        }
    }

    async fn announce(&self, group: &GroupName, frame: axum::extract::ws::Utf8Bytes) {
        if let Err(e) = self.gateway.hub.broker().publisher.broadcast(group, frame).await {
            tracing::warn!(%group, error = %e, "could not send a join/leave event");
        }
    }
}
