//! Mastodon's status endpoints: `POST /api/v1/statuses` (form or JSON, `Idempotency-Key`),
//! `GET` and `DELETE /api/v1/statuses/{id}`, and an account's statuses
//! (`GET /api/v1/accounts/{id}/statuses`, paged by `max_id`/`since_id`/`min_id` and an
//! absolute `Link` header), answering Status entities.
//!
//! A status's account comes from the graph-service (one call for the author and its
//! counts); `in_reply_to_account_id` from the parent post. Only public statuses exist:
//! a `visibility` other than `public` is refused rather than silently widened.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use starling_api::ApiError;
use std::collections::HashMap;

use futures::future::try_join_all;
use starling_api::auth::{AuthUser, Viewer};
use starling_api::form::FormOrJson;
use starling_api::mastodon::{Account, PublicBase, RawAccount, Status};
use starling_api::pagination::{Page, query_pairs};
use starling_ids::{PostId, UserId};
use starling_storage::{Interactions, PostRecord, UserRecord};

use crate::{PostService, post_id};

/// Is query flag `name` set to true (`true` or `1`, as clients send it)?
fn flag(pairs: &[(String, String)], name: &str) -> bool {
    pairs.iter().any(|(k, v)| k == name && matches!(v.as_str(), "true" | "1"))
}

type Svc = web::Data<PostService>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/statuses", web::post().to(create))
        .route("/api/v1/statuses/{id}", web::get().to(get))
        .route("/api/v1/statuses/{id}", web::delete().to(delete))
        .route("/api/v1/accounts/{id}/statuses", web::get().to(account_statuses));
}

#[derive(Deserialize)]
struct NewStatus {
    status: Option<String>,
    in_reply_to_id: Option<String>,
    visibility: Option<String>,
    spoiler_text: Option<String>,
    /// Taken and not used (statuses have no language yet); declared so that it must be a
    /// string. Other fields clients send by default (`sensitive`) are ignored.
    #[allow(dead_code)]
    language: Option<String>,
    #[serde(rename = "media_ids[]", alias = "media_ids")]
    media_ids: Option<serde_json::Value>,
}

impl PostService {
    /// `posts` as Statuses as `viewer` sees them: each status's counts and the viewer's
    /// flags from the store, a reblog wrapping its original, each author's account (with
    /// its counts, from the graph) fetched once. A reblog whose original is gone is left
    /// out (a delete takes its reblogs along; this covers the moment in between).
    pub(crate) async fn statuses(
        &self,
        base: &PublicBase,
        posts: &[PostRecord],
        viewer: Option<UserId>,
    ) -> Result<Vec<Status>, ApiError> {
        let unavailable = ApiError::unavailable;
        let wanted: Vec<PostId> = posts.iter().filter_map(|p| p.reblog_of).collect();
        let originals: HashMap<PostId, PostRecord> = self
            .store
            .get_posts(&wanted)
            .await
            .map_err(unavailable)?
            .into_iter()
            .flatten()
            .map(|p| (p.id, p))
            .collect();
        // The statuses shown in full: the plain posts and the reblogged originals.
        let shown: Vec<&PostRecord> = posts
            .iter()
            .filter_map(|p| match p.reblog_of {
                Some(o) => originals.get(&o),
                None => Some(p),
            })
            .collect();
        let ids: Vec<PostId> = shown.iter().map(|p| p.id).collect();
        let parents: Vec<PostId> = shown.iter().filter_map(|p| p.reply_to).collect();
        let (counts, parents) =
            futures::try_join!(self.store.interactions(&ids, viewer), self.store.get_posts(&parents),)
                .map_err(unavailable)?;
        let counts: HashMap<PostId, Interactions> = ids.into_iter().zip(counts).collect();
        let parent_authors: HashMap<PostId, UserId> = parents.into_iter().flatten().map(|p| (p.id, p.author)).collect();
        let mut authors: Vec<(UserId, &str)> =
            posts.iter().chain(originals.values()).map(|p| (p.author, p.author_handle.as_str())).collect();
        authors.sort_unstable();
        authors.dedup_by_key(|a| a.0);
        let accounts = try_join_all(authors.iter().map(|&(id, handle)| self.account(base, id, handle))).await?;
        let accounts: HashMap<UserId, RawAccount> =
            authors.iter().zip(accounts).map(|(&(id, _), a)| (id, RawAccount::new(&a))).collect();
        let full = |p: &PostRecord| {
            let parent = p.reply_to.and_then(|r| parent_authors.get(&r).copied());
            Status::new(base, p, &accounts[&p.author], parent).counted(&counts.get(&p.id).copied().unwrap_or_default())
        };
        Ok(posts
            .iter()
            .filter_map(|p| match p.reblog_of {
                Some(o) => originals.get(&o).map(|o| Status::reblog(base, p, &accounts[&p.author], full(o))),
                None => Some(full(p)),
            })
            .collect())
    }

