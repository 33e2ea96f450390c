//! What each command adds to the layered config before it is validated: a gateway faces the
//! internet and requires client tokens unless told otherwise; standalone is a laptop demo that
//! runs the demo chat and jobs on the in-memory broker; gateways and schedulers need Redis.

use super::{AuthMode, Config, ConfigError, JobConfig, NamespaceConfig};

/// The command a config is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One self-contained instance with the demo chat and jobs.
    Standalone,
    /// A stateless gateway instance of a deployment.
    Gateway,
    /// A scheduler replica.
    Scheduler,
}

/// Origins standalone accepts besides its own host: pages of a dev server on another local port.
const LOCAL_ORIGINS: &[&str] =
    &["http://localhost", "http://localhost:*", "http://127.0.0.1", "http://127.0.0.1:*", "http://[::1]:*"];

impl Mode {
    /// Fills in what this mode implies and the layers left unset.
    pub(super) fn apply(self, config: &mut Config) {
        match self {
            Mode::Gateway => {
                config.auth.get_or_insert(AuthMode::Required);
            }
            Mode::Scheduler => {}
            Mode::Standalone => {
                let keyless = config.auth_hmac_secret.is_none() && config.auth_public_key_file.is_none();
                if config.auth.is_none() && keyless {
                    // The demo page signs in with a name (a token from `/demo/token`, signed
                    // with a secret of this process); clients without one stay anonymous.
                    config.auth = Some(AuthMode::Optional);
                    config.auth_hmac_secret = Some(format!("{:032x}", rand::random::<u128>()));
                    config.demo_tokens = true;
                }
                config.auth.get_or_insert(AuthMode::Off);
                config.allowed_origins.extend(LOCAL_ORIGINS.iter().map(|o| o.to_string()));
                // The demo chat publishes from the browser, recovers after reconnects and shows
                // who is there.
                config.namespaces.entry("chat".into()).or_insert(NamespaceConfig {
                    client_publish: true,
                    history_size: 100,
                    presence: true,
                    join_leave: true,
                    ..NamespaceConfig::default()
                });
                if config.jobs.is_empty() {
                    config.jobs = demo_jobs();
                }
            }
        }
    }

    /// What this mode needs that the config may not give.
    pub(super) fn check(self, config: &Config) -> Result<(), ConfigError> {
        match self {
            Mode::Gateway | Mode::Scheduler if config.redis().is_none() => Err(ConfigError::new(
                "redis_url",
                "this mode needs Redis (set HERALD_REDIS_URL, HERALD_REDIS_CLUSTER_NODES or \
                 HERALD_REDIS_SENTINELS); `herald standalone` runs one instance on the in-memory broker",
            )),
            _ => Ok(()),
        }
    }
}

/// What standalone runs when the config has no jobs: the demo page's live panel.
fn demo_jobs() -> Vec<JobConfig> {
    let job = |name: &str, group: &str, every: &str, builtin: &str| JobConfig {
        name: name.into(),
        group: group.into(),
        every: Some(every.into()),
        align: true,
        builtin: Some(builtin.into()),
        ..JobConfig::default()
    };
    vec![job("demo-clock", "demo.clock", "1s", "clock"), job("demo-system", "demo.system", "5s", "system")]
}
