//! The fault soak: Redis, three gateway processes, a scheduler process and a few hundred clients
//! on history groups, while pub/sub connections are killed, Redis restarts without its data,
//! gateways are SIGKILLed and restarted, some clients stall and others flood. At the end every
//! well-behaved client has every offset of every group exactly once and in order, or was told
//! (`recovered: false`) where it could not, and no gateway's memory grew past its bound.
//!
//! `SOAK_SECS` sets how long the faults go on (20 s unless set; the README names a longer
//! run) and `SOAK_SEED` replays a run: the seed of each run is printed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{GatewayProcess, Process, Redis, free_port, http};

const GATEWAYS: usize = 3;
const GROUPS: usize = 10;
const STEADY: usize = 240;
const STALLED: usize = 20;
const FLOODERS: usize = 10;
/// Per-connection bound of the soak's gateways (`outbound_queue_bytes`).
const QUEUE_BYTES: u64 = 256 * 1024;

fn gateway_toml(redis: &Redis) -> String {
    format!(
        r#"redis_url = "{}"
auth = "off"
max_connections_per_ip = 100000
outbound_queue = 256
outbound_queue_bytes = {QUEUE_BYTES}
write_timeout = "2s"
drain_period = "200ms"
[namespaces.soak]
history_size = 2000
"#,
        redis.url()
    )
}

fn scheduler_toml(redis: &Redis) -> String {
    let mut toml = format!(
        "redis_url = \"{}\"\nlisten = \"127.0.0.1:0\"\n[scheduler]\nlease_ttl = \"1s\"\n",
        redis.url()
    );
    toml.push_str("[namespaces.soak]\nhistory_size = 2000\n");
    for g in 0..GROUPS {
        toml.push_str(&format!(
            "[[jobs]]\nname = \"soak-{g}\"\ngroup = \"soak.{g}\"\nevery = \"100ms\"\nbuiltin = \"clock\"\n"
        ));
    }
    toml
}

/// What a steady client saw of one group, in order.
#[derive(Debug, Clone)]
enum Seen {
    /// Where the group stood when the client subscribed without `since`.
    Start(u64, String),
    Message(u64, String),
    /// Told that it missed something: it continues from here.
    Told(u64, String),
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Option<Socket> {
    let url = format!("ws://{addr}/ws");
    let connected = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url)).await;
    connected.ok()?.ok().map(|(ws, _)| ws)
}

/// The last position a client knows in a group's log.
fn position(log: &[Seen]) -> Option<(u64, String)> {
    log.last().map(|seen| match seen {
        Seen::Start(o, e) | Seen::Message(o, e) | Seen::Told(o, e) => (*o, e.clone()),
    })
}

/// A well-behaved client: reads everything, and on any loss reconnects to a gateway and
/// resubscribes with `since`, like the JavaScript client.
async fn steady(
    addrs: Vec<SocketAddr>,
    groups: Vec<String>,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> HashMap<String, Vec<Seen>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut logs: HashMap<String, Vec<Seen>> = groups.iter().map(|g| (g.clone(), Vec::new())).collect();
    while !*stop.borrow() {
        let Some(mut ws) = connect(addrs[rng.random_range(0..addrs.len())]).await else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            continue;
        };
        for (id, group) in groups.iter().enumerate() {
            let mut request = json!({"type": "subscribe", "group": group, "id": id});
            if let Some((offset, epoch)) = position(&logs[group]) {
                request["since"] = json!({"offset": offset, "epoch": epoch});
            }
            if ws.send(Message::text(request.to_string())).await.is_err() {
                break;
            }
        }
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => None,
                frame = ws.next() => frame,
            };
            let Some(Ok(Message::Text(text))) = frame else {
                if matches!(frame, Some(Ok(_))) {
                    continue; // ping, pong
                }
                break;
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if !record(&frame, &groups, &mut logs) {
                break; // a refused subscribe (Redis away): start over
            }
        }
        if !*stop.borrow() {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        }
    }
    logs
}

