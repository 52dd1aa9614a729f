//! The post-service's internal API: hydration and per-author post lists for the
//! timeline-service and the fan-out worker in other processes. Not for clients: served on
//! the service's own port, never routed from the public ingress.

use actix_web::{HttpResponse, web};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use starling_api::ApiError;
use starling_clients::wire::{
    IdsByAuthors, IdsByAuthorsQuery, InteractionsQuery, MAX_AUTHORS_PER_CALL, MAX_INTERNAL_PAGE, PostIds, Posts,
    Reblogs, STORE_CALLS_IN_FLIGHT, WindowQuery, WireInteractions, WirePost,
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
        .service(web::resource("/internal/v1/posts/ids-by-authors").app_data(json()).post(ids_by_authors))
        .route("/internal/v1/posts/{id}/reblogs", web::get().to(reblogs))
        .service(web::resource("/internal/v1/posts/interactions").app_data(json()).post(interactions));
}

async fn reblogs(svc: Svc, path: web::Path<String>, q: web::Query<WindowQuery>) -> Result<HttpResponse, ApiError> {
    let original = crate::post_id(&path)?;
    let reblogs = svc.store.reblogs(original, window(q.into_inner())).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Reblogs { reblogs }))
}

async fn interactions(svc: Svc, body: web::Json<InteractionsQuery>) -> Result<HttpResponse, ApiError> {
    if body.ids.len() > MAX_INTERNAL_PAGE {
        return Err(ApiError::validation(format!("at most {MAX_INTERNAL_PAGE} posts per call")));
    }
    let all = svc.store.interactions(&body.ids, body.viewer).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(WireInteractions::from_store(&all)))
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

/// Many authors' post ids in one window at once: a timeline's merge round, the backfills
/// of a fan-out batch of follows.
async fn ids_by_authors(svc: Svc, body: web::Json<IdsByAuthorsQuery>) -> Result<HttpResponse, ApiError> {
    let IdsByAuthorsQuery { authors, window: w } = body.into_inner();
    if authors.len() > MAX_AUTHORS_PER_CALL {
        return Err(ApiError::validation(format!("at most {MAX_AUTHORS_PER_CALL} authors per call")));
    }
    let w = window(w);
    let lookups = authors.iter().map(|&author| svc.store.post_ids_by_author(author, w));
    let ids: Vec<Vec<PostId>> =
        stream::iter(lookups).buffered(STORE_CALLS_IN_FLIGHT).try_collect().await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(IdsByAuthors { ids }))
}
