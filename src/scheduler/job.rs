//! A job compiled from its config: when it fires and where its data comes from.
//!
//! Ticks are *nominal* wall-clock instants in Unix milliseconds, computed the same way on every
//! replica: multiples of the period for aligned jobs, cron instants for cron jobs, and
//! `anchor + k * period` for unaligned jobs, where the anchor is shared through the coordinator.
//! A tick's identity is its nominal instant, so replicas whose clocks disagree still agree on
//! which tick is which, and each is claimed once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::source::Source;
use crate::broker::HistoryPolicy;
use crate::config::JobConfig;
use crate::group::GroupName;

/// Shortest accepted period.
const MIN_PERIOD: Duration = Duration::from_millis(50);
/// Default timeout cap when none is configured.
const MAX_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) group: GroupName,
    pub(crate) schedule: Schedule,
    pub(crate) timeout: Duration,
    pub(crate) on_change_only: bool,
    pub(crate) source: Source,
    /// History of the target group, from its namespace (set by the scheduler).
    pub(crate) history: Option<HistoryPolicy>,
}

pub(crate) enum Schedule {
    Every { period: Duration, align: bool },
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Whether ticks are placed relative to a shared anchor (unaligned `every`).
    pub(crate) fn needs_anchor(&self) -> bool {
        matches!(self, Schedule::Every { align: false, .. })
    }

    /// The first tick at or after `at_ms` (`anchor_ms` places unaligned periods).
    pub(crate) fn next_tick(&self, at_ms: i64, anchor_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every { period, align } => {
                let period = period.as_millis() as i64;
                let base = if *align { 0 } else { anchor_ms };
                if at_ms <= base {
                    return Some(base);
                }
                let periods = (at_ms - base + period - 1) / period;
                Some(base + periods * period)
            }
            Schedule::Cron(schedule) => {
                let after = DateTime::<Utc>::from_timestamp_millis(at_ms - 1)?;
                schedule.after(&after).next().map(|t| t.timestamp_millis())
            }
        }
    }

    /// Roughly the time between ticks, for how long per-tick state must be kept.
    pub(crate) fn spacing_ms(&self, tick_ms: i64) -> i64 {
        match self.next_tick(tick_ms + 1, tick_ms) {
            Some(next) => (next - tick_ms).max(1),
            None => 1000,
        }
    }
}

impl Job {
    /// Parses and checks a job's config; the error says what is wrong (the caller names the job).
    pub(crate) fn compile(config: &JobConfig) -> Result<Job, String> {
        if config.name.is_empty() || GroupName::new(&config.name).is_err() {
            return Err("name must be 1 to 100 of A-Z a-z 0-9 _ . -".into());
        }
        let group = GroupName::new(&config.group).map_err(|e| format!("group: {e}"))?;
        let schedule = match (&config.every, &config.cron) {
            (Some(every), None) => {
                let period = parse_duration("every", every)?;
                if period < MIN_PERIOD {
                    return Err(format!("every: must be at least {}ms", MIN_PERIOD.as_millis()));
                }
                Schedule::Every { period, align: config.align }
            }
            (None, Some(expr)) => {
                if config.align {
                    return Err("align: only applies to every (cron is wall-clock already)".into());
                }
                let schedule =
                    cron::Schedule::from_str(expr).map_err(|e| format!("cron: {e} in {expr:?}"))?;
                Schedule::Cron(Box::new(schedule))
            }
            (Some(_), Some(_)) => return Err("give either every or cron, not both".into()),
            (None, None) => return Err("missing schedule: give every or cron".into()),
        };
        let timeout = match &config.timeout {
            Some(timeout) => parse_duration("timeout", timeout)?,
            None => match &schedule {
                Schedule::Every { period, .. } => (*period).min(MAX_DEFAULT_TIMEOUT),
                Schedule::Cron(_) => MAX_DEFAULT_TIMEOUT,
            },
        };
        if timeout.is_zero() {
            return Err("timeout: must be more than 0".into());
        }
        Ok(Job {
            name: config.name.clone(),
            group,
            schedule,
            timeout,
            on_change_only: config.on_change_only,
            source: Source::compile(config)?,
            history: None,
        })
    }
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{key}: {e} in {value:?} (write e.g. \"10s\", \"500ms\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(edit: impl FnOnce(&mut JobConfig)) -> Result<Job, String> {
        let mut config = JobConfig {
            name: "j".into(),
            group: "g".into(),
            every: Some("10s".into()),
            builtin: Some("clock".into()),
            ..JobConfig::default()
        };
        edit(&mut config);
        Job::compile(&config)
    }

    #[test]
    fn aligned_ticks_are_wall_clock_multiples() {
        let s = Schedule::Every { period: Duration::from_secs(10), align: true };
        assert_eq!(s.next_tick(1_000_000_001, 0), Some(1_000_010_000));
        assert_eq!(s.next_tick(1_000_010_000, 0), Some(1_000_010_000), "at or after");
        assert_eq!(s.spacing_ms(1_000_010_000), 10_000);
    }

    #[test]
    fn unaligned_ticks_follow_the_shared_anchor() {
        let s = Schedule::Every { period: Duration::from_secs(10), align: false };
        assert!(s.needs_anchor());
        assert_eq!(s.next_tick(5_000, 7_000), Some(7_000), "the anchor itself is the first tick");
        assert_eq!(s.next_tick(7_001, 7_000), Some(17_000));
        assert_eq!(s.next_tick(27_000, 7_000), Some(27_000));
    }

    #[test]
    fn cron_ticks_use_the_seconds_field() {
        let Ok(Job { schedule, .. }) = job(|c| {
            c.every = None;
            c.cron = Some("*/10 * * * * *".into());
        }) else {
            panic!("valid cron")
        };
        assert_eq!(schedule.next_tick(1_700_000_001_000, 0), Some(1_700_000_010_000));
        assert_eq!(schedule.next_tick(1_700_000_010_000, 0), Some(1_700_000_010_000));
        assert_eq!(schedule.spacing_ms(1_700_000_010_000), 10_000);
    }

    #[test]
    fn invalid_jobs_say_what_is_wrong() {
        let err = |edit: fn(&mut JobConfig)| job(edit).err().unwrap();
        assert!(err(|c| c.group = "a b".into()).starts_with("group:"));
        assert!(err(|c| c.name = "".into()).starts_with("name"));
        assert!(err(|c| c.every = Some("often".into())).starts_with("every:"));
        assert!(err(|c| c.every = Some("1ms".into())).starts_with("every: must be at least"));
        assert!(err(|c| c.every = None).starts_with("missing schedule"));
        assert!(err(|c| c.cron = Some("* * * * * *".into())).contains("not both"));
        assert!(
            err(|c| {
                c.every = None;
                c.cron = Some("every minute".into());
            })
            .starts_with("cron:")
        );
        assert!(err(|c| c.timeout = Some("0s".into())).starts_with("timeout"));
        assert!(err(|c| c.builtin = None).starts_with("missing source"));
        assert!(err(|c| c.builtin = Some("weather".into())).starts_with("builtin:"));
        assert!(err(|c| c.static_data = Some(serde_json::json!(1))).contains("exactly one source"));
        assert!(
            err(|c| {
                c.builtin = None;
                c.command = Some(vec![]);
            })
            .starts_with("command:")
        );
    }
}
