//! The streaming API end to end: a stream opened on the user endpoint receives a
//! followee's post as the fan-out applies it, whether the author is ordinary (pushed) or
//! a celebrity (merged at read, never pushed), and its delete; standalone and with the
//! services in separate processes (the announcement crossing Redis pub/sub from the
//! fan-out worker's process to the timeline-service's). Notifications reach their
//! recipient's streams as the post- and graph-services store them, in the shape
//! `GET /api/v1/notifications/{id}` answers.

mod common;

use std::time::{Duration, Instant};

use common::stack::{Stack, backends_env};
use common::{Api, Server};
use reqwest::Method;
use serde_json::json;
use starling_metrics::names;

/// Authors with two followers are celebrities here: their posts are never pushed.
const CELEBRITY_AT_TWO: &[(&str, &str)] =
    &[("STARLING__CELEBRITY__THRESHOLD", "2"), ("STARLING__CELEBRITY__DEMOTE_BELOW", "1")];

/// Reads the stream until what it said holds every one of `wanted`, for at most 2 s.
async fn receives(body: &mut reqwest::Response, seen: &mut String, wanted: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !wanted.iter().all(|w| seen.contains(w.as_str())) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(other) => panic!("the stream ended: {other:?}; got so far:\n{seen}"),
            Err(_) => panic!("not within 2 s: {wanted:?}; the stream said:\n{seen}"),
        }
    }
}

