//! OAuth 2 as Mastodon does it: apps register (`POST /api/v1/apps`), users sign in on
//! `/oauth/authorize` (authorization code, to a redirect URI or shown out of band), and
//! `/oauth/token` exchanges a code, a password or an app's own credentials for an access
//! token; `/oauth/revoke` ends one.
//!
//! Tokens, codes and client secrets are 256-bit random strings (base64url), stored only as
//! their SHA-256 ([`starling_storage::AuthStore`]). Every request looks its token up, so a
//! revoked token fails at once in every process. Mastodon removed the password grant in
//! 4.x; Starling keeps it because clients such as Mastodon.py's `log_in` still use it.
//!
//! Errors of `/oauth/token` and `/oauth/revoke` take RFC 6749's shape
//! (`{"error":"invalid_grant","error_description":"..."}`), which OAuth clients parse;
//! everything else answers in Starling's documented error shape.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use starling_api::auth::{Caller, secret_hash};
use starling_api::form::FormOrJson;
use starling_api::mastodon::{Application, CredentialApplication, Token, escape_html};
use starling_api::scopes::Scopes;
use starling_api::{ApiError, ErrorCode};
use starling_ids::UserId;
use starling_storage::{AppRecord, GrantKind, GrantRecord};

use crate::{GraphService, grants, passwords};

type Svc = web::Data<GraphService>;

/// The redirect URI that asks for the code to be shown instead of redirected to.
pub const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";
/// How long an authorization code may wait for its exchange.
const CODE_TTL_MS: u64 = 10 * 60 * 1000;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/apps", web::post().to(create_app))
        .route("/api/v1/apps/verify_credentials", web::get().to(verify_app))
        .route("/oauth/authorize", web::get().to(authorize_form))
        .route("/oauth/authorize", web::post().to(authorize))
        .route("/oauth/token", web::post().to(token))
        .route("/oauth/revoke", web::post().to(revoke));
}

/// Unix milliseconds.
pub(crate) fn now() -> u64 {
    u64::try_from(starling_events::now_ms()).unwrap_or(0)
}

/// A new random secret (token, code, client id or secret): 32 bytes, base64url.
pub(crate) fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// An error of the OAuth endpoints, in RFC 6749's shape.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError { status, error, description: description.into() }
    }

    fn invalid_client() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client, or wrong client secret")
    }

    fn invalid_grant(why: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", why)
    }

    fn invalid_request(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", why)
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(serde_json::json!({ "error": self.error, "error_description": self.description }))
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        let error = match e.code {
            ErrorCode::RateLimited => "slow_down",
            ErrorCode::Unavailable | ErrorCode::Internal => "temporarily_unavailable",
            _ => "invalid_request",
        };
        OAuthError::new(e.code.status(), error, e.message)
    }
}

/// One string or an array of them (`redirect_uris` is either in Mastodon's API).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct NewApp {
    client_name: Option<String>,
    redirect_uris: Option<OneOrMany>,
    scopes: Option<String>,
    website: Option<String>,
}

/// A redirect URI must be the out-of-band marker or absolute (`scheme:...`, as apps use
/// custom schemes such as `myapp://callback`).
fn redirect_uris(raw: Option<OneOrMany>) -> Result<Vec<String>, ApiError> {
    let uris: Vec<String> = match raw {
        None => return Err(ApiError::validation("redirect_uris is required")),
        Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(OneOrMany::Many(v)) => v.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
    };
    if uris.is_empty() {
        return Err(ApiError::validation("redirect_uris is required"));
    }
    for uri in &uris {
        let absolute = uri.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if uri.len() > 2000 || !absolute {
            return Err(ApiError::validation(format!("redirect URI {uri:?} must be an absolute URI")));
        }
    }
    Ok(uris)
}

