//! Following the master that Redis Sentinel names.
//!
//! After a failover the sentinels name the new master at once, but the old one keeps serving
//! (and losing) writes until the sentinels get round to demoting it, seconds later. So a
//! [`Watcher`] asks the sentinels every second which server is the master (and checks it with
//! `ROLE`); command connections are taken from a pool for the master named last, and the
//! subscriber moves its subscriptions there as soon as the name changes.

use std::sync::Mutex;
use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{IntoConnectionInfo, RedisConnectionInfo};
use tokio::sync::watch;

use super::nodes::{Master, address};
use super::pool::{self, SinglePool};
use super::{COMMAND_TIMEOUT, Unavailable};

/// How often the sentinels are asked.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// Command connections to whichever server the sentinels name now.
pub(crate) struct SentinelPool {
    master: watch::Receiver<Option<Master>>,
    /// The pool of the master named last, built when the name changes.
    current: Mutex<Option<(String, SinglePool)>>,
}

impl SentinelPool {
    /// Starts asking `sentinels` about `master`; connections to a master use the username,
    /// password and database of the first sentinel URL.
    pub(crate) fn new(sentinels: &[String], master: &str) -> Result<Self, redis::RedisError> {
        let settings = match sentinels.first() {
            Some(url) => url.as_str().into_connection_info()?.redis_settings().clone(),
            None => RedisConnectionInfo::default(),
        };
        let node = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
        let client = SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            master.to_string(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(Watcher { client, named: tx }.run());
        Ok(Self { master: rx, current: Mutex::new(None) })
    }

    /// The master the sentinels named last, once they named one.
    pub(crate) fn master(&self) -> watch::Receiver<Option<Master>> {
        self.master.clone()
    }

    /// A connection to the current master.
    pub(crate) async fn get(&self) -> Result<pool::Conn, Unavailable> {
        let master = named(&self.master).await?;
        let pool = {
            let mut current = crate::lock(&self.current);
            match &*current {
                Some((addr, pool)) if *addr == master.addr => pool.clone(),
                _ => {
                    // Connections to the old master go with its pool.
                    let pool = pool::single(master.info.clone())?;
                    *current = Some((master.addr.clone(), pool.clone()));
                    pool
                }
            }
        };
        pool.get().await.map(pool::Conn::Single).map_err(Unavailable::from_error)
    }
}

/// The master named last; at start, waits (within [`COMMAND_TIMEOUT`]) for the first name.
pub(crate) async fn named(master: &watch::Receiver<Option<Master>>) -> Result<Master, Unavailable> {
    let mut master = master.clone();
    let named = tokio::time::timeout(COMMAND_TIMEOUT, master.wait_for(Option::is_some)).await;
    match named {
        Ok(Ok(named)) => Ok(named.clone().expect("waited for a name")),
        _ => Err(Unavailable("the sentinels named no master".into())),
    }
}

/// Asks the sentinels every [`ASK_EVERY`] until everyone who listens is gone.
struct Watcher {
    client: SentinelClient,
    named: watch::Sender<Option<Master>>,
}

impl Watcher {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut every = tokio::time::interval(ASK_EVERY);
        loop {
            every.tick().await;
            if self.named.is_closed() {
                return;
            }
            let asked = tokio::time::timeout(COMMAND_TIMEOUT, self.client.async_get_client()).await;
            match asked {
                Ok(Ok(client)) => {
                    failures = 0;
                    let info = client.get_connection_info().clone();
                    let master = Master { addr: address(&info), info };
                    self.named.send_if_modified(|named| {
                        let changed = named.as_ref().is_none_or(|known| known.addr != master.addr);
                        if changed {
                            tracing::info!(master = %master.addr, "the sentinels name the redis master");
                            *named = Some(master);
                        }
                        changed
                    });
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "cannot ask the sentinels for the master; retrying");
                    }
                }
                Err(_) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("the sentinels did not name a master in time; retrying");
                    }
                }
            }
        }
    }
}
