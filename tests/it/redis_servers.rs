//! Redis deployments beyond one server, started for real on this host: a Redis Cluster
//! (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`) and a Sentinel
//! setup (a master, a replica, three `redis-server --sentinel`). Every process is killed and
//! every file removed on drop.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::harness::{eventually, query_port, start_server};

/// One `redis-server` process.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh directory for one deployment's files.
fn scratch(kind: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("herald-{kind}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory of its own for the server on `port`: a replica writes the snapshot it receives
/// there (even with `--save ""`), and a server loads any snapshot it finds where it starts.
fn own_dir(dir: &std::path::Path, port: u16) -> String {
    let own = dir.join(port.to_string());
    std::fs::create_dir_all(&own).unwrap();
    own.display().to_string()
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port below 55535 whose cluster bus port (+10000) is free too.
fn bus_port(taken: &[u16]) -> u16 {
    loop {
        let port = rand::random_range(20_000..45_000);
        if !taken.contains(&port) && bindable(port) && bindable(port + 10_000) {
            return port;
        }
    }
}

async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    let value = query_port(port, args).await.unwrap_or_else(|e| panic!("{args:?} on {port}: {e}"));
    redis::from_redis_value(value).expect("redis reply type")
}

/// A Redis Cluster on this host.
pub struct Cluster {
    servers: Vec<Server>,
    dir: PathBuf,
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each, every slot served.
    pub async fn start(masters: usize, replicas: usize) -> Self {
        let dir = scratch("cluster");
        let mut servers: Vec<Server> = Vec::new();
        while servers.len() < masters * (1 + replicas) {
            let taken: Vec<u16> = servers.iter().map(|s| s.port).collect();
            let port = bus_port(&taken);
            let (port_arg, dir_arg) = (port.to_string(), own_dir(&dir, port));
            let args = [
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                // A replica may always take over, however long it lost its master.
                "--cluster-replica-validity-factor",
                "0",
                "--dir",
                &dir_arg,
                "--save",
                "",
                "--appendonly",
                "no",
            ];
            if let Some(child) = start_server(&args, port).await {
                servers.push(Server { port, child: Some(child) });
            }
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for server in &servers {
            create.arg(format!("127.0.0.1:{}", server.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli must be installed");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { servers, dir };
        cluster.wait_healthy(masters).await;
        cluster
    }

    /// Until every live node sees the cluster ok with `masters` masters, each with its replicas
    /// in sync.
    pub async fn wait_healthy(&self, masters: usize) {
        eventually("the cluster is ok", || async {
            for port in self.live_ports() {
                let info: String = match query_port(port, &["CLUSTER", "INFO"]).await {
                    Ok(value) => redis::from_redis_value(value).unwrap_or_default(),
                    Err(_) => return false,
                };
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let replication: String = query(port, &["INFO", "replication"]).await;
                if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                    return false;
                }
            }
            self.masters().await.len() == masters
        })
        .await;
    }

    fn live_ports(&self) -> Vec<u16> {
        self.servers.iter().filter(|s| s.child.is_some()).map(|s| s.port).collect()
    }

    /// Seed URLs for Herald: two of the live nodes.
    pub fn urls(&self) -> Vec<String> {
        self.live_ports().iter().take(2).map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }

    /// Each master's port and slot ranges, as a live node sees them.
    pub async fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let port = self.live_ports()[0];
        let slots: Vec<(u16, u16, (String, u16))> = match query_port(port, &["CLUSTER", "SLOTS"]).await {
            Ok(redis::Value::Array(ranges)) => ranges
                .into_iter()
                .filter_map(|range| {
                    let redis::Value::Array(fields) = range else { return None };
                    let start = redis::from_redis_value(fields[0].clone()).ok()?;
                    let end = redis::from_redis_value(fields[1].clone()).ok()?;
                    let redis::Value::Array(master) = fields[2].clone() else { return None };
                    let host = redis::from_redis_value(master[0].clone()).ok()?;
                    let port = redis::from_redis_value(master[1].clone()).ok()?;
                    Some((start, end, (host, port)))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut masters: Vec<(u16, Vec<(u16, u16)>)> = Vec::new();
        for (start, end, (_, port)) in slots {
            match masters.iter_mut().find(|(p, _)| *p == port) {
                Some((_, ranges)) => ranges.push((start, end)),
                None => masters.push((port, vec![(start, end)])),
            }
        }
        masters.sort();
        masters
    }

    /// The port of the master serving `slot`.
    pub async fn master_of(&self, slot: u16) -> u16 {
        let masters = self.masters().await;
        masters
            .iter()
            .find(|(_, ranges)| ranges.iter().any(|(start, end)| (*start..=*end).contains(&slot)))
            .map(|(port, _)| *port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}: {masters:?}"))
    }

    pub async fn query<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        query(port, args).await
    }

    /// Calls of `command` on the node at `port` since it started (`INFO commandstats`).
    pub async fn command_calls(&self, port: u16, command: &str) -> u64 {
        let info: String = query(port, &["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    /// SIGKILLs the node at `port`.
    pub fn kill(&mut self, port: u16) {
        self.servers.iter_mut().filter(|s| s.port == port).for_each(Server::kill);
    }

    /// Moves `slot` and its keys from the master at `from` to the one at `to`, the way
    /// `redis-cli --cluster reshard` does: importing/migrating, `MIGRATE` in batches, then the
    /// new owner announced to every master.
    pub async fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let slot_arg = slot.to_string();
        let from_id: String = query(from, &["CLUSTER", "MYID"]).await;
        let to_id: String = query(to, &["CLUSTER", "MYID"]).await;
        let _: () = query(to, &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id]).await;
        let _: () = query(from, &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id]).await;
        loop {
            let keys: Vec<String> = query(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]).await;
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: () = query(from, &args).await;
        }
        for (port, _) in self.masters().await {
            let _: () = query(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.iter_mut().for_each(Server::kill);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, one replica and three sentinels watching it as `mymaster`.
pub struct Sentinels {
    servers: Vec<Server>,
    sentinels: Vec<Server>,
    dir: PathBuf,
}

impl Sentinels {
    pub const MASTER: &str = "mymaster";

    pub async fn start() -> Self {
        let dir = scratch("sentinel");
        let mut servers = Vec::new();
        let mut replica_of = Vec::new();
        while servers.len() < 2 {
            let port = crate::harness::free_port();
            let (port_arg, dir_arg) = (port.to_string(), own_dir(&dir, port));
            let mut args = vec![
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir_arg,
            ];
            args.extend(replica_of.iter().map(String::as_str));
            if let Some(child) = start_server(&args, port).await {
                if servers.is_empty() {
                    replica_of = vec!["--replicaof".into(), "127.0.0.1".into(), port_arg.clone()];
                }
                servers.push(Server { port, child: Some(child) });
            }
        }
        let master = servers[0].port;
        let replica = servers[1].port;
        eventually("the replica is in sync", || async {
            let info: String = query(replica, &["INFO", "replication"]).await;
            info.contains("master_link_status:up")
        })
        .await;
        let mut sentinels = Vec::new();
        while sentinels.len() < 3 {
            let port = crate::harness::free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n",
                    name = Self::MASTER
                ),
            )
            .unwrap();
            let conf = conf.display().to_string();
            if let Some(child) = start_server(&[&conf, "--sentinel"], port).await {
                sentinels.push(Server { port, child: Some(child) });
            }
        }
        let setup = Self { servers, sentinels, dir };
        for sentinel in setup.sentinels.iter().map(|s| s.port) {
            eventually("each sentinel knows the replica and the other sentinels", || async {
                let master: Vec<String> = query(sentinel, &["SENTINEL", "MASTER", Self::MASTER]).await;
                let field = |name: &str| {
                    master
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| master.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                field("num-slaves") == "1" && field("num-other-sentinels") == "2"
            })
            .await;
        }
        setup
    }

    /// Sentinel URLs for Herald.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| format!("redis://127.0.0.1:{}/", s.port)).collect()
    }

    /// The master's port, as the first sentinel names it.
    pub async fn master_port(&self) -> u16 {
        let (_, port): (String, u16) =
            query(self.sentinels[0].port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]).await;
        port
    }

    /// `SENTINEL FAILOVER`: the replica becomes the master, the master its replica.
    pub async fn failover(&self) {
        let _: () = query(self.sentinels[0].port, &["SENTINEL", "FAILOVER", Self::MASTER]).await;
    }

    pub async fn query<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        query(port, args).await
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        self.sentinels.iter_mut().chain(self.servers.iter_mut()).for_each(Server::kill);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
