//! The gateway: an axum server that holds client WebSockets and fans group messages out to them.
//!
//! [`Gateway`] is the state every handler shares: config, the hub, this node's id, the live
//! sessions and the shutdown token. [`serve`] runs the HTTP server on a listener the caller
//! bound, until the token is cancelled; it then drains (see `server`) and returns once every
//! session is gone.

mod admission;
mod api;
mod control;
mod cork;
mod demo;
mod error;
mod intake;
mod live;
mod presence;
mod routes;
mod server;
mod session;

pub use server::serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::StartError;
use crate::auth::Verifier;
use crate::broker::{Broker, BrokerError, HistoryPolicy, NodeInfo, Outgoing};
use crate::channels::{Egress, Layer};
use crate::config::Config;
use crate::group::GroupName;
use crate::hooks::Hooks;
use crate::hooks::webhooks::{Change, Tracker};
use crate::hub::{Hub, MemberId, Registry};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::ClientInfo;

/// Shared state of one gateway instance.
pub struct Gateway {
    config: Config,
    hub: Hub,
    next_session: AtomicU64,
    /// Cancelled by the caller to begin a graceful shutdown (drain).
    shutdown: CancellationToken,
    /// Cancelled by `serve` once drained: stops the broker and background tasks, which must
    /// keep delivering while clients are being moved away.
    stopped: CancellationToken,
    /// Set when draining begins: `/readyz` then answers 503.
    draining: AtomicBool,
    /// Live WebSocket sessions, so `serve` can wait for them to close on shutdown.
    sessions: TaskTracker,
    /// Every live session, so the drain can close them one by one and the control API can
    /// find them.
    live: live::Live,
    /// Control commands this instance asked the deployment, waiting for answers.
    control: control::Control,
    routes: Vec<Arc<routes::CompiledRoute>>,
    /// This instance's presence entries, refreshed in the broker by a heartbeat.
    presence: presence::LocalPresence,
    /// Verifies client tokens; `None` when no key is configured.
    verifier: Option<Verifier>,
    admission: admission::Admission,
    /// Back-pressure on HTTP publishing.
    intake: intake::Intake,
    metrics: Arc<Metrics>,
    /// Sends publishes to bridged groups into the Channels layer, when egress is on.
    egress: Option<Egress>,
    /// The backend's hooks, when `[proxy]` names any.
    hooks: Option<Hooks>,
    /// Reports sessions' changes for webhooks, when `[webhooks]` has a URL.
    webhooks: Option<Tracker>,
    /// The clock of every session's rate limiter, built once: building one probes the CPU,
    /// which per connection was a sixth of the gateway's cost of opening a session.
    clock: governor::clock::DefaultClock,
    /// Unix seconds at start, for `GET /api/info`.
    started_at: u64,
}

