//! The gateway: an axum server that holds client WebSockets and fans group messages out to them.
//!
//! [`Gateway`] is the state every handler shares: config, the [`Hub`], this node's id and the
//! shutdown token. [`serve`] runs the HTTP server on a listener the caller bound, until the
//! token is cancelled; sessions then close with 1012 and `serve` returns once they are gone.

mod admission;
mod api;
mod demo;
mod presence;
mod routes;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::StartError;
use crate::auth::Verifier;
use crate::broker::{self, Broker, BrokerError};
use crate::config::{Config, ConfigError};
use crate::group::GroupName;
use crate::hub::{Hub, Registry};

/// Shared state of one gateway instance.
pub struct Gateway {
    config: Config,
    hub: Hub,
    next_session: AtomicU64,
    shutdown: CancellationToken,
    /// Live WebSocket sessions, so `serve` can wait for them to close on shutdown.
    sessions: TaskTracker,
    routes: Vec<Arc<routes::CompiledRoute>>,
    /// This instance's presence entries, refreshed in the broker by a heartbeat.
    presence: presence::LocalPresence,
    /// Verifies client tokens; `None` when no key is configured.
    verifier: Option<Verifier>,
    admission: admission::Admission,
}

impl Gateway {
    /// Builds the instance with the broker its config names (Redis, or in-memory when
    /// `redis_url` is unset). Cancelling `shutdown` stops the broker and every session.
    pub fn new(config: Config, shutdown: CancellationToken) -> Result<Arc<Self>, StartError> {
        config.validate()?;
        let routes = config
            .routes
            .iter()
            .map(|r| routes::CompiledRoute::compile(r).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let verifier =
            Verifier::from_config(&config).map_err(|e| ConfigError(format!("auth_public_key_file: {e}")))?;
        let admission = admission::Admission::new(&config);
        let registry = Registry::new();
        let broker: Arc<dyn Broker> = match &config.redis_url {
            Some(url) => Arc::new(broker::redis::RedisBroker::start(
                url,
                &config.redis_prefix,
                registry.clone(),
                shutdown.clone(),
            )?),
            None => Arc::new(broker::memory::MemoryBroker::new(registry.clone())),
        };
        let hub = Hub::new(registry, broker);
        Ok(Arc::new(Self {
            config,
            hub,
            next_session: AtomicU64::new(1),
            shutdown,
            sessions: TaskTracker::new(),
            routes,
            presence: presence::LocalPresence::default(),
            verifier,
            admission,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes `data` to `group` (with history where its namespace keeps one): one broker
    /// operation, the frame encoded once.
    pub async fn publish(&self, group: &GroupName, data: &RawValue) -> Result<(), BrokerError> {
        let history = self.config.namespace(group.namespace()).history();
        self.hub.broker().publish(group, data, history).await
    }
}

/// Serves HTTP and WebSockets on `listener` until the gateway's shutdown token is cancelled,
/// then waits for every session to close.
///
/// The accept loop is hyper's own rather than `axum::serve`, for one setting axum does not
/// expose: a header read timeout (`handshake_timeout`), so a client that opens a connection and
/// never finishes its request (slowloris) is dropped instead of holding a socket forever.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let shutdown = gateway.shutdown.clone();
    tokio::spawn(presence::heartbeat(gateway.clone()));
    let app = router(gateway.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(gateway.config.handshake_timeout);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Keep-alive HTTP connections finish their requests; upgraded sockets are sessions.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    gateway.sessions.close();
    gateway.sessions.wait().await;
    Ok(())
}

fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new()
        .merge(demo::router())
        .merge(api::router(&gateway))
        .route("/ws", axum::routing::get(session::generic));
    for route in &gateway.routes {
        router = router.route(&route.path, routes::handler(route.clone()));
    }
    router.with_state(gateway)
}
