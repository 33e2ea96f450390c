//! The leader's side of webhooks: sends the outbox to the endpoint, vacates groups that stayed
//! empty, and expires gateways that stopped reporting.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::StartError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::{Backoff, Pool, Unavailable};

/// How often groups due to be vacated are looked at (and how soon a new event is noticed).
const TICK: Duration = Duration::from_millis(100);
/// How often the nodes' liveness is checked, in ticks.
const EXPIRY_TICKS: u32 = 10;
/// Events read from the outbox at once.
const BATCH: isize = 64;

/// Removes the outbox's first event if it is still the one that was sent.
fn pop_sent() -> &'static ::redis::Script {
    static SCRIPT: std::sync::OnceLock<::redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        ::redis::Script::new(
            "if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) return 1 end return 0",
        )
    })
}

/// Delivers the deployment's webhooks while this process leads.
pub(crate) struct Deliverer {
    pool: Pool,
    settings: Settings,
    url: String,
    secret: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    /// The deliverer of a config with webhooks on (validated: it has Redis and a secret).
    pub(crate) fn from_config(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, StartError> {
        let webhooks = &config.webhooks;
        let (Some(url), Some(target)) = (&webhooks.url, config.redis()) else { return Ok(None) };
        let http = reqwest::Client::builder()
            .timeout(webhooks.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(StartError::HttpClient)?;
        Ok(Some(Arc::new(Self {
            pool: Pool::new(&target)?,
            settings: Settings::new(config),
            url: url.clone(),
            secret: webhooks.secret.clone().unwrap_or_default(),
            http,
            metrics,
        })))
    }

    /// Delivers and keeps the state up to date until `term` ends (this term of leadership).
    pub(crate) async fn run(self: Arc<Self>, term: CancellationToken) {
        let upkeep = tokio::spawn(self.clone().upkeep(term.clone()));
        self.deliver(&term).await;
        let _ = upkeep.await;
    }

    async fn upkeep(self: Arc<Self>, term: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        for round in 0u32.. {
            tokio::select! {
                _ = term.cancelled() => return,
                _ = tick.tick() => {}
            }
            let expiry = if round % EXPIRY_TICKS == 0 { self.expire_dead().await } else { Ok(()) };
            if let Err(e) = expiry.and(self.vacate().await) {
                tracing::warn!(error = %e, "webhook upkeep failed; retrying");
            }
        }
    }

    /// Vacates the groups that stayed empty for `vacate_delay`.
    async fn vacate(&self) -> Result<(), Unavailable> {
        let keys = &self.settings.keys;
        let call = self.settings.call("vacate", &keys.key("none"), "", ("", "", ""), false);
        crate::redis::invoke::<i64>(&self.pool, &call).await.map(drop)
    }

    /// Replays the leaves and disconnects of every node whose liveness key expired; updates the
    /// backlog gauges.
    async fn expire_dead(&self) -> Result<(), Unavailable> {
        let keys = &self.settings.keys;
        let nodes: Vec<String> =
            crate::redis::query(&self.pool, ::redis::cmd("SMEMBERS").arg(keys.key("nodes"))).await?;
        for node_key in nodes {
            let alive: bool =
                crate::redis::query(&self.pool, ::redis::cmd("EXISTS").arg(keys.alive(&node_key))).await?;
            if !alive {
                let node = keys.node_name(&node_key);
                tracing::info!(node, "a gateway stopped reporting: its clients leave");
                let call = self.settings.call("expire", &node_key, node, ("", "", ""), false);
                crate::redis::invoke::<i64>(&self.pool, &call).await?;
            }
        }
        let mut pipe = ::redis::pipe();
        pipe.cmd("LLEN").arg(keys.key("outbox")).cmd("GET").arg(keys.key("dropped"));
        let (backlog, dropped): (i64, Option<i64>) = crate::redis::run_pipeline(&self.pool, &pipe).await?;
        self.metrics.webhook_backlog.set(backlog);
        self.metrics.webhooks_dropped.set(dropped.unwrap_or(0));
        Ok(())
    }

    /// Sends the outbox's events in order, each until the endpoint takes it.
    async fn deliver(&self, term: &CancellationToken) {
        let outbox = self.settings.keys.key("outbox");
        let mut backoff = Backoff::default();
        while !term.is_cancelled() {
            let mut wait = TICK;
            match crate::redis::query::<Vec<String>>(
                &self.pool,
                ::redis::cmd("LRANGE").arg(&outbox).arg(0).arg(BATCH - 1),
            )
            .await
            {
                Ok(events) => {
                    for event in events {
                        if let Err(e) = self.send(&event).await {
                            self.metrics.webhook_failures.inc();
                            tracing::warn!(error = %e, "webhook delivery failed; retrying");
                            wait = backoff.fail();
                            break;
                        }
                        backoff.reset();
                        self.metrics.webhooks_sent.inc();
                        wait = Duration::ZERO;
                        let mut pop = pop_sent().prepare_invoke();
                        pop.key(&outbox).arg(&event);
                        if let Err(e) = crate::redis::invoke::<i64>(&self.pool, &pop).await {
                            tracing::warn!(error = %e, "could not remove a delivered webhook; it may be sent again");
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook outbox");
                    wait = backoff.fail();
                }
            }
            tokio::select! {
                _ = term.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// POSTs one event, signed; Ok once the endpoint answered 2xx.
    async fn send(&self, body: &str) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Herald-Signature", signature(self.secret.as_bytes(), body.as_bytes()))
            .body(body.to_string())
            .send()
            .await
            // Without the URL, which may carry a secret.
            .map_err(|e| e.without_url().to_string())?;
        match response.status().is_success() {
            true => Ok(()),
            false => Err(format!("the endpoint answered {}", response.status())),
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn signs_like_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
