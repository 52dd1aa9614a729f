//! The replay itself, in four phases: register every user the trace names, load the
//! initial graph, play the timed events open-loop, then wait for the fan-out to go quiet
//! and check every (or a sample of) home timeline against the oracle.
//!
//! Events run concurrently, yet the oracle must see them in the order the service applied
//! them. Only operations on the same follow pair (follow/unfollow/block/unblock between
//! the same two users) or on the same post (its creation and its delete) can change each
//! other's outcome; everything else commutes. So each event is chained behind the previous
//! event on the same stripe (a hash of its pair or post), and predicts and applies its
//! oracle change while it holds that turn. Unrelated events never wait for each other.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Shared;
use parking_lot::Mutex;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_ids::{PostId, UserId};
use starling_oracle::{Oracle, Refusal, compare};
use starling_trace::progress::Progress;
use starling_trace::{Event, Op, PostKey, Record, TraceReader, TraceUser};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{Client, Failure, sum_metrics};
use crate::record::{Outcome, Recorder};
use crate::report::{
    CacheSize, Check, Divergent, FollowerBucket, Phase, ProcessCpu, Report, ServiceMetrics, ServiceSample,
};
use starling_metrics::names;

/// How fast the timed events are played.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum Pace {
    /// Trace time divided by this factor (1 = real time, 60 = an hour per minute).
    Speedup(f64),
    /// A fixed number of events per second, ignoring the trace's timestamps.
    Rate(f64),
    /// As fast as the concurrency bound allows (closed loop).
    Unpaced,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub pace: Pace,
    /// Requests in flight at most (events; registration and graph load use the same bound).
    pub concurrency: usize,
    pub max_events: Option<u64>,
    pub max_duration: Option<Duration>,
    /// Fraction of posts whose delivery to a follower is timed.
    pub lag_sample: f64,
    /// Delivery probes in flight at most (each polls one follower's timeline).
    pub lag_probes: usize,
    pub lag_timeout: Duration,
    /// Check this many users' timelines against the oracle (None: all of them; 0: none).
    pub check_users: Option<usize>,
    pub seed: u64,
    /// Makes handles and idempotency keys unique to this run, so a deployment can take
    /// several replays.
    pub run_id: String,
    pub progress: bool,
    /// How long to wait for the fan-out to catch up, after the graph load and before the
    /// check.
    pub quiet_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pace: Pace::Speedup(1.0),
            concurrency: 64,
            max_events: None,
            max_duration: None,
            lag_sample: 0.05,
            lag_probes: 8,
            lag_timeout: Duration::from_secs(10),
            check_users: None,
            seed: 1,
            run_id: "r1".into(),
            progress: true,
            quiet_timeout: Duration::from_secs(600),
        }
    }
}

struct Registered {
    id: UserId,
    token: String,
}

/// Follower-count decades for the fan-out plot: 0, 1-9, 10-99, …, 1M+ (as the fan-out
/// worker counts them).
const BUCKETS: usize = 8;

/// Accounts per bulk sign-up request: the most one takes.
const REGISTER_BATCH: usize = 1000;

fn bucket(followers: usize) -> usize {
    if followers == 0 { 0 } else { (followers.ilog10() as usize + 1).min(BUCKETS - 1) }
}

/// State every event task shares.
struct Run {
    cfg: Config,
    client: Client,
    users: HashMap<TraceUser, Registered>,
    by_id: HashMap<UserId, TraceUser>,
    oracle: Mutex<Oracle>,
    /// Trace post key → the id the service gave it (None: creating it failed).
    posts: Mutex<HashMap<PostKey, Option<PostId>>>,
    rec: Arc<Recorder>,
    /// Service counters sampled once a second during the timed phase.
    series: Mutex<Vec<ServiceSample>>,
    /// Users whose state is unknown because a write to them got no answer.
    uncertain: Mutex<HashSet<UserId>>,
    /// Users who have read: their timelines are materialised, so a delivery probe on them
    /// measures the push, not a rebuild.
    readers: Mutex<HashSet<UserId>>,
    rng: Mutex<ChaCha8Rng>,
    probes: Arc<Semaphore>,
    probe_tasks: TaskTracker,
    cancel: CancellationToken,
    /// Posts by follower-count bucket: (posts, sum of followers).
    post_buckets: Mutex<[(u64, u64); BUCKETS]>,
}

