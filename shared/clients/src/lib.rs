//! Calls from one service to another.
//!
//! No service reads another's tables. The fan-out worker and the timeline-service need
//! the graph (followers, following, author class) and posts (recent posts, hydration), so
//! they go through these traits. In one process ([`local`]) a call is a function call into
//! the owning service's store handle; across processes it is an HTTP call to the owning
//! service's internal API.

pub mod http;
pub mod local;
pub mod wire;

use async_trait::async_trait;
use starling_ids::{PostId, UserId};
use starling_storage::{
    AuthorClass, Counts, Interactions, NotificationRecord, PostRecord, StoreError, UserRecord, Window,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the owning service failed: {0}")]
    Remote(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The read side of the graph-service, as the home timelines see it: a follow that is
/// muted does not count (the fan-out and the timeline-service are its only users).
#[async_trait]
pub trait GraphClient: Send + Sync + 'static {
    async fn user(&self, id: UserId) -> ClientResult<Option<UserRecord>>;
    /// Followers of `user` ascending by id, strictly after `after`.
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> ClientResult<Vec<UserId>>;
    /// Everyone whose posts reach `user`'s home timeline: whom it follows and does not
    /// mute, ascending by id.
    async fn following(&self, user: UserId) -> ClientResult<Vec<UserId>>;
    /// Do `followee`'s posts reach `follower`'s home timeline (a follow, not muted)?
    async fn follows(&self, follower: UserId, followee: UserId) -> ClientResult<bool>;
    /// Everyone who mutes `user`: the followers its posts are not pushed to.
    async fn muters(&self, user: UserId) -> ClientResult<Vec<UserId>>;
    /// The notifications the graph keeps for `user` (follows), ids in the window.
    async fn notifications(&self, user: UserId, window: Window<u64>) -> ClientResult<Vec<NotificationRecord>>;
    /// Takes back the notification that `follower` followed `recipient` (dismissed by
    /// `recipient`); whether there was one.
    async fn remove_follow_notification(&self, recipient: UserId, follower: UserId) -> ClientResult<bool>;
    async fn author_class(&self, user: UserId) -> ClientResult<AuthorClass>;
    /// Follower and following counts (an unknown user has none).
    async fn counts(&self, user: UserId) -> ClientResult<Counts>;
    /// Every celebrity; small by construction (threshold on follower count).
    async fn celebrities(&self) -> ClientResult<Vec<UserId>>;

    /// The state now of each `(follower, followee)` edge, in order: what the fan-out
    /// reconciles a batch of graph events against, in one call instead of two per edge.
    async fn edges(&self, edges: &[(UserId, UserId)]) -> ClientResult<Vec<EdgeState>> {
        let mut states = Vec::with_capacity(edges.len());
        for &(follower, followee) in edges {
            let follows = self.follows(follower, followee).await?;
            let celebrity = follows && self.author_class(followee).await? == AuthorClass::Celebrity;
            states.push(EdgeState { follows, celebrity });
        }
        Ok(states)
    }
}

/// One follow edge as the graph has it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EdgeState {
    pub follows: bool,
    /// Whether the followee is a celebrity; only looked up (and only true) if `follows`.
    pub celebrity: bool,
}

/// The read side of the post-service.
#[async_trait]
pub trait PostClient: Send + Sync + 'static {
    /// Same length and order as `ids`; `None` for unknown or deleted posts.
    async fn get_posts(&self, ids: &[PostId]) -> ClientResult<Vec<Option<PostRecord>>>;
    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostRecord>>;
    /// Ids only, for merging; see [`starling_storage::PostStore::post_ids_by_author`].
    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostId>>;
    /// See [`starling_storage::PostStore::reblogs`].
    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> ClientResult<Vec<(PostId, UserId)>>;
    /// See [`starling_storage::PostStore::interactions`].
    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> ClientResult<Vec<Interactions>>;

    /// [`PostClient::post_ids_by_author`] for many authors with one window, in the order
    /// of `authors`: a timeline's merge round or a batch of follows' backfills in one call.
    async fn post_ids_by_authors(&self, authors: &[UserId], window: Window<PostId>) -> ClientResult<Vec<Vec<PostId>>> {
        let mut all = Vec::with_capacity(authors.len());
        for &author in authors {
            all.push(self.post_ids_by_author(author, window).await?);
        }
        Ok(all)
    }
}
