//! Starling as processes: one binary, any set of the four services per process.
//!
//! A [`Node`] runs some [`Role`]s. `starling up` runs all four in one process on embedded
//! backends (fjall store and event log in the data directory, in-memory timeline cache)
//! with in-process calls between services. `starling serve <role>` runs one service per
//! process, as in production: events over Kafka, timelines in Redis, and calls to the
//! graph- and post-service over their internal HTTP APIs. Backends are picked by
//! configuration (`backends.kafka_brokers`, `backends.redis_url` or `redis_cluster_urls`,
//! `backends.scylla_uri`); service logic is the same either way.
//!
//! Start-up opens the backends, republishes anything a crash left in the outboxes, binds
//! one HTTP listener and starts the background tasks (fan-out consumers, outbox relays,
//! idle-timeline sweeper). [`Node::stop`] is the graceful path: refuse new requests,
//! finish in-flight ones, drain the fan-out, flush to disk.

mod grants;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, bail};
use fanout_worker::{Fanout, FanoutStats};
use grants::{LOGIN_LIMIT, RemoteGrants};
use graph_service::{GrantMemo, GraphService, StoreGrants};
use post_service::PostService;
use starling_api::auth::{GrantVerifier, TokenKeys};
use starling_api::rate_limit::{RateLimit, RateLimiter};
use starling_api::{ApiError, ErrorCode};
use starling_clients::http::{HttpGraph, HttpPosts};
use starling_clients::local::{LocalGraph, LocalPosts};
use starling_clients::{GraphClient, PostClient};
use starling_events::EventLog;
use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
use starling_events::kafka::{KafkaLog, KafkaOptions};
use starling_ids::IdGenerator;
use starling_metrics::{Pulled, names};
use starling_outbox::Publisher;
use starling_scylla_store::{ScyllaOptions, ScyllaStore};
use starling_storage::embedded::{Durability, EmbeddedStore};
use starling_storage::{AuthStore, GraphStore, Outbox, PostStore};
use starling_timeline_cache::TimelineCache;
use starling_timeline_cache::bus::{Bus, LocalBus};
use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
use starling_timeline_cache::read_model::ReadModel;
use starling_timeline_cache::read_model::memory::{MemoryReadModel, MemoryReadModelOptions};
use starling_timeline_cache::redis::{RedisBus, RedisCache, RedisCacheOptions, RedisReadModelOptions};
use timeline_service::{ReadSettings, TimelineService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;
use settings::{CacheBackend, LogBackend, StoreBackend};

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    #[value(name = "graph-service")]
    Graph,
    #[value(name = "post-service")]
    Posts,
    #[value(name = "timeline-service")]
    Timeline,
    #[value(name = "fanout-worker")]
    Fanout,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Graph, Role::Posts, Role::Timeline, Role::Fanout];

    pub fn name(self) -> &'static str {
        match self {
            Role::Graph => "graph-service",
            Role::Posts => "post-service",
            Role::Timeline => "timeline-service",
            Role::Fanout => "fanout-worker",
        }
    }
}

/// The `service` label of a process's metrics and its traces' `service.name`: its role,
/// or `starling` for several.
pub fn service_label(roles: &[Role]) -> &'static str {
    match roles {
        [one] => one.name(),
        _ => "starling",
    }
}

/// A running process hosting some roles.
pub struct Node {
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    /// Stops the fan-out consumers (after draining).
    fanout_stop: CancellationToken,
    fanout_task: Option<JoinHandle<()>>,
    /// Stops the relays and the sweeper.
    background_stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
    publishers: Vec<Publisher>,
    ready: Arc<AtomicBool>,
    store: Option<EmbeddedStore>,
}

/// State the operational endpoints need.
struct Ops {
    ready: Arc<AtomicBool>,
    cache: Option<Arc<dyn TimelineCache>>,
    model: Option<Arc<dyn ReadModel>>,
    admin_token: String,
    /// What `/metrics` renders: everything the process measures is registered here (see
    /// [`register_metrics`]).
    registry: starling_metrics::Metrics,
}

/// The post and graph stores a node opened: the embedded one, or ScyllaDB.
struct Stores {
    posts: Arc<dyn PostStore>,
    posts_outbox: Arc<dyn Outbox>,
    graph: Arc<dyn GraphStore>,
    graph_outbox: Arc<dyn Outbox>,
    /// Logins and OAuth state, beside the graph.
    auth: Arc<dyn AuthStore>,
    /// Set for the embedded store, which is flushed to disk at a clean stop.
    embedded: Option<EmbeddedStore>,
}

