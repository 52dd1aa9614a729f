//! Mastodon's notifications: `GET /api/v1/notifications` (paged by `max_id`, `since_id`,
//! `min_id` and an absolute `Link` header; `types[]` and `exclude_types[]` filter) and
//! `GET /api/v1/notifications/{id}`, of the kinds Starling makes: `follow`, `mention` (a
//! reply to one's status), `reblog` and `favourite`; `POST /api/v1/notifications/{id}/dismiss`
//! and `POST /api/v1/notifications/clear` take one or all of them back.
//!
//! Each is written by the service that made the change, after it (see
//! `NotificationStore`): follows by the graph-service, the rest here. A page merges this
//! store's notifications with the graph's (one call), newest first; a notification whose
//! status is gone is left out, as Mastodon does.

use std::collections::{HashMap, HashSet};

use actix_web::{HttpRequest, HttpResponse, web};
use starling_api::auth::AuthUser;
use starling_api::mastodon::{Account, Notification, PublicBase, Status};
use starling_api::pagination::{Page, query_pairs};
use starling_api::{ApiError, ErrorCode};
use starling_ids::{PostId, UserId};
use starling_storage::{NotificationKind, NotificationRecord, Order, PostRecord, Window};
use starling_timeline_cache::bus::{self, Change};

use crate::PostService;

type Svc = web::Data<PostService>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // `clear` is a resource of its own, before `{id}`: a GET of it is then 405, not a
    // lookup of a notification called "clear".
    let clear =
        web::resource("/api/v1/notifications/clear").post(clear).default_service(web::to(starling_api::not_found));
    cfg.route("/api/v1/notifications", web::get().to(list))
        .service(clear)
        .route("/api/v1/notifications/{id}", web::get().to(one))
        .route("/api/v1/notifications/{id}/dismiss", web::post().to(dismiss));
}

impl PostService {
    /// Tells `recipient` of `n` unless it is the actor itself, and announces it to the
    /// recipient's streams. Best effort, after the change.
    pub(crate) async fn notify(
        &self,
        kind: NotificationKind,
        recipient: UserId,
        account: UserId,
        status: PostId,
        id: u64,
    ) {
        if recipient == account {
            return;
        }
        let n = NotificationRecord { id, recipient, kind, account, status: Some(status) };
        match self.store.add_notification(&n).await {
            Ok(true) => bus::announce(&*self.bus, Change::Notified(n)).await,
            // One for this key already: it was announced then.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(recipient = recipient.get(), kind = kind.name(), error = %e, "could not store a notification")
            }
        }
    }

    /// Takes back the notification of an undone reblog or favourite.
    pub(crate) async fn unnotify(&self, kind: NotificationKind, recipient: UserId, account: UserId, status: PostId) {
        if let Err(e) = self.store.remove_notification(recipient, kind, account, Some(status)).await {
            tracing::warn!(recipient = recipient.get(), kind = kind.name(), error = %e, "could not remove a notification");
        }
    }

    /// `me`'s notifications in the window, newest first (oldest first for `OldestFirst`):
    /// this store's and the graph's, merged.
    async fn notifications_of(&self, me: UserId, window: Window<u64>) -> Result<Vec<NotificationRecord>, ApiError> {
        let (mine, graph) = futures::try_join!(
            async { self.store.notifications(me, window).await.map_err(ApiError::unavailable) },
            async { self.graph.notifications(me, window).await.map_err(ApiError::unavailable) },
        )?;
        let mut seen = HashSet::new();
        // In one process both stores list the same rows: the ids tell them apart.
        let mut all: Vec<NotificationRecord> = mine.into_iter().chain(graph).filter(|n| seen.insert(n.id)).collect();
        match window.order {
            Order::NewestFirst => all.sort_unstable_by(|a, b| b.id.cmp(&a.id)),
            Order::OldestFirst => all.sort_unstable_by_key(|n| n.id),
        }
        all.truncate(window.limit);
        Ok(all)
    }

    /// `me`'s notification `id` (from a path), if it has one.
    async fn notification(&self, me: UserId, id: &str) -> Result<NotificationRecord, ApiError> {
        let missing = || ApiError::new(ErrorCode::NotFound, "no such notification");
        let id: u64 = id.parse().map_err(|_| missing())?;
        let window =
            Window { before: id.checked_add(1), after: id.checked_sub(1), limit: 1, order: Order::NewestFirst };
        self.notifications_of(me, window).await?.pop().ok_or_else(missing)
    }

    /// Takes `n` back, from the store that keeps it (follows: the graph's).
    async fn remove(&self, n: &NotificationRecord) -> Result<(), ApiError> {
        match n.kind {
            NotificationKind::Follow => {
                self.graph.remove_follow_notification(n.recipient, n.account).await.map_err(ApiError::unavailable)?;
            }
            _ => {
                self.store
                    .remove_notification(n.recipient, n.kind, n.account, n.status)
                    .await
                    .map_err(ApiError::unavailable)?;
            }
        }
        Ok(())
    }

    /// `found` as Mastodon Notifications; those whose status is gone are left out.
    async fn render(
        &self,
        req: &HttpRequest,
        me: UserId,
        found: &[NotificationRecord],
    ) -> Result<Vec<Notification>, ApiError> {
        let base = PublicBase::of(req);
        let ids: Vec<PostId> = found.iter().filter_map(|n| n.status).collect();
        let posts: Vec<PostRecord> =
            self.store.get_posts(&ids).await.map_err(ApiError::unavailable)?.into_iter().flatten().collect();
        let statuses = self.statuses(&base, &posts, Some(me)).await?;
        let by_id: HashMap<String, Status> = statuses.into_iter().map(|s| (s.id.clone(), s)).collect();
        // Each actor's account once, fetched together.
        let mut actors: Vec<UserId> = found.iter().map(|n| n.account).collect();
        actors.sort_unstable();
        actors.dedup();
        let accounts: HashMap<String, Account> =
            self.accounts(&base, &actors).await?.into_iter().map(|a| (a.id.clone(), a)).collect();
        let mut out = Vec::with_capacity(found.len());
        for n in found {
            let status = match n.status {
                Some(id) => match by_id.get(&id.to_string()) {
                    Some(s) => Some(s.clone()),
                    None => continue,
                },
                None => None,
            };
            let Some(account) = accounts.get(&n.account.to_string()) else { continue };
            out.push(Notification::new(n, account.clone(), status));
        }
        Ok(out)
    }
}

