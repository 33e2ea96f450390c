//! Where a job's data comes from: a program's stdout, an HTTP response, a fixed value, or a
//! built-in (`clock`, `system`). Every source yields one JSON document or a typed error; the
//! caller applies the job's timeout (a timed-out program is killed).

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::JobConfig;

/// Bytes of a failing program's stderr kept for the log.
const STDERR_KEEP: u64 = 2048;

pub(crate) enum Source {
    Command(Vec<String>),
    Http { url: reqwest::Url, method: reqwest::Method, headers: HeaderMap, follow_redirects: bool },
    Static(Box<RawValue>),
    Clock,
    System,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("cannot start {program:?}: {error}")]
    Spawn { program: String, error: std::io::Error },
    #[error("exited with {status}: {stderr}")]
    Exit { status: std::process::ExitStatus, stderr: String },
    #[error("output is not one JSON document: {0}")]
    InvalidJson(serde_json::Error),
    #[error("output is larger than {0} bytes")]
    TooLarge(usize),
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(reqwest::StatusCode),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The HTTP clients of every job, built once: one never follows redirects, the other follows
/// them within the same host only (a job's data source must not send the request elsewhere).
pub(crate) struct HttpClients {
    direct: reqwest::Client,
    same_host: reqwest::Client,
}

impl HttpClients {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        let builder = || reqwest::Client::builder().user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
        let same_host = reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().and_then(|url| url.host_str().map(str::to_owned));
            if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else if first.as_deref() == attempt.url().host_str() {
                attempt.follow()
            } else {
                attempt.error("redirect to another host")
            }
        });
        Ok(Self {
            direct: builder().redirect(reqwest::redirect::Policy::none()).build()?,
            same_host: builder().redirect(same_host).build()?,
        })
    }
}

/// What a fetch may use: the HTTP clients, the tick's nominal time, a size limit.
pub(crate) struct FetchContext<'a> {
    pub(crate) http: &'a HttpClients,
    pub(crate) tick_ms: i64,
    pub(crate) max_bytes: usize,
}

impl Source {
    pub(crate) fn compile(config: &JobConfig) -> Result<Source, String> {
        let given = [
            config.command.is_some(),
            config.http.is_some(),
            config.static_data.is_some(),
            config.builtin.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => return Err("missing source: give command, http, static or builtin".into()),
            1 => {}
            _ => return Err("give exactly one source of command, http, static and builtin".into()),
        }
        if let Some(argv) = &config.command {
            if argv.is_empty() || argv[0].is_empty() {
                return Err("command: needs at least the program".into());
            }
            return Ok(Source::Command(argv.clone()));
        }
        if let Some(http) = &config.http {
            let url = reqwest::Url::parse(&http.url).map_err(|e| format!("http.url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("http.url: must be http or https".into());
            }
            let method = http.method.as_deref().unwrap_or("GET");
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| format!("http.method: {e}"))?;
            let mut headers = HeaderMap::new();
            for (name, value) in &http.headers {
                let name = HeaderName::try_from(name).map_err(|e| format!("http.headers: {name}: {e}"))?;
                let value = HeaderValue::try_from(value).map_err(|e| format!("http.headers: {name}: {e}"))?;
                headers.insert(name, value);
            }
            return Ok(Source::Http { url, method, headers, follow_redirects: http.follow_redirects });
        }
        if let Some(data) = &config.static_data {
            let raw = serde_json::value::to_raw_value(data).map_err(|e| format!("static: {e}"))?;
            return Ok(Source::Static(raw));
        }
        match config.builtin.as_deref() {
            Some("clock") => Ok(Source::Clock),
            Some("system") => Ok(Source::System),
            Some(other) => Err(format!("builtin: unknown {other:?} (known: clock, system)")),
            None => unreachable!("one source is given"),
        }
    }

