//! The error shape of every Starling API.

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Machine-readable error codes. Clients switch on these, so they are part of the API:
/// add new ones, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Body is not valid JSON, or not the expected JSON shape/types.
    InvalidJson,
    /// A query or header parameter is malformed or out of range.
    InvalidParameter,
    /// Well-formed input that breaks a rule (empty text, a taken username...).
    ValidationFailed,
    /// No token, or a token that is malformed, forged or expired.
    Unauthorized,
    /// Authenticated but not allowed (deleting someone else's post, following oneself,
    /// following across a block).
    Forbidden,
    NotFound,
    /// The path exists, not with this method.
    MethodNotAllowed,
    /// The request conflicts with current state (an Idempotency-Key whose post is gone).
    Conflict,
    PayloadTooLarge,
    RateLimited,
    /// A dependency (storage, event log) failed; retrying may succeed.
    Unavailable,
    /// A bug. Never caused by bad input.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidParameter => StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }

    /// A dependency failed. The detail is logged, not shown: it may name internals.
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "dependency failed");
        ApiError {
            retry_after: Some(1),
            ..Self::new(ErrorCode::Unavailable, "a dependency is unavailable, retry later")
        }
    }

    pub fn from_json_error(err: JsonPayloadError) -> Self {
        match err {
            JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                Self::new(ErrorCode::PayloadTooLarge, format!("request body exceeds {limit} bytes"))
            }
            JsonPayloadError::ContentType => {
                Self::new(ErrorCode::InvalidJson, "expected Content-Type: application/json")
            }
            JsonPayloadError::Deserialize(e) => Self::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")),
            other => Self::new(ErrorCode::InvalidJson, format!("unreadable body: {other}")),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        res.json(Body { error: Inner { code: self.code, message: &self.message } })
    }
}
