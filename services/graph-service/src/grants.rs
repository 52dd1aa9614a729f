//! How a process tells what an OAuth access token stands for: [`StoreGrants`] where the
//! graph store is, and the internal route other processes ask (through the read model's
//! grant cache, which this service writes through on issue and tombstones on revoke).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use starling_api::ApiError;
use starling_api::auth::{Grant, GrantVerifier};
use starling_api::scopes::Scopes;
use starling_clients::wire::{WireGrant, WireUser};
use starling_storage::{AuthStore, GrantKind, GraphStore};

use crate::{GraphService, oauth};

type Svc = web::Data<GraphService>;

pub(crate) fn internal_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/v1/grants/{hash}", web::get().to(grant));
}

/// What the live access token behind `hash` stands for, `None` if nothing live: the one
/// lookup behind the in-process check, the internal route and the cache write-through.
async fn live_grant(
    auth: &dyn AuthStore,
    users: &dyn GraphStore,
    hash: &[u8; 32],
) -> Result<Option<WireGrant>, ApiError> {
    let Some(g) = auth.grant(hash).await.map_err(ApiError::unavailable)? else { return Ok(None) };
    if g.kind != GrantKind::Token || g.expires_ms.is_some_and(|e| e <= oauth::now()) {
        return Ok(None);
    }
    let user = match g.user {
        // A token whose account is gone is void.
        Some(id) => match users.user(id).await.map_err(ApiError::unavailable)? {
            Some(u) => Some(WireUser::from(u)),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some(WireGrant { user, client_id: g.client_id, scopes: g.scopes }))
}

/// A grant as the wire (and the grant cache) carries it, as the auth extractor takes it.
pub fn grant_from_wire(g: WireGrant) -> Result<Grant, ApiError> {
    Ok(Grant { user: g.user.map(|u| (u.id, u.handle)), client_id: g.client_id, scopes: Scopes::parse(&g.scopes)? })
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
        live_grant(&*self.auth, &*self.users, hash).await?.map(grant_from_wire).transpose()
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
    let grant = live_grant(&*svc.auth, &*svc.store, &hash).await?.ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(HttpResponse::Ok().json(grant))
}

/// Caches the grant just issued under `hash` (best effort: a miss fills it from the store).
pub(crate) async fn cache_issued(svc: &GraphService, hash: &[u8; 32]) {
    let Some(model) = &svc.model else { return };
    let cached = match live_grant(&*svc.auth, &*svc.store, hash).await {
        Ok(Some(g)) => serde_json::to_vec(&g).ok(),
        _ => None,
    };
    if let Some(bytes) = cached
        && let Err(e) = model.set_grant(hash, Some(&bytes)).await
    {
        tracing::warn!(error = %e, "could not cache an issued token");
    }
}

/// Tombstones `hash` in the grant cache. Not best effort: it runs before the store forgets
/// the token, and a revocation that cannot reach the cache fails, so no process goes on
/// accepting a revoked token from its cache.
pub(crate) async fn cache_revoked(svc: &GraphService, hash: &[u8; 32]) -> Result<(), ApiError> {
    match &svc.model {
        Some(model) => model.set_grant(hash, None).await.map_err(ApiError::unavailable),
        None => Ok(()),
    }
}