/// Records one frame; false when the connection should be started over.
fn record(frame: &Value, groups: &[String], logs: &mut HashMap<String, Vec<Seen>>) -> bool {
    let at = |f: &Value| match (f["offset"].as_u64(), f["epoch"].as_str()) {
        (Some(offset), Some(epoch)) => (offset, epoch.to_string()),
        _ => panic!("a position in {frame}"),
    };
    match frame["type"].as_str() {
        Some("message") => {
            let (offset, epoch) = at(frame);
            logs.get_mut(frame["group"].as_str().unwrap()).unwrap().push(Seen::Message(offset, epoch));
        }
        Some("recovered") if frame["recovered"] == false => {
            let (offset, epoch) = at(frame);
            logs.get_mut(frame["group"].as_str().unwrap()).unwrap().push(Seen::Told(offset, epoch));
        }
        Some("reply") => {
            let group = &groups[frame["id"].as_u64().unwrap() as usize];
            let result = &frame["result"];
            let log = logs.get_mut(group).unwrap();
            let (offset, epoch) = at(result);
            match result.get("recovered").and_then(Value::as_bool) {
                None => log.push(Seen::Start(offset, epoch)),
                Some(false) => log.push(Seen::Told(offset, epoch)),
                Some(true) => {} // the missed messages follow
            }
        }
        Some("error") => return false,
        _ => {}
    }
    true
}

/// Checks one group's log against the group's final position: consecutive offsets within an
/// epoch, a new epoch only from a waiting one or after being told, and the end reached.
fn verify(client: usize, group: &str, log: &[Seen], end: &(u64, String)) -> Result<(), String> {
    let mut at: Option<(u64, String)> = None;
    for (i, seen) in log.iter().enumerate() {
        match seen {
            Seen::Start(o, e) | Seen::Told(o, e) => at = Some((*o, e.clone())),
            Seen::Message(o, e) => {
                let fine = match &at {
                    Some((lo, le)) if le == e => *o == lo + 1,
                    Some((0, le)) if le.starts_with("0-") => *o == 1,
                    _ => false,
                };
                if !fine {
                    return Err(format!("client {client} {group}: message {o}@{e} after {at:?} (event {i})"));
                }
                at = Some((*o, e.clone()));
            }
        }
    }
    match &at {
        Some(last) if last == end => Ok(()),
        other => Err(format!("client {client} {group}: ended at {other:?}, the group at {end:?}")),
    }
}

/// Subscribes and then never reads: the gateway must close it without anyone else noticing.
async fn stalled(addrs: Vec<SocketAddr>, group: String, mut stop: watch::Receiver<bool>) {
    let Some(mut ws) = connect(addrs[0]).await else { return };
    let _ = ws.send(Message::text(json!({"type": "subscribe", "group": group}).to_string())).await;
    let _ = stop.changed().await;
}

/// Sends requests as fast as it can; reconnects when closed.
async fn flooder(addrs: Vec<SocketAddr>, seed: u64, stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !*stop.borrow() {
        if let Some(ws) = connect(addrs[rng.random_range(0..addrs.len())]).await {
            let (mut sink, mut stream) = ws.split();
            tokio::spawn(async move { while stream.next().await.is_some() {} });
            while !*stop.borrow() {
                let request = json!({"type": "publish", "group": "soak.0", "data": "flood"}).to_string();
                if sink.send(Message::text(request)).await.is_err() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Faults {
    pubsub_kills: u32,
    redis_restarts: u32,
    gateway_kills: u32,
}

async fn inject_faults(
    rng: &mut StdRng,
    redis: &mut Redis,
    gateways: &mut [GatewayProcess],
    toml: &str,
    until: tokio::time::Instant,
) -> Faults {
    let mut faults = Faults { pubsub_kills: 0, redis_restarts: 0, gateway_kills: 0 };
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2000))).await;
        match rng.random_range(0..10) {
            0..4 => {
                let _: i64 = redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
                faults.pubsub_kills += 1;
            }
            4..6 => {
                redis.restart().await;
                faults.redis_restarts += 1;
            }
            _ => {
                let i = rng.random_range(0..gateways.len());
                let addr = gateways[i].addr;
                gateways[i].process.kill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                gateways[i] = GatewayProcess::start_at(addr, toml, &[]).await;
                faults.gateway_kills += 1;
            }
        }
    }
    faults
}