impl Gateway {
    /// Builds the instance with the broker its config names (Redis, or in-memory when
    /// `redis_url` is unset), compiling its routes and token keys. The config is expected to be
    /// validated already ([`Config::load`] does it). Cancelling `shutdown` makes [`serve`]
    /// drain and return.
    pub fn new(config: Config, shutdown: CancellationToken) -> Result<Arc<Self>, StartError> {
        let routes = routes::CompiledRoute::compile_all(&config.routes)?;
        let verifier = Verifier::from_config(&config)?;
        let admission = admission::Admission::new(&config);
        let intake = intake::Intake::new(&config);
        let stopped = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let (registry, resumes) = Registry::new(metrics.clone());
        let broker = Broker::from_config(&config, registry.clone(), stopped.clone(), metrics.clone())?;
        let hub = Hub::new(registry, broker, resumes, metrics.clone());
        let egress = Egress::of(Layer::compile(&config)?.as_ref(), &metrics);
        let hooks = Hooks::from_config(&config, &metrics)?;
        let webhooks = Tracker::start(&config, metrics.clone(), stopped.clone())?;
        Ok(Arc::new(Self {
            config,
            hub,
            next_session: AtomicU64::new(1),
            shutdown,
            stopped,
            draining: AtomicBool::new(false),
            sessions: TaskTracker::new(),
            live: live::Live::default(),
            control: control::Control::default(),
            routes,
            presence: presence::LocalPresence::default(),
            verifier,
            admission,
            intake,
            metrics,
            egress,
            hooks,
            webhooks,
            clock: governor::clock::DefaultClock::default(),
            started_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// This instance's metrics, shared with an in-process scheduler.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Registers a new session's outbox and returns its id. A session that opens once the
    /// drain has begun (its handshake was already under way) is closed at once: the drain
    /// looks at the registered sessions only once more after it set `draining`, and a session
    /// registered after that look sees `draining` set.
    fn open_session(&self, outbox: &Arc<Outbox>) -> MemberId {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.live.open(id, outbox);
        if self.is_draining() {
            outbox.close(crate::protocol::close::RESTARTING);
        }
        id
    }

    fn close_session(&self, id: MemberId) {
        self.live.close(id);
    }

    /// Tells webhooks of a session's change, when they are on.
    pub(crate) fn track(&self, change: impl FnOnce() -> Change) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.report(change());
        }
    }

    /// This instance as the cluster sees it.
    pub(crate) fn node_info(&self) -> NodeInfo {
        NodeInfo {
            node: self.config.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            connections: self.admission.connections() as u64,
            subscriptions: self.metrics.subscriptions.get().max(0) as u64,
            groups: self.hub.registry().group_count() as u64,
        }
    }

    /// Whether the instance is draining (shutting down).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Publishes many messages (each with history where its namespace keeps one) in one broker
    /// round trip, in order; one result per message. `by` as for [`Gateway::publish`].
    pub(crate) async fn publish_all(
        &self,
        messages: &[(GroupName, Box<RawValue>)],
        by: Option<&ClientInfo>,
    ) -> Vec<Result<(), BrokerError>> {
        let batch: Vec<Outgoing> = messages
            .iter()
            .map(|(group, data)| Outgoing {
                group,
                data,
                history: HistoryPolicy::of(self.config.namespace(group.namespace())),
            })
            .collect();
        let outcomes = match self.hub.broker().publisher.publish_all(&batch).await {
            Ok(outcomes) => outcomes,
            Err(e) => vec![Err(e); messages.len()],
        };
        for ((group, data), outcome) in messages.iter().zip(&outcomes) {
            self.published(group, data, by, outcome.is_ok()).await;
        }
        outcomes
    }

    /// Counts a publish, and sends it into the Channels layer when it succeeded and egress is on.
    async fn published(&self, group: &GroupName, data: &RawValue, by: Option<&ClientInfo>, ok: bool) {
        if !ok {
            return self.metrics.dropped("publish_failed");
        }
        self.metrics.messages_in.inc();
        if let Some(egress) = &self.egress {
            let (client, user) = by.map_or((None, None), |c| (Some(c.client.as_str()), c.user.as_deref()));
            // Boxed: only a bridged deployment sends, and every publish's future would carry it.
            Box::pin(egress.send(group, data, client, user)).await;
        }
    }

    /// Publishes `data` to `group` (with history where its namespace keeps one): one broker
    /// operation, the frame encoded once. `by` is the client that published, if one did; with
    /// Channels egress on, a bridged group's message goes into the layer too.
    pub(crate) async fn publish(
        &self,
        group: &GroupName,
        data: &RawValue,
        by: Option<&ClientInfo>,
    ) -> Result<(), BrokerError> {
        let history = HistoryPolicy::of(self.config.namespace(group.namespace()));
        let published = self.hub.broker().publisher.publish(group, data, history).await;
        self.published(group, data, by, published.is_ok()).await;
        published
    }
}

/// The credential of an `Authorization: Bearer <credential>` header (an API key, a client token).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new()
        .merge(demo::router(&gateway))
        .merge(api::router(&gateway))
        .route("/ws", axum::routing::get(session::generic))
        .route("/sse", axum::routing::get(session::sse::stream));
    for route in &gateway.routes {
        router = router.route(&route.path, routes::handler(route.clone()));
    }
    router.with_state(gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::close;

    #[tokio::test]
    async fn a_session_that_opens_once_the_drain_began_is_closed_at_once() {
        let gateway = Gateway::new(Config::default(), CancellationToken::new()).unwrap();
        let early = Outbox::new(4, 1024);
        let early = Arc::new(early);
        gateway.open_session(&early);
        gateway.draining.store(true, Ordering::Release);
        let late = Outbox::new(4, 1024);
        let late = Arc::new(late);
        gateway.open_session(&late);
        assert_eq!(early.close_requested(), None, "the drain closes it in its turn");
        assert_eq!(late.close_requested(), Some(close::RESTARTING), "after the drain's last look");
    }
}
