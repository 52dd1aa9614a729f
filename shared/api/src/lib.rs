//! What every Starling HTTP API shares.
//!
//! - [`ApiError`]: the one error type handlers return; it renders as
//!   `{"error":{"code":"...","message":"..."}}` with the matching status, and every
//!   extractor failure (bad JSON, bad path, oversized body) is routed through it.
//! - [`JsonObject`]: a request body that must be a JSON object; [`form::FormOrJson`]: one
//!   that may also be form-encoded, as Mastodon's endpoints take them.
//! - [`auth`]: bearer tokens (OAuth access tokens, service JWTs) and the
//!   [`auth::AuthUser`] extractor; [`scopes`]: OAuth scopes.
//! - [`pagination`]: `max_id` / `since_id` / `min_id` / `limit` parsing and `Link` headers.
//! - [`rate_limit`]: per-user token buckets for writes.
//! - [`traced::Traced`]: a server span per request, when traces are exported.

pub mod admin;
pub mod auth;
pub mod error;
pub mod form;
pub mod mastodon;
pub mod pagination;
pub mod rate_limit;
pub mod scopes;
pub mod traced;

pub use error::{ApiError, ErrorCode};

use std::marker::PhantomData;

use actix_web::web;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

/// Longest post, in Unicode scalar values (what a person counts as characters).
pub const MAX_POST_CHARS: usize = 500;

/// Largest request body any endpoint accepts. A post is at most 500 characters (2 KB of
/// UTF-8); anything much larger is a client bug or an attack.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest body an internal call takes: a fan-out batch's edges or a lookup's ids. The
/// internal APIs are never routed from outside (README, k8s/README.md).
pub const MAX_INTERNAL_BODY_BYTES: usize = 4 * 1024 * 1024;

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit).error_handler(|err, _req| ApiError::from_json_error(err).into())
}

/// The JSON configuration of internal routes that take a body: [`configure_extractors`]'
/// error shape with [`MAX_INTERNAL_BODY_BYTES`]. Register on each such resource.
pub fn internal_json() -> web::JsonConfig {
    json_config(MAX_INTERNAL_BODY_BYTES)
}

/// The JSON configuration of the operator's bulk routes (`/admin/v1/accounts`: a thousand
/// usernames of up to 30 characters). Register on each such resource.
pub fn admin_json() -> web::JsonConfig {
    json_config(64 * 1024)
}

/// Extractor configuration so malformed input yields our error shape instead of
/// actix-web's plain-text defaults. Register on every app.
pub fn configure_extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config(MAX_BODY_BYTES))
        .app_data(
            web::PathConfig::default().error_handler(|err, _req| {
                ApiError::new(ErrorCode::NotFound, format!("no such resource: {err}")).into()
            }),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|err, _req| ApiError::new(ErrorCode::InvalidParameter, err.to_string()).into()),
        )
        .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES));
}

/// A request body that must be a JSON object, then deserialized as `T`.
///
/// serde's derived structs also accept an array of their fields in order, so without this
/// `["hi"]` would be a post and `["ada"]` a registration. The OpenAPI document allows only
/// objects, and a client sending arrays is confused: refuse it (400 `invalid_json`) rather
/// than guess. `T` still refuses unknown and duplicate fields itself.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(ObjectOnly(PhantomData)).map(JsonObject)
    }
}

/// The JSON 404 for paths no route matches.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let allowed = documented_methods(req.path());
    if allowed.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"));
    }
    // A documented path with another method: 405, saying which methods it takes.
    let allow = allowed.join(", ");
    let body = serde_json::json!({ "error": {
        "code": "method_not_allowed",
        "message": format!("{} {} is not an endpoint; this path takes {allow}", req.method(), req.path()),
    }});
    Ok(actix_web::HttpResponse::MethodNotAllowed().insert_header(("Allow", allow)).json(body))
}

/// The methods `/openapi.json` documents for the path template `path` matches (a `{…}`
/// segment matches any non-empty segment; where several match, the ones with the most
/// literal segments, as a router picks `/notifications/clear` over `/notifications/{id}`),
/// upper case.
fn documented_methods(path: &str) -> Vec<String> {
    static PATHS: std::sync::LazyLock<Vec<(Vec<String>, Vec<String>)>> = std::sync::LazyLock::new(|| {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        paths
            .into_iter()
            .map(|(template, ops)| {
                let segments = template.split('/').map(str::to_owned).collect();
                let methods =
                    ops.as_object().map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect()).unwrap_or_default();
                (segments, methods)
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    let matches = |template: &[String]| {
        template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| if t.starts_with('{') { !s.is_empty() } else { t == s })
    };
    let literal = |template: &[String]| template.iter().filter(|t| !t.starts_with('{')).count();
    let best = PATHS.iter().filter(|(t, _)| matches(t)).map(|(t, _)| literal(t)).max();
    let mut methods: Vec<String> = PATHS
        .iter()
        .filter(|(t, _)| matches(t) && Some(literal(t)) == best)
        .flat_map(|(_, m)| m.iter().cloned())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The OpenAPI 3.1 document of the public API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
