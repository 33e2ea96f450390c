//! Joining and leaving groups: recovery from history, presence entries, join/leave events.
//!
//! Subscribing to a group with history goes through a [`Gate`]: the member joins with live
//! frames held back, the session reads where the group's history stands (after the
//! subscription is confirmed, so nothing falls between the two), answers with the position
//! (and whether `since` is covered), then catches the member up: it sends the missed messages
//! and opens the gate, which drops live frames the history already delivered.
//!
//! A `subscribe … since` for a group the client is in already (it joined through its route, say)
//! recovers too, as long as that can keep the order: when nothing of the group was sent to it
//! since it joined, or when it already has everything it was not sent.

use std::sync::Arc;

use serde_json::json;

use super::Session;
use crate::broker::{BrokerError, HistoryPolicy, Plan, Position};
use crate::gateway::live::Order;
use crate::group::GroupName;
use crate::hooks::webhooks::Change;
use crate::hooks::{HookError, SubscribeRequest};
use crate::hub::{Catching, Gate, Pace, Reached, catch_up};
use crate::protocol::{self, ErrorCode, RequestError, Since};

/// Who asked for a subscription, and so whether a reply is owed and with which id.
#[derive(Clone, Copy)]
pub(super) enum Asked {
    /// A `subscribe` request: it gets a reply.
    Client(Option<u64>),
    /// The groups the connection's URL names (a WebSocket route's, an SSE stream's `groups`):
    /// checked like a `subscribe`; every join is told with a `subscribed` frame (with the
    /// position in groups with history) or, when it recovers, a `recovered` frame, so the
    /// client knows when it is in and where it stands; a refusal is an `error` frame without
    /// an id.
    Route,
    /// The backend (its connect hook): trusted, so neither the client's permissions nor the
    /// subscribe hook are asked, but `max_groups_per_client` holds. The client is told with a
    /// `subscribed` frame.
    Server,
}

impl Asked {
    fn id(self) -> Option<u64> {
        match self {
            Asked::Client(id) => id,
            Asked::Route | Asked::Server => None,
        }
    }
}

pub(super) fn unavailable(e: BrokerError) -> RequestError {
    RequestError::new(None, ErrorCode::Unavailable, e.to_string())
}

/// A hook's refusal as the client's error: `forbidden` with the backend's reason, or
/// `unavailable` when the backend failed.
pub(super) fn refusal(e: HookError) -> RequestError {
    match e {
        HookError::Unauthorized(reason) | HookError::Forbidden(reason) => {
            RequestError::new(None, ErrorCode::Forbidden, reason)
        }
        HookError::Unavailable(_) => RequestError::new(None, ErrorCode::Unavailable, "backend unavailable"),
    }
}

