//! The task that owns an instance's one Redis pub/sub connection.
//!
//! It keeps two sets: `wanted` (groups with local members, as told by the hub, in call order)
//! and `active` (what Redis has confirmed on the current connection). After every batch of hub
//! commands it reconciles only the groups that changed (`dirty`), with one SUBSCRIBE and one
//! UNSUBSCRIBE for the whole batch. A new connection starts with nothing active and every wanted
//! group dirty, which is how resubscription after a Redis restart happens.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ::redis::aio::{PubSubSink, PubSubStream};
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, interval_at, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::broker::{Confirmation, Sink, Subscriber, Subscription};
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::redis::Backoff;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A silent connection is probed this often, so a half-open socket is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE, so resubscribing thousands of groups does not build one huge command.
const SUBSCRIBE_CHUNK: usize = 1000;

/// What the hub asks of the subscriber, in the order it asked.
enum Command {
    Subscribe(GroupName, Confirmation),
    Unsubscribe(GroupName),
}

/// The hub's side of the subscriber task.
pub(super) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    /// True while the pub/sub connection is up and every wanted group is subscribed.
    ready: Arc<AtomicBool>,
}

/// Starts the subscriber task on `client`; it runs until `shutdown`.
pub(super) fn start(
    client: ::redis::Client,
    channel_prefix: Arc<str>,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Handle {
    let ready = Arc::new(AtomicBool::new(false));
    let (commands, rx) = mpsc::unbounded_channel();
    let task = Task {
        client,
        channel_prefix,
        sink,
        commands: rx,
        ready: ready.clone(),
        metrics,
        wanted: HashMap::new(),
        dirty: HashSet::new(),
    };
    tokio::spawn(task.run(shutdown));
    Handle { commands, ready }
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
}

struct Task {
    client: ::redis::Client,
    channel_prefix: Arc<str>,
    sink: Arc<dyn Sink>,
    commands: mpsc::UnboundedReceiver<Command>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Groups the hub wants, with the confirmation still owed to their first member (if any).
    wanted: HashMap<GroupName, Option<Confirmation>>,
    /// Groups whose wanted state changed since the last reconcile.
    dirty: HashSet<GroupName>,
}

type Outcome = Result<(), ::redis::RedisError>;

impl Task {
    /// Connects, serves until the connection drops, backs off, and again, until shutdown.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut connected_before = false;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()) => c,
            };
            match connected {
                Ok(Ok(pubsub)) => {
                    if connected_before {
                        self.metrics.redis_reconnects.inc();
                    }
                    connected_before = true;
                    let (sink, stream) = pubsub.split();
                    let outcome = self.serve(sink, stream, &shutdown, &mut backoff).await;
                    self.ready.store(false, Ordering::Release);
                    match outcome {
                        Ok(()) => return,
                        Err(e) => tracing::warn!(error = %e, "redis pub/sub connection lost"),
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, failures = backoff.failures(), "redis pub/sub connect failed")
                }
                Err(_) => tracing::warn!(failures = backoff.failures(), "redis pub/sub connect timed out"),
            }
            if !self.wait_backoff(backoff.fail(), &shutdown).await {
                return;
            }
        }
    }

    /// Sleeps for `delay` while still taking hub commands, so that `wanted` is current when
    /// the next connection starts. False on shutdown.
    async fn wait_backoff(&mut self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let deadline = sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = &mut deadline => return true,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return false,
                },
            }
        }
    }

    /// Runs one connection: resubscribe everything, tell the sink which subscriptions lapsed,
    /// then deliver messages and apply commands. `Ok` means shutdown, `Err` a lost connection.
    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Outcome {
        let mut active = HashSet::new();
        // Groups confirmed on an earlier connection (no confirmation owed any more) had a gap;
        // groups still waiting for their first confirmation had none.
        let lapsed: Vec<GroupName> =
            self.wanted.iter().filter(|(_, owed)| owed.is_none()).map(|(group, _)| group.clone()).collect();
        self.dirty.extend(self.wanted.keys().cloned());
        self.reconcile(&mut sink, &mut active).await?;
        if !lapsed.is_empty() {
            // Before the first message of this connection is delivered.
            self.sink.resumed(&lapsed);
        }
        self.ready.store(true, Ordering::Release);
        backoff.reset();
        tracing::info!(groups = active.len(), "redis pub/sub connected");
        let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                msg = stream.next() => match msg {
                    Some(msg) => self.deliver(&msg),
                    None => return Err(closed("pub/sub stream ended")),
                },
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.apply(cmd);
                    while let Ok(cmd) = self.commands.try_recv() {
                        self.apply(cmd);
                    }
                    self.reconcile(&mut sink, &mut active).await?;
                }
                _ = ping.tick() => {
                    timeout(PING_TIMEOUT, sink.ping::<::redis::Value>())
                        .await
                        .map_err(|_| closed("ping timed out"))??;
                }
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(group, confirmation) => {
                self.dirty.insert(group.clone());
                self.wanted.insert(group, Some(confirmation));
            }
            Command::Unsubscribe(group) => {
                // Dropping a pending confirmation cancels it; its waiter has left anyway.
                self.wanted.remove(&group);
                self.dirty.insert(group);
            }
        }
    }

    /// Brings Redis in line with `wanted` for every dirty group, then confirms the waiters.
    async fn reconcile(&mut self, sink: &mut PubSubSink, active: &mut HashSet<GroupName>) -> Outcome {
        let dirty: Vec<GroupName> = self.dirty.drain().collect();
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for group in &dirty {
            match (self.wanted.contains_key(group), active.contains(group)) {
                (true, false) => subscribe.push(group.clone()),
                (false, true) => unsubscribe.push(group.clone()),
                _ => {}
            }
        }
        // On an error the connection is abandoned; the next one starts with every wanted group
        // dirty and nothing active, so nothing left undone here is lost.
        for chunk in subscribe.chunks(SUBSCRIBE_CHUNK) {
            sink.subscribe(self.channels(chunk)).await?;
            active.extend(chunk.iter().cloned());
        }
        for chunk in unsubscribe.chunks(SUBSCRIBE_CHUNK) {
            sink.unsubscribe(self.channels(chunk)).await?;
            for group in chunk {
                active.remove(group);
            }
        }
        for group in dirty.iter().filter(|g| active.contains(*g)) {
            if let Some(confirmation) = self.wanted.get_mut(group).and_then(Option::take) {
                confirmation.confirm();
            }
        }
        Ok(())
    }

    fn channels(&self, groups: &[GroupName]) -> Vec<String> {
        groups.iter().map(|g| format!("{}{}", self.channel_prefix, g)).collect()
    }

    fn deliver(&self, msg: &::redis::Msg) {
        let Some(group) = msg.get_channel_name().strip_prefix(&*self.channel_prefix) else {
            return;
        };
        let (published, frame) = super::unstamp(msg.get_payload_bytes());
        if let Some(latency) = published.and_then(|t| SystemTime::now().duration_since(t).ok()) {
            self.metrics.delivery_latency.observe(latency.as_secs_f64());
        }
        match Utf8Bytes::try_from(Bytes::copy_from_slice(frame)) {
            Ok(frame) => self.sink.deliver(group, frame),
            Err(_) => tracing::warn!(group, "dropped a non-UTF-8 message from redis"),
        }
    }
}

fn closed(why: &'static str) -> ::redis::RedisError {
    ::redis::RedisError::from((::redis::ErrorKind::Io, why))
}
