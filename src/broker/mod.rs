//! Brokers carry published frames between gateway instances and keep what instances share.
//!
//! The contract is split along what backends actually differ in, one narrow trait each, so a
//! backend implements small pieces and a test double implements only what its test needs:
//!
//! - [`Publisher`]: send a frame to a group on every instance, optionally appending it to the
//!   group's history in the same atomic step. All a scheduler needs.
//! - [`Subscriber`]: this instance's subscriptions; messages arrive at the instance's [`Sink`].
//! - [`History`]: read a group's retained messages for recovery.
//! - [`Presence`]: who is subscribed to a group, across instances, with expiry.
//! - [`Directory`]: which instances are alive.
//!
//! A [`Broker`] bundles one backend's implementations. It is chosen once, from config:
//! [`memory`] when no Redis is configured (one instance only), [`redis`] otherwise (one server,
//! Sentinel or Cluster).
//!
//! # Delivery contract (Publisher + Subscriber)
//!
//! - **At most once.** A message published while an instance is not subscribed to its group (or
//!   while the broker connection is down) is not delivered to that instance, and is never
//!   delivered twice. Groups with history close that gap: their members recover from history.
//! - **Ordered per publisher and group.** Frames that one publisher hands to [`Publisher`] one
//!   after the other (each awaited) reach every subscribed instance in that order.
//! - **One subscription per group per instance.** [`Subscriber::subscribe`] and
//!   [`Subscriber::unsubscribe`] are called by the hub only on the first join and after the last
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
//! [`History::state`] says where a group stands and [`Plan`] whether a client can be brought up
//! to date; [`Missed`] then reads exactly the missing offsets, in bounded pages. The hub merges
//! them with the live stream by offset, so a recovering client sees every message once, in order.
//!
//! # Presence and the directory
//!
//! Entries are stored with an expiry; each instance refreshes its own, so those of a crashed
//! instance vanish within the TTL.

pub(crate) mod history;
pub(crate) mod memory;
pub(crate) mod redis;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::protocol::{self, ClientInfo};

pub(crate) use history::{HistoryPolicy, HistoryState, Missed, MissedError, Page, Plan, Position};

/// What a broker call resolves to.
pub(crate) type Answer<'a, T> = BoxFuture<'a, Result<T, BrokerError>>;

/// Errors a broker reports to publishers and subscribers.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BrokerError {
    /// The broker cannot be reached right now; the caller may retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::redis::Unavailable> for BrokerError {
    fn from(e: crate::redis::Unavailable) -> Self {
        Self::Unavailable(e.0)
    }
}

/// A gateway instance as the cluster sees it (`GET /api/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct NodeInfo {
    pub(crate) node: String,
    pub(crate) version: String,
    /// Unix seconds.
    pub(crate) started_at: u64,
    pub(crate) connections: u64,
    pub(crate) subscriptions: u64,
    pub(crate) groups: u64,
}

/// A fresh random epoch; a broker proposes one with every write that may start a history.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Where a broker delivers the messages of subscribed groups.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Hands one encoded client frame for `group` to the instance. Must not block: it runs on
    /// the broker's reader, which every group of the instance shares.
    fn deliver(&self, group: &str, frame: Utf8Bytes);

    /// The broker lost its subscription to `groups` (a lost connection, a failover, the groups'
    /// slot moved to another shard) and has just subscribed them again: messages published in
    /// between were not delivered. Called before any message of the new subscription; must not
    /// block.
    fn resumed(&self, groups: &[GroupName]);
}

/// The publishing half of a broker.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Sends an encoded frame to every instance subscribed to `group`; it is not kept.
    fn broadcast<'a>(&'a self, group: &'a GroupName, frame: Utf8Bytes) -> Answer<'a, ()>;

    /// Publishes `data` as a `message` frame, appended to the group's history when `history`
    /// is given (the frame then carries its offset and epoch), in one atomic step.
    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
    ) -> Answer<'a, ()>;

    /// [`Publisher::publish`], unless a message with the same `id` was published to `group`
    /// within the last [`ONCE_WINDOW`]: then nothing. Returns whether it published. The check and
    /// the publish are one atomic step, so whoever retries a publish it may have made already (a
    /// bridge leader taking over) repeats nothing.
    fn publish_once<'a>(
        &'a self,
        group: &'a GroupName,
        data: &'a RawValue,
        history: Option<HistoryPolicy>,
        id: &'a str,
    ) -> Answer<'a, bool>;

    /// Publishes a batch, each message as [`Publisher::publish`] would, in order, in as few
    /// round trips as the backend allows (one pipeline on Redis); one result per message.
    fn publish_all<'a>(&'a self, batch: &'a [Outgoing<'a>]) -> Answer<'a, Vec<Result<(), BrokerError>>>;
}

/// One message of a batch given to [`Publisher::publish_all`].
pub(crate) struct Outgoing<'a> {
    pub(crate) group: &'a GroupName,
    pub(crate) data: &'a RawValue,
    pub(crate) history: Option<HistoryPolicy>,
}

/// How long [`Publisher::publish_once`] remembers an id.
pub(crate) const ONCE_WINDOW: Duration = Duration::from_secs(60);

