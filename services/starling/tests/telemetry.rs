//! Traces end to end, against a real OpenTelemetry collector: `rotel-agent` (PyPI
//! `rotel`, installed by `scripts/test.sh`, which names the binary in `ROTEL`) receives
//! OTLP over HTTP from every process of the distributed stack and logs each span it got.
//!
//! One client trace covers a post, from the post-service's server span through the log to
//! the fan-out worker (its event span, its call to the graph-service, its Redis writes)
//! and on, over the timeline bus, to the timeline-service that streams the post to a
//! follower; every link between processes is a parent/child link the collector saw, and
//! the store call is in it too. A read's trace covers its cache calls.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stack::{Stack, backends_env};
use reqwest::Method;
use serde_json::json;

/// A span as the collector logged it.
#[derive(Clone, Debug, Default)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: String,
}

/// rotel's debug log of traces (`--debug-log traces --debug-log-verbosity detailed`):
/// `ResourceSpans #n` blocks with `-> service.name: Str(...)`, then `Span #k` blocks
/// of `Key : value` lines.
fn parse(log: &str) -> Vec<Span> {
    let (mut spans, mut service, mut current): (Vec<Span>, String, Option<Span>) = (Vec::new(), String::new(), None);
    for line in log.lines() {
        let line = line.trim();
        if line.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            service.clear();
        } else if let Some(name) = line.strip_prefix("-> service.name: Str(").and_then(|r| r.strip_suffix(')')) {
            if current.is_none() {
                service = name.to_owned();
            }
        } else if line.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(Span { service: service.clone(), ..Span::default() });
        } else if let (Some(span), Some((key, value))) = (current.as_mut(), line.split_once(':')) {
            let value = value.trim().to_owned();
            match key.trim() {
                "Trace ID" => span.trace = value,
                "Parent ID" => span.parent = value,
                "ID" => span.id = value,
                "Name" => span.name = value,
                "Kind" => span.kind = value,
                _ => {}
            }
        }
    }
    spans.extend(current);
    spans
}

