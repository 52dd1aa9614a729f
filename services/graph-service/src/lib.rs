//! graph-service: who is who and who follows whom.
//!
//! Owns accounts (handles, logins, OAuth apps and tokens), follow edges, blocks, follower counts and the author
//! class (ordinary or celebrity). Every change commits its event to the store's outbox
//! and is answered only after the event is in the log (see `starling-outbox`).
//!
//! Celebrity classification uses hysteresis: an author becomes a celebrity at
//! `threshold` followers and stops being one below `demote_below`, so an author hovering
//! around the line does not flip the fan-out strategy on every follow.
//! That is the hybrid mode; `celebrity.mode` also offers the two ends, for deployments and
//! what-if studies that want them: push-all (no celebrities) and pull-all (every author
//! with a follower is one).

mod accounts;
mod admin;
mod edges;
mod grants;
mod instance;
mod internal;
mod oauth;
mod passwords;

pub use grants::{GrantMemo, StoreGrants, grant_from_wire};

use std::sync::Arc;

use actix_web::web;
use serde::Deserialize;
use starling_api::ApiError;
use starling_api::rate_limit::RateLimiter;
use starling_events::{Record, event_id, now_ms, pb};
use starling_ids::{IdGenerator, UserId};
use starling_outbox::Publisher;
use starling_storage::{AuthStore, AuthorClass, EdgeChange, GraphStore, NotificationKind, NotificationRecord};
use starling_timeline_cache::bus::{self, Bus, Change};
use starling_timeline_cache::read_model::ReadModel;

/// Which authors' posts are pushed to their followers' timelines at write time and which
/// are merged into them at read time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FanoutMode {
    /// Push for authors below the celebrity line, merge at read above it.
    #[default]
    Hybrid,
    /// Push every post to every follower: no author is ever a celebrity.
    PushAll,
    /// Merge every post at read: every author with a follower is a celebrity. (An author
    /// without one is pushed to nobody either way; its own timeline is written in every mode.)
    PullAll,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CelebritySettings {
    pub mode: FanoutMode,
    /// Followers at which an author becomes a celebrity (read-time merge); hybrid mode only.
    pub threshold: u64,
    /// Followers below which a celebrity becomes ordinary again (push); hybrid mode only.
    pub demote_below: u64,
}

impl Default for CelebritySettings {
    fn default() -> Self {
        CelebritySettings { mode: FanoutMode::Hybrid, threshold: 10_000, demote_below: 8_000 }
    }
}

impl CelebritySettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.threshold == 0 || self.demote_below > self.threshold {
            return Err("celebrity: need 0 < demote_below <= threshold".into());
        }
        Ok(())
    }

    /// The class an author should have now, given the class it has. Authors are only
    /// reclassified when their follower count changes, so a changed mode or line reaches
    /// each author at its next follow or unfollow.
    pub fn classify(&self, current: AuthorClass, followers: u64) -> AuthorClass {
        match self.mode {
            FanoutMode::PushAll => AuthorClass::Ordinary,
            FanoutMode::PullAll if followers > 0 => AuthorClass::Celebrity,
            FanoutMode::PullAll => AuthorClass::Ordinary,
            FanoutMode::Hybrid => match current {
                AuthorClass::Ordinary if followers >= self.threshold => AuthorClass::Celebrity,
                AuthorClass::Celebrity if followers < self.demote_below => AuthorClass::Ordinary,
                same => same,
            },
        }
    }
}

/// Everything the handlers share.
pub struct GraphService {
    pub store: Arc<dyn GraphStore>,
    /// Logins and OAuth state; the same store as `store`.
    pub auth: Arc<dyn AuthStore>,
    pub publisher: Publisher,
    pub ids: Arc<IdGenerator>,
    pub limiter: RateLimiter,
    /// Sign-in attempts per account (password guessing).
    pub logins: RateLimiter,
    /// The read model whose grant cache other processes check tokens against; `None`
    /// when no other process shares one with this one.
    pub model: Option<Arc<dyn ReadModel>>,
    /// The grants this process's [`StoreGrants`] keeps, told of each revocation.
    pub grant_memo: Option<Arc<GrantMemo>>,
    /// Where each stored notification is announced, for its recipient's open streams.
    pub bus: Arc<dyn Bus>,
    pub celebrity: CelebritySettings,
    /// The operator's token for `/admin/v1` (empty: that API is off).
    pub admin_token: String,
}