    /// Produces the data for one tick.
    pub(crate) async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Box<RawValue>, SourceError> {
        match self {
            Source::Command(argv) => run_command(argv, ctx.max_bytes).await,
            Source::Http { url, method, headers, follow_redirects } => {
                let client = if *follow_redirects { &ctx.http.same_host } else { &ctx.http.direct };
                let request = client.request(method.clone(), url.clone()).headers(headers.clone());
                let mut response = request.send().await?;
                if !response.status().is_success() {
                    return Err(SourceError::Status(response.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > ctx.max_bytes {
                        return Err(SourceError::TooLarge(ctx.max_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
                parse_json(&body)
            }
            Source::Static(data) => Ok(data.clone()),
            Source::Clock => Ok(to_raw(clock(ctx.tick_ms))),
            Source::System => Ok(to_raw(system()?)),
        }
    }
}

async fn run_command(argv: &[String], max_bytes: usize) -> Result<Box<RawValue>, SourceError> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A run abandoned on timeout must not leave the program behind.
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| SourceError::Spawn { program: argv[0].clone(), error })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err) =
        tokio::join!(read_limited(stdout, max_bytes as u64 + 1), read_limited(stderr, STDERR_KEEP));
    let (out, err) = (out?, err?);
    if out.len() > max_bytes {
        return Err(SourceError::TooLarge(max_bytes));
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(SourceError::Exit { status, stderr: String::from_utf8_lossy(&err).trim().to_string() });
    }
    parse_json(&out)
}

/// Reads at most `limit` bytes, then drains (and drops) the rest so the program can finish.
async fn read_limited(pipe: Option<impl AsyncRead + Unpin>, limit: u64) -> std::io::Result<Vec<u8>> {
    let Some(pipe) = pipe else { return Ok(Vec::new()) };
    let mut kept = Vec::new();
    let mut limited = pipe.take(limit);
    limited.read_to_end(&mut kept).await?;
    tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await?;
    Ok(kept)
}

fn parse_json(bytes: &[u8]) -> Result<Box<RawValue>, SourceError> {
    serde_json::from_slice::<Box<RawValue>>(bytes).map_err(SourceError::InvalidJson)
}

fn to_raw(value: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("a serde_json::Value always serializes")
}

/// The tick's nominal time, so every replica would produce the same data for the same tick.
fn clock(tick_ms: i64) -> serde_json::Value {
    let time = DateTime::<Utc>::from_timestamp_millis(tick_ms).unwrap_or_default();
    json!({"time": time.to_rfc3339_opts(SecondsFormat::Millis, true), "unix_ms": tick_ms})
}

/// Load averages, memory and uptime of this machine, from `/proc` (Linux).
fn system() -> Result<serde_json::Value, SourceError> {
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    let load: Vec<f64> = loadavg.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib = |key: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let uptime = std::fs::read_to_string("/proc/uptime")?;
    let uptime_s: f64 = uptime.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok(json!({
        "load": load,
        "memory": {
            "total_bytes": kib("MemTotal:").map(|k| k * 1024),
            "available_bytes": kib("MemAvailable:").map(|k| k * 1024),
        },
        "uptime_s": uptime_s.round() as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(http: &HttpClients) -> FetchContext<'_> {
        FetchContext { http, tick_ms: 1_700_000_000_000, max_bytes: 1024 }
    }

    fn command(argv: &[&str]) -> Source {
        Source::Command(argv.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test]
    async fn command_stdout_is_the_data_and_failures_are_typed() {
        let http = HttpClients::new().unwrap();
        let ok = command(&["sh", "-c", r#"echo '{"n": 1}'"#]).fetch(&ctx(&http)).await.unwrap();
        assert_eq!(ok.get(), r#"{"n": 1}"#);
        let exit = command(&["sh", "-c", "echo oops >&2; exit 3"]).fetch(&ctx(&http)).await.unwrap_err();
        assert!(matches!(&exit, SourceError::Exit { stderr, .. } if stderr == "oops"), "{exit}");
        let junk = command(&["echo", "not json"]).fetch(&ctx(&http)).await.unwrap_err();
        assert!(matches!(junk, SourceError::InvalidJson(_)));
        let two = command(&["echo", "1 2"]).fetch(&ctx(&http)).await.unwrap_err();
        assert!(matches!(two, SourceError::InvalidJson(_)), "exactly one document");
        let big = command(&["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' 1"])
            .fetch(&ctx(&http))
            .await
            .unwrap_err();
        assert!(matches!(big, SourceError::TooLarge(1024)));
        let missing = command(&["/nonexistent/prog"]).fetch(&ctx(&http)).await.unwrap_err();
        assert!(matches!(missing, SourceError::Spawn { .. }));
    }

    #[tokio::test]
    async fn builtins() {
        let http = HttpClients::new().unwrap();
        let clock: serde_json::Value =
            serde_json::from_str(Source::Clock.fetch(&ctx(&http)).await.unwrap().get()).unwrap();
        assert_eq!(clock, json!({"time": "2023-11-14T22:13:20.000Z", "unix_ms": 1_700_000_000_000i64}));
        let system: serde_json::Value =
            serde_json::from_str(Source::System.fetch(&ctx(&http)).await.unwrap().get()).unwrap();
        assert_eq!(system["load"].as_array().unwrap().len(), 3);
        assert!(system["memory"]["total_bytes"].as_u64().unwrap() > 0);
    }
}