/// The collector, killed (by its PID) when dropped.
struct Collector {
    child: Child,
    log: std::path::PathBuf,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Collector {
    fn start(rotel: &str) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("spans.log");
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(rotel)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {rotel}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(Instant::now() < deadline, "rotel-agent did not listen on {http} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector { child, log, endpoint: format!("http://127.0.0.1:{http}"), _dir: dir }
    }

    fn spans(&self) -> Vec<Span> {
        parse(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The spans of `trace` once `done` holds of them (batches arrive every 100 ms here).
    async fn wait_for(&self, trace: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Span> = self.spans().into_iter().filter(|s| s.trace == trace).collect();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "trace {trace} incomplete after 20 s:\n{spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one span of `spans` named `name` in `service` (panics listing them otherwise).
fn one<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.service == service && s.name == name).collect();
    assert!(!found.is_empty(), "no {name:?} span of {service}:\n{spans:#?}");
    found[0]
}

/// Whether `s` descends from `ancestor` within the trace whose spans `by_id` holds.
fn descends<'a>(by_id: &HashMap<&str, &'a Span>, mut s: &'a Span, ancestor: &Span) -> bool {
    loop {
        if s.id == ancestor.id {
            return true;
        }
        match by_id.get(s.parent.as_str()) {
            Some(p) => s = p,
            None => return false,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn one_trace_follows_a_post_across_every_process_to_a_followers_stream() {
    let rotel = common::server_env("ROTEL", "the rotel-agent collector");
    let mut env = backends_env("otel");
    let collector = Collector::start(&rotel);
    env.extend(
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
            // Exported within a tenth of a second, so the test waits little.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let stack = Stack::start(&env, 1);
    let api = stack.api();
    let accounts = api.register_all(&["traced_author", "traced_reader"]).await;
    let ((author, author_token), (_, reader_token)) = (accounts[0].clone(), accounts[1].clone());
    let r = api.call(Method::POST, &format!("/api/v1/accounts/{author}/follow"), Some(&reader_token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.wait_quiet().await;

    let mut stream = reqwest::Client::new()
        .get(format!("{}/api/v1/streaming/user", stack.timeline.base))
        .bearer_auth(&reader_token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);

    // The client's own span, as a browser or an app instrumented with OpenTelemetry sends.
    let (trace, client_span) = (random_hex(16), random_hex(8));
    let traceparent = format!("00-{trace}-{client_span}-01");
    let posted = api
        .call_with(
            Method::POST,
            "/api/v1/statuses",
            Some(&author_token),
            Some(json!({ "status": "traced all the way" })),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    let id = posted.body["id"].as_str().expect("an id").to_owned();
    let mut said = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !said.contains(&format!("\"id\":\"{id}\"")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => said.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream did not show the post: {other:?}\n{said}"),
        }
    }

    let spans = collector
        .wait_for(&trace, |spans| {
            let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            ["post-service", "fanout-worker", "graph-service", "timeline-service"].iter().all(|s| services.contains(s))
                && spans.iter().any(|s| s.name == "stream.update")
                && spans.iter().any(|s| s.service == "fanout-worker" && s.name == "redis insert")
                && spans.iter().any(|s| s.name == "create_post")
        })
        .await;
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent_of = |s: &Span| -> &Span {
        by_id.get(s.parent.as_str()).copied().unwrap_or_else(|| panic!("no parent of {s:?} in\n{spans:#?}"))
    };
    let descends = |s: &Span, ancestor: &Span| descends(&by_id, s, ancestor);

    let request = one(&spans, "post-service", "POST /api/v1/statuses");
    assert_eq!(request.parent, client_span, "the request continues the client's span");
    assert_eq!(request.kind, "SPAN_KIND_SERVER");
    let stored = one(&spans, "post-service", "create_post");
    assert_eq!(stored.parent, request.id, "the store call is the request's");
    let event = one(&spans, "fanout-worker", "fanout.event");
    assert_eq!(event.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(parent_of(event).service, "post-service", "across the log: the event's parent is the request's");
    assert!(descends(event, request));
    // The fan-out asks the graph-service for the author's followers: a server span there,
    // the child of a client span of the worker's, under the event's.
    let lookup = spans
        .iter()
        .filter(|s| s.service == "graph-service" && s.kind == "SPAN_KIND_SERVER")
        .find(|s| by_id.get(s.parent.as_str()).is_some_and(|p| p.service == "fanout-worker"))
        .unwrap_or_else(|| panic!("the fan-out's graph lookup is in the trace:\n{spans:#?}"));
    let caller = parent_of(lookup);
    assert_eq!(caller.kind, "SPAN_KIND_CLIENT");
    assert!(descends(caller, event), "the lookup is the event's work");
    let write = one(&spans, "fanout-worker", "redis insert");
    assert!(descends(write, event), "the timeline write is the event's work");
    let shown = one(&spans, "timeline-service", "stream.update");
    assert_eq!(parent_of(shown).service, "fanout-worker", "across the bus: the stream's parent is the fan-out's");
    assert!(descends(shown, event));

    // A read: its trace has the timeline-service's server span and its cache calls.
    let (read_trace, read_parent) = (random_hex(16), random_hex(8));
    let read_traceparent = format!("00-{read_trace}-{read_parent}-01");
    let home = api
        .call_with(
            Method::GET,
            "/api/v1/timelines/home",
            Some(&reader_token),
            None,
            &[("traceparent", &read_traceparent)],
        )
        .await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.body[0]["id"], id.as_str(), "the post is on the follower's home");
    let spans = collector
        .wait_for(&read_trace, |spans| {
            spans.iter().any(|s| s.name == "GET /api/v1/timelines/home")
                && spans.iter().any(|s| s.name.starts_with("redis "))
        })
        .await;
    let read = one(&spans, "timeline-service", "GET /api/v1/timelines/home");
    assert_eq!(read.parent, read_parent);
    let cache: Vec<&Span> = spans.iter().filter(|s| s.name.starts_with("redis ")).collect();
    assert!(cache.iter().all(|s| s.service == "timeline-service" && s.kind == "SPAN_KIND_CLIENT"), "{cache:#?}");
    drop(stack);
}
