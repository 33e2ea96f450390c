//! Typed configuration, layered: built-in defaults, the defaults of the command being run
//! ([`Mode`]), then an optional TOML file, then `HERALD_*` environment variables, then
//! command-line flags. [`Config::load`] validates the result once and names the offending key
//! in every error, so a bad config stops the process at start.
//!
//! This module is a leaf: it imports no feature module. Values that need compiling (cron
//! expressions, PEM keys, route templates) stay raw here; the gateway and the scheduler each
//! compile what they use once, at start, and their errors are [`ConfigError`]s naming the key.

mod channels;
mod jobs;
mod modes;
mod namespaces;
mod proxy;
mod redis;
mod routes;
mod security;
mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

pub use channels::{ChannelsConfig, ChannelsLayer, SerializerFormat};
pub use jobs::{HttpSourceConfig, JobConfig, SchedulerConfig};
pub use modes::Mode;
pub use namespaces::{MAX_HISTORY_SIZE, NamespaceConfig};
pub use proxy::ProxyConfig;
pub use redis::RedisTarget;
pub use routes::RouteConfig;
pub use security::AuthMode;
pub use webhooks::{WEBHOOK_EVENTS, WebhooksConfig};

/// Environment variables with the `HERALD_` prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["config", "log_format"];

/// Why a config was refused: `<key>: <what is wrong>`, for the operator to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl std::fmt::Display, why: impl std::fmt::Display) -> Self {
        Self(format!("{key}: {why}"))
    }

    /// The text after `invalid config: `, starting with the key.
    pub fn message(&self) -> &str {
        &self.0
    }
}