/// Compares an answer with what the oracle predicted.
fn judge<T>(expected: Result<(), Refusal>, got: &Result<T, Failure>, ok_status: u16) -> Outcome {
    match (expected, got) {
        (Ok(()), Ok(_)) => Outcome::Ok,
        (Err(r), Ok(_)) => Outcome::Mismatch { expected: r.http_status(), got: ok_status },
        (_, Err(f @ Failure::Transport(_))) => Outcome::Error(f.kind()),
        (_, Err(f @ Failure::Status(s, _))) if s.is_server_error() || s.as_u16() == 429 => Outcome::Error(f.kind()),
        (Err(r), Err(Failure::Status(s, _))) if r.http_status() == s.as_u16() => Outcome::Refused,
        (e, Err(Failure::Status(s, _))) => {
            Outcome::Mismatch { expected: e.map_or_else(|r| r.http_status(), |()| ok_status), got: s.as_u16() }
        }
    }
}

/// Whether a failed write may still have been applied (no answer, or a server error).
fn unknown_outcome<T>(got: &Result<T, Failure>) -> bool {
    match got {
        Err(Failure::Transport(_)) => true,
        Err(Failure::Status(s, _)) => s.is_server_error(),
        Ok(_) => false,
    }
}

impl Run {
    fn user(&self, u: TraceUser) -> &Registered {
        // Phase 1 registers every user the trace names before any event runs.
        &self.users[&u]
    }

    async fn apply(self: &Arc<Self>, e: Event) -> Outcome {
        let me = self.user(e.user);
        match e.op {
            Op::Post { key } => self.post(me, key).await,
            Op::Delete { key } => {
                let Some(Some(id)) = self.posts.lock().get(&key).copied() else { return Outcome::Skipped };
                let expected = self.oracle.lock().check_delete(id, me.id);
                let got = self.client.delete(&me.token, id).await;
                if got.is_ok() {
                    let _ = self.oracle.lock().delete(id, me.id);
                }
                judge(expected, &got, 200)
            }
            Op::Follow { target } | Op::Unfollow { target } | Op::Block { target } | Op::Unblock { target } => {
                let them = self.user(target);
                let (relation, undo) = match e.op {
                    Op::Follow { .. } => ("follow", false),
                    Op::Unfollow { .. } => ("follow", true),
                    Op::Block { .. } => ("block", false),
                    _ => ("block", true),
                };
                let expected = {
                    let o = self.oracle.lock();
                    match (relation, undo) {
                        ("follow", false) => o.check_follow(me.id, them.id),
                        ("follow", true) => o.check_unfollow(me.id, them.id),
                        ("block", false) => o.check_block(me.id, them.id),
                        _ => o.check_unblock(me.id, them.id),
                    }
                };
                let got = self.client.relate(&me.token, relation, them.id, undo).await;
                if got.is_ok() {
                    let mut o = self.oracle.lock();
                    let _ = match (relation, undo) {
                        ("follow", false) => o.follow(me.id, them.id),
                        ("follow", true) => o.unfollow(me.id, them.id),
                        ("block", false) => o.block(me.id, them.id),
                        _ => o.unblock(me.id, them.id),
                    };
                } else if unknown_outcome(&got) {
                    self.uncertain.lock().extend([me.id, them.id]);
                }
                judge(expected, &got, 200)
            }
            Op::Reblog { key } | Op::Unreblog { key } | Op::Favourite { key } | Op::Unfavourite { key } => {
                let Some(Some(id)) = self.posts.lock().get(&key).copied() else { return Outcome::Skipped };
                let action = match e.op {
                    Op::Reblog { .. } => "reblog",
                    Op::Unreblog { .. } => "unreblog",
                    Op::Favourite { .. } => "favourite",
                    _ => "unfavourite",
                };
                let expected = self.oracle.lock().check_reblog(id);
                let got = self.client.status_action(&me.token, id, action).await;
                match &got {
                    Ok(answered) => {
                        let mut o = self.oracle.lock();
                        let _ = match e.op {
                            Op::Reblog { .. } => o.reblog(id, me.id, *answered),
                            Op::Unreblog { .. } => o.unreblog(id, me.id),
                            Op::Favourite { .. } => o.favourite(id, me.id, true),
                            _ => o.favourite(id, me.id, false),
                        };
                    }
                    // A reblog reaches the reblogger's followers like a post of its own.
                    Err(_) if unknown_outcome(&got) => drop(self.uncertain.lock().insert(me.id)),
                    Err(_) => {}
                }
                judge(expected, &got, 200)
            }
            Op::Mute { target } | Op::Unmute { target } => {
                let them = self.user(target);
                let undo = matches!(e.op, Op::Unmute { .. });
                let expected = self.oracle.lock().check_mute(me.id, them.id);
                let got = self.client.mute(&me.token, them.id, undo).await;
                if got.is_ok() {
                    let _ = self.oracle.lock().mute(me.id, them.id, !undo);
                } else if unknown_outcome(&got) {
                    self.uncertain.lock().insert(me.id);
                }
                judge(expected, &got, 200)
            }
            Op::Read => {
                self.readers.lock().insert(me.id);
                match self.client.home(&me.token, 20, "").await {
                    Ok((ids, _)) if ids.len() <= 20 && ids.windows(2).all(|w| w[0] > w[1]) => Outcome::Ok,
                    Ok(_) => Outcome::Error("malformed_page".into()),
                    Err(f) => Outcome::Error(f.kind()),
                }
            }
        }
    }

