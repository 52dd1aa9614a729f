//! post-service: posts and a user's own posts.
//!
//! A create is answered only once the post and its `PostCreated` event are durable
//! (store + outbox in one write, then the event log). An `Idempotency-Key` makes a
//! retried create return the first result instead of posting twice.

mod interactions;
mod internal;
mod notifications;
mod statuses;

use std::sync::Arc;

use actix_web::{HttpRequest, web};
use starling_api::auth::AuthUser;
use starling_api::pagination::Page;
use starling_api::rate_limit::RateLimiter;
use starling_api::{ApiError, ErrorCode};
use starling_clients::GraphClient;
use starling_events::{Record, event_id, now_ms, pb};
use starling_ids::{IdGenerator, PostId, UserId};
use starling_outbox::Publisher;
use starling_storage::{CreatePost, Interactions, NotificationKind, Order, PostRecord, PostStore, Window};
use starling_timeline_cache::bus::Bus;
use starling_timeline_cache::read_model::ReadModel;

pub use starling_api::MAX_POST_CHARS;
const MAX_IDEMPOTENCY_KEY: usize = 128;

pub struct PostService {
    pub store: Arc<dyn PostStore>,
    pub graph: Arc<dyn GraphClient>,
    pub publisher: Publisher,
    pub ids: Arc<IdGenerator>,
    pub limiter: RateLimiter,
    /// The read model's post cache, written through on create and delete; `None` when no
    /// timeline-service shares one with this process.
    pub model: Option<Arc<dyn ReadModel>>,
    /// Where each stored notification is announced, for its recipient's open streams.
    pub bus: Arc<dyn Bus>,
}

impl PostService {
    /// Best effort: the post is durable and its event on the way; a read that misses
    /// fills the cache from here, and the fan-out caches tombstones from the event.
    async fn cache_post(&self, post: &PostRecord) {
        if let Some(m) = &self.model
            && let Err(e) = m.add_posts(std::slice::from_ref(post)).await
        {
            tracing::warn!(post = post.id.get(), error = %e, "could not cache a new post");
        }
    }

    /// After `viewer` changed these statuses (a reblog, a favourite, a reply): their counts
    /// and `viewer`'s flags, written through so that the viewer's next page shows them.
    pub(crate) async fn cache_interactions(&self, viewer: UserId, ids: &[PostId]) {
        let Some(m) = &self.model else { return };
        let result = async {
            let now = self.store.interactions(ids, Some(viewer)).await.map_err(|e| e.to_string())?;
            let changed: Vec<(PostId, Interactions)> = ids.iter().copied().zip(now).collect();
            m.set_interactions(viewer, &changed).await.map_err(|e| e.to_string())
        };
        if let Err(e) = result.await {
            tracing::warn!(viewer = viewer.get(), error = %e, "could not cache interactions");
        }
    }

    async fn cache_tombstone(&self, id: PostId) {
        if let Some(m) = &self.model
            && let Err(e) = m.posts_deleted(&[id]).await
        {
            tracing::warn!(post = id.get(), error = %e, "could not cache a deleted post");
        }
    }

    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()));
        statuses::routes(cfg);
        interactions::routes(cfg);
        notifications::routes(cfg);
    }

    /// Registers the internal routes under `/internal/v1` (separate processes only).
    pub fn configure_internal(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()));
        internal::routes(cfg);
    }
}

/// Post text that passed validation.
pub struct PostText(String);

impl PostText {
    pub fn parse(s: String) -> Result<PostText, ApiError> {
        if s.trim().is_empty() {
            return Err(ApiError::validation("text must not be empty"));
        }
        let chars = s.chars().count();
        if chars > MAX_POST_CHARS {
            return Err(ApiError::validation(format!("text is {chars} characters; the limit is {MAX_POST_CHARS}")));
        }
        if s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(ApiError::validation("text must not contain control characters"));
        }
        Ok(PostText(s))
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else { return Ok(None) };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::parameter(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        ))),
    }
}

impl PostService {
    /// A page of the posts of the user `raw` names (404 if none), newest first.
    pub(crate) async fn author_page(&self, raw: &str, page: &Page) -> Result<Vec<PostRecord>, ApiError> {
        let user: starling_ids::UserId = raw.parse().map_err(|_| ApiError::not_found("user"))?;
        if self.graph.user(user).await.map_err(ApiError::unavailable)?.is_none() {
            return Err(ApiError::not_found("user"));
        }
        let window = Window {
            before: page.max_id,
            after: page.since_id.or(page.min_id),
            limit: page.limit,
            order: if page.min_id.is_some() { Order::OldestFirst } else { Order::NewestFirst },
        };
        let mut posts = self.store.posts_by_author(user, window).await.map_err(ApiError::unavailable)?;
        if window.order == Order::OldestFirst {
            posts.reverse();
        }
        Ok(posts)
    }

