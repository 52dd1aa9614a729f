//! Mastodon's account endpoints: sign-up (`POST /api/v1/accounts`, with an app's token),
//! `verify_credentials`, an account by id or `acct`, its followers and following (`Link`
//! paging), follow, unfollow, block, unblock, mute and unmute (each answering the
//! Relationship, and idempotent as Mastodon's are), `relationships`, and the caller's
//! mutes (`GET /api/v1/mutes`).
//!
//! Followers and following are listed in account-id order, not follow order: the store
//! keeps edges by id. Their cursors are opaque, as Mastodon says of its own: clients
//! follow the `Link` header. A mute hides the muted account's posts and reblogs from the
//! muter's home timeline and keeps the follow; Starling has no notifications yet, so
//! `notifications` and `duration` are not taken (a mute lasts until unmuted).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use starling_api::auth::{AuthUser, Caller};
use starling_api::form::FormOrJson;
use starling_api::mastodon::{Account, CredentialAccount, PublicBase};
use starling_api::pagination::{clamped_limit, query_pairs};
use starling_api::{ApiError, ErrorCode};
use starling_ids::UserId;
use starling_storage::{AccountCreated, CredentialRecord, EdgeChange, UserRecord};

use crate::edges::{EdgeOp, Handle, change_edge, existing};
use crate::{GraphService, oauth, passwords};

type Svc = web::Data<GraphService>;

/// Followers and following per page: Mastodon's default and largest.
const LIST_DEFAULT: usize = 40;
const LIST_MAX: usize = 80;
/// Accounts one `relationships` call may ask about.
const RELATIONSHIPS_MAX: usize = 80;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // Fixed paths before `{id}`, which would match them too.
    cfg.route("/api/v1/accounts", web::post().to(sign_up))
        .route("/api/v1/accounts/verify_credentials", web::get().to(verify_credentials))
        .route("/api/v1/accounts/lookup", web::get().to(lookup))
        .route("/api/v1/accounts/relationships", web::get().to(relationships))
        .route("/api/v1/accounts/{id}", web::get().to(account))
        .route("/api/v1/accounts/{id}/followers", web::get().to(followers))
        .route("/api/v1/accounts/{id}/following", web::get().to(following))
        .route("/api/v1/accounts/{id}/follow", web::post().to(follow))
        .route("/api/v1/accounts/{id}/unfollow", web::post().to(unfollow))
        .route("/api/v1/accounts/{id}/block", web::post().to(block))
        .route("/api/v1/accounts/{id}/unblock", web::post().to(unblock))
        .route("/api/v1/accounts/{id}/mute", web::post().to(mute))
        .route("/api/v1/accounts/{id}/unmute", web::post().to(unmute))
        .route("/api/v1/mutes", web::get().to(mutes));
}

#[derive(Deserialize)]
struct SignUp {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    /// Must be true: the user accepted the server's rules. Forms send "true"/"1". (Other
    /// fields clients send, such as `locale` and `reason`, are ignored.)
    agreement: Option<serde_json::Value>,
}