    async fn post(self: &Arc<Self>, me: &Registered, key: PostKey) -> Outcome {
        let idempotency_key = format!("{}-{key}", self.cfg.run_id);
        let text = format!("trace post {key}");
        // The idempotency key makes a retry after a lost answer safe.
        let mut got = self.client.post(&me.token, &text, &idempotency_key).await;
        for attempt in 1..3 {
            if !unknown_outcome(&got) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            got = self.client.post(&me.token, &text, &idempotency_key).await;
        }
        let id = got.as_ref().ok().copied();
        self.posts.lock().insert(key, id);
        let Some(id) = id else {
            if unknown_outcome(&got) {
                self.uncertain.lock().insert(me.id);
            }
            return judge(Ok(()), &got, 200);
        };
        let followers: Vec<UserId> = {
            let mut o = self.oracle.lock();
            o.post(id, me.id);
            o.followers_of(me.id).collect()
        };
        {
            let mut b = self.post_buckets.lock();
            let slot = &mut b[bucket(followers.len())];
            slot.0 += 1;
            slot.1 += followers.len() as u64;
        }
        self.maybe_probe(id, &followers);
        Outcome::Ok
    }

    /// Times the delivery of a sampled post to one follower who reads (so has a
    /// materialised timeline): polls that follower's timeline just above the post's id.
    fn maybe_probe(self: &Arc<Self>, id: PostId, followers: &[UserId]) {
        let chosen = {
            let mut rng = self.rng.lock();
            if self.cfg.lag_sample <= 0.0 || !rng.random_bool(self.cfg.lag_sample.min(1.0)) {
                return;
            }
            let readers = self.readers.lock();
            let active: Vec<UserId> = followers.iter().copied().filter(|f| readers.contains(f)).collect();
            active.choose(&mut *rng).copied()
        };
        let Some(follower) = chosen else {
            self.rec.lag_no_active_follower();
            return;
        };
        let Ok(permit) = self.probes.clone().try_acquire_owned() else { return };
        let run = self.clone();
        let accepted = Instant::now();
        self.probe_tasks.spawn(async move {
            let token = &run.user(run.by_id[&follower]).token;
            let query = format!("&min_id={}", id.0 - 1);
            // Polls back off so that slow deliveries cost few requests; the resolution
            // stays within a quarter of the lag measured.
            let mut pause = Duration::from_millis(5);
            loop {
                if run.cancel.is_cancelled() {
                    break;
                }
                if accepted.elapsed() > run.cfg.lag_timeout {
                    run.rec.lag_timeout();
                    break;
                }
                if let Ok((ids, _)) = run.client.home(token, 1, &query).await
                    && ids.first() == Some(&id)
                {
                    run.rec.lag_sample(accepted.elapsed());
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 5 / 4).min(Duration::from_millis(100));
            }
            drop(permit);
        });
    }
}

