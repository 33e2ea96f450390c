//! Every metric Herald exports, in one place. Each instance has its own registry (no global
//! recorder), rendered in the Prometheus text format at `GET /metrics`. All names start with
//! `herald_`:
//!
//! | Metric | Kind | Meaning |
//! | --- | --- | --- |
//! | `herald_connections` | gauge | WebSocket connections held |
//! | `herald_subscriptions` | gauge | client memberships in groups |
//! | `herald_groups` | gauge | groups with local members (= Redis subscriptions) |
//! | `herald_messages_in_total` | counter | messages published through this instance |
//! | `herald_messages_out_total` | counter | frames queued to local clients by fan-out |
//! | `herald_drops_total{reason}` | counter | frames or requests dropped: `slow_consumer`, `rate_limited`, `publish_failed`, `publish_overloaded`, `webhook_change` (a session change webhooks could not be told) |
//! | `herald_closes_total{code}` | counter | connections closed by the server, by close code |
//! | `herald_redis_reconnects_total` | counter | pub/sub reconnections after a lost connection |
//! | `herald_channels_events_total{layer,outcome}` | counter | Channels bridge events: `bridged`, `bad_input` (not what channels_redis writes), `not_bridged`, `echo` (Herald's own egress), `failed` (Herald's broker refused it), and egress `egress` / `egress_failed` |
//! | `herald_hook_calls_total{hook,outcome}` | counter | backend hook calls: `connect`, `subscribe`, `publish` × `ok`, `unauthorized`, `forbidden`, `unavailable` |
//! | `herald_catch_ups_total{outcome}` | counter | members of history groups brought up to date after a `since` or a gap: `recovered`, or `lost` (told `recovered: false`) |
//! | `herald_delivery_latency_seconds` | histogram | publish (at any instance) to fan-out here |
//! | `herald_job_runs_total{job}` | counter | scheduler ticks run |
//! | `herald_job_published_total{job}` | counter | ticks that published |
//! | `herald_job_failures_total{job}` | counter | failed runs (source error, timeout, Redis) |
//! | `herald_job_skipped_total{job,reason}` | counter | ticks skipped: `overlap`, `unchanged` |
//! | `herald_webhooks_sent_total` | counter | webhook events the endpoint took (leader) |
//! | `herald_webhook_failures_total` | counter | failed webhook attempts: a timeout, a connection error, a non-2xx answer (leader) |
//! | `herald_webhook_backlog` | gauge | webhook events waiting in Redis (leader) |
//! | `herald_webhooks_dropped` | gauge | webhook events the deployment dropped from a full backlog, ever (leader) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelsEvent {
    pub layer: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookCall {
    pub hook: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Job {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobSkip {
    pub job: String,
    pub reason: &'static str,
}

/// The metrics of one instance. Cloning a metric shares it, so parts of the system hold the
/// handles they update.
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub groups: Gauge,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub drops: Family<Reason, Counter>,
    pub closes: Family<Code, Counter>,
    pub redis_reconnects: Counter,
    pub catch_ups: Family<Outcome, Counter>,
    pub channels_events: Family<ChannelsEvent, Counter>,
    pub hook_calls: Family<HookCall, Counter>,
    pub delivery_latency: Histogram,
    pub job_runs: Family<Job, Counter>,
    pub job_published: Family<Job, Counter>,
    pub job_failures: Family<Job, Counter>,
    pub job_skipped: Family<JobSkip, Counter>,
    pub webhooks_sent: Counter,
    pub webhook_failures: Counter,
    pub webhook_backlog: Gauge,
    pub webhooks_dropped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let m = Self {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            groups: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            drops: Family::default(),
            closes: Family::default(),
            redis_reconnects: Counter::default(),
            catch_ups: Family::default(),
            channels_events: Family::default(),
            hook_calls: Family::default(),
            // 50 µs .. ~1.6 s
            delivery_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            job_runs: Family::default(),
            job_published: Family::default(),
            job_failures: Family::default(),
            job_skipped: Family::default(),
            webhooks_sent: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_backlog: Gauge::default(),
            webhooks_dropped: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "WebSocket connections held", m.connections.clone());
        registry.register("subscriptions", "Client memberships in groups", m.subscriptions.clone());
        registry.register("groups", "Groups with local members (Redis subscriptions)", m.groups.clone());
        registry.register("messages_in", "Messages published through this instance", m.messages_in.clone());
        registry.register(
            "messages_out",
            "Frames queued to local clients by fan-out",
            m.messages_out.clone(),
        );
        registry.register("drops", "Frames or requests dropped, by reason", m.drops.clone());
        registry.register("closes", "Connections closed by the server, by close code", m.closes.clone());
        registry.register(
            "redis_reconnects",
            "Pub/sub reconnections after a lost connection",
            m.redis_reconnects.clone(),
        );
        registry.register(
            "catch_ups",
            "Members of history groups brought up to date, by outcome",
            m.catch_ups.clone(),
        );
        registry.register(
            "channels_events",
            "Events of the Channels bridge, by layer and outcome",
            m.channels_events.clone(),
        );
        registry.register(
            "hook_calls",
            "Calls of the backend's hooks, by hook and outcome",
            m.hook_calls.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From publish to fan-out here",
            m.delivery_latency.clone(),
        );
        registry.register("job_runs", "Scheduler ticks run", m.job_runs.clone());
        registry.register("job_published", "Scheduler ticks that published", m.job_published.clone());
        registry.register("job_failures", "Failed scheduler runs", m.job_failures.clone());
        registry.register("job_skipped", "Scheduler ticks skipped, by reason", m.job_skipped.clone());
        registry.register("webhooks_sent", "Webhook events the endpoint took", m.webhooks_sent.clone());
        registry.register("webhook_failures", "Failed webhook delivery attempts", m.webhook_failures.clone());
        registry.register("webhook_backlog", "Webhook events waiting in Redis", m.webhook_backlog.clone());
        registry.register(
            "webhooks_dropped",
            "Webhook events dropped from a full backlog",
            m.webhooks_dropped.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.drops.get_or_create(&Reason { reason }).inc();
    }

    /// A member of a history group was brought up to date (`recovered`) or told it could not
    /// be (`lost`).
    pub(crate) fn catch_up(&self, outcome: &'static str) {
        self.catch_ups.get_or_create(&Outcome { outcome }).inc();
    }

    /// A call of a backend hook (`connect`, `subscribe`, `publish`).
    pub(crate) fn hook_call(&self, hook: &'static str, outcome: &'static str) {
        self.hook_calls.get_or_create(&HookCall { hook, outcome }).inc();
    }

    /// An event of the Channels bridge (`layer` = `core` or `pubsub`).
    pub(crate) fn channels_event(&self, layer: &'static str, outcome: &'static str) {
        self.channels_events.get_or_create(&ChannelsEvent { layer, outcome }).inc();
    }

    pub fn job(&self, family: &Family<Job, Counter>, job: &str) -> u64 {
        family.get_or_create(&Job { job: job.to_string() }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::default();
        m.messages_in.inc();
        m.dropped("slow_consumer");
        m.job_runs.get_or_create(&Job { job: "clock".into() }).inc();
        let text = m.render();
        assert!(text.contains("herald_messages_in_total 1"), "{text}");
        assert!(text.contains(r#"herald_drops_total{reason="slow_consumer"} 1"#), "{text}");
        assert!(text.contains(r#"herald_job_runs_total{job="clock"} 1"#), "{text}");
        assert!(text.contains("herald_delivery_latency_seconds_bucket"), "{text}");
    }
}