impl GraphService {
    /// Registers the public routes (`/api/v1`, `/oauth`) and the operator's (`/admin/v1`).
    pub fn configure(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()));
        accounts::routes(cfg);
        admin::routes(cfg);
        oauth::routes(cfg);
        instance::routes(cfg);
    }

    /// Registers the internal routes under `/internal/v1` (separate processes only).
    pub fn configure_internal(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()));
        internal::routes(cfg);
        grants::internal_routes(cfg);
    }

    /// Commits nothing itself: publishes the events a store call committed, then
    /// re-evaluates the class of the authors whose follower count changed.
    async fn finish(
        &self,
        change: EdgeChange,
        events: Vec<Record>,
        reclassify: &[UserId],
    ) -> Result<EdgeChange, ApiError> {
        if let EdgeChange::Changed { outbox } = &change {
            self.publisher.publish(events, outbox).await.map_err(ApiError::unavailable)?;
            for &author in reclassify {
                // The edge is committed and its event published: a failure here must not
                // turn the answer into an error. The next change to this author retries.
                if let Err(e) = self.reclassify(author).await {
                    tracing::warn!(author = %author, error = %e.message, "reclassification failed");
                }
            }
        }
        Ok(change)
    }

    /// Tells `followee` that `follower` followed it, and announces it to the followee's
    /// streams. Best effort, after the follow (see `NotificationStore`): the follow stands
    /// whatever happens here.
    pub(crate) async fn notify_follow(&self, follower: UserId, followee: UserId) {
        let n = NotificationRecord {
            id: self.ids.next_post().get(),
            recipient: followee,
            kind: NotificationKind::Follow,
            account: follower,
            status: None,
        };
        match self.store.add_notification(&n).await {
            Ok(true) => bus::announce(&*self.bus, Change::Notified(n)).await,
            // Followed before: that follow's notification stands, announced then.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(follower = follower.get(), followee = followee.get(), error = %e, "could not store a follow notification")
            }
        }
    }

    /// Brings `author`'s class in line with its follower count.
    pub async fn reclassify(&self, author: UserId) -> Result<(), ApiError> {
        let store = &self.store;
        let current = store.author_class(author).await.map_err(ApiError::unavailable)?;
        let followers = store.counts(author).await.map_err(ApiError::unavailable)?.followers;
        let wanted = self.celebrity.classify(current, followers);
        if wanted == current {
            return Ok(());
        }
        let class = match wanted {
            AuthorClass::Ordinary => pb::AuthorClass::Ordinary,
            AuthorClass::Celebrity => pb::AuthorClass::Celebrity,
        };
        let event = graph_event(pb::graph_event::Kind::AuthorClassChanged(pb::AuthorClassChanged {
            author_id: author.get(),
            class: class as i32,
            follower_count: followers,
        }));
        let events = vec![Record::graph(author.get(), &event)];
        let change = store.set_author_class(author, wanted, events.clone()).await.map_err(ApiError::unavailable)?;
        if let EdgeChange::Changed { outbox } = change {
            tracing::info!(author = %author, followers, class = ?wanted, "author class changed");
            self.publisher.publish(events, &outbox).await.map_err(ApiError::unavailable)?;
        }
        Ok(())
    }
}

pub(crate) fn graph_event(kind: pb::graph_event::Kind) -> pb::GraphEvent {
    pb::GraphEvent { event_id: event_id(), occurred_at_ms: now_ms(), kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_keeps_class_between_the_lines() {
        let c = CelebritySettings { threshold: 10, demote_below: 7, ..Default::default() };
        assert_eq!(c.classify(AuthorClass::Ordinary, 9), AuthorClass::Ordinary);
        assert_eq!(c.classify(AuthorClass::Ordinary, 10), AuthorClass::Celebrity);
        assert_eq!(c.classify(AuthorClass::Celebrity, 8), AuthorClass::Celebrity);
        assert_eq!(c.classify(AuthorClass::Celebrity, 7), AuthorClass::Celebrity);
        assert_eq!(c.classify(AuthorClass::Celebrity, 6), AuthorClass::Ordinary);
        assert!(CelebritySettings { threshold: 5, demote_below: 6, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn push_all_and_pull_all_ignore_the_line() {
        let push = CelebritySettings { mode: FanoutMode::PushAll, ..Default::default() };
        let pull = CelebritySettings { mode: FanoutMode::PullAll, ..Default::default() };
        for current in [AuthorClass::Ordinary, AuthorClass::Celebrity] {
            for followers in [0, 1, 9_999, 10_000, 1_000_000] {
                assert_eq!(push.classify(current, followers), AuthorClass::Ordinary, "{current:?} {followers}");
                let pulled = if followers > 0 { AuthorClass::Celebrity } else { AuthorClass::Ordinary };
                assert_eq!(pull.classify(current, followers), pulled, "{current:?} {followers}");
            }
        }
    }
}