async fn create_app(svc: Svc, body: FormOrJson<NewApp>) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let name = body.client_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| ApiError::validation("client_name is required"))?;
    if name.chars().count() > 60 {
        return Err(ApiError::validation("client_name is at most 60 characters"));
    }
    let redirect_uris = redirect_uris(body.redirect_uris)?;
    let scopes = Scopes::parse(body.scopes.as_deref().unwrap_or(""))?;
    let website = body.website.filter(|w| !w.trim().is_empty());
    if website.as_ref().is_some_and(|w| w.len() > 2000) {
        return Err(ApiError::validation("website is at most 2000 characters"));
    }
    let (client_id, client_secret) = (new_secret(), new_secret());
    let app = AppRecord {
        id: svc.ids.next_user().get(),
        client_id: client_id.clone(),
        secret_hash: secret_hash(&client_secret),
        name,
        website,
        redirect_uris,
        scopes: scopes.to_string(),
        created_ms: now(),
    };
    svc.auth.create_app(&app).await.map_err(ApiError::unavailable)?;
    Ok(HttpResponse::Ok().json(CredentialApplication {
        app: Application::from(&app),
        client_id,
        client_secret,
        client_secret_expires_at: 0,
    }))
}

/// `GET /api/v1/apps/verify_credentials`: the app behind an app's (or a user's) token.
async fn verify_app(svc: Svc, caller: Caller) -> Result<HttpResponse, ApiError> {
    let client_id = match caller {
        Caller::App(app) => app.client_id,
        Caller::User(user) => {
            user.client_id.ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this token belongs to no app"))?
        }
    };
    let app = svc.auth.app(&client_id).await.map_err(ApiError::unavailable)?;
    let app = app.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the app of this token is gone"))?;
    Ok(HttpResponse::Ok().json(Application::from(&app)))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
}

/// What an authorization request asks for, checked against the app.
struct Request {
    app: AppRecord,
    redirect_uri: String,
    scopes: Scopes,
    state: Option<String>,
}

async fn check_request(svc: &GraphService, q: AuthorizeQuery) -> Result<Request, ApiError> {
    if q.response_type.as_deref() != Some("code") {
        return Err(ApiError::parameter("response_type must be code"));
    }
    let client_id = q.client_id.ok_or_else(|| ApiError::parameter("client_id is required"))?;
    let app = svc.auth.app(&client_id).await.map_err(ApiError::unavailable)?;
    // RFC 6749's invalid_client: the client is not authenticated.
    let app = app.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown client_id"))?;
    let redirect_uri = q.redirect_uri.ok_or_else(|| ApiError::parameter("redirect_uri is required"))?;
    if !app.redirect_uris.contains(&redirect_uri) {
        // Never redirected to (RFC 6749 4.1.2.1): this app may not send codes there.
        return Err(ApiError::new(ErrorCode::Forbidden, "redirect_uri is not one this app registered"));
    }
    let scopes = Scopes::parse(q.scope.as_deref().unwrap_or(""))?;
    if !app_scopes(&app).covers(&scopes) {
        // Like an unregistered redirect URI: this app may not ask for that.
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the app did not register every scope of \"{scopes}\""),
        ));
    }
    Ok(Request { app, redirect_uri, scopes, state: q.state })
}

fn app_scopes(app: &AppRecord) -> Scopes {
    // Stored canonical by `create_app`; anything else (a store edited by hand) grants the
    // least, `read`.
    Scopes::parse(&app.scopes).unwrap_or_else(|_| Scopes::read())
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").insert_header(("X-Frame-Options", "DENY")).body(
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
             content=\"width=device-width\"><title>{}</title><style>body{{font-family:sans-serif;max-width:28em;\
             margin:3em auto;padding:0 1em}}input{{display:block;width:100%;margin:.3em 0 1em;padding:.4em}}\
             code{{font-size:1.2em;word-break:break-all}}</style></head><body>{body}</body></html>",
            escape_html(title)
        ),
    )
}

/// `GET /oauth/authorize`: the sign-in and consent form.
async fn authorize_form(svc: Svc, q: web::Query<AuthorizeQuery>) -> Result<HttpResponse, ApiError> {
    let r = check_request(&svc, q.into_inner()).await?;
    Ok(consent_page(&r, None))
}

fn consent_page(r: &Request, problem: Option<&str>) -> HttpResponse {
    let hidden =
        |name: &str, value: &str| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape_html(value));
    let problem =
        problem.map(|p| format!("<p role=\"alert\"><strong>{}</strong></p>", escape_html(p))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in to Starling</h1><p><strong>{}</strong> asks to act for you with the scopes \
         <code>{}</code>.</p>{problem}<form method=\"post\" action=\"/oauth/authorize\">{}{}{}{}{}\
         <label>Email or username<input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Authorize</button></form>",
        escape_html(&r.app.name),
        escape_html(&r.scopes.to_string()),
        hidden("response_type", "code"),
        hidden("client_id", &r.app.client_id),
        hidden("redirect_uri", &r.redirect_uri),
        hidden("scope", &r.scopes.to_string()),
        r.state.as_deref().map(|s| hidden("state", s)).unwrap_or_default(),
    );
    page("Sign in", &body)
}

