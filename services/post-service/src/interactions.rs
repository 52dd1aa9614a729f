//! What people do with a status besides posting it: reblog and unreblog, favourite and
//! unfavourite, who did either (`reblogged_by`, `favourited_by`), and the thread around it
//! (`context`).
//!
//! As in Mastodon, every action on a reblog acts on its original: reblogging a reblog
//! reblogs the original, and favourites belong to originals. A reblog is a post of the
//! reblogger's with its own id and its own `PostCreated` event (carrying `reblog_of`), so
//! it reaches the reblogger's followers through the same fan-out as a post; unreblogging
//! deletes that post. Each user reblogs a status at most once: a second reblog answers the
//! first.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::future::try_join_all;
use serde::Serialize;
use starling_api::ApiError;
use starling_api::auth::{AuthUser, Viewer};
use starling_api::mastodon::{Account, PublicBase, Status};
use starling_api::pagination::{ListPage, Page};
use starling_ids::{PostId, UserId};
use starling_storage::{NotificationKind, Order, PostRecord, Reblogged, Window};

use crate::{PostService, created_event, post_id};

type Svc = web::Data<PostService>;

/// How far `context` walks up a thread, and how many replies it gathers below.
const MAX_ANCESTORS: usize = 40;
const MAX_DESCENDANTS: usize = 60;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/statuses/{id}/reblog", web::post().to(reblog))
        .route("/api/v1/statuses/{id}/unreblog", web::post().to(unreblog))
        .route("/api/v1/statuses/{id}/favourite", web::post().to(favourite))
        .route("/api/v1/statuses/{id}/unfavourite", web::post().to(unfavourite))
        .route("/api/v1/statuses/{id}/reblogged_by", web::get().to(reblogged_by))
        .route("/api/v1/statuses/{id}/favourited_by", web::get().to(favourited_by))
        .route("/api/v1/statuses/{id}/context", web::get().to(context));
}

impl PostService {
    /// The status `raw` names, or the original if it names a reblog; 404 if none.
    async fn original(&self, raw: &str) -> Result<PostRecord, ApiError> {
        let post = self.find(post_id(raw)?).await?;
        match post.reblog_of {
            Some(original) => self.find(original).await,
            None => Ok(post),
        }
    }

    /// `me` reblogs `original` (once: a second reblog is the first), answered once the
    /// reblog's event is in the log.
    async fn reblog(&self, me: &AuthUser, original: &PostRecord) -> Result<PostRecord, ApiError> {
        me.require("write:statuses")?;
        self.limiter.check(me.id)?;
        let reblog = PostRecord {
            id: self.ids.next_post(),
            author: me.id,
            author_handle: me.handle.clone(),
            text: String::new(),
            reply_to: None,
            reblog_of: Some(original.id),
        };
        let events = vec![created_event(&reblog)];
        match self.store.reblog(&reblog, events.clone()).await.map_err(ApiError::unavailable)? {
            Reblogged::Created { outbox } => {
                self.cache_post(&reblog).await;
                self.cache_interactions(me.id, &[original.id]).await;
                self.notify(NotificationKind::Reblog, original.author, me.id, original.id, reblog.id.get()).await;
                self.publisher.publish(events, &outbox).await.map_err(ApiError::unavailable)?;
                Ok(reblog)
            }
            Reblogged::Existing(first) => Ok(first),
            // Deleted since it was looked up.
            Reblogged::NoOriginal => Err(ApiError::not_found("status")),
        }
    }
}

async fn reblog(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let original = svc.original(&path).await?;
    let reblog = svc.reblog(&me, &original).await?;
    Ok(HttpResponse::Ok().json(svc.status(&req, &reblog, Some(me.id)).await?))
}

/// Answers the original, no longer reblogged; unreblogging what one never reblogged is not
/// an error (Mastodon answers the status too).
async fn unreblog(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    me.require("write:statuses")?;
    let original = svc.original(&path).await?;
    if let Some(reblog) = svc.store.reblog_by(original.id, me.id).await.map_err(ApiError::unavailable)? {
        svc.limiter.check(me.id)?;
        svc.remove_post(reblog).await?;
        svc.unnotify(NotificationKind::Reblog, original.author, me.id, original.id).await;
    }
    Ok(HttpResponse::Ok().json(svc.status(&req, &original, Some(me.id)).await?))
}

async fn favourite(
    svc: Svc,
    me: AuthUser,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_favourite(svc, me, req, path, true).await
}

async fn unfavourite(
    svc: Svc,
    me: AuthUser,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_favourite(svc, me, req, path, false).await
}