/// `reader` follows an ordinary author and a celebrity and opens its stream; both post,
/// one deletes: the stream shows all three, and nothing of an author it does not follow.
async fn a_stream_shows_pushed_and_merged_posts(api: &Api, stream_base: &str, tag: &str) {
    let (reader, reader_token) = api.register(&format!("reader{tag}")).await;
    let (plain, plain_token) = api.register(&format!("plain{tag}")).await;
    let (star, star_token) = api.register(&format!("star{tag}")).await;
    let (_, stranger_token) = api.register(&format!("stranger{tag}")).await;
    let _ = reader;
    for (who, token) in [(plain, &reader_token), (star, &reader_token), (star, &stranger_token)] {
        let r = api.call(Method::POST, &format!("/api/v1/accounts/{who}/follow"), Some(token), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    api.wait_quiet().await;
    let merged_before = api.metric(names::FANOUT_POSTS_MERGED_AT_READ).await;

    let res = reqwest::Client::new()
        .get(format!("{stream_base}/api/v1/streaming/user"))
        .bearer_auth(&reader_token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = res;
    let mut seen = String::new();
    receives(&mut body, &mut seen, &[":)".to_owned()]).await;

    let post = |token: String, text: &'static str| {
        let api = api.clone();
        async move {
            let r = api.call(Method::POST, "/api/v1/statuses", Some(&token), Some(json!({ "status": text }))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["id"].as_str().expect("an id").to_owned()
        }
    };
    let far = post(stranger_token, "not followed").await;
    let celebrated = post(star_token.clone(), "by a celebrity").await;
    let plain_post = post(plain_token, "by an author").await;
    receives(&mut body, &mut seen, &[format!("\"id\":\"{celebrated}\""), format!("\"id\":\"{plain_post}\"")]).await;
    let r = api.call(Method::DELETE, &format!("/api/v1/statuses/{celebrated}"), Some(&star_token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    receives(&mut body, &mut seen, &[format!("event: delete\ndata: {celebrated}\n")]).await;
    assert!(!seen.contains(&far), "a post of an author not followed was streamed:\n{seen}");
    assert!(seen.contains("event: update\ndata: {"), "{seen}");
    let merged = api.metric(names::FANOUT_POSTS_MERGED_AT_READ).await - merged_before;
    assert_eq!(merged, 1, "the star's post was merged at read, the others pushed");
}

/// Opens `path` for `token` and reads until the stream says it is open.
async fn open(stream_base: &str, path: &str, token: &str) -> (reqwest::Response, String) {
    let res = reqwest::Client::new()
        .get(format!("{stream_base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(res.status(), 200, "{path}");
    let mut body = res;
    let mut seen = String::new();
    receives(&mut body, &mut seen, &[":)".to_owned()]).await;
    (body, seen)
}

/// The data of each `event` the stream said, as JSON.
fn events(seen: &str, event: &str) -> Vec<serde_json::Value> {
    let head = format!("event: {event}\ndata: ");
    seen.split("\n\n")
        .filter_map(|block| block.strip_prefix(head.as_str()))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{event} data is not JSON ({e}): {data}")))
        .collect()
}

/// A fan follows `star`, then favourites, reblogs and replies to its status: each
/// notification reaches both of `star`'s streams (the user stream and the notifications
/// one) as `GET /api/v1/notifications/{id}` shows it; the notifications stream shows
/// nothing else, and the fan's streams none of them.
async fn notifications_reach_their_recipients_streams(api: &Api, stream_base: &str, tag: &str) {
    let (star, star_token) = api.register(&format!("noted{tag}")).await;
    let (fan, fan_token) = api.register(&format!("fan{tag}")).await;
    let r = api.call(Method::POST, "/api/v1/statuses", Some(&star_token), Some(json!({ "status": "notice me" }))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.body["id"].as_str().expect("an id").to_owned();
    api.wait_quiet().await;

    let (mut user, mut user_seen) = open(stream_base, "/api/v1/streaming/user", &star_token).await;
    let (mut only, mut only_seen) = open(stream_base, "/api/v1/streaming/user/notification", &star_token).await;
    let (mut fans, mut fan_seen) = open(stream_base, "/api/v1/streaming/user/notification", &fan_token).await;

    let r = api.call(Method::POST, &format!("/api/v1/accounts/{star}/follow"), Some(&fan_token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for action in ["favourite", "reblog"] {
        let r = api.call(Method::POST, &format!("/api/v1/statuses/{status}/{action}"), Some(&fan_token), None).await;
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    let reply = json!({ "status": "noticed", "in_reply_to_id": status });
    let r = api.call(Method::POST, "/api/v1/statuses", Some(&fan_token), Some(reply)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reply = r.body["id"].as_str().expect("an id").to_owned();

    let wanted: Vec<String> =
        ["follow", "favourite", "reblog", "mention"].iter().map(|k| format!("\"type\":\"{k}\"")).collect();
    receives(&mut only, &mut only_seen, &wanted).await;
    receives(&mut user, &mut user_seen, &wanted).await;
    let streamed = events(&only_seen, "notification");
    assert_eq!(streamed.len(), 4, "one event per notification:\n{only_seen}");
    // Each stream renders when it hears, so counts may differ between them: not what they are about.
    let about = |events: &[serde_json::Value]| -> Vec<[serde_json::Value; 4]> {
        events
            .iter()
            .map(|n| [n["id"].clone(), n["type"].clone(), n["account"]["id"].clone(), n["status"]["id"].clone()])
            .collect()
    };
    assert_eq!(
        about(&streamed),
        about(&events(&user_seen, "notification")),
        "both streams show the same notifications"
    );
    assert!(!only_seen.contains("event: update"), "the notifications stream shows only notifications:\n{only_seen}");
    for n in &streamed {
        assert_eq!(n["account"]["id"], fan.to_string(), "{n}");
        let expected_status = match n["type"].as_str() {
            Some("follow") => serde_json::Value::Null,
            Some("mention") => json!(reply),
            _ => json!(status),
        };
        assert_eq!(n["status"]["id"].clone(), expected_status, "{n}");
        let listed = api
            .call(Method::GET, &format!("/api/v1/notifications/{}", n["id"].as_str().unwrap()), Some(&star_token), None)
            .await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        for field in ["id", "type", "created_at"] {
            assert_eq!(n[field], listed.body[field], "{field} of {n}");
        }
        assert_eq!(n["account"]["acct"], listed.body["account"]["acct"], "{n}");
        assert_eq!(n["status"]["content"], listed.body["status"]["content"], "{n}");
    }
    // The fan's own stream stays quiet (it notified; it was not notified).
    let quiet = tokio::time::timeout(Duration::from_millis(300), fans.chunk()).await;
    if let Ok(Ok(Some(chunk))) = quiet {
        fan_seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!fan_seen.contains("event:"), "the actor's stream shows nothing:\n{fan_seen}");
}

#[tokio::test]
async fn streams_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), CELEBRITY_AT_TWO);
    let api = Api::new(&server.base);
    a_stream_shows_pushed_and_merged_posts(&api, &server.base, "s").await;
    notifications_reach_their_recipients_streams(&api, &server.base, "s").await;
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn streams_across_processes() {
    let mut env = backends_env("stream");
    env.extend(CELEBRITY_AT_TWO.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let stack = Stack::start(&env, 1);
    a_stream_shows_pushed_and_merged_posts(&stack.api(), &stack.timeline.base, "d").await;
    notifications_reach_their_recipients_streams(&stack.api(), &stack.timeline.base, "d").await;
}