    /// One status as `viewer` sees it.
    pub(crate) async fn status(
        &self,
        req: &HttpRequest,
        post: &PostRecord,
        viewer: Option<UserId>,
    ) -> Result<Status, ApiError> {
        let mut all = self.statuses(&PublicBase::of(req), std::slice::from_ref(post), viewer).await?;
        all.pop().ok_or_else(|| ApiError::not_found("status"))
    }

    /// The account of user `id` (whose handle the caller knows), with its counts.
    pub(crate) async fn account(&self, base: &PublicBase, id: UserId, handle: &str) -> Result<Account, ApiError> {
        let counts = self.graph.counts(id).await.map_err(ApiError::unavailable)?;
        let user = UserRecord { id, handle: handle.to_owned() };
        // The post count is the post-service's to know, but not indexed yet.
        Ok(Account::new(base, &user, counts, 0))
    }
}

async fn create(
    svc: Svc,
    me: AuthUser,
    req: HttpRequest,
    body: FormOrJson<NewStatus>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if body.visibility.as_deref().is_some_and(|v| v != "public") {
        return Err(ApiError::validation("only public statuses exist here: visibility must be public"));
    }
    if body.spoiler_text.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::validation("content warnings (spoiler_text) are not supported"));
    }
    if body.media_ids.as_ref().is_some_and(|m| !matches!(m, serde_json::Value::Array(a) if a.is_empty())) {
        return Err(ApiError::validation("media attachments are not supported"));
    }
    let reply_to = match body.in_reply_to_id.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<PostId>() {
            Ok(id) => Some(id),
            // Digits beyond the id range name no status, like any id of none.
            Err(_) if raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0') => {
                return Err(ApiError::not_found("status replied to"));
            }
            Err(_) => return Err(ApiError::validation("in_reply_to_id is not a status id")),
        },
        None => None,
    };
    let viewer = Some(me.id);
    let (post, replayed) = svc.create_post(me, &req, body.status.unwrap_or_default(), reply_to).await?;
    let mut res = HttpResponse::Ok();
    if replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(res.json(svc.status(&req, &post, viewer).await?))
}

async fn get(svc: Svc, viewer: Viewer, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let post = svc.find(post_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(svc.status(&req, &post, viewer.id()).await?))
}

/// Answers the deleted status with its plain `text`, as Mastodon does (for "delete and
/// redraft").
async fn delete(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let post = svc.find(post_id(&path)?).await?;
    // Deleted below with its reblogs and counts: rendered first.
    let mut status = svc.status(&req, &post, Some(me.id)).await?;
    svc.delete_post(&me, post.id).await?;
    status.text = Some(post.text);
    Ok(HttpResponse::Ok().json(status))
}

/// `GET /api/v1/accounts/{id}/statuses`, reblogs included. Starling has no media and no
/// pinned statuses, so `only_media` and `pinned` give an empty page; `exclude_replies` and
/// `exclude_reblogs` drop those from the page (which may then be short: the `Link` header
/// still leads on).
async fn account_statuses(
    svc: Svc,
    viewer: Viewer,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let page = Page::from_request(&req)?;
    let pairs = query_pairs(req.query_string())?;
    let posts = svc.author_page(&path, &page).await?;
    if flag(&pairs, "only_media") || flag(&pairs, "pinned") {
        return Ok(HttpResponse::Ok().json(Vec::<Status>::new()));
    }
    let ids: Vec<PostId> = posts.iter().map(|p| p.id).collect();
    let (prev, next) = page.cursors(&ids);
    let base = PublicBase::of(&req);
    let kept: Vec<PostRecord> = posts
        .into_iter()
        .filter(|p| !(flag(&pairs, "exclude_replies") && p.reply_to.is_some()))
        .filter(|p| !(flag(&pairs, "exclude_reblogs") && p.reblog_of.is_some()))
        .collect();
    let statuses = svc.statuses(&base, &kept, viewer.id()).await?;
    let mut res = HttpResponse::Ok();
    let here = format!("{}{}", base.0, req.path());
    if let Some(link) = page.link_header(&here, prev, next) {
        res.insert_header(("Link", link));
    }
    Ok(res.json(statuses))
}
