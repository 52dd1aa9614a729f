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
use starling_api::auth::AuthUser;
use starling_api::form::FormOrJson;
use starling_api::mastodon::{Account, PublicBase, RawAccount, Status};
use starling_api::pagination::{Page, query_pairs};
use starling_ids::PostId;
use starling_storage::{PostRecord, UserRecord};

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
    /// Other fields clients send by default (`sensitive`, `language`) are ignored.
    #[serde(rename = "media_ids[]", alias = "media_ids")]
    media_ids: Option<serde_json::Value>,
}

impl PostService {
    /// `post` as a Status, its author's account and counts fetched from the graph.
    async fn status(&self, req: &HttpRequest, post: &PostRecord) -> Result<Status, ApiError> {
        let base = PublicBase::of(req);
        let account = self.author(&base, post).await?;
        self.status_by(&base, post, account).await
    }

    /// The account of `post`'s author, with its counts from the graph.
    async fn author(&self, base: &PublicBase, post: &PostRecord) -> Result<Account, ApiError> {
        let counts = self.graph.counts(post.author).await.map_err(ApiError::unavailable)?;
        let author = UserRecord { id: post.author, handle: post.author_handle.clone() };
        // The post count is the post-service's to know, but not indexed yet.
        Ok(Account::new(base, &author, counts, 0))
    }

    /// `post` as a Status by `account`.
    async fn status_by(&self, base: &PublicBase, post: &PostRecord, account: Account) -> Result<Status, ApiError> {
        let parent_author = match post.reply_to {
            Some(parent) => {
                let found = self.store.get_posts(&[parent]).await.map_err(ApiError::unavailable)?;
                found.into_iter().flatten().next().map(|p| p.author)
            }
            None => None,
        };
        Ok(Status::new(base, post, &RawAccount::new(&account), parent_author))
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
        Some(raw) => {
            Some(raw.parse::<PostId>().map_err(|_| ApiError::validation("in_reply_to_id is not a status id"))?)
        }
        None => None,
    };
    let (post, _replayed) = svc.create_post(me, &req, body.status.unwrap_or_default(), reply_to).await?;
    Ok(HttpResponse::Ok().json(svc.status(&req, &post).await?))
}

async fn get(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = post_id(&path)?;
    let post = svc.store.get_posts(&[id]).await.map_err(ApiError::unavailable)?.pop().flatten();
    let post = post.ok_or_else(|| ApiError::not_found("status"))?;
    Ok(HttpResponse::Ok().json(svc.status(&req, &post).await?))
}

/// Answers the deleted status with its plain `text`, as Mastodon does (for "delete and
/// redraft").
async fn delete(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let post = svc.delete_post(&me, &req, post_id(&path)?).await?;
    let mut status = svc.status(&req, &post).await?;
    status.text = Some(post.text);
    Ok(HttpResponse::Ok().json(status))
}

/// `GET /api/v1/accounts/{id}/statuses`. Starling has no media and no pinned statuses, so
/// `only_media` and `pinned` give an empty page; `exclude_replies` drops replies from the
/// page (which may then be short: the `Link` header still leads on).
async fn account_statuses(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let page = Page::from_request(&req)?;
    let pairs = query_pairs(req.query_string())?;
    let posts = svc.author_page(&path, &page).await?;
    if flag(&pairs, "only_media") || flag(&pairs, "pinned") {
        return Ok(HttpResponse::Ok().json(Vec::<Status>::new()));
    }
    let ids: Vec<PostId> = posts.iter().map(|p| p.id).collect();
    let (prev, next) = page.cursors(&ids);
    let base = PublicBase::of(&req);
    let mut statuses = Vec::with_capacity(posts.len());
    // One author for the whole page: its account is fetched once.
    if let Some(first) = posts.first() {
        let account = svc.author(&base, first).await?;
        for post in posts.iter().filter(|p| !(flag(&pairs, "exclude_replies") && p.reply_to.is_some())) {
            statuses.push(svc.status_by(&base, post, account.clone()).await?);
        }
    }
    let mut res = HttpResponse::Ok();
    let here = format!("{}{}", base.0, req.path());
    if let Some(link) = page.link_header(&here, prev, next) {
        res.insert_header(("Link", link));
    }
    Ok(res.json(statuses))
}
