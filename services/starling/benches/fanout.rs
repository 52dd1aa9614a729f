//! Fan-out throughput: timeline inserts per second through the real worker.
//!
//! Run: `cargo bench -p starling --bench fanout` (add `-- quick` for a short run).
//!
//! # Standalone (no servers)
//!
//! For each follower count N, eight authors each followed by the same N readers (all
//! active, so every push lands) publish posts through the store's outbox into the embedded
//! event log; then the fan-out worker is started and timed until it has applied every
//! event. Inserts/s = N × posts / elapsed. The cost per delivered entry should stay flat as
//! N grows.
//!
//! # Distributed (`KAFKA_BROKERS` and `REDIS_URL` set)
//!
//! Events go through Kafka (4 partitions) and timelines live in Redis; the graph lookups
//! stay in-process (in a deployment they are one HTTP call per author and follower page,
//! not per insert). The workload differs from the standalone one on purpose: there every
//! reader follows all eight authors, so one reader receives most posts of a polled batch,
//! and a worker that coalesces a batch's pushes per timeline would be measured on an
//! unrealistically easy case. Here:
//!
//! - `READERS` (100k, at least N) active readers with empty, ready timelines;
//! - about 100k follow edges: `max(8, 100k / N)` authors, each followed by N readers (a
//!   window of a shuffled reader list, so two authors share few followers);
//! - posts round-robin over the authors, so consecutive posts come from different authors.
//!
//! Each case prints, measured in the same run:
//! - the raw Redis ceiling: `RPUSHX` of one 16-byte value to random keys shaped like the
//!   timelines (lists with a TTL), pipelined, 8 connections, nothing else; the best of a
//!   few pipeline depths at start, then right before and right after each case, so a
//!   change in machine load shows;
//! - the fan-out: the worker is started and joins its group (warm-up posts until it has
//!   applied one on every partition: "join s"); then the clock starts, the posts are
//!   appended to Kafka (large appends, ~10× faster than the fan-out, the worker consuming
//!   meanwhile) and the clock stops when the worker has applied the last one;
//! - ratio = fan-out / mean ceiling, by throughput and by Redis CPU per insert (`INFO
//!   cpu`, less sensitive to other load on the machine);
//! - entries per `RPUSHX` the worker sent (`INFO commandstats`): how much it coalesced
//!   pushes to the same timeline within a batch. That depends on the batch and on how
//!   many readers there are, so the table also gives the worker's `RPUSHX` commands per
//!   second over the ceiling: the ratio without that gain.
//!
//! Every case stops by itself: each is bounded by a count (inserts per case: 2M, or 500k
//! with `quick`) and a deadline (`FANOUT_DEADLINE_SECS`, default 120 s), after which the
//! partial rate is reported. Progress goes to stderr once a second.
//!
//! Knobs: `FANOUT_FOLLOWERS=10,75,1000,10000` (follower counts), `FANOUT_INSERTS`
//! (inserts per case), `FANOUT_COMMIT_MS` (the consumers' `KafkaOptions::commit_interval`),
//! `FANOUT_LINGER_MS` (the producer's `KafkaOptions::linger`, so the size of the record
//! batches the broker stores), `FANOUT_PARTITIONS` (default 4), `FANOUT_CONSUMERS`
//! (`FanoutSettings::consumers`), `FANOUT_SPLIT_ABOVE` (`FanoutSettings::split_above`:
//! followers above which a post is pushed in slices through `fanout.v1`; 0 never splits),
//! `FANOUT_RDKAFKA=key=value,...` (extra consumer settings, `KafkaOptions::consumer_config`),
//! `FANOUT_PARK_AFTER_MS` (`KafkaOptions::park_after`; 0 never parks), `FANOUT_BUS=local`
//! (announce to an in-process bus instead of Redis pub/sub: what announcing costs).

