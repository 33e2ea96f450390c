//! The hub: which local sessions are members of which group, and fan-out to them.
//!
//! The [`Registry`] is a sharded map `group -> members`. It is the broker's [`Sink`]: for each
//! message it locks one shard, pushes the same shared frame into every member's [`Outbox`] (a
//! non-blocking queue push, nothing more) and unlocks. The [`Hub`] adds membership on top and
//! drives the broker: the first local member of a group subscribes the instance, the last one
//! to leave unsubscribes it. Those broker calls are made under the shard lock so that, for one
//! group, subscribe and unsubscribe reach the broker in the order membership changed; they never
//! block. Empty groups are removed at once, so the map holds only groups with members.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;

use crate::broker::{Broker, BrokerError, Publisher, Sink, Subscription};
use crate::group::GroupName;
use crate::outbox::Outbox;

/// Shards of the group map; a power of two well above the core count keeps contention low.
const SHARDS: usize = 64;
/// How long a join waits for the broker to confirm a new group subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A process-unique session id, the key of a member within a group.
pub type MemberId = u64;

struct Group {
    members: HashMap<MemberId, Arc<Outbox>>,
    /// The broker's confirmation of this instance's subscription; joiners wait on it.
    subscription: Subscription,
}

type Shard = HashMap<GroupName, Group>;

/// Sharded `group -> members` map; delivers broker messages to local members.
pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Arc::new(Self { shards, hasher: RandomState::new() })
    }

    fn shard(&self, group: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(group) as usize % self.shards.len();
        // A panic while holding a shard cannot leave a map half-updated in a harmful way.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of groups with at least one local member.
    pub fn group_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

impl Sink for Registry {
    fn deliver(&self, group: &str, frame: Utf8Bytes) {
        let shard = self.shard(group);
        if let Some(group) = shard.get(group) {
            for outbox in group.members.values() {
                outbox.push(frame.clone());
            }
        }
    }
}

/// Group membership of local sessions, kept in step with the broker's subscriptions.
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
}

impl Hub {
    pub fn new(registry: Arc<Registry>, broker: Arc<dyn Broker>) -> Self {
        Self { registry, broker }
    }

    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// The broker's publishing half, for in-process publishers such as the scheduler.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.broker.clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds `member` to `group` and returns once the instance receives the group's messages.
    /// Joining a group twice is a no-op. On failure the member is not in the group.
    pub async fn join(
        &self,
        group: &GroupName,
        member: MemberId,
        outbox: &Arc<Outbox>,
    ) -> Result<(), BrokerError> {
        if !self.broker.is_ready() {
            return Err(BrokerError::Unavailable("broker is not connected".into()));
        }
        let subscription = {
            let mut shard = self.registry.shard(group.as_str());
            match shard.entry(group.clone()) {
                Entry::Occupied(mut entry) => {
                    entry.get_mut().members.insert(member, outbox.clone());
                    entry.get().subscription.clone()
                }
                Entry::Vacant(entry) => {
                    let subscription = self.broker.subscribe(group);
                    let members = HashMap::from([(member, outbox.clone())]);
                    entry.insert(Group { members, subscription: subscription.clone() });
                    subscription
                }
            }
        };
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
    pub fn leave(&self, group: &GroupName, member: MemberId) -> bool {
        let mut shard = self.registry.shard(group.as_str());
        let Some(entry) = shard.get_mut(group.as_str()) else { return false };
        let was_member = entry.members.remove(&member).is_some();
        if entry.members.is_empty() {
            shard.remove(group.as_str());
            self.broker.unsubscribe(group);
        }
        was_member
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;

    use super::*;

    /// Counts subscribe/unsubscribe calls, confirming subscriptions at once.
    #[derive(Default)]
    struct CountingBroker {
        subscribes: AtomicUsize,
        unsubscribes: AtomicUsize,
    }

    impl Publisher for CountingBroker {
        fn publish<'a>(&'a self, _: &'a GroupName, _: Utf8Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    impl Broker for CountingBroker {
        fn subscribe(&self, _: &GroupName) -> Subscription {
            self.subscribes.fetch_add(1, Ordering::SeqCst);
            Subscription::confirmed()
        }
        fn unsubscribe(&self, _: &GroupName) {
            self.unsubscribes.fetch_add(1, Ordering::SeqCst);
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn first_join_subscribes_last_leave_unsubscribes_and_fanout_shares_frames() {
        let broker = Arc::new(CountingBroker::default());
        let registry = Registry::new();
        let hub = Hub::new(registry.clone(), broker.clone());
        let group = GroupName::new("g").unwrap();
        let (a, mut rx_a) = Outbox::new(4);
        let (b, mut rx_b) = Outbox::new(4);
        let (a, b) = (Arc::new(a), Arc::new(b));
        hub.join(&group, 1, &a).await.unwrap();
        hub.join(&group, 2, &b).await.unwrap();
        hub.join(&group, 2, &b).await.unwrap();
        assert_eq!(broker.subscribes.load(Ordering::SeqCst), 1);

        registry.deliver("g", Utf8Bytes::from_static("hello"));
        let (fa, fb) = (rx_a.recv().await.unwrap(), rx_b.recv().await.unwrap());
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "members share one encoded frame");

        assert!(hub.leave(&group, 1));
        assert!(!hub.leave(&group, 1));
        assert_eq!(broker.unsubscribes.load(Ordering::SeqCst), 0);
        assert!(hub.leave(&group, 2));
        assert_eq!(broker.unsubscribes.load(Ordering::SeqCst), 1);
        assert_eq!(registry.group_count(), 0, "empty groups are removed");
    }
}
