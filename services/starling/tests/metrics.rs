//! `/metrics` is valid Prometheus text (`promtool check metrics`, from the `prometheus`
//! package that `scripts/test.sh` installs and names in `PROMTOOL`) in every process,
//! standalone and each service of the distributed stack, and its HTTP metrics count what
//! was asked: requests by route template and status, and their latency histogram. And a
//! real Prometheus server (the same package's, named in `PROMETHEUS`) scraping every
//! process of the distributed stack sees exactly the requests made, and the fan-out's
//! delivery lag, the consumer lag of every partition and the outboxes' depth.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::stack::{Stack, backends_env};
use common::{Api, Server};
use reqwest::Method;
use serde_json::Value;
use starling_metrics::names;

/// `{name}{labels}` of the HTTP metrics of a standalone process (`service="starling"`).
fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels},service=\"starling\"")
}

#[tokio::test]
async fn metrics_are_valid_and_count_requests_by_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server.base);
    let (_, token) = api.register("metered").await;
    for _ in 0..3 {
        let r = api.call(Method::GET, "/api/v1/timelines/home", Some(&token), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    api.call(Method::GET, "/api/v1/statuses/123456789", None, None).await;
    api.call(Method::GET, "/no/such/path", None, None).await;
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();

    let count = |labels: &str| -> u64 {
        let prefix = series(names::HTTP_REQUESTS, labels);
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(count(r#"method="GET",route="/api/v1/timelines/home""#), 3, "{text}");
    assert!(text.contains(r#"route="/api/v1/statuses/{id}""#), "one series per route template:\n{text}");
    assert!(text.contains(r#"route="unmatched""#), "unknown paths share one series:\n{text}");
    let histogram = format!(
        "{}_count{{method=\"GET\",route=\"/api/v1/timelines/home\",service=\"starling\"}} 3",
        names::HTTP_REQUEST_DURATION
    );
    assert!(text.contains(&histogram), "{text}");
    assert!(text.contains(names::TIMELINE_READS) && text.contains("process_cpu_seconds_total"), "{text}");

    promtool_accepts(&text).await;
}

/// Every process of the distributed stack serves valid metrics under its own service.
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn every_process_of_the_stack_has_valid_metrics() {
    let env = backends_env("metrics");
    let stack = Stack::start(&env, 1);
    let api = stack.api();
    let (_, token) = api.register("metered_apart").await;
    api.call(Method::GET, "/api/v1/timelines/home", Some(&token), None).await;
    let processes = [
        ("graph-service", &stack.graph),
        ("post-service", &stack.posts),
        ("timeline-service", &stack.timeline),
        ("fanout-worker", &stack.fanout[0]),
    ];
    for (service, server) in processes {
        let url = format!("{}/metrics", server.base);
        // A scrape is counted once answered: the second shows the first, under its service.
        reqwest::get(&url).await.unwrap().text().await.unwrap();
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let counted = format!("method=\"GET\",route=\"/metrics\",service=\"{service}\",status=\"200\"}}");
        assert!(text.contains(&counted), "{service}:\n{text}");
        promtool_accepts(&text).await;
    }
    let text = reqwest::get(format!("{}/metrics", stack.timeline.base)).await.unwrap().text().await.unwrap();
    let home = r#"method="GET",route="/api/v1/timelines/home",service="timeline-service",status="200"} 1"#;
    assert!(text.contains(home), "the timeline-service counted the read:\n{text}");
}

/// Requests the Prometheus test makes, each counted once by the service that answers it.
const HOME_READS: u64 = 7;
const POSTS: u64 = 5;
/// Partitions of each topic in that test (`backends.kafka_partitions`).
const PARTITIONS: usize = 2;

/// Prometheus scrapes the four processes of the distributed stack every second; what it
/// stores is what the test did: every target up, the home reads, posts and the follow
/// counted once each under their route and service, every post timed for delivery lag
/// (with the `le="1"` bucket the delivery objective reads), each topic's apply time, the
/// consumer lag of every partition the fan-out owns (zero once quiet), and both outboxes'
/// depth (zero once drained).
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn prometheus_scrapes_every_process_of_the_stack_and_counts_exactly() {
    let mut env = backends_env("prom");
    let prometheus = common::server_env("PROMETHEUS", "Debian's prometheus server");
    // backends_env's prefixes, which the checks below name.
    let prefix = format!("prom{}", std::process::id());
    env.push(("STARLING__BACKENDS__KAFKA_PARTITIONS".to_owned(), PARTITIONS.to_string()));
    let stack = Stack::start(&env, 1);
    let targets: Vec<&str> = [&stack.graph, &stack.posts, &stack.timeline, &stack.fanout[0]]
        .iter()
        .map(|s| s.base.trim_start_matches("http://"))
        .collect();
    let server = OwnPrometheus::start(&prometheus, &targets).await;

    let api = stack.api();
    let users = api.register_all(&["prom_author", "prom_reader"]).await;
    let ((author, author_token), (_, reader_token)) = (&users[0], &users[1]);
    let r = api.call(Method::POST, &format!("/api/v1/accounts/{author}/follow"), Some(reader_token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for i in 0..POSTS {
        let body = serde_json::json!({ "status": format!("scraped {i}") });
        let r = api.call(Method::POST, "/api/v1/statuses", Some(author_token), Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for _ in 0..HOME_READS {
        // Not `call`, which retries a 503: each read is made exactly once.
        let r = api.try_call(Method::GET, "/api/v1/timelines/home", Some(reader_token), None, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    api.wait_quiet().await;

    let group = format!("{prefix}.fanout-worker");
    // Scrapes are a second apart and the outbox relay sweeps every 2 s: poll until it shows.
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Err(why) = server.check(&targets, &prefix, &group).await {
        assert!(Instant::now() < deadline, "Prometheus never saw what the test did: {why}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Prometheus server of the test's own on a free loopback port, scraping `targets`
/// every second into a temporary directory. Dropping it kills it (SIGKILL, by its pid),
/// so a failed assertion leaves no server behind.
struct OwnPrometheus {
    child: std::process::Child,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for OwnPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OwnPrometheus {
    async fn start(binary: &str, targets: &[&str]) -> OwnPrometheus {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: starling\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut server = OwnPrometheus { child, base: format!("http://127.0.0.1:{port}"), http, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = server.http.get(format!("{}/-/ready", server.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited ({status}) before it was ready:\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "prometheus was not ready within 60 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result: each series' labels and value.
    async fn query(&self, promql: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let res = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| format!("{promql}: {e}"))?;
        let body: Value = res.json().await.map_err(|e| format!("{promql}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{promql}: {body}"));
        }
        let series = body["data"]["result"].as_array().ok_or_else(|| format!("{promql}: {body}"))?;
        series
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                    .unwrap_or_default();
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{s}"))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// `promql`'s result as `label=value` (of the labels `by` names) to value, for a
    /// readable comparison.
    async fn by(&self, promql: &str, by: &[&str]) -> Result<BTreeMap<String, f64>, String> {
        Ok(self
            .query(promql)
            .await?
            .into_iter()
            .map(|(labels, v)| {
                let key: Vec<String> =
                    by.iter().map(|b| format!("{b}={}", labels.get(*b).cloned().unwrap_or_default())).collect();
                (key.join(","), v)
            })
            .collect())
    }

    /// `Err` with what differs until Prometheus has stored what the test expects.
    async fn check(&self, targets: &[&str], prefix: &str, group: &str) -> Result<(), String> {
        fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
            if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
        }
        let up = self.by("up{job=\"starling\"}", &["instance"]).await?;
        let want: BTreeMap<String, f64> = targets.iter().map(|t| (format!("instance={t}"), 1.0)).collect();
        expect("up", up, want)?;

        let requests = |route: &str, method: &str| {
            format!("sum by (service, status) (starling_http_requests_total{{route=\"{route}\",method=\"{method}\"}})")
        };
        let one = |key: &str, n: u64| BTreeMap::from([(key.to_owned(), n as f64)]);
        let home = self.by(&requests("/api/v1/timelines/home", "GET"), &["service", "status"]).await?;
        expect("home reads", home, one("service=timeline-service,status=200", HOME_READS))?;
        let posts = self.by(&requests("/api/v1/statuses", "POST"), &["service", "status"]).await?;
        expect("posts", posts, one("service=post-service,status=200", POSTS))?;
        let follows = self.by(&requests("/api/v1/accounts/{id}/follow", "POST"), &["service", "status"]).await?;
        expect("follows", follows, one("service=graph-service,status=200", 1))?;

        let delivered = self.by(&format!("sum({}_count)", names::FANOUT_DELIVERY_LAG), &[]).await?;
        let delivered = delivered.values().next().copied().unwrap_or(0.0);
        if delivered < POSTS as f64 {
            return Err(format!("delivery lag observed {delivered} times, fewer than the {POSTS} posts"));
        }
        let objective = self.by(&format!("count({}_bucket{{le=\"1\"}})", names::FANOUT_DELIVERY_LAG), &[]).await?;
        expect("series of the le=\"1\" delivery bucket", objective.values().copied().collect(), vec![1.0])?;
        let applied =
            self.by(&format!("sum by (topic) ({}_count)", names::FANOUT_EVENT_APPLY_DURATION), &["topic"]).await?;
        for topic in ["posts.v1", "graph.v1"] {
            if applied.get(&format!("topic={topic}")).is_none_or(|n| *n < 1.0) {
                return Err(format!("no {topic} event timed: {applied:?}"));
            }
        }

        let lag =
            self.by(&format!("{}{{group=\"{group}\"}}", names::KAFKA_CONSUMER_LAG), &["topic", "partition"]).await?;
        let want: BTreeMap<String, f64> = ["posts.v1", "graph.v1", "fanout.v1"]
            .iter()
            .flat_map(|t| (0..PARTITIONS).map(move |p| (format!("topic={prefix}.{t},partition={p}"), 0.0)))
            .collect();
        expect("consumer lag, once quiet", lag, want)?;

        let depth = self.by(names::OUTBOX_DEPTH, &["service"]).await?;
        let want =
            BTreeMap::from([("service=graph-service".to_owned(), 0.0), ("service=post-service".to_owned(), 0.0)]);
        expect("outbox depth, once drained", depth, want)
    }
}

/// `promtool check metrics` finds nothing to say of `text` (or `PROMTOOL` is not set, which
/// a build for the test servers, as scripts/test.sh builds, does not allow).
async fn promtool_accepts(text: &str) {
    let Ok(promtool) = std::env::var("PROMTOOL") else {
        assert!(!cfg!(test_servers), "PROMTOOL is not set: scripts/test.sh installs promtool and sets it");
        eprintln!("skipped the promtool check: PROMTOOL is not set (scripts/test.sh sets it)");
        return;
    };
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    use tokio::io::AsyncWriteExt as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");
}