impl Stores {
    async fn open(settings: &Settings) -> anyhow::Result<Stores> {
        let b = &settings.backends;
        if let StoreBackend::Scylla { uri } = b.store() {
            let store = ScyllaStore::connect(&ScyllaOptions {
                uri,
                keyspace: b.scylla_keyspace.clone(),
                replication_factor: b.scylla_replication_factor,
                worker_id: settings.server.worker_id,
            })
            .await
            .context("connecting to ScyllaDB")?;
            return Ok(Stores {
                posts: store.posts(),
                posts_outbox: store.posts(),
                graph: store.graph(),
                graph_outbox: store.graph(),
                auth: store.graph(),
                embedded: None,
            });
        }
        let durability = if settings.storage.sync { Durability::SyncData } else { Durability::Buffer };
        let store = EmbeddedStore::open(&settings.server.data_dir.join("store"), durability)
            .context("opening the embedded store")?;
        Ok(Stores {
            posts: store.posts(),
            posts_outbox: store.posts(),
            graph: store.graph(),
            graph_outbox: store.graph(),
            auth: store.graph(),
            embedded: Some(store),
        })
    }
}

/// The backends a node opened.
struct Backends {
    store: Option<Stores>,
    log: Arc<dyn EventLog>,
    /// The consumer lag of every partition, as the log knows it: taken from the log's
    /// own type, which the `EventLog` trait does not expose.
    log_lag: starling_metrics::Pulled,
    cache: Option<Arc<dyn TimelineCache>>,
    /// Shared by the timeline-service (reads, fills), the fan-out (events) and the
    /// post-service (write-through); `None` for a post-service without Redis.
    model: Option<Arc<dyn ReadModel>>,
    /// Set when the cache is the in-memory one, which needs a sweeper.
    memory: Option<Arc<MemoryCache>>,
    /// From the fan-out (and the services storing notifications) to the open streams.
    bus: Arc<dyn Bus>,
}

