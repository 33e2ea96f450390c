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
//! Members of groups with history pass through a [`Gate`], which merges a recovering member's
//! history with the live stream by offset.

mod gate;

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;

use crate::broker::{Broker, BrokerError, Publisher, Sink, Subscription};
use crate::group::GroupName;
use crate::metrics::{Metrics, Reason};
use crate::outbox::Outbox;
use crate::protocol::frame_position;

pub(crate) use gate::Gate;

/// Shards of the group map; a power of two well above the core count keeps contention low.
const SHARDS: usize = 64;
/// How long a join waits for the broker to confirm a new group subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A process-unique session id, the key of a member within a group.
pub(crate) type MemberId = u64;

/// A local member: its queue, and its gate when the group has history.
struct Member {
    outbox: Arc<Outbox>,
    gate: Option<Arc<Gate>>,
}

struct Group {
    members: HashMap<MemberId, Member>,
    /// The broker's confirmation of this instance's subscription; joiners wait on it.
    subscription: Subscription,
}

type Shard = HashMap<GroupName, Group>;

/// Sharded `group -> members` map; delivers broker messages to local members.
pub(crate) struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Counts frames queued and dropped by fan-out.
    metrics: Arc<Metrics>,
}

impl Registry {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Arc::new(Self { shards, hasher: RandomState::new(), metrics })
    }

    fn shard(&self, group: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(group) as usize % self.shards.len();
        crate::lock(&self.shards[index])
    }

    /// Number of groups with at least one local member.
    pub(crate) fn group_count(&self) -> usize {
        self.shards.iter().map(|s| crate::lock(s).len()).sum()
    }
}

impl Sink for Registry {
    fn deliver(&self, group: &str, frame: Utf8Bytes) {
        let shard = self.shard(group);
        let Some(group) = shard.get(group) else { return };
        // Parsed once per message; only gated members look at it.
        let position = frame_position(&frame);
        let mut dropped = 0;
        for member in group.members.values() {
            match &member.gate {
                None => dropped += u64::from(!member.outbox.push(frame.clone())),
                Some(gate) => gate.offer(position, frame.clone(), &member.outbox),
            }
        }
        self.metrics.messages_out.inc_by(group.members.len() as u64 - dropped);
        if dropped > 0 {
            self.metrics.drops.get_or_create(&Reason { reason: "slow_consumer" }).inc_by(dropped);
        }
    }
}

/// Group membership of local sessions, kept in step with the broker's subscriptions.
pub(crate) struct Hub {
    registry: Arc<Registry>,
    broker: Broker,
}

impl Hub {
    pub(crate) fn new(registry: Arc<Registry>, broker: Broker) -> Self {
        Self { registry, broker }
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The broker's publishing half, for in-process publishers such as the scheduler.
    pub(crate) fn publisher(&self) -> Arc<dyn Publisher> {
        self.broker.publisher.clone()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds `member` to `group` and returns once the instance receives the group's messages.
    /// With a `gate`, the group's frames reach the member through it. Joining again replaces
    /// the membership. On failure the member is not in the group.
    pub(crate) async fn join(
        &self,
        group: &GroupName,
        member: MemberId,
        outbox: &Arc<Outbox>,
        gate: Option<Arc<Gate>>,
    ) -> Result<(), BrokerError> {
        if !self.broker.subscriber.is_ready() {
            return Err(BrokerError::Unavailable("broker is not connected".into()));
        }
        let subscription = {
            let mut shard = self.registry.shard(group.as_str());
            let new = Member { outbox: outbox.clone(), gate };
            match shard.entry(group.clone()) {
                Entry::Occupied(mut entry) => {
                    entry.get_mut().members.insert(member, new);
                    entry.get().subscription.clone()
                }
                Entry::Vacant(entry) => {
                    let subscription = self.broker.subscriber.subscribe(group);
                    let members = HashMap::from([(member, new)]);
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
    pub(crate) fn leave(&self, group: &GroupName, member: MemberId) -> bool {
        let mut shard = self.registry.shard(group.as_str());
        let Some(entry) = shard.get_mut(group.as_str()) else { return false };
        let was_member = entry.members.remove(&member).is_some();
        if entry.members.is_empty() {
            shard.remove(group.as_str());
            self.broker.subscriber.unsubscribe(group);
        }
        was_member
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::broker::Subscriber;
    use crate::broker::memory::MemoryBroker;

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
        let registry = Registry::new(Arc::default());
        let counting = Arc::new(CountingSubscriber::default());
        let broker = Broker { subscriber: counting.clone(), ..MemoryBroker::start(registry.clone()) };
        let hub = Hub::new(registry.clone(), broker);
        let group = GroupName::new("g").unwrap();
        let (a, mut rx_a) = Outbox::new(4, 1 << 20);
        let (b, mut rx_b) = Outbox::new(4, 1 << 20);
        let (a, b) = (Arc::new(a), Arc::new(b));
        hub.join(&group, 1, &a, None).await.unwrap();
        hub.join(&group, 2, &b, None).await.unwrap();
        hub.join(&group, 2, &b, None).await.unwrap();
        assert_eq!(counting.subscribes.load(Ordering::SeqCst), 1);

        registry.deliver("g", Utf8Bytes::from_static("hello"));
        let (fa, fb) = (rx_a.recv().await.unwrap(), rx_b.recv().await.unwrap());
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "members share one encoded frame");

        assert!(hub.leave(&group, 1));
        assert!(!hub.leave(&group, 1));
        assert_eq!(counting.unsubscribes.load(Ordering::SeqCst), 0);
        assert!(hub.leave(&group, 2));
        assert_eq!(counting.unsubscribes.load(Ordering::SeqCst), 1);
        assert_eq!(registry.group_count(), 0, "empty groups are removed");
    }
}
