//! Who a home page is for, without a grant lookup per page where this process's copy
//! ([`crate::NearCopy`]) holds the token's grant.
//!
//! A revoked token must stop working at once in every process. The graph-service
//! tombstones a revoked grant and logs the revocation in the read model's change log
//! before it answers, so a page that starts after that reads a log number at least as
//! recent as the revocation in its first round trip (with the follow list), and the copy
//! catches up to that number before the page is served. A grant found in the copy is
//! therefore taken on trust only for that round trip, and confirmed after it: if the copy
//! no longer holds it (revoked, or the copy was dropped), the token is looked up again as
//! every other route looks it up, and a revoked one gets its 401 then.

use actix_web::HttpRequest;
use starling_api::auth::{AuthUser, oauth_hash, required_bearer, user_of};
use starling_api::{ApiError, ErrorCode};

use crate::TimelineService;

/// A grant taken from the copy: to be confirmed after the page's first round trip.
pub(crate) struct Unconfirmed([u8; 32]);

impl TimelineService {
    /// The caller of `req`, from this process's copy of grants where it holds the token's
    /// (then also an [`Unconfirmed`]), else as every route looks it up (and kept).
    pub(crate) async fn page_caller(&self, req: &HttpRequest) -> Result<(AuthUser, Option<Unconfirmed>), ApiError> {
        let token = required_bearer(req)?;
        let (Some(copy), Some(hash)) = (&self.near, oauth_hash(token)) else {
            return Ok((user_of(req, token).await?, None));
        };
        if let Some(user) = copy.grant(&hash) {
            return Ok((user, Some(Unconfirmed(hash))));
        }
        // Where the copy was before the lookup: kept only if no catch-up came between.
        let at = copy.now();
        let user = user_of(req, token).await?;
        if let Some(at) = at {
            copy.fill_grant(at, hash, user.clone());
        }
        Ok((user, None))
    }

    /// After a page whose first round trip brought the copy up to date (see the module
    /// docs): the grant `held` stands if the copy still holds it, else the token is looked
    /// up again and must still act for `user`.
    pub(crate) async fn confirm(&self, req: &HttpRequest, held: &Unconfirmed, user: &AuthUser) -> Result<(), ApiError> {
        if self.near.as_ref().is_some_and(|copy| copy.grant(&held.0).is_some()) {
            return Ok(());
        }
        let again = user_of(req, required_bearer(req)?).await?;
        if again.id != user.id {
            return Err(ApiError::new(ErrorCode::Unauthorized, "the access token is invalid, revoked or expired"));
        }
        Ok(())
    }
}