impl Backends {
    async fn open(settings: &Settings, roles: &[Role]) -> anyhow::Result<Backends> {
        let has = |r: Role| roles.contains(&r);
        let all = Role::ALL.iter().all(|r| has(*r));
        let b = &settings.backends;
        let data = &settings.server.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating data directory {}", data.display()))?;

        let store = if has(Role::Graph) || has(Role::Posts) { Some(Stores::open(settings).await?) } else { None };

        let (log, log_lag): (Arc<dyn EventLog>, _) = match b.log() {
            LogBackend::Kafka { brokers } => {
                let kafka = KafkaLog::connect(KafkaOptions {
                    brokers,
                    partitions: b.kafka_partitions,
                    topic_prefix: b.topic_prefix.clone(),
                    instance_id: Some(b.kafka_instance_id.clone()).filter(|i| !i.is_empty()),
                    park_after: Some(Duration::from_millis(b.kafka_park_after_ms)).filter(|d| !d.is_zero()),
                    ..KafkaOptions::default()
                })
                .await
                .context("connecting to Kafka")?;
                let lag = kafka.consumer_lag_metric();
                (kafka, lag)
            }
            LogBackend::Embedded if all => {
                let embedded = EmbeddedLog::open(
                    &data.join("log"),
                    EmbeddedLogOptions { partitions: settings.storage.log_partitions, sync: settings.storage.sync },
                )
                .context("opening the embedded event log")?;
                let lag = embedded.consumer_lag_metric();
                (embedded, lag)
            }
            LogBackend::Embedded => {
                bail!("services in separate processes share events through Kafka: set backends.kafka_brokers")
            }
        };

        let t = &settings.timeline;
        let reads = has(Role::Timeline) || has(Role::Fanout);
        let redis_options = || RedisCacheOptions {
            max_entries: t.max_entries,
            active_for: Duration::from_secs(t.active_for_secs),
            key_prefix: b.redis_prefix.clone(),
            ..RedisCacheOptions::default()
        };
        let redis = match b.cache() {
            // The graph-service writes the grant cache other processes check tokens against.
            _ if !(reads || has(Role::Posts) || has(Role::Graph)) => None,
            CacheBackend::Memory => None,
            CacheBackend::Redis { url } => {
                Some(RedisCache::connect(&url, redis_options()).await.context("connecting to Redis")?)
            }
            CacheBackend::RedisCluster { nodes } => Some(
                RedisCache::connect_cluster(&nodes, redis_options()).await.context("connecting to Redis Cluster")?,
            ),
        };
        // Only the timeline-service's streams listen; every service announces.
        let bus_on = |url: &str| match has(Role::Timeline) {
            true => RedisBus::new(url, &b.redis_prefix),
            false => RedisBus::publisher(url, &b.redis_prefix),
        };
        let bus: Arc<dyn Bus> = match b.cache() {
            CacheBackend::Memory => Arc::new(LocalBus::new()),
            CacheBackend::Redis { url } => bus_on(&url)?,
            // A PUBLISH to any node of a cluster reaches the subscribers of every node.
            CacheBackend::RedisCluster { nodes } => bus_on(nodes.first().context("no Redis Cluster node")?)?,
        };
        let (cache, model, memory): (Option<Arc<dyn TimelineCache>>, Option<Arc<dyn ReadModel>>, _) = match redis {
            Some(redis) => {
                let model = Arc::new(redis.read_model(RedisReadModelOptions {
                    post_ttl: Duration::from_secs(t.post_cache_ttl_secs),
                    following_ttl: Duration::from_secs(t.active_for_secs),
                    ..RedisReadModelOptions::default()
                }));
                (reads.then(|| Arc::new(redis) as Arc<dyn TimelineCache>), Some(model), None)
            }
            None if !reads => (None, None, None),
            None if has(Role::Timeline) && has(Role::Fanout) => {
                let cache = Arc::new(MemoryCache::new(MemoryCacheOptions {
                    max_entries: t.max_entries,
                    active_for: Duration::from_secs(t.active_for_secs),
                    ..MemoryCacheOptions::default()
                }));
                let model = Arc::new(MemoryReadModel::new(MemoryReadModelOptions {
                    max_posts: t.post_cache_entries,
                    ..MemoryReadModelOptions::default()
                }));
                (Some(cache.clone() as Arc<dyn TimelineCache>), Some(model), Some(cache))
            }
            None => bail!(
                "the timeline-service and the fan-out worker share timelines through Redis: \
                 set backends.redis_url or backends.redis_cluster_urls"
            ),
        };
        Ok(Backends { store, log, log_lag, cache, model, memory, bus })
    }
}

impl Node {
    /// All four services in one process.
    pub async fn standalone(settings: Settings) -> anyhow::Result<Node> {
        Node::start(settings, &Role::ALL).await
    }