/// The allocator `starling` ships with (`src/main.rs`): a standalone figure is taken in
/// this process, so it must allocate as the served binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_worker::{Fanout, FanoutSettings, FanoutStats};
use starling_clients::local::{LocalGraph, LocalPosts};
use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
use starling_events::kafka::{KafkaLog, KafkaOptions};
use starling_events::{EventLog, Record, pb};
use starling_ids::{IdGenerator, UserId};
use starling_outbox::Publisher;
use starling_storage::embedded::{Durability, EmbeddedStore};
use starling_storage::{CreatePost, EdgeChange, GraphStore, PostRecord, PostStore, UserRecord};
use starling_timeline_cache::TimelineCache;
use starling_timeline_cache::bus::{Bus, LocalBus};
use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
use starling_timeline_cache::read_model::memory::{MemoryReadModel, MemoryReadModelOptions};
use starling_timeline_cache::redis::deadpool_redis::{self, redis};
use starling_timeline_cache::redis::{RedisBus, RedisCache, RedisCacheOptions};
use tokio_util::sync::CancellationToken;

/// Active readers in the distributed workload (at least the follower count).
const READERS: usize = 100_000;
/// Follow edges per distributed case.
const EDGES: usize = 100_000;
/// Posts by authors without followers sent first, so the worker has joined its group
/// (and owns every partition) before the clock starts.
const WARM_UP_POSTS: usize = 16;
/// Connections (and tasks) of the raw ceiling.
const CEILING_TASKS: usize = 8;
/// Pipeline depths tried for the ceiling at start; the best one is used after.
const CEILING_DEPTHS: [usize; 3] = [75, 256, 1024];

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // With the OTEL_* variables asking for export, the worker's spans are made and sent as
    // in a deployment (what tracing costs, BENCHMARKS.md); otherwise nothing is installed.
    let config = starling_telemetry::TelemetryConfig::from_env(|name| std::env::var(name).ok()).expect("OTEL_*");
    let telemetry = (config.traces != starling_telemetry::Traces::Off)
        .then(|| starling_telemetry::init_with("fanout-bench", &config).expect("installing telemetry"));
    let env_num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let total_inserts = env_num("FANOUT_INSERTS").unwrap_or(if quick { 500_000 } else { 2_000_000 }) as usize;
    let deadline = Duration::from_secs(env_num("FANOUT_DEADLINE_SECS").unwrap_or(120));
    let followers: Vec<usize> = std::env::var("FANOUT_FOLLOWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 75, 1_000, 10_000]);
    match (std::env::var("KAFKA_BROKERS"), std::env::var("REDIS_URL")) {
        (Ok(brokers), Ok(redis_url)) => {
            distributed(&brokers, &redis_url, &followers, total_inserts, quick, deadline).await;
        }
        _ => {
            println!("| followers per author | posts | timeline inserts | seconds | inserts/s | ns per insert |");
            println!("|---:|---:|---:|---:|---:|---:|");
            for &followers in &followers {
                standalone(followers, (total_inserts / followers).max(1)).await;
            }
        }
    }
    if let Some(telemetry) = telemetry {
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn worker(
    store: &EmbeddedStore,
    cache: Arc<dyn TimelineCache>,
    bus: Arc<dyn Bus>,
    stats: Arc<FanoutStats>,
) -> Arc<Fanout> {
    let mut settings = FanoutSettings::default();
    if let Some(n) = env_usize("FANOUT_CONSUMERS") {
        settings.consumers = n;
    }
    if let Some(n) = env_usize("FANOUT_SPLIT_ABOVE") {
        settings.split_above = n;
    }
    Arc::new(Fanout {
        graph: Arc::new(LocalGraph(store.graph())),
        posts: Arc::new(LocalPosts(store.posts())),
        cache,
        // Pushes of ordinary authors never touch the read model; in memory here in both modes.
        model: Arc::new(MemoryReadModel::new(MemoryReadModelOptions::default())),
        max_entries: 800,
        settings,
        stats,
        bus,
    })
}

fn post_event(post: u64, author: UserId) -> pb::PostEvent {
    pb::PostEvent {
        event_id: String::new(),
        occurred_at_ms: 0,
        kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
            post_id: post,
            author_id: author.get(),
            reply_to: None,
            reblog_of: None,
        })),
    }
}