fn agreed(v: &Option<serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => matches!(s.as_str(), "true" | "1" | "on"),
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

/// An email address, loosely: one `@` with something on both sides, no spaces. Whether it
/// is deliverable is not checked (Starling sends no mail).
fn email(raw: Option<String>) -> Result<String, ApiError> {
    let e = raw.map(|e| e.trim().to_owned()).unwrap_or_default();
    let valid = e.len() <= 254
        && !e.chars().any(char::is_whitespace)
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    if !valid {
        return Err(ApiError::validation("email must be an email address"));
    }
    Ok(e)
}

/// `POST /api/v1/accounts`: an app (its own token, `write:accounts`) signs a person up;
/// the answer is a token for the new account with the app token's scopes.
async fn sign_up(svc: Svc, caller: Caller, body: FormOrJson<SignUp>) -> Result<HttpResponse, ApiError> {
    let Caller::App(app) = caller else {
        return Err(ApiError::new(ErrorCode::Forbidden, "sign-up takes an app's token (client_credentials)"));
    };
    if !app.scopes.allows("write:accounts") {
        return Err(ApiError::new(ErrorCode::Forbidden, "this token lacks the write:accounts scope"));
    }
    let body = body.0;
    let handle = Handle::parse(body.username.as_deref().unwrap_or(""))?;
    let email = email(body.email)?;
    let password = body.password.unwrap_or_default();
    if !(passwords::MIN_LEN..=passwords::MAX_LEN).contains(&password.chars().count()) {
        return Err(ApiError::validation(format!(
            "password must be {} to {} characters",
            passwords::MIN_LEN,
            passwords::MAX_LEN
        )));
    }
    if !agreed(&body.agreement) {
        return Err(ApiError::validation("agreement must be true: accept the server's rules"));
    }
    let password_hash = passwords::hash(password).await?;
    let user = UserRecord { id: svc.ids.next_user(), handle: handle.into_inner() };
    let login = CredentialRecord { user: user.id, email, password_hash };
    match svc.auth.create_account(&user, &login).await.map_err(ApiError::unavailable)? {
        AccountCreated::Created => {}
        // Mastodon answers 422; a conflict with what exists is 409 everywhere in Starling.
        AccountCreated::HandleTaken => return Err(ApiError::new(ErrorCode::Conflict, "username is already taken")),
        AccountCreated::EmailTaken => return Err(ApiError::new(ErrorCode::Conflict, "email is already taken")),
    }
    let token = oauth::issue(&svc, &app.client_id, Some(user.id), &app.scopes).await?;
    Ok(HttpResponse::Ok().json(token))
}

/// `GET /api/v1/accounts/verify_credentials` (`read:accounts` or `profile`).
async fn verify_credentials(svc: Svc, me: AuthUser, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    me.require("profile")?;
    let user = svc.store.user(me.id).await.map_err(ApiError::unavailable)?;
    let user = user.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the account of this token is gone"))?;
    let account = account_of(&svc, &PublicBase::of(&req), &user).await?;
    Ok(HttpResponse::Ok().json(CredentialAccount::from(account)))
}

/// `user` as a Mastodon Account. The post count lives in the post-service, which this
/// does not ask yet: `statuses_count` is 0.
async fn account_of(svc: &GraphService, base: &PublicBase, user: &UserRecord) -> Result<Account, ApiError> {
    let counts = svc.store.counts(user.id).await.map_err(ApiError::unavailable)?;
    Ok(Account::new(base, user, counts, 0))
}

/// `GET /api/v1/accounts/{id}` (public).
async fn account(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let user = existing(&svc, &path).await?;
    Ok(HttpResponse::Ok().json(account_of(&svc, &PublicBase::of(&req), &user).await?))
}

#[derive(Deserialize)]
struct Lookup {
    acct: Option<String>,
}

/// `GET /api/v1/accounts/lookup?acct=name` (`name@this.host` and `@name` too). Another
/// server's account is not here: 404.
async fn lookup(svc: Svc, req: HttpRequest, q: web::Query<Lookup>) -> Result<HttpResponse, ApiError> {
    let acct = q.acct.as_deref().ok_or_else(|| ApiError::parameter("acct is required"))?;
    let acct = acct.strip_prefix('@').unwrap_or(acct);
    let host = req.connection_info().host().to_owned();
    let name = match acct.split_once('@') {
        Some((name, domain)) if domain.eq_ignore_ascii_case(&host) => name,
        Some(_) => return Err(ApiError::not_found("account")),
        None => acct,
    };
    let user = svc.store.user_by_handle(name).await.map_err(ApiError::unavailable)?;
    let user = user.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(HttpResponse::Ok().json(account_of(&svc, &PublicBase::of(&req), &user).await?))
}

async fn followers(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    list(&svc, &req, &path, List::Followers).await
}

async fn following(svc: Svc, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    list(&svc, &req, &path, List::Following).await
}

/// The account lists that page alike.
#[derive(Clone, Copy)]
enum List {
    Followers,
    Following,
    Muted,
}

/// A page of followers or following; `max_id` is the opaque cursor the `Link` header's
/// `next` carries (the last account id served).
async fn list(svc: &GraphService, req: &HttpRequest, raw: &str, which: List) -> Result<HttpResponse, ApiError> {
    let (mut after, mut limit) = (None, LIST_DEFAULT);
    for (name, value) in query_pairs(req.query_string())? {
        match name.as_str() {
            "max_id" => after = Some(value.parse::<UserId>().map_err(|_| ApiError::parameter("max_id is not an id"))?),
            "limit" => {
                limit = clamped_limit(&value, LIST_MAX)
                    .ok_or_else(|| ApiError::parameter("limit must be a positive integer"))?
            }
            _ => {}
        }
    }
    let user = existing(svc, raw).await?;
    let store = &svc.store;
    let ids = match which {
        List::Followers => store.followers(user.id, after, limit).await,
        List::Following => store.following(user.id, after, limit).await,
        List::Muted => store.muted(user.id, after, limit).await,
    }
    .map_err(ApiError::unavailable)?;
    let base = PublicBase::of(req);
    let mut accounts = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(u) = store.user(*id).await.map_err(ApiError::unavailable)? {
            accounts.push(account_of(svc, &base, &u).await?);
        }
    }
    let mut res = HttpResponse::Ok();
    if let (true, Some(last)) = (ids.len() == limit, ids.last()) {
        let path = req.path();
        res.insert_header(("Link", format!("<{}{path}?limit={limit}&max_id={last}>; rel=\"next\"", base.0)));
    }
    Ok(res.json(accounts))
}