/// A [`Publisher::publish`] without history: the frame is built once and broadcast.
fn publish_plain<'a, P: Publisher + ?Sized>(
    publisher: &'a P,
    group: &'a GroupName,
    data: &RawValue,
) -> Answer<'a, ()> {
    publisher.broadcast(group, protocol::message(group, data))
}

/// This instance's group subscriptions; messages of subscribed groups reach its [`Sink`].
pub(crate) trait Subscriber: Send + Sync + 'static {
    /// Starts this instance's subscription to `group`. Never blocks, so the hub can call it
    /// under its lock and keep subscribe/unsubscribe calls for a group in order; the returned
    /// [`Subscription`] resolves once messages of the group are being received.
    fn subscribe(&self, group: &GroupName) -> Subscription;

    /// Ends this instance's subscription to `group`. Never blocks.
    fn unsubscribe(&self, group: &GroupName);

    /// Whether publishes and new subscriptions can currently succeed.
    fn is_ready(&self) -> bool;

    /// Whether messages arrive faster than this instance fans them out (its backlog from the
    /// broker is more than half full).
    fn is_behind(&self) -> bool {
        false
    }
}

/// Reading groups' retained messages. Reads create no state: a flood of subscribes to new group
/// names costs nothing in the broker.
pub(crate) trait History: Send + Sync + 'static {
    /// Where the group's history stands, read atomically.
    fn state<'a>(&'a self, group: &'a GroupName) -> Answer<'a, HistoryState>;

    /// Retained messages of `epoch` after offset `after`, oldest first: at most `limit`, and no
    /// more once `max_bytes` were taken (at least one when any is retained). `None` when the
    /// group's history is no longer `epoch`.
    fn read<'a>(
        &'a self,
        group: &'a GroupName,
        epoch: &'a str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Answer<'a, Option<Page>>;
}

/// Who is subscribed to a group, across instances.
pub(crate) trait Presence: Send + Sync + 'static {
    /// Adds (or refreshes) entries of `group` for `ttl`.
    fn set<'a>(&'a self, group: &'a GroupName, clients: &'a [ClientInfo], ttl: Duration) -> Answer<'a, ()>;

    /// Refreshes every entry of many groups for `ttl` (an instance's heartbeat), in as few
    /// round trips as the backend allows.
    fn refresh<'a>(&'a self, groups: &'a [(GroupName, Vec<ClientInfo>)], ttl: Duration) -> Answer<'a, ()>;

    /// Removes one client's entry from `group`.
    fn remove<'a>(&'a self, group: &'a GroupName, client: &'a str) -> Answer<'a, ()>;

    /// Every live entry of `group`.
    fn list<'a>(&'a self, group: &'a GroupName) -> Answer<'a, Vec<ClientInfo>>;
}

/// The live gateway instances of the deployment.
pub(crate) trait Directory: Send + Sync + 'static {
    /// Announces this instance to the cluster for `ttl`.
    fn announce<'a>(&'a self, node: &'a NodeInfo, ttl: Duration) -> Answer<'a, ()>;

    /// Every instance announced within its TTL.
    fn nodes(&self) -> Answer<'_, Vec<NodeInfo>>;

    /// Every group some instance of the deployment is subscribed to right now (Herald's own
    /// reserved groups aside).
    fn groups(&self) -> Answer<'_, Vec<GroupName>>;
}

/// One backend's implementation of every part of the contract, for one gateway instance.
#[derive(Clone)]
pub(crate) struct Broker {
    pub(crate) publisher: Arc<dyn Publisher>,
    pub(crate) subscriber: Arc<dyn Subscriber>,
    pub(crate) history: Arc<dyn History>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) directory: Arc<dyn Directory>,
}

impl Broker {
    /// The backend `config` names: Redis when it names one, else in-memory. Messages of
    /// subscribed groups go to `sink`; the Redis subscriber runs until `shutdown`.
    pub(crate) fn from_config(
        config: &Config,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        match config.redis() {
            Some(target) => redis::start(&target, &config.redis_prefix, sink, shutdown, metrics),
            None => Ok(memory::MemoryBroker::start(sink)),
        }
    }
}

/// Resolves once the broker confirms a subscription. Cheap to clone: every member that joins a
/// group while its subscription is in flight waits on the same confirmation.
#[derive(Clone)]
pub(crate) struct Subscription(watch::Receiver<bool>);

/// The broker's half of a [`Subscription`]: `confirm` it, or drop it to cancel.
pub(crate) struct Confirmation(watch::Sender<bool>);

impl Subscription {
    /// A subscription that is already in effect.
    pub(crate) fn confirmed() -> Self {
        Self(watch::channel(true).1)
    }

    /// A subscription waiting for the broker.
    pub(crate) fn pending() -> (Confirmation, Self) {
        let (tx, rx) = watch::channel(false);
        (Confirmation(tx), Self(rx))
    }

    /// Waits for the confirmation; fails if the broker cancelled the subscription.
    pub(crate) async fn wait(mut self) -> Result<(), BrokerError> {
        match self.0.wait_for(|confirmed| *confirmed).await {
            Ok(_) => Ok(()),
            Err(_) => Err(BrokerError::Unavailable("subscription was cancelled".into())),
        }
    }
}

impl Confirmation {
    pub(crate) fn confirm(self) {
        // Receivers read the value even after the sender is gone; none listening is fine too.
        let _ = self.0.send(true);
    }
}
