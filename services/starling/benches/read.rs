//! Home-timeline reads over HTTP, standalone or distributed.
//!
//! Builds a population of readers who each follow `ORDINARY / 2` ordinary authors and
//! `CELEBRITIES` celebrities (so every read merges five celebrity lists into the
//! materialised timeline), then runs a closed-loop load of `CONNECTIONS` concurrent
//! clients asking for 20 hydrated entries (15 s in all, 3 s with `quick`). The same run
//! measures the HTTP ceiling of the set-up (`GET /healthz` on the serving process, same
//! client and connections), in turns with the reads (1 s of ceiling before each slice of
//! reads), and prints the reads' rate as a share of it. Client and server share the
//! machine's cores, as they do in the targets' definition.
//!
//! - Standalone (default): the whole service in this process, embedded backends.
//! - Distributed (`KAFKA_BROKERS` and `REDIS_URL` set): graph-service, post-service,
//!   timeline-service and a fan-out worker as separate `starling serve` processes over
//!   that broker and Redis, requests routed by path as an ingress does. A read is then
//!   served from Redis alone (timeline, follow list, posts; see the timeline-service docs).
//!
//! After the load it prints, per read, the timeline-service's calls to other services and
//! read-model misses (both ~0 when the caches are warm), and the CPU time each process
//! spent, so a figure can be explained by where the machine's two cores went.
//!
//! Two data sets (`scale=small`, the default, or `scale=large`):
//! - small: the population above, made through the public API;
//! - large: `scripts/sql-baseline.sh large`'s shape, 100k users, 4.9M follows, 2M posts
//!   (see `read/large.rs`), loaded straight into the stores once and reused by later runs.
//!   Every user is a reader, and the load cycles through all of them.
//!
//! In both, each reader reads once before the load (a warm-up pass, which materialises
//! the timeline and fills the read model and the timeline-service's copy): the figures are
//! of warm reads, in both set-ups alike.
//!
//! Run: `cargo bench -p starling --bench read -- [quick] [scale=small|large]` (`quick`: a
//! short run).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "read/large.rs"]
mod large;

/// The allocator `starling` ships with (`src/main.rs`): a standalone figure is taken in
/// this process, so it must allocate as the served binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Api;
use common::stack::Stack;
use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde_json::json;
use starling::{Node, Settings};
use starling_metrics::names;

const READERS: usize = 200;
const ORDINARY: usize = 50;
const CELEBRITIES: usize = 5;
const POSTS_PER_AUTHOR: usize = 20;
const CONNECTIONS: usize = 32;
/// The JWT secret of every process, so the large data set's users can be handed tokens
/// without registering them.
const SECRET: &str = "read-bench-secret";

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Small,
    Large,
}

/// What serves the requests, kept alive for the run.
enum Deployment {
    Standalone(Node),
    /// Held only to keep the processes up (dropping it kills them).
    #[allow(dead_code)]
    Distributed(Stack),
}

