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

pub mod memory;
pub mod redis;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::group::GroupName;

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
    /// Publishes one encoded `message` frame to every instance subscribed to `group`.
    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        frame: Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
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
