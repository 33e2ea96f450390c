//! Herald: a horizontally scalable WebSocket pub/sub gateway.
//!
//! Browsers hold WebSockets to stateless gateway instances and join *groups*; anything that
//! publishes to a group (an HTTP call, another client, a scheduler) reaches every member of that
//! group on every instance, through Redis.
//!
//! ```text
//!  publish path                                      receive path (in every gateway)
//!  ------------                                      -------------------------------
//!  POST /api/publish ──┐                             Redis subscriber (one SSUBSCRIBE per group,
//!  client "publish" ───┼─► broker: one SPUBLISH ─►     │  on the master of the group's shard)
//!                      │   to the group's shard        └► hub: group → local members (shared frame)
//!  scheduler tick ─────┘   (or one history script)         └► gate: holds live frames while a member recovers
//!                                                               └► outbox: bounded per client
//!                                                                    └► writer task → socket
//! ```
//!
//! A message is encoded into its client frame once, by the publisher; the frame crosses the
//! broker as-is (behind a publish-time stamp the receiving instance strips) and every local
//! member of the group gets the same shared bytes through its bounded queue.
//!
//! **Layering.** Dependencies point one way: `main` → [`gateway`] / [`scheduler`] → `hub` →
//! `broker` → `redis` (connection plumbing). [`config`], [`group`], [`protocol`] and
//! [`metrics`] are leaves that import no feature module.
//!
//! Module map:
//! - [`config`]: layered configuration, validated once at load.
//! - [`group`]: validated group names and namespaces.
//! - [`protocol`]: client frames, error codes, close codes.
//! - [`metrics`]: every exported metric, in one place.
//! - `redis`: Redis pools (one server, Sentinel, Cluster), command timeouts, pipelines per hash
//!   slot, the deployment's shards, sharded pub/sub connections, reconnect backoff.
//! - `broker`: the broker contract (publish, subscribe, history, presence, directory) with its
//!   in-memory and Redis backends.
//! - `hub`: group membership and fan-out to local sessions; the recovery gate.
//! - `outbox`: each client's bounded outbound queue and close signal.
//! - [`auth`]: token verification and what a token permits.
//! - `hooks`: the application backend's connect, subscribe and publish hooks, and webhooks (the
//!   deployment's events, decided in Redis and delivered by the scheduler's leader).
//! - [`gateway`]: the axum server, WebSocket and Server-Sent Events sessions, HTTP API (with the
//!   control API, which reaches every gateway through Herald's own `~control` group), demo page.
//! - [`scheduler`]: jobs that publish on a schedule, leader election between replicas.
//! - `channels`: the bridge from a Django Channels layer (channels_redis) to Herald groups, and
//!   back; it runs in the scheduler's leader.
//! - [`shutdown`]: signal handling, for `main` only.
//!
//! The public surface is what `main`, the load tool (`herald-bench`) and the integration tests
//! use: [`config`], [`gateway::Gateway`] with [`gateway::serve`], [`scheduler::Scheduler`],
//! [`auth::Verifier`], the [`protocol`] codec, [`group`] names, [`group_channel`], [`group_slot`] and
//! [`metrics::Metrics`]. Everything else is crate-private, so the compiler reports dead code.
//! A scheduler may run inside a gateway process (standalone); it then publishes through that
//! gateway's broker.
//!
//! The library never binds ports, reads the environment (except [`config::Config::load`], which
//! `main` calls) or installs signal handlers: the caller passes a listener, a config and a
//! shutdown token in.

pub mod auth;
mod broker;
mod channels;
pub mod config;
pub mod gateway;
pub mod group;
mod hooks;
mod hub;
pub mod metrics;
mod outbox;
pub mod protocol;
mod redis;
pub mod scheduler;
pub mod shutdown;

pub use broker::redis::{group_channel, group_slot};

/// Why a gateway or scheduler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config names something that does not compile (a route, a key file, a job).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The HTTP client of the scheduler's sources could not be built.
    #[error("http client: {0}")]
    HttpClient(reqwest::Error),
}

/// Locks `mutex`, ignoring poisoning. Every lock in Herald guards state that a panic cannot
/// leave half-updated in a harmful way (maps of members, counters, queues of frames), and one
/// panicking task must not take every later user of the lock down with it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
