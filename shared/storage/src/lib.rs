//! Storage seams for the two services that own durable data.
//!
//! - [`PostStore`]: posts, a user's posts by time, idempotency keys (post-service).
//! - [`GraphStore`]: users, follow edges, blocks, counts, author class (graph-service).
//! - [`AuthStore`]: registered apps, logins, OAuth grants (graph-service). Implemented by
//!   the graph stores, so that a sign-up creates the user and its login together. Its
//!   writes carry no events, so it has no outbox.
//!
//! Every mutation takes the events it causes and commits them to an **outbox** atomically
//! with the change ([`Outbox`]). The service then appends them to the event log and acks
//! them; a relay re-publishes whatever a crash left behind. So a change is never durable
//! without its event, which a "write to the store, then to the log" sequence cannot promise.
//!
//! Implementations: [`embedded::EmbeddedStore`] (fjall, one directory on local disk).
//! Every implementation passes [`conformance`].

pub mod auth;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;

pub use auth::{AccountCreated, AppRecord, AuthStore, CredentialRecord, GrantKind, GrantRecord, SecretHash};

use async_trait::async_trait;
use starling_events::Record;
use starling_ids::{PostId, UserId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failed: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    /// Unique, compared case-insensitively (stored as given, indexed lower-cased).
    pub handle: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostRecord {
    pub id: PostId,
    pub author: UserId,
    /// Copied from the author at creation: handles never change, and hydrating a timeline
    /// then needs no call to the graph-service.
    pub author_handle: String,
    pub text: String,
    pub reply_to: Option<PostId>,
    /// For a reblog: the status it shares, never itself a reblog. A reblog is a post of
    /// the reblogger's (it fans out as one) with no text and no `reply_to`.
    pub reblog_of: Option<PostId>,
}

/// What [`PostStore::reblog`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reblogged {
    /// Stored now; `outbox` holds the sequence numbers of the events committed with it.
    Created { outbox: Vec<u64> },
    /// This user already reblogged the status: that reblog (nothing stored).
    Existing(PostRecord),
    /// The status does not exist, or is itself a reblog (nothing stored).
    NoOriginal,
}

/// What [`PostStore::delete_post`] removed: the post, then every reblog of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub posts: Vec<PostRecord>,
    /// The events committed, to publish: `events(post)` for each post in order.
    pub events: Vec<Record>,
    /// Their outbox sequence numbers.
    pub outbox: Vec<u64>,
}

/// The events a delete commits for each post it removes (the post and its reblogs).
pub type EventsFor = dyn Fn(&PostRecord) -> Vec<Record> + Send + Sync;

/// A status's counts, and what one viewer did to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interactions {
    pub reblogs: u64,
    pub favourites: u64,
    pub replies: u64,
    /// The viewer reblogged it (false without a viewer).
    pub reblogged: bool,
    /// The viewer favourited it (false without a viewer).
    pub favourited: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthorClass {
    /// Posts are pushed to followers' timelines at write time.
    Ordinary,
    /// Posts are merged into followers' timelines at read time.
    Celebrity,
}

/// An event waiting in the outbox to be appended to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Increasing in commit order within one store.
    pub seq: u64,
    pub record: Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// A window over a time-ordered list: ids strictly between `after` and `before`, at most
/// `limit` of them, from the end given by `order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window<T> {
    pub before: Option<T>,
    pub after: Option<T>,
    pub limit: usize,
    pub order: Order,
}

impl<T> Window<T> {
    pub fn newest(limit: usize) -> Self {
        Window { before: None, after: None, limit, order: Order::NewestFirst }
    }

    pub fn before(before: T, limit: usize) -> Self {
        Window { before: Some(before), after: None, limit, order: Order::NewestFirst }
    }
}