#[tokio::test]
async fn every_client_gets_every_message_once_or_is_told_through_faults() {
    let seed = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("soak seed {seed} for {secs} s (replay with SOAK_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut redis = Redis::start().await;
    let toml = gateway_toml(&redis);
    let mut gateways = Vec::new();
    for _ in 0..GATEWAYS {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        gateways.push(GatewayProcess::start_at(addr, &toml, &[]).await);
    }
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let scheduler = Process::spawn(&["scheduler"], &scheduler_toml(&redis));
    let (stop_tx, stop) = watch::channel(false);
    let mut clients = Vec::new();
    for c in 0..STEADY {
        // Two different groups, in every combination.
        let groups = vec![
            format!("soak.{}", c % GROUPS),
            format!("soak.{}", (c + 1 + c / GROUPS % (GROUPS - 1)) % GROUPS),
        ];
        clients.push(tokio::spawn(steady(addrs.clone(), groups, rng.random(), stop.clone())));
    }
    let mut others = Vec::new();
    for c in 0..STALLED {
        others.push(tokio::spawn(stalled(addrs.clone(), format!("soak.{}", c % GROUPS), stop.clone())));
    }
    for _ in 0..FLOODERS {
        others.push(tokio::spawn(flooder(addrs.clone(), rng.random(), stop.clone())));
    }

    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let faults = inject_faults(&mut rng, &mut redis, &mut gateways, &toml, until).await;
    eprintln!(
        "faults: {} pub/sub kills, {} Redis restarts, {} gateway kills",
        faults.pubsub_kills, faults.redis_restarts, faults.gateway_kills
    );
    // Calm: every client finds its way back and the scheduler publishes on; then it stops and
    // the clients get the rest.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(scheduler);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ends = HashMap::new();
    for g in 0..GROUPS {
        let (status, history) =
            http(addrs[0], "GET", &format!("/api/history?group=soak.{g}&limit=1"), &[], "").await;
        assert_eq!(status, 200, "{history}");
        ends.insert(
            format!("soak.{g}"),
            (history["offset"].as_u64().unwrap(), history["epoch"].as_str().unwrap().to_string()),
        );
    }
    let bound_kib = 64 * 1024 + (STEADY + STALLED + FLOODERS) as u64 * QUEUE_BYTES / 1024;
    for gateway in &gateways {
        let rss = gateway.process.rss_kib();
        assert!(
            rss < bound_kib,
            "gateway {} holds {rss} KiB, over its bound of {bound_kib} KiB",
            gateway.addr
        );
    }
    stop_tx.send(true).unwrap();
    let mut failures = Vec::new();
    let mut messages = 0;
    for (c, client) in clients.into_iter().enumerate() {
        let logs = client.await.unwrap();
        for (group, log) in &logs {
            messages += log.iter().filter(|s| matches!(s, Seen::Message(..))).count();
            if let Err(e) = verify(c, group, log, &ends[group]) {
                failures.push(e);
            }
        }
    }
    for other in others {
        other.abort();
    }
    eprintln!("{messages} messages checked over {STEADY} clients");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(messages > STEADY * 2 * 10, "the clients received messages all along");
}

#[test]
fn the_check_accepts_exactly_once_in_order_or_told() {
    let m = |o, e: &str| Seen::Message(o, e.into());
    let end = (3, "e1".to_string());
    let fine = [Seen::Start(0, "0-1-L".into()), m(1, "e1"), m(2, "e1"), m(3, "e1")];
    assert!(verify(0, "g", &fine, &end).is_ok());
    let told = [Seen::Start(5, "e0".into()), m(6, "e0"), Seen::Told(1, "e1".into()), m(2, "e1"), m(3, "e1")];
    assert!(verify(0, "g", &told, &end).is_ok());
    let gap = [Seen::Start(0, "e1".into()), m(1, "e1"), m(3, "e1")];
    assert!(verify(0, "g", &gap, &end).is_err());
    let duplicate = [Seen::Start(0, "e1".into()), m(1, "e1"), m(2, "e1"), m(2, "e1"), m(3, "e1")];
    assert!(verify(0, "g", &duplicate, &end).is_err());
    let silent_epoch = [Seen::Start(5, "e0".into()), m(1, "e1"), m(2, "e1"), m(3, "e1")];
    assert!(verify(0, "g", &silent_epoch, &end).is_err());
    let short = [Seen::Start(0, "e1".into()), m(1, "e1")];
    assert!(verify(0, "g", &short, &end).is_err());
}
