//! The post-service's internal API: hydration and per-author post lists for the
//! timeline-service and the fan-out worker in other processes. Not for clients: served on
//! the service's own port, never routed from the public ingress.

use actix_web::{HttpResponse, web};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use starling_api::ApiError;
use starling_clients::wire::{
    MAX_INTERNAL_PAGE, MAX_RECENT_AUTHORS, PostIds, Posts, RecentIds, RecentIdsQuery, WindowQuery, WirePost,
};
use starling_ids::{PostId, UserId};
use starling_storage::Window;

use crate::PostService;

type Svc = web::Data<PostService>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    let json = starling_api::internal_json;
    cfg.service(web::resource("/internal/v1/posts/lookup").app_data(json()).post(lookup))
        .route("/internal/v1/users/{id}/posts", web::get().to(by_author))
        .route("/internal/v1/users/{id}/post-ids", web::get().to(ids_by_author))
        .service(web::resource("/internal/v1/posts/recent-ids").app_data(json()).post(recent_ids));
}

fn window(q: WindowQuery) -> Window<starling_ids::PostId> {
    let mut w = Window::from(q);
    w.limit = w.limit.min(MAX_INTERNAL_PAGE);
    w
}

fn author(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("user"))
}

async fn lookup(svc: Svc, body: web::Json<PostIds>) -> Result<HttpResponse, ApiError> {
    if body.ids.len() > MAX_INTERNAL_PAGE {
        return Err(ApiError::validation(format!("at most {MAX_INTERNAL_PAGE} ids per lookup")));
    }
    let found = svc.store.get_posts(&body.ids).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Posts { posts: found.into_iter().map(|p| p.map(WirePost::from)).collect() }))
}

async fn by_author(svc: Svc, path: web::Path<String>, q: web::Query<WindowQuery>) -> Result<HttpResponse, ApiError> {
    let posts =
        svc.store.posts_by_author(author(&path)?, window(q.into_inner())).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Posts { posts: posts.into_iter().map(|p| Some(WirePost::from(p))).collect() }))
}

async fn ids_by_author(
    svc: Svc,
    path: web::Path<String>,
    q: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let ids =
        svc.store.post_ids_by_author(author(&path)?, window(q.into_inner())).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(PostIds { ids }))
}

/// Many authors' newest post ids at once: the backfills of a fan-out batch of follows, a
/// timeline rebuild.
async fn recent_ids(svc: Svc, body: web::Json<RecentIdsQuery>) -> Result<HttpResponse, ApiError> {
    if body.authors.len() > MAX_RECENT_AUTHORS {
        return Err(ApiError::validation(format!("at most {MAX_RECENT_AUTHORS} authors per call")));
    }
    let window = Window::newest(body.limit.min(MAX_INTERNAL_PAGE));
    let lookups = body.authors.iter().map(|&author| svc.store.post_ids_by_author(author, window));
    // Concurrently: a store across the network answers many at once.
    let ids: Vec<Vec<PostId>> =
        stream::iter(lookups).buffered(32).try_collect().await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(RecentIds { ids }))
}