/// The stripe an event is ordered on (see the module docs); None for reads.
fn stripe(e: &Event) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match e.op {
        // Everything done to one post waits for its creation, and its delete for them.
        Op::Post { key }
        | Op::Delete { key }
        | Op::Reblog { key }
        | Op::Unreblog { key }
        | Op::Favourite { key }
        | Op::Unfavourite { key } => (0u8, key).hash(&mut h),
        Op::Follow { target }
        | Op::Unfollow { target }
        | Op::Block { target }
        | Op::Unblock { target }
        | Op::Mute { target }
        | Op::Unmute { target } => (1u8, e.user.min(target), e.user.max(target)).hash(&mut h),
        Op::Read => return None,
    }
    Some(h.finish())
}

const STRIPES: usize = 1 << 16;

/// Per-stripe turn-taking: each event waits for the previous event on its stripe.
struct Chains {
    last: Vec<Option<Shared<oneshot::Receiver<()>>>>,
}

impl Chains {
    fn new() -> Chains {
        Chains { last: vec![None; STRIPES] }
    }

    /// Returns what to wait for and the sender to drop when done.
    fn join(&mut self, stripe: Option<u64>) -> (Option<Shared<oneshot::Receiver<()>>>, Option<oneshot::Sender<()>>) {
        let Some(s) = stripe else { return (None, None) };
        let (tx, rx) = oneshot::channel();
        let prev = self.last[s as usize % STRIPES].replace(rx.shared());
        (prev, Some(tx))
    }
}

fn bar(show: bool, len: u64, what: &str) -> Progress {
    Progress::new(what, Some(len), show)
}

/// What the first pass over the trace learns.
struct Census {
    header: starling_trace::Header,
    users: Vec<TraceUser>,
    edges: u64,
    events: u64,
}

fn census(path: &std::path::Path) -> anyhow::Result<Census> {
    let mut users = HashSet::new();
    let (mut edges, mut events) = (0, 0);
    let reader = TraceReader::open(path)?;
    let header = reader.header().clone();
    for record in reader {
        match record? {
            Record::Edge { follower, followee } => {
                edges += 1;
                users.extend([follower, followee]);
            }
            Record::Event(e) => {
                events += 1;
                users.insert(e.user);
                if let Op::Follow { target }
                | Op::Unfollow { target }
                | Op::Block { target }
                | Op::Unblock { target }
                | Op::Mute { target }
                | Op::Unmute { target } = e.op
                {
                    users.insert(target);
                }
            }
        }
    }
    let mut users: Vec<TraceUser> = users.into_iter().collect();
    users.sort_unstable();
    Ok(Census { header, users, edges, events })
}

