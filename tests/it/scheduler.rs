//! Scheduler jobs: every source kind, every failure kind, overlap, alignment, on_change_only,
//! and refusal of invalid jobs at start.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use herald::config::{Config, HttpSourceConfig, JobConfig};
use herald::metrics::{JobSkip, Metrics};
use serde_json::json;

use crate::harness::{InProcessScheduler, Node, Process, Redis, config, eventually};

fn job(name: &str, every: &str) -> JobConfig {
    JobConfig {
        name: name.into(),
        group: format!("jobs.{name}"),
        every: Some(every.into()),
        ..JobConfig::default()
    }
}

fn scheduler_config(redis: &Redis, jobs: Vec<JobConfig>) -> Config {
    let mut config = config(Some(redis), "sched");
    config.scheduler.lease_ttl = Duration::from_secs(1);
    config.jobs = jobs;
    config
}

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

/// An HTTP server for the `http` source: `/ok` JSON, `/fail` 500, `/junk` plain text,
/// `/here` a redirect to `/ok`, `/away` a redirect to `/ok` on another host name.
async fn data_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let away = format!("http://localhost:{}/ok", addr.port());
    let app = Router::new()
        .route("/ok", get(|| async { axum::Json(json!({"from": "http"})) }))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .route("/junk", get(|| async { "not json" }))
        .route("/here", get(|| async { axum::response::Redirect::temporary("/ok") }))
        .route("/away", get(move || async move { axum::response::Redirect::temporary(&away) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http_source(url: String) -> Option<HttpSourceConfig> {
    Some(HttpSourceConfig { url, ..HttpSourceConfig::default() })
}

fn published(m: &Metrics, job: &str) -> u64 {
    m.job(&m.job_published, job)
}
fn failures(m: &Metrics, job: &str) -> u64 {
    m.job(&m.job_failures, job)
}
fn runs(m: &Metrics, job: &str) -> u64 {
    m.job(&m.job_runs, job)
}
fn skipped(m: &Metrics, job: &str) -> u64 {
    m.job_skipped.get_or_create(&JobSkip { job: job.into(), reason: "unchanged" }).get()
}
fn overlapped(m: &Metrics, job: &str) -> u64 {
    m.job_skipped.get_or_create(&JobSkip { job: job.into(), reason: "overlap" }).get()
}

#[tokio::test]
async fn every_source_kind_publishes_its_data() {
    let redis = Redis::start().await;
    let server = data_server().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    for name in ["command", "http", "static", "clock", "system"] {
        client.subscribe(&format!("jobs.{name}")).await;
    }
    let scheduler = InProcessScheduler::start(&scheduler_config(
        &redis,
        vec![
            JobConfig { command: sh(r#"echo '{"from": "command"}'"#), ..job("command", "300ms") },
            JobConfig { http: http_source(format!("{server}/ok")), ..job("http", "300ms") },
            JobConfig { static_data: Some(json!({"from": "static"})), ..job("static", "300ms") },
            JobConfig { builtin: Some("clock".into()), ..job("clock", "300ms") },
            JobConfig { builtin: Some("system".into()), ..job("system", "300ms") },
        ],
    ));
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 5 {
        let (group, data) = client.message().await;
        seen.insert(group, data);
    }
    assert_eq!(seen["jobs.command"], json!({"from": "command"}));
    assert_eq!(seen["jobs.http"], json!({"from": "http"}));
    assert_eq!(seen["jobs.static"], json!({"from": "static"}));
    assert!(
        seen["jobs.clock"]["unix_ms"].is_i64() && seen["jobs.clock"]["time"].is_string(),
        "{}",
        seen["jobs.clock"]
    );
    assert_eq!(seen["jobs.system"]["load"].as_array().map(Vec::len), Some(3));
    scheduler.stop().await;
}

#[tokio::test]
async fn failing_runs_publish_nothing_and_keep_their_schedule() {
    let redis = Redis::start().await;
    let server = data_server().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    let jobs = vec![
        JobConfig { command: sh("echo oops >&2; exit 3"), ..job("exit", "200ms") },
        JobConfig { command: sh("echo not json"), ..job("junk-out", "200ms") },
        JobConfig { command: Some(vec!["/nonexistent/program".into()]), ..job("missing", "200ms") },
        JobConfig { http: http_source(format!("{server}/fail")), ..job("http-500", "200ms") },
        JobConfig { http: http_source(format!("{server}/junk")), ..job("http-junk", "200ms") },
        JobConfig { http: http_source("http://127.0.0.1:1/".into()), ..job("http-down", "200ms") },
        JobConfig { command: sh("sleep 5"), timeout: Some("100ms".into()), ..job("slow", "200ms") },
    ];
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    for name in &names {
        client.subscribe(&format!("jobs.{name}")).await;
    }
    let scheduler = InProcessScheduler::start(&scheduler_config(&redis, jobs));
    for name in &names {
        eventually(&format!("{name} failed on two ticks"), || async { scheduler.count(name, failures) >= 2 })
            .await;
        assert_eq!(scheduler.count(name, published), 0, "{name}");
    }
    client.assert_no_message().await;
    scheduler.stop().await;
}

#[tokio::test]
async fn a_run_that_overlaps_the_previous_one_is_skipped() {
    let redis = Redis::start().await;
    let jobs = vec![JobConfig {
        command: sh("sleep 0.5; echo 1"),
        timeout: Some("5s".into()),
        ..job("slow", "100ms")
    }];
    let scheduler = InProcessScheduler::start(&scheduler_config(&redis, jobs));
    eventually("a run published", || async { scheduler.count("slow", published) >= 2 }).await;
    assert!(scheduler.count("slow", overlapped) >= 2, "ticks during a run were skipped");
    assert!(
        scheduler.count("slow", runs) <= scheduler.count("slow", published) + 1,
        "never two runs at once"
    );
    scheduler.stop().await;
}

#[tokio::test]
async fn aligned_ticks_fall_on_wall_clock_multiples_and_unaligned_ones_follow_the_anchor() {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    client.subscribe("jobs.aligned").await;
    client.subscribe("jobs.free").await;
    let jobs = vec![
        JobConfig { builtin: Some("clock".into()), align: true, ..job("aligned", "400ms") },
        JobConfig { builtin: Some("clock".into()), ..job("free", "300ms") },
    ];
    let scheduler = InProcessScheduler::start(&scheduler_config(&redis, jobs));
    let (mut aligned, mut free) = (Vec::new(), Vec::new());
    while aligned.len() < 3 || free.len() < 3 {
        let (group, data) = client.message().await;
        let tick = data["unix_ms"].as_i64().unwrap();
        if group == "jobs.aligned" { aligned.push(tick) } else { free.push(tick) }
    }
    scheduler.stop().await;
    assert!(aligned.iter().all(|t| t % 400 == 0), "{aligned:?}");
    assert!(aligned.windows(2).all(|w| w[1] - w[0] == 400), "{aligned:?}");
    let anchor: i64 = redis.query(&["GET", "herald:job:free:anchor"]).await;
    assert!(free.iter().all(|t| (t - anchor) % 300 == 0), "anchor {anchor}, ticks {free:?}");
    assert!(free.windows(2).all(|w| w[1] - w[0] == 300), "{free:?}");
}

#[tokio::test]
async fn on_change_only_publishes_changes_once_even_across_a_leader_change() {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    client.subscribe("jobs.state").await;
    let state = |value: i64| {
        let job = JobConfig {
            static_data: Some(json!({"v": value})),
            on_change_only: true,
            ..job("state", "100ms")
        };
        scheduler_config(&redis, vec![job])
    };

    let first = InProcessScheduler::start(&state(1));
    assert_eq!(client.message().await.1, json!({"v": 1}));
    eventually("unchanged ticks skipped", || async { first.count("state", skipped) >= 3 }).await;
    first.stop().await;

    // A new leader remembers (through Redis) what was published: same data, no publish.
    let second = InProcessScheduler::start(&state(1));
    eventually("second leader runs", || async { second.count("state", skipped) >= 3 }).await;
    assert_eq!(second.count("state", published), 0);
    second.stop().await;
    client.assert_no_message().await;

    let third = InProcessScheduler::start(&state(2));
    assert_eq!(client.message().await.1, json!({"v": 2}));
    eventually("then unchanged again", || async { third.count("state", skipped) >= 2 }).await;
    assert_eq!(third.count("state", published), 1);
    third.stop().await;
    client.assert_no_message().await;
}

#[tokio::test]
async fn a_publish_left_unconfirmed_by_a_dead_leader_is_not_taken_for_the_current_data() {
    let redis = Redis::start().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    client.subscribe("jobs.state").await;
    // What a leader leaves when it dies between publishing {"v":2} and recording it.
    let _: String = redis.query(&["SET", "herald:job:state:last", r#"pending:{"v":2}"#]).await;
    let job = JobConfig { static_data: Some(json!({"v": 2})), on_change_only: true, ..job("state", "100ms") };
    let scheduler = InProcessScheduler::start(&scheduler_config(&redis, vec![job]));
    assert_eq!(client.message().await.1, json!({"v": 2}), "published again: a repeat, not a skip");
    eventually("then unchanged", || async { scheduler.count("state", skipped) >= 2 }).await;
    scheduler.stop().await;
    let recorded: String = redis.query(&["GET", "herald:job:state:last"]).await;
    assert_eq!(recorded, r#"published:{"v":2}"#);
    client.assert_no_message().await;
}

#[tokio::test]
async fn http_sources_follow_redirects_only_when_asked_and_only_to_the_same_host() {
    let redis = Redis::start().await;
    let server = data_server().await;
    let node = Node::ready(config(Some(&redis), "gw")).await;
    let mut client = node.client().await;
    client.subscribe("jobs.followed").await;
    let source = |path: &str, follow_redirects: bool| {
        Some(HttpSourceConfig {
            url: format!("{server}{path}"),
            follow_redirects,
            ..HttpSourceConfig::default()
        })
    };
    let scheduler = InProcessScheduler::start(&scheduler_config(
        &redis,
        vec![
            JobConfig { http: source("/here", false), ..job("unfollowed", "200ms") },
            JobConfig { http: source("/here", true), ..job("followed", "200ms") },
            JobConfig { http: source("/away", true), ..job("elsewhere", "200ms") },
        ],
    ));
    assert_eq!(client.message().await, ("jobs.followed".into(), json!({"from": "http"})));
    eventually("the others fail", || async {
        scheduler.count("unfollowed", failures) >= 2 && scheduler.count("elsewhere", failures) >= 2
    })
    .await;
    assert_eq!(scheduler.count("unfollowed", published) + scheduler.count("elsewhere", published), 0);
    scheduler.stop().await;
}

#[tokio::test]
async fn invalid_jobs_stop_the_scheduler_at_start_naming_the_job() {
    let base = "redis_url = \"redis://127.0.0.1:1/\"\n[[jobs]]\nname = \"bad\"\n";
    let cases = [
        ("group = \"g\"\nevery = \"1s\"\nbuiltin = \"weather\"\n", "builtin: unknown \"weather\""),
        ("group = \"g\"\nevery = \"1s\"\n", "missing source"),
        ("group = \"g\"\nevery = \"1s\"\nbuiltin = \"clock\"\nstatic = 1\n", "exactly one source"),
        ("group = \"g\"\nevery = \"ten seconds\"\nbuiltin = \"clock\"\n", "every:"),
        ("group = \"g\"\ncron = \"*/10 * *\"\nbuiltin = \"clock\"\n", "cron:"),
        ("group = \"not valid\"\nevery = \"1s\"\nbuiltin = \"clock\"\n", "group:"),
        ("group = \"g\"\nevery = \"1s\"\nbuiltin = \"clock\"\nsource = \"x\"\n", "unknown field"),
    ];
    for (job, expected) in cases {
        let (code, stderr) = Process::spawn(&["scheduler"], &format!("{base}{job}")).wait_output();
        assert_eq!(code, Some(2), "{job}: {stderr}");
        if expected != "unknown field" {
            assert!(stderr.contains("jobs[0] (bad)"), "{job}: {stderr}");
        }
        assert!(stderr.contains(expected), "{job}: expected {expected:?} in {stderr}");
    }
}