/// What a notification tells its recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// `account` followed the recipient.
    Follow,
    /// `account` replied to the recipient's `status` (the reply).
    Mention,
    /// `account` reblogged the recipient's `status`.
    Reblog,
    /// `account` favourited the recipient's `status`.
    Favourite,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 4] =
        [NotificationKind::Follow, NotificationKind::Mention, NotificationKind::Reblog, NotificationKind::Favourite];

    /// Mastodon's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            NotificationKind::Follow => "follow",
            NotificationKind::Mention => "mention",
            NotificationKind::Reblog => "reblog",
            NotificationKind::Favourite => "favourite",
        }
    }

    /// A stable one-byte tag for storage keys.
    pub fn tag(self) -> u8 {
        match self {
            NotificationKind::Follow => 1,
            NotificationKind::Mention => 2,
            NotificationKind::Reblog => 3,
            NotificationKind::Favourite => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// One notification. Its key is `(recipient, kind, account, status)`: one per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotificationRecord {
    /// Time-ordered (a Snowflake id, like posts'): the page cursor.
    pub id: u64,
    pub recipient: UserId,
    pub kind: NotificationKind,
    /// Who followed, replied, reblogged or favourited.
    pub account: UserId,
    /// The reply (mention), or the status reblogged or favourited; `None` for a follow.
    pub status: Option<PostId>,
}

/// Notifications, kept by the store of the service whose change they report (follows by
/// the graph's, the rest by the posts'). They are written after that change, not with it:
/// a crash in between loses the notification, never the change.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Stores `n` unless one with its key exists (then nothing changes). Returns whether it did.
    async fn add_notification(&self, n: &NotificationRecord) -> StoreResult<bool>;

    /// Removes the notification with this key (an unfavourite, an unreblog). Returns
    /// whether there was one.
    async fn remove_notification(
        &self,
        recipient: UserId,
        kind: NotificationKind,
        account: UserId,
        status: Option<PostId>,
    ) -> StoreResult<bool>;

    /// `recipient`'s notifications with ids in the window.
    async fn notifications(&self, recipient: UserId, window: Window<u64>) -> StoreResult<Vec<NotificationRecord>>;
}

/// Events committed with a change, published afterwards (see the crate docs).
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Oldest first.
    async fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>>;
    /// Removes entries once the log has them. Unknown sequence numbers are ignored.
    async fn ack(&self, seqs: &[u64]) -> StoreResult<()>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreatePost {
    /// Stored now; `outbox` holds the sequence numbers of the events committed with it.
    Created { outbox: Vec<u64> },
    /// The author already used this idempotency key; this is the post it created (or
    /// `None` if that post has since been deleted).
    Replayed(Option<PostRecord>),
}

#[async_trait]
pub trait PostStore: Outbox + NotificationStore {
    /// Stores `post` and its events. With an idempotency key, a second call by the same
    /// author with the same key stores nothing and returns [`CreatePost::Replayed`].
    async fn create_post(
        &self,
        post: &PostRecord,
        idempotency_key: Option<&str>,
        events: Vec<Record>,
    ) -> StoreResult<CreatePost>;

    /// Deletes the post with every reblog of it and its favourites, committing
    /// `events(post)` for each post removed. `None` (and nothing committed) if there was
    /// no such post. Deleting a reblog is an unreblog.
    async fn delete_post(&self, id: PostId, events: &EventsFor) -> StoreResult<Option<Deleted>>;

    /// Stores `reblog` (a post whose `reblog_of` is set) and its events, unless its author
    /// already reblogged that status.
    async fn reblog(&self, reblog: &PostRecord, events: Vec<Record>) -> StoreResult<Reblogged>;

    /// `user`'s reblog of `original`, if any.
    async fn reblog_by(&self, original: PostId, user: UserId) -> StoreResult<Option<PostId>>;

    /// The reblogs of `original` within the window (by reblog id), with their rebloggers.
    async fn reblogs(&self, original: PostId, window: Window<PostId>) -> StoreResult<Vec<(PostId, UserId)>>;

