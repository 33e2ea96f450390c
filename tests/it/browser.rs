//! Headless Chromium through chromedriver (WebDriver), for tests that drive real pages.

use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::harness::{eventually, free_port};

/// The first of `paths` that exists, else `name` for a `PATH` lookup.
pub fn installed(paths: &[&'static str], name: &'static str) -> &'static str {
    paths.iter().copied().find(|p| std::path::Path::new(p).exists()).unwrap_or(name)
}

/// chromedriver on a free port, stopped on drop.
pub struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver)");
        let driver = Self { child, url: format!("http://127.0.0.1:{port}") };
        eventually("chromedriver listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        driver
    }

    pub async fn browser(&self, profile: &std::path::Path) -> fantoccini::Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=420,900",
        ];
        let mut args: Vec<String> = args.map(String::from).to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": installed(&["/usr/bin/chromium", "/usr/bin/chromium-browser"], "chromium"), "args": args}));
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo page's view of one browser.
pub struct Page(pub fantoccini::Client);

impl Page {
    pub async fn text(&self, id: &str) -> String {
        self.0.find(fantoccini::Locator::Id(id)).await.unwrap().text().await.unwrap()
    }

    pub async fn type_into(&self, id: &str, text: &str) {
        let field = self.0.find(fantoccini::Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, id: &str) {
        self.0.find(fantoccini::Locator::Id(id)).await.unwrap().click().await.unwrap();
    }

    /// The node named in the status line, once connected.
    pub async fn node(&self) -> Option<String> {
        let status = self.text("status").await;
        let rest = status.strip_prefix("connected to node ")?;
        Some(rest.split_whitespace().next()?.to_string())
    }

    /// The chat lines (`user: text`) in the message list.
    pub async fn chat_lines(&self) -> Vec<String> {
        self.text("log").await.lines().filter(|l| l.contains(": ")).map(String::from).collect()
    }

    pub async fn join(&self, name: &str) {
        eventually("the page connects", || async { self.node().await.is_some() }).await;
        self.type_into("name", name).await;
        self.click("joinBtn").await;
        eventually("joined", || async { self.text("log").await.contains("joined chat.lobby") }).await;
    }

    pub async fn say(&self, text: &str) {
        self.type_into("text", text).await;
        self.click("sendBtn").await;
    }
}
