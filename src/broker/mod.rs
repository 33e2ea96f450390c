//! Brokers carry published frames between gateway instances.
//!
//! A [`Broker`] is chosen once, in `main`, from config: [`memory::MemoryBroker`] when no
//! `redis_url` is set (one instance only), [`redis::RedisBroker`] otherwise. Both hand every
//! message of a subscribed group to the instance's [`Sink`] (the hub's registry), which fans it
//! out to local members.
//!
//! # Delivery contract
//!
//! - **At most once.** A message published while an instance is not subscribed to its group (or
//!   while the broker connection is down) is not delivered to that instance, and is never
//!   delivered twice.
//! - **Ordered per publisher and group.** Frames that one publisher hands to [`Broker::publish`]
//!   one after the other (each awaited) reach every subscribed instance in that order.
//! - **One subscription per group per instance.** [`Broker::subscribe`] and
//!   [`Broker::unsubscribe`] are called by the hub only on the first join and after the last
//!   leave of a group; calls for one group are applied in the order they were made. After a
//!   reconnect the broker re-establishes every subscription that is still wanted, without any
//!   action from the hub or the clients.
//! - **O(1) broker work per message.** A publish is one broker operation whatever the number of
//!   subscribers or instances; the frame travels as the exact bytes every client receives.
//!
//! # History (recovery)
//!
//! For a group published with a [`HistoryPolicy`], one atomic step assigns the next offset
//! (strictly increasing by one per group), appends the frame to the group's history (trimmed to
//! `size`, expiring `ttl` after the last publish) and publishes it; the frame carries `offset`
//! and `epoch`. The epoch changes whenever the history is lost (expired, or Redis restarted
//! without persistence), so a client can tell "nothing missed" from "history gone".
//! [`Broker::history`] reads the retained messages after an offset; the hub merges them with the
//! live stream by offset, so a recovering client sees every message once, in order.
//!
//! # Presence
//!
//! Presence entries are stored per group with an expiry; each instance refreshes its own
//! entries, so those of a crashed instance vanish within the TTL.

pub mod memory;
pub mod redis;

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::group::GroupName;
use crate::protocol::{self, ClientInfo};

/// What a broker call resolves to.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, BrokerError>>;

/// History kept for a group: the last `size` messages, for `ttl` after the last publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    pub size: usize,
    pub ttl: Duration,
}

/// Where a group's history stands: the offset of its newest message (0 before the first) and
/// the epoch that offset belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// Retained messages of a group after some offset, oldest first.
#[derive(Debug, Clone)]
pub struct HistorySlice {
    pub position: Position,
    /// The oldest offset still retained (0 when none is).
    pub first: u64,
    /// `(offset, frame)` pairs.
    pub messages: Vec<(u64, Utf8Bytes)>,
}

impl HistorySlice {
    /// Whether every message after `since` of `epoch` is still retained (or none was missed).
    pub fn covers(&self, since: u64, epoch: &str) -> bool {
        let top = self.position.offset;
        epoch == self.position.epoch
            && since <= top
            && (since == top || (self.first != 0 && self.first <= since + 1))
    }
}

/// A gateway instance as the cluster sees it (`GET /api/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub version: String,
    /// Unix seconds.
    pub started_at: u64,
    pub connections: u64,
    pub subscriptions: u64,
    pub groups: u64,
}

/// A fresh random epoch; a broker proposes one with every write that may start a history.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Errors a broker reports to publishers and subscribers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached right now; the caller may retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where a broker delivers the messages of subscribed groups.
pub trait Sink: Send + Sync + 'static {
    /// Hands one encoded client frame for `group` to the instance. Must not block: it runs on
    /// the broker's reader, which every group of the instance shares.
    fn deliver(&self, group: &str, frame: Utf8Bytes);
}

/// The publishing half of a broker: all a scheduler needs.
pub trait Publisher: Send + Sync + 'static {
    /// Sends an encoded frame to every instance subscribed to `group`; it is not kept.
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()>;

    /// Publishes `data` as a `message` frame, appended to the group's history when `history`
    /// is given (the frame then carries its offset and epoch).
    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
    ) -> Answer<'a, ()>;
}

/// A [`Publisher::publish`] without history: the frame is built once and broadcast.
fn publish_plain<'a, P: Publisher + ?Sized>(
    publisher: &'a P,
    group: &'a GroupName,
    data: &RawValue,
) -> Answer<'a, ()> {
    publisher.broadcast(group, protocol::message(group, data))
}

/// A publish/subscribe backend shared by every instance of a deployment.
pub trait Broker: Publisher {
    /// Starts this instance's subscription to `group`. Never blocks, so the hub can call it
    /// under its lock and keep subscribe/unsubscribe calls for a group in order; the returned
    /// [`Subscription`] resolves once messages of the group are being received.
    fn subscribe(&self, group: &GroupName) -> Subscription;

    /// Ends this instance's subscription to `group`. Never blocks.
    fn unsubscribe(&self, group: &GroupName);

    /// Whether publishes and new subscriptions can currently succeed.
    fn is_ready(&self) -> bool;

    /// The group's retained messages after `since` (at most `limit`) and its current position.
    /// Starts the group's epoch if it has none yet, so the position is always meaningful.
    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        since: u64,
        limit: usize,
        policy: HistoryPolicy,
    ) -> Answer<'a, HistorySlice>;

    /// Adds (or refreshes) presence entries of `group` for `ttl`.
    fn presence_set<'a>(
        &'a self,
        group: &'a GroupName,
        clients: &'a [ClientInfo],
        ttl: Duration,
    ) -> Answer<'a, ()>;

    /// Removes one client's presence entry from `group`.
    fn presence_remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()>;

    /// Every live presence entry of `group`, across instances.
    fn presence<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>>;

    /// Announces this instance to the cluster for `ttl`.
    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> Answer<'a, ()>;

    /// Every instance announced within its TTL.
    fn nodes(&self) -> Answer<'_, Vec<NodeInfo>>;
}

/// Resolves once the broker confirms a subscription. Cheap to clone: every member that joins a
/// group while its subscription is in flight waits on the same confirmation.
#[derive(Clone)]
pub struct Subscription(watch::Receiver<bool>);

/// The broker's half of a [`Subscription`]: `confirm` it, or drop it to cancel.
pub struct Confirmation(watch::Sender<bool>);

impl Subscription {
    /// A subscription that is already in effect.
    pub fn confirmed() -> Self {
        Self(watch::channel(true).1)
    }

    /// A subscription waiting for the broker.
    pub fn pending() -> (Confirmation, Self) {
        let (tx, rx) = watch::channel(false);
        (Confirmation(tx), Self(rx))
    }

    /// Waits for the confirmation; fails if the broker cancelled the subscription.
    pub async fn wait(mut self) -> Result<(), BrokerError> {
        match self.0.wait_for(|confirmed| *confirmed).await {
            Ok(_) => Ok(()),
            Err(_) => Err(BrokerError::Unavailable("subscription was cancelled".into())),
        }
    }
}

impl Confirmation {
    pub fn confirm(self) {
        // Receivers read the value even after the sender is gone; none listening is fine too.
        let _ = self.0.send(true);
    }
}
