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
use starling_storage::{AuthorClass, PostRecord, StoreError, UserRecord, Window};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the owning service failed: {0}")]
    Remote(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The read side of the graph-service.
#[async_trait]
pub trait GraphClient: Send + Sync + 'static {
    async fn user(&self, id: UserId) -> ClientResult<Option<UserRecord>>;
    /// Followers of `user` ascending by id, strictly after `after`.
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> ClientResult<Vec<UserId>>;
    /// Everyone `user` follows, ascending by id.
    async fn following(&self, user: UserId) -> ClientResult<Vec<UserId>>;
    async fn follows(&self, follower: UserId, followee: UserId) -> ClientResult<bool>;
    async fn author_class(&self, user: UserId) -> ClientResult<AuthorClass>;
    /// Every celebrity; small by construction (threshold on follower count).
    async fn celebrities(&self) -> ClientResult<Vec<UserId>>;
}

/// The read side of the post-service.
#[async_trait]
pub trait PostClient: Send + Sync + 'static {
    /// Same length and order as `ids`; `None` for unknown or deleted posts.
    async fn get_posts(&self, ids: &[PostId]) -> ClientResult<Vec<Option<PostRecord>>>;
    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostRecord>>;
    /// Ids only, for merging; see [`starling_storage::PostStore::post_ids_by_author`].
    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> ClientResult<Vec<PostId>>;
}
