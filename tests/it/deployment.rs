//! The deployment: docker-compose.yml and deploy/nginx.conf describe the topology (checked by
//! parsing them, since no Docker engine runs here), and the same topology runs as local
//! processes (redis-server, 2 schedulers, 3 gateways, nginx) driven end to end through nginx,
//! by WebSocket clients and by real browsers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

use crate::browser::{Chromedriver, Page, installed};
use crate::harness::{Client, GatewayProcess, Process, Redis, eventually, free_port, http};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

const GATEWAYS: [&str; 3] = ["gateway-1", "gateway-2", "gateway-3"];

#[test]
fn the_compose_file_describes_the_whole_topology() {
    let mut compose: Yaml = serde_yaml_ng::from_str(&repo_file("docker-compose.yml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for name in ["redis", "scheduler-1", "scheduler-2", "gateway-1", "gateway-2", "gateway-3", "nginx"] {
        assert!(names.contains(&name), "service {name} in {names:?}");
    }
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(service["healthcheck"]["test"].is_sequence(), "{name} has a healthcheck");
        if name.starts_with("gateway") || name.starts_with("scheduler") {
            let command = if name.starts_with("gateway") { "gateway" } else { "scheduler" };
            assert_eq!(service["command"][0].as_str(), Some(command), "{name}");
            assert_eq!(
                service["environment"]["HERALD_REDIS_URL"].as_str(),
                Some("redis://redis:6379/"),
                "{name}"
            );
            assert_eq!(service["environment"]["HERALD_NODE_ID"].as_str(), Some(name));
            assert_eq!(
                service["depends_on"]["redis"]["condition"].as_str(),
                Some("service_healthy"),
                "{name}"
            );
        }
    }
    let nginx = &services[&Yaml::from("nginx")];
    assert!(
        nginx["ports"].as_sequence().unwrap().iter().any(|p| p.as_str() == Some("8000:80")),
        "nginx on 8000"
    );
    for gateway in GATEWAYS {
        assert_eq!(nginx["depends_on"][gateway]["condition"].as_str(), Some("service_healthy"));
    }

    let conf = repo_file("deploy/nginx.conf");
    for gateway in GATEWAYS {
        assert!(conf.contains(&format!("server {gateway}:8000")), "the upstream names {gateway}");
    }
    for directive in [
        "proxy_set_header Upgrade $http_upgrade",
        "proxy_set_header Connection $connection_upgrade",
        "proxy_read_timeout 1h",
    ] {
        assert!(conf.contains(directive), "nginx.conf has {directive}");
    }
    let directives: String = conf.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(!directives.contains("ip_hash") && !directives.contains("sticky"), "no sticky sessions");

    let dockerfile = repo_file("Dockerfile");
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    assert!(dockerfile.contains("USER nonroot") && dockerfile.contains("HEALTHCHECK"));
}