#[tokio::main]
async fn main() {
    let (quick, scale) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("read bench: {e}\nusage: cargo bench -p starling --bench read -- [quick] [scale=small|large]");
            std::process::exit(2);
        }
    };
    let seconds = if quick { 3 } else { 15 };
    let dir = tempfile::tempdir().unwrap();
    let store = match scale {
        Scale::Small => None,
        Scale::Large => Some(large::store().await),
    };
    let (deployment, api, read_base) = match (std::env::var("KAFKA_BROKERS"), std::env::var("REDIS_URL")) {
        (Ok(kafka), Ok(redis)) => distributed(&kafka, &redis, store.as_deref()),
        _ => standalone(dir.path(), store.as_deref()).await,
    };
    let label = match deployment {
        Deployment::Standalone(_) => "standalone",
        Deployment::Distributed(_) => "distributed",
    };
    let readers = Arc::new(match scale {
        Scale::Small => small_population(&api, label).await,
        Scale::Large => large_population(),
    });
    warm_up(&read_base, &readers, label).await;
    let check = api.call(Method::GET, "/api/v1/timelines/home?limit=20", Some(&readers[0].1), None).await;
    assert_eq!(check.body.as_array().map(Vec::len), Some(20), "a reader's page must be full");

    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    // The ceiling and the reads take turns, slice by slice, so that a machine whose speed
    // drifts (a shared one does, by a third from one minute to the next) moves both alike
    // and their ratio stays put.
    let slices = if quick { 3 } else { 5 };
    let read_slice = Duration::from_secs(seconds) / slices;
    let healthz = Arc::new(vec![(String::new(), String::new())]);
    let path = "/api/v1/timelines/home?limit=20";
    let timeline = Api::new(&read_base);
    let before = ReadCounters::take(&timeline).await;
    let (mut ceiling, mut reads) = (Load::default(), Load::default());
    let mut cpu: Vec<(String, f64)> = cpu_by_process(&deployment).into_iter().map(|(n, _)| (n, 0.0)).collect();
    for slice in 1..=slices {
        eprintln!(
            "slice {slice} of {slices}: GET /healthz for 1 s, then the home timeline for {} s, {CONNECTIONS} connections",
            read_slice.as_secs_f64()
        );
        ceiling.add(load(&http, &read_base, "/healthz", healthz.clone(), Duration::from_secs(1)).await);
        let cpu_before = cpu_by_process(&deployment);
        reads.add(load(&http, &read_base, path, readers.clone(), read_slice).await);
        for ((_, total), ((_, after), (_, before))) in
            cpu.iter_mut().zip(cpu_by_process(&deployment).iter().zip(&cpu_before))
        {
            *total += after - before;
        }
    }
    println!("| {label}: what | requests | seconds | requests/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    ceiling.print("GET /healthz (HTTP ceiling)");
    reads.print("home timeline, 20 entries");
    println!(
        "\nreads per ceiling: {:.2} ({slices} slices of each, taken in turns)",
        reads.per_second() / ceiling.per_second()
    );
    let counters = ReadCounters::take(&timeline).await.since(&before);
    counters.print();
    let served = counters.0[0].1.max(1) as f64;
    let per_read: Vec<String> = cpu.iter().map(|(name, s)| format!("{name} {:.0}", s * 1e6 / served)).collect();
    println!("CPU µs per read by process: {}", per_read.join("; "));
    if let Deployment::Standalone(node) = deployment {
        node.stop().await.unwrap();
    }
}

