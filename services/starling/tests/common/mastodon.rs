//! A small client for the Mastodon-shaped API (accounts, OAuth), as the tests drive it:
//! form-encoded bodies (as Mastodon.py sends) or JSON (as masto.js does), redirects not
//! followed.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

pub const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";
pub const CALLBACK: &str = "https://app.example/callback";

pub struct Client {
    http: reqwest::Client,
    /// Where accounts and OAuth live (graph-service).
    pub graph: String,
    /// Where the home timeline is read (the timeline-service).
    pub timeline: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub location: Option<String>,
    pub text: String,
}

pub enum Body<'a> {
    None,
    Form(&'a [(&'a str, &'a str)]),
    Json(Value),
}

impl Client {
    pub fn new(graph: &str, timeline: &str) -> Client {
        let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Client { http, graph: graph.to_owned(), timeline: timeline.to_owned() }
    }

    pub async fn send(&self, method: reqwest::Method, url: String, token: Option<&str>, body: Body<'_>) -> Reply {
        let mut req = self.http.request(method, &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Form(f) => req.form(f),
            Body::Json(j) => req.json(&j),
        };
        let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = res.status();
        let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, location, text }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Body<'_>) -> Reply {
        self.send(reqwest::Method::POST, format!("{}{path}", self.graph), token, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, format!("{}{path}", self.graph), token, Body::None).await
    }

    pub async fn home(&self, token: &str) -> Reply {
        self.send(reqwest::Method::GET, format!("{}/api/v1/timelines/home", self.timeline), Some(token), Body::None)
            .await
    }
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Registers an app; returns (client_id, client_secret).
pub async fn new_app(c: &Client, name: &str) -> (String, String) {
    let redirects = format!("{OOB}\n{CALLBACK}");
    let r = c
        .post(
            "/api/v1/apps",
            None,
            Body::Form(&[("client_name", name), ("redirect_uris", &redirects), ("scopes", "read write follow push")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(s(&r.body["id"]).parse::<u64>().is_ok(), "app id is a numeric string: {}", r.body);
    assert_eq!(r.body["name"], name);
    assert_eq!(r.body["scopes"], json!(["read", "write", "follow", "push"]));
    assert_eq!(r.body["redirect_uris"], json!([OOB, CALLBACK]));
    assert_eq!(r.body["client_secret_expires_at"], 0);
    (s(&r.body["client_id"]).to_owned(), s(&r.body["client_secret"]).to_owned())
}

pub async fn token(c: &Client, params: &[(&str, &str)]) -> Reply {
    c.post("/oauth/token", None, Body::Form(params)).await
}

/// Signs `name` up through a fresh app and logs in with the password grant; returns
/// (account id, token with `read write follow`).
pub async fn account(c: &Client, name: &str) -> (String, String) {
    let (id, secret) = new_app(c, &format!("{name}'s app")).await;
    let r = token(
        c,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "read write follow"),
        ],
    )
    .await;
    let app_token = s(&r.body["access_token"]).to_owned();
    let email = format!("{name}@example.com");
    let form = [("username", name), ("email", &email), ("password", "a long password"), ("agreement", "true")];
    let r = c.post("/api/v1/accounts", Some(&app_token), Body::Form(&form)).await;
    assert_eq!(r.status, StatusCode::OK, "sign-up {name}: {}", r.text);
    let user_token = s(&r.body["access_token"]).to_owned();
    let r = c.get("/api/v1/accounts/verify_credentials", Some(&user_token)).await;
    (s(&r.body["id"]).to_owned(), user_token)
}
