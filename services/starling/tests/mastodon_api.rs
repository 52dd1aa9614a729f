//! Mastodon's account and status endpoints over HTTP against the real binary, with OAuth
//! tokens: an account by id and by `acct`, follow, unfollow, block and unblock (answering
//! the Relationship, idempotent), `relationships` in both query forms, followers and
//! following with `Link` paging; statuses posted (form and JSON, replies, idempotency
//! keys), read and deleted as Status entities; and the bad input of each.

mod common;

use common::Server;
use common::mastodon::Body;
use common::mastodon::{Client, account, s};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

async fn post(c: &Client, path: &str, token: &str) -> common::mastodon::Reply {
    c.post(path, Some(token), common::mastodon::Body::None).await
}

#[tokio::test]
async fn mastodon_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = Client::new(&server.base, &server.base);
    let (bob, bob_token) = account(&c, "bob").await;
    let (carol, carol_token) = account(&c, "carol").await;
    let (dave, dave_token) = account(&c, "dave").await;

    // An account, by id and by acct.
    let r = c.get(&format!("/api/v1/accounts/{carol}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!((&r.body["id"], &r.body["username"]), (&Value::from(carol.clone()), &Value::from("carol")));
    assert!(s(&r.body["avatar"]).starts_with("http") && r.body["fields"].is_array(), "{}", r.body);
    for acct in ["carol", "@carol", "CAROL"] {
        let r = c.get(&format!("/api/v1/accounts/lookup?acct={acct}"), None).await;
        assert_eq!((r.status, &r.body["id"]), (StatusCode::OK, &Value::from(carol.clone())), "{acct}: {}", r.text);
    }
    let host = server.base.trim_start_matches("http://");
    let r = c.get(&format!("/api/v1/accounts/lookup?acct=carol@{host}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "this server's domain: {}", r.text);
    for (path, why) in [
        ("/api/v1/accounts/lookup?acct=carol@elsewhere.example", "another server"),
        ("/api/v1/accounts/lookup?acct=nobody", "no such account"),
        ("/api/v1/accounts/123456789", "no such id"),
        ("/api/v1/accounts/not-an-id", "not an id"),
    ] {
        assert_eq!(c.get(path, None).await.status, StatusCode::NOT_FOUND, "{why}");
    }
    assert_eq!(c.get("/api/v1/accounts/lookup", None).await.status, StatusCode::BAD_REQUEST, "acct is required");

    // Follow: the Relationship after it; twice is fine.
    for _ in 0..2 {
        let r = post(&c, &format!("/api/v1/accounts/{carol}/follow"), &bob_token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!((&r.body["id"], &r.body["following"]), (&Value::from(carol.clone()), &Value::Bool(true)));
        assert_eq!(r.body["followed_by"], false);
    }
    let r = post(&c, &format!("/api/v1/accounts/{carol}/follow"), &dave_token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = post(&c, &format!("/api/v1/accounts/{bob}/follow"), &bob_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "following oneself: {}", r.text);
    let r = post(&c, "/api/v1/accounts/123456789/follow", &bob_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = post(&c, &format!("/api/v1/accounts/{carol}/follow"), "not-a-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // Relationships, both query forms, in the order asked; unknown ids left out.
    let path = format!("/api/v1/accounts/relationships?id[]={carol}&id[]=123456789&id={dave}");
    let r = c.get(&path, Some(&bob_token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rels = r.body.as_array().expect("an array");
    assert_eq!(rels.len(), 2, "{}", r.body);
    assert_eq!((&rels[0]["id"], &rels[0]["following"]), (&Value::from(carol.clone()), &Value::Bool(true)));
    assert_eq!((&rels[1]["id"], &rels[1]["following"]), (&Value::from(dave.clone()), &Value::Bool(false)));
    let r = c.get(&format!("/api/v1/accounts/relationships?id[]={bob}"), Some(&carol_token)).await;
    assert_eq!(r.body[0]["followed_by"], true, "{}", r.text);
    let r = c.get("/api/v1/accounts/relationships?id[]=x", Some(&bob_token)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(c.get("/api/v1/accounts/relationships?id=1", None).await.status, StatusCode::UNAUTHORIZED);

    // Followers, paged by the Link header.
    let r = c.get(&format!("/api/v1/accounts/{carol}/followers?limit=1"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let first = r.body.as_array().unwrap().clone();
    assert_eq!(first.len(), 1);
    let res = reqwest::Client::new()
        .request(Method::GET, format!("{}/api/v1/accounts/{carol}/followers?limit=1", server.base))
        .send()
        .await
        .unwrap();
    let link = res.headers().get("link").expect("a Link header on a full page").to_str().unwrap().to_owned();
    let next = link.split(['<', '>']).nth(1).expect("a URL in the Link header");
    assert!(next.starts_with("http://") && link.ends_with("rel=\"next\""), "absolute, quoted rel: {link}");
    let r = c.send(Method::GET, next.to_owned(), None, common::mastodon::Body::None).await;
    let second = r.body.as_array().unwrap().clone();
    assert_eq!(second.len(), 1, "{}", r.body);
    let mut ids: Vec<&str> = first.iter().chain(&second).map(|a| s(&a["id"])).collect();
    ids.sort_unstable();
    let mut want = vec![bob.as_str(), dave.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let r = c.get(&format!("/api/v1/accounts/{bob}/following"), None).await;
    assert_eq!(r.body.as_array().map(|a| a.len()), Some(1), "{}", r.body);
    assert_eq!(r.body[0]["followers_count"], 2, "counts come with each account: {}", r.body);
    let r = c.get(&format!("/api/v1/accounts/{carol}/followers?limit=0"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Block: the follow goes, a new one is refused; unblock.
    let r = post(&c, &format!("/api/v1/accounts/{bob}/block"), &carol_token).await;
    assert_eq!((r.status, &r.body["blocking"]), (StatusCode::OK, &Value::Bool(true)), "{}", r.text);
    let r = c.get(&format!("/api/v1/accounts/relationships?id[]={carol}"), Some(&bob_token)).await;
    assert_eq!((&r.body[0]["following"], &r.body[0]["blocked_by"]), (&Value::Bool(false), &Value::Bool(true)));
    let r = post(&c, &format!("/api/v1/accounts/{carol}/follow"), &bob_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = post(&c, &format!("/api/v1/accounts/{bob}/unblock"), &carol_token).await;
    assert_eq!((r.status, &r.body["blocking"]), (StatusCode::OK, &Value::Bool(false)), "{}", r.text);
    let r = post(&c, &format!("/api/v1/accounts/{carol}/unfollow"), &dave_token).await;
    assert_eq!((r.status, &r.body["following"]), (StatusCode::OK, &Value::Bool(false)), "{}", r.text);
    let r = c.get(&format!("/api/v1/accounts/{carol}"), None).await;
    assert_eq!(r.body["followers_count"], 0, "{}", r.body);
}

#[tokio::test]
async fn mastodon_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = Client::new(&server.base, &server.base);
    let (erin, erin_token) = account(&c, "erin").await;
    let (_, frank_token) = account(&c, "frank").await;

    // Form-encoded, as Mastodon.py posts; the text becomes escaped HTML.
    let r =
        c.post("/api/v1/statuses", Some(&erin_token), Body::Form(&[("status", "hi <there> & all\nsecond line")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let first = s(&r.body["id"]).to_owned();
    assert_eq!(r.body["content"], "<p>hi &lt;there&gt; &amp; all<br>second line</p>");
    assert_eq!((&r.body["account"]["id"], &r.body["visibility"]), (&Value::from(erin.clone()), &json!("public")));
    assert!(s(&r.body["created_at"]).ends_with('Z') && r.body["in_reply_to_id"].is_null(), "{}", r.body);
    assert!(r.body["media_attachments"] == json!([]) && r.body["reblog"].is_null());

    // JSON, as masto.js posts: a reply, with an idempotency key sent twice.
    let reply = json!({ "status": "a reply", "in_reply_to_id": first });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let res = reqwest::Client::new()
            .post(format!("{}/api/v1/statuses", server.base))
            .bearer_auth(&frank_token)
            .header("Idempotency-Key", "reply-1")
            .json(&reply)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (&body["in_reply_to_id"], &body["in_reply_to_account_id"]),
            (&Value::from(first.clone()), &Value::from(erin.clone()))
        );
        ids.push(body["id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the key replayed the first post");

    let r = c.get(&format!("/api/v1/statuses/{first}"), None).await;
    assert_eq!((r.status, &r.body["id"]), (StatusCode::OK, &Value::from(first.clone())), "{}", r.text);

    // An account's statuses, newest first, paged by the Link header.
    let r = c.post("/api/v1/statuses", Some(&erin_token), Body::Form(&[("status", "second")])).await;
    let second = s(&r.body["id"]).to_owned();
    let r = c
        .post("/api/v1/statuses", Some(&erin_token), Body::Form(&[("status", "a reply"), ("in_reply_to_id", &first)]))
        .await;
    let third = s(&r.body["id"]).to_owned();
    let res = reqwest::get(format!("{}/api/v1/accounts/{erin}/statuses?limit=2", server.base)).await.unwrap();
    let link = res.headers().get("link").map(|l| l.to_str().unwrap().to_owned()).expect("a Link header");
    let page: Value = res.json().await.unwrap();
    let ids: Vec<&str> = page.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![third.as_str(), second.as_str()], "newest first");
    let next = link.split(['<', '>']).nth(1).unwrap();
    assert!(next.starts_with("http://") && link.contains("rel=\"next\""), "{link}");
    let r = c.send(Method::GET, next.to_owned(), None, Body::None).await;
    assert_eq!(r.body.as_array().map(|a| a.len()), Some(1), "the first status on the next page: {}", r.body);
    assert_eq!(r.body[0]["id"], Value::from(first.clone()));
    let r = c.get(&format!("/api/v1/accounts/{erin}/statuses?exclude_replies=true"), None).await;
    assert_eq!(r.body.as_array().map(|a| a.len()), Some(2), "the reply left out: {}", r.body);
    let r = c.get(&format!("/api/v1/accounts/{erin}/statuses?only_media=true"), None).await;
    assert_eq!(r.body, json!([]), "no media here");
    assert_eq!(c.get("/api/v1/accounts/123456789/statuses", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&format!("/api/v1/accounts/{erin}/statuses?limit=0"), None).await.status, StatusCode::BAD_REQUEST);

    // Bad input changes nothing.
    for (body, why) in [
        (Body::Form(&[("status", "")]), "empty"),
        (Body::Form(&[("status", "x"), ("visibility", "private")]), "not public"),
        (Body::Form(&[("status", "x"), ("in_reply_to_id", "abc")]), "not an id"),
        (Body::Json(json!({ "status": "x".repeat(501) })), "too long"),
        (Body::Json(json!({ "status": "x", "media_ids": ["1"] })), "media"),
    ] {
        let r = c.post("/api/v1/statuses", Some(&erin_token), body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {}", r.text);
    }
    let r =
        c.post("/api/v1/statuses", Some(&erin_token), Body::Form(&[("status", "x"), ("in_reply_to_id", "123456789")]));
    assert_eq!(r.await.status, StatusCode::NOT_FOUND, "a reply to nothing");
    let r = c.post("/api/v1/statuses", None, Body::Form(&[("status", "x")])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = c.post("/api/v1/statuses", Some(&erin_token), Body::Json(json!(["x"]))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = c.get(&format!("/api/v1/accounts/{erin}/statuses"), None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(3), "no status from the bad input: {}", r.body);

    // Delete: only one's own; the answer carries the source text.
    let del = |token: String, id: String| {
        let base = server.base.clone();
        async move {
            reqwest::Client::new()
                .delete(format!("{base}/api/v1/statuses/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(del(frank_token.clone(), first.clone()).await.status(), StatusCode::FORBIDDEN);
    let res = del(erin_token.clone(), first.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["text"], "hi <there> & all\nsecond line");
    assert_eq!(c.get(&format!("/api/v1/statuses/{first}"), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(del(erin_token, first).await.status(), StatusCode::NOT_FOUND);
}

/// A token for `name` (signed up by [`account`]) with only `scope`, by the password grant.
async fn scoped(c: &Client, name: &str, scope: &str) -> String {
    let (id, secret) = common::mastodon::new_app(c, &format!("{name}'s {scope} app")).await;
    let email = format!("{name}@example.com");
    let form = [
        ("grant_type", "password"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("username", email.as_str()),
        ("password", "a long password"),
        ("scope", scope),
    ];
    let r = common::mastodon::token(c, &form).await;
    assert_eq!(r.status, StatusCode::OK, "{scope} token: {}", r.text);
    s(&r.body["access_token"]).to_owned()
}

/// What a status and the caller's view of it look like now: counts and flags.
async fn state(c: &Client, status: &str, token: &str) -> Value {
    let r = c.get(&format!("/api/v1/statuses/{status}"), Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    json!([r.body["reblogs_count"], r.body["favourites_count"], r.body["reblogged"], r.body["favourited"]])
}

#[tokio::test]
async fn reblogs_favourites_mutes_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = Client::new(&server.base, &server.base);
    let (bob, bob_token) = account(&c, "bob").await;
    let (_, fay_token) = account(&c, "fay").await;
    let r = c.post("/api/v1/statuses", Some(&bob_token), Body::Form(&[("status", "bob's")])).await;
    let status = s(&r.body["id"]).to_owned();

    // Reblog: the answer is the reblog wrapping the original; twice is the same reblog.
    let r = post(&c, &format!("/api/v1/statuses/{status}/reblog"), &fay_token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reblog = s(&r.body["id"]).to_owned();
    assert_eq!(
        (s(&r.body["reblog"]["id"]), &r.body["reblogged"], s(&r.body["content"])),
        (status.as_str(), &json!(true), "")
    );
    assert_eq!(r.body["reblog"]["reblogs_count"], 1, "{}", r.body);
    let r = post(&c, &format!("/api/v1/statuses/{reblog}/reblog"), &fay_token).await;
    assert_eq!(s(&r.body["id"]), reblog, "reblogging the reblog is reblogging the original again: {}", r.body);
    let r = post(&c, &format!("/api/v1/statuses/{reblog}/favourite"), &fay_token).await;
    assert_eq!((s(&r.body["id"]), &r.body["favourited"]), (status.as_str(), &json!(true)), "{}", r.body);
    let seen = state(&c, &status, &fay_token).await;
    assert_eq!(seen, json!([1, 1, true, true]));
    assert_eq!(state(&c, &status, &bob_token).await, json!([1, 1, false, false]), "flags are the viewer's");
    let r = c.get(&format!("/api/v1/statuses/{status}/reblogged_by"), None).await;
    assert_eq!(
        r.body.as_array().map(|a| a.iter().map(|a| s(&a["username"]).to_owned()).collect::<Vec<_>>()),
        Some(vec!["fay".to_owned()])
    );
    let r = c.get(&format!("/api/v1/statuses/{status}/favourited_by"), None).await;
    assert_eq!(r.body[0]["username"], "fay", "{}", r.body);

    // Tokens without the scope are refused, and change nothing.
    let read_only = scoped(&c, "fay", "read").await;
    let favourites_only = scoped(&c, "fay", "write:favourites").await;
    for (token, path, scope) in [
        (&read_only, format!("/api/v1/statuses/{status}/unreblog"), "write:statuses"),
        (&read_only, format!("/api/v1/statuses/{status}/unfavourite"), "write:favourites"),
        (&favourites_only, format!("/api/v1/statuses/{status}/unreblog"), "write:statuses"),
        (&read_only, format!("/api/v1/accounts/{bob}/mute"), "write:mutes"),
    ] {
        let r = post(&c, &path, token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} without {scope}: {}", r.text);
        assert!(s(&r.body["error"]["message"]).contains(scope), "{}", r.body);
    }
    let r = c.get("/api/v1/mutes", Some(&favourites_only)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "listing mutes needs read:mutes: {}", r.text);
    assert_eq!(state(&c, &status, &fay_token).await, json!([1, 1, true, true]), "refusals changed nothing");
    let r = post(&c, &format!("/api/v1/statuses/{status}/unfavourite"), &favourites_only).await;
    assert_eq!((r.status, &r.body["favourited"]), (StatusCode::OK, &json!(false)), "{}", r.text);

    // Someone else's reblog is theirs: bob can neither delete it nor unreblog it for fay.
    let r =
        c.send(Method::DELETE, format!("{}/api/v1/statuses/{reblog}", server.base), Some(&bob_token), Body::None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = post(&c, &format!("/api/v1/statuses/{status}/unreblog"), &bob_token).await;
    assert_eq!((r.status, &r.body["reblogs_count"]), (StatusCode::OK, &json!(1)), "{}", r.text);

    // Unknown or deleted statuses and accounts: 404, for every action.
    let r = c.post("/api/v1/statuses", Some(&bob_token), Body::Form(&[("status", "gone soon")])).await;
    let gone = s(&r.body["id"]).to_owned();
    let r =
        c.send(Method::DELETE, format!("{}/api/v1/statuses/{gone}", server.base), Some(&bob_token), Body::None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for id in [gone.as_str(), "123456789", "not-an-id", "-1"] {
        for action in ["reblog", "unreblog", "favourite", "unfavourite"] {
            let r = post(&c, &format!("/api/v1/statuses/{id}/{action}"), &fay_token).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{action} of {id}: {}", r.text);
        }
        for list in ["reblogged_by", "favourited_by", "context"] {
            let r = c.get(&format!("/api/v1/statuses/{id}/{list}"), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{list} of {id}: {}", r.text);
        }
        let r = post(&c, &format!("/api/v1/accounts/{id}/mute"), &fay_token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "mute {id}: {}", r.text);
    }
    let r = post(&c, &format!("/api/v1/statuses/{status}/reblog"), "forged-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // Mutes: the Relationship says so, the follow stays, twice is fine, oneself is refused.
    post(&c, &format!("/api/v1/accounts/{bob}/follow"), &fay_token).await;
    for _ in 0..2 {
        let r = post(&c, &format!("/api/v1/accounts/{bob}/mute"), &fay_token).await;
        assert_eq!(
            (r.status, &r.body["muting"], &r.body["following"]),
            (StatusCode::OK, &json!(true), &json!(true)),
            "{}",
            r.text
        );
    }
    let r = c.get("/api/v1/mutes", Some(&read_only)).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = c.get(&format!("/api/v1/accounts/verify_credentials"), Some(&fay_token)).await;
    let fay = s(&r.body["id"]).to_owned();
    let r = post(&c, &format!("/api/v1/accounts/{fay}/mute"), &fay_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "muting oneself: {}", r.text);
    let r = post(&c, &format!("/api/v1/accounts/{bob}/unmute"), &fay_token).await;
    assert_eq!(r.body["muting"], false, "{}", r.body);

    // Deleting the original takes its reblog along.
    let r =
        c.send(Method::DELETE, format!("{}/api/v1/statuses/{status}", server.base), Some(&bob_token), Body::None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(c.get(&format!("/api/v1/statuses/{reblog}"), None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn notifications_of_follows_replies_reblogs_and_favourites() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = Client::new(&server.base, &server.base);
    let (gil, gil_token) = account(&c, "gil").await;
    let (hal, hal_token) = account(&c, "hal").await;
    let r = c.post("/api/v1/statuses", Some(&gil_token), Body::Form(&[("status", "gil's")])).await;
    let status = s(&r.body["id"]).to_owned();

    post(&c, &format!("/api/v1/accounts/{gil}/follow"), &hal_token).await;
    let form = [("status", "hal's reply"), ("in_reply_to_id", status.as_str())];
    let reply = c.post("/api/v1/statuses", Some(&hal_token), Body::Form(&form)).await;
    post(&c, &format!("/api/v1/statuses/{status}/reblog"), &hal_token).await;
    post(&c, &format!("/api/v1/statuses/{status}/favourite"), &hal_token).await;
    // One's own actions on one's own status notify nobody.
    post(&c, &format!("/api/v1/statuses/{status}/favourite"), &gil_token).await;

    let kinds = |r: &common::mastodon::Reply| -> Vec<String> {
        r.body.as_array().expect("an array").iter().map(|n| s(&n["type"]).to_owned()).collect()
    };
    let r = c.get("/api/v1/notifications", Some(&gil_token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(kinds(&r), ["favourite", "reblog", "mention", "follow"], "newest first: {}", r.body);
    let all = r.body.as_array().unwrap().clone();
    assert!(all.iter().all(|n| n["account"]["username"] == "hal" && !s(&n["created_at"]).is_empty()));
    assert_eq!(all[2]["status"]["id"], reply.body["id"], "a mention carries the reply");
    assert_eq!(all[0]["status"]["id"], json!(status), "a favourite carries the status");
    assert!(all[3]["status"].is_null(), "a follow carries none");

    // Paging by the Link header, filters, one by id.
    let r = c.get("/api/v1/notifications?limit=2", Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["favourite", "reblog"]);
    let r = c.get(&format!("/api/v1/notifications?max_id={}", s(&all[1]["id"])), Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["mention", "follow"]);
    let r = c.get("/api/v1/notifications?types[]=follow&types[]=mention", Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["mention", "follow"]);
    let r = c.get("/api/v1/notifications?exclude_types[]=favourite&limit=1", Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["reblog"], "a filtered page is still full");
    let r = c.get("/api/v1/notifications?types[]=poll", Some(&gil_token)).await;
    assert_eq!(kinds(&r), Vec::<String>::new(), "a type Starling never makes selects nothing");
    let r = c.get("/api/v1/notifications?types[]=bogus", Some(&gil_token)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = c.get(&format!("/api/v1/notifications/{}", s(&all[3]["id"])), Some(&gil_token)).await;
    assert_eq!((r.status, &r.body["type"]), (StatusCode::OK, &json!("follow")), "{}", r.text);
    let r = c.get(&format!("/api/v1/notifications/{}", s(&all[3]["id"])), Some(&hal_token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another's notification: {}", r.text);

    // Undone, gone; the scope is required.
    post(&c, &format!("/api/v1/statuses/{status}/unfavourite"), &hal_token).await;
    post(&c, &format!("/api/v1/statuses/{status}/unreblog"), &hal_token).await;
    let r = c.get("/api/v1/notifications", Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["mention", "follow"], "{}", r.body);
    let write_only = scoped(&c, "gil", "write").await;
    let r = c.get("/api/v1/notifications", Some(&write_only)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Each stream needs its own scope (refused before anything streams).
    let statuses_only = scoped(&c, "gil", "read:statuses").await;
    let notifications_only = scoped(&c, "gil", "read:notifications").await;
    for (token, path) in [
        (&statuses_only, "/api/v1/streaming/user/notification"),
        (&statuses_only, "/api/v1/streaming?stream=user:notification"),
        (&notifications_only, "/api/v1/streaming/user"),
        (&write_only, "/api/v1/streaming/user/notification"),
    ] {
        let r = c.get(path, Some(token)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
    }
    assert_eq!(c.get("/api/v1/notifications", None).await.status, StatusCode::UNAUTHORIZED);

    // Dismissed one at a time, then all; only by their recipient, with the write scope.
    post(&c, &format!("/api/v1/accounts/{hal}/follow"), &gil_token).await;
    let r = c.get("/api/v1/notifications", Some(&gil_token)).await;
    let ids: Vec<String> = r.body.as_array().unwrap().iter().map(|n| s(&n["id"]).to_owned()).collect();
    let (mention, follow) = (&ids[0], &ids[1]);
    let dismiss = |id: &str| format!("/api/v1/notifications/{id}/dismiss");
    let read_only = scoped(&c, "gil", "read").await;
    for (path, token, status) in [
        (dismiss(follow), Some(&hal_token), StatusCode::NOT_FOUND),
        (dismiss("1"), Some(&gil_token), StatusCode::NOT_FOUND),
        (dismiss("not-an-id"), Some(&gil_token), StatusCode::NOT_FOUND),
        (dismiss(follow), Some(&read_only), StatusCode::FORBIDDEN),
        (dismiss(follow), None, StatusCode::UNAUTHORIZED),
        ("/api/v1/notifications/clear".to_owned(), Some(&statuses_only), StatusCode::FORBIDDEN),
        ("/api/v1/notifications/clear".to_owned(), None, StatusCode::UNAUTHORIZED),
    ] {
        let r = c.post(&path, token.map(String::as_str), Body::None).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
    }
    let r = c.get("/api/v1/notifications", Some(&gil_token)).await;
    assert_eq!(kinds(&r), ["mention", "follow"], "refused dismissals change nothing");
    // The follow's is kept by the graph's store, the mention's by the posts'.
    for (id, left) in [(follow, vec!["mention"]), (mention, vec![])] {
        let r = post(&c, &dismiss(id), &gil_token).await;
        assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({})), "{}", r.text);
        assert_eq!(kinds(&c.get("/api/v1/notifications", Some(&gil_token)).await), left);
        assert_eq!(post(&c, &dismiss(id), &gil_token).await.status, StatusCode::NOT_FOUND, "dismissed twice");
    }
    // The user stream carries notifications only for a token that may read them.
    let open = |token: String| {
        let url = format!("{}/api/v1/streaming/user", server.base);
        async move {
            let mut res = reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("a stream");
            assert_eq!(res.status(), StatusCode::OK);
            assert!(stream_says(&mut res, ":)", Duration::from_secs(2)).await.contains(":)"), "the stream opened");
            res
        }
    };
    let (mut full, mut narrow) = (open(gil_token.clone()).await, open(statuses_only.clone()).await);
    post(&c, &format!("/api/v1/statuses/{status}/favourite"), &hal_token).await;
    let said = stream_says(&mut full, "event: notification", Duration::from_secs(2)).await;
    assert!(said.contains("\"type\":\"favourite\""), "a read token's stream shows the notification: {said}");
    let said = stream_says(&mut narrow, "event: notification", Duration::from_millis(500)).await;
    assert!(!said.contains("event: notification"), "a read:statuses token's stream showed a notification: {said}");
    post(&c, &format!("/api/v1/accounts/{gil}/unfollow"), &hal_token).await;
    let r = post(&c, "/api/v1/notifications/clear", &gil_token).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({})), "{}", r.text);
    assert_eq!(kinds(&c.get("/api/v1/notifications", Some(&gil_token)).await), Vec::<String>::new());
    let r = c.get("/api/v1/notifications", Some(&hal_token)).await;
    assert_eq!(kinds(&r), ["follow"], "another's notifications stay");
}

/// Reads the event stream `res` for up to `within`, or until it has said `wanted`: what it said.
async fn stream_says(res: &mut reqwest::Response, wanted: &str, within: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !seen.contains(wanted) {
        match tokio::time::timeout_at(deadline, res.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    seen
}
