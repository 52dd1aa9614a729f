//! HTTP handlers of the timeline-service: `GET /api/v1/timelines/home`, Mastodon's, an
//! array of Statuses with an absolute `Link` header (`next`: older, `prev`: newer).

use std::sync::Arc;

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use starling_api::ApiError;
use starling_api::mastodon::PublicBase;
use starling_api::pagination::Page;

use crate::{Direction, Query, TimelineService};

pub(crate) fn configure(svc: &Arc<TimelineService>, cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::Data::from(svc.clone())).route("/api/v1/timelines/home", web::get().to(home));
    crate::streaming::routes(cfg);
}

async fn home(svc: web::Data<TimelineService>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (me, held) = svc.page_caller(&req).await?;
    let page = match (me.require("read:statuses").and_then(|()| Page::from_request(&req)), &held) {
        (Ok(page), _) => page,
        (Err(e), Some(held)) => {
            // A revoked token hears that it is revoked before anything else, as elsewhere.
            svc.confirm(&req, held, &me).await?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    let query = match page.min_id {
        Some(min) => Query { upper: page.max_id, lower: Some(min), direction: Direction::Up, limit: page.limit },
        None => Query { upper: page.max_id, lower: page.since_id, direction: Direction::Down, limit: page.limit },
    };
    let mut home = svc.home(me.id, query).await.map_err(ApiError::unavailable)?;
    if let Some(held) = &held {
        svc.confirm(&req, held, &me).await?;
    }
    if query.direction == Direction::Up {
        home.posts.reverse();
    }
    let ids: Vec<_> = home.posts.iter().map(|p| p.id).collect();
    let (prev_min_id, next_max_id) = page.cursors(&ids);
    let base = PublicBase::of(&req);
    let statuses = svc.statuses(&base, home, me.id).await.map_err(ApiError::unavailable)?;
    let mut res = HttpResponse::Ok();
    if let Some(link) = page.link_header(&format!("{}{}", base.0, req.path()), prev_min_id, next_max_id) {
        res.insert_header(("Link", link));
    }
    Ok(res.content_type(ContentType::json()).body(statuses.into_json()))
}