/// Both are idempotent and answer the status as `me` now sees it.
async fn set_favourite(
    svc: Svc,
    me: AuthUser,
    req: HttpRequest,
    path: web::Path<String>,
    on: bool,
) -> Result<HttpResponse, ApiError> {
    me.require("write:favourites")?;
    let original = svc.original(&path).await?;
    svc.limiter.check(me.id)?;
    let Some(changed) = svc.store.set_favourite(original.id, me.id, on).await.map_err(ApiError::unavailable)? else {
        return Err(ApiError::not_found("status"));
    };
    svc.cache_interactions(me.id, &[original.id]).await;
    match (changed, on) {
        (true, true) => {
            let id = svc.ids.next_post().get();
            svc.notify(NotificationKind::Favourite, original.author, me.id, original.id, id).await;
        }
        (true, false) => svc.unnotify(NotificationKind::Favourite, original.author, me.id, original.id).await,
        (false, _) => {}
    }
    Ok(HttpResponse::Ok().json(svc.status(&req, &original, Some(me.id)).await?))
}

impl PostService {
    /// The accounts of `users`, in order; users that no longer exist are left out.
    pub(crate) async fn accounts(&self, base: &PublicBase, users: &[UserId]) -> Result<Vec<Account>, ApiError> {
        let found = try_join_all(users.iter().map(|&u| async move {
            match self.graph.user(u).await.map_err(ApiError::unavailable)? {
                Some(user) => self.account(base, user.id, &user.handle).await.map(Some),
                None => Ok(None),
            }
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// Who reblogged the status, newest reblog first, paged by reblog id (`max_id`, `since_id`).
async fn reblogged_by(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let page = Page::from_request(&req)?;
    let original = svc.original(&path).await?;
    let window = Window { before: page.max_id, after: page.since_id, limit: page.limit, order: Order::NewestFirst };
    let reblogs = svc.store.reblogs(original.id, window).await.map_err(ApiError::unavailable)?;
    let base = PublicBase::of(&req);
    let users: Vec<UserId> = reblogs.iter().map(|r| r.1).collect();
    let accounts = svc.accounts(&base, &users).await?;
    let mut res = HttpResponse::Ok();
    if reblogs.len() == page.limit
        && let Some((last, _)) = reblogs.last()
    {
        let here = format!("{}{}", base.0, req.path());
        res.insert_header(("Link", format!("<{here}?max_id={last}&limit={}>; rel=\"next\"", page.limit)));
    }
    Ok(res.json(accounts))
}

/// Who favourited the status, by account id (Mastodon orders by when; Starling keeps no
/// time for a favourite), paged by the `cursor` of the `Link` header.
async fn favourited_by(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let page = ListPage::from_request(&req)?;
    let original = svc.original(&path).await?;
    let users = svc.store.favourited_by(original.id, page.after, page.limit).await.map_err(ApiError::unavailable)?;
    let base = PublicBase::of(&req);
    let accounts = svc.accounts(&base, &users).await?;
    let mut res = HttpResponse::Ok();
    if users.len() == page.limit
        && let Some(last) = users.last()
    {
        let here = format!("{}{}", base.0, req.path());
        res.insert_header(("Link", format!("<{here}?cursor={last}&limit={}>; rel=\"next\"", page.limit)));
    }
    Ok(res.json(accounts))
}

#[derive(Serialize)]
struct Context {
    ancestors: Vec<Status>,
    descendants: Vec<Status>,
}

/// The thread around a status: its ancestors oldest first (up to [`MAX_ANCESTORS`]) and its
/// replies and theirs, depth first in reply order (up to [`MAX_DESCENDANTS`]).
async fn context(
    svc: Svc,
    viewer: Viewer,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let status = svc.original(&path).await?;
    let mut ancestors = Vec::new();
    let mut parent = status.reply_to;
    while let Some(id) = parent.filter(|_| ancestors.len() < MAX_ANCESTORS) {
        let Some(p) = svc.store.get_posts(&[id]).await.map_err(ApiError::unavailable)?.pop().flatten() else {
            break;
        };
        parent = p.reply_to;
        ancestors.push(p);
    }
    ancestors.reverse();
    let mut descendants = Vec::new();
    // Depth first: each reply followed by its own replies, as a thread reads.
    let mut stack: Vec<PostId> = vec![status.id];
    while let Some(id) = stack.pop() {
        if descendants.len() >= MAX_DESCENDANTS {
            break;
        }
        let replies = svc.store.replies(id, MAX_DESCENDANTS).await.map_err(ApiError::unavailable)?;
        if id != status.id {
            descendants.push(id);
        }
        stack.extend(replies.into_iter().rev());
    }
    let descendants: Vec<PostRecord> =
        svc.store.get_posts(&descendants).await.map_err(ApiError::unavailable)?.into_iter().flatten().collect();
    let base = PublicBase::of(&req);
    let (ancestors, descendants) = futures::try_join!(
        svc.statuses(&base, &ancestors, viewer.id()),
        svc.statuses(&base, &descendants, viewer.id()),
    )?;
    Ok(HttpResponse::Ok().json(Context { ancestors, descendants }))
}
