//! HTTP handlers of the graph-service.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use starling_api::auth::AuthUser;
use starling_api::pagination::ListPage;
use starling_api::views::UserRef;
use starling_api::{ApiError, ErrorCode, JsonObject};
use starling_events::trace::{self, TRACEPARENT, TraceContext};
use starling_events::{Record, pb};
use starling_ids::UserId;
use starling_storage::{AuthorClass, EdgeChange, UserRecord};

use crate::{GraphService, graph_event};

type Svc = web::Data<GraphService>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/users", web::post().to(register))
        .route("/api/v1/users/lookup", web::get().to(lookup))
        .route("/api/v1/users/{id}", web::get().to(get_user))
        .route("/api/v1/users/{id}/follow", web::post().to(follow))
        .route("/api/v1/users/{id}/follow", web::delete().to(unfollow))
        .route("/api/v1/users/{id}/block", web::post().to(block))
        .route("/api/v1/users/{id}/block", web::delete().to(unblock))
        .route("/api/v1/users/{id}/followers", web::get().to(followers))
        .route("/api/v1/users/{id}/following", web::get().to(following));
}

/// Runs `work` in the trace the request continues (its `traceparent` header, or a new
/// trace), so every event it publishes, a reclassification's included, carries it.
async fn traced<T>(req: &HttpRequest, work: impl Future<Output = T>) -> T {
    let incoming = req.headers().get(TRACEPARENT).map(|v| v.as_bytes());
    trace::scope(TraceContext::continue_or_start(incoming), work).await
}

/// A handle: 1 to 30 ASCII letters, digits or underscores, as Twitter allows.
pub struct Handle(String);

impl Handle {
    pub fn parse(s: &str) -> Result<Handle, ApiError> {
        if s.is_empty() || s.len() > 30 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ApiError::validation("handle must be 1 to 30 letters, digits or underscores"));
        }
        Ok(Handle(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    handle: String,
}

async fn register(svc: Svc, body: web::Json<JsonObject<Register>>) -> Result<HttpResponse, ApiError> {
    let handle = Handle::parse(&body.handle)?;
    let user = UserRecord { id: svc.ids.next_user(), handle: handle.0 };
    if !svc.store.create_user(&user).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::new(ErrorCode::Conflict, "handle is already taken"));
    }
    let token = svc.tokens.issue(user.id, &user.handle);
    Ok(HttpResponse::Created().json(json!({ "user": UserRef { id: user.id, handle: user.handle }, "token": token })))
}

/// Parses a path id; anything that is not an id cannot name a user, so it is a 404.
fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("user"))
}

pub(crate) async fn existing(svc: &GraphService, raw: &str) -> Result<UserRecord, ApiError> {
    let id = user_id(raw)?;
    svc.store.user(id).await.map_err(ApiError::unavailable)?.ok_or_else(|| ApiError::not_found("user"))
}

async fn profile(svc: &GraphService, user: UserRecord) -> Result<HttpResponse, ApiError> {
    let counts = svc.store.counts(user.id).await.map_err(ApiError::unavailable)?;
    let class = svc.store.author_class(user.id).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": user.id,
        "handle": user.handle,
        "followers_count": counts.followers,
        "following_count": counts.following,
        "celebrity": class == AuthorClass::Celebrity,
    })))
}

async fn get_user(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let user = existing(&svc, &path).await?;
    profile(&svc, user).await
}

#[derive(Deserialize)]
struct Lookup {
    handle: String,
}

async fn lookup(svc: Svc, q: web::Query<Lookup>) -> Result<HttpResponse, ApiError> {
    let user = svc
        .store
        .user_by_handle(&q.handle)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    profile(&svc, user).await
}

/// Validates the target of an edge change and returns it.
async fn target(svc: &GraphService, me: &AuthUser, raw: &str, op: EdgeOp) -> Result<UserId, ApiError> {
    me.require(op.scope())?;
    let target = existing(svc, raw).await?.id;
    if target == me.id {
        return Err(ApiError::validation(format!("you cannot {} yourself", op.verb())));
    }
    svc.limiter.check(me.id)?;
    Ok(target)
}

fn outcome(change: EdgeChange, unchanged: &str) -> Result<(), ApiError> {
    match change {
        EdgeChange::Changed { .. } => Ok(()),
        EdgeChange::Unchanged => Err(ApiError::new(ErrorCode::Conflict, unchanged)),
        EdgeChange::Blocked => Err(ApiError::new(ErrorCode::Forbidden, "one of you blocks the other")),
    }
}

fn edge(follower: UserId, followee: UserId) -> (u64, u64) {
    (follower.get(), followee.get())
}

/// A change to the edge from the caller to another user.
#[derive(Clone, Copy)]
pub(crate) enum EdgeOp {
    Follow,
    Unfollow,
    Block,
    Unblock,
    Mute,
    Unmute,
}