    pub async fn start(settings: Settings, roles: &[Role]) -> anyhow::Result<Node> {
        settings.validate()?;
        let has = |r: Role| roles.contains(&r);
        let backends = Backends::open(&settings, roles).await?;
        // Internal APIs are only needed, and only served, when peers run elsewhere.
        let internal = !Role::ALL.iter().all(|r| has(*r));
        let log = backends.log.clone();
        let ids = Arc::new(IdGenerator::new(settings.server.worker_id)?);
        let tokens = TokenKeys::from_secret(
            jwt_secret(&settings)?.as_bytes(),
            Duration::from_secs(settings.auth.token_ttl_secs),
        );
        let limit = RateLimit { per_second: settings.rate_limit.writes_per_second, burst: settings.rate_limit.burst };
        let store = backends.store.as_ref();
        let peers = &settings.peers;

        let graph_client: Arc<dyn GraphClient> = match store {
            Some(s) if has(Role::Graph) => Arc::new(LocalGraph(s.graph.clone())),
            _ => Arc::new(HttpGraph::new(&peers.graph_url)?),
        };
        let post_client: Arc<dyn PostClient> = match store {
            Some(s) if has(Role::Posts) => Arc::new(LocalPosts(s.posts.clone())),
            _ => Arc::new(HttpPosts::new(&peers.post_url)?),
        };
        // Each process creating ids needs its own worker id; see `server.worker_id`.
        let mut publishers = Vec::new();
        // The same publishers, by the service whose outbox each empties.
        let mut outboxes = Vec::new();
        // Only with the embedded store does every revocation go through this process.
        let grant_memo =
            store.filter(|s| s.embedded.is_some() && has(Role::Graph)).map(|_| Arc::new(GrantMemo::default()));
        let graph = match store {
            Some(s) if has(Role::Graph) => {
                let publisher = Publisher::new(s.graph_outbox.clone(), log.clone());
                // Events a crash left in the outbox go out before anything new.
                publisher.drain().await.context("republishing the graph outbox")?;
                publishers.push(publisher.clone());
                outboxes.push((Role::Graph, publisher.clone()));
                Some(Arc::new(GraphService {
                    store: s.graph.clone(),
                    auth: s.auth.clone(),
                    publisher,
                    ids: ids.clone(),
                    limiter: RateLimiter::new(limit),
                    logins: RateLimiter::new(LOGIN_LIMIT),
                    // The grant cache is for other processes: in one process every
                    // token is checked against the store itself.
                    model: backends.model.clone().filter(|_| internal),
                    grant_memo: grant_memo.clone(),
                    bus: backends.bus.clone(),
                    celebrity: settings.celebrity.clone(),
                    admin_token: settings.admin.token.clone(),
                }))
            }
            _ => None,
        };
        let posts = match store {
            Some(s) if has(Role::Posts) => {
                let publisher = Publisher::new(s.posts_outbox.clone(), log.clone());
                publisher.drain().await.context("republishing the post outbox")?;
                publishers.push(publisher.clone());
                outboxes.push((Role::Posts, publisher.clone()));
                Some(Arc::new(PostService {
                    store: s.posts.clone(),
                    graph: graph_client.clone(),
                    publisher,
                    ids: ids.clone(),
                    limiter: RateLimiter::new(limit),
                    model: backends.model.clone(),
                    bus: backends.bus.clone(),
                }))
            }
            _ => None,
        };
        let bus = &backends.bus;
        let timeline = match (&backends.cache, &backends.model) {
            (Some(cache), Some(model)) if has(Role::Timeline) => Some(Arc::new(TimelineService::new(
                cache.clone(),
                model.clone(),
                graph_client.clone(),
                post_client.clone(),
                ReadSettings {
                    max_entries: settings.timeline.max_entries,
                    // Only in front of Redis: the in-memory model is this process's already.
                    near_post_bytes: if backends.memory.is_some() { 0 } else { settings.timeline.near_post_bytes },
                },
                bus.clone(),
            ))),
            _ => None,
        };

        let fanout_stop = CancellationToken::new();
        let (fanout_stats, fanout_task) = match (&backends.cache, &backends.model) {
            (Some(cache), Some(model)) if has(Role::Fanout) => {
                let stats = Arc::new(FanoutStats::default());
                let fanout = Arc::new(Fanout {
                    graph: graph_client.clone(),
                    posts: post_client.clone(),
                    cache: cache.clone(),
                    model: model.clone(),
                    max_entries: settings.timeline.max_entries,
                    settings: settings.fanout.clone(),
                    stats: stats.clone(),
                    bus: bus.clone(),
                });
                let (log, stop) = (log.clone(), fanout_stop.clone());
                let task = tokio::spawn(async move {
                    if let Err(e) = fanout.run(log, stop).await {
                        tracing::error!(error = %e, "fan-out worker stopped with an error");
                    }
                });
                (Some(stats), Some(task))
            }
            _ => (None, None),
        };

        let background_stop = CancellationToken::new();
        let mut background = Vec::new();
        for publisher in &publishers {
            background.push(tokio::spawn(publisher.clone().run_relay(Duration::from_secs(2), background_stop.clone())));
        }
        if let Some(memory) = &backends.memory {
            let every = Duration::from_millis(settings.timeline.sweep_every_ms.max(10));
            background.push(memory.spawn_sweeper(every, background_stop.clone()));
        }

        let registry = starling_metrics::Metrics::new(service_label(roles));
        register_metrics(
            &registry,
            Measured {
                log_lag: backends.log_lag,
                outboxes,
                fanout: fanout_stats,
                timeline: timeline.as_ref(),
                memory: backends.memory.clone(),
            },
        )
        .context("registering the metrics")?;
        let ready = Arc::new(AtomicBool::new(false));
        let ops = web::Data::new(Ops {
            ready: ready.clone(),
            cache: backends.cache.clone(),
            model: backends.model.clone(),
            admin_token: settings.admin.token.clone(),
            registry,
        });
        let red = starling_metrics::Red(ops.registry.http.clone());
        let tokens = web::Data::new(tokens);
        // OAuth access tokens are looked up where the graph store is (held in memory there
        // when that store is embedded), else through the grant cache and the graph-service.
        let grants: Arc<dyn GrantVerifier> = match store {
            Some(s) if has(Role::Graph) => {
                Arc::new(StoreGrants { auth: s.auth.clone(), users: s.graph.clone(), memo: grant_memo.clone() })
            }
            _ => Arc::new(RemoteGrants { graph: HttpGraph::new(&peers.graph_url)?, cache: backends.model.clone() }),
        };
        let grants = web::Data::new(grants);
        let listener = std::net::TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        let mut server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(red.clone())
                // Outermost: the request's span covers all of its handling.
                .wrap(starling_api::traced::Traced)
                .app_data(tokens.clone())
                .app_data(grants.clone())
                .app_data(ops.clone())
                .configure(starling_api::configure_extractors);
            // The home timeline is the hottest route: matched first, before the routes
            // with path parameters that the router has to try one by one.
            if let Some(t) = &timeline {
                app = app.configure(|cfg| t.configure(cfg));
            }
            if let Some(g) = &graph {
                app = app.configure(|cfg| g.configure(cfg));
                if internal {
                    app = app.configure(|cfg| g.configure_internal(cfg));
                }
            }
            if let Some(p) = &posts {
                app = app.configure(|cfg| p.configure(cfg));
                if internal {
                    app = app.configure(|cfg| p.configure_internal(cfg));
                }
            }
            app.route("/healthz", web::get().to(starling_api::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
                .route("/openapi.json", web::get().to(openapi))
                .route("/admin/v1/cache/clear", web::post().to(clear_cache))
                .default_service(web::to(starling_api::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.http_workers > 0 {
            server = server.workers(settings.server.http_workers);
        }
        let server = server.run();
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        ready.store(true, Ordering::SeqCst);
        tracing::info!(%addr, ?roles, data_dir = %settings.server.data_dir.display(), "starling is up");

        Ok(Node {
            addr,
            server: handle,
            server_task,
            fanout_stop,
            fanout_task,
            background_stop,
            background,
            publishers,
            ready,
            store: backends.store.and_then(|s| s.embedded),
        })
    }

    /// Graceful stop: nothing accepted is left unapplied or unflushed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::SeqCst);
        // Finishes in-flight requests; their events are in the log when they answer.
        self.server.stop(true).await;
        let _ = self.server_task.await;
        // Anything a failed publish left behind goes to the log before the drain.
        for p in &self.publishers {
            if let Err(e) = p.drain().await {
                tracing::warn!(error = %e, "could not empty an outbox; the next start will");
            }
        }
        self.fanout_stop.cancel();
        if let Some(task) = self.fanout_task {
            let _ = task.await;
        }
        self.background_stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        if let Some(store) = &self.store {
            store.persist().context("flushing the store")?;
        }
        tracing::info!("starling stopped cleanly");
        Ok(())
    }
}

/// The configured secret, or the one kept in the data directory (created on first start
/// so tokens survive restarts). Separate processes must share a configured secret.
fn jwt_secret(settings: &Settings) -> anyhow::Result<String> {
    if !settings.auth.jwt_secret.is_empty() {
        return Ok(settings.auth.jwt_secret.clone());
    }
    let path = settings.server.data_dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_owned());
    }
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

async fn readyz(ops: web::Data<Ops>) -> HttpResponse {
    if ops.ready.load(Ordering::SeqCst) {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "stopping" }))
    }
}

