//! Starling standalone: the four services in one process, on embedded backends.
//!
//! [`Standalone::start`] opens the data directory (fjall store and event log), builds
//! post-service, graph-service, timeline-service and the fan-out worker with in-process
//! clients between them, binds one HTTP listener and starts the background tasks
//! (fan-out consumers, outbox relays, idle-timeline sweeper). [`Standalone::stop`] is
//! the graceful path: refuse new requests, finish in-flight ones, drain the fan-out,
//! flush to disk.

pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use fanout_worker::{Fanout, FanoutStats};
use graph_service::GraphService;
use post_service::PostService;
use starling_api::auth::TokenKeys;
use starling_api::rate_limit::{RateLimit, RateLimiter};
use starling_api::{ApiError, ErrorCode};
use starling_clients::local::{LocalGraph, LocalPosts};
use starling_clients::{GraphClient, PostClient};
use starling_events::EventLog;
use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
use starling_ids::IdGenerator;
use starling_outbox::Publisher;
use starling_storage::embedded::{Durability, EmbeddedStore};
use starling_timeline_cache::TimelineCache;
use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
use timeline_service::{ReadSettings, TimelineService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// A running standalone server.
pub struct Standalone {
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    /// Stops the fan-out consumers (after draining).
    fanout_stop: CancellationToken,
    fanout_task: JoinHandle<()>,
    /// Stops the relays and the sweeper.
    background_stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
    publishers: Vec<Publisher>,
    ready: Arc<AtomicBool>,
    store: EmbeddedStore,
}

/// State the operational endpoints need.
struct Ops {
    ready: Arc<AtomicBool>,
    fanout: Arc<FanoutStats>,
    timeline: Arc<TimelineService>,
    cache: Arc<dyn TimelineCache>,
    admin_token: String,
}

impl Standalone {
    pub async fn start(settings: Settings) -> anyhow::Result<Standalone> {
        settings.validate()?;
        let data = &settings.server.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating data directory {}", data.display()))?;
        let durability = if settings.storage.sync { Durability::SyncData } else { Durability::Buffer };
        let store = EmbeddedStore::open(&data.join("store"), durability).context("opening the embedded store")?;
        let log: Arc<dyn EventLog> = EmbeddedLog::open(
            &data.join("log"),
            EmbeddedLogOptions { partitions: settings.storage.log_partitions, sync: settings.storage.sync },
        )
        .context("opening the embedded event log")?;
        let cache = Arc::new(MemoryCache::new(MemoryCacheOptions {
            max_entries: settings.timeline.max_entries,
            active_for: Duration::from_secs(settings.timeline.active_for_secs),
            ..MemoryCacheOptions::default()
        }));
        let dyn_cache: Arc<dyn TimelineCache> = cache.clone();

        let ids = Arc::new(IdGenerator::new(settings.server.worker_id)?);
        let tokens = TokenKeys::from_secret(
            jwt_secret(&settings)?.as_bytes(),
            Duration::from_secs(settings.auth.token_ttl_secs),
        );
        let limit = RateLimit { per_second: settings.rate_limit.writes_per_second, burst: settings.rate_limit.burst };
        let (posts_store, graph_store) = (store.posts(), store.graph());
        let graph_client: Arc<dyn GraphClient> = Arc::new(LocalGraph(graph_store.clone()));
        let post_client: Arc<dyn PostClient> = Arc::new(LocalPosts(posts_store.clone()));
        let post_publisher = Publisher::new(posts_store.clone(), log.clone());
        let graph_publisher = Publisher::new(graph_store.clone(), log.clone());

        // Events a crash left in the outboxes go out before anything new.
        post_publisher.drain().await.context("republishing the post outbox")?;
        graph_publisher.drain().await.context("republishing the graph outbox")?;

        let graph = Arc::new(GraphService {
            store: graph_store,
            publisher: graph_publisher.clone(),
            ids: ids.clone(),
            tokens: tokens.clone(),
            limiter: RateLimiter::new(limit),
            celebrity: settings.celebrity.clone(),
        });
        let posts = Arc::new(PostService {
            store: posts_store,
            graph: graph_client.clone(),
            publisher: post_publisher.clone(),
            ids,
            limiter: RateLimiter::new(limit),
        });
        let timeline = Arc::new(TimelineService::new(
            dyn_cache.clone(),
            graph_client.clone(),
            post_client.clone(),
            ReadSettings {
                max_entries: settings.timeline.max_entries,
                celebrity_refresh: Duration::from_millis(settings.timeline.celebrity_refresh_ms),
                celebrity_posts_ttl: Duration::from_millis(settings.timeline.celebrity_posts_ttl_ms),
            },
        ));
        let fanout_stats = Arc::new(FanoutStats::default());
        let fanout = Arc::new(Fanout {
            graph: graph_client,
            posts: post_client,
            cache: dyn_cache.clone(),
            max_entries: settings.timeline.max_entries,
            settings: settings.fanout.clone(),
            stats: fanout_stats.clone(),
        });

        let fanout_stop = CancellationToken::new();
        let fanout_task = {
            let (log, stop) = (log.clone(), fanout_stop.clone());
            tokio::spawn(async move {
                if let Err(e) = fanout.run(log, stop).await {
                    tracing::error!(error = %e, "fan-out worker stopped with an error");
                }
            })
        };
        let background_stop = CancellationToken::new();
        let mut background = Vec::new();
        for publisher in [post_publisher.clone(), graph_publisher.clone()] {
            background.push(tokio::spawn(publisher.run_relay(Duration::from_secs(2), background_stop.clone())));
        }
        let sweep_every = Duration::from_millis(settings.timeline.sweep_every_ms.max(10));
        background.push(cache.spawn_sweeper(sweep_every, background_stop.clone()));

        let ready = Arc::new(AtomicBool::new(false));
        let ops = web::Data::new(Ops {
            ready: ready.clone(),
            fanout: fanout_stats,
            timeline: timeline.clone(),
            cache: dyn_cache,
            admin_token: settings.admin.token.clone(),
        });
        let tokens = web::Data::new(tokens);
        let listener = std::net::TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(tokens.clone())
                .app_data(ops.clone())
                .configure(starling_api::configure_extractors)
                // The home timeline is the hottest route: matched first, before the
                // routes with path parameters that the router has to try one by one.
                .configure(|cfg| timeline.configure(cfg))
                .configure(|cfg| graph.configure(cfg))
                .configure(|cfg| posts.configure(cfg))
                .route("/healthz", web::get().to(starling_api::healthz))
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
        tracing::info!(%addr, data_dir = %data.display(), "starling is up");

        Ok(Standalone {
            addr,
            server: handle,
            server_task,
            fanout_stop,
            fanout_task,
            background_stop,
            background,
            publishers: vec![post_publisher, graph_publisher],
            ready,
            store,
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
        let _ = self.fanout_task.await;
        self.background_stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.store.persist().context("flushing the store")?;
        tracing::info!("starling stopped cleanly");
        Ok(())
    }
}

/// The configured secret, or the one kept in the data directory (created on first start
/// so tokens survive restarts).
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
    let timelines = ops.cache.len().await.unwrap_or(0);
    let body = format!(
        "{}{}# HELP starling_timelines_materialised Timelines held in the cache.\n# TYPE starling_timelines_materialised gauge\nstarling_timelines_materialised {timelines}\n",
        ops.fanout.render(),
        ops.timeline.stats.render()
    );
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(starling_api::OPENAPI_JSON)
}

/// Drops every materialised timeline; the next reads rebuild them from storage.
async fn clear_cache(ops: web::Data<Ops>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let expected = format!("Bearer {}", ops.admin_token);
    let given = req.headers().get("Authorization").and_then(|v| v.to_str().ok());
    if ops.admin_token.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "the admin API is disabled"));
    }
    if given != Some(expected.as_str()) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "admin token required"));
    }
    ops.cache.clear().await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::NoContent().finish())
}
