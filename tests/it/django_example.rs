//! `examples/django_chat` as a user meets it: Django (its dev server, the test virtualenv's
//! Django and channels_redis) next to Herald standalone with the example's config, two headless
//! Chromium browsers that log in with Django's login form, join a room and chat; the message is
//! saved in Django's database, the scheduler pushes the dashboard, and an unchanged `group_send`
//! announcement reaches the other browser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::browser::{Chromedriver, Page};
use crate::harness::{Process, Redis, eventually, free_port, python};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/django_chat")
}

/// The example's Django app with its own database, migrated and with its demo users.
struct Prepared {
    env: Vec<(String, String)>,
    db: PathBuf,
}

impl Prepared {
    /// The slow part, done before any port is picked: a port picked early waits unbound, and on
    /// a busy machine another socket can take it meanwhile.
    fn new(redis: &Redis) -> Self {
        let db = std::env::temp_dir().join(format!("herald-django-{}.sqlite3", std::process::id()));
        let env = vec![
            ("CHAT_DB".to_string(), db.display().to_string()),
            ("CHAT_REDIS_URL".into(), format!("{}0", redis.url())),
        ];
        for command in [&["migrate", "-v0"][..], &["demo_users"]] {
            assert!(Django::manage(&env, command).status().unwrap().success(), "manage.py {command:?}");
        }
        Self { env, db }
    }
}

/// The example's Django app serving on `addr`; killed on drop.
struct Django {
    child: Child,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    db: PathBuf,
}

impl Django {
    /// Serves the prepared app on `addr`, its pages pointing at the Herald on `herald`.
    async fn serve(prepared: Prepared, addr: SocketAddr, herald: SocketAddr) -> Self {
        let Prepared { mut env, db } = prepared;
        env.push(("CHAT_HERALD_WS_URL".into(), format!("ws://{herald}/ws")));
        let child = Self::manage(&env, &["runserver", &addr.to_string(), "--noreload"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let django = Self { child, addr, env, db };
        eventually("django serves", || async { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
        django
    }

    fn manage(env: &[(String, String)], args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command.current_dir(example()).arg("manage.py").args(args).envs(env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs Python in the app's Django shell and returns the last line it printed.
    fn shell(&self, code: &str) -> String {
        let output = Self::manage(&self.env, &["shell", "-c", code]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_string()
    }
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.db);
    }
}

/// Logs in with Django's login form and lands in the lobby, connected to Herald.
async fn log_in(page: &Page, django: SocketAddr, user: &str) {
    page.0.goto(&format!("http://{django}/accounts/login/?next=/room/lobby/")).await.unwrap();
    page.type_into("id_username", user).await;
    page.type_into("id_password", "herald-demo").await;
    page.click("login").await;
    eventually("connected to Herald", || async {
        page.0.find(fantoccini::Locator::Id("status")).await.is_ok()
            && page.text("status").await.starts_with("connected to node")
    })
    .await;
}

#[tokio::test]
async fn the_django_example_chats_saves_pushes_and_announces() {
    let redis = Redis::start().await;
    let prepared = Prepared::new(&redis);
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (herald, django) = (loopback(free_port()), loopback(free_port()));
    let config = std::fs::read_to_string(example().join("herald.toml"))
        .unwrap()
        .replace("127.0.0.1:8001", &django.to_string())
        .replace("127.0.0.1:8000", &herald.to_string())
        .replace("redis://127.0.0.1:6379/", &redis.url());
    let herald_process = Process::spawn(&["standalone"], &config);
    let django = Django::serve(prepared, django, herald).await;
    herald_process.listening(herald).await;

    let driver = Chromedriver::start().await;
    let profiles = std::env::temp_dir().join(format!("herald-django-browsers-{}", std::process::id()));
    let ann = Page(driver.browser(&profiles.join("ann")).await);
    let bob = Page(driver.browser(&profiles.join("bob")).await);
    log_in(&ann, django.addr, "ann").await;
    log_in(&bob, django.addr, "bob").await;
    for page in [&ann, &bob] {
        eventually("both are here, by name", || async {
            let who = page.text("who").await;
            who.contains("ann") && who.contains("bob")
        })
        .await;
    }

    ann.type_into("text", "hello bob").await;
    ann.click("sendBtn").await;
    eventually("bob reads it", || async { bob.text("log").await.contains("ann: hello bob") }).await;
    let saved = django.shell("from chat.models import Message; print(list(Message.objects.values_list('room', 'user__username', 'text')))");
    assert_eq!(saved, "[('lobby', 'ann', 'hello bob')]", "the publish hook saved it");

    eventually("the scheduler pushes the dashboard", || async {
        bob.text("stats").await.contains("1 messages, 2 users")
    })
    .await;

    ann.type_into("announcement", "tea is ready").await;
    ann.click("announceBtn").await;
    eventually("the group_send reaches bob through the bridge", || async {
        bob.text("log").await.contains("announcement: tea is ready")
    })
    .await;

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("django-chat.png"), bob.0.screenshot().await.unwrap()).unwrap();
    for page in [ann, bob] {
        let _ = page.0.close().await;
    }
    let _ = std::fs::remove_dir_all(profiles);
}
