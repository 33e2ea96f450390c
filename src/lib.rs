//! Herald: a horizontally scalable WebSocket pub/sub gateway.
//!
//! Browsers hold WebSockets to stateless gateway instances and join *groups*; anything that
//! publishes to a group (an HTTP call, another client, a scheduler) reaches every member of that
//! group on every instance, through Redis.
//!
//! ```text
//!  publishers                      Redis                     gateways (N, stateless)      browsers
//!  POST /api/publish ──┐                                  ┌─ gateway A: hub ─ sessions ─ ws clients
//!  client "publish" ───┼─► PUBLISH <prefix>:group:<g> ────┼─ gateway B: hub ─ sessions ─ ws clients
//!                      │   (one per message)              └─ gateway C: hub ─ sessions ─ ws clients
//!                      │                                         ▲ one SUBSCRIBE per group per instance
//! ```
//!
//! A message is encoded into its client frame once, by the publisher; the frame crosses the
//! broker as-is (behind a publish-time stamp the receiving instance strips) and every local
//! member of the group gets the same shared bytes through a bounded per-client queue.
//!
//! Module map:
//! - [`auth`]: token verification and what a token permits.
//! - [`bench`]: the load tool behind `herald bench`, and its baseline server.
//! - [`config`]: layered, validated configuration.
//! - [`group`]: validated group names and namespaces.
//! - [`protocol`]: client frames, error codes, close codes.
//! - [`broker`]: the [`broker::Broker`] contract, in-memory and Redis implementations.
//! - [`hub`]: group membership and fan-out to local sessions.
//! - [`outbox`]: each client's bounded outbound queue and close signal.
//! - [`metrics`]: every exported metric, in one place.
//! - [`gateway`]: the axum server, WebSocket sessions, HTTP API, demo page.
//! - [`scheduler`]: jobs that publish on a schedule, leader election between replicas.
//! - [`shutdown`]: signal handling, for `main` only.
//!
//! The library never binds ports (but for `herald bench`'s in-process baseline), reads the
//! environment (except [`config::Config::load`], which `main` calls) or installs signal
//! handlers: the caller passes a listener, a config and a shutdown token in.

pub mod auth;
pub mod bench;
pub mod broker;
pub mod config;
pub mod gateway;
pub mod group;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod scheduler;
pub mod shutdown;

/// Why a gateway or scheduler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("{0}")]
    Other(String),
}

/// Locks `mutex`, ignoring poisoning. Every lock in Herald guards state that a panic cannot
/// leave half-updated in a harmful way (maps of members, counters, queues of frames), and one
/// panicking task must not take every later user of the lock down with it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
