//! Standalone home-timeline reads over HTTP.
//!
//! Starts the standalone server in this process, builds a population of readers who each
//! follow `ORDINARY` ordinary authors and `CELEBRITIES` celebrities (so every read merges
//! five celebrity lists into the materialised timeline), then runs a closed-loop load of
//! `CONNECTIONS` concurrent clients asking for 20 hydrated entries for `SECONDS` seconds.
//! Client and server share the machine's cores, as they do in the targets' definition.
//!
//! Run: `cargo bench -p starling --bench read` (add `-- quick` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use starling::{Node, Settings};

const READERS: usize = 200;
const ORDINARY: usize = 50;
const CELEBRITIES: usize = 5;
const POSTS_PER_AUTHOR: usize = 20;
const CONNECTIONS: usize = 32;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let seconds = if quick { 3 } else { 15 };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.data_dir = dir.path().to_owned();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.rate_limit.writes_per_second = 0.0;
    // Every reader follows the celebrities, so they cross this line.
    settings.celebrity.threshold = (READERS / 2) as u64;
    settings.celebrity.demote_below = (READERS / 4) as u64;
    let server = Node::standalone(settings).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();

    eprintln!("setting up {READERS} readers, {ORDINARY} ordinary authors, {CELEBRITIES} celebrities...");
    let register = |handle: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r: Value = http
                .post(format!("{base}/api/v1/users"))
                .json(&json!({ "handle": handle }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (r["user"]["id"].as_str().unwrap().to_owned(), r["token"].as_str().unwrap().to_owned())
        }
    };
    let mut authors = Vec::new();
    for i in 0..ORDINARY + CELEBRITIES {
        authors.push(register(format!("author{i}")).await);
    }
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (id, token) = register(format!("reader{i}")).await;
        // Each reader follows its own slice of ordinary authors and every celebrity.
        let mut follow: Vec<usize> = (0..ORDINARY).filter(|a| (a + i) % 2 == 0).take(ORDINARY).collect();
        follow.extend(ORDINARY..ORDINARY + CELEBRITIES);
        for a in follow {
            let r = http
                .post(format!("{base}/api/v1/users/{}/follow", authors[a].0))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        // A first read materialises the timeline (an active reader).
        http.get(format!("{base}/api/v1/timelines/home")).bearer_auth(&token).send().await.unwrap();
        readers.push((id, token));
    }
    for (n, (_, token)) in authors.iter().enumerate() {
        for p in 0..POSTS_PER_AUTHOR {
            let r = http
                .post(format!("{base}/api/v1/posts"))
                .bearer_auth(token)
                .json(&json!({ "text": format!("post {p} from author {n}") }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let check: Value = http
        .get(format!("{base}/api/v1/timelines/home?limit=20"))
        .bearer_auth(&readers[0].1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["posts"].as_array().unwrap().len(), 20, "a reader's page must be full");

    println!("| what | requests | seconds | requests/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    eprintln!("HTTP ceiling: GET /healthz for 3 s with {CONNECTIONS} connections...");
    let healthz = Arc::new(vec![(String::new(), String::new())]);
    load(&http, &base, "/healthz", healthz, Duration::from_secs(3), "GET /healthz (HTTP ceiling)").await;
    eprintln!("reading for {seconds} s with {CONNECTIONS} connections...");
    let path = "/api/v1/timelines/home?limit=20";
    load(&http, &base, path, Arc::new(readers), Duration::from_secs(seconds), "home timeline, 20 entries").await;
    server.stop().await.unwrap();
}

/// Closed-loop load: `CONNECTIONS` clients each send the next request as soon as the last
/// one answered, cycling through the readers' tokens.
async fn load(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    readers: Arc<Vec<(String, String)>>,
    run: Duration,
    label: &str,
) {
    let deadline = Instant::now() + run;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (http, url, readers) = (http.clone(), format!("{base}{path}"), readers.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let mut errors = 0u64;
                let mut i = c;
                while Instant::now() < deadline {
                    let token = &readers[i % readers.len()].1;
                    i += CONNECTIONS;
                    let t = Instant::now();
                    match http.get(&url).bearer_auth(token).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            hist.record(t.elapsed().as_micros() as u64).unwrap();
                        }
                        _ => errors += 1,
                    }
                }
                (hist, errors)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "| {label} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        hist.len(),
        elapsed,
        hist.len() as f64 / elapsed,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        errors
    );
}
