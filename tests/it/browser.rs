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