#[test]
fn the_cluster_compose_file_runs_the_same_topology_on_a_redis_cluster() {
    let mut compose: Yaml = serde_yaml_ng::from_str(&repo_file("docker-compose.cluster.yml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let nodes: Vec<String> = (1..=6).map(|n| format!("redis-node-{n}")).collect();
    for node in &nodes {
        let command: Vec<&str> = services[&Yaml::from(node.as_str())]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{node}"))
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(command.windows(2).any(|w| w == ["--cluster-enabled", "yes"]), "{node}: {command:?}");
    }
    let init = &services[&Yaml::from("redis-cluster-init")];
    let script = init["command"][2].as_str().unwrap();
    assert!(script.contains("--cluster create") && script.contains("--cluster-replicas 1"), "{script}");
    for node in &nodes {
        assert!(script.contains(&format!("{node}:6379")), "{node} joins the cluster");
        assert_eq!(init["depends_on"][node.as_str()]["condition"].as_str(), Some("service_healthy"));
    }
    for name in ["scheduler-1", "scheduler-2", "gateway-1", "gateway-2", "gateway-3"] {
        let service = &services[&Yaml::from(name)];
        let seeds = service["environment"]["HERALD_REDIS_CLUSTER_NODES"].as_str().unwrap_or_default();
        assert_eq!(seeds.split(',').count(), 3, "{name} starts from three nodes: {seeds}");
        assert!(service["environment"]["HERALD_REDIS_URL"].is_null(), "{name}: only the cluster");
        assert_eq!(
            service["depends_on"]["redis-cluster-init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} starts once the cluster is formed"
        );
    }
    assert!(services.contains_key("nginx"));
}

/// nginx from the distribution's package, with deploy/nginx.conf pointed at local gateways.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    fn start(gateways: &[SocketAddr]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("herald-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = repo_file("deploy/nginx.conf");
        for (name, addr) in GATEWAYS.iter().zip(gateways) {
            conf = conf.replace(&format!("{name}:8000"), &addr.to_string());
        }
        let d = dir.display();
        conf = conf.replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        conf = conf.replace(
            "worker_processes auto;",
            &format!("worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;"),
        );
        conf = conf.replace(
            "http {",
            &format!("http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;"),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(installed(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx"))
            .args(["-p", &d.to_string(), "-c", &path.display().to_string(), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (apt-get install nginx)");
        Self { child, addr: format!("127.0.0.1:{port}").parse().unwrap(), dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers instead of orphaning them.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis, two schedulers, three gateways and nginx, each a real process on this machine,
/// with the compose file's config (deploy/herald.toml) and node ids.
struct Topology {
    _redis: Redis,
    _schedulers: Vec<Process>,
    gateways: Vec<GatewayProcess>,
    nginx: Nginx,
}

impl Topology {
    async fn start() -> Self {
        let redis = Redis::start().await;
        let config = repo_file("deploy/herald.toml");
        let url = redis.url();
        let schedulers = ["scheduler-1", "scheduler-2"]
            .map(|node| {
                let env = [
                    ("HERALD_REDIS_URL", url.as_str()),
                    ("HERALD_NODE_ID", node),
                    ("HERALD_LISTEN", "127.0.0.1:0"),
                ];
                Process::spawn_with_env(&["scheduler"], &config, &env)
            })
            .into();
        let mut gateways = Vec::new();
        for node in GATEWAYS {
            let env =
                [("HERALD_REDIS_URL", url.as_str()), ("HERALD_NODE_ID", node), ("HERALD_DRAIN_PERIOD", "1s")];
            gateways.push(GatewayProcess::start_with_env(&config, &env).await);
        }
        let nginx = Nginx::start(&gateways.iter().map(|g| g.addr).collect::<Vec<_>>());
        let topology = Self { _redis: redis, _schedulers: schedulers, gateways, nginx };
        eventually("nginx serves", || async {
            tokio::net::TcpStream::connect(topology.nginx.addr).await.is_ok()
                && http(topology.nginx.addr, "GET", "/readyz", &[], "").await.0 == 200
        })
        .await;
        topology
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.nginx.addr)
    }

    fn gateway(&mut self, node: &str) -> &mut GatewayProcess {
        let index = GATEWAYS.iter().position(|g| *g == node).expect("a gateway node");
        &mut self.gateways[index]
    }
}

#[tokio::test]
async fn the_topology_runs_behind_nginx_and_clients_survive_losing_a_gateway() {
    let mut topology = Topology::start().await;
    // Round-robin without stickiness: three connections land on three gateways.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&topology.ws_url()).await);
    }
    let mut nodes: Vec<String> =
        clients.iter().map(|c| c.welcome["node"].as_str().unwrap().to_string()).collect();
    nodes.sort();
    assert_eq!(nodes, GATEWAYS.map(String::from).to_vec());

    // The scheduler leader's clock reaches clients through the gateways.
    clients[0].subscribe("demo.clock").await;
    let (group, tick) = clients[0].message().await;
    assert_eq!(group, "demo.clock");
    assert!(tick["unix_ms"].is_i64());
    clients[0].unsubscribe("demo.clock").await;

    // Chat across instances, and publishing through nginx with the API key.
    for client in &mut clients {
        client.subscribe("chat.ops").await;
    }
    let key = [("authorization", "Bearer change-me-demo-key")];
    let body = json!({"group": "chat.ops", "data": "via nginx"}).to_string();
    assert_eq!(http(topology.nginx.addr, "POST", "/api/publish", &key, &body).await.0, 200);
    for client in &mut clients {
        assert_eq!(client.message().await.1, json!("via nginx"));
    }

    // Kill the gateway of client 0; it comes back through nginx on another one and recovers
    // what was published meanwhile.
    let seen = clients[0].request(json!({"type": "presence", "group": "chat.ops"})).await;
    assert_eq!(seen["result"]["clients"].as_array().map(Vec::len), Some(3), "presence spans the gateways");
    let lost = clients[0].welcome["node"].as_str().unwrap().to_string();
    let (offset, epoch) = {
        let answer = clients[0].request(json!({"type": "subscribe", "group": "chat.ops"})).await;
        assert_eq!(answer["type"], "reply", "already subscribed");
        let history = topology_history(&topology).await;
        (history["offset"].as_u64().unwrap(), history["epoch"].as_str().unwrap().to_string())
    };
    topology.gateway(&lost).process.kill();
    assert_eq!(clients[1].publish("chat.ops", json!("while away")).await["type"], "reply");
    let mut back = Client::connect(&topology.ws_url()).await;
    assert_ne!(back.welcome["node"].as_str(), Some(lost.as_str()), "nginx skips the dead gateway");
    let since = json!({"offset": offset, "epoch": epoch});
    let answer = back.request(json!({"type": "subscribe", "group": "chat.ops", "since": since})).await;
    assert_eq!(answer["result"]["recovered"], true, "{answer}");
    assert_eq!(back.message().await.1, json!("while away"));
}

/// `GET /api/history` of `chat.ops` through nginx.
async fn topology_history(topology: &Topology) -> Value {
    let key = [("authorization", "Bearer change-me-demo-key")];
    let (status, history) = http(topology.nginx.addr, "GET", "/api/history?group=chat.ops", &key, "").await;
    assert_eq!(status, 200, "{history}");
    history
}

#[tokio::test]
async fn two_browsers_chat_through_nginx_and_one_survives_losing_its_gateway() {
    let mut topology = Topology::start().await;
    let driver = Chromedriver::start().await;
    let profiles = std::env::temp_dir().join(format!("herald-browsers-{}", std::process::id()));
    let url = format!("http://{}/", topology.nginx.addr);
    let ann = Page(driver.browser(&profiles.join("ann")).await);
    let bob = Page(driver.browser(&profiles.join("bob")).await);
    for (page, name) in [(&ann, "ann"), (&bob, "bob")] {
        page.0.goto(&url).await.unwrap();
        page.join(name).await;
    }
    ann.say("hello from ann").await;
    bob.say("hello from bob").await;
    for page in [&ann, &bob] {
        eventually("both messages shown", || async { page.chat_lines().await.len() == 2 }).await;
    }

    let lost = ann.node().await.unwrap();
    topology.gateway(&lost).process.kill();
    // Published at once, most likely before ann's page has reconnected: it must arrive anyway.
    let key = [("authorization", "Bearer change-me-demo-key")];
    let body =
        json!({"group": "chat.lobby", "data": {"user": "api", "text": "while ann was away"}}).to_string();
    assert_eq!(http(topology.nginx.addr, "POST", "/api/publish", &key, &body).await.0, 200);
    eventually("ann reconnects to another node", || async { ann.node().await.is_some_and(|n| n != lost) })
        .await;
    eventually("bob is connected", || async { bob.node().await.is_some_and(|n| n != lost) }).await;
    bob.say("while ann moved").await;
    ann.say("ann is back").await;
    let expected = [
        "ann: hello from ann",
        "bob: hello from bob",
        "api: while ann was away",
        "bob: while ann moved",
        "ann: ann is back",
    ];
    for page in [&ann, &bob] {
        eventually("every message, once, in both views", || async {
            let mut lines = page.chat_lines().await;
            lines.sort();
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            lines == want
        })
        .await;
    }
    assert!(ann.text("log").await.contains(&format!("connected to node {}", ann.node().await.unwrap())));

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("browser-chat.png"), ann.0.screenshot().await.unwrap()).unwrap();
    for page in [ann, bob] {
        page.0.close().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(profiles);
}

#[tokio::test]
async fn a_browser_event_source_through_nginx_resumes_with_no_gap_when_its_gateway_dies() {
    let mut topology = Topology::start().await;
    let driver = Chromedriver::start().await;
    let profile = std::env::temp_dir().join(format!("herald-sse-{}", std::process::id()));
    let page = Page(driver.browser(&profile).await);
    // The demo's second page: the scheduler's live panel over SSE.
    page.0.goto(&format!("http://{}/live", topology.nginx.addr)).await.unwrap();
    eventually("the clock ticks over SSE", || async { !page.text("clock").await.starts_with("waiting") })
        .await;
    assert!(page.text("status").await.starts_with("streaming from node"));

    // A stream of a group with history, next to it.
    let script = r#"
        const done = arguments[arguments.length - 1];
        import("/herald.js").then(({ HeraldEvents }) => {
          window.got = [];
          const stream = new HeraldEvents("/sse", ["chat.sse"]);
          window.stream = stream;
          stream.addEventListener("message", (e) => window.got.push(e.detail.data.n));
          // Joined once subscribed: what is published from then on must all arrive.
          stream.addEventListener("subscribed", () => done(stream.node));
          stream.connect();
        });"#;
    let lost = page.0.execute_async(script, vec![]).await.unwrap().as_str().unwrap().to_string();
    let got = || async { page.0.execute("return window.got", vec![]).await.unwrap() };
    let nginx = topology.nginx.addr;
    let publish = |n: u64| async move {
        let key = [("authorization", "Bearer change-me-demo-key")];
        let body = json!({"group": "chat.sse", "data": {"n": n}}).to_string();
        assert_eq!(http(nginx, "POST", "/api/publish", &key, &body).await.0, 200);
    };
    for n in 1..=3 {
        publish(n).await;
    }
    eventually("the first messages arrive", || async { got().await == json!([1, 2, 3]) }).await;

    topology.gateway(&lost).process.kill();
    // Published at once, most likely before the browser has reconnected.
    for n in 4..=6 {
        publish(n).await;
    }
    eventually("every message once, in order", || async { got().await == json!([1, 2, 3, 4, 5, 6]) }).await;
    let node = page.0.execute("return window.stream.node", vec![]).await.unwrap();
    assert_ne!(node.as_str(), Some(lost.as_str()), "resumed on another gateway");
    page.0.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
