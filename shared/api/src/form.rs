//! [`FormOrJson`]: a request body as the Mastodon API takes it, form-encoded or JSON.
//!
//! Mastodon's endpoints accept both, and clients differ (Mastodon.py posts forms,
//! masto.js JSON), so the body is parsed by its `Content-Type`: JSON for
//! `application/json`, form otherwise (an OAuth client may send no type at all).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use crate::{ApiError, ErrorCode, JsonObject, MAX_BODY_BYTES};

#[derive(Debug)]
pub struct FormOrJson<T>(pub T);

impl<T> std::ops::Deref for FormOrJson<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for FormOrJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorCode::PayloadTooLarge, format!("request body exceeds {MAX_BODY_BYTES} bytes"))
                } else {
                    ApiError::new(ErrorCode::InvalidJson, format!("unreadable body: {e}"))
                }
            })?;
            if json {
                let value: JsonObject<T> = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")))?;
                return Ok(FormOrJson(value.0));
            }
            serde_urlencoded::from_bytes(&bytes)
                .map(FormOrJson)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("invalid form body: {e}")))
        })
    }
}
