//! Test harness: runs the real `starling` binary on a temporary data directory and talks
//! to it over HTTP, so tests can kill it (SIGKILL), stop it (SIGTERM) and restart it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct Server {
    child: Option<Child>,
    pub base: String,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

impl Server {
    /// Starts a server on a free loopback port. `overrides` are `STARLING__*` variables;
    /// they win over the harness defaults (admin token, rate limiting off), which are set
    /// first because the child's environment keeps the last value given for a name.
    pub fn start(data_dir: &Path, overrides: &[(&str, &str)]) -> Server {
        let mut env: Vec<(String, String)> = vec![
            ("STARLING__ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
            ("STARLING__RATE_LIMIT__WRITES_PER_SECOND".into(), "0".into()),
        ];
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut server = Server { child: None, base: String::new(), data_dir: data_dir.to_owned(), env };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .args(["up", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", std::env::var("STARLING_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the starling binary");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("server printed nothing").expect("reading server output");
        let base = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line: {line}"));
        self.base = base.trim().to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or drain.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping");
        }
    }

    /// SIGTERM and wait for the graceful stop.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("running kill");
        assert!(sent.success(), "sending SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thin JSON client.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Api { http, base: base.to_owned() }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_call(method, path, token, body, headers).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Like `call_with` but a transport error (server down) is returned, not a panic.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(Reply { status, body, headers })
    }

    pub async fn register(&self, handle: &str) -> (u64, String) {
        let r = self.call(Method::POST, "/api/v1/users", None, Some(json!({ "handle": handle }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "register {handle}: {}", r.body);
        let id = r.body["user"]["id"].as_str().expect("id is a string").parse().expect("numeric id");
        (id, r.body["token"].as_str().expect("token").to_owned())
    }

    /// Every post id of `token`'s home timeline, page by page.
    pub async fn home_all(&self, token: &str, limit: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let path = match &cursor {
                Some(c) => format!("/api/v1/timelines/home?limit={limit}&max_id={c}"),
                None => format!("/api/v1/timelines/home?limit={limit}"),
            };
            let r = self.call(Method::GET, &path, Some(token), None).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
            let posts = r.body["posts"].as_array().expect("posts");
            assert!(posts.len() <= limit);
            ids.extend(posts.iter().map(|p| p["id"].as_str().expect("id").parse::<u64>().expect("numeric")));
            match r.body["next_max_id"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
        panic!("pagination did not end");
    }

    pub async fn metric(&self, name: &str) -> u64 {
        let r = self.call(Method::GET, "/metrics", None, None).await;
        let text = r.body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits until the fan-out has applied everything: the applied-events counter stops
    /// moving for a while (longer than the celebrity-set refresh the tests configure).
    pub async fn wait_quiet(&self) {
        let mut last = u64::MAX;
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = self.metric("starling_fanout_events_total").await;
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() > Duration::from_millis(500) {
                return;
            }
            assert!(Instant::now() < deadline, "the fan-out never went quiet");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
