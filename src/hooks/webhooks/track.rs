//! The gateway's side of webhooks: its sessions' changes, reported to Redis in order.
//!
//! Sessions hand changes to [`Tracker::report`], which never waits; one task sends them, a
//! batch per round trip, through the state script. While Redis is unreachable the batch is
//! retried (in order) and new changes queue up to [`QUEUE`]; beyond that they are dropped and
//! counted (`herald_drops_total{reason="webhook_change"}`): the deployment's counts then drift
//! until this gateway's run ends and the leader expires it. The same task keeps the gateway's
//! liveness key alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::{Backoff, Pool, Unavailable};

/// Changes waiting to be sent before new ones are dropped.
const QUEUE: usize = 100_000;
/// Changes sent in one round trip at most.
const BATCH: usize = 256;

/// A change of a session that webhooks may care about.
#[derive(Debug)]
pub(crate) enum Change {
    /// A session authenticated as `user`.
    Connect {
        client: String,
        user: String,
    },
    Disconnect {
        client: String,
    },
    Join {
        client: String,
        user: Option<String>,
        group: String,
    },
    Leave {
        client: String,
        group: String,
    },
    /// Answered once every change reported before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Reports a gateway's changes; cheap to call from any session.
pub(crate) struct Tracker {
    changes: mpsc::Sender<Change>,
    metrics: Arc<Metrics>,
}

impl Tracker {
    /// The tracker of a gateway whose config has webhooks on (and so Redis), sending until
    /// `stopped`.
    pub(crate) fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        stopped: CancellationToken,
    ) -> Result<Option<Self>, crate::config::ConfigError> {
        let Some(target) = config.redis().filter(|_| config.webhooks.enabled()) else { return Ok(None) };
        let settings = Settings::new(config);
        let incarnation = format!("{:08x}", rand::random::<u32>());
        let sender = Sender {
            pool: Pool::new(&target)?,
            node_key: settings.keys.node(&config.node_id, &incarnation),
            node: config.node_id.clone(),
            settings,
        };
        let (changes, rx) = mpsc::channel(QUEUE);
        tokio::spawn(sender.run(rx, stopped));
        Ok(Some(Self { changes, metrics }))
    }

    /// Queues `change` to be sent; never waits.
    pub(crate) fn report(&self, change: Change) {
        if self.changes.try_send(change).is_err() {
            self.metrics.dropped("webhook_change");
        }
    }

    /// Waits (up to `within`) until every change reported so far was sent.
    pub(crate) async fn flushed(&self, within: Duration) {
        let (done, sent) = oneshot::channel();
        if self.changes.send(Change::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(within, sent).await;
        }
    }
}

struct Sender {
    pool: Pool,
    settings: Settings,
    node: String,
    node_key: String,
}

impl Sender {
    async fn run(self, mut changes: mpsc::Receiver<Change>, stopped: CancellationToken) {
        let mut alive = tokio::time::interval(self.settings.liveness / 3);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = alive.tick() => {
                    let call = self.settings.call("alive", &self.node_key, &self.node, ("", "", ""), true);
                    if let Err(e) = crate::redis::invoke::<i64>(&self.pool, &call).await {
                        tracing::warn!(error = %e, "could not refresh this gateway's webhook liveness");
                    }
                }
                received = changes.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.send(&mut batch, &stopped).await;
                }
            }
            if stopped.is_cancelled() && changes.is_empty() {
                return;
            }
        }
    }

    /// Sends `batch` in order, retrying while Redis is unreachable (until `stopped`); answers
    /// its flushes.
    async fn send(&self, batch: &mut Vec<Change>, stopped: &CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            match self.try_send(batch).await {
                Ok(()) => break,
                Err(e) if stopped.is_cancelled() => {
                    tracing::warn!(error = %e, changes = batch.len(), "webhook changes lost at shutdown");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not report webhook changes; retrying");
                    tokio::time::sleep(backoff.fail()).await;
                }
            }
        }
        for change in batch.drain(..) {
            if let Change::Flush(done) = change {
                let _ = done.send(());
            }
        }
    }

    async fn try_send(&self, batch: &[Change]) -> Result<(), Unavailable> {
        let slot = self.settings.keys.slot();
        let calls: Vec<_> = batch
            .iter()
            .filter_map(|change| {
                let (op, parts) = match change {
                    Change::Connect { client, user } => ("connect", (client.as_str(), user.as_str(), "")),
                    Change::Disconnect { client } => ("disconnect", (client.as_str(), "", "")),
                    Change::Join { client, user, group } => {
                        ("join", (client.as_str(), user.as_deref().unwrap_or(""), group.as_str()))
                    }
                    Change::Leave { client, group } => ("leave", (client.as_str(), "", group.as_str())),
                    Change::Flush(_) => return None,
                };
                Some((slot, self.settings.call(op, &self.node_key, &self.node, parts, true)))
            })
            .collect();
        if calls.is_empty() {
            return Ok(());
        }
        crate::redis::invoke_all(&self.pool, super::script(), &calls).await
    }
}