impl Session {
    /// Joins `group` and answers (a reply, then any recovered messages). What only some joins
    /// do (ask the subscribe hook, read history) is boxed: a future is as large as its largest
    /// state, and a plain join would otherwise move and allocate kilobytes it never uses.
    pub(super) async fn subscribe(
        &mut self,
        asked: Asked,
        group: GroupName,
        since: Option<Since>,
    ) -> Result<(), RequestError> {
        let id = asked.id();
        let gateway = self.gateway.clone();
        let namespace = gateway.config.namespace(group.namespace());
        let history = HistoryPolicy::of(namespace);
        if since.is_some() && history.is_none() {
            let message = format!("{group} has no history: subscribe without since");
            return Err(RequestError::new(id, ErrorCode::BadRequest, message));
        }
        if let Some(gate) = self.groups.gate(&group) {
            return match (gate.clone(), history, since) {
                (Some(gate), Some(policy), Some(since)) => {
                    Box::pin(self.recover_member(asked, &group, gate, policy, since)).await
                }
                _ => {
                    self.reply(asked, None).await;
                    Ok(())
                }
            };
        }
        if !matches!(asked, Asked::Server) {
            self.check_subscribe(&group).map_err(|e| RequestError { id, ..e })?;
        }
        if self.groups.len() >= gateway.config.max_groups_per_client {
            let message =
                format!("already in max_groups_per_client ({}) groups", gateway.config.max_groups_per_client);
            return Err(RequestError::new(id, ErrorCode::Forbidden, message));
        }
        if namespace.subscribe_proxy && !matches!(asked, Asked::Server) {
            Box::pin(self.ask_subscribe_hook(&group, since.as_ref()))
                .await
                .map_err(|e| RequestError { id, ..e })?;
        }
        let gate = history.map(|policy| (Arc::new(Gate::holding(gateway.config.outbound_queue)), policy));
        gateway.hub.join(&group, self.id, &self.outbox, gate.clone()).await.map_err(unavailable)?;
        self.groups.insert(group.clone(), gate.as_ref().map(|(gate, _)| gate.clone()));
        gateway.metrics.subscriptions.inc();
        match gate {
            Some((gate, policy)) => {
                if let Err(e) = Box::pin(self.catch_up_joined(asked, &group, since, policy, gate)).await {
                    // Nobody was told of the join: leave as quietly.
                    self.forget(&group);
                    return Err(e);
                }
            }
            None => match asked {
                Asked::Server | Asked::Route => self.send(protocol::subscribed(&group, None)).await,
                _ => self.reply(asked, None).await,
            },
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
        gateway.track(|| Change::Join {
            client: self.info.client.clone(),
            user: self.info.user.clone(),
            group: group.to_string(),
        });
        Ok(())
    }

    /// Answers with the group's position (and whether `since` is covered), then sends what
    /// the member missed and lets its live frames through.
    async fn catch_up_joined(
        &self,
        asked: Asked,
        group: &GroupName,
        since: Option<Since>,
        policy: HistoryPolicy,
        gate: Arc<Gate>,
    ) -> Result<(), RequestError> {
        let gateway = &self.gateway;
        let history = &*gateway.hub.broker().history;
        let state =
            history.state(group).await.map_err(|e| RequestError { id: asked.id(), ..unavailable(e) })?;
        let position = state.position();
        let plan = since.as_ref().map(|since| state.plan(since, policy.ttl));
        let recovered = plan.as_ref().map(|plan| matches!(plan, Plan::Recover { .. }));
        self.answer_position(asked, group, &position, recovered).await;
        let seen = match plan {
            Some(Plan::Recover { after }) => Since { offset: after, epoch: position.epoch.clone() },
            Some(Plan::Lost) => {
                gateway.metrics.catch_up("lost");
                Since { offset: position.offset, epoch: position.epoch.clone() }
            }
            None => Since { offset: position.offset, epoch: position.epoch.clone() },
        };
        let member = Catching { outbox: self.outbox.clone(), gate, seen };
        catch_up(history, &gateway.metrics, group, policy, vec![member], Some(state), Pace::Wait).await;
        Ok(())
    }

    /// `subscribe … since` for a group the client is in: what it lacks is what it missed
    /// before it joined. Recovered in order only while nothing newer was sent to it.
    async fn recover_member(
        &self,
        asked: Asked,
        group: &GroupName,
        gate: Arc<Gate>,
        policy: HistoryPolicy,
        since: Since,
    ) -> Result<(), RequestError> {
        match gate.reached() {
            Some(Reached { last, joined }) if since.epoch == last.epoch && since.offset >= joined => {
                // It has everything up to where it joined, and was sent the rest.
                self.answer_position(asked, group, &last, Some(true)).await;
                Ok(())
            }
            Some(Reached { last, joined }) if last.offset == joined && gate.hold().is_some() => {
                // Nothing sent since it joined: catch it up from `since`, as for a new member.
                self.catch_up_joined(asked, group, Some(since), policy, gate).await
            }
            Some(Reached { last, .. }) => {
                self.gateway.metrics.catch_up("lost");
                self.answer_position(asked, group, &last, Some(false)).await;
                Ok(())
            }
            None => {
                // Being caught up after a gap right now: where it ends up is not known yet.
                let state = self.gateway.hub.broker().history.state(group).await.map_err(unavailable)?;
                self.gateway.metrics.catch_up("lost");
                self.answer_position(asked, group, &state.position(), Some(false)).await;
                Ok(())
            }
        }
    }

    /// Tells the client where the group stands: in the reply to its `subscribe`, for a route
    /// join with `since` in a `recovered` frame, otherwise in a `subscribed` frame.
    async fn answer_position(&self, asked: Asked, group: &GroupName, at: &Position, recovered: Option<bool>) {
        match (asked, recovered) {
            (Asked::Server, _) | (Asked::Route, None) => {
                self.send(protocol::subscribed(group, Some((at.offset, &at.epoch)))).await;
            }
            (Asked::Client(_), _) => {
                let mut result = json!({ "offset": at.offset, "epoch": at.epoch });
                if let Some(recovered) = recovered {
                    result["recovered"] = json!(recovered);
                }
                self.reply(asked, Some(&result)).await;
            }
            (Asked::Route, Some(recovered)) => {
                self.send(protocol::recovered(group, recovered, at.offset, &at.epoch)).await;
            }
        }
    }

    async fn reply(&self, asked: Asked, result: Option<&serde_json::Value>) {
        if let Asked::Client(id) = asked {
            self.send(protocol::reply(id, result)).await;
        }
    }

    /// Joins the groups the backend put the client in; failures are reported as `error`
    /// frames without an id.
    pub(super) async fn join_assigned(&mut self, groups: Vec<GroupName>) {
        for group in groups {
            if let Err(e) = self.subscribe(Asked::Server, group, None).await {
                self.send_error(&e).await;
            }
        }
    }

    /// Carries out the backend's orders (the control API), in the order they were given, and
    /// answers each: whether the membership changed, or the groups the session is in.
    pub(super) async fn obey(&mut self) {
        for order in self.gateway.live.orders(self.id) {
            match order {
                Order::Subscribe(group, done) => {
                    let joined = self.groups.gate(&group).is_none()
                        && match self.subscribe(Asked::Server, group, None).await {
                            Ok(()) => true,
                            Err(e) => {
                                self.send_error(&e).await;
                                false
                            }
                        };
                    let _ = done.send(joined);
                }
                Order::Unsubscribe(group, done) => {
                    let member = self.groups.gate(&group).is_some();
                    if member {
                        self.unsubscribe(&group).await;
                        self.send(protocol::unsubscribed(&group, "server")).await;
                    }
                    let _ = done.send(member);
                }
                Order::Describe(done) => {
                    let _ = done.send(self.groups.names().cloned().collect());
                }
            }
        }
    }

    /// The subscribe hook of a namespace with `subscribe_proxy`.
    async fn ask_subscribe_hook(&self, group: &GroupName, since: Option<&Since>) -> Result<(), RequestError> {
        let hooks =
            self.gateway.hooks.as_ref().expect("subscribe_proxy is validated to have a subscribe_url");
        let request = SubscribeRequest {
            client: &self.info.client,
            user: self.info.user.as_deref(),
            group: group.as_str(),
            since,
        };
        hooks.subscribe(&request).await.map_err(refusal)
    }

    /// Leaves `group` if the session is in it.
    pub(super) async fn unsubscribe(&mut self, group: &GroupName) {
        if self.groups.remove(group).is_some() {
            self.leave(group).await;
        }
    }

    /// Leaves every joined group (the last member out unsubscribes the instance).
    pub(super) async fn leave_all(&mut self) {
        for (group, _) in std::mem::take(&mut self.groups).0 {
            self.leave(&group).await;
        }
    }

    /// Leaves groups the client may no longer be in (its identity changed), telling it so.
    pub(super) async fn leave_forbidden(&mut self) {
        let forbidden: Vec<GroupName> =
            self.groups.names().filter(|group| self.check_subscribe(group).is_err()).cloned().collect();
        for group in forbidden {
            self.unsubscribe(&group).await;
            self.send(protocol::unsubscribed(&group, "forbidden")).await;
        }
    }

    /// Leaves `group` without presence or a leave event: the join was never announced.
    fn forget(&mut self, group: &GroupName) {
        if self.groups.remove(group).is_some() {
            self.gateway.hub.leave(group, self.id);
            self.gateway.metrics.subscriptions.dec();
        }
    }

    async fn leave(&self, group: &GroupName) {
        let gateway = &self.gateway;
        gateway.hub.leave(group, self.id);
        gateway.track(|| Change::Leave { client: self.info.client.clone(), group: group.to_string() });
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

/// The groups a session is in, with the member's gate where the group has history. A short list
/// (at most `max_groups_per_client`): searched in place, it takes less memory per session than
/// a map, and most sessions are in one or two groups.
#[derive(Default)]
pub(super) struct Joined(Vec<(GroupName, Option<Arc<Gate>>)>);

impl Joined {
    fn gate(&self, group: &GroupName) -> Option<&Option<Arc<Gate>>> {
        self.0.iter().find(|(g, _)| g == group).map(|(_, gate)| gate)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, group: GroupName, gate: Option<Arc<Gate>>) {
        match self.0.iter_mut().find(|(g, _)| *g == group) {
            Some(entry) => entry.1 = gate,
            None => self.0.push((group, gate)),
        }
    }

    fn remove(&mut self, group: &GroupName) -> Option<Option<Arc<Gate>>> {
        let at = self.0.iter().position(|(g, _)| g == group)?;
        Some(self.0.swap_remove(at).1)
    }

    fn names(&self) -> impl Iterator<Item = &GroupName> {
        self.0.iter().map(|(group, _)| group)
    }
}
