//! The streaming API end to end: a stream opened on the user endpoint receives a
//! followee's post as the fan-out applies it, whether the author is ordinary (pushed) or
//! a celebrity (merged at read, never pushed), and its delete; standalone and with the
//! services in separate processes (the announcement crossing Redis pub/sub from the
//! fan-out worker's process to the timeline-service's).

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

#[tokio::test]
async fn streams_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), CELEBRITY_AT_TWO);
    a_stream_shows_pushed_and_merged_posts(&Api::new(&server.base), &server.base, "s").await;
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn streams_across_processes() {
    let mut env = backends_env("stream");
    env.extend(CELEBRITY_AT_TWO.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let stack = Stack::start(&env, 1);
    a_stream_shows_pushed_and_merged_posts(&stack.api(), &stack.timeline.base, "d").await;
}
