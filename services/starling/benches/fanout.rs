//! Standalone fan-out throughput: timeline inserts per second through the real path.
//!
//! For each follower count, an author with that many followers (all active, so every
//! push lands) publishes posts through the store's outbox into the embedded event log;
//! then the fan-out worker is started and timed until it has applied every event.
//! Inserts/s = followers × posts / elapsed. The cost per delivered entry should stay flat
//! as the follower count grows.
//!
//! Run: `cargo bench -p starling --bench fanout` (add `-- quick` for a short run).
//!
//! Distributed: with `KAFKA_BROKERS` and `REDIS_URL` set, events go through Kafka and
//! timelines live in Redis (the store and the graph/post lookups stay in-process, as the
//! worker's HTTP calls to them are one per follower page, not per insert).

use std::sync::Arc;
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
use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
use starling_timeline_cache::redis::{RedisCache, RedisCacheOptions};
use tokio_util::sync::CancellationToken;

struct Case {
    followers: usize,
    posts: usize,
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let total_inserts = if quick { 200_000 } else { 2_000_000 };
    println!("| followers per author | posts | timeline inserts | seconds | inserts/s | ns per insert |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for followers in [10, 100, 1_000, 10_000] {
        let case = Case { followers, posts: total_inserts / followers };
        run(case).await;
    }
}

async fn run(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Buffer).unwrap();
    let run_id = format!("bench{}x{}", std::process::id(), case.followers);
    let log: Arc<dyn EventLog> = match std::env::var("KAFKA_BROKERS") {
        Ok(brokers) => KafkaLog::connect(KafkaOptions {
            brokers,
            partitions: 4,
            topic_prefix: format!("{run_id}."),
            ..KafkaOptions::default()
        })
        .await
        .unwrap(),
        Err(_) => {
            EmbeddedLog::open(&dir.path().join("log"), EmbeddedLogOptions { partitions: 4, sync: false }).unwrap()
        }
    };
    let cache: Arc<dyn TimelineCache> = match std::env::var("REDIS_URL") {
        Ok(url) => Arc::new(
            RedisCache::connect(
                &url,
                RedisCacheOptions {
                    max_entries: 800,
                    active_for: Duration::from_secs(3600),
                    key_prefix: format!("{run_id}:"),
                    ..RedisCacheOptions::default()
                },
            )
            .await
            .unwrap(),
        ),
        Err(_) => Arc::new(MemoryCache::new(MemoryCacheOptions {
            max_entries: 800,
            active_for: Duration::from_secs(3600),
            ..MemoryCacheOptions::default()
        })),
    };
    let ids = IdGenerator::new(1).unwrap();
    let (posts, graph) = (store.posts(), store.graph());

    // Several authors share the posts so the log's partitions all have work.
    let authors: Vec<UserId> = (0..8).map(|_| ids.next_user()).collect();
    for (i, a) in authors.iter().enumerate() {
        graph.create_user(&UserRecord { id: *a, handle: format!("author{i}") }).await.unwrap();
    }
    for _ in 0..case.followers {
        let f = ids.next_user();
        for a in &authors {
            assert!(matches!(graph.follow(f, *a, Vec::new()).await.unwrap(), EdgeChange::Changed { .. }));
        }
        // Active reader: a ready, complete (empty) timeline.
        assert!(cache.begin_rebuild(f).await.unwrap());
        cache.finish_rebuild(f, &[], true).await.unwrap();
    }
    let publisher = Publisher::new(posts.clone(), log.clone());
    for n in 0..case.posts {
        let author = authors[n % authors.len()];
        let post =
            PostRecord { id: ids.next_post(), author, author_handle: "a".into(), text: "x".into(), reply_to: None };
        let event = pb::PostEvent {
            event_id: String::new(),
            occurred_at_ms: 0,
            kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
                post_id: post.id.get(),
                author_id: author.get(),
                reply_to: None,
            })),
        };
        let records = vec![Record::post(author.get(), &event)];
        let CreatePost::Created { outbox } = posts.create_post(&post, None, records.clone()).await.unwrap() else {
            unreachable!()
        };
        publisher.publish(records, &outbox).await.unwrap();
    }

    let stats = Arc::new(FanoutStats::default());
    let fanout = Arc::new(Fanout {
        graph: Arc::new(LocalGraph(graph)),
        posts: Arc::new(LocalPosts(posts)),
        cache: cache.clone(),
        max_entries: 800,
        settings: FanoutSettings::default(),
        stats: stats.clone(),
    });
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(fanout.run(log, stop.clone()));
    while stats.events.get() < case.posts as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.cancel();
    task.await.unwrap().unwrap();
    // Leave a shared Redis as we found it.
    cache.clear().await.unwrap();
    // Authors have no materialised timeline here, so every insert is a follower's.
    let delivered = (case.followers * case.posts) as u64;
    assert_eq!(stats.inserts.get(), delivered, "every active follower must have received every post");
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.0} |",
        case.followers,
        case.posts,
        delivered,
        elapsed,
        delivered as f64 / elapsed,
        elapsed * 1e9 / delivered as f64
    );
}
