//! The replay's view of a deployment: its public HTTP API (one base URL standalone, one per
//! service distributed) and the services' `/metrics`.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use starling_ids::{PostId, UserId};

/// Where each part of the API lives.
#[derive(Clone, Debug)]
pub struct Targets {
    pub graph: String,
    pub posts: String,
    pub timeline: String,
    /// Every process whose `/metrics` counts part of the work.
    pub metrics: Vec<String>,
}

impl Targets {
    /// A standalone server: everything at one address.
    pub fn single(base: &str) -> Targets {
        let base = base.trim_end_matches('/').to_owned();
        Targets { graph: base.clone(), posts: base.clone(), timeline: base.clone(), metrics: vec![base] }
    }
}

/// Why a request has no HTTP answer, or which answer it had.
#[derive(Debug)]
pub enum Failure {
    /// Connection refused/reset, timeout: the outcome is unknown.
    Transport(String),
    Status(StatusCode, Value),
}

impl Failure {
    /// A short stable name for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            Failure::Transport(_) => "transport".into(),
            Failure::Status(s, _) if *s == StatusCode::TOO_MANY_REQUESTS => "rate_limited_429".into(),
            Failure::Status(s, _) if s.is_server_error() => format!("server_{}", s.as_u16()),
            Failure::Status(s, _) => format!("status_{}", s.as_u16()),
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Status(s, _) => Some(*s),
            Failure::Transport(_) => None,
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub targets: Targets,
    /// The operator's token, for creating the trace's accounts in bulk.
    admin_token: String,
}