/// Replays the trace at `path` against the deployment `client` talks to.
pub async fn replay(path: &std::path::Path, client: Client, cfg: Config) -> anyhow::Result<Report> {
    let started_at = time::OffsetDateTime::now_utc();
    let census = census(path)?;
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing requests in flight, then checking and reporting");
                cancel.cancel();
            }
        });
    }
    let gate = Arc::new(Semaphore::new(cfg.concurrency));

    let rec = Arc::new(Recorder::new());
    let (users, register) = register_users(&client, &cfg, &census.users, &gate, &rec).await?;
    let by_id = users.iter().map(|(t, r)| (r.id, *t)).collect();
    let run = Arc::new(Run {
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed)),
        probes: Arc::new(Semaphore::new(cfg.lag_probes)),
        cfg,
        client,
        users,
        by_id,
        oracle: Mutex::new(Oracle::new()),
        posts: Mutex::default(),
        rec,
        series: Mutex::default(),
        uncertain: Mutex::default(),
        readers: Mutex::default(),
        probe_tasks: TaskTracker::new(),
        cancel: cancel.clone(),
        post_buckets: Mutex::new([(0, 0); BUCKETS]),
    });

    // Phase 2: the initial graph, as fast as the bound allows.
    let t = Instant::now();
    let pb = bar(run.cfg.progress, census.edges, "graph");
    let mut chains = Chains::new();
    let tasks = TaskTracker::new();
    let mut records = TraceReader::open(path)?.peekable();
    while let Some(Ok(Record::Edge { .. })) = records.peek() {
        let Some(Ok(Record::Edge { follower, followee })) = records.next() else { unreachable!() };
        if cancel.is_cancelled() {
            break;
        }
        let event = Event { at_ms: 0, user: follower, op: Op::Follow { target: followee } };
        spawn_event(&run, &tasks, &gate, &mut chains, event, None, "load_follow", &pb).await?;
    }
    tasks.close();
    tasks.wait().await;
    pb.finish();
    let load = Phase::new(census.edges, t.elapsed());
    // The timed phase measures the steady state, not a fan-out still digesting the graph:
    // every follow is an event the fan-out applies (and backfills) asynchronously.
    let t = Instant::now();
    let settled = wait_quiet(&run.client, run.cfg.quiet_timeout, &cancel, run.cfg.progress).await;
    let graph_settle = Phase::new(census.edges, t.elapsed());
    let before_each = run.client.metrics_each().await;
    let before = sum_metrics(&before_each);

    // Phase 3: timed events.
    let pb = bar(run.cfg.progress, run.cfg.max_events.map_or(census.events, |m| m.min(census.events)), "events");
    // The time series starts with the timed phase.
    run.rec.restart_clock();
    let sampler = tokio::spawn(sample_metrics(run.clone()));
    let t = Instant::now();
    let deadline = run.cfg.max_duration.map(|d| t + d);
    let tasks = TaskTracker::new();
    let mut first_at: Option<u64> = None;
    let mut played = 0u64;
    let mut stopped = None;
    for record in records {
        let Record::Event(e) = record? else {
            anyhow::bail!("an edge after the first event (the reader forbids this)")
        };
        if run.cfg.max_events.is_some_and(|m| played >= m) {
            stopped = Some("event limit reached");
            break;
        }
        let first = *first_at.get_or_insert(e.at_ms);
        let intended = match run.cfg.pace {
            Pace::Speedup(x) => Some(t + Duration::from_secs_f64((e.at_ms - first) as f64 / 1000.0 / x)),
            Pace::Rate(r) => Some(t + Duration::from_secs_f64(played as f64 / r)),
            Pace::Unpaced => None,
        };
        if let (Some(d), Some(i)) = (deadline, intended)
            && i > d
        {
            stopped = Some("time limit reached");
            break;
        }
        if let Some(i) = intended {
            tokio::select! {
                _ = tokio::time::sleep_until(i.into()) => {}
                _ = cancel.cancelled() => {}
            }
        }
        if cancel.is_cancelled() {
            stopped = Some("interrupted");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            stopped = Some("time limit reached");
            break;
        }
        spawn_event(&run, &tasks, &gate, &mut chains, e, intended, e.op.name(), &pb).await?;
        played += 1;
    }
    tasks.close();
    tasks.wait().await;
    pb.finish();
    let replay_phase = Phase::new(played, t.elapsed());
    run.probe_tasks.close();
    run.probe_tasks.wait().await;

    // Phase 4: quiet, then the oracle check.
    let quiet = wait_quiet(&run.client, run.cfg.quiet_timeout, &cancel, run.cfg.progress).await;
    sampler.abort();
    let after_each = run.client.metrics_each().await;
    let after = sum_metrics(&after_each);
    let check = check(&run).await;
    let series = run.series.lock().clone();
    Ok(Report::build(
        crate::report::Inputs {
            trace: path.to_owned(),
            header: census.header,
            started_at,
            pace: run.cfg.pace,
            concurrency: run.cfg.concurrency,
            seed: run.cfg.seed,
            run_id: run.cfg.run_id.clone(),
            lag_sample: run.cfg.lag_sample,
            stopped: stopped.map(str::to_owned),
            quiet,
            settled,
        },
        register,
        load,
        graph_settle,
        replay_phase,
        &run.rec,
        ServiceMetrics::delta(&before, &after),
        CacheSize::from_metrics(&after),
        ProcessCpu::between(&before_each, &after_each),
        series,
        run.post_buckets
            .lock()
            .iter()
            .enumerate()
            .map(|(i, (posts, followers))| {
                let mut b = FollowerBucket::new(i, i == BUCKETS - 1, *posts, *followers);
                b.add_service(&before, &after);
                b
            })
            .collect(),
        check,
    ))
}