#[derive(Deserialize)]
struct AuthorizeForm {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `POST /oauth/authorize`: the form's submission. Wrong credentials show the form again
/// (401); right ones issue a code, redirected to the app or shown out of band.
async fn authorize(svc: Svc, form: FormOrJson<AuthorizeForm>) -> Result<HttpResponse, ApiError> {
    let form = form.0;
    let q = AuthorizeQuery {
        response_type: form.response_type,
        client_id: form.client_id,
        redirect_uri: form.redirect_uri,
        scope: form.scope,
        state: form.state,
    };
    let r = check_request(&svc, q).await?;
    let (Some(login), Some(password)) = (form.username, form.password) else {
        return Err(ApiError::parameter("username and password are required"));
    };
    let Some(user) = sign_in(&svc, &login, password).await? else {
        let mut res = consent_page(&r, Some("Wrong email, username or password."));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(res);
    };
    let code = new_secret();
    let now = now();
    svc.auth
        .put_grant(&GrantRecord {
            hash: secret_hash(&code),
            kind: GrantKind::Code,
            client_id: r.app.client_id.clone(),
            user: Some(user),
            scopes: r.scopes.to_string(),
            redirect_uri: Some(r.redirect_uri.clone()),
            created_ms: now,
            expires_ms: Some(now + CODE_TTL_MS),
        })
        .await
        .map_err(ApiError::unavailable)?;
    if r.redirect_uri == OOB {
        let body = format!(
            "<h1>Authorization code</h1><p>Copy this code into <strong>{}</strong>:</p><p><code>{}</code></p>",
            escape_html(&r.app.name),
            escape_html(&code)
        );
        return Ok(page("Authorization code", &body));
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = &r.state {
        params.push(("state", state));
    }
    let query = serde_urlencoded::to_string(&params).map_err(ApiError::unavailable)?;
    let sep = if r.redirect_uri.contains('?') { '&' } else { '?' };
    Ok(HttpResponse::Found().insert_header(("Location", format!("{}{sep}{query}", r.redirect_uri))).finish())
}

/// The account `login` (an email or a username) names, if `password` is its password.
/// Attempts are rate limited per account, whether they succeed or not.
pub(crate) async fn sign_in(svc: &GraphService, login: &str, password: String) -> Result<Option<UserId>, ApiError> {
    if password.len() > passwords::MAX_LEN {
        return Ok(None);
    }
    let store = &svc.auth;
    let credentials = if login.contains('@') {
        store.credentials_by_email(login).await.map_err(ApiError::unavailable)?
    } else {
        match svc.store.user_by_handle(login).await.map_err(ApiError::unavailable)? {
            Some(user) => store.credentials(user.id).await.map_err(ApiError::unavailable)?,
            None => None,
        }
    };
    if let Some(c) = &credentials {
        svc.logins.check(c.user)?;
    }
    let user = credentials.as_ref().map(|c| c.user);
    let ok = passwords::verify(password, credentials.map(|c| c.password_hash)).await?;
    Ok(user.filter(|_| ok))
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    redirect_uri: Option<String>,
    code: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The app the request authenticates as: `client_id`/`client_secret` in the body, or
/// HTTP Basic (`client_secret_basic`).
async fn client(
    svc: &GraphService,
    req: &HttpRequest,
    id: Option<String>,
    secret: Option<String>,
) -> Result<AppRecord, OAuthError> {
    let basic = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned())));
    let (id, secret) = match (id, secret, basic) {
        (Some(id), Some(secret), _) => (id, secret),
        (_, _, Some(pair)) => pair,
        _ => return Err(OAuthError::invalid_client()),
    };
    let app = svc.auth.app(&id).await.map_err(ApiError::unavailable)?;
    app.filter(|a| a.secret_hash == secret_hash(&secret)).ok_or_else(OAuthError::invalid_client)
}

/// A body that did not parse, in the OAuth error shape (these endpoints' clients read it).
fn oauth_body<T>(body: Result<FormOrJson<T>, ApiError>) -> Result<T, OAuthError> {
    body.map(|b| b.0).map_err(|e| OAuthError::invalid_request(e.message))
}

