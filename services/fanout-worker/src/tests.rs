//! The worker's unit tests: runs, slices, dead letters, traces, stalls.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use starling_clients::local::{LocalGraph, LocalPosts};
use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
use starling_events::{EventLog, Record, Topic, pb};
use starling_ids::{PostId, UserId};
use starling_storage::embedded::{Durability, EmbeddedStore};
use starling_storage::{GraphStore, PostRecord, PostStore, UserRecord};
use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
use starling_timeline_cache::read_model::Fill;
use starling_timeline_cache::read_model::memory::{MemoryReadModel, MemoryReadModelOptions};
use starling_timeline_cache::{Range, TimelineCache};
use tokio_util::sync::CancellationToken;

use super::*;

/// A store with an author and a reader who follows them and has a materialised (empty)
/// timeline, so pushes to the reader land.
struct Fixture {
    store: EmbeddedStore,
    cache: Arc<MemoryCache>,
    model: Arc<MemoryReadModel>,
    author: UserId,
    reader: UserId,
}

impl Fixture {
    async fn new(dir: &std::path::Path, author: UserId, reader: UserId) -> Fixture {
        let store = EmbeddedStore::open(&dir.join("s"), Durability::Buffer).unwrap();
        let cache = Arc::new(MemoryCache::new(MemoryCacheOptions::default()));
        let graph = store.graph();
        for (id, h) in [(author, "a"), (reader, "r")] {
            graph.create_user(&UserRecord { id, handle: h.into() }).await.unwrap();
        }
        graph.follow(reader, author, Vec::new()).await.unwrap();
        assert!(cache.begin_rebuild(reader).await.unwrap());
        cache.finish_rebuild(reader, &[], true).await.unwrap();
        let model = Arc::new(MemoryReadModel::new(MemoryReadModelOptions::default()));
        Fixture { store, cache, model, author, reader }
    }

    fn created(&self, post: u64) -> pb::PostEvent {
        pb::PostEvent {
            event_id: String::new(),
            occurred_at_ms: 0,
            kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
                post_id: post,
                author_id: self.author.get(),
                reply_to: None,
                reblog_of: None,
            })),
        }
    }

    /// Runs a fan-out over `log` until it has applied `events`, then stops it.
    async fn apply(&self, log: Arc<dyn EventLog>, events: u64) -> Arc<FanoutStats> {
        self.apply_with(log, events, FanoutSettings::default()).await
    }

    /// A worker over the fixture's store, cache and read model, asking `graph`.
    fn fanout(&self, graph: Arc<dyn GraphClient>, settings: FanoutSettings) -> (Arc<Fanout>, Arc<FanoutStats>) {
        let stats = Arc::new(FanoutStats::default());
        let fanout = Arc::new(Fanout {
            graph,
            posts: Arc::new(LocalPosts(self.store.posts())),
            cache: self.cache.clone(),
            model: self.model.clone(),
            max_entries: 800,
            settings,
            stats: stats.clone(),
            bus: Arc::new(starling_timeline_cache::bus::LocalBus::new()),
        });
        (fanout, stats)
    }

    async fn apply_with(&self, log: Arc<dyn EventLog>, events: u64, settings: FanoutSettings) -> Arc<FanoutStats> {
        self.run_until_applied(Arc::new(LocalGraph(self.store.graph())), log, events, settings).await
    }

    /// Runs a fan-out asking `graph` over `log` until it has applied `events`, then stops it.
    async fn run_until_applied(
        &self,
        graph: Arc<dyn GraphClient>,
        log: Arc<dyn EventLog>,
        events: u64,
        settings: FanoutSettings,
    ) -> Arc<FanoutStats> {
        let (fanout, stats) = self.fanout(graph, settings);
        let stop = CancellationToken::new();
        let task = tokio::spawn(fanout.run(log, stop.clone()));
        let started = std::time::Instant::now();
        while !stats.applied_all(events) {
            assert!(started.elapsed() < Duration::from_secs(60), "the events were not applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        stats
    }

    async fn reader_timeline(&self) -> Vec<PostId> {
        let range = Range { before: None, after: None, limit: 10, oldest_first: false };
        let slice = self.cache.read(self.reader, range).await.unwrap().unwrap();
        slice.entries.iter().map(|e| e.post).collect()
    }
}

/// An undecodable event is set aside in the dead-letter store and the events behind it
/// in the same partition are still applied.
#[tokio::test]
async fn poison_events_are_dead_lettered_and_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path(), UserId(10), UserId(11)).await;
    let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
    let post = PostRecord {
        id: PostId(99),
        author: f.author,
        author_handle: "a".into(),
        text: "t".into(),
        reply_to: None,
        reblog_of: None,
    };
    f.store.posts().create_post(&post, None, Vec::new()).await.unwrap();

    let poison = Record {
        topic: Topic::Posts,
        key: f.author.get(),
        payload: vec![0xff, 0xff, 0xff].into(),
        headers: Vec::new(),
    };
    log.append(vec![poison, Record::post(f.author.get(), &f.created(99))]).await.unwrap();

    let stats = f.apply(log.clone(), 1).await;
    assert_eq!(stats.dead_letters.get(), 1);
    assert_eq!(log.dead_letter_count().unwrap(), 1);
    assert_eq!(f.reader_timeline().await, vec![PostId(99)]);
}