impl Client {
    pub fn new(targets: Targets, admin_token: &str, connections: usize) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(connections)
            .build()
            .expect("an HTTP client with default TLS-free settings always builds");
        Client { http, targets, admin_token: admin_token.to_owned() }
    }

    /// `Ok` only for a 2xx answer.
    async fn expect_success(
        &self,
        base: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, Failure> {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| Failure::Transport(e.to_string()))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| Failure::Transport(e.to_string()))?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() { Ok(Reply { status, body }) } else { Err(Failure::Status(status, body)) }
    }

    /// Creates one account per handle (at most 1000) with the operator's bulk sign-up,
    /// `POST /admin/v1/accounts`; their ids and access tokens, in order.
    pub async fn register_all(&self, handles: &[String]) -> Result<Vec<(UserId, String)>, Failure> {
        let accounts: Vec<Value> = handles.iter().map(|h| json!({ "username": h })).collect();
        let body = Some(json!({ "accounts": accounts }));
        let admin = Some(self.admin_token.as_str());
        let r = self.expect_success(&self.targets.graph, Method::POST, "/admin/v1/accounts", admin, body, &[]).await?;
        let created: Option<Vec<(UserId, String)>> = r.body["accounts"].as_array().and_then(|all| {
            all.iter()
                .map(|a| {
                    let id = a["id"].as_str().and_then(|s| s.parse().ok()).map(UserId)?;
                    Some((id, a["access_token"].as_str()?.to_owned()))
                })
                .collect()
        });
        match created {
            Some(c) if c.len() == handles.len() => Ok(c),
            _ => Err(Failure::Status(r.status, r.body)),
        }
    }

    /// Follow, unfollow, block or unblock: `relation` is `follow` or `block`.
    pub async fn relate(&self, token: &str, relation: &str, target: UserId, undo: bool) -> Result<(), Failure> {
        let path = format!("/api/v1/accounts/{target}/{}{relation}", if undo { "un" } else { "" });
        self.expect_success(&self.targets.graph, Method::POST, &path, Some(token), None, &[]).await.map(drop)
    }

    pub async fn post(&self, token: &str, text: &str, idempotency_key: &str) -> Result<PostId, Failure> {
        let r = self
            .expect_success(
                &self.targets.posts,
                Method::POST,
                "/api/v1/statuses",
                Some(token),
                Some(json!({ "status": text })),
                &[("Idempotency-Key", idempotency_key)],
            )
            .await?;
        match r.body["id"].as_str().and_then(|s| s.parse().ok()) {
            Some(id) => Ok(PostId(id)),
            None => Err(Failure::Status(r.status, r.body)),
        }
    }

    /// `POST /api/v1/statuses/{id}/{action}` (`reblog`, `unreblog`, `favourite`,
    /// `unfavourite`): the Status answered, whose `id` is the reblog's for a reblog.
    pub async fn status_action(&self, token: &str, id: PostId, action: &str) -> Result<PostId, Failure> {
        let path = format!("/api/v1/statuses/{id}/{action}");
        let r = self.expect_success(&self.targets.posts, Method::POST, &path, Some(token), None, &[]).await?;
        match r.body["id"].as_str().and_then(|s| s.parse().ok()) {
            Some(id) => Ok(PostId(id)),
            None => Err(Failure::Status(r.status, r.body)),
        }
    }

    /// Mute (`undo: false`) or unmute `target`.
    pub async fn mute(&self, token: &str, target: UserId, undo: bool) -> Result<(), Failure> {
        let path = format!("/api/v1/accounts/{target}/{}", if undo { "unmute" } else { "mute" });
        self.expect_success(&self.targets.graph, Method::POST, &path, Some(token), None, &[]).await.map(drop)
    }

    pub async fn delete(&self, token: &str, id: PostId) -> Result<(), Failure> {
        let path = format!("/api/v1/statuses/{id}");
        self.expect_success(&self.targets.posts, Method::DELETE, &path, Some(token), None, &[]).await.map(drop)
    }

    /// One page of a home timeline (Mastodon's: an array of Statuses) of at most `limit`
    /// entries; `query` is the rest after `?`. Returns the ids and the next (older)
    /// cursor: the last id of a full page, as the `Link` header's `next` has it.
    pub async fn home(&self, token: &str, limit: usize, query: &str) -> Result<(Vec<PostId>, Option<PostId>), Failure> {
        let path = format!("/api/v1/timelines/home?limit={limit}{query}");
        let r = self.expect_success(&self.targets.timeline, Method::GET, &path, Some(token), None, &[]).await?;
        let ids: Option<Vec<PostId>> = r
            .body
            .as_array()
            .map(|posts| posts.iter().map(|p| p["id"].as_str().and_then(|s| s.parse().ok()).map(PostId)).collect())
            .and_then(|ids: Vec<Option<PostId>>| ids.into_iter().collect());
        match ids {
            Some(ids) => {
                let next = ids.last().copied().filter(|_| ids.len() == limit);
                Ok((ids, next))
            }
            None => Err(Failure::Status(r.status, r.body)),
        }
    }

    /// The whole home timeline, page by page.
    pub async fn home_all(&self, token: &str) -> Result<Vec<PostId>, Failure> {
        let mut all = Vec::new();
        let mut query = String::new();
        loop {
            let (ids, next) = self.home(token, 100, &query).await?;
            all.extend(ids);
            match next {
                Some(n) => query = format!("&max_id={n}"),
                None => return Ok(all),
            }
        }
    }

    /// Fails unless every metrics endpoint answers with Prometheus text: counters read
    /// from nowhere would make a blank report and an endless wait for quiet.
    pub async fn check_metrics(&self) -> anyhow::Result<()> {
        for base in &self.targets.metrics {
            let url = format!("{base}/metrics");
            let res = self.http.get(&url).send().await.map_err(|e| anyhow::anyhow!("metrics at {url}: {e}"))?;
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "metrics at {url} answered {status}");
            anyhow::ensure!(
                parse_prometheus(&text).next().is_some(),
                "{url} did not answer with Prometheus text (no samples in {} bytes)",
                text.len()
            );
        }
        Ok(())
    }

    /// Every sample of every metrics endpoint, summed across endpoints by series name
    /// (labels included). Endpoints that do not answer are left out.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        sum_metrics(&self.metrics_each().await)
    }

    /// Every sample of each metrics endpoint that answers, by endpoint.
    pub async fn metrics_each(&self) -> Vec<(String, HashMap<String, f64>)> {
        let mut each = Vec::new();
        for base in &self.targets.metrics {
            let Ok(res) = self.http.get(format!("{base}/metrics")).send().await else { continue };
            let Ok(text) = res.text().await else { continue };
            each.push((base.clone(), parse_prometheus(&text).collect()));
        }
        each
    }
}

/// The samples of several endpoints, summed by series name (labels included).
pub fn sum_metrics(each: &[(String, HashMap<String, f64>)]) -> HashMap<String, f64> {
    let mut sum = HashMap::new();
    for (_, samples) in each {
        for (name, value) in samples {
            *sum.entry(name.clone()).or_insert(0.0) += value;
        }
    }
    sum
}

/// Samples of the Prometheus text format: `name{labels} value`, comments skipped.
pub fn parse_prometheus(text: &str) -> impl Iterator<Item = (String, f64)> + '_ {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        Some((name.trim().to_owned(), value.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE a counter\na 3\nb{bucket=\"10-99\"} 2.5\nbad line\n";
        let got: Vec<_> = parse_prometheus(text).collect();
        assert_eq!(got, vec![("a".to_owned(), 3.0), ("b{bucket=\"10-99\"}".to_owned(), 2.5)]);
    }
}