async fn standalone(followers: usize, posts_n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Buffer).unwrap();
    let log: Arc<dyn EventLog> =
        EmbeddedLog::open(&dir.path().join("log"), EmbeddedLogOptions { partitions: 4, sync: false }).unwrap();
    let cache: Arc<dyn TimelineCache> = Arc::new(MemoryCache::new(MemoryCacheOptions {
        max_entries: 800,
        active_for: Duration::from_secs(3600),
        ..MemoryCacheOptions::default()
    }));
    let ids = IdGenerator::new(1).unwrap();
    let (posts, graph) = (store.posts(), store.graph());

    // Several authors share the posts so the log's partitions all have work.
    let authors: Vec<UserId> = (0..8).map(|_| ids.next_user()).collect();
    for (i, a) in authors.iter().enumerate() {
        graph.create_user(&UserRecord { id: *a, handle: format!("author{i}") }).await.unwrap();
    }
    for _ in 0..followers {
        let f = ids.next_user();
        for a in &authors {
            assert!(matches!(graph.follow(f, *a, Vec::new()).await.unwrap(), EdgeChange::Changed { .. }));
        }
        // Active reader: a ready, complete (empty) timeline.
        assert!(cache.begin_rebuild(f).await.unwrap());
        cache.finish_rebuild(f, &[], true).await.unwrap();
    }
    let publisher = Publisher::new(posts.clone(), log.clone());
    for n in 0..posts_n {
        let author = authors[n % authors.len()];
        let post = PostRecord {
            id: ids.next_post(),
            author,
            author_handle: "a".into(),
            text: "x".into(),
            reply_to: None,
            reblog_of: None,
        };
        let records = vec![Record::post(author.get(), &post_event(post.id.get(), author))];
        let CreatePost::Created { outbox } = posts.create_post(&post, None, records.clone()).await.unwrap() else {
            unreachable!()
        };
        publisher.publish(records, &outbox).await.unwrap();
    }

    let stats = Arc::new(FanoutStats::default());
    let stop = CancellationToken::new();
    let start = Instant::now();
    let bus = Arc::new(LocalBus::new());
    let task = tokio::spawn(worker(&store, cache.clone(), bus, stats.clone()).run(log, stop.clone()));
    while !stats.applied_all(posts_n as u64) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    // Authors have no materialised timeline here, so every insert is a follower's.
    let delivered = (followers * posts_n) as u64;
    assert_eq!(stats.inserts.get(), delivered, "every active follower must have received every post");
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.0} |",
        followers,
        posts_n,
        delivered,
        elapsed,
        delivered as f64 / elapsed,
        elapsed * 1e9 / delivered as f64
    );
}

/// Xorshift: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What Redis reports about itself, for per-phase differences.
#[derive(Clone, Copy, Default)]
struct ServerStats {
    cpu: f64,
    rpushx_calls: u64,
}

async fn server_stats(conn: &redis::aio::MultiplexedConnection) -> ServerStats {
    let mut conn = conn.clone();
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await.unwrap();
    let commands: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let cpu = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    // `cmdstat_rpushx:calls=12,usec=...`
    let rpushx_calls = commands
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_rpushx:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0);
    ServerStats { cpu, rpushx_calls }
}

struct Ceiling {
    rate: f64,
    /// Redis CPU per push, µs.
    cpu_us: f64,
}