async fn metrics(ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(ops.registry.render())
}

/// What a node measures beyond HTTP and the process, for [`register_metrics`].
struct Measured<'a> {
    log_lag: starling_metrics::Pulled,
    outboxes: Vec<(Role, Publisher)>,
    fanout: Option<Arc<FanoutStats>>,
    timeline: Option<&'a Arc<TimelineService>>,
    /// The in-memory cache, whose size is cheap to read. Redis is not asked: counting its
    /// timelines is a SCAN over every key, too costly for each metrics scrape (Redis's own
    /// INFO keyspace reports it).
    memory: Option<Arc<MemoryCache>>,
}

/// Registers in `registry` what the node's roles measure. Values kept elsewhere (the
/// publishers' counts, the cache's size) are read when scraped ([`Pulled`]).
fn register_metrics(registry: &starling_metrics::Metrics, m: Measured<'_>) -> anyhow::Result<()> {
    // A process that consumes nothing (graph-, post-, timeline-service) reports no series.
    registry.register(m.log_lag)?;
    if !m.outboxes.is_empty() || m.fanout.is_some() {
        // The fan-out appends too: the slices of long follower lists. Counting them here
        // keeps "everything published was applied" a complete quiet check.
        let publishers: Vec<Publisher> = m.outboxes.iter().map(|(_, p)| p.clone()).collect();
        let fanout = m.fanout.clone();
        registry.register(Pulled::counter(
            names::EVENTS_PUBLISHED,
            "Events this process appended to the log.",
            move || {
                let slices = fanout.as_ref().map_or(0, |f| f.slices_published.get());
                (publishers.iter().map(Publisher::published).sum::<u64>() + slices) as f64
            },
        ))?;
    }
    if !m.outboxes.is_empty() {
        // Labelled by the service owning the outbox even when one process runs both, so
        // the standalone process reports its two outboxes apart.
        let outboxes = m.outboxes;
        registry.register(Pulled::gauges(
            names::OUTBOX_DEPTH,
            "Events in the service's outbox not yet acknowledged as in the log, as the relay's last sweep \
             (every 2 s) found them, counted up to 512.",
            &["service"],
            move || outboxes.iter().map(|(role, p)| (vec![role.name().to_owned()], p.depth() as f64)).collect(),
        ))?;
    }
    if let Some(f) = &m.fanout {
        f.register(registry)?;
    }
    if let Some(t) = m.timeline {
        t.stats.register(registry)?;
    }
    if let Some(memory) = m.memory {
        // A scrape reads the three gauges one after the other: one pass over the cache's
        // shards serves them all.
        let usage = Arc::new(ScanOnce::new(move || memory.usage_now()));
        let u = usage.clone();
        registry.register(Pulled::gauge(names::TIMELINES_MATERIALISED, "Timelines held in the cache.", move || {
            u.get().timelines as f64
        }))?;
        let u = usage.clone();
        registry.register(Pulled::gauge(
            names::TIMELINE_CACHE_ENTRIES,
            "Entries held by the timeline cache, idle timelines not yet swept included.",
            move || u.get().entries as f64,
        ))?;
        registry.register(Pulled::gauge(
            names::TIMELINE_CACHE_BYTES,
            "Bytes held by the timeline cache's timelines (entry buffers at capacity, headers, keys).",
            move || usage.get().bytes as f64,
        ))?;
    }
    Ok(())
}

