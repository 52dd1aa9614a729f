//! Tests of the Redis caches against a real server: `STARLING_TEST_SERVERS=1 REDIS_URL=redis://127.0.0.1:6390 cargo test -p starling-timeline-cache`.
//! Without `STARLING_TEST_SERVERS` set for the build they are compiled as ignored. Every test uses its own key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_redis::redis::aio::MultiplexedConnection;

use super::*;
use crate::conformance;
use crate::memory::{MemoryCache, MemoryCacheOptions};

/// Where a test runs: one server, or a cluster through its node urls.
#[derive(Clone, Debug)]
enum Target {
    Node(String),
    Cluster(Vec<String>),
}

/// The servers `scripts/test.sh` started: the tests that need them are compiled as ignored
/// unless `STARLING_TEST_SERVERS` was set for the build (`build.rs`).
fn server_env(name: &str, what: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs {what} (scripts/test.sh starts it and sets {name})")
    })
}

fn redis_url() -> Target {
    Target::Node(server_env("REDIS_URL", "a Redis server"))
}

fn cluster_urls() -> Target {
    let urls = server_env("REDIS_CLUSTER_URLS", "a Redis Cluster (its nodes' urls, comma-separated)");
    Target::Cluster(urls.split(',').map(|n| n.trim().to_owned()).collect())
}

async fn connect(target: &Target, options: RedisCacheOptions) -> CacheResult<RedisCache> {
    match target {
        Target::Node(url) => RedisCache::connect(url, options).await,
        Target::Cluster(urls) => RedisCache::connect_cluster(urls, options).await,
    }
}

/// A fresh random number per call, different across processes and runs.
fn random() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64);
    for _ in 0..3 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    x
}

async fn cache(target: &Target, test: &str, options: RedisCacheOptions) -> RedisCache {
    let key_prefix = format!("test:{test}:{:x}:", random());
    connect(target, RedisCacheOptions { key_prefix, ..options }).await.expect("connect")
}

fn opts(max_entries: usize, slack: usize) -> RedisCacheOptions {
    RedisCacheOptions { max_entries, slack, ..Default::default() }
}

fn e(post: u64, author: u64) -> Entry {
    Entry { post: PostId(post), author: UserId(author) }
}

fn newest(limit: usize) -> Range {
    Range { before: None, after: None, limit, oldest_first: false }
}

async fn raw(c: &RedisCache, args: &[&str]) -> redis::Value {
    let mut lease = c.conns.get().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut lease.conn).await.unwrap()
}

async fn int(c: &RedisCache, args: &[&str]) -> i64 {
    match raw(c, args).await {
        redis::Value::Int(n) => n,
        other => panic!("{args:?} gave {other:?}"),
    }
}

async fn conformance_suite(url: Target) {
    // A small slack, so the suite also runs through insert-time normalisation.
    let c = cache(&url, "conformance", opts(40, 3)).await;
    conformance::all(&c, 1_000, 40).await;
    c.clear().await.unwrap();
}

async fn conformance_suite_default_cap(url: Target) {
    let c = cache(&url, "conformance800", RedisCacheOptions::default()).await;
    conformance::all(&c, 5_000_000, 800).await;
    c.clear().await.unwrap();
}

async fn conformance_clear_and_len(url: Target) {
    let c = cache(&url, "clear", opts(10, 2)).await;
    let neighbour = cache(&url, "clear-neighbour", opts(10, 2)).await;
    assert!(neighbour.begin_rebuild(UserId(7)).await.unwrap());
    conformance::clear_and_len(&c, 7).await;
    assert_eq!(neighbour.len().await.unwrap(), 1, "another prefix's timelines survive clear");
    neighbour.clear().await.unwrap();
}

