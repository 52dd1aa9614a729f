//! The services as separate processes: graph-service, post-service, timeline-service and
//! fan-out workers, each a `starling serve <role>` on a temporary data directory, wired to
//! each other's internal APIs.

use super::{Api, Routes, Server};

pub struct Stack {
    pub graph: Server,
    pub posts: Server,
    pub timeline: Server,
    pub fanout: Vec<Server>,
    _dirs: Vec<tempfile::TempDir>,
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
        Stack { graph, posts, timeline, fanout, _dirs: dirs }
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
