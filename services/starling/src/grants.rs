//! OAuth access tokens checked by a process without the graph store: it asks the
//! graph-service on every request (`GET /internal/v1/grants/{hash}`), so a revoked token
//! fails at once here too.

use starling_api::auth::{Grant, GrantVerifier};
use starling_api::scopes::Scopes;
use starling_api::{ApiError, rate_limit::RateLimit};
use starling_clients::http::HttpGraph;

/// Sign-in attempts per account: a burst of 10, then one every 6 s.
pub const LOGIN_LIMIT: RateLimit = RateLimit { per_second: 1.0 / 6.0, burst: 10.0 };

pub struct RemoteGrants(pub HttpGraph);

#[async_trait::async_trait]
impl GrantVerifier for RemoteGrants {
    async fn grant(&self, hash: &[u8; 32]) -> Result<Option<Grant>, ApiError> {
        let Some(g) = self.0.grant(hash).await.map_err(ApiError::unavailable)? else { return Ok(None) };
        Ok(Some(Grant {
            user: g.user.map(|u| (u.id, u.handle)),
            client_id: g.client_id,
            scopes: Scopes::parse(&g.scopes)?,
        }))
    }
}