async fn idle_timelines_expire(url: Target) {
    let c = cache(&url, "idle", RedisCacheOptions { active_for: Duration::from_secs(1), ..opts(10, 2) }).await;
    let (a, b) = (UserId(1), UserId(2));
    for o in [a, b] {
        assert!(c.begin_rebuild(o).await.unwrap());
        c.finish_rebuild(o, &[e(10, 9)], true).await.unwrap();
    }
    let ttl = |o: UserId| {
        let key = c.key(o);
        let c = &c;
        async move { int(c, &["PTTL", &key]).await }
    };
    assert!((1..=1_000).contains(&ttl(a).await));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.read(a, newest(10)).await.unwrap().is_some());
    assert_eq!(c.insert(&[b], e(11, 9)).await.unwrap(), 1);
    assert!(ttl(a).await > ttl(b).await + 200, "the read refreshed a's TTL; the insert left b's alone");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(c.len().await.unwrap(), 0, "both idle for longer than active_for");
    assert_eq!(c.insert(&[a, b], e(12, 9)).await.unwrap(), 0, "inserts skip expired timelines");
    assert!(c.read(a, newest(10)).await.unwrap().is_none());
    assert!(c.begin_rebuild(a).await.unwrap(), "a rebuild starts afresh");
    c.finish_rebuild(a, &[], true).await.unwrap();
    assert_eq!(c.read(a, newest(10)).await.unwrap().unwrap().entries, Vec::new());
    c.clear().await.unwrap();
}

/// The newest page of a timeline with nothing to fold in is read without the script, and
/// answers what the script answers; pushes, a run-down TTL or a rebuild send it back.
async fn newest_pages_skip_the_script(url: Target) {
    let c = cache(&url, "newest", opts(10, 2)).await;
    let o = UserId(4);
    let eight: Vec<Entry> = (1..=8).map(|i| e(i * 10, 9)).collect();
    assert_eq!(c.read_newest(o, 3).await.unwrap(), Some(None), "no timeline");
    assert!(c.begin_rebuild(o).await.unwrap());
    assert_eq!(c.read_newest(o, 3).await.unwrap(), Some(None), "being rebuilt");
    c.finish_rebuild(o, &eight, false).await.unwrap();
    for limit in [1, 3, 8, 9, 20] {
        let fast = c.read_newest(o, limit).await.unwrap().expect("answered without the script").expect("a timeline");
        let want: Vec<Entry> = eight.iter().rev().take(limit).copied().collect();
        assert_eq!(fast.entries, want, "limit {limit}");
        assert_eq!(fast.floor, Some(PostId(10)), "an incomplete rebuild's floor");
    }
    assert_eq!(c.insert(&[o], e(90, 9)).await.unwrap(), 1);
    assert_eq!(c.read_newest(o, 3).await.unwrap(), None, "a push to fold in: the script's");
    let scripted = c.read(o, newest(3)).await.unwrap().unwrap();
    let fast = c.read_newest(o, 3).await.unwrap().expect("folded in by that read").unwrap();
    assert_eq!(fast, scripted);
    assert_eq!(fast.entries.first(), Some(&e(90, 9)));
    int(&c, &["PEXPIRE", &c.key(o), "5000"]).await;
    assert_eq!(c.read_newest(o, 3).await.unwrap(), None, "a TTL to refresh: the script's");
    assert_eq!(c.read(o, newest(3)).await.unwrap().unwrap(), scripted);
    assert!(int(&c, &["PTTL", &c.key(o)]).await > 5_000, "refreshed");
    c.clear().await.unwrap();
}

/// On one node only: a cluster's reads always take the script.
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn newest_pages_skip_the_script_on_a_node() {
    newest_pages_skip_the_script(redis_url()).await
}

async fn rebuild_marker_expires(url: Target) {
    let c = cache(&url, "rebuild", RedisCacheOptions { rebuild_timeout: Duration::from_secs(1), ..opts(10, 2) }).await;
    let o = UserId(3);
    assert!(c.begin_rebuild(o).await.unwrap());
    assert_eq!(c.insert(&[o], e(50, 1)).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!c.begin_rebuild(o).await.unwrap(), "still within the rebuild timeout");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(c.begin_rebuild(o).await.unwrap(), "the stalled rebuild expired");
    // The first rebuilder wakes up late: its timeline is gone, so it changes nothing.
    c.finish_rebuild(o, &[e(40, 1)], false).await.unwrap();
    let s = c.read(o, newest(10)).await.unwrap().unwrap();
    assert_eq!((s.entries, s.floor), (vec![e(40, 1)], Some(PostId(40))));
    // A finished timeline lives by `active_for`, not by the rebuild timeout.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(c.read(o, newest(10)).await.unwrap().is_some());
    c.clear().await.unwrap();
}

