//! Test harness: runs the real `starling` binary on a temporary data directory and talks
//! to it over HTTP, so tests can kill it (SIGKILL), stop it (SIGTERM) and restart it.

#![allow(dead_code)]

pub mod mastodon;
pub mod stack;
pub mod trace;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_metrics::names;

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// `up`, or `serve <role>`.
    command: Vec<String>,
    /// Where to listen: port 0 at first, then the port the first start got, so a restart
    /// keeps the address its peers know.
    bind: String,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
}

/// The variable `name`, which `scripts/test.sh` sets to `what` it started or installed.
/// The tests that need it are compiled as ignored unless `STARLING_TEST_SERVERS` was set
/// for the build (`build.rs`), so reaching here without it is a broken set-up, not a skip.
#[allow(dead_code)] // Not every test binary needs a server.
pub fn server_env(name: &str, what: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs {what} (scripts/test.sh starts it and sets {name})")
    })
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

impl Server {
    /// Starts a server on a free loopback port. `overrides` are `STARLING__*` variables;
    /// they win over the harness defaults (admin token, rate limiting off), which are set
    /// first because the child's environment keeps the last value given for a name.
    pub fn start(data_dir: &Path, overrides: &[(&str, &str)]) -> Server {
        Server::run(vec!["up".into()], data_dir, overrides)
    }

    /// One service in its own process (`starling serve <role>`).
    pub fn serve(role: &str, data_dir: &Path, overrides: &[(&str, &str)]) -> Server {
        Server::run(vec!["serve".into(), role.into()], data_dir, overrides)
    }

    fn run(command: Vec<String>, data_dir: &Path, overrides: &[(&str, &str)]) -> Server {
        let mut env: Vec<(String, String)> = vec![
            ("STARLING__ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
            ("STARLING__RATE_LIMIT__WRITES_PER_SECOND".into(), "0".into()),
        ];
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut server = Server {
            child: None,
            base: String::new(),
            command,
            bind: "127.0.0.1:0".into(),
            data_dir: data_dir.to_owned(),
            env,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .args(&self.command)
            .args(["--bind", &self.bind, "--data-dir"])
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
        self.bind = self.base.trim_start_matches("http://").to_owned();
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP (`false`) or SIGCONT (`true`): a frozen process keeps its connections and
    /// its place in the consumer group but applies nothing, so events pile up in flight.
    pub fn set_running(&self, running: bool) {
        let child = self.child.as_ref().expect("server not running");
        let signal = if running { "-CONT" } else { "-STOP" };
        let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("running kill");
        assert!(sent.success(), "sending {signal}");
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
    /// Where requests go when every service is in one process.
    pub base: String,
    routes: Option<Routes>,
    /// A fan-out process was restarted: its applied-events counter started again from
    /// zero, so quiet is judged by lag and stability alone.
    pub counters_reset: bool,
}

/// Which process serves which paths when services run separately (what an ingress does).
#[derive(Clone)]
pub struct Routes {
    pub graph: String,
    pub posts: String,
    pub timeline: String,
    /// Every process whose `/metrics` counts, summed.
    pub metrics: Vec<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Api { http, base: base.to_owned(), routes: None, counters_reset: false }
    }

    pub fn routed(routes: Routes) -> Api {
        Api { routes: Some(routes), ..Api::new("") }
    }

    fn base_for(&self, path: &str) -> &str {
        let Some(r) = &self.routes else { return &self.base };
        let bare = path.split('?').next().unwrap_or(path);
        if bare.starts_with("/api/v1/timelines") || bare.starts_with("/admin/v1/cache") {
            &r.timeline
        } else if bare.starts_with("/api/v1/statuses")
            || bare.starts_with("/api/v1/notifications")
            || (bare.starts_with("/api/v1/accounts/") && bare.ends_with("/statuses"))
        {
            &r.posts
        } else {
            &r.graph
        }
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
        // A GET is safe to repeat: retry a 503 (overloaded dependency) as a client would.
        // Writes are never retried blindly: a retry could meet its own committed effect.
        let mut attempts = 0;
        loop {
            let reply = self
                .try_call(method.clone(), path, token, body.clone(), headers)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            attempts += 1;
            if method != Method::GET || reply.status != StatusCode::SERVICE_UNAVAILABLE || attempts == 6 {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
        let mut req = self.http.request(method, format!("{}{path}", self.base_for(path)));
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

    /// A new account named `handle` and its access token (every scope), made by the
    /// operator's bulk sign-up.
    pub async fn register(&self, handle: &str) -> (u64, String) {
        self.register_all(&[handle]).await.pop().expect("one account")
    }

    /// New accounts, one per handle, in order, with their access tokens.
    pub async fn register_all(&self, handles: &[&str]) -> Vec<(u64, String)> {
        let mut out = Vec::with_capacity(handles.len());
        for chunk in handles.chunks(1000) {
            let accounts: Vec<Value> = chunk.iter().map(|h| json!({ "username": h })).collect();
            let body = json!({ "accounts": accounts });
            let r = self.call(Method::POST, "/admin/v1/accounts", Some(ADMIN_TOKEN), Some(body)).await;
            assert_eq!(r.status, StatusCode::OK, "register {chunk:?}: {}", r.body);
            for a in r.body["accounts"].as_array().expect("accounts") {
                let id = a["id"].as_str().expect("id is a string").parse().expect("numeric id");
                out.push((id, a["access_token"].as_str().expect("token").to_owned()));
            }
        }
        out
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
            // Mastodon's shape: an array of Statuses; a full page has a next one.
            let posts = r.body.as_array().expect("an array of statuses");
            assert!(posts.len() <= limit);
            ids.extend(posts.iter().map(|p| p["id"].as_str().expect("id").parse::<u64>().expect("numeric")));
            match posts.last().and_then(|p| p["id"].as_str()).filter(|_| posts.len() == limit) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
        panic!("pagination did not end");
    }

    /// A counter, summed over every process that reports it.
    pub async fn metric(&self, name: &str) -> u64 {
        let bases = match &self.routes {
            Some(r) => r.metrics.clone(),
            None => vec![self.base.clone()],
        };
        let mut found = None;
        for base in bases {
            let text =
                self.http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("metrics");
            let value = text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok()));
            if let Some(v) = value {
                found = Some(found.unwrap_or(0) + v);
            }
        }
        found.unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits until the fan-out has applied everything: every event the services published
    /// was applied (or dead-lettered), no consumer reports lag, and nothing moved for a
    /// while.
    pub async fn wait_quiet(&self) {
        let mut last = (u64::MAX, u64::MAX);
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let published = self.metric(names::EVENTS_PUBLISHED).await;
            let applied = self.metric(names::FANOUT_EVENTS).await + self.metric(names::FANOUT_DEAD_LETTERS).await;
            let lag = self.metric(names::FANOUT_LAG).await;
            let now = (published, applied);
            if now != last || (applied < published && !self.counters_reset) || lag > 0 {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() > Duration::from_millis(500) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fan-out never went quiet: {applied} of {published} applied, lag {lag}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
