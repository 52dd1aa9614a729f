//! The graph-service's internal API: what the fan-out worker and the timeline-service
//! read when they run in other processes. Not for clients: it is served on the service's
//! own port and must not be routed from the public ingress.

use actix_web::{HttpResponse, web};
use starling_api::ApiError;
use std::collections::HashMap;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use starling_clients::EdgeState;
use starling_clients::local::{FOLLOWING_PAGE, all_pages, delivers, home_following};
use starling_clients::wire::{
    AfterQuery, Class, EdgeStates, Edges, Follows, MAX_INTERNAL_PAGE, Removed, STORE_CALLS_IN_FLIGHT, UserIds,
    WindowQuery, WireCounts, WireNotifications, WireUser,
};
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, NotificationKind, Window};

use crate::GraphService;

type Svc = web::Data<GraphService>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/v1/users/{id}", web::get().to(user))
        .route("/internal/v1/users/{id}/followers", web::get().to(followers))
        .route("/internal/v1/users/{id}/following", web::get().to(following))
        .route("/internal/v1/users/{id}/muters", web::get().to(muters))
        .route("/internal/v1/users/{id}/notifications", web::get().to(notifications))
        .route("/internal/v1/users/{id}/notifications/follow/{other}", web::delete().to(remove_follow_notification))
        .route("/internal/v1/users/{id}/follows/{other}", web::get().to(follows))
        .route("/internal/v1/users/{id}/class", web::get().to(class))
        .route("/internal/v1/users/{id}/counts", web::get().to(counts))
        .route("/internal/v1/celebrities", web::get().to(celebrities))
        .service(web::resource("/internal/v1/edges").app_data(starling_api::internal_json()).post(edges));
}

fn id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("user"))
}

async fn user(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let user = svc.store.user(id(&path)?).await.map_err(ApiError::unavailable)?;
    let user = user.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(HttpResponse::Ok().json(WireUser::from(user)))
}

async fn counts(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let c = svc.store.counts(id(&path)?).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(WireCounts { followers: c.followers, following: c.following }))
}

async fn followers(svc: Svc, path: web::Path<String>, q: web::Query<AfterQuery>) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.clamp(1, MAX_INTERNAL_PAGE);
    let ids = svc.store.followers(id(&path)?, q.after, limit).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(UserIds { ids }))
}

/// The home timeline's authors: follows that are not muted (see `GraphClient::following`).
async fn following(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let ids = home_following(&*svc.store, id(&path)?).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(UserIds { ids }))
}

async fn muters(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let user = id(&path)?;
    let ids = all_pages(|after| svc.store.muters(user, after, FOLLOWING_PAGE)).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(UserIds { ids }))
}

/// The notifications this store keeps for the user (its follows), in a window of ids.
async fn notifications(
    svc: Svc,
    path: web::Path<String>,
    q: web::Query<WindowQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut window = Window::from(q.into_inner());
    window.limit = window.limit.min(MAX_INTERNAL_PAGE);
    let window = Window {
        before: window.before.map(PostId::get),
        after: window.after.map(PostId::get),
        limit: window.limit,
        order: window.order,
    };
    let found = svc.store.notifications(id(&path)?, window).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(WireNotifications::from_store(&found)))
}

/// Takes back the user's notification that `other` followed it (the user dismissed it).
async fn remove_follow_notification(svc: Svc, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (recipient, follower) = (id(&path.0)?, id(&path.1)?);
    let removed = svc
        .store
        .remove_notification(recipient, NotificationKind::Follow, follower, None)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Removed { removed }))
}

async fn follows(svc: Svc, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let follows = delivers(&*svc.store, id(&path.0)?, id(&path.1)?).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Follows { follows }))
}

async fn class(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let class = svc.store.author_class(id(&path)?).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(Class::from(class)))
}

async fn celebrities(svc: Svc) -> Result<HttpResponse, ApiError> {
    let ids = svc.store.celebrities().await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(UserIds { ids }))
}

/// The state of many edges at once (see `GraphClient::edges`): the edges looked up
/// concurrently (a store across the network answers many at once), then each followee's
/// class once.
async fn edges(svc: Svc, body: web::Json<Edges>) -> Result<HttpResponse, ApiError> {
    if body.edges.len() > MAX_INTERNAL_PAGE {
        return Err(ApiError::validation(format!("at most {MAX_INTERNAL_PAGE} edges per call")));
    }
    let store = &svc.store;
    let lookups = body.edges.iter().map(|&(follower, followee)| delivers(&**store, follower, followee));
    let follows: Vec<bool> =
        stream::iter(lookups).buffered(STORE_CALLS_IN_FLIGHT).try_collect().await.map_err(ApiError::unavailable)?;
    let mut followees: Vec<UserId> =
        body.edges.iter().zip(&follows).filter(|(_, follows)| **follows).map(|(&(_, followee), _)| followee).collect();
    followees.sort_unstable();
    followees.dedup();
    let classes = followees.into_iter().map(|u| async move { store.author_class(u).await.map(|class| (u, class)) });
    let classes: HashMap<UserId, AuthorClass> = stream::iter(classes)
        .buffer_unordered(STORE_CALLS_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(ApiError::unavailable)?;
    let states = body.edges.iter().zip(follows).map(|(&(_, followee), follows)| EdgeState {
        follows,
        celebrity: follows && classes.get(&followee) == Some(&AuthorClass::Celebrity),
    });
    Ok(HttpResponse::Ok().json(EdgeStates { edges: states.collect() }))
}
