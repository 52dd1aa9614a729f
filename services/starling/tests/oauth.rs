//! Accounts and OAuth 2 as Mastodon clients use them, over HTTP against the real binary:
//! app registration, sign-up with an app token, the password, client-credentials and
//! authorization-code grants (redirected and out of band), scopes, revocation (at once,
//! also in another process), and the bad input of each. Once standalone, once with every
//! service in its own process (the token checked by the timeline-service, which asks the
//! graph-service).
//!
//! Bodies are sent form-encoded (as Mastodon.py does) and as JSON (as masto.js does).
//! Then the real Mastodon.py and masto.js (`scripts/clients/`, with what `MASTODON_PY` and
//! `MASTO_JS` name; scripts/test.sh installs both) each do a session of their own.

mod common;

use common::Server;
use common::mastodon::{Body, CALLBACK, Client, OOB, new_app, s, token};
use common::stack::{Stack, backends_env};
use reqwest::StatusCode;
use serde_json::json;

/// The whole flow against one deployment.
async fn exercise(c: &Client) {
    // Registering apps: bad input first.
    let r = c.post("/api/v1/apps", None, Body::Json(json!({ "client_name": "x" }))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "no redirect_uris: {}", r.text);
    let r = c.post("/api/v1/apps", None, Body::Json(json!({ "client_name": "x", "redirect_uris": "not a uri" }))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "relative redirect: {}", r.text);
    let r = c
        .post(
            "/api/v1/apps",
            None,
            Body::Json(json!({ "client_name": "x", "redirect_uris": OOB, "scopes": "admin:read" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown scope: {}", r.text);
    // JSON with an array of redirect URIs, as masto.js sends.
    let r = c
        .post(
            "/api/v1/apps",
            None,
            Body::Json(json!({ "client_name": "json", "redirect_uris": [OOB], "scopes": "read" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (narrow_id, narrow_secret) = (s(&r.body["client_id"]).to_owned(), s(&r.body["client_secret"]).to_owned());

    let (id, secret) = new_app(c, "Tester").await;
    let (other_id, other_secret) = new_app(c, "Other").await;

    // A body that does not parse gets the OAuth error shape; a sign-in form without one
    // is a 400 in Starling's, not a bare 415.
    let r = c.post("/oauth/token", None, Body::Json(json!({ "grant_type": 5 }))).await;
    assert_eq!((r.status, &r.body["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_request")), "{}", r.text);
    assert!(r.body["error_description"].is_string(), "{}", r.text);
    let r = c.post("/oauth/revoke", None, Body::Json(json!(["token"]))).await;
    assert_eq!((r.status, &r.body["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_request")), "{}", r.text);
    let r = c.post("/oauth/authorize", None, Body::None).await;
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_parameter")),
        "{}",
        r.text
    );

    // The app's own token.
    let r = token(c, &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", "wrong")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_client");
    let r = token(
        c,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret), ("scope", "admin")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_scope");
    let r = token(
        c,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "read write");
    assert!(r.body["created_at"].is_u64());
    let app_token = s(&r.body["access_token"]).to_owned();
    let r = c.get("/api/v1/apps/verify_credentials", Some(&app_token)).await;
    assert_eq!((r.status, &r.body["name"]), (StatusCode::OK, &json!("Tester")), "{}", r.text);
    assert!(r.body.get("client_secret").is_none(), "the secret is shown once only");
    let r = c.home(&app_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "an app token reads no home timeline: {}", r.text);

    // Sign-up with the app token.
    let sign_up = |username: &'static str, email: &'static str, password: &'static str| {
        let t = app_token.clone();
        async move {
            let form = [("username", username), ("email", email), ("password", password), ("agreement", "true")];
            c.post("/api/v1/accounts", Some(&t), Body::Form(&form)).await
        }
    };
    let r = c.post("/api/v1/accounts", None, Body::Form(&[("username", "nobody")])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    for (username, email, password, why) in [
        ("bad name!", "a@b.example", "long enough", "username"),
        ("alice", "not-an-email", "long enough", "email"),
        ("alice", "alice@example.com", "short", "password"),
    ] {
        let r = sign_up(username, email, password).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {}", r.text);
    }
    let r = c
        .post(
            "/api/v1/accounts",
            Some(&app_token),
            Body::Form(&[("username", "alice"), ("email", "alice@example.com"), ("password", "long enough")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "no agreement: {}", r.text);
    let r = sign_up("alice", "Alice@Example.com", "correct horse").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let signup_token = s(&r.body["access_token"]).to_owned();
    assert_eq!(r.body["scope"], "read write");
    let r = sign_up("ALICE", "other@example.com", "correct horse").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "username taken, ignoring case: {}", r.text);
    let r = sign_up("alice2", "alice@EXAMPLE.com", "correct horse").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "email taken, ignoring case: {}", r.text);
    let r = c.get("/api/v1/accounts/lookup?acct=alice2", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a refused sign-up leaves no account: {}", r.text);

    // The account as its owner sees it.
    let r = c.get("/api/v1/accounts/verify_credentials", Some(&signup_token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let alice_id = s(&r.body["id"]).to_owned();
    assert!(alice_id.parse::<u64>().is_ok());
    assert_eq!((&r.body["username"], &r.body["acct"]), (&json!("alice"), &json!("alice")));
    assert!(s(&r.body["created_at"]).ends_with("T00:00:00.000Z"), "{}", r.body["created_at"]);
    assert!(r.body["source"].is_object() && r.body["followers_count"] == 0, "{}", r.body);
    let r = c.get("/api/v1/accounts/verify_credentials", Some(&app_token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "an app token is no account: {}", r.text);

    // The password grant (Mastodon.py's log_in), by email or by username.
    let login = |client: &'static str, user: &'static str, password: &'static str, scope: &'static str| {
        let (id, secret) = match client {
            "main" => (id.clone(), secret.clone()),
            _ => (narrow_id.clone(), narrow_secret.clone()),
        };
        async move {
            let form = [
                ("grant_type", "password"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("username", user),
                ("password", password),
                ("scope", scope),
            ];
            token(c, &form).await
        }
    };
    let r = login("main", "alice@example.com", "wrong password", "read").await;
    assert_eq!((r.status, &r.body["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_grant")), "{}", r.text);
    let r = login("main", "nobody@example.com", "correct horse", "read").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown account: {}", r.text);
    let r = login("narrow", "alice", "correct horse", "read write").await;
    assert_eq!(r.body["error"], "invalid_scope", "more than the app registered: {}", r.text);
    let r = login("main", "ALICE@example.com", "correct horse", "read write follow").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let password_token = s(&r.body["access_token"]).to_owned();
    let r = login("main", "alice", "correct horse", "write:statuses").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let write_only = s(&r.body["access_token"]).to_owned();

    // Scopes, enforced where the token is used.
    let r = c.home(&password_token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = c.home(&write_only).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "write:statuses reads no timeline: {}", r.text);
    let r = c.get("/api/v1/accounts/verify_credentials", Some(&write_only)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = c.home("forged-token-that-was-never-issued").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // The authorization-code grant, redirected.
    let authorize = format!(
        "/oauth/authorize?response_type=code&client_id={id}&redirect_uri={}&scope=read+follow&state=xyz",
        urlencode(CALLBACK)
    );
    let r = c.get(&authorize, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("<form") && r.text.contains("Tester"), "{}", r.text);
    let bad = format!("/oauth/authorize?response_type=code&client_id={id}&redirect_uri=https://evil.example/");
    assert_eq!(c.get(&bad, None).await.status, StatusCode::FORBIDDEN, "an unregistered redirect URI");
    let stranger = format!("/oauth/authorize?response_type=code&client_id=nobody&redirect_uri={}", urlencode(CALLBACK));
    assert_eq!(c.get(&stranger, None).await.status, StatusCode::UNAUTHORIZED, "an unknown client_id");
    let consent = |redirect: &'static str, password: &'static str| {
        let id = id.clone();
        async move {
            let form = [
                ("response_type", "code"),
                ("client_id", id.as_str()),
                ("redirect_uri", redirect),
                ("scope", "read follow"),
                ("state", "xyz"),
                ("username", "alice@example.com"),
                ("password", password),
            ];
            c.post("/oauth/authorize", None, Body::Form(&form)).await
        }
    };
    let r = consent(CALLBACK, "wrong password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(r.text.contains("<form"), "the form again");
    let r = consent(CALLBACK, "correct horse").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.location.expect("Location");
    let query = location.strip_prefix(&format!("{CALLBACK}?")).unwrap_or_else(|| panic!("{location}"));
    let params: Vec<(String, String)> = url_params(query);
    let code = params.iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone()).expect("code");
    assert!(params.contains(&("state".into(), "xyz".into())), "{location}");
    let exchange = |code: String, redirect: &'static str, secret: String| {
        let id = id.clone();
        async move {
            let form = [
                ("grant_type", "authorization_code"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
            ];
            token(c, &form).await
        }
    };
    let r = exchange(code.clone(), OOB, secret.clone()).await;
    assert_eq!(r.body["error"], "invalid_grant", "another redirect URI: {}", r.text);
    let r = exchange(code.clone(), CALLBACK, secret.clone()).await;
    assert_eq!(r.body["error"], "invalid_grant", "the failed exchange used the code up: {}", r.text);
    let r = consent(CALLBACK, "correct horse").await;
    let params = url_params(r.location.as_deref().unwrap().split_once('?').unwrap().1);
    let code = params.iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone()).unwrap();
    let r = exchange(code.clone(), CALLBACK, "wrong".into()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = exchange(code.clone(), CALLBACK, secret.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["scope"], "read follow");
    let code_token = s(&r.body["access_token"]).to_owned();
    let r = exchange(code, CALLBACK, secret.clone()).await;
    assert_eq!(r.body["error"], "invalid_grant", "a code works once: {}", r.text);
    let r = c.home(&code_token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Out of band: the code is shown on the page.
    let r = consent(OOB, "correct horse").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let shown = r.text.split("<code>").nth(1).and_then(|t| t.split("</code>").next()).expect("the code on the page");
    let r = exchange(shown.to_owned(), OOB, secret.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Revocation: only by the app that holds the token; at once, in every process.
    let revoke = |client: (&str, &str), t: &str| {
        let form =
            [("client_id", client.0.to_owned()), ("client_secret", client.1.to_owned()), ("token", t.to_owned())];
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.post("/oauth/revoke", None, Body::Form(&form)).await
        }
    };
    let r = revoke((&other_id, &other_secret), &password_token).await;
    assert_eq!((r.status, &r.body["error"]), (StatusCode::FORBIDDEN, &json!("unauthorized_client")), "{}", r.text);
    assert_eq!(c.home(&password_token).await.status, StatusCode::OK, "another app's attempt changes nothing");
    let r = revoke((&id, &secret), &password_token).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({})), "{}", r.text);
    let r = c.home(&password_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "revoked, at once: {}", r.text);
    let r = c.get("/api/v1/accounts/verify_credentials", Some(&password_token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = revoke((&id, &secret), &password_token).await;
    assert_eq!(r.status, StatusCode::OK, "revoking twice is fine: {}", r.text);
    assert_eq!(c.home(&code_token).await.status, StatusCode::OK, "other tokens live on");

    // Guessing passwords is rate limited per account.
    let mut limited = false;
    for _ in 0..12 {
        let r = login("main", "alice", "guess", "read").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
    assert!(limited, "12 wrong passwords in a row were never slowed down");
    let _ = alice_id;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url_params(query: &str) -> Vec<(String, String)> {
    query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Runs a real client library's session script (`scripts/clients/`) against `base`, with
/// its status part if `statuses` (the base serves the post-service's routes too). `var`
/// names what scripts/test.sh installed (the interpreter or the library); `false` if it is
/// not set (the session is skipped, and says so), which a build for the test servers
/// (`STARLING_TEST_SERVERS`, as scripts/test.sh builds) does not allow.
fn client_session(var: &str, base: &str, statuses: bool) -> bool {
    let Ok(installed) = std::env::var(var) else {
        assert!(!cfg!(test_servers), "{var} is not set: scripts/test.sh installs the client and sets it");
        eprintln!("skipped the {var} session: {var} is not set (scripts/test.sh sets it)");
        return false;
    };
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/clients");
    let mut cmd = match var {
        "MASTODON_PY" => {
            let mut c = std::process::Command::new(&installed);
            c.arg(format!("{scripts}/mastodon_py_session.py"));
            c
        }
        _ => {
            let mut c = std::process::Command::new("node");
            c.arg(format!("{scripts}/masto_js_session.mjs")).env("MASTO_JS", &installed);
            c
        }
    };
    cmd.arg(base);
    if statuses {
        cmd.arg("--statuses");
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("running the {var} session: {e}"));
    assert!(
        out.status.success(),
        "the {var} session failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[tokio::test]
async fn oauth_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    exercise(&Client::new(&server.base, &server.base)).await;
    client_session("MASTODON_PY", &server.base, true);
    client_session("MASTO_JS", &server.base, true);
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn oauth_across_processes() {
    let env = backends_env("oauth");
    let stack = Stack::start_proxied(&env, 1);
    exercise(&Client::new(&stack.graph.base, &stack.timeline.base)).await;
    // Whole sessions, statuses and streams included, through one base URL: nginx routing
    // as the Ingress does, two timeline-service replicas behind it (a stream and the
    // reads around it may land on different ones).
    let proxy = &stack.proxy.as_ref().expect("a proxied stack").base;
    client_session("MASTODON_PY", proxy, true);
    client_session("MASTO_JS", proxy, true);
}
