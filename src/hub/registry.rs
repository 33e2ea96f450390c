//! The sharded `group -> local members` map: fan-out, and holding members after a gap.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use super::gate::Gate;
use super::recovery::Catching;
use crate::broker::{HistoryPolicy, Sink, Subscriber, Subscription};
use crate::group::GroupName;
use crate::metrics::{Metrics, Reason};
use crate::outbox::Outbox;
use crate::protocol::{Since, frame_position};

/// Shards of the group map; a power of two well above the core count keeps contention low.
const SHARDS: usize = 64;

/// A process-unique session id, the key of a member within a group.
pub(crate) type MemberId = u64;

/// A local member: its queue, and its gate when the group has history.
struct Member {
    outbox: Arc<Outbox>,
    gate: Option<Arc<Gate>>,
}

struct Group {
    members: HashMap<MemberId, Member>,
    /// The group's history, when its members have gates.
    history: Option<HistoryPolicy>,
    /// The broker's confirmation of this instance's subscription; joiners wait on it.
    subscription: Subscription,
}

type Shard = HashMap<GroupName, Group>;

/// Members of one group held after the broker resubscribed it, to be caught up.
pub(crate) struct Resume {
    pub(crate) group: GroupName,
    pub(crate) policy: HistoryPolicy,
    pub(crate) members: Vec<Catching>,
}

/// Sharded `group -> members` map; delivers broker messages to local members.
pub(crate) struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Counts frames queued and dropped by fan-out.
    metrics: Arc<Metrics>,
    /// Where held members go to be caught up.
    resumes: mpsc::UnboundedSender<Resume>,
}

impl Registry {
    /// The registry, and the receiving end of the members it holds after a resubscription.
    pub(crate) fn new(metrics: Arc<Metrics>) -> (Arc<Self>, mpsc::UnboundedReceiver<Resume>) {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        let (resumes, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { shards, hasher: RandomState::new(), metrics, resumes }), rx)
    }

    fn shard(&self, group: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(group) as usize % self.shards.len();
        crate::lock(&self.shards[index])
    }

    /// Number of groups with at least one local member, Herald's own groups aside.
    pub(crate) fn group_count(&self) -> usize {
        let count = |shard: &Shard| shard.keys().filter(|g| !GroupName::is_reserved(g.as_str())).count();
        self.shards.iter().map(|s| count(&crate::lock(s))).sum()
    }

    /// Adds a member; the group's first member subscribes the instance. Returns the
    /// subscription to wait on.
    pub(super) fn add(
        &self,
        group: &GroupName,
        member: MemberId,
        outbox: &Arc<Outbox>,
        gate: Option<(Arc<Gate>, HistoryPolicy)>,
        subscriber: &dyn Subscriber,
    ) -> Subscription {
        let history = gate.as_ref().map(|(_, policy)| *policy);
        let new = Member { outbox: outbox.clone(), gate: gate.map(|(gate, _)| gate) };
        let mut shard = self.shard(group.as_str());
        match shard.entry(group.clone()) {
            Entry::Occupied(mut entry) => {
                let entry = entry.get_mut();
                entry.members.insert(member, new);
                entry.history = entry.history.or(history);
                entry.subscription.clone()
            }
            Entry::Vacant(entry) => {
                let subscription = subscriber.subscribe(group);
                let members = HashMap::from([(member, new)]);
                entry.insert(Group { members, history, subscription: subscription.clone() });
                subscription
            }
        }
    }

    /// Removes a member; the last one out unsubscribes the instance. Whether it was a member.
    pub(super) fn remove(&self, group: &GroupName, member: MemberId, subscriber: &dyn Subscriber) -> bool {
        let mut shard = self.shard(group.as_str());
        let Some(entry) = shard.get_mut(group.as_str()) else { return false };
        let was_member = entry.members.remove(&member).is_some();
        if entry.members.is_empty() {
            shard.remove(group.as_str());
            subscriber.unsubscribe(group);
        }
        was_member
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

    /// Holds the live frames of every gated member of `groups` before the new subscription
    /// delivers anything, and hands them to the hub to be caught up from where each is.
    fn resumed(&self, groups: &[GroupName]) {
        for group in groups {
            let shard = self.shard(group.as_str());
            let Some(entry) = shard.get(group) else { continue };
            let Some(policy) = entry.history else { continue };
            let members: Vec<Catching> = entry
                .members
                .values()
                .filter_map(|member| {
                    let gate = member.gate.as_ref()?;
                    let reached = gate.hold()?;
                    let seen = Since { offset: reached.last.offset, epoch: reached.last.epoch };
                    Some(Catching { outbox: member.outbox.clone(), gate: gate.clone(), seen })
                })
                .collect();
            if !members.is_empty() {
                let _ = self.resumes.send(Resume { group: group.clone(), policy, members });
            }
        }
    }
}
