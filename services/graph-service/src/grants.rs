//! How a process tells what an OAuth access token stands for: [`StoreGrants`] where the
//! graph store is, and the internal route other processes ask.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use starling_api::ApiError;
use starling_api::auth::{Grant, GrantVerifier};
use starling_api::scopes::Scopes;
use starling_clients::wire::{WireGrant, WireUser};
use starling_storage::{AuthStore, GrantKind, GraphStore, UserRecord};

use crate::{GraphService, oauth};

type Svc = web::Data<GraphService>;

pub(crate) fn internal_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/v1/grants/{hash}", web::get().to(grant));
}

/// The live access token behind `hash`, with its account's handle.
async fn live_token(
    auth: &dyn AuthStore,
    users: &dyn GraphStore,
    hash: &[u8; 32],
) -> Result<Option<(Option<UserRecord>, String, String)>, ApiError> {
    let Some(g) = auth.grant(hash).await.map_err(ApiError::unavailable)? else { return Ok(None) };
    if g.kind != GrantKind::Token || g.expires_ms.is_some_and(|e| e <= oauth::now()) {
        return Ok(None);
    }
    let user = match g.user {
        // A token whose account is gone is void.
        Some(id) => match users.user(id).await.map_err(ApiError::unavailable)? {
            Some(u) => Some(u),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some((user, g.client_id, g.scopes)))
}

/// Access tokens looked up in the graph store itself (the process that runs the
/// graph-service).
pub struct StoreGrants {
    pub auth: Arc<dyn AuthStore>,
    pub users: Arc<dyn GraphStore>,
}

#[async_trait::async_trait]
impl GrantVerifier for StoreGrants {
    async fn grant(&self, hash: &[u8; 32]) -> Result<Option<Grant>, ApiError> {
        let Some((user, client_id, scopes)) = live_token(&*self.auth, &*self.users, hash).await? else {
            return Ok(None);
        };
        let scopes = Scopes::parse(&scopes)?;
        Ok(Some(Grant { user: user.map(|u| (u.id, u.handle)), client_id, scopes }))
    }
}

/// `GET /internal/v1/grants/{hash}` (the hash base64url): what a token stands for, 404 if
/// nothing live.
async fn grant(svc: Svc, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash: [u8; 32] = URL_SAFE_NO_PAD
        .decode(path.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::not_found("grant"))?;
    let (user, client_id, scopes) =
        live_token(&*svc.auth, &*svc.store, &hash).await?.ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(HttpResponse::Ok().json(WireGrant { user: user.map(WireUser::from), client_id, scopes }))
}