/// Phase 1: registers every user the trace names, as `<run id>_<trace user>`, a thousand
/// to a request.
async fn register_users(
    client: &Client,
    cfg: &Config,
    trace_users: &[TraceUser],
    gate: &Arc<Semaphore>,
    rec: &Arc<Recorder>,
) -> anyhow::Result<(HashMap<TraceUser, Registered>, Phase)> {
    let t = Instant::now();
    let pb = bar(cfg.progress, trace_users.len() as u64, "users");
    let registered: Arc<Mutex<HashMap<TraceUser, Registered>>> = Arc::default();
    let tasks = TaskTracker::new();
    for chunk in trace_users.chunks(REGISTER_BATCH) {
        let permit = gate.clone().acquire_owned().await?;
        let (client, registered, pb, rec) = (client.clone(), registered.clone(), pb.clone(), rec.clone());
        let chunk = chunk.to_vec();
        let handles: Vec<String> = chunk.iter().map(|u| format!("{}_{u}", cfg.run_id)).collect();
        tasks.spawn(async move {
            let sent = Instant::now();
            let got = client.register_all(&handles).await;
            rec.record("register", &judge(Ok(()), &got, 200), sent, sent);
            if let Ok(created) = got {
                let mut r = registered.lock();
                for (u, (id, token)) in chunk.iter().zip(created) {
                    r.insert(*u, Registered { id, token });
                }
            }
            pb.inc(handles.len() as u64);
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
    pb.finish();
    let users = std::mem::take(&mut *registered.lock());
    if users.len() < trace_users.len() {
        let why = rec.ops().into_iter().find(|o| o.op == "register").map(|o| o.errors).unwrap_or_default();
        anyhow::bail!(
            "{} of {} users could not be registered ({why:?}); is the deployment up, is --admin-token its \
             admin.token, and is this run id new?",
            trace_users.len() - users.len(),
            trace_users.len()
        );
    }
    Ok((users, Phase::new(trace_users.len() as u64, t.elapsed())))
}

#[allow(clippy::too_many_arguments)]
async fn spawn_event(
    run: &Arc<Run>,
    tasks: &TaskTracker,
    gate: &Arc<Semaphore>,
    chains: &mut Chains,
    e: Event,
    intended: Option<Instant>,
    name: &'static str,
    pb: &Progress,
) -> anyhow::Result<()> {
    let permit = gate.clone().acquire_owned().await?;
    let intended = intended.unwrap_or_else(Instant::now);
    let (prev, done) = chains.join(stripe(&e));
    let (run, pb) = (run.clone(), pb.clone());
    tasks.spawn(async move {
        if let Some(prev) = prev {
            let _ = prev.await;
        }
        let sent = Instant::now();
        let outcome = run.apply(e).await;
        run.rec.record(name, &outcome, intended, sent);
        drop(done);
        drop(permit);
        pb.inc(1);
    });
    Ok(())
}

/// Samples the services' counters once a second, for the throughput-over-time plot.
async fn sample_metrics(run: Arc<Run>) {
    let t = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let m = run.client.metrics().await;
        run.series.lock().push(ServiceSample::from_metrics(t.elapsed().as_secs_f64(), &m));
    }
}

/// Waits until every published event has been applied by the fan-out and nothing is
/// lagging, stable for half a second. Returns false when the deployment exposes no such
/// counters or never went quiet within `timeout` (the check then may see lag, and the
/// report says so).
async fn wait_quiet(client: &Client, timeout: Duration, cancel: &CancellationToken, progress: bool) -> bool {
    let pb = Progress::new("settling", None, progress);
    let quiet = poll_quiet(client, timeout, cancel, &pb).await;
    pb.finish_and_clear();
    quiet
}

async fn poll_quiet(client: &Client, timeout: Duration, cancel: &CancellationToken, pb: &Progress) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut stable_since = Instant::now();
    loop {
        let m = client.metrics().await;
        let get = |k: &str| m.get(k).copied();
        let (Some(published), Some(applied)) = (get(names::EVENTS_PUBLISHED), get(names::FANOUT_EVENTS)) else {
            return false;
        };
        let applied = applied + get(names::FANOUT_DEAD_LETTERS).unwrap_or(0.0);
        let lag = get(names::FANOUT_LAG).unwrap_or(0.0);
        pb.set_message(format!("fan-out catching up: {applied:.0} of {published:.0} events applied"));
        let now = (published, applied);
        if Some(now) != last || applied < published || lag > 0.0 {
            last = Some(now);
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(500) {
            return true;
        }
        if Instant::now() > deadline || cancel.is_cancelled() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads whole home timelines and compares each with the oracle's.
async fn check(run: &Arc<Run>) -> Check {
    let mut users: Vec<(TraceUser, UserId)> = run.users.iter().map(|(t, r)| (*t, r.id)).collect();
    users.sort_unstable();
    let mut sampled = false;
    if let Some(n) = run.cfg.check_users
        && n < users.len()
    {
        let mut rng = ChaCha8Rng::seed_from_u64(run.cfg.seed ^ 0x5eed);
        users = users.choose_multiple(&mut rng, n).copied().collect();
        users.sort_unstable();
        sampled = true;
    }
    let uncertain = run.uncertain.lock().clone();
    let pb = bar(run.cfg.progress, users.len() as u64, "check");
    let results: Arc<Mutex<Check>> = Arc::new(Mutex::new(Check { sampled, ..Check::default() }));
    let gate = Arc::new(Semaphore::new(run.cfg.concurrency.min(16)));
    let tasks = TaskTracker::new();
    for (trace_user, id) in users {
        if uncertain.contains(&id) {
            results.lock().skipped_uncertain += 1;
            continue;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let (run, results, pb) = (run.clone(), results.clone(), pb.clone());
        tasks.spawn(async move {
            let served = run.client.home_all(&run.user(trace_user).token).await;
            let expected = run.oracle.lock().home(id);
            let mut r = results.lock();
            r.users_checked += 1;
            match served {
                Ok(served) => {
                    r.entries_checked += expected.len() as u64;
                    let d = compare(&expected, &served);
                    if !d.is_empty() {
                        r.divergent.push(Divergent::new(trace_user, id, expected.len(), served.len(), &d));
                    }
                }
                Err(f) => r.read_errors.push((trace_user, f.kind())),
            }
            pb.inc(1);
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
    pb.finish();
    let mut r = std::mem::take(&mut *results.lock());
    r.divergent.sort_by_key(|d| d.user);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use serde_json::Value;

    fn status(code: u16) -> Result<(), Failure> {
        Err(Failure::Status(StatusCode::from_u16(code).unwrap(), Value::Null))
    }

    #[test]
    fn answers_are_judged_against_the_prediction() {
        assert_eq!(judge(Ok(()), &Ok::<(), Failure>(()), 200), Outcome::Ok);
        assert_eq!(judge(Err(Refusal::SelfTarget), &status(403), 200), Outcome::Refused);
        // Refused, but not the way the contract says; or accepted when it should not be.
        assert_eq!(judge(Err(Refusal::Blocked), &status(409), 200), Outcome::Mismatch { expected: 403, got: 409 });
        assert_eq!(
            judge(Err(Refusal::NotAuthor), &Ok::<(), Failure>(()), 204),
            Outcome::Mismatch { expected: 403, got: 204 }
        );
        assert_eq!(judge(Ok(()), &status(404), 204), Outcome::Mismatch { expected: 204, got: 404 });
        // No usable answer is an error whatever was predicted.
        assert_eq!(judge(Err(Refusal::SelfTarget), &status(503), 200), Outcome::Error("server_503".into()));
        assert_eq!(judge(Ok(()), &status(429), 200), Outcome::Error("rate_limited_429".into()));
        let lost: Result<(), Failure> = Err(Failure::Transport("reset".into()));
        assert_eq!(judge(Ok(()), &lost, 200), Outcome::Error("transport".into()));
        assert!(unknown_outcome(&lost) && unknown_outcome(&status(500)) && !unknown_outcome(&status(409)));
    }

    #[test]
    fn events_on_the_same_pair_or_post_share_a_stripe() {
        let ev = |user, op| Event { at_ms: 0, user, op };
        let s = |e: Event| stripe(&e);
        assert_eq!(s(ev(1, Op::Follow { target: 2 })), s(ev(2, Op::Block { target: 1 })));
        assert_eq!(s(ev(1, Op::Post { key: 9 })), s(ev(1, Op::Delete { key: 9 })));
        assert_ne!(s(ev(1, Op::Follow { target: 2 })), s(ev(1, Op::Follow { target: 3 })));
        assert_eq!(s(ev(1, Op::Read)), None);
        assert_eq!([0, 1, 9, 10, 999, 1000].map(bucket), [0, 1, 1, 2, 3, 4]);
    }
}
