//! How a process tells what an OAuth access token stands for: [`StoreGrants`] where the
//! graph store is, and the internal route other processes ask (through the read model's
//! grant cache, which this service writes through on issue and tombstones on revoke).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::RwLock;
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
    /// Set where no other process can revoke a token (the embedded store).
    pub memo: Option<Arc<GrantMemo>>,
}

#[async_trait::async_trait]
impl GrantVerifier for StoreGrants {
    async fn grant(&self, hash: &[u8; 32]) -> Result<Option<Grant>, ApiError> {
        if let Some(grant) = self.memo.as_ref().and_then(|m| m.get(hash)) {
            return Ok(Some(grant));
        }
        let seen = self.memo.as_ref().map(|m| m.revocations.load(Ordering::SeqCst));
        let grant = live_grant(&*self.auth, &*self.users, hash).await?.map(grant_from_wire).transpose()?;
        if let (Some(memo), Some(seen), Some(g)) = (&self.memo, seen, &grant) {
            memo.keep(seen, *hash, g);
        }
        Ok(grant)
    }
}

/// Live grants as this process last found them in a store that no other process writes
/// (the embedded one, which one process opens): each token is then read from the store
/// once, not on every request. Every revocation goes through this process's graph-service,
/// which forgets the token here once the store has (see [`GrantMemo::forget`]); nothing
/// else ends a token (they do not expire, and accounts are not deleted). Unknown tokens
/// are not kept: one issued later would be hidden behind them.
#[derive(Default)]
pub struct GrantMemo {
    grants: RwLock<HashMap<[u8; 32], Grant>>,
    /// Moved by every revocation, so that a lookup that raced one keeps nothing.
    revocations: AtomicU64,
}

/// Past this many tokens the memo starts again (each entry is ~200 bytes).
const MEMO_GRANTS: usize = 100_000;

impl GrantMemo {
    fn get(&self, hash: &[u8; 32]) -> Option<Grant> {
        self.grants.read().get(hash).cloned()
    }

    /// Keeps `grant`, read from the store after the memo's revocation count was `seen`,
    /// unless a revocation came since (it may have been this token's, after the read).
    fn keep(&self, seen: u64, hash: [u8; 32], grant: &Grant) {
        let mut grants = self.grants.write();
        if self.revocations.load(Ordering::SeqCst) != seen {
            return;
        }
        if grants.len() >= MEMO_GRANTS {
            grants.clear();
        }
        grants.insert(hash, grant.clone());
    }

    /// Forgets `hash`, after the store has: a lookup that read it before then keeps nothing.
    pub(crate) fn forget(&self, hash: &[u8; 32]) {
        let mut grants = self.grants.write();
        self.revocations.fetch_add(1, Ordering::SeqCst);
        grants.remove(hash);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant { user: None, client_id: "app".into(), scopes: Scopes::parse("read").unwrap() }
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_keeps_nothing() {
        let memo = GrantMemo::default();
        let seen = memo.revocations.load(Ordering::SeqCst);
        // The store was read (live), then the token was revoked, then the lookup ends.
        memo.forget(&[1; 32]);
        memo.keep(seen, [1; 32], &grant());
        assert_eq!(memo.get(&[1; 32]), None);
        // A lookup that began after the revocation keeps what it read.
        memo.keep(memo.revocations.load(Ordering::SeqCst), [2; 32], &grant());
        assert_eq!(memo.get(&[2; 32]), Some(grant()));
        memo.forget(&[2; 32]);
        assert_eq!(memo.get(&[2; 32]), None);
    }
}
