//! `/metrics` is valid Prometheus text (`promtool check metrics`, from the `prometheus`
//! package that `scripts/test.sh` installs and names in `PROMTOOL`) in every process,
//! standalone and each service of the distributed stack, and its HTTP metrics count what
//! was asked: requests by route template and status, and their latency histogram.

mod common;

use common::stack::Stack;
use common::{Api, Server};
use reqwest::Method;
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
#[tokio::test]
async fn every_process_of_the_stack_has_valid_metrics() {
    let (Ok(kafka), Ok(redis)) = (std::env::var("KAFKA_BROKERS"), std::env::var("REDIS_URL")) else {
        eprintln!("skipped: KAFKA_BROKERS and REDIS_URL are not set (scripts/test.sh sets them)");
        return;
    };
    let prefix = format!("metrics{}", std::process::id());
    let env: Vec<(String, String)> = [
        ("STARLING__BACKENDS__KAFKA_BROKERS", kafka),
        ("STARLING__BACKENDS__TOPIC_PREFIX", format!("{prefix}.")),
        ("STARLING__BACKENDS__REDIS_URL", redis),
        ("STARLING__BACKENDS__REDIS_PREFIX", format!("{prefix}:")),
        ("STARLING__AUTH__JWT_SECRET", "metrics-test-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
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

/// `promtool check metrics` finds nothing to say of `text` (or `PROMTOOL` is not set).
async fn promtool_accepts(text: &str) {
    let Ok(promtool) = std::env::var("PROMTOOL") else {
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
