//! The services as separate processes: graph-service, post-service, timeline-service and
//! fan-out workers, each a `starling serve <role>` on a temporary data directory, wired to
//! each other's internal APIs; optionally a second timeline-service replica and a real
//! nginx in front of them all (`scripts/lib/nginx.sh`, routing as the Kubernetes Ingress
//! does), so clients need one base URL.

use super::{Api, Routes, Server};

pub struct Stack {
    pub graph: Server,
    pub posts: Server,
    pub timeline: Server,
    pub fanout: Vec<Server>,
    /// Stopped before the data directories go.
    pub proxy: Option<Proxy>,
    /// More timeline-service replicas, behind the proxy with `timeline`.
    pub replicas: Vec<Server>,
    _dirs: Vec<tempfile::TempDir>,
}

/// A private nginx in front of a stack.
pub struct Proxy {
    pub base: String,
    dir: tempfile::TempDir,
}

fn nginx_sh(script: &str) -> std::process::Output {
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/lib/nginx.sh");
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {lib} && {script}"))
        .output()
        .expect("running bash")
}

impl Proxy {
    /// nginx on a free loopback port, routing to these services (`timelines` round robin).
    pub fn start(graph: &str, posts: &str, timelines: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out =
            nginx_sh(&format!("nginx_start {port} {} {graph} {posts} {}", dir.path().display(), timelines.join(",")));
        assert!(out.status.success(), "nginx did not start: {}", String::from_utf8_lossy(&out.stderr));
        Proxy { base: format!("http://127.0.0.1:{port}"), dir }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        nginx_sh(&format!("nginx_stop {}", self.dir.path().display()));
    }
}

impl Stack {
    /// Starts the stack; every process gets `env` (backends, shared secret, settings). Each
    /// id-creating service gets its own worker id and each fan-out worker its own Kafka
    /// instance id (static group membership, kept across a restart).
    pub fn start(env: &[(String, String)], fanout_workers: usize) -> Stack {
        Stack::start_seeded(env, fanout_workers, |_, _| {})
    }

    /// [`Stack::start`], calling `seed(role, data_dir)` before each process starts (to put
    /// data in place, e.g. a prepared store).
    pub fn start_seeded(
        env: &[(String, String)],
        fanout_workers: usize,
        seed: impl Fn(&str, &std::path::Path),
    ) -> Stack {
        let dirs: Vec<tempfile::TempDir> = (0..3 + fanout_workers).map(|_| tempfile::tempdir().unwrap()).collect();
        let serve = |role: &str, dir: &tempfile::TempDir, extra: &[(String, String)]| {
            let all: Vec<(&str, &str)> = env.iter().chain(extra).map(|(k, v)| (k.as_str(), v.as_str())).collect();
            seed(role, dir.path());
            Server::serve(role, dir.path(), &all)
        };
        let var = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let graph = serve("graph-service", &dirs[0], &[var("STARLING__SERVER__WORKER_ID", "1")]);
        let mut peers = vec![var("STARLING__PEERS__GRAPH_URL", &graph.base)];
        let posts = serve("post-service", &dirs[1], &[peers[0].clone(), var("STARLING__SERVER__WORKER_ID", "2")]);
        peers.push(var("STARLING__PEERS__POST_URL", &posts.base));
        let timeline = serve("timeline-service", &dirs[2], &peers);
        let fanout = (0..fanout_workers)
            .map(|i| {
                let mut extra = peers.clone();
                extra.push(var("STARLING__BACKENDS__KAFKA_INSTANCE_ID", &format!("fanout-{i}")));
                serve("fanout-worker", &dirs[3 + i], &extra)
            })
            .collect();
        Stack { graph, posts, timeline, fanout, proxy: None, replicas: Vec::new(), _dirs: dirs }
    }

    /// [`Stack::start`] with a second timeline-service replica and nginx in front.
    pub fn start_proxied(env: &[(String, String)], fanout_workers: usize) -> Stack {
        let mut stack = Stack::start(env, fanout_workers);
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<(String, String)> = env.to_vec();
        all.push(("STARLING__PEERS__GRAPH_URL".into(), stack.graph.base.clone()));
        all.push(("STARLING__PEERS__POST_URL".into(), stack.posts.base.clone()));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        stack.replicas.push(Server::serve("timeline-service", dir.path(), &all));
        stack._dirs.push(dir);
        let timelines: Vec<&str> = std::iter::once(stack.timeline.base.as_str())
            .chain(stack.replicas.iter().map(|r| r.base.as_str()))
            .collect();
        stack.proxy = Some(Proxy::start(&stack.graph.base, &stack.posts.base, &timelines));
        stack
    }

    /// A client that routes by path as an ingress does, and sums metrics over every process.
    pub fn api(&self) -> Api {
        let mut metrics = vec![self.timeline.base.clone(), self.graph.base.clone(), self.posts.base.clone()];
        metrics.extend(self.fanout.iter().map(|f| f.base.clone()));
        Api::routed(Routes {
            graph: self.graph.base.clone(),
            posts: self.posts.base.clone(),
            timeline: self.timeline.base.clone(),
            metrics,
        })
    }
}

/// What every process of a test's stack needs to share the backends `scripts/test.sh`
/// started (`KAFKA_BROKERS`, `REDIS_URL`), under topic and key prefixes of `test`'s own.
pub fn backends_env(test: &str) -> Vec<(String, String)> {
    let kafka = super::server_env("KAFKA_BROKERS", "a Kafka-protocol broker");
    let redis = super::server_env("REDIS_URL", "a Redis server");
    let prefix = format!("{test}{}", std::process::id());
    let env = [
        ("STARLING__BACKENDS__KAFKA_BROKERS", kafka),
        ("STARLING__BACKENDS__TOPIC_PREFIX", format!("{prefix}.")),
        ("STARLING__BACKENDS__REDIS_URL", redis),
        ("STARLING__BACKENDS__REDIS_PREFIX", format!("{prefix}:")),
        ("STARLING__AUTH__JWT_SECRET", format!("{test}-test-secret")),
    ];
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