/// Mastodon's Relationship of `me` to `them`.
async fn relationship(svc: &GraphService, me: UserId, them: UserId) -> Result<serde_json::Value, ApiError> {
    let s = &svc.store;
    let (following, followed_by, blocking, blocked_by, muting) = futures::try_join!(
        s.follows(me, them),
        s.follows(them, me),
        s.blocks(me, them),
        s.blocks(them, me),
        s.mutes(me, them)
    )
    .map_err(ApiError::unavailable)?;
    Ok(json!({
        "id": them.to_string(),
        "following": following,
        "showing_reblogs": following,
        "notifying": false,
        "languages": null,
        "followed_by": followed_by,
        "blocking": blocking,
        "blocked_by": blocked_by,
        "muting": muting,
        "muting_notifications": muting,
        "requested": false,
        "requested_by": false,
        "domain_blocking": false,
        "endorsed": false,
        "note": "",
    }))
}

/// `GET /api/v1/accounts/relationships?id[]=1&id[]=2` (or `id=1`), in the order asked.
/// Ids of no account are left out, as Mastodon does.
async fn relationships(svc: Svc, me: AuthUser, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    me.require("read:follows")?;
    let mut ids = Vec::new();
    for (name, value) in query_pairs(req.query_string())? {
        if name == "id[]" || name == "id" {
            ids.push(
                value.parse::<UserId>().map_err(|_| ApiError::parameter(format!("{value:?} is not an account id")))?,
            );
        }
    }
    if ids.len() > RELATIONSHIPS_MAX {
        return Err(ApiError::parameter(format!("at most {RELATIONSHIPS_MAX} ids per call")));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if svc.store.user(id).await.map_err(ApiError::unavailable)?.is_some() {
            out.push(relationship(&svc, me.id, id).await?);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// Follow, unfollow, block or unblock, answering the Relationship after it. Doing what is
/// already done is fine (Mastodon's are idempotent); a block between the two is 403.
async fn edge(svc: &GraphService, me: &AuthUser, raw: &str, op: EdgeOp) -> Result<HttpResponse, ApiError> {
    let (them, change) = change_edge(svc, me, raw, op).await?;
    if change == EdgeChange::Blocked {
        return Err(ApiError::new(ErrorCode::Forbidden, "one of you blocks the other"));
    }
    Ok(HttpResponse::Ok().json(relationship(svc, me.id, them).await?))
}

async fn follow(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Follow).await
}

async fn unfollow(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Unfollow).await
}

async fn block(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Block).await
}

async fn unblock(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Unblock).await
}

async fn mute(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Mute).await
}

async fn unmute(svc: Svc, me: AuthUser, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    edge(&svc, &me, &path, EdgeOp::Unmute).await
}

/// The accounts the caller mutes, by account id, paged like followers.
async fn mutes(svc: Svc, me: AuthUser, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    me.require("read:mutes")?;
    list(&svc, &req, &me.id.to_string(), List::Muted).await
}
