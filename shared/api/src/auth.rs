//! Bearer-token authentication.
//!
//! Two kinds of bearer token are accepted:
//!
//! - **OAuth 2 access tokens**, issued by the graph-service's `/oauth/token` (Mastodon's
//!   flows): opaque random strings, looked up on every request through the
//!   [`GrantVerifier`] the process was given, so a revoked token stops working at once
//!   everywhere (the timeline-service's home page keeps its own copy of grants, which
//!   the read model's change log keeps as current: see `timeline-service`). They carry
//!   [`Scopes`]; an app's own token (client_credentials) acts for no user.
//! - **Service tokens**: JWTs signed with HS256 and a shared secret from configuration,
//!   verified locally, holding every scope (the replay tool, benchmarks and the legacy
//!   registration endpoint mint them). The subject is the user id; the handle rides
//!   along because posts copy it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use starling_ids::UserId;

use crate::scopes::Scopes;
use crate::{ApiError, ErrorCode};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    handle: String,
    iat: u64,
    exp: u64,
}

/// Signs and verifies tokens. Shared with handlers as `web::Data<TokenKeys>`.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, user: UserId, handle: &str) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims =
            Claims { sub: user.to_string(), handle: handle.to_owned(), iat: now, exp: now + self.ttl.as_secs() };
        // Encoding HS256 with a valid key cannot fail for these plain claims.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let why = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired",
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature is invalid",
                _ => "token is malformed",
            };
            ApiError::new(ErrorCode::Unauthorized, why)
        })?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "token subject is not a user id"))?;
        Ok(AuthUser { id, handle: data.claims.handle, scopes: Scopes::all(), client_id: None })
    }
}

/// What an OAuth access token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The account it acts for; `None` for an app's own token.
    pub user: Option<(UserId, String)>,
    pub client_id: String,
    pub scopes: Scopes,
}

/// Looks OAuth access tokens up. The graph-service's store answers in its own process;
/// other processes ask it (see the graph-service's internal API).
#[async_trait::async_trait]
pub trait GrantVerifier: Send + Sync {
    /// The live grant behind the token whose SHA-256 is `hash`; `None` if it is unknown,
    /// revoked or expired.
    async fn grant(&self, hash: &[u8; 32]) -> Result<Option<Grant>, ApiError>;
}

/// The SHA-256 under which a secret (token, code, client secret) is stored.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The caller, proven by a valid bearer token that acts for a user. Handlers that take it
/// require auth; those that need a scope call [`AuthUser::require`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    pub handle: String,
    pub scopes: Scopes,
    /// The OAuth app the token was issued to; `None` for a service token.
    pub client_id: Option<String>,
}

impl AuthUser {
    /// 403 unless the token holds `scope` (or a scope that implies it).
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            return Ok(());
        }
        Err(ApiError::new(ErrorCode::Forbidden, format!("this token lacks the {scope} scope")))
    }
}

type Authenticating<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { user_of(&req, required_bearer(&req)?).await })
    }
}

/// The user a request is made for, if any: no `Authorization` header (or an app's own
/// token) is an anonymous viewer; a header with a bad token is still refused (401), as
/// Mastodon does, rather than silently served anonymously.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer(pub Option<AuthUser>);

impl Viewer {
    pub fn id(&self) -> Option<UserId> {
        self.0.as_ref().map(|u| u.id)
    }
}

impl FromRequest for Viewer {
    type Error = ApiError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if bearer(&req)?.is_none() {
                return Ok(Viewer(None));
            }
            match authenticate(&req).await? {
                Caller::User(user) => Ok(Viewer(Some(user))),
                Caller::App(_) => Ok(Viewer(None)),
            }
        })
    }
}

/// Whoever presented a valid token: a user, or an app acting for itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    User(AuthUser),
    /// An app's own token: its client id and scopes.
    App(AppCaller),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCaller {
    pub client_id: String,
    pub scopes: Scopes,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

/// The bearer token of `req`, if it has an `Authorization` header at all.
pub fn bearer(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) else { return Ok(None) };
    header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization header must be 'Bearer <token>'"))
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    caller_of(req, required_bearer(req)?).await
}

/// The bearer token of `req`; 401 without one.
pub fn required_bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    bearer(req)?.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing Authorization: Bearer token"))
}

/// The user `token` acts for, checked with the keys and grants `req`'s app holds: for a
/// token that does not come in an `Authorization` header (streaming takes it from the
/// query string or the WebSocket protocol, as browsers cannot set headers there).
pub async fn user_of(req: &HttpRequest, token: &str) -> Result<AuthUser, ApiError> {
    match caller_of(req, token).await? {
        Caller::User(user) => Ok(user),
        Caller::App(_) => {
            Err(ApiError::new(ErrorCode::Forbidden, "this token acts for an app; this needs a user's token"))
        }
    }
}

/// The hash an OAuth access token is looked up by; `None` for a service token (a JWT).
pub fn oauth_hash(token: &str) -> Option<[u8; 32]> {
    // A JWT has three dot-separated parts; an OAuth token is one base64url string.
    (!token.contains('.')).then(|| secret_hash(token))
}

async fn caller_of(req: &HttpRequest, token: &str) -> Result<Caller, ApiError> {
    let Some(hash) = oauth_hash(token) else {
        let keys = req
            .app_data::<web::Data<TokenKeys>>()
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "token keys are not configured"))?;
        return keys.verify(token).map(Caller::User);
    };
    let grants = req
        .app_data::<web::Data<Arc<dyn GrantVerifier>>>()
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "this service takes no OAuth tokens"))?;
    let grant = grants
        .grant(&hash)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the access token is invalid, revoked or expired"))?;
    Ok(match grant.user {
        Some((id, handle)) => {
            Caller::User(AuthUser { id, handle, scopes: grant.scopes, client_id: Some(grant.client_id) })
        }
        None => Caller::App(AppCaller { client_id: grant.client_id, scopes: grant.scopes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_forgeries_do_not() {
        let keys = TokenKeys::from_secret(b"secret-one", Duration::from_secs(60));
        let token = keys.issue(UserId(42), "ada");
        let user = keys.verify(&token).unwrap();
        assert_eq!(user, AuthUser { id: UserId(42), handle: "ada".into(), scopes: Scopes::all(), client_id: None });

        let other = TokenKeys::from_secret(b"secret-two", Duration::from_secs(60));
        assert_eq!(other.verify(&token).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(keys.verify("not.a.jwt").unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let keys = TokenKeys::from_secret(b"s", Duration::from_secs(0));
        let claims = Claims { sub: "7".into(), handle: "x".into(), iat: 0, exp: 1 };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        let err = keys.verify(&token).unwrap_err();
        assert_eq!(err.message, "token expired");
    }
}
