//! `GET /api/v1/instance` and `/api/v2/instance`: what clients read first about a server.
//! The version is Mastodon's form (clients parse `X.Y.Z` to decide what to call) with
//! Starling's own after it. Both paths also answer with a trailing slash: Mastodon.py
//! 2.3.3 asks for `/api/v1/instance/`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use starling_api::MAX_POST_CHARS;

/// The Mastodon API level Starling follows.
pub const MASTODON_VERSION: &str = "4.2.0";

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/api/v1/instance", "/api/v1/instance/"] {
        cfg.route(path, web::get().to(v1));
    }
    for path in ["/api/v2/instance", "/api/v2/instance/"] {
        cfg.route(path, web::get().to(v2));
    }
}

fn version() -> String {
    format!("{MASTODON_VERSION} (compatible; Starling {})", env!("CARGO_PKG_VERSION"))
}

/// Host, `http(s)://host` and `ws(s)://host` as the request reached us.
fn origin(req: &HttpRequest) -> (String, String, String) {
    let info = req.connection_info();
    let host = info.host().to_owned();
    let ws = if info.scheme() == "https" { "wss" } else { "ws" };
    (host.clone(), format!("{}://{host}", info.scheme()), format!("{ws}://{host}"))
}

/// Nothing takes media or polls yet: every limit is 0.
fn media_attachments() -> serde_json::Value {
    json!({ "supported_mime_types": [], "image_size_limit": 0, "image_matrix_limit": 0, "video_size_limit": 0,
        "video_frame_rate_limit": 0, "video_matrix_limit": 0 })
}

fn polls() -> serde_json::Value {
    json!({ "max_options": 0, "max_characters_per_option": 0, "min_expiration": 0, "max_expiration": 0 })
}

fn statuses() -> serde_json::Value {
    json!({ "max_characters": MAX_POST_CHARS, "max_media_attachments": 0, "characters_reserved_per_url": 23 })
}

async fn v1(req: HttpRequest) -> HttpResponse {
    let (host, _, ws) = origin(&req);
    HttpResponse::Ok().json(json!({
        "uri": host,
        "title": "Starling",
        "short_description": "A Starling social timeline server.",
        "description": "",
        "email": "",
        "version": version(),
        "urls": { "streaming_api": ws },
        "stats": { "user_count": 0, "status_count": 0, "domain_count": 0 },
        "thumbnail": null,
        "languages": ["en"],
        "registrations": true,
        "approval_required": false,
        "invites_enabled": false,
        "configuration": {
            "accounts": { "max_featured_tags": 0 },
            "statuses": statuses(),
            "media_attachments": media_attachments(),
            "polls": polls(),
        },
        "contact_account": null,
        "rules": [],
    }))
}

async fn v2(req: HttpRequest) -> HttpResponse {
    let (host, http, ws) = origin(&req);
    HttpResponse::Ok().json(json!({
        "domain": host,
        "title": "Starling",
        "version": version(),
        "source_url": format!("{http}/openapi.json"),
        "description": "A Starling social timeline server.",
        "usage": { "users": { "active_month": 0 } },
        "thumbnail": { "url": format!("{http}/avatars/original/missing.png") },
        "languages": ["en"],
        "configuration": {
            "urls": { "streaming": ws },
            "accounts": { "max_featured_tags": 0, "max_pinned_statuses": 0 },
            "statuses": statuses(),
            "media_attachments": media_attachments(),
            "polls": polls(),
            "translation": { "enabled": false },
        },
        "registrations": { "enabled": true, "approval_required": false, "message": null },
        "contact": { "email": "", "account": null },
        "rules": [],
    }))
}
