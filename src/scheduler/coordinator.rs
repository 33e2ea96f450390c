//! Shared state of scheduler replicas: the leader lease, per-tick claims, unaligned anchors and
//! the data each job last published. Redis holds it for real deployments; the in-memory
//! coordinator serves a single standalone process.
//!
//! Redis keys (all under the configured prefix):
//! - `<p>:scheduler:leader`: the lease, `SET NX PX`; renewed and released only by its holder
//!   (compare-and-`PEXPIRE` / compare-and-`DEL` scripts).
//! - `<p>:job:<name>:tick:<ms>`: claimed with `SET NX PX` before a tick runs, so a tick is run
//!   at most once across replicas, even during a takeover.
//! - `<p>:job:<name>:anchor`: first tick of an unaligned job, `SET NX`.
//! - `<p>:job:<name>:last`: the data last published, for `on_change_only`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::redis::Pool;
use futures_util::future::BoxFuture;

use crate::lock;
use crate::redis::{Unavailable, invoke, query};

/// What a coordinator call resolves to.
type Answer<'a, T> = BoxFuture<'a, Result<T, Unavailable>>;

/// What scheduler replicas share. Every method is one atomic step.
pub(crate) trait Coordinator: Send + Sync + 'static {
    /// Takes the lease if nobody holds it.
    fn acquire<'a>(&'a self, holder: &'a str, ttl: Duration) -> Answer<'a, bool>;
    /// Extends the lease if `holder` still holds it.
    fn renew<'a>(&'a self, holder: &'a str, ttl: Duration) -> Answer<'a, bool>;
    /// Gives the lease up if `holder` holds it.
    fn release<'a>(&'a self, holder: &'a str) -> Answer<'a, ()>;
    /// Claims one nominal tick of a job; false if it was claimed already.
    fn claim_tick<'a>(&'a self, job: &'a str, tick_ms: i64, keep: Duration) -> Answer<'a, bool>;
    /// The job's shared anchor, set to `now_ms` if it has none.
    fn anchor<'a>(&'a self, job: &'a str, now_ms: i64) -> Answer<'a, i64>;
    /// The data the job last published, if any.
    fn last_data<'a>(&'a self, job: &'a str) -> Answer<'a, Option<String>>;
    /// Records the data the job just published.
    fn set_last_data<'a>(&'a self, job: &'a str, data: &'a str) -> Answer<'a, ()>;
}

pub(crate) struct RedisCoordinator {
    pool: Pool,
    prefix: String,
}

static RENEW: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

static RELEASE: LazyLock<::redis::Script> = LazyLock::new(|| {
    ::redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

impl RedisCoordinator {
    pub(crate) fn new(pool: Pool, prefix: &str) -> Self {
        Self { pool, prefix: prefix.to_string() }
    }

    fn leader_key(&self) -> String {
        format!("{}:scheduler:leader", self.prefix)
    }

    fn job_key(&self, job: &str, what: &str) -> String {
        format!("{}:job:{job}:{what}", self.prefix)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl Coordinator for RedisCoordinator {
    fn acquire<'a>(&'a self, holder: &'a str, ttl: Duration) -> Answer<'a, bool> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(self.leader_key()).arg(holder).arg("NX").arg("PX").arg(millis(ttl));
            Ok(query::<Option<String>>(&self.pool, &cmd).await?.is_some())
        })
    }

    fn renew<'a>(&'a self, holder: &'a str, ttl: Duration) -> Answer<'a, bool> {
        Box::pin(async move {
            let mut call = RENEW.key(self.leader_key());
            call.arg(holder).arg(millis(ttl));
            Ok(invoke::<i64>(&self.pool, &call).await? == 1)
        })
    }

    fn release<'a>(&'a self, holder: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut call = RELEASE.key(self.leader_key());
            call.arg(holder);
            invoke::<i64>(&self.pool, &call).await.map(drop)
        })
    }

    fn claim_tick<'a>(&'a self, job: &'a str, tick_ms: i64, keep: Duration) -> Answer<'a, bool> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(self.job_key(job, &format!("tick:{tick_ms}")))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(millis(keep));
            Ok(query::<Option<String>>(&self.pool, &cmd).await?.is_some())
        })
    }

    fn anchor<'a>(&'a self, job: &'a str, now_ms: i64) -> Answer<'a, i64> {
        Box::pin(async move {
            // SET NX ... GET returns the value that was there, or nil when ours was set.
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(self.job_key(job, "anchor")).arg(now_ms).arg("NX").arg("GET");
            Ok(query::<Option<i64>>(&self.pool, &cmd).await?.unwrap_or(now_ms))
        })
    }

    fn last_data<'a>(&'a self, job: &'a str) -> Answer<'a, Option<String>> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("GET");
            cmd.arg(self.job_key(job, "last"));
            query(&self.pool, &cmd).await
        })
    }

    fn set_last_data<'a>(&'a self, job: &'a str, data: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(self.job_key(job, "last")).arg(data);
            query::<()>(&self.pool, &cmd).await
        })
    }
}

/// One process, no replicas: it always leads and every tick is its own.
#[derive(Default)]
pub(crate) struct MemoryCoordinator {
    anchors: Mutex<HashMap<String, i64>>,
    last: Mutex<HashMap<String, String>>,
}

impl Coordinator for MemoryCoordinator {
    fn acquire<'a>(&'a self, _: &'a str, _: Duration) -> Answer<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn renew<'a>(&'a self, _: &'a str, _: Duration) -> Answer<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn release<'a>(&'a self, _: &'a str) -> Answer<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn claim_tick<'a>(&'a self, _: &'a str, _: i64, _: Duration) -> Answer<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn anchor<'a>(&'a self, job: &'a str, now_ms: i64) -> Answer<'a, i64> {
        let anchor = *lock(&self.anchors).entry(job.to_string()).or_insert(now_ms);
        Box::pin(async move { Ok(anchor) })
    }

    fn last_data<'a>(&'a self, job: &'a str) -> Answer<'a, Option<String>> {
        let last = lock(&self.last).get(job).cloned();
        Box::pin(async move { Ok(last) })
    }

    fn set_last_data<'a>(&'a self, job: &'a str, data: &'a str) -> Answer<'a, ()> {
        lock(&self.last).insert(job.to_string(), data.to_string());
        Box::pin(async { Ok(()) })
    }
}