/// Pipelined single-value `RPUSHX` to random keys of `keys`, from `CEILING_TASKS` tasks.
async fn ceiling(
    conns: &[redis::aio::MultiplexedConnection],
    keys: &Arc<Vec<String>>,
    depth: usize,
    phase: Duration,
) -> Ceiling {
    let before = server_stats(&conns[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CEILING_TASKS)
        .map(|t| {
            let (mut conn, keys, stop) = (conns[t].clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let value = [0x5au8; 16];
                let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (t as u64 + 1));
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    for _ in 0..depth {
                        pipe.cmd("RPUSHX").arg(&keys[rng.next(keys.len() as u64) as usize]).arg(&value[..]);
                    }
                    let lens: Vec<u64> = pipe.query_async(&mut conn).await.unwrap();
                    assert!(lens.iter().all(|&l| l > 0), "every ceiling list exists");
                    ops += depth as u64;
                }
                ops
            })
        })
        .collect();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let after = server_stats(&conns[0]).await;
    Ceiling { rate: ops as f64 / secs, cpu_us: (after.cpu - before.cpu) * 1e6 / ops as f64 }
}

async fn distributed(
    brokers: &str,
    redis_url: &str,
    cases: &[usize],
    total_inserts: usize,
    quick: bool,
    deadline: Duration,
) {
    let phase = Duration::from_secs(if quick { 1 } else { 2 });
    let run_id = format!("bench{}", std::process::id());
    // A loaded 2-core machine can stall a reply past redis-rs's default timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let manager = deadpool_redis::Manager::new_with_config(redis_url, config).unwrap();
    let pool = deadpool_redis::Pool::builder(manager).max_size(CEILING_TASKS).build().unwrap();
    let mut conns = Vec::new();
    for _ in 0..CEILING_TASKS {
        conns.push(deadpool_redis::Connection::take(pool.get().await.unwrap()));
    }
    let readers_n = cases.iter().copied().max().unwrap_or(0).max(READERS);
    // Ceiling lists shaped like the timelines: a 16-byte header, then entries; with a TTL.
    let raw_keys: Arc<Vec<String>> = Arc::new((0..readers_n).map(|i| format!("{run_id}:raw{{{i}}}")).collect());
    for chunk in raw_keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("RPUSH").arg(k).arg(&[0u8; 5][..]).ignore();
            pipe.cmd("PEXPIRE").arg(k).arg(3_600_000u64).ignore();
        }
        let () = pipe.query_async(&mut conns[0].clone()).await.unwrap();
    }
    eprintln!("ceiling: trying pipeline depths {CEILING_DEPTHS:?} ({} s each)", phase.as_secs());
    let mut depth = CEILING_DEPTHS[0];
    let mut best = 0.0;
    for d in CEILING_DEPTHS {
        let c = ceiling(&conns, &raw_keys, d, phase).await;
        eprintln!("ceiling: RPUSHX {d} deep: {:.0}/s ({:.2} µs Redis CPU each)", c.rate, c.cpu_us);
        if c.rate > best {
            (best, depth) = (c.rate, d);
        }
    }
    println!("ceiling: `RPUSHX` of one value, pipelined {depth} deep (the best of {CEILING_DEPTHS:?}), 8 connections");
    println!();
    println!(
        "| followers per author | authors | posts | timeline inserts | join s | seconds | inserts/s | ceiling before / after | ratio (throughput) | ratio (Redis CPU) | entries per RPUSHX | RPUSHX/s ÷ ceiling |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &followers in cases {
        let before = ceiling(&conns, &raw_keys, depth, phase).await;
        let row =
            distributed_case(brokers, redis_url, &run_id, &conns[0], followers, readers_n, total_inserts, deadline)
                .await;
        let after = ceiling(&conns, &raw_keys, depth, phase).await;
        let mean = (before.rate + after.rate) / 2.0;
        let mean_cpu = (before.cpu_us + after.cpu_us) / 2.0;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.2}{} | {:.0} | {:.0} / {:.0} | {:.2} | {:.2} | {:.1} | {:.2} |",
            followers,
            row.authors,
            row.posts,
            row.inserts,
            row.join_secs,
            row.secs,
            if row.complete { "" } else { " (deadline)" },
            row.rate(),
            before.rate,
            after.rate,
            row.rate() / mean,
            mean_cpu / row.cpu_us(),
            row.inserts as f64 / row.rpushx_calls.max(1) as f64,
            row.rpushx_calls as f64 / row.secs / mean,
        );
    }
    let mut conn = conns[0].clone();
    for chunk in raw_keys.chunks(1000) {
        let _: i64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await.unwrap();
    }
}

