//! The task that owns an instance's Redis subscriptions: one sharded pub/sub connection per
//! master (one on a single Redis or under Sentinel, one per shard on a Cluster).
//!
//! For every group the hub wants, it keeps the master its channel's slot belongs to (as the last
//! look at the deployment's [`Shards`] said) and the state of the group's subscription: owed to
//! its first member, live, or lapsed (it was live, and messages may have been missed since).
//! Each master's connection knows which groups the server confirmed on it and which commands
//! await a reply. Replies and messages of every connection come in on one channel, each
//! connection's in the order the server sent them, so a lapsed group's confirmation is handled
//! (the sink told, its members' gates held) before any message of its new subscription.
//!
//! A connection that drops lapses its groups, reconnects with backoff and subscribes them again.
//! A `sunsubscribe` the task did not ask for (the slot moved away), a `MOVED`, or a failed
//! connection makes it look at the shards again (at most twice a second, and every 10 s anyway
//! on a Cluster); groups whose slot has a new master move there, lapsed, and their members are
//! caught up from history as after any gap. Under Sentinel the look reads which master the
//! sentinels named last, five times a second; on one Redis there is nothing to look at.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use redis::ConnectionInfo;
use tokio::sync::mpsc;
use tokio::time::{Instant, interval};
use tokio_util::sync::CancellationToken;

use crate::broker::{Confirmation, Sink, Subscriber, Subscription};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::redis::pubsub::{self, Event, Link};
use crate::redis::{Backoff, Nodes, Shards, Unavailable};

/// How often the task checks its connections' health and whether a look is due.
const TICK: Duration = Duration::from_millis(100);
/// A connection is probed this often, so a half-open socket is noticed...
const PING_EVERY: Duration = Duration::from_secs(5);
/// ...and closed when the answer takes longer than this.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Looks at the shards at most this often when something went wrong (and as often as
/// [`Nodes::look_every`] says anyway).
const LOOK_AFTER: Duration = Duration::from_millis(500);
/// Replies and messages read ahead of the task, across connections.
const EVENTS: usize = 4096;
/// Events handled before pending commands are written out.
const BATCH: usize = 256;

/// What the hub asks of the subscriber, in the order it asked.
enum Command {
    Subscribe(GroupName, Confirmation),
    Unsubscribe(GroupName),
}

/// The hub's side of the subscriber task.
pub(super) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    /// True while every master is connected and no wanted group's subscription has lapsed.
    ready: Arc<AtomicBool>,
    /// Of the channel the connections' readers fill: how far the task is behind.
    events: mpsc::Sender<(u64, Event)>,
}

