//! The hub: which local sessions are members of which group, and fan-out to them.
//!
//! The [`Registry`] is a sharded map `group -> members`. It is the broker's [`Sink`]: for each
//! message it locks one shard, pushes the same shared frame into every member's [`Outbox`] (a
//! non-blocking queue push, nothing more) and unlocks. The [`Hub`] adds membership on top and
//! drives the broker: the first local member of a group subscribes the instance, the last one
//! to leave unsubscribes it. Those broker calls are made under the shard lock so that, for one
//! group, subscribe and unsubscribe reach the broker in the order membership changed; they never
//! block. Empty groups are removed at once, so the map holds only groups with members.
//!
//! Members of groups with history pass through a [`Gate`], which merges what a member is sent
//! from history with the live stream by offset. When the broker resubscribes after losing its
//! connection, the registry holds every such member's live frames at once and the hub catches
//! them up from history in the background ([`recovery`]): a gap in the subscription never turns
//! into a silent gap for a client.

mod gate;
mod recovery;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::broker::{Broker, BrokerError, HistoryPolicy};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

pub(crate) use gate::{Gate, Reached};
pub(crate) use recovery::{Catching, Pace, catch_up};
pub(crate) use registry::{MemberId, Registry, Resume};

/// How long a join waits for the broker to confirm a new group subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Groups caught up at once after a resubscription, so thousands of groups do not hit Redis
/// together.
const CATCH_UPS_AT_ONCE: usize = 64;

/// Group membership of local sessions, kept in step with the broker's subscriptions.
pub(crate) struct Hub {
    registry: Arc<Registry>,
    broker: Broker,
}

impl Hub {
    /// The hub over `registry` (the broker's sink) and `broker`; catches up the members the
    /// registry reports through `resumes`, in the background.
    pub(crate) fn new(
        registry: Arc<Registry>,
        broker: Broker,
        resumes: mpsc::UnboundedReceiver<Resume>,
        metrics: Arc<Metrics>,
    ) -> Self {
        tokio::spawn(catch_up_resumed(resumes, broker.clone(), metrics));
        Self { registry, broker }
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds `member` to `group` and returns once the instance receives the group's messages.
    /// With a gate (groups with history), the group's frames reach the member through it.
    /// Joining again replaces the membership. On failure the member is not in the group.
    pub(crate) async fn join(
        &self,
        group: &GroupName,
        member: MemberId,
        outbox: &Arc<Outbox>,
        gate: Option<(Arc<Gate>, HistoryPolicy)>,
    ) -> Result<(), BrokerError> {
        if !self.broker.subscriber.is_ready() {
            return Err(BrokerError::Unavailable("broker is not connected".into()));
        }
        let subscription = self.registry.add(group, member, outbox, gate, &*self.broker.subscriber);
        let confirmed = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscription.wait()).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::Unavailable("subscription not confirmed in time".into())),
        };
        if confirmed.is_err() {
            self.leave(group, member);
        }
        confirmed
    }

    /// Removes `member` from `group`; the last member out unsubscribes the instance.
    /// Returns whether it was a member.
    pub(crate) fn leave(&self, group: &GroupName, member: MemberId) -> bool {
        self.registry.remove(group, member, &*self.broker.subscriber)
    }
}

/// Catches up the members of every group the broker resubscribed, a few groups at a time.
async fn catch_up_resumed(
    mut resumes: mpsc::UnboundedReceiver<Resume>,
    broker: Broker,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(CATCH_UPS_AT_ONCE));
    while let Some(Resume { group, policy, members }) = resumes.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (history, metrics) = (broker.history.clone(), metrics.clone());
        tokio::spawn(async move {
            catch_up(&*history, &metrics, &group, policy, members, None, Pace::Push).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::ws::Utf8Bytes;

    use crate::broker::memory::MemoryBroker;
    use crate::broker::{Sink, Subscriber, Subscription};

    use super::*;

    /// The in-memory broker's subscriptions, counting subscribe/unsubscribe calls.
    #[derive(Default)]
    struct CountingSubscriber {
        subscribes: AtomicUsize,
        unsubscribes: AtomicUsize,
    }

    impl Subscriber for CountingSubscriber {
        fn subscribe(&self, _group: &GroupName) -> Subscription {
            self.subscribes.fetch_add(1, Ordering::SeqCst);
            Subscription::confirmed()
        }
        fn unsubscribe(&self, _group: &GroupName) {
            self.unsubscribes.fetch_add(1, Ordering::SeqCst);
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn first_join_subscribes_last_leave_unsubscribes_and_fanout_shares_frames() {
        let (registry, resumes) = Registry::new(Arc::default());
        let counting = Arc::new(CountingSubscriber::default());
        let broker = Broker { subscriber: counting.clone(), ..MemoryBroker::start(registry.clone()) };
        let hub = Hub::new(registry.clone(), broker, resumes, Arc::default());
        let group = GroupName::new("g").unwrap();
        let (a, b) = (Arc::new(Outbox::new(4, 1 << 20)), Arc::new(Outbox::new(4, 1 << 20)));
        hub.join(&group, 1, &a, None).await.unwrap();
        hub.join(&group, 2, &b, None).await.unwrap();
        hub.join(&group, 2, &b, None).await.unwrap();
        assert_eq!(counting.subscribes.load(Ordering::SeqCst), 1);

        registry.deliver("g", Utf8Bytes::from_static("hello"));
        let (fa, fb) = (a.take(1)[0].clone(), b.take(1)[0].clone());
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "members share one encoded frame");

        assert!(hub.leave(&group, 1));
        assert!(!hub.leave(&group, 1));
        assert_eq!(counting.unsubscribes.load(Ordering::SeqCst), 0);
        assert!(hub.leave(&group, 2));
        assert_eq!(counting.unsubscribes.load(Ordering::SeqCst), 1);
        assert_eq!(registry.group_count(), 0, "empty groups are removed");
    }
}