struct Row {
    authors: usize,
    posts: usize,
    inserts: u64,
    join_secs: f64,
    secs: f64,
    complete: bool,
    redis_cpu: f64,
    rpushx_calls: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.inserts as f64 / self.secs
    }

    fn cpu_us(&self) -> f64 {
        self.redis_cpu * 1e6 / self.inserts.max(1) as f64
    }
}

#[allow(clippy::too_many_arguments)]
async fn distributed_case(
    brokers: &str,
    redis_url: &str,
    run_id: &str,
    conn: &redis::aio::MultiplexedConnection,
    followers: usize,
    readers_n: usize,
    total_inserts: usize,
    deadline: Duration,
) -> Row {
    let setup = Instant::now();
    let case_id = format!("{run_id}x{followers}");
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Buffer).unwrap();
    let partitions = env_usize("FANOUT_PARTITIONS").unwrap_or(4) as i32;
    let mut options = KafkaOptions {
        brokers: brokers.to_owned(),
        partitions,
        topic_prefix: format!("{case_id}."),
        ..KafkaOptions::default()
    };
    if let Some(ms) = std::env::var("FANOUT_COMMIT_MS").ok().and_then(|v| v.parse().ok()) {
        options.commit_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = std::env::var("FANOUT_PARK_AFTER_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        options.park_after = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
    }
    if let Ok(extra) = std::env::var("FANOUT_RDKAFKA") {
        options.consumer_config = extra
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
    }
    if let Some(ms) = std::env::var("FANOUT_LINGER_MS").ok().and_then(|v| v.parse().ok()) {
        options.linger = Duration::from_millis(ms);
    }
    let log: Arc<dyn EventLog> = KafkaLog::connect(options).await.unwrap();
    let cache: Arc<dyn TimelineCache> = Arc::new(
        RedisCache::connect(
            redis_url,
            RedisCacheOptions {
                max_entries: 800,
                active_for: Duration::from_secs(3600),
                key_prefix: format!("{case_id}:"),
                ..RedisCacheOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let ids = IdGenerator::new(1).unwrap();
    let graph = store.graph();

    // Readers, each with a ready, complete (empty) timeline, in a shuffled order whose
    // windows are the authors' follower sets.
    let mut readers: Vec<UserId> = (0..readers_n).map(|_| ids.next_user()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ followers as u64);
    for i in (1..readers.len()).rev() {
        readers.swap(i, rng.next(i as u64 + 1) as usize);
    }
    for chunk in readers.chunks(256) {
        futures::future::join_all(chunk.iter().map(|&r| {
            let cache = cache.clone();
            async move {
                assert!(cache.begin_rebuild(r).await.unwrap());
                cache.finish_rebuild(r, &[], true).await.unwrap();
            }
        }))
        .await;
    }
    let authors_n = (EDGES / followers).max(8);
    let authors: Vec<UserId> = (0..authors_n).map(|_| ids.next_user()).collect();
    for (i, &a) in authors.iter().enumerate() {
        graph.create_user(&UserRecord { id: a, handle: format!("author{i}") }).await.unwrap();
        let start = rng.next(readers.len() as u64) as usize;
        for j in 0..followers {
            let f = readers[(start + j) % readers.len()];
            assert!(matches!(graph.follow(f, a, Vec::new()).await.unwrap(), EdgeChange::Changed { .. }));
        }
    }
    eprintln!(
        "{followers} followers: {readers_n} timelines, {authors_n} authors, {} follows set up in {:.1} s",
        authors_n * followers,
        setup.elapsed().as_secs_f64()
    );

    // Start the worker and let it join the group first: warm-up posts by authors without
    // followers, enough to land on every partition, until all are applied.
    let stats = Arc::new(FanoutStats::default());
    let stop = CancellationToken::new();
    let launched = Instant::now();
    // Announcing each post costs a PUBLISH in production: so here too, unless
    // `FANOUT_BUS=local` (to measure what announcing costs).
    let bus: Arc<dyn Bus> = match std::env::var("FANOUT_BUS").as_deref() {
        Ok("local") => Arc::new(LocalBus::new()),
        _ => RedisBus::new(redis_url, &format!("{case_id}:")).unwrap(),
    };
    let task = tokio::spawn(worker(&store, cache.clone(), bus, stats.clone()).run(log.clone(), stop.clone()));
    let warm_up: Vec<Record> = (0..WARM_UP_POSTS)
        .map(|_| {
            let author = ids.next_user();
            Record::post(author.get(), &post_event(ids.next_post().get(), author))
        })
        .collect();
    log.append(warm_up).await.unwrap();
    while !stats.applied_all(WARM_UP_POSTS as u64) && launched.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let join_secs = launched.elapsed().as_secs_f64();
    let warm = stats.service_events();

    // Timed: appending the posts (large appends, concurrent with the worker consuming
    // them) until the worker has applied the last one. Producing is ~10× faster than the
    // fan-out here, so this is the fan-out's rate, counted conservatively.
    let posts_n = (total_inserts / followers).max(1);
    let records: Vec<Record> = (0..posts_n)
        .map(|n| {
            let author = authors[n % authors.len()];
            Record::post(author.get(), &post_event(ids.next_post().get(), author))
        })
        .collect();
    let before = server_stats(conn).await;
    let first = Instant::now();
    for chunk in records.chunks(5_000) {
        log.append(chunk.to_vec()).await.unwrap();
    }
    let appended = first.elapsed().as_secs_f64();
    let target = warm + posts_n as u64;
    let mut progress = Instant::now();
    let mut complete = true;
    while !stats.applied_all(target) {
        if launched.elapsed() >= deadline {
            complete = false;
            break;
        }
        if progress.elapsed() >= Duration::from_secs(1) {
            progress = Instant::now();
            let secs = first.elapsed().as_secs_f64();
            eprintln!(
                "  {followers} followers: {}/{posts_n} events, {} inserts, {:.0} inserts/s so far",
                stats.service_events().saturating_sub(warm),
                stats.inserts.get(),
                stats.inserts.get() as f64 / secs
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = first.elapsed().as_secs_f64();
    eprintln!("{followers} followers: {posts_n} events appended in {appended:.2} s, applied in {secs:.2} s");
    let inserts = stats.inserts.get();
    let after = server_stats(conn).await;
    if complete {
        stop.cancel();
        // Drain is bounded too: a worker that cannot commit would otherwise hold the run.
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(r) => r.unwrap().unwrap(),
            Err(_) => eprintln!("  the worker did not drain within 30 s; abandoned"),
        }
        // Authors have no materialised timeline here, so every insert is a follower's.
        assert_eq!(inserts, (followers * posts_n) as u64, "every active follower must have received every post");
    } else {
        task.abort();
        eprintln!("  deadline of {} s reached; reporting the partial rate", deadline.as_secs());
    }
    // Leave a shared Redis as we found it.
    cache.clear().await.unwrap();
    Row {
        authors: authors_n,
        posts: posts_n,
        inserts,
        join_secs,
        secs,
        complete,
        redis_cpu: after.cpu - before.cpu,
        rpushx_calls: after.rpushx_calls - before.rpushx_calls,
    }
}
