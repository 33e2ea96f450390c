//! The JavaScript client in headless Chromium: the README's own usage works as written, groups
//! are remembered before the connection opens, and requests made while reconnecting wait for
//! the connection instead of failing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::{Chromedriver, Page};
use crate::harness::{GatewayProcess, Redis, eventually};

fn gateway_toml(redis: &Redis) -> String {
    format!(
        "redis_url = \"{}\"\nnode_id = \"gw-js\"\nauth = \"off\"\n[namespaces.chat]\nclient_publish = true\nhistory_size = 100\n",
        redis.url()
    )
}

/// Runs `body` (an async function body) in the page and returns what it returns.
async fn run(page: &fantoccini::Client, body: &str) -> Value {
    let script = format!(
        "const done = arguments[arguments.length - 1];\n(async () => {{ {body} }})().then(done, (e) => done('error: ' + e.message));"
    );
    page.execute_async(&script, vec![]).await.expect("script runs")
}

async fn received(page: &fantoccini::Client) -> Vec<String> {
    let got = page.execute("return window.got", vec![]).await.unwrap();
    serde_json::from_value(got).unwrap_or_default()
}

#[tokio::test]
async fn the_readme_usage_works_and_requests_wait_across_a_reconnect() {
    let redis = Redis::start().await;
    let toml = gateway_toml(&redis);
    let mut gateway = GatewayProcess::start(&toml).await;
    let addr = gateway.addr;
    let driver = Chromedriver::start().await;
    let profile = std::env::temp_dir().join(format!("herald-js-client-{}", std::process::id()));
    let page = driver.browser(&profile).await;
    page.goto(&format!("http://{addr}/healthz")).await.unwrap();

    // Exactly the README's lines: subscribe right after connect(), before the socket is open.
    let started = run(
        &page,
        r#"
        const { HeraldClient } = await import("/herald.js");
        const herald = new HeraldClient("ws://" + location.host + "/ws", { minDelay: 100, maxDelay: 400 });
        window.herald = herald;
        window.got = [];
        herald.addEventListener("message", (e) => window.got.push(e.detail.data.text));
        herald.connect();
        await herald.subscribe("chat.lobby");
        await herald.publish("chat.lobby", { text: "hi" });
        return "ok";
        "#,
    )
    .await;
    assert_eq!(started, json!("ok"));
    eventually("the message arrives", || async { received(&page).await == ["hi"] }).await;

    gateway.process.kill();
    eventually("the client notices", || async {
        page.execute("return herald.state", vec![]).await.unwrap() == json!("reconnecting")
    })
    .await;
    // Made while the gateway is down: it waits for the connection.
    page.execute(
        r#"window.outcome = null;
        herald.publish("chat.lobby", { text: "while away" }).then(() => (window.outcome = "published"), (e) => (window.outcome = e.code));"#,
        vec![],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(page.execute("return window.outcome", vec![]).await.unwrap(), Value::Null, "still waiting");
    let _gateway = GatewayProcess::start_at(addr, &toml, &[]).await;
    eventually("published after the reconnect", || async {
        page.execute("return window.outcome", vec![]).await.unwrap() == json!("published")
    })
    .await;
    // Resubscribed by itself, recovering from its position: the message reaches it once.
    eventually("delivered to the resubscribed group", || async {
        received(&page).await == ["hi", "while away"]
    })
    .await;

    // A request that finds no connection within requestTimeout fails with `timeout`.
    let timed_out = run(
        &page,
        r#"
        const { HeraldClient } = await import("/herald.js");
        const nowhere = new HeraldClient("ws://127.0.0.1:1/ws", { requestTimeout: 300 });
        nowhere.connect();
        try { await nowhere.ping(); return "answered"; } catch (e) { nowhere.close(); return e.code; }
        "#,
    )
    .await;
    assert_eq!(timed_out, json!("timeout"));
    let _ = page.close().await;
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test]
async fn a_route_client_recovers_what_it_missed_even_before_its_first_message() {
    let redis = Redis::start().await;
    let route = "[[routes]]\npath = \"/ws/chat/{room}\"\nsubscribe = [\"chat.{room}\"]\n";
    let toml = format!("{}{route}", gateway_toml(&redis));
    let mut gateway = GatewayProcess::start(&toml).await;
    let addr = gateway.addr;
    let driver = Chromedriver::start().await;
    let profile = std::env::temp_dir().join(format!("herald-js-route-{}", std::process::id()));
    let page = driver.browser(&profile).await;
    page.goto(&format!("http://{addr}/healthz")).await.unwrap();
    // The group is quiet: where the client stands is only trusted once Redis is a second old.
    redis.settled().await;

    // Joined by the route: its `subscribed` frame is where the client stands in the group.
    let joined = run(
        &page,
        r#"
        const { HeraldClient } = await import("/herald.js");
        const herald = new HeraldClient("ws://" + location.host + "/ws/chat/lobby", { minDelay: 100, maxDelay: 400 });
        window.herald = herald;
        window.got = [];
        herald.addEventListener("message", (e) => window.got.push(e.detail.data.text));
        const joined = new Promise((resolve) => herald.addEventListener("subscribed", (e) => resolve(e.detail.group)));
        herald.connect();
        return await joined;
        "#,
    )
    .await;
    assert_eq!(joined, json!("chat.lobby"));

    gateway.process.kill();
    eventually("the client notices", || async {
        page.execute("return herald.state", vec![]).await.unwrap() == json!("reconnecting")
    })
    .await;
    // Published through another gateway while this client is away, before it got any message.
    let other = GatewayProcess::start(&toml.replace("gw-js", "gw-js-2")).await;
    let body = json!({"group": "chat.lobby", "data": {"text": "while away"}}).to_string();
    assert_eq!(crate::harness::http(other.addr, "POST", "/api/publish", &[], &body).await.0, 200);
    let _gateway = GatewayProcess::start_at(addr, &toml, &[]).await;
    eventually("recovered on reconnect", || async { received(&page).await == ["while away"] }).await;
    let _ = page.close().await;
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test]
async fn the_standalone_demo_shows_who_is_here_by_name() {
    let port = crate::harness::free_port();
    let standalone =
        crate::harness::Process::spawn(&["standalone", "--listen", &format!("127.0.0.1:{port}")], "");
    standalone.listening(([127, 0, 0, 1], port).into()).await;
    let driver = Chromedriver::start().await;
    let profiles = std::env::temp_dir().join(format!("herald-demo-names-{}", std::process::id()));
    let ann = Page(driver.browser(&profiles.join("ann")).await);
    let bob = Page(driver.browser(&profiles.join("bob")).await);
    for (page, name) in [(&ann, "Ann"), (&bob, "Bob")] {
        page.0.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
        page.join(name).await;
    }
    for page in [&ann, &bob] {
        eventually("both names are listed", || async {
            let who = page.text("who").await;
            who.contains("Ann (node") && who.contains("Bob (node")
        })
        .await;
    }
    ann.say("hi bob").await;
    eventually("bob reads it", || async { bob.chat_lines().await == ["Ann: hi bob"] }).await;
    for page in [ann, bob] {
        let _ = page.0.close().await;
    }
    let _ = std::fs::remove_dir_all(profiles);
}
