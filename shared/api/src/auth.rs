//! Bearer-token authentication.
//!
//! Tokens are JWTs signed with HS256 and a shared secret from configuration, so every
//! service can verify them without calling the graph-service. The subject is the user id;
//! the handle rides along because posts copy it.

use std::future::{Ready, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use starling_ids::UserId;

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
        Ok(AuthUser { id, handle: data.claims.handle })
    }
}

/// The caller, proven by a valid bearer token. Handlers that take it require auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    pub handle: String,
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let keys = req
        .app_data::<web::Data<TokenKeys>>()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "token keys are not configured"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing Authorization: Bearer token"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization header must be 'Bearer <token>'"))?;
    keys.verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_forgeries_do_not() {
        let keys = TokenKeys::from_secret(b"secret-one", Duration::from_secs(60));
        let token = keys.issue(UserId(42), "ada");
        let user = keys.verify(&token).unwrap();
        assert_eq!(user, AuthUser { id: UserId(42), handle: "ada".into() });

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