    /// Favourites (`on`) or unfavourites `status` for `user`. `Some(changed)`, or `None`
    /// if there is no such status (or it is a reblog, which cannot be favourited).
    async fn set_favourite(&self, status: PostId, user: UserId, on: bool) -> StoreResult<Option<bool>>;

    /// Who favourited `status`, ascending by id, strictly after `after`.
    async fn favourited_by(&self, status: PostId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;

    /// Same length and order as `ids`: each status's counts and what `viewer` did to it
    /// (all zero for unknown posts).
    async fn interactions(&self, ids: &[PostId], viewer: Option<UserId>) -> StoreResult<Vec<Interactions>>;

    /// The replies to `parent`, oldest first.
    async fn replies(&self, parent: PostId, limit: usize) -> StoreResult<Vec<PostId>>;

    /// Same length and order as `ids`; `None` for unknown or deleted posts.
    async fn get_posts(&self, ids: &[PostId]) -> StoreResult<Vec<Option<PostRecord>>>;

    /// One author's posts within the window.
    async fn posts_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostRecord>>;

    /// The ids of the same posts as [`PostStore::posts_by_author`], without reading the
    /// posts: merging timelines needs only ids, and only the page served is hydrated.
    async fn post_ids_by_author(&self, author: UserId, window: Window<PostId>) -> StoreResult<Vec<PostId>>;
}

/// Result of a graph mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeChange {
    /// Done; `outbox` holds the sequence numbers of the committed events.
    Changed { outbox: Vec<u64> },
    /// Nothing to do (already following, not following, already blocked...). Nothing committed.
    Unchanged,
    /// Refused because one of the two users blocks the other. Nothing committed.
    Blocked,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub followers: u64,
    pub following: u64,
}

#[async_trait]
pub trait GraphStore: Outbox + NotificationStore {
    /// Returns `false` (and stores nothing) if the handle is taken, ignoring case.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<bool>;
    async fn user(&self, id: UserId) -> StoreResult<Option<UserRecord>>;
    async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<UserRecord>>;

    /// `follower` starts following `followee`. [`EdgeChange::Blocked`] if either blocks the other.
    async fn follow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;
    async fn unfollow(&self, follower: UserId, followee: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;
    /// Records the block and removes the follows in both directions, atomically.
    async fn block(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;
    async fn unblock(&self, blocker: UserId, blocked: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;

    async fn follows(&self, follower: UserId, followee: UserId) -> StoreResult<bool>;
    /// Does `blocker` block `blocked`?
    async fn blocks(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool>;
    /// Followers of `user`, ascending by id, strictly after `after`.
    async fn followers(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;
    /// Whom `user` follows, ascending by id, strictly after `after`.
    async fn following(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;
    async fn counts(&self, user: UserId) -> StoreResult<Counts>;

    /// `muter` stops seeing `muted`'s posts and reblogs at home, still following them.
    /// [`EdgeChange::Unchanged`] if already muted.
    async fn mute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;
    async fn unmute(&self, muter: UserId, muted: UserId, events: Vec<Record>) -> StoreResult<EdgeChange>;
    async fn mutes(&self, muter: UserId, muted: UserId) -> StoreResult<bool>;
    /// Whom `user` mutes, ascending by id, strictly after `after`.
    async fn muted(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;
    /// Who mutes `user`, ascending by id, strictly after `after`: the followers a push skips.
    async fn muters(&self, user: UserId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;

    /// Ordinary unless set otherwise.
    async fn author_class(&self, user: UserId) -> StoreResult<AuthorClass>;
    /// Sets the class and commits `events` with it; [`EdgeChange::Unchanged`] if it already was.
    async fn set_author_class(&self, user: UserId, class: AuthorClass, events: Vec<Record>) -> StoreResult<EdgeChange>;
    /// Every celebrity (a small set by construction).
    async fn celebrities(&self) -> StoreResult<Vec<UserId>>;
}