    /// Validates and creates a post for `me` (the `Idempotency-Key` of `req` honoured),
    /// answered once its event is in the log. `true` if the key replayed an earlier post.
    pub(crate) async fn create_post(
        &self,
        me: AuthUser,
        req: &HttpRequest,
        text: String,
        reply_to: Option<PostId>,
    ) -> Result<(PostRecord, bool), ApiError> {
        me.require("write:statuses")?;
        let key = idempotency_key(req)?;
        let text = PostText::parse(text)?;
        let parent = match reply_to {
            Some(parent) => {
                let found = self.store.get_posts(&[parent]).await.map_err(ApiError::unavailable)?.pop().flatten();
                Some(found.ok_or_else(|| ApiError::not_found("status replied to"))?)
            }
            None => None,
        };
        self.limiter.check(me.id)?;

        let post = PostRecord {
            id: self.ids.next_post(),
            author: me.id,
            author_handle: me.handle,
            text: text.0,
            reply_to,
            reblog_of: None,
        };
        let events = vec![created_event(&post)];
        match self.store.create_post(&post, key.as_deref(), events.clone()).await.map_err(ApiError::unavailable)? {
            CreatePost::Created { outbox } => {
                // Cached before the event goes out, so the first reads of the pushed entry hit.
                self.cache_post(&post).await;
                if let Some(parent) = &parent {
                    self.cache_interactions(post.author, &[parent.id]).await;
                    // A reply mentions the author replied to.
                    self.notify(NotificationKind::Mention, parent.author, post.author, post.id, post.id.get()).await;
                }
                self.publisher.publish(events, &outbox).await.map_err(ApiError::unavailable)?;
                Ok((post, false))
            }
            // The first attempt may have stored the post but failed to publish; its event is
            // still in the outbox and the relay delivers it, so replaying is enough.
            CreatePost::Replayed(Some(original)) => Ok((original, true)),
            CreatePost::Replayed(None) => Err(ApiError::new(
                ErrorCode::Conflict,
                "this Idempotency-Key created a post that has since been deleted",
            )),
        }
    }

    /// Post `id`, or 404.
    pub(crate) async fn find(&self, id: PostId) -> Result<PostRecord, ApiError> {
        let post = self.store.get_posts(&[id]).await.map_err(ApiError::unavailable)?.pop().flatten();
        post.ok_or_else(|| ApiError::not_found("status"))
    }

    /// Deletes `me`'s post `id`, answered once its event is in the log; returns it.
    pub(crate) async fn delete_post(&self, me: &AuthUser, id: PostId) -> Result<PostRecord, ApiError> {
        me.require("write:statuses")?;
        let post = self.store.get_posts(&[id]).await.map_err(ApiError::unavailable)?.pop().flatten();
        let post = post.ok_or_else(|| ApiError::not_found("post"))?;
        if post.author != me.id {
            return Err(ApiError::new(ErrorCode::Forbidden, "only the author can delete a post"));
        }
        self.limiter.check(me.id)?;
        self.remove_post(id).await?.ok_or_else(|| ApiError::not_found("post"))?;
        Ok(post)
    }

    /// Deletes post `id` with its reblogs, answered once their events are in the log.
    /// `None` if it was gone already (deleted concurrently).
    pub(crate) async fn remove_post(&self, id: PostId) -> Result<Option<Vec<PostRecord>>, ApiError> {
        // The store may build the events off this task: they join the request's span.
        let span = tracing::Span::current();
        let events = move |p: &PostRecord| {
            let event = pb::PostEvent {
                event_id: event_id(),
                occurred_at_ms: now_ms(),
                kind: Some(pb::post_event::Kind::Deleted(pb::PostDeleted {
                    post_id: p.id.get(),
                    author_id: p.author.get(),
                })),
            };
            vec![Record::post(p.author.get(), &event).traced(&span)]
        };
        let Some(deleted) = self.store.delete_post(id, &events).await.map_err(ApiError::unavailable)? else {
            return Ok(None);
        };
        for p in &deleted.posts {
            self.cache_tombstone(p.id).await;
        }
        // What the delete changed the counts of: a reply's parent, a reblog's original.
        if let Some(first) = deleted.posts.first()
            && let Some(other) = first.reply_to.or(first.reblog_of)
        {
            self.cache_interactions(first.author, &[other]).await;
        }
        self.publisher.publish(deleted.events, &deleted.outbox).await.map_err(ApiError::unavailable)?;
        Ok(Some(deleted.posts))
    }
}

/// The `PostCreated` event of `post` (a reblog too), in the trace of the request's span.
fn created_event(post: &PostRecord) -> Record {
    let event = pb::PostEvent {
        event_id: event_id(),
        occurred_at_ms: now_ms(),
        kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
            post_id: post.id.get(),
            author_id: post.author.get(),
            reply_to: post.reply_to.map(PostId::get),
            reblog_of: post.reblog_of.map(PostId::get),
        })),
    };
    Record::post(post.author.get(), &event)
}

pub(crate) fn post_id(raw: &str) -> Result<PostId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("post"))
}