fn parse_args() -> Result<(bool, Scale), String> {
    let (mut quick, mut scale) = (false, Scale::Small);
    // Cargo passes `--bench` to every bench binary.
    for arg in std::env::args().skip(1).filter(|a| a != "--bench") {
        match arg.as_str() {
            "quick" => quick = true,
            "scale=small" => scale = Scale::Small,
            "scale=large" => scale = Scale::Large,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((quick, scale))
}

/// The small population, made through the public API; returns each reader's id and token.
async fn small_population(api: &Api, label: &str) -> Vec<(String, String)> {
    eprintln!("{label}: setting up {READERS} readers, {ORDINARY} ordinary authors, {CELEBRITIES} celebrities...");
    let names: Vec<String> = (0..ORDINARY + CELEBRITIES).map(|i| format!("author{i}")).collect();
    let authors = api.register_all(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let names: Vec<String> = (0..READERS).map(|i| format!("reader{i}")).collect();
    let mut readers = Vec::new();
    for (i, (id, token)) in
        api.register_all(&names.iter().map(String::as_str).collect::<Vec<_>>()).await.into_iter().enumerate()
    {
        // Each reader follows its own half of the ordinary authors and every celebrity.
        let mut follow: Vec<usize> = (0..ORDINARY).filter(|a| (a + i) % 2 == 0).collect();
        follow.extend(ORDINARY..ORDINARY + CELEBRITIES);
        for a in follow {
            let r =
                api.call(Method::POST, &format!("/api/v1/accounts/{}/follow", authors[a].0), Some(&token), None).await;
            assert!(r.status.is_success(), "follow: {}", r.status);
        }
        // A first read materialises the timeline (an active reader).
        api.call(Method::GET, "/api/v1/timelines/home", Some(&token), None).await;
        readers.push((id.to_string(), token));
    }
    for (n, (_, token)) in authors.iter().enumerate() {
        for p in 0..POSTS_PER_AUTHOR {
            let body = json!({ "status": format!("post {p} from author {n}") });
            let r = api.call(Method::POST, "/api/v1/statuses", Some(token), Some(body)).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    api.wait_quiet().await;
    readers
}

/// Every user of the large data set as a reader, with a token signed by the shared secret.
fn large_population() -> Vec<(String, String)> {
    let keys = starling_api::auth::TokenKeys::from_secret(SECRET.as_bytes(), Duration::from_secs(86_400));
    (0..large::USERS)
        .map(|i| {
            let id = large::user(i);
            (id.to_string(), keys.issue(id, &large::handle(id)))
        })
        .collect()
}

/// One read by each reader before the measured load, so that both set-ups are measured
/// warm: the small set's readers last read before the posts existed, and a distributed
/// timeline-service starts with its own copy empty.
async fn warm_up(read_base: &str, readers: &Arc<Vec<(String, String)>>, label: &str) {
    eprintln!("{label}: warm-up, one read by each of {} readers...", readers.len());
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (http, url, readers, done) =
                (http.clone(), format!("{read_base}/api/v1/timelines/home?limit=20"), readers.clone(), done.clone());
            tokio::spawn(async move {
                for (_, token) in readers.iter().skip(c).step_by(CONNECTIONS) {
                    let r = http.get(&url).bearer_auth(token).send().await.expect("warm-up read");
                    assert!(r.status().is_success(), "warm-up read: {}", r.status());
                    let _ = r.bytes().await;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % (readers.len() / 10).max(1) == 0 {
                        eprintln!("warm-up: {n} of {} reads ({:.0} s)", readers.len(), started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// CPU seconds (user + system) used so far by each process serving the reads, this one
/// (the load generator, and in standalone the whole service) included.
fn cpu_by_process(deployment: &Deployment) -> Vec<(String, f64)> {
    let mut pids = vec![("this process".to_owned(), std::process::id())];
    if let Deployment::Distributed(stack) = deployment {
        let servers =
            [("timeline-service", &stack.timeline), ("graph-service", &stack.graph), ("post-service", &stack.posts)];
        pids.extend(servers.iter().filter_map(|(n, s)| s.pid().map(|p| (n.to_string(), p))));
        pids.extend(stack.fanout.iter().filter_map(|f| f.pid().map(|p| ("fanout-worker".to_owned(), p))));
        // The backends, found by the ports they listen on (on their command lines).
        let port = |var: &str| std::env::var(var).ok().and_then(|v| v.rsplit(':').next().map(str::to_owned));
        let backends = [("redis", "redis-server", port("REDIS_URL")), ("broker", "noida-db", port("KAFKA_BROKERS"))];
        for (name, program, port) in backends {
            if let Some(pid) = port.and_then(|p| pid_of(&format!("{program}.*[:= ]{p}( |$)"))) {
                pids.push((name.to_owned(), pid));
            }
        }
    }
    let tick = 100.0; // USER_HZ on Linux
    pids.into_iter()
        .filter_map(|(name, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name: utime is the 12th, stime the 13th.
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split(' ').collect();
            let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some((name, ticks / tick))
        })
        .collect()
}

/// The oldest process whose command line contains `pattern` (the shared backends of
/// the bench's environment), if any.
fn pid_of(pattern: &str) -> Option<u32> {
    let out = std::process::Command::new("pgrep").args(["-o", "-f", pattern]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The timeline-service's own counters: what a read cost it beyond the cache.
struct ReadCounters(Vec<(String, u64)>);

/// The series read, by their names in the metrics crate with these labels.
fn counters() -> Vec<String> {
    let peer = |t: &str| format!("{}{{target=\"{t}\"}}", names::TIMELINE_PEER_CALLS);
    let miss = |c: &str| format!("{}{{cache=\"{c}\",result=\"miss\"}}", names::READ_MODEL_LOOKUPS);
    vec![
        names::TIMELINE_READS.to_owned(),
        peer("graph-service"),
        peer("post-service"),
        miss("following"),
        miss("posts"),
        miss("recent"),
        names::TIMELINE_REBUILDS.to_owned(),
    ]
}

impl ReadCounters {
    async fn take(api: &Api) -> ReadCounters {
        let mut values = Vec::new();
        for name in counters() {
            let v = api.metric(&name).await;
            values.push((name, v));
        }
        ReadCounters(values)
    }

    fn since(&self, before: &ReadCounters) -> ReadCounters {
        ReadCounters(self.0.iter().zip(&before.0).map(|((n, a), (_, b))| (n.clone(), a - b)).collect())
    }

    fn print(&self) {
        let reads = self.0[0].1.max(1) as f64;
        let per = self.0[1..].iter().map(|(n, v)| format!("{n} {:.4}", *v as f64 / reads)).collect::<Vec<_>>();
        println!("\nper read, over {} reads: {}", self.0[0].1, per.join("; "));
    }
}

/// Every reader follows the celebrities, so they cross this line; an ordinary author has
/// exactly `READERS / 2` followers, so it stays below it.
const THRESHOLD: u64 = (READERS / 2 + 1) as u64;
const DEMOTE_BELOW: u64 = (READERS / 4) as u64;

async fn standalone(dir: &std::path::Path, store: Option<&std::path::Path>) -> (Deployment, Api, String) {
    let mut settings = Settings::default();
    settings.server.data_dir = dir.to_owned();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.auth.jwt_secret = SECRET.to_owned();
    settings.rate_limit.writes_per_second = 0.0;
    settings.admin.token = common::ADMIN_TOKEN.to_owned();
    if let Some(store) = store {
        large::copy_into(store, dir);
    } else {
        settings.celebrity.threshold = THRESHOLD;
        settings.celebrity.demote_below = DEMOTE_BELOW;
    }
    let node = Node::standalone(settings).await.unwrap();
    let base = format!("http://{}", node.addr);
    (Deployment::Standalone(node), Api::new(&base), base)
}

fn distributed(kafka: &str, redis: &str, store: Option<&std::path::Path>) -> (Deployment, Api, String) {
    let prefix = format!("readbench{}", std::process::id());
    let mut env: Vec<(String, String)> = [
        ("STARLING__BACKENDS__KAFKA_BROKERS", kafka.to_owned()),
        ("STARLING__BACKENDS__TOPIC_PREFIX", format!("{prefix}.")),
        ("STARLING__BACKENDS__REDIS_URL", redis.to_owned()),
        ("STARLING__BACKENDS__REDIS_PREFIX", format!("{prefix}:")),
        ("STARLING__AUTH__JWT_SECRET", SECRET.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if store.is_none() {
        env.push(("STARLING__CELEBRITY__THRESHOLD".into(), THRESHOLD.to_string()));
        env.push(("STARLING__CELEBRITY__DEMOTE_BELOW".into(), DEMOTE_BELOW.to_string()));
    }
    // The graph- and post-service each get a copy of the store (each uses its own half).
    let seed = |role: &str, dir: &std::path::Path| {
        if let (Some(store), "graph-service" | "post-service") = (store, role) {
            large::copy_into(store, dir);
        }
    };
    let stack = Stack::start_seeded(&env, 1, seed);
    let (api, read_base) = (stack.api(), stack.timeline.base.clone());
    (Deployment::Distributed(stack), api, read_base)
}

/// What one or more runs of [`load`] saw.
struct Load {
    hist: Histogram<u64>,
    errors: u64,
    seconds: f64,
}

impl Default for Load {
    fn default() -> Load {
        Load { hist: Histogram::new(3).unwrap(), errors: 0, seconds: 0.0 }
    }
}

impl Load {
    fn add(&mut self, other: Load) {
        self.hist.add(other.hist).unwrap();
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    fn per_second(&self) -> f64 {
        self.hist.len() as f64 / self.seconds
    }

    fn print(&self, label: &str) {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {label} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.hist.len(),
            self.seconds,
            self.per_second(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.errors
        );
    }
}

/// Closed-loop load: `CONNECTIONS` clients each send the next request as soon as the last
/// one answered, cycling through the readers' tokens.
async fn load(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    readers: Arc<Vec<(String, String)>>,
    run: Duration,
) -> Load {
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
    let mut total = Load::default();
    for t in tasks {
        let (hist, errors) = t.await.unwrap();
        total.add(Load { hist, errors, seconds: 0.0 });
    }
    total.seconds = start.elapsed().as_secs_f64();
    total
}