fn invalid(key: impl std::fmt::Display, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(key, why)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket server binds.
    pub listen: SocketAddr,
    /// Worker threads of the process; 0: one per CPU core.
    pub workers: usize,
    /// Redis URL; with no Redis at all (see [`RedisTarget`]), the embedded in-memory broker
    /// (one instance only).
    pub redis_url: Option<String>,
    /// Nodes of a Redis Cluster to start from, instead of `redis_url`.
    #[serde(deserialize_with = "comma_list")]
    pub redis_cluster_nodes: Vec<String>,
    /// Sentinels watching the master (`redis_sentinel_master`), instead of `redis_url`.
    #[serde(deserialize_with = "comma_list")]
    pub redis_sentinels: Vec<String>,
    /// The master's name among the sentinels.
    pub redis_sentinel_master: Option<String>,
    /// Prefix of every Redis key and channel Herald uses.
    pub redis_prefix: String,
    /// This instance's id, shown to clients in `welcome`; random when not set.
    pub node_id: String,
    /// Keys accepted by the HTTP API (`Authorization: Bearer <key>`). Empty: loopback only.
    #[serde(deserialize_with = "comma_list")]
    pub api_keys: Vec<String>,
    /// Client authentication; unset: `off` for `standalone`, `required` for `gateway`.
    pub auth: Option<AuthMode>,
    /// Shared secret of HS256 tokens.
    pub auth_hmac_secret: Option<String>,
    /// PEM public key of RS256 or ES256 tokens.
    pub auth_public_key_file: Option<PathBuf>,
    /// How long a client may take to send its `auth` frame.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Browser origins allowed to open WebSockets (exact, or with `*` wildcards); the gateway's
    /// own host is always allowed, and requests without `Origin` are not browsers.
    #[serde(deserialize_with = "comma_list")]
    pub allowed_origins: Vec<String>,
    /// Largest client frame accepted; larger frames close the connection with 1009. Also the
    /// largest message of an HTTP publish.
    pub max_frame_bytes: usize,
    /// Largest HTTP publish request (a batch of messages); never less than `max_frame_bytes`.
    pub max_batch_bytes: usize,
    /// Messages of HTTP publishes in flight to the broker at once; more wait (`publish_wait`).
    pub max_pending_publishes: usize,
    /// How long an HTTP publish may wait for room (or for the fan-out to catch up) before it
    /// is refused with 503 and `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub publish_wait: Duration,
    /// Frames a client's outbound queue holds before the client is closed as too slow (4008).
    pub outbound_queue: usize,
    /// Bytes a client's outbound queue holds before the client is closed as too slow (4008).
    pub outbound_queue_bytes: usize,
    /// Groups one connection may be subscribed to at once.
    pub max_groups_per_client: usize,
    /// Requests per second one connection may make (token bucket refill rate).
    pub rate_limit: u32,
    /// Requests one connection may make in a burst (token bucket size).
    pub rate_limit_burst: u32,
    /// Refused requests in a row after which the connection is closed with 4029.
    pub rate_limit_strikes: u32,
    /// WebSocket connections this instance accepts; more get HTTP 503.
    pub max_connections: usize,
    /// WebSocket connections one source IP may hold; more get HTTP 429.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send its HTTP request headers (slowloris).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often the server pings each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long past a ping a silent client is kept before it is closed.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// How long a write to a client's socket may make no progress before the client is closed
    /// as a slow consumer (it stopped reading).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// On shutdown, clients are closed (1012) one by one over this period.
    #[serde(with = "humantime_serde")]
    pub drain_period: Duration,
    /// Per-namespace policy, keyed by namespace (the group name before its first `.`).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// How long presence entries of an instance outlive its last heartbeat (so a crashed
    /// instance leaves no ghosts).
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// WebSocket paths that auto-subscribe and grant publishing, like Channels' routing.
    pub routes: Vec<RouteConfig>,
    /// Leader election of scheduler replicas.
    pub scheduler: SchedulerConfig,
    /// Data the scheduler publishes on a schedule.
    pub jobs: Vec<JobConfig>,
    /// The bridge from a Django Channels layer, when set.
    pub channels: Option<ChannelsConfig>,
    /// Hooks to the application's backend.
    pub proxy: ProxyConfig,
    /// Events of the deployment POSTed to the backend.
    pub webhooks: WebhooksConfig,
    /// Serve `POST /demo/token`, which signs a token for any name with `auth_hmac_secret`, so
    /// the demo page shows who is there. Standalone turns it on when it runs without keys of
    /// its own (with a random secret); never turn it on for a real deployment.
    pub demo_tokens: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            workers: 0,
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            redis_sentinels: Vec::new(),
            redis_sentinel_master: None,
            redis_prefix: "herald".into(),
            node_id: random_node_id(),
            api_keys: Vec::new(),
            auth: None,
            auth_hmac_secret: None,
            auth_public_key_file: None,
            auth_timeout: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            max_frame_bytes: 64 * 1024,
            max_batch_bytes: 1024 * 1024,
            max_pending_publishes: 10_000,
            publish_wait: Duration::from_secs(1),
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            max_groups_per_client: 100,
            rate_limit: 50,
            rate_limit_burst: 100,
            rate_limit_strikes: 20,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            drain_period: Duration::from_secs(10),
            namespaces: BTreeMap::new(),
            presence_ttl: Duration::from_secs(30),
            routes: Vec::new(),
            scheduler: SchedulerConfig::default(),
            jobs: Vec::new(),
            channels: None,
            webhooks: WebhooksConfig::default(),
            proxy: ProxyConfig::default(),
            demo_tokens: false,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl Config {
    /// Layers defaults, `file`, the process's `HERALD_*` environment and `overrides`, fills in
    /// what `mode` implies, then validates. Nested keys use `__` in variable names
    /// (`HERALD_NAMESPACES__CHAT__CLIENT_PUBLISH`).
    pub fn load(file: Option<&Path>, overrides: Overrides, mode: Mode) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(format!("config file {}", path.display()), "not found"));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut config: Config = figment
            .merge(Env::prefixed("HERALD_").split("__").ignore(NON_CONFIG_ENV))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        // An empty variable (`HERALD_REDIS_URL=`) unsets, as it does for the lists.
        for key in [&mut config.redis_url, &mut config.redis_sentinel_master] {
            key.take_if(|value| value.is_empty());
        }
        mode.apply(&mut config);
        mode.check(&config)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        redis::validate(self)?;
        if self.workers > 1024 {
            return Err(invalid("workers", "must be at most 1024 (0: one per CPU core)"));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis_prefix", "must be non-empty and without spaces"));
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(invalid("node_id", "must be 1 to 64 of A-Z a-z 0-9 _ . -"));
        }
        if let Some(i) = self.api_keys.iter().position(|k| k.trim().is_empty()) {
            return Err(invalid(format!("api_keys[{i}]"), "must not be empty"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_frame_bytes) {
            return Err(invalid("max_frame_bytes", "must be between 1024 and 16777216"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_batch_bytes) {
            return Err(invalid("max_batch_bytes", "must be between 1024 and 67108864"));
        }
        if !(1..=10_000_000).contains(&self.max_pending_publishes) {
            return Err(invalid("max_pending_publishes", "must be between 1 and 10000000"));
        }
        if self.publish_wait > Duration::from_secs(60) {
            return Err(invalid("publish_wait", "must be at most 60s"));
        }
        if !(1..=1_000_000).contains(&self.outbound_queue) {
            return Err(invalid("outbound_queue", "must be between 1 and 1000000"));
        }
        for (name, namespace) in &self.namespaces {
            if name.contains('.') || crate::group::GroupName::new(name).is_err() {
                return Err(invalid(format!("namespaces.{name}"), "not a valid namespace name"));
            }
            namespace.validate().map_err(|e| invalid(format!("namespaces.{name}"), e))?;
        }
        if self.presence_ttl < Duration::from_secs(1) {
            return Err(invalid("presence_ttl", "must be at least 1s"));
        }
        security::validate(self)?;
        proxy::validate(self)?;
        if let Some(bridge) = &self.channels {
            channels::validate(bridge, self.redis().as_ref())?;
        }
        webhooks::validate(&self.webhooks, self.redis().is_some())?;
        jobs::validate(&self.jobs, &self.scheduler)
    }

    /// The authentication mode in effect (`off` when unset: `main` picks per command).
    pub fn auth_mode(&self) -> AuthMode {
        self.auth.unwrap_or(AuthMode::Off)
    }

    /// The policy of `namespace` (the default policy when it has no entry).
    pub fn namespace(&self, namespace: &str) -> &NamespaceConfig {
        static DEFAULT: LazyLock<NamespaceConfig> = LazyLock::new(NamespaceConfig::default);
        self.namespaces.get(namespace).unwrap_or(&DEFAULT)
    }
}

fn random_node_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Accepts `"a,b"` (as environment variables give it) or a list of strings.
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
        Number(u64),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(list) => list,
        Either::One(s) => s.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect(),
        Either::Number(n) => vec![n.to_string()],
    })
}