/// A value that is costly to read, read again only when the last reading is older than
/// [`ScanOnce::FRESH`]: the gauges of one scrape share one reading.
struct ScanOnce<T> {
    read: Box<dyn Fn() -> T + Send + Sync>,
    last: std::sync::Mutex<Option<(std::time::Instant, T)>>,
}

impl<T: Copy> ScanOnce<T> {
    const FRESH: Duration = Duration::from_millis(100);

    fn new(read: impl Fn() -> T + Send + Sync + 'static) -> Self {
        ScanOnce { read: Box::new(read), last: std::sync::Mutex::new(None) }
    }

    fn get(&self) -> T {
        // A panic while reading leaves nothing half-written: the value is taken whole.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some((at, value)) if at.elapsed() < Self::FRESH => value,
            _ => {
                let value = (self.read)();
                *last = Some((std::time::Instant::now(), value));
                value
            }
        }
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(starling_api::OPENAPI_JSON)
}

/// Drops every materialised timeline and the read model; the next reads rebuild and fill
/// them from storage.
async fn clear_cache(ops: web::Data<Ops>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    starling_api::admin::require(&req, &ops.admin_token)?;
    let Some(cache) = ops.cache.as_ref() else {
        return Err(ApiError::new(ErrorCode::NotFound, "this process holds no timeline cache"));
    };
    cache.clear().await.map_err(ApiError::unavailable)?;
    if let Some(model) = &ops.model {
        model.clear().await.map_err(ApiError::unavailable)?;
    }
    Ok(HttpResponse::NoContent().finish())
}