/// Starts the subscriber task; it runs until `shutdown`.
pub(super) fn start(
    nodes: Nodes,
    channel_prefix: Arc<str>,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Handle {
    let ready = Arc::new(AtomicBool::new(false));
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::channel(EVENTS);
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (looked_tx, looked) = mpsc::unbounded_channel();
    let backlog = events_tx.clone();
    let task = Task {
        nodes,
        channel_prefix,
        sink,
        metrics,
        ready: ready.clone(),
        events_tx,
        connected_tx,
        looked_tx,
        shards: None,
        groups: Groups::default(),
        masters: HashMap::new(),
        tags: HashMap::new(),
        next_tag: 0,
        look: Look { due: true, running: false, last: Instant::now(), failures: 0 },
    };
    tokio::spawn(task.run(Inbox { commands: commands_rx, events, connected, looked }, shutdown));
    Handle { commands, ready, events: backlog }
}

impl Subscriber for Handle {
    fn subscribe(&self, group: &GroupName) -> Subscription {
        let (confirmation, subscription) = Subscription::pending();
        // A closed channel means the task stopped (shutdown): the dropped confirmation then
        // fails the subscription, which is the right answer.
        let _ = self.commands.send(Command::Subscribe(group.clone(), confirmation));
        subscription
    }

    fn unsubscribe(&self, group: &GroupName) {
        let _ = self.commands.send(Command::Unsubscribe(group.clone()));
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn is_behind(&self) -> bool {
        self.events.capacity() < EVENTS / 2
    }
}

/// Where a wanted group's subscription stands.
enum Want {
    /// Its first member waits for the confirmation.
    Owed(Confirmation),
    Live,
    /// Not subscribed now, or subscribed anew after messages may have been missed: the sink is
    /// told once it is confirmed.
    Lapsed,
}

struct Group {
    want: Want,
    /// The master its channel's slot belongs to, when known.
    at: Option<Arc<str>>,
}

/// The wanted groups, counting the lapsed ones (readiness is "none"; a first subscription in
/// flight does not count).
#[derive(Default)]
struct Groups {
    map: HashMap<GroupName, Group>,
    lapsed: usize,
}

impl Groups {
    fn insert(&mut self, group: GroupName, want: Want, at: Option<Arc<str>>) {
        self.lapsed += usize::from(matches!(want, Want::Lapsed));
        if let Some(old) = self.map.insert(group, Group { want, at }) {
            self.forget(&old);
        }
    }

    fn remove(&mut self, group: &GroupName) -> Option<Group> {
        let old = self.map.remove(group)?;
        self.forget(&old);
        Some(old)
    }

    fn forget(&mut self, old: &Group) {
        self.lapsed -= usize::from(matches!(old.want, Want::Lapsed));
    }

    /// Messages of `group` may be missed from now on; a first member still waiting is failed.
    fn lapse(&mut self, group: &GroupName) {
        if let Some(entry) = self.map.get_mut(group)
            && !matches!(entry.want, Want::Lapsed)
        {
            self.lapsed += 1;
            // Dropping an owed confirmation fails the join that waits for it.
            entry.want = Want::Lapsed;
        }
    }

    /// The subscription of `group` is confirmed: returns whether it had lapsed.
    fn confirm(&mut self, group: &GroupName) -> bool {
        let Some(entry) = self.map.get_mut(group) else { return false };
        match std::mem::replace(&mut entry.want, Want::Live) {
            Want::Live => false,
            Want::Owed(confirmation) => {
                confirmation.confirm();
                false
            }
            Want::Lapsed => {
                self.lapsed -= 1;
                true
            }
        }
    }
}

/// A command of ours that awaits its reply, in the order sent.
enum Sent {
    Subscribe(GroupName),
    Unsubscribe(GroupName),
    Ping,
}

/// One master: its connection (or the attempt to get one) and what the server confirmed on it.
struct Master {
    info: ConnectionInfo,
    /// Tag of the current connection or attempt; events of older ones are ignored.
    tag: u64,
    link: Option<Link>,
    connecting: bool,
    ever_connected: bool,
    backoff: Backoff,
    retry_at: Instant,
    subscribed: HashSet<GroupName>,
    /// Subscribes in flight per group: only the last one's confirmation counts.
    subscribing: HashMap<GroupName, u32>,
    sent: VecDeque<Sent>,
    outgoing: Vec<redis::Cmd>,
    ping_sent: Option<Instant>,
    last_ping: Instant,
}

impl Master {
    fn new(info: ConnectionInfo) -> Self {
        Self {
            info,
            tag: 0,
            link: None,
            connecting: false,
            ever_connected: false,
            backoff: Backoff::default(),
            retry_at: Instant::now(),
            subscribed: HashSet::new(),
            subscribing: HashMap::new(),
            sent: VecDeque::new(),
            outgoing: Vec::new(),
            ping_sent: None,
            last_ping: Instant::now(),
        }
    }

    fn send(&mut self, command: &str, channel: Option<String>, sent: Sent) {
        let mut cmd = redis::cmd(command);
        if let Some(channel) = channel {
            cmd.arg(channel);
        }
        self.outgoing.push(cmd);
        if let Sent::Subscribe(group) = &sent {
            *self.subscribing.entry(group.clone()).or_default() += 1;
        }
        self.sent.push_back(sent);
    }

    /// Counts a reply to a subscribe of `group`: true when no other is in flight.
    fn subscribe_answered(&mut self, group: &GroupName) -> bool {
        match self.subscribing.get_mut(group) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.subscribing.remove(group);
                true
            }
        }
    }
}