#[cfg(test)]
// `Jail` closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn load_in(jail: &Jail, file: Option<&str>, overrides: Overrides) -> Result<Config, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        Config::load(path.as_deref(), overrides, Mode::Standalone)
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            let defaults = load_in(jail, None, Overrides::default()).unwrap();
            assert_eq!(defaults.listen, "127.0.0.1:8000".parse().unwrap());
            assert_eq!((defaults.redis_url, defaults.redis_prefix.as_str()), (None, "herald"));
            assert_eq!(defaults.node_id.len(), 8, "random node id");

            jail.create_file(
                "herald.toml",
                r#"
                listen = "0.0.0.0:9000"
                redis_url = "redis://file/"
                node_id = "from-file"
                api_keys = ["k1"]
                [namespaces.chat]
                client_publish = true
                [[routes]]
                path = "/ws/chat/{room}"
                subscribe = ["chat.{room}"]
                "#,
            )?;
            jail.set_env("HERALD_REDIS_URL", "redis://env/");
            jail.set_env("HERALD_NODE_ID", "from-env");
            jail.set_env("HERALD_API_KEYS", "a, b,c");
            jail.set_env("HERALD_CONFIG", "ignored-here.toml");
            let flags = Overrides { node_id: Some("from-flag".into()), ..Overrides::default() };
            let config = load_in(jail, Some("herald.toml"), flags).unwrap();
            assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(config.redis_url.as_deref(), Some("redis://env/"));
            assert_eq!(config.node_id, "from-flag");
            assert_eq!(config.api_keys, ["a", "b", "c"]);
            assert!(config.namespace("chat").client_publish);
            assert!(!config.namespace("news").client_publish);
            assert_eq!(config.routes[0].subscribe, ["chat.{room}"]);
            Ok(())
        });
    }

    #[test]
    fn one_redis_is_named_a_single_server_a_cluster_or_sentinels() {
        Jail::expect_with(|jail| {
            let load = || Config::load(None, Overrides::default(), Mode::Gateway);
            jail.set_env("HERALD_AUTH", "off");
            jail.set_env("HERALD_REDIS_CLUSTER_NODES", "redis://10.0.0.1:7000/, redis://10.0.0.2:7000/");
            let cluster = load().unwrap().redis().unwrap();
            assert_eq!(
                cluster,
                RedisTarget::Cluster(vec!["redis://10.0.0.1:7000/".into(), "redis://10.0.0.2:7000/".into()])
            );
            jail.set_env("HERALD_REDIS_URL", "redis://127.0.0.1/");
            assert!(load().unwrap_err().message().contains("only one of"));
            jail.set_env("HERALD_REDIS_URL", "");
            jail.set_env("HERALD_REDIS_CLUSTER_NODES", "redis://10.0.0.1:7000/3");
            assert!(
                load().unwrap_err().message().starts_with("redis_cluster_nodes[0]: a Redis Cluster has only")
            );
            jail.set_env("HERALD_REDIS_CLUSTER_NODES", "");
            jail.set_env("HERALD_REDIS_SENTINELS", "redis://s1:26379/,redis://s2:26379/");
            assert!(load().unwrap_err().message().starts_with("redis_sentinel_master:"));
            jail.set_env("HERALD_REDIS_SENTINEL_MASTER", "mymaster");
            let sentinel = load().unwrap().redis().unwrap();
            assert!(
                matches!(&sentinel, RedisTarget::Sentinel { sentinels, master } if sentinels.len() == 2 && master == "mymaster")
            );
            jail.set_env("HERALD_REDIS_SENTINELS", "redis+unix:///tmp/s.sock");
            assert!(load().unwrap_err().message().starts_with("redis_sentinels[0]: only redis://"));
            Ok(())
        });
    }

    #[test]
    fn each_mode_fills_in_its_defaults_and_needs() {
        Jail::expect_with(|jail| {
            let load = |mode| Config::load(None, Overrides::default(), mode);
            let standalone = load(Mode::Standalone).unwrap();
            assert_eq!(standalone.auth_mode(), AuthMode::Optional, "anonymous or a demo name");
            assert!(standalone.demo_tokens && standalone.auth_hmac_secret.is_some());
            assert!(standalone.namespace("chat").client_publish && standalone.namespace("chat").presence);
            assert_eq!(standalone.jobs.len(), 2, "the demo jobs");
            assert!(load(Mode::Gateway).unwrap_err().message().starts_with("redis_url:"));
            assert!(load(Mode::Scheduler).unwrap_err().message().starts_with("redis_url:"));
            jail.set_env("HERALD_REDIS_URL", "redis://127.0.0.1/");
            assert!(load(Mode::Gateway).unwrap_err().message().starts_with("auth:"), "tokens by default");
            jail.set_env("HERALD_AUTH_HMAC_SECRET", "a-secret-of-at-least-16-bytes");
            let gateway = load(Mode::Gateway).unwrap();
            assert_eq!(gateway.auth_mode(), AuthMode::Required);
            assert!(gateway.jobs.is_empty() && gateway.namespaces.is_empty());
            jail.create_file("jobs.toml", "[[jobs]]\nname = \"a\"\n[[jobs]]\nname = \"a\"\n")?;
            let e = Config::load(
                Some(&jail.directory().join("jobs.toml")),
                Overrides::default(),
                Mode::Scheduler,
            );
            assert!(e.unwrap_err().message().starts_with("jobs[1] (a): duplicate"));
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            let err = |jail: &Jail| load_in(jail, None, Overrides::default()).unwrap_err().0;
            jail.set_env("HERALD_LISTEN", "not an address");
            assert!(err(jail).to_lowercase().contains("listen"), "{}", err(jail));
            jail.set_env("HERALD_LISTEN", "127.0.0.1:1");
            jail.set_env("HERALD_MAX_FRAME_BYTES", "12");
            assert!(err(jail).starts_with("max_frame_bytes:"), "{}", err(jail));
            jail.set_env("HERALD_MAX_FRAME_BYTES", "65536");
            jail.set_env("HERALD_REDIS_URL", "http://nope");
            assert!(err(jail).starts_with("redis_url:"), "{}", err(jail));
            jail.set_env("HERALD_REDIS_URL", "redis://127.0.0.1/");
            jail.set_env("HERALD_NODE_ID", "has space");
            assert!(err(jail).starts_with("node_id:"), "{}", err(jail));
            jail.set_env("HERALD_NODE_ID", "ok");
            jail.set_env("HERALD_WORKERS", "5000");
            assert!(err(jail).starts_with("workers:"), "{}", err(jail));
            jail.set_env("HERALD_WORKERS", "2");
            jail.set_env("HERALD_LISTN", "typo");
            assert!(err(jail).to_lowercase().contains("listn"), "{}", err(jail));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[namespaces.chat]\nclient_publsh = true\n")?;
            let e = load_in(jail, Some("bad.toml"), Overrides::default()).unwrap_err().0;
            assert!(e.contains("client_publsh"), "{e}");
            let e = load_in(jail, Some("missing.toml"), Overrides::default()).unwrap_err().0;
            assert!(e.contains("missing.toml") && e.contains("not found"), "{e}");
            Ok(())
        });
    }
}