/// The graph's edges as `LocalGraph` has them, counting the calls the worker makes.
struct CountingGraph {
    inner: LocalGraph,
    edge_calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl GraphClient for CountingGraph {
    async fn user(&self, id: UserId) -> starling_clients::ClientResult<Option<UserRecord>> {
        self.inner.user(id).await
    }
    async fn counts(&self, user: UserId) -> starling_clients::ClientResult<starling_storage::Counts> {
        self.inner.counts(user).await
    }
    async fn followers(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> starling_clients::ClientResult<Vec<UserId>> {
        self.inner.followers(user, after, limit).await
    }
    async fn following(&self, user: UserId) -> starling_clients::ClientResult<Vec<UserId>> {
        self.inner.following(user).await
    }
    async fn follows(&self, _: UserId, _: UserId) -> starling_clients::ClientResult<bool> {
        panic!("edges are looked up in batches")
    }
    async fn muters(&self, user: UserId) -> starling_clients::ClientResult<Vec<UserId>> {
        self.inner.muters(user).await
    }
    async fn notifications(
        &self,
        user: UserId,
        window: starling_storage::Window<u64>,
    ) -> starling_clients::ClientResult<Vec<starling_storage::NotificationRecord>> {
        self.inner.notifications(user, window).await
    }
    async fn remove_follow_notification(
        &self,
        recipient: UserId,
        follower: UserId,
    ) -> starling_clients::ClientResult<bool> {
        self.inner.remove_follow_notification(recipient, follower).await
    }
    async fn author_class(&self, user: UserId) -> starling_clients::ClientResult<AuthorClass> {
        self.inner.author_class(user).await
    }
    async fn celebrities(&self) -> starling_clients::ClientResult<Vec<UserId>> {
        self.inner.celebrities().await
    }
    async fn edges(
        &self,
        edges: &[(UserId, UserId)],
    ) -> starling_clients::ClientResult<Vec<starling_clients::EdgeState>> {
        self.edge_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.edges(edges).await
    }
}

/// Consecutive follow, unfollow and block events are reconciled as one run: one graph
/// call for all their edges (each once), against the graph as it is after all of them,
/// so the order and duplicates inside the run do not matter.
#[tokio::test]
async fn a_run_of_graph_events_is_reconciled_in_one_graph_call() {
    let dir = tempfile::tempdir().unwrap();
    let (a, r, b, c) = (UserId(10), UserId(11), UserId(12), UserId(13));
    let f = Fixture::new(dir.path(), a, r).await;
    let (graph, posts) = (f.store.graph(), f.store.posts());
    for (id, h) in [(b, "b"), (c, "c")] {
        graph.create_user(&UserRecord { id, handle: h.into() }).await.unwrap();
    }
    for (id, author) in [(1, a), (2, b), (3, b), (4, c)] {
        let post = PostRecord {
            id: PostId(id),
            author,
            author_handle: "x".into(),
            text: "t".into(),
            reply_to: None,
            reblog_of: None,
        };
        posts.create_post(&post, None, Vec::new()).await.unwrap();
    }
    f.cache.insert(&[r], Entry { post: PostId(1), author: a }).await.unwrap();
    let token = f.model.begin_fill(Collection::Following(r)).await.unwrap();
    assert!(f.model.finish_fill(Collection::Following(r), token, Fill::Users(vec![a])).await.unwrap());
    // The graph after the run: r unfollowed a, follows b, and c blocked r (which also
    // ended r's follow of c).
    graph.unfollow(r, a, Vec::new()).await.unwrap();
    graph.follow(r, b, Vec::new()).await.unwrap();
    graph.follow(r, c, Vec::new()).await.unwrap();
    graph.block(c, r, Vec::new()).await.unwrap();
    use pb::graph_event::Kind;
    let event =
        |kind| Record::graph(r.get(), &pb::GraphEvent { event_id: String::new(), occurred_at_ms: 0, kind: Some(kind) });
    let (ra, rb, rc) = (
        pb::Followed { follower_id: r.get(), followee_id: a.get() },
        pb::Followed { follower_id: r.get(), followee_id: b.get() },
        pb::Followed { follower_id: r.get(), followee_id: c.get() },
    );
    let events = vec![
        event(Kind::Unfollowed(pb::Unfollowed { follower_id: r.get(), followee_id: a.get() })),
        event(Kind::Followed(rb)),
        event(Kind::Followed(ra)),
        event(Kind::Followed(rb)),
        event(Kind::Followed(rc)),
        event(Kind::Blocked(pb::Blocked { blocker_id: c.get(), blocked_id: r.get() })),
    ];
    let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
    log.append(events).await.unwrap();

    let counting = Arc::new(CountingGraph { inner: LocalGraph(graph), edge_calls: Default::default() });
    let stats = f.run_until_applied(counting.clone(), log, 6, FanoutSettings::default()).await;

    assert_eq!(counting.edge_calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(f.reader_timeline().await, vec![PostId(3), PostId(2)]);
    assert_eq!(stats.backfilled.get(), 2);
    let following = f.model.reader_view(r).await.unwrap().following;
    assert_eq!(following, Some(vec![b]));
}

/// A post by an author with more followers than `split_above` is published as slices
/// that the consumers of the group share: every follower gets it once, the slices carry
/// the post's trace, and the author's own timeline gets it from the splitting worker.
#[tokio::test]
async fn long_follower_lists_are_pushed_in_slices_shared_by_the_group() {
    exported();
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path(), UserId(30), UserId(31)).await;
    let graph = f.store.graph();
    let mut followers = vec![f.reader];
    for id in 32..57 {
        let u = UserId(id);
        graph.create_user(&UserRecord { id: u, handle: format!("f{id}") }).await.unwrap();
        graph.follow(u, f.author, Vec::new()).await.unwrap();
        assert!(f.cache.begin_rebuild(u).await.unwrap());
        f.cache.finish_rebuild(u, &[], true).await.unwrap();
        followers.push(u);
    }
    assert!(f.cache.begin_rebuild(f.author).await.unwrap());
    f.cache.finish_rebuild(f.author, &[], true).await.unwrap();

    let log = test_log(dir.path()).await;
    // Another group sees every slice record, to check what they carry.
    let mut inspect = log.subscribe("inspect-slices", &[Topic::Fanout]).await.unwrap();
    let request = tracing::info_span!("request");
    let post = request.in_scope(|| Record::post(f.author.get(), &f.created(700)));
    log.append(vec![post]).await.unwrap();

    // 26 followers in slices of 4: 7 slices, over two consumers.
    let settings = FanoutSettings { consumers: 2, split_above: 10, slice_size: 4, ..FanoutSettings::default() };
    let stats = f.apply_with(log, 1, settings).await;
    assert_eq!((stats.slices_published.get(), stats.slices_applied.get()), (7, 7));
    assert_eq!(stats.inserts.get(), 27, "26 followers and the author, once each");
    for u in followers.iter().chain([&f.author]) {
        let range = Range { before: None, after: None, limit: 10, oldest_first: false };
        let got: Vec<PostId> = f.cache.read(*u, range).await.unwrap().unwrap().entries.iter().map(|e| e.post).collect();
        assert_eq!(got, vec![PostId(700)], "timeline of {u:?}");
    }

    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 7 && std::time::Instant::now() < deadline {
        seen.extend(inspect.poll(16, Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(seen.len(), 7);
    let mut pushed: Vec<u64> = Vec::new();
    for d in &seen {
        let slice = pb::FanoutSlice::decode(d.payload.as_ref()).unwrap();
        assert_eq!((slice.post_id, slice.author_id, slice.slices), (700, f.author.get(), 7));
        assert!(slice.follower_ids.len() <= 4);
        pushed.extend(slice.follower_ids);
        let trace = trace_of(&d.headers);
        assert!(trace.is_some(), "a slice carries a trace context");
        assert_eq!(trace, starling_telemetry::propagation::trace_id(&request), "the slice continues the post's trace");
    }
    pushed.sort_unstable();
    let mut expected: Vec<u64> = followers.iter().map(|u| u.get()).collect();
    expected.sort_unstable();
    assert_eq!(pushed, expected, "the slices cover the followers exactly once");
    let partitions: std::collections::HashSet<u32> = seen.iter().map(|d| d.partition).collect();
    assert_eq!(partitions.len(), 2, "the slices spread over both partitions");
}

/// A member that reports records waiting but receives none rejoins the group: a
/// stand-in log whose consumers never deliver yet always report lag.
#[tokio::test]
async fn a_stalled_consumer_rejoins_the_group() {
    struct Stalled(Arc<std::sync::atomic::AtomicUsize>);
    struct Silent;

    #[async_trait::async_trait]
    impl Consumer for Silent {
        async fn poll(&mut self, _: usize, wait: Duration) -> Result<Vec<starling_events::Delivery>, LogError> {
            tokio::time::sleep(wait).await;
            Ok(Vec::new())
        }
        async fn commit(&mut self, _: &[starling_events::Delivery]) -> Result<(), LogError> {
            Ok(())
        }
        async fn lag(&mut self) -> Result<u64, LogError> {
            Ok(3)
        }
    }

    #[async_trait::async_trait]
    impl EventLog for Stalled {
        async fn append(&self, _: Vec<Record>) -> Result<(), LogError> {
            Ok(())
        }
        async fn subscribe(&self, _: &str, _: &[Topic]) -> Result<Box<dyn Consumer>, LogError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(Silent))
        }
        async fn dead_letter(&self, _: &starling_events::Delivery, _: &str) -> Result<(), LogError> {
            Ok(())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path(), UserId(40), UserId(41)).await;
    let joins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let settings = FanoutSettings { stall_limit_ms: 300, ..FanoutSettings::default() };
    let (fanout, stats) = f.fanout(Arc::new(LocalGraph(f.store.graph())), settings);
    let stop = CancellationToken::new();
    let task = tokio::spawn(fanout.run(Arc::new(Stalled(joins.clone())), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.cancel();
    // The drain never sees lag 0 here; stopping the task is enough.
    task.abort();
    let rejoined = stats.consumer_rebuilds.get();
    assert!(rejoined >= 2, "rejoined {rejoined} times in 1.5 s with a 0.3 s limit");
    assert_eq!(joins.load(std::sync::atomic::Ordering::SeqCst) as u64, rejoined + 1);
}

/// The spans this test binary made, exported in memory, with export turned on. One
/// global subscriber: a thread-local one races with the other tests of this binary over
/// the callsites' cached interest. Spans of different tests are told apart by trace id.
fn exported() -> &'static opentelemetry_sdk::trace::InMemorySpanExporter {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    static EXPORTED: std::sync::OnceLock<(
        opentelemetry_sdk::trace::SdkTracerProvider,
        opentelemetry_sdk::trace::InMemorySpanExporter,
    )> = std::sync::OnceLock::new();
    let (_, exporter) = EXPORTED.get_or_init(|| {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider =
            opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("fanout-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in this test binary");
        starling_telemetry::set_exporting_for_tests();
        (provider, exporter)
    });
    exporter
}

/// The trace a consumer of a record with these headers continues.
fn trace_of(headers: &[(String, bytes::Bytes)]) -> Option<String> {
    let span = tracing::info_span!("consumer");
    starling_telemetry::propagation::continue_from(&span, headers);
    starling_telemetry::propagation::trace_id(&span)
}

/// The log under test: Kafka when `KAFKA_BROKERS` is set (topics of its own), else
/// the embedded log.
async fn test_log(dir: &std::path::Path) -> Arc<dyn EventLog> {
    match std::env::var("KAFKA_BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => {
            let prefix = format!("test-fanout-trace-{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let options = starling_events::kafka::KafkaOptions {
                partitions: 2,
                topic_prefix: prefix,
                ..starling_events::kafka::KafkaOptions::new(brokers)
            };
            starling_events::kafka::KafkaLog::connect(options).await.expect("connect to Kafka")
        }
        _ => EmbeddedLog::open(&dir.join("l"), EmbeddedLogOptions { partitions: 2, sync: false }).unwrap(),
    }
}

/// The span that applies an event is a child of the span that produced it, and the run
/// that writes it a child of that. An event whose header is malformed is applied all the
/// same (that it starts a trace of its own is `starling_telemetry::propagation`'s test).
#[tokio::test]
async fn events_continue_their_trace_and_a_malformed_traceparent_is_not_fatal() {
    let exporter = exported();
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path(), UserId(20), UserId(21)).await;
    let log = test_log(dir.path()).await;
    let request = tracing::info_span!("request");
    let traced = request.in_scope(|| Record::post(f.author.get(), &f.created(101)));
    let trace = starling_telemetry::propagation::trace_id(&request).expect("the request is traced");
    let mut malformed = Record::post(f.author.get(), &f.created(102));
    malformed.headers = vec![("traceparent".to_owned(), bytes::Bytes::from_static(b"00-zz-not-hex-01"))];
    log.append(vec![traced, malformed]).await.unwrap();

    let stats = f.apply(log, 2).await;
    assert_eq!(f.reader_timeline().await, vec![PostId(102), PostId(101)]);
    assert_eq!(stats.dead_letters.get(), 0, "a bad header is no reason to dead-letter");
    drop(request);

    let spans = exporter.get_finished_spans().unwrap();
    let ours: Vec<_> = spans.iter().filter(|s| s.span_context.trace_id().to_string() == trace).collect();
    let named = |name: &str| ours.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let (requests, events) = (named("request"), named("fanout.event"));
    assert_eq!((requests.len(), events.len()), (1, 1), "one event carried this trace: {ours:#?}");
    assert_eq!(events[0].parent_span_id, requests[0].span_context.span_id());
    let runs = named("fanout.posts");
    assert!(!runs.is_empty(), "the run that wrote it is in the trace: {ours:#?}");
    assert!(runs.iter().all(|r| r.parent_span_id == events[0].span_context.span_id()));
}