/// When to look at the shards again.
struct Look {
    due: bool,
    running: bool,
    last: Instant,
    failures: u32,
}

struct Inbox {
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Receiver<(u64, Event)>,
    connected: mpsc::UnboundedReceiver<(u64, Result<Link, Unavailable>)>,
    looked: mpsc::UnboundedReceiver<Result<Shards, Unavailable>>,
}

struct Task {
    nodes: Nodes,
    /// `<prefix>:group:{`: a group's channel is this, the group, and `}`.
    channel_prefix: Arc<str>,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    events_tx: mpsc::Sender<(u64, Event)>,
    connected_tx: mpsc::UnboundedSender<(u64, Result<Link, Unavailable>)>,
    looked_tx: mpsc::UnboundedSender<Result<Shards, Unavailable>>,
    shards: Option<Shards>,
    groups: Groups,
    /// By address.
    masters: HashMap<Arc<str>, Master>,
    /// Connection tag → the master it belongs to.
    tags: HashMap<u64, Arc<str>>,
    next_tag: u64,
    look: Look,
}

impl Task {
    async fn run(mut self, mut inbox: Inbox, shutdown: CancellationToken) {
        let mut tick = interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                command = inbox.commands.recv() => {
                    let Some(command) = command else { return };
                    self.apply(command);
                    while let Ok(command) = inbox.commands.try_recv() {
                        self.apply(command);
                    }
                }
                Some((tag, event)) = inbox.events.recv() => {
                    self.handle(tag, event);
                    for _ in 0..BATCH {
                        let Ok((tag, event)) = inbox.events.try_recv() else { break };
                        self.handle(tag, event);
                    }
                }
                Some((tag, connected)) = inbox.connected.recv() => self.connected(tag, connected),
                Some(shards) = inbox.looked.recv() => self.looked(shards),
                _ = tick.tick() => self.tick(),
            }
            self.flush().await;
            let ready = self.shards.is_some()
                && self.groups.lapsed == 0
                && self.masters.values().all(|m| m.link.is_some());
            self.ready.store(ready, Ordering::Release);
        }
    }

    fn group_of<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let name = channel.strip_prefix(self.channel_prefix.as_bytes())?.strip_suffix(b"}")?;
        std::str::from_utf8(name).ok()
    }

    /// The master `group`'s channel belongs to now, if known.
    fn route(&self, group: &GroupName) -> Option<Arc<str>> {
        let master =
            self.shards.as_ref()?.owner(crate::redis::slot(&channel(&self.channel_prefix, group)))?;
        self.masters.get_key_value(master.addr.as_str()).map(|(addr, _)| addr.clone())
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Subscribe(group, confirmation) => {
                let at = self.route(&group);
                let up = at.as_ref().and_then(|a| self.masters.get(a)).is_some_and(|m| m.link.is_some());
                // A master that is down fails the join at once (it may retry) rather than
                // keeping it waiting; the group stays wanted until the hub lets go of it.
                let want = if up { Want::Owed(confirmation) } else { Want::Lapsed };
                if let Some(at) = at.as_ref().filter(|_| up) {
                    let channel = channel(&self.channel_prefix, &group);
                    let master = self.masters.get_mut(at).expect("routed to a known master");
                    master.send("SSUBSCRIBE", Some(channel), Sent::Subscribe(group.clone()));
                }
                self.groups.insert(group, want, at);
            }
            Command::Unsubscribe(group) => {
                let Some(Group { at: Some(at), .. }) = self.groups.remove(&group) else { return };
                self.leave(&at, &group);
            }
        }
    }

    /// Ends `group`'s subscription on master `at`, if it has one there or one is in flight.
    fn leave(&mut self, at: &str, group: &GroupName) {
        let channel = channel(&self.channel_prefix, group);
        let Some(master) = self.masters.get_mut(at) else { return };
        let held = master.subscribed.remove(group) || master.subscribing.contains_key(group);
        if held && master.link.is_some() {
            master.send("SUNSUBSCRIBE", Some(channel), Sent::Unsubscribe(group.clone()));
        }
    }

    fn handle(&mut self, tag: u64, event: Event) {
        let Some(at) = self.tags.get(&tag).cloned() else { return };
        match event {
            Event::Message { channel, payload } => self.deliver(&channel, payload),
            Event::Subscribed(channel) => {
                let Some(group) = self.group_of(&channel).and_then(|g| GroupName::new_or_reserved(g).ok())
                else {
                    return;
                };
                let master = self.masters.get_mut(&at).expect("tagged master");
                if !matches!(master.sent.pop_front(), Some(Sent::Subscribe(g)) if g == group) {
                    return self.drop_link(&at, "unexpected ssubscribe reply");
                }
                let last = master.subscribe_answered(&group);
                let here = self.groups.map.get(&group).is_some_and(|g| g.at.as_ref() == Some(&at));
                if last && here {
                    master.subscribed.insert(group.clone());
                    if self.groups.confirm(&group) {
                        // Before any message of the new subscription is handled.
                        self.sink.resumed(std::slice::from_ref(&group));
                    }
                }
            }
            Event::Unsubscribed(channel) => {
                let Some(group) = self.group_of(&channel).and_then(|g| GroupName::new_or_reserved(g).ok())
                else {
                    return;
                };
                let master = self.masters.get_mut(&at).expect("tagged master");
                if matches!(master.sent.front(), Some(Sent::Unsubscribe(g)) if *g == group) {
                    master.sent.pop_front();
                    return;
                }
                // Not asked for: the channel's slot moved to another master.
                master.subscribed.remove(&group);
                if let Some(entry) = self.groups.map.get_mut(&group)
                    && entry.at.as_ref() == Some(&at)
                {
                    entry.at = None;
                    self.groups.lapse(&group);
                }
                tracing::info!(%group, master = %at, "redis moved a group's slot away; looking again");
                self.look.due = true;
            }
            Event::Pong => {
                let master = self.masters.get_mut(&at).expect("tagged master");
                if !matches!(master.sent.pop_front(), Some(Sent::Ping)) {
                    return self.drop_link(&at, "unexpected pong");
                }
                master.ping_sent = None;
            }
            Event::Error(error) => self.refused(&at, &error),
            Event::Closed(why) => self.drop_link(&at, &why),
        }
    }

    /// An error reply: it answers the oldest command awaiting one.
    fn refused(&mut self, at: &Arc<str>, error: &str) {
        let master = self.masters.get_mut(at).expect("tagged master");
        match master.sent.pop_front() {
            Some(Sent::Subscribe(group)) => {
                master.subscribe_answered(&group);
                let moved = ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"].iter().any(|e| error.starts_with(e));
                if let Some(entry) = self.groups.map.get_mut(&group)
                    && entry.at.as_ref() == Some(at)
                {
                    // Routed again after the next look.
                    entry.at = None;
                    self.groups.lapse(&group);
                }
                if moved {
                    tracing::info!(%group, master = %at, error, "redis refused a subscription; looking again");
                } else {
                    tracing::warn!(%group, master = %at, error, "redis refused a subscription");
                }
                self.look.due = true;
            }
            _ => self.drop_link(at, error),
        }
    }

    fn deliver(&self, channel: &[u8], payload: Bytes) {
        let Some(group) = self.group_of(channel) else { return };
        let (published, frame) = super::unstamp(&payload);
        if let Some(latency) = published.and_then(|t| SystemTime::now().duration_since(t).ok()) {
            self.metrics.delivery_latency.observe(latency.as_secs_f64());
        }
        match Utf8Bytes::try_from(payload.slice_ref(frame)) {
            Ok(frame) => self.sink.deliver(group, frame),
            Err(_) => tracing::warn!(group, "dropped a non-UTF-8 message from redis"),
        }
    }

    /// Loses master `at`'s connection: its groups lapse, and it reconnects after a backoff.
    fn drop_link(&mut self, at: &Arc<str>, why: &str) {
        let Some(master) = self.masters.get_mut(at) else { return };
        if master.link.take().is_some() {
            tracing::warn!(master = %at, error = why, "redis pub/sub connection lost");
        }
        self.tags.remove(&master.tag);
        master.connecting = false;
        master.subscribed.clear();
        master.subscribing.clear();
        master.sent.clear();
        master.outgoing.clear();
        master.ping_sent = None;
        // A connection that worked is retried at once; one that keeps failing backs off.
        let first = master.backoff.failures() == 0;
        let delay = master.backoff.fail();
        master.retry_at = Instant::now() + if first { Duration::ZERO } else { delay };
        let lapsed: Vec<GroupName> = self
            .groups
            .map
            .iter()
            .filter(|(_, g)| g.at.as_ref() == Some(at))
            .map(|(g, _)| g.clone())
            .collect();
        for group in &lapsed {
            self.groups.lapse(group);
        }
        // The master may have failed over.
        self.look.due = true;
    }

    fn connect(&mut self, at: &Arc<str>) {
        let Some(master) = self.masters.get_mut(at) else { return };
        self.next_tag += 1;
        master.tag = self.next_tag;
        master.connecting = true;
        self.tags.insert(master.tag, at.clone());
        let (info, tag, events, done) =
            (master.info.clone(), master.tag, self.events_tx.clone(), self.connected_tx.clone());
        tokio::spawn(async move {
            let _ = done.send((tag, pubsub::connect(&info, tag, events).await));
        });
    }

    fn connected(&mut self, tag: u64, connected: Result<Link, Unavailable>) {
        let Some(at) = self.tags.get(&tag).cloned() else { return };
        let master = self.masters.get_mut(&at).expect("tagged master");
        master.connecting = false;
        match connected {
            Ok(link) => {
                if master.ever_connected {
                    self.metrics.redis_reconnects.inc();
                }
                master.ever_connected = true;
                master.link = Some(link);
                master.backoff.reset();
                master.last_ping = Instant::now();
                let groups: Vec<GroupName> = self
                    .groups
                    .map
                    .iter()
                    .filter(|(_, g)| g.at.as_ref() == Some(&at))
                    .map(|(g, _)| g.clone())
                    .collect();
                tracing::info!(master = %at, groups = groups.len(), "redis pub/sub connected");
                for group in groups {
                    let channel = channel(&self.channel_prefix, &group);
                    master.send("SSUBSCRIBE", Some(channel), Sent::Subscribe(group));
                }
            }
            Err(e) => {
                self.tags.remove(&tag);
                tracing::warn!(master = %at, error = %e, failures = master.backoff.failures(), "redis pub/sub connect failed");
                master.retry_at = Instant::now() + master.backoff.fail();
                self.look.due = true;
            }
        }
    }

    /// A look at the shards came back: masters that appeared get a connection, groups whose
    /// slot has another master move there, masters no group and no slot needs are let go.
    fn looked(&mut self, shards: Result<Shards, Unavailable>) {
        self.look.running = false;
        self.look.last = Instant::now();
        let shards = match shards {
            Ok(shards) => shards,
            Err(e) => {
                self.look.failures += 1;
                if self.look.failures == 1 {
                    tracing::warn!(error = %e, "cannot read the redis deployment's shards; retrying");
                }
                self.look.due = true;
                return;
            }
        };
        self.look.failures = 0;
        if self.shards.as_ref().is_some_and(|known| known.same_as(&shards)) {
            return;
        }
        tracing::info!(masters = shards.masters.len(), "redis shards");
        for master in &shards.masters {
            if !self.masters.contains_key(master.addr.as_str()) {
                self.masters.insert(master.addr.as_str().into(), Master::new(master.info.clone()));
            }
        }
        self.shards = Some(shards);
        let groups: Vec<GroupName> = self.groups.map.keys().cloned().collect();
        for group in groups {
            self.reroute(group);
        }
        let current: HashSet<&str> =
            self.shards.iter().flat_map(|s| s.masters.iter().map(|m| m.addr.as_str())).collect();
        let gone: Vec<Arc<str>> = self.masters.keys().filter(|a| !current.contains(&***a)).cloned().collect();
        for at in gone {
            if let Some(master) = self.masters.remove(&at) {
                self.tags.remove(&master.tag);
            }
        }
        // New masters connect now rather than at the next tick.
        self.tick();
    }

    /// Moves `group` to the master its slot belongs to now, if that changed; subscribes it
    /// there when that master is connected.
    fn reroute(&mut self, group: GroupName) {
        let target = self.route(&group);
        let Some(entry) = self.groups.map.get_mut(&group) else { return };
        if entry.at != target {
            let old = std::mem::replace(&mut entry.at, target.clone());
            self.groups.lapse(&group);
            if let Some(old) = old {
                self.leave(&old, &group);
            }
        }
        let Some(target) = target else { return };
        let channel = channel(&self.channel_prefix, &group);
        let master = self.masters.get_mut(&target).expect("routed to a known master");
        if master.link.is_some()
            && !master.subscribed.contains(&group)
            && !master.subscribing.contains_key(&group)
        {
            master.send("SSUBSCRIBE", Some(channel), Sent::Subscribe(group));
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let addrs: Vec<Arc<str>> = self.masters.keys().cloned().collect();
        for at in addrs {
            let master = self.masters.get_mut(&at).expect("listed master");
            if master.link.is_none() {
                if !master.connecting && master.retry_at <= now {
                    self.connect(&at);
                }
            } else if master.ping_sent.is_some_and(|sent| now.duration_since(sent) > PING_TIMEOUT) {
                self.drop_link(&at, "ping timed out");
            } else if master.ping_sent.is_none() && now.duration_since(master.last_ping) >= PING_EVERY {
                master.send("PING", None, Sent::Ping);
                master.ping_sent = Some(now);
                master.last_ping = now;
            }
        }
        let since = now.duration_since(self.look.last);
        let periodic = self.nodes.look_every().is_some_and(|every| since >= every);
        // The first look at once; after a failed one, wait longer each time (up to 4 s).
        let wait = match (self.shards.is_none(), self.look.failures) {
            (true, 0) => Duration::ZERO,
            (_, failures) => LOOK_AFTER * (1 << failures.min(3)),
        };
        if !self.look.running && ((self.look.due && since >= wait) || periodic) {
            self.look.due = false;
            self.look.running = true;
            let (nodes, looked) = (self.nodes.clone(), self.looked_tx.clone());
            tokio::spawn(async move {
                let _ = looked.send(nodes.discover().await);
            });
        }
    }

    /// Writes every master's pending commands; a master that cannot take them is dropped.
    async fn flush(&mut self) {
        let mut failed = Vec::new();
        for (at, master) in &mut self.masters {
            if master.outgoing.is_empty() {
                continue;
            }
            let outgoing = std::mem::take(&mut master.outgoing);
            if let Some(link) = master.link.as_mut()
                && let Err(e) = link.send(&outgoing).await
            {
                failed.push((at.clone(), e));
            }
        }
        for (at, e) in failed {
            self.drop_link(&at, &e.0);
        }
    }
}

/// A group's channel: `<prefix>:group:{<group>}`, from its start `<prefix>:group:{`.
fn channel(channel_prefix: &str, group: &GroupName) -> String {
    format!("{channel_prefix}{group}}}")
}