async fn token(
    svc: Svc,
    req: HttpRequest,
    body: Result<FormOrJson<TokenRequest>, ApiError>,
) -> Result<HttpResponse, OAuthError> {
    let body = oauth_body(body)?;
    let app = client(&svc, &req, body.client_id, body.client_secret).await?;
    let registered = app_scopes(&app);
    let asked = |scope: Option<&str>| -> Result<Scopes, OAuthError> {
        let scopes = Scopes::parse(scope.unwrap_or(""))
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.message))?;
        if !registered.covers(&scopes) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the app did not register these scopes",
            ));
        }
        Ok(scopes)
    };
    let (user, scopes) = match body.grant_type.as_deref() {
        Some("authorization_code") => {
            let code = body.code.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
            // Taken, not read: a code works once even when two exchanges race.
            let grant = svc.auth.take_grant(&secret_hash(&code)).await.map_err(ApiError::unavailable)?;
            let invalid = "the code is invalid, expired, used, or was issued to another client or redirect URI";
            let grant = grant
                .filter(|g| g.kind == GrantKind::Code && g.client_id == app.client_id)
                .filter(|g| g.expires_ms.is_none_or(|e| e > now()))
                .filter(|g| body.redirect_uri.is_none() || g.redirect_uri == body.redirect_uri)
                .ok_or_else(|| OAuthError::invalid_grant(invalid))?;
            let scopes = Scopes::parse(&grant.scopes).map_err(|_| OAuthError::invalid_grant(invalid))?;
            (grant.user, scopes)
        }
        Some("password") => {
            let scopes = asked(body.scope.as_deref())?;
            let (Some(login), Some(password)) = (body.username, body.password) else {
                return Err(OAuthError::invalid_request("username and password are required"));
            };
            let user = sign_in(&svc, &login, password).await?;
            let user = user.ok_or_else(|| OAuthError::invalid_grant("wrong email, username or password"))?;
            (Some(user), scopes)
        }
        Some("client_credentials") => (None, asked(body.scope.as_deref())?),
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported (authorization_code, password, client_credentials)"),
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type is required")),
    };
    let token = issue(&svc, &app.client_id, user, &scopes).await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(token))
}

/// Stores a new access token and returns it.
pub(crate) async fn issue(
    svc: &GraphService,
    client_id: &str,
    user: Option<UserId>,
    scopes: &Scopes,
) -> Result<Token, ApiError> {
    let access_token = new_secret();
    let now = now();
    svc.auth
        .put_grant(&GrantRecord {
            hash: secret_hash(&access_token),
            kind: GrantKind::Token,
            client_id: client_id.to_owned(),
            user,
            scopes: scopes.to_string(),
            redirect_uri: None,
            created_ms: now,
            expires_ms: None,
        })
        .await
        .map_err(ApiError::unavailable)?;
    grants::cache_issued(svc, &secret_hash(&access_token)).await;
    Ok(Token { access_token, token_type: "Bearer", scope: scopes.to_string(), created_at: now / 1000 })
}

#[derive(Deserialize)]
struct RevokeRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

/// `POST /oauth/revoke` (RFC 7009): an app revokes one of its tokens. An unknown token is
/// already as good as revoked: 200. Another app's token: 403, and it stays valid.
async fn revoke(
    svc: Svc,
    req: HttpRequest,
    body: Result<FormOrJson<RevokeRequest>, ApiError>,
) -> Result<HttpResponse, OAuthError> {
    let body = oauth_body(body)?;
    let app = client(&svc, &req, body.client_id, body.client_secret).await?;
    let token = body.token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let hash = secret_hash(&token);
    let grant = svc.auth.grant(&hash).await.map_err(ApiError::unavailable)?;
    match grant {
        Some(g) if g.kind == GrantKind::Token && g.client_id != app.client_id => Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "you are not authorized to revoke this token",
        )),
        Some(g) if g.kind == GrantKind::Token => {
            grants::cache_revoked(&svc, &hash).await?;
            svc.auth.take_grant(&hash).await.map_err(ApiError::unavailable)?;
            if let Some(memo) = &svc.grant_memo {
                memo.forget(&hash);
            }
            Ok(HttpResponse::Ok().json(serde_json::json!({})))
        }
        _ => Ok(HttpResponse::Ok().json(serde_json::json!({}))),
    }
}