/// Mastodon's other notification types: Starling makes none of them, so asking for them
/// selects nothing (and is not an error).
const OTHER_TYPES: [&str; 7] =
    ["poll", "status", "update", "follow_request", "admin.sign_up", "admin.report", "severed_relationships"];

/// The kinds a request asks for: `types[]` (all if none given), minus `exclude_types[]`.
fn kinds(req: &HttpRequest) -> Result<Vec<NotificationKind>, ApiError> {
    let pairs = query_pairs(req.query_string())?;
    // The kinds named under `key`, and whether `key` was given at all.
    let named = |key: &str| -> Result<(Vec<NotificationKind>, bool), ApiError> {
        let (mut kinds, mut given) = (Vec::new(), false);
        for (_, v) in pairs.iter().filter(|(k, _)| k == key || k.strip_suffix("[]") == Some(key)) {
            given = true;
            match NotificationKind::ALL.into_iter().find(|kind| kind.name() == v) {
                Some(kind) => kinds.push(kind),
                None if OTHER_TYPES.contains(&v.as_str()) => {}
                None => return Err(ApiError::parameter(format!("{key}: {v:?} is not a notification type"))),
            }
        }
        Ok((kinds, given))
    };
    let ((wanted, asked), (excluded, _)) = (named("types")?, named("exclude_types")?);
    Ok(NotificationKind::ALL.into_iter().filter(|k| (!asked || wanted.contains(k)) && !excluded.contains(k)).collect())
}

async fn list(svc: Svc, me: AuthUser, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    me.require("read:notifications")?;
    let page = Page::from_request(&req)?;
    let kinds = kinds(&req)?;
    let window = Window {
        before: page.max_id.map(PostId::get),
        after: page.since_id.or(page.min_id).map(PostId::get),
        limit: page.limit,
        order: if page.min_id.is_some() { Order::OldestFirst } else { Order::NewestFirst },
    };
    // Filtered kinds may thin a page: read on until it is full or the list ends.
    let mut found: Vec<NotificationRecord> = Vec::new();
    let mut window_now = window;
    loop {
        let batch = svc.notifications_of(me.id, window_now).await?;
        let done = batch.len() < window_now.limit;
        let last = batch.last().map(|n| n.id);
        found.extend(batch.into_iter().filter(|n| kinds.contains(&n.kind)));
        match last {
            Some(last) if !done && found.len() < page.limit => match window.order {
                Order::NewestFirst => window_now.before = Some(last),
                Order::OldestFirst => window_now.after = Some(last),
            },
            _ => break,
        }
    }
    found.truncate(page.limit);
    if window.order == Order::OldestFirst {
        found.reverse();
    }
    let ids: Vec<PostId> = found.iter().map(|n| PostId(n.id)).collect();
    let (prev, next) = page.cursors(&ids);
    let body = svc.render(&req, me.id, &found).await?;
    let base = PublicBase::of(&req);
    let mut res = HttpResponse::Ok();
    if let Some(link) = page.link_header(&format!("{}{}", base.0, req.path()), prev, next) {
        res.insert_header(("Link", link));
    }
    Ok(res.json(body))
}

async fn one(svc: Svc, me: AuthUser, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    me.require("read:notifications")?;
    let found = svc.notification(me.id, &path).await?;
    let mut rendered = svc.render(&req, me.id, std::slice::from_ref(&found)).await?;
    match rendered.pop() {
        Some(n) => Ok(HttpResponse::Ok().json(n)),
        None => Err(ApiError::new(ErrorCode::NotFound, "no such notification")),
    }
}

/// Takes one of the caller's notifications back (Mastodon answers `{}`).
async fn dismiss(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    me.require("write:notifications")?;
    svc.limiter.check(me.id)?;
    let found = svc.notification(me.id, &path).await?;
    svc.remove(&found).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// Notifications taken back per round of `clear`.
const CLEAR_BATCH: usize = 100;

/// Takes all of the caller's notifications back, newest first, a batch at a time (each
/// batch read below the last, so a notification that will not go cannot hold it up).
async fn clear(svc: Svc, me: AuthUser) -> Result<HttpResponse, ApiError> {
    me.require("write:notifications")?;
    svc.limiter.check(me.id)?;
    let mut window = Window { before: None, after: None, limit: CLEAR_BATCH, order: Order::NewestFirst };
    loop {
        let batch = svc.notifications_of(me.id, window).await?;
        futures::future::try_join_all(batch.iter().map(|n| svc.remove(n))).await?;
        match batch.last() {
            Some(last) if batch.len() == CLEAR_BATCH => window.before = Some(last.id),
            _ => break,
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