/// The memory target: ≤ 24 bytes per cached entry, by `MEMORY USAGE` of a full
/// 800-entry timeline (key, header and allocator overhead included).
async fn bytes_per_entry_is_compact(url: Target) {
    let options = RedisCacheOptions::default();
    let (max, slack) = (options.max_entries, options.slack);
    let c = cache(&url, "memory", options).await;
    let o = UserId(1_234_567_890_123);
    assert!(c.begin_rebuild(o).await.unwrap());
    let base = 0x0123_4567_89AB_C000u64;
    let pulled: Vec<Entry> = (0..max as u64).map(|i| e(base + 7 * i, 0x0100_0000_0000_0000 + i % 50)).collect();
    c.finish_rebuild(o, &pulled, true).await.unwrap();
    let key = c.key(o);
    let full = int(&c, &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await as f64 / max as f64;
    // Just below the normalisation threshold: `slack` raw pushes on top of a full timeline.
    let extra: Vec<UserId> = vec![o];
    for i in 0..slack as u64 {
        c.insert(&extra, e(base + 7 * max as u64 + i, 1)).await.unwrap();
    }
    assert_eq!(int(&c, &["LLEN", &key]).await as usize, 1 + max + slack);
    let worst = int(&c, &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await as f64 / max as f64;
    println!(
        "bytes per entry: {full:.2} for a full {max}-entry timeline; \
         {worst:.2} per visible entry with {slack} raw pushes pending"
    );
    assert!(full <= 24.0, "{full} bytes per entry");
    assert!(worst <= 24.0, "{worst} bytes per visible entry");
    c.clear().await.unwrap();
}

/// Random operations on a Redis and a memory cache must give identical results: the
/// lazy normalisation must be indistinguishable from applying each push at once.
async fn behaves_like_the_memory_cache(url: Target) {
    // More with e.g. `MODEL_SEEDS=200`.
    let seeds: u64 = std::env::var("MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    for seed in 1..=seeds {
        let (max, slack) = (6 + seed as usize % 3, seed as usize % 4);
        let r = cache(&url, "model", opts(max, slack)).await;
        let m = MemoryCache::new(MemoryCacheOptions { max_entries: max, ..Default::default() });
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        const BASE: u64 = 0x0123_4567_89AB_C000;
        for step in 0..1_500 {
            let owner = UserId(1 + next(4));
            let post = |n: u64| e(BASE + n, 100 + n % 3);
            let ctx = format!("seed {seed} step {step}");
            match next(100) {
                0..=34 => {
                    let owners: Vec<UserId> = (0..next(4)).map(|_| UserId(1 + next(4))).collect();
                    // Mostly newer posts, sometimes an old one or a redelivery.
                    let p = post(if next(4) == 0 { next(40) } else { 20 + step / 4 + next(6) });
                    assert_eq!(r.insert(&owners, p).await.unwrap(), m.insert_now(&owners, p), "{ctx}");
                }
                35..=44 => {
                    let entries: Vec<Entry> = (0..next(5)).map(|_| post(next(40 + step / 4))).collect();
                    r.insert_many(owner, &entries).await.unwrap();
                    m.insert_many_now(owner, &entries);
                }
                45..=49 => {
                    let owners: Vec<UserId> = (0..next(3)).map(|_| UserId(1 + next(4))).collect();
                    let p = PostId(BASE + next(40 + step / 4));
                    r.remove_post(&owners, p).await.unwrap();
                    m.remove_post_now(&owners, p);
                }
                50..=51 => {
                    let a = UserId(100 + next(3));
                    r.remove_author(owner, a).await.unwrap();
                    m.remove_author_now(owner, a);
                }
                52..=79 => {
                    let bound = |v: u64| (v < 60).then(|| PostId(BASE + v));
                    let range = Range {
                        before: bound(next(120)),
                        after: bound(next(120)),
                        limit: next(12) as usize,
                        oldest_first: next(2) == 0,
                    };
                    assert_eq!(r.read(owner, range).await.unwrap(), m.read_now(owner, range), "{ctx} {range:?}");
                }
                80..=89 => {
                    assert_eq!(r.begin_rebuild(owner).await.unwrap(), m.begin_rebuild_now(owner), "{ctx}");
                }
                90..=97 => {
                    let pulled: Vec<Entry> = (0..next(8)).map(|_| post(next(30 + step / 4))).collect();
                    let complete = next(2) == 0;
                    r.finish_rebuild(owner, &pulled, complete).await.unwrap();
                    m.finish_rebuild_now(owner, &pulled, complete);
                }
                _ => {
                    r.evict(owner).await.unwrap();
                    m.evict_now(owner);
                }
            }
        }
        for o in 1..=4 {
            let o = UserId(o);
            assert_eq!(r.read(o, newest(100)).await.unwrap(), m.read_now(o, newest(100)), "seed {seed}");
        }
        assert_eq!(r.len().await.unwrap(), m.len_now());
        r.clear().await.unwrap();
    }
}

async fn concurrent_inserts_stay_sorted_and_unique(url: Target) {
    let c = Arc::new(cache(&url, "concurrent", opts(10_000, 16)).await);
    let owners: Vec<UserId> = (1..=50).map(UserId).collect();
    for &o in &owners {
        assert!(c.begin_rebuild(o).await.unwrap());
        c.finish_rebuild(o, &[], true).await.unwrap();
    }
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (c, owners) = (c.clone(), owners.clone());
        tasks.push(tokio::spawn(async move {
            let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for i in 0..300u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let post = (i * 7919 + task * 13) % 300 + 1;
                let who = &owners[(x % 40) as usize..][..10];
                c.insert(who, e(post, post % 17)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for &o in &owners {
        let s = c.read(o, newest(100_000)).await.unwrap().unwrap();
        assert!(s.entries.windows(2).all(|w| w[0].post > w[1].post), "newest first, no duplicates");
        assert!(s.entries.iter().all(|x| x.author.0 == x.post.0 % 17));
    }
    c.clear().await.unwrap();
}

/// Raw pushes are bounded by `slack`: `insert` normalises a timeline that collected more.
async fn insert_bounds_pending_pushes(url: Target) {
    let c = cache(&url, "slack", opts(5, 3)).await;
    let o = UserId(9);
    assert!(c.begin_rebuild(o).await.unwrap());
    c.finish_rebuild(o, &[], true).await.unwrap();
    let key = c.key(o);
    for p in (1..=40u64).rev() {
        c.insert(&[o], e(p, 1)).await.unwrap();
        assert!(int(&c, &["LLEN", &key]).await <= 1 + 5 + 3, "post {p}");
    }
    let s = c.read(o, newest(10)).await.unwrap().unwrap();
    assert_eq!(s.entries.iter().map(|x| x.post.0).collect::<Vec<_>>(), vec![40, 39, 38, 37, 36]);
    assert_eq!(s.floor, Some(PostId(36)));
    c.clear().await.unwrap();
}

/// A killed connection fails the calls in flight on it; the slot then takes a new one.
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn recovers_from_dropped_connections() {
    let url = redis_url();
    let c = cache(&url, "reconnect", RedisCacheOptions { connections: 2, ..opts(10, 2) }).await;
    let o = UserId(1);
    assert!(c.begin_rebuild(o).await.unwrap());
    c.finish_rebuild(o, &[e(1, 1)], true).await.unwrap();
    let killer = cache(&url, "killer", opts(10, 2)).await;
    let Connections::Node(nodes) = &*c.conns else { unreachable!("a single-node cache") };
    for slot in nodes.threads.iter().flat_map(|t| t.slots.iter()) {
        let Some(mut conn) = slot.conn.lock().as_ref().map(|c| MultiplexedConnection::clone(c)) else { continue };
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.unwrap();
        let _ = raw(&killer, &["CLIENT", "KILL", "ID", &id.to_string()]).await;
    }
    let mut failures = 0;
    for _ in 0..10 {
        match c.read(o, newest(10)).await {
            Ok(s) => assert_eq!(s.unwrap().entries, vec![e(1, 1)]),
            Err(_) => failures += 1,
        }
    }
    assert_eq!(failures, 0, "a call meeting a broken connection retries once on a fresh one");
    c.clear().await.unwrap();
}

/// After `SCRIPT FLUSH` (or a restart), scripts are loaded again, in pipelines too.
async fn survives_script_flush(url: Target) {
    let c = cache(&url, "noscript", opts(10, 0)).await;
    let (a, b) = (UserId(1), UserId(2));
    let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
    assert!(c.begin_rebuild(a).await.unwrap());
    c.finish_rebuild(a, &[e(1, 1)], true).await.unwrap();
    assert!(c.begin_rebuild(b).await.unwrap());
    let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
    c.remove_post(&[a, b], PostId(1)).await.unwrap();
    let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
    assert_eq!(c.insert(&[a, b], e(2, 1)).await.unwrap(), 2, "slack 0: normalises after every push");
    assert_eq!(c.read(a, newest(10)).await.unwrap().unwrap().entries, vec![e(2, 1)]);
    c.clear().await.unwrap();
}

/// Caches with different prefixes on one server do not see each other, even when a
/// prefix holds `SCAN` pattern characters.
async fn prefixes_isolate(url: Target) {
    let r = random();
    let with_prefix = |p: String| connect(&url, RedisCacheOptions { key_prefix: p, ..opts(10, 2) });
    let c1 = with_prefix(format!("test:iso:{r:x}:g*[?]:")).await.unwrap();
    let c2 = with_prefix(format!("test:iso:{r:x}:gX[?]:")).await.unwrap();
    let c3 = with_prefix(format!("test:iso:{r:x}:gX?:")).await.unwrap();
    let o = UserId(5);
    for c in [&c1, &c2, &c3] {
        assert!(c.begin_rebuild(o).await.unwrap());
    }
    assert_eq!(c1.insert(&[o, UserId(6)], e(1, 1)).await.unwrap(), 1);
    for c in [&c1, &c2, &c3] {
        c.finish_rebuild(o, &[], true).await.unwrap();
    }
    assert!(c2.read(o, newest(10)).await.unwrap().unwrap().entries.is_empty());
    assert_eq!(c1.len().await.unwrap(), 1);
    c1.clear().await.unwrap();
    assert_eq!((c1.len().await.unwrap(), c2.len().await.unwrap(), c3.len().await.unwrap()), (0, 1, 1));
    c2.clear().await.unwrap();
    c3.clear().await.unwrap();
    let braces = RedisCacheOptions { key_prefix: "a{b".into(), ..Default::default() };
    assert!(connect(&url, braces).await.is_err(), "a brace would break the hash tag");
}

async fn read_model_conformance(url: Target) {
    use crate::read_model::ReadModel;
    let c = cache(&url, "read-model", opts(10, 2)).await;
    let m = c.read_model(RedisReadModelOptions::default());
    crate::read_model::conformance::run(&m).await;
    // The model's clear leaves the timelines alone (and the other way round).
    assert!(c.begin_rebuild(UserId(3)).await.unwrap());
    m.clear().await.unwrap();
    assert_eq!(c.len().await.unwrap(), 1);
    c.clear().await.unwrap();
}

/// The read model's sizes as the crate docs state them, measured by `MEMORY USAGE`.
async fn read_model_bytes_are_compact(url: Target) {
    use crate::read_model::{Collection, Fill, ReadModel};
    let c = cache(&url, "read-model-bytes", opts(10, 2)).await;
    let m = c.read_model(RedisReadModelOptions::default());
    let base = 0x0123_4567_89AB_C000u64;
    let reader = UserId(base);
    let followees: Vec<UserId> = (1..=1_000).map(|i| UserId(base + 7 * i)).collect();
    let token = m.begin_fill(Collection::Following(reader)).await.unwrap();
    assert!(m.finish_fill(Collection::Following(reader), token, Fill::Users(followees)).await.unwrap());
    let key = format!("{}{{{}}}:f", c.prefix, reader.0);
    let per_follow = int(&c, &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await as f64 / 1_000.0;
    let post = starling_storage::PostRecord {
        id: PostId(base + 1),
        author: UserId(base + 2),
        author_handle: "someone".into(),
        text: "x".repeat(100),
        reply_to: None,
        reblog_of: None,
    };
    m.add_posts(std::slice::from_ref(&post)).await.unwrap();
    let post_key = format!("{}p:{}", c.prefix, post.id.0);
    let post_bytes = int(&c, &["MEMORY", "USAGE", &post_key, "SAMPLES", "0"]).await;
    let encoded = crate::read_model::codec::encode(&post).len() as i64;
    // Redis's own overhead: key object, dictionary and expiry entries, allocator rounding.
    let overhead = post_bytes - encoded - post_key.len() as i64;
    println!(
        "read model: {per_follow:.2} bytes per follow (1,000-follow list); {post_bytes} bytes for a post of \
         {encoded} encoded bytes under a {}-byte key ({overhead} of overhead)",
        post_key.len()
    );
    assert!(per_follow <= 9.0, "{per_follow} bytes per follow");
    assert!(overhead <= 100, "{overhead} bytes of overhead per post");
    // Every key of the model has a TTL.
    for k in [&key, &post_key] {
        assert!(int(&c, &["PTTL", k]).await > 0, "{k} has no TTL");
    }
    m.clear().await.unwrap();
}

/// A server that lost its scripts (restart, failover, `SCRIPT FLUSH`) costs no error.
async fn read_model_survives_script_flush(url: Target) {
    use crate::read_model::{Collection, Fill, ReadModel};
    let c = cache(&url, "read-model-noscript", opts(10, 2)).await;
    let m = c.read_model(RedisReadModelOptions::default());
    let reader = UserId(5);
    let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
    let token = m.begin_fill(Collection::Following(reader)).await.unwrap();
    assert!(m.finish_fill(Collection::Following(reader), token, Fill::Users(vec![UserId(1)])).await.unwrap());
    let _ = raw(&c, &["SCRIPT", "FLUSH"]).await;
    m.set_member(Collection::Following(reader), UserId(2), true).await.unwrap();
    let mut got = m.reader_view(reader).await.unwrap().following.unwrap();
    got.sort();
    assert_eq!(got, vec![UserId(1), UserId(2)]);
    m.clear().await.unwrap();
}

/// Each test above runs twice: against `REDIS_URL` (one server) and against
/// `REDIS_CLUSTER_URLS` (a cluster).
macro_rules! on_node_and_cluster {
    ($(#[$attr:meta] $name:ident,)*) => {
        mod node {
            $(#[$attr]
            #[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
            async fn $name() {
                super::$name(super::redis_url()).await
            })*
        }
        mod cluster {
            $(#[$attr]
            #[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
            async fn $name() {
                super::$name(super::cluster_urls()).await
            })*
        }
    };
}

on_node_and_cluster!(
    #[tokio::test]
    conformance_suite,
    #[tokio::test]
    conformance_suite_default_cap,
    #[tokio::test]
    conformance_clear_and_len,
    #[tokio::test]
    idle_timelines_expire,
    #[tokio::test]
    rebuild_marker_expires,
    #[tokio::test]
    bytes_per_entry_is_compact,
    #[tokio::test]
    behaves_like_the_memory_cache,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_inserts_stay_sorted_and_unique,
    #[tokio::test]
    insert_bounds_pending_pushes,
    #[tokio::test]
    survives_script_flush,
    #[tokio::test]
    prefixes_isolate,
    #[tokio::test]
    read_model_conformance,
    #[tokio::test]
    read_model_bytes_are_compact,
    #[tokio::test]
    read_model_survives_script_flush,
);