impl EdgeOp {
    fn verb(self) -> &'static str {
        match self {
            EdgeOp::Follow => "follow",
            EdgeOp::Unfollow => "unfollow",
            EdgeOp::Block => "block",
            EdgeOp::Unblock => "unblock",
            EdgeOp::Mute => "mute",
            EdgeOp::Unmute => "unmute",
        }
    }

    /// The OAuth scope it needs.
    fn scope(self) -> &'static str {
        match self {
            EdgeOp::Follow | EdgeOp::Unfollow => "write:follows",
            EdgeOp::Block | EdgeOp::Unblock => "write:blocks",
            EdgeOp::Mute | EdgeOp::Unmute => "write:mutes",
        }
    }
}

/// Validates the target (`raw`, a path id), then commits `op` with its event and
/// publishes it: the one path both APIs' follow and block endpoints take.
pub(crate) async fn change_edge(
    svc: &GraphService,
    me: &AuthUser,
    req: &HttpRequest,
    raw: &str,
    op: EdgeOp,
) -> Result<(UserId, EdgeChange), ApiError> {
    traced(req, async move {
        let them = target(svc, me, raw, op).await?;
        let (follower_id, followee_id) = edge(me.id, them);
        let (blocker_id, blocked_id) = (me.id.get(), them.get());
        let store = &svc.store;
        let change = match op {
            EdgeOp::Follow => {
                let event = graph_event(pb::graph_event::Kind::Followed(pb::Followed { follower_id, followee_id }));
                let events = vec![Record::graph(follower_id, &event)];
                let change = store.follow(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
                let change = svc.finish(change, events, &[them]).await?;
                if matches!(change, EdgeChange::Changed { .. }) {
                    svc.notify_follow(me.id, them).await;
                }
                change
            }
            EdgeOp::Unfollow => {
                let event = graph_event(pb::graph_event::Kind::Unfollowed(pb::Unfollowed { follower_id, followee_id }));
                let events = vec![Record::graph(follower_id, &event)];
                let change = store.unfollow(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
                svc.finish(change, events, &[them]).await?
            }
            EdgeOp::Block => {
                let event = graph_event(pb::graph_event::Kind::Blocked(pb::Blocked { blocker_id, blocked_id }));
                let events = vec![Record::graph(blocker_id, &event)];
                let change = store.block(me.id, them, events.clone()).await.map_err(ApiError::unavailable)?;
                // Both lost a follower, possibly.
                svc.finish(change, events, &[them, me.id]).await?
            }
            // Unblocking restores no follows, so no timeline changes: there is no event.
            EdgeOp::Unblock => store.unblock(me.id, them, Vec::new()).await.map_err(ApiError::unavailable)?,
            EdgeOp::Mute | EdgeOp::Unmute => {
                let (muter_id, muted_id) = (me.id.get(), them.get());
                let kind = match op {
                    EdgeOp::Mute => pb::graph_event::Kind::Muted(pb::Muted { muter_id, muted_id }),
                    _ => pb::graph_event::Kind::Unmuted(pb::Unmuted { muter_id, muted_id }),
                };
                let events = vec![Record::graph(muter_id, &graph_event(kind))];
                let change = match op {
                    EdgeOp::Mute => store.mute(me.id, them, events.clone()).await,
                    _ => store.unmute(me.id, them, events.clone()).await,
                }
                .map_err(ApiError::unavailable)?;
                // A mute changes no follower count: no author to reclassify.
                svc.finish(change, events, &[]).await?
            }
        };
        Ok((them, change))
    })
    .await
}

async fn follow(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (them, change) = change_edge(&svc, &me, &req, &path, EdgeOp::Follow).await?;
    outcome(change, "already following")?;
    Ok(HttpResponse::Ok().json(json!({ "id": them, "following": true })))
}

async fn unfollow(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (them, change) = change_edge(&svc, &me, &req, &path, EdgeOp::Unfollow).await?;
    outcome(change, "not following")?;
    Ok(HttpResponse::Ok().json(json!({ "id": them, "following": false })))
}

async fn block(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (them, change) = change_edge(&svc, &me, &req, &path, EdgeOp::Block).await?;
    outcome(change, "already blocked")?;
    Ok(HttpResponse::Ok().json(json!({ "id": them, "blocking": true })))
}

async fn unblock(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (them, change) = change_edge(&svc, &me, &req, &path, EdgeOp::Unblock).await?;
    outcome(change, "not blocked")?;
    Ok(HttpResponse::Ok().json(json!({ "id": them, "blocking": false })))
}

async fn followers(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    list(&svc, &req, &path, true).await
}

async fn following(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    list(&svc, &req, &path, false).await
}

async fn list(svc: &GraphService, req: &HttpRequest, raw: &str, followers: bool) -> Result<HttpResponse, ApiError> {
    let page = ListPage::from_request(req)?;
    let user = existing(svc, raw).await?;
    let ids = if followers {
        svc.store.followers(user.id, page.after, page.limit).await
    } else {
        svc.store.following(user.id, page.after, page.limit).await
    }
    .map_err(ApiError::unavailable)?;
    let mut users = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(u) = svc.store.user(*id).await.map_err(ApiError::unavailable)? {
            users.push(UserRef { id: u.id, handle: u.handle });
        }
    }
    let next_cursor = if ids.len() == page.limit { ids.last().copied() } else { None };
    Ok(HttpResponse::Ok().json(json!({ "users": users, "next_cursor": next_cursor })))
}
