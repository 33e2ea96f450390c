//! `[[jobs]]` and `[scheduler]`: what the scheduler publishes, when, and how replicas share it.
//!
//! ```toml
//! [scheduler]
//! lease_ttl = "5s"
//!
//! [[jobs]]
//! name = "dashboard"
//! group = "dashboard.main"
//! every = "10s"            # or: cron = "*/10 * * * * *" (with a seconds field)
//! align = true             # fire at :00, :10, :20 ...
//! timeout = "5s"
//! on_change_only = false
//! command = ["./stats.sh"] # or: http = { url = ".." }, static = {..}, builtin = "clock"
//! ```
//! Values stay raw here; the scheduler compiles each job once at start, and its errors are
//! config errors naming the job (`jobs[0] (dashboard): cron: ...`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long a leader's lease lasts without renewal; a standby takes over within it.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { lease_ttl: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    /// Unique job name (the group-name alphabet), used in logs and Redis keys.
    pub name: String,
    /// Group the job's data is published to.
    pub group: String,
    /// Fixed period, e.g. `"10s"`; exclusive with `cron`.
    pub every: Option<String>,
    /// Cron expression with a seconds field, e.g. `"*/10 * * * * *"`; exclusive with `every`.
    pub cron: Option<String>,
    /// With `every`: fire on wall-clock multiples of the period.
    pub align: bool,
    /// Longest a run may take (default: the period, at most 30 s).
    pub timeout: Option<String>,
    /// Publish only when the data differs from what the job last published.
    pub on_change_only: bool,
    /// Program and arguments; its stdout must be one JSON document.
    pub command: Option<Vec<String>>,
    /// HTTP request whose JSON response body is the data.
    pub http: Option<HttpSourceConfig>,
    /// Fixed data.
    #[serde(rename = "static")]
    pub static_data: Option<serde_json::Value>,
    /// `"clock"` or `"system"`.
    pub builtin: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSourceConfig {
    pub url: String,
    /// HTTP method, `GET` unless set.
    pub method: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Whether to follow redirects (to the same host only); a redirect not followed fails the run.
    pub follow_redirects: bool,
}

pub(super) fn validate(jobs: &[JobConfig], scheduler: &SchedulerConfig) -> Result<(), ConfigError> {
    if scheduler.lease_ttl < Duration::from_millis(200) {
        return Err(invalid("scheduler.lease_ttl", "must be at least 200ms"));
    }
    let mut names = HashSet::new();
    for (i, job) in jobs.iter().enumerate() {
        if !names.insert(job.name.as_str()) {
            return Err(invalid(job.key(i), "duplicate job name"));
        }
    }
    Ok(())
}

impl JobConfig {
    /// How errors name the `i`-th job: `jobs[i] (name)`.
    pub fn key(&self, i: usize) -> String {
        format!("jobs[{i}] ({})", self.name)
    }
}
