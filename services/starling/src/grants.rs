//! OAuth access tokens checked by a process without the graph store: in the read model's
//! grant cache (Redis, shared by every process), filled on a miss from the graph-service
//! (`GET /internal/v1/grants/{hash}`). The graph-service writes a new token through and
//! tombstones a revoked one before it answers, so a revocation holds at once here too.

use std::sync::Arc;

use graph_service::grant_from_wire;
use starling_api::auth::{Grant, GrantVerifier};
use starling_api::{ApiError, rate_limit::RateLimit};
use starling_clients::http::HttpGraph;
use starling_clients::wire::WireGrant;
use starling_timeline_cache::read_model::ReadModel;

/// Sign-in attempts per account: a burst of 10, then one every 6 s.
pub const LOGIN_LIMIT: RateLimit = RateLimit { per_second: 1.0 / 6.0, burst: 10.0 };

pub struct RemoteGrants {
    pub graph: HttpGraph,
    /// `None` without Redis: every request asks the graph-service.
    pub cache: Option<Arc<dyn ReadModel>>,
}

impl RemoteGrants {
    async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<WireGrant>, ApiError> {
        let Some(cache) = &self.cache else {
            return self.graph.grant(hash).await.map_err(ApiError::unavailable);
        };
        match cache.grant(hash).await {
            Ok(Some(Some(bytes))) => serde_json::from_slice(&bytes).map(Some).map_err(ApiError::unavailable),
            Ok(Some(None)) => Ok(None),
            // The store behind the graph-service is the truth the cache only mirrors (a
            // revocation is done in both before it is answered), so a Redis that fails
            // costs a call to the graph-service, not the request.
            Err(e) => {
                tracing::warn!(error = %e, "grant cache unavailable; asking the graph-service");
                self.graph.grant(hash).await.map_err(ApiError::unavailable)
            }
            Ok(None) => {
                let grant = self.graph.grant(hash).await.map_err(ApiError::unavailable)?;
                // Unknown tokens are cached too, so guessing costs the graph-service nothing.
                let bytes = grant.as_ref().map(serde_json::to_vec).transpose().map_err(ApiError::unavailable)?;
                if let Err(e) = cache.fill_grant(hash, bytes.as_deref()).await {
                    tracing::warn!(error = %e, "could not cache a grant");
                }
                Ok(grant)
            }
        }
    }
}

#[async_trait::async_trait]
impl GrantVerifier for RemoteGrants {
    async fn grant(&self, hash: &[u8; 32]) -> Result<Option<Grant>, ApiError> {
        self.lookup(hash).await?.map(grant_from_wire).transpose()
    }
}
