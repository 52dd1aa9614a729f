//! Materialised home timelines.
//!
//! A timeline is the newest `max_entries` `(post, author)` pairs pushed to one reader,
//! newest first. Only **active** readers have one: a timeline not read for the configured
//! window is dropped, fan-out skips readers without one, and the next read rebuilds it
//! from storage (see timeline-service).
//!
//! Each timeline also knows how far back it is authoritative:
//! - `floor == None`: it holds *every* entry the reader should have (it was never trimmed
//!   and was rebuilt from a complete pull);
//! - `floor == Some(f)`: it holds every entry with `post >= f`; older ones must come from
//!   storage. Trimming raises the floor; inserts below the floor are ignored, because
//!   accepting them would make a gap look authoritative.
//!
//! A rebuild first calls [`TimelineCache::begin_rebuild`], so pushes that race with the
//! storage read land in the (not yet readable) timeline, then
//! [`TimelineCache::finish_rebuild`] merges the pulled entries in.

pub mod bus;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod memory;
pub mod read_model;
pub mod redis;

use async_trait::async_trait;
use starling_ids::{PostId, UserId};

/// One cached timeline entry: 16 bytes of payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub post: PostId,
    pub author: UserId,
}

/// One post on its way to many timelines: a unit of [`TimelineCache::insert_all`].
#[derive(Clone, Copy, Debug)]
pub struct Push<'a> {
    pub entry: Entry,
    pub owners: &'a [UserId],
}

/// A read from a ready timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// In the order asked for.
    pub entries: Vec<Entry>,
    /// See the crate docs: entries older than the floor may exist but are not cached.
    pub floor: Option<PostId>,
}

/// Bounds for a read: posts strictly between `after` and `before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub before: Option<PostId>,
    pub after: Option<PostId>,
    pub limit: usize,
    /// `false`: the newest entries below `before`; `true`: the oldest entries above `after`
    /// (Mastodon's `min_id`), still returned oldest first.
    pub oldest_first: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("timeline cache failed: {0}")]
    Backend(String),
}

pub type CacheResult<T> = Result<T, CacheError>;

#[async_trait]
pub trait TimelineCache: Send + Sync + 'static {
    /// Adds `entry` to each owner's timeline if the owner has one (ready or rebuilding);
    /// owners without one are skipped. Idempotent. Trims to `max_entries`. Returns how many
    /// of the owners have a timeline, i.e. are now up to date for this entry, whether it
    /// was added, already there, or below the floor (fan-out metrics: delivered vs skipped).
    async fn insert(&self, owners: &[UserId], entry: Entry) -> CacheResult<usize>;

    /// [`TimelineCache::insert`] of many entries at once (a fan-out worker's batch of
    /// posts), in as few round trips as the implementation can. Same rules and result as
    /// calling `insert` for each push: returns how many `(entry, owner)` pairs landed in a
    /// timeline. Not atomic: after an error some pushes may have landed (retrying is safe,
    /// inserts are idempotent).
    async fn insert_all(&self, pushes: &[Push<'_>]) -> CacheResult<usize> {
        let mut delivered = 0;
        for p in pushes {
            delivered += self.insert(p.owners, p.entry).await?;
        }
        Ok(delivered)
    }

    /// Adds many entries to one owner's timeline (backfill after a follow), same rules.
    async fn insert_many(&self, owner: UserId, entries: &[Entry]) -> CacheResult<()>;

    /// Removes one post from the given timelines (post deleted).
    async fn remove_post(&self, owners: &[UserId], post: PostId) -> CacheResult<()>;

    /// Removes every entry by `author` from `owner`'s timeline (unfollow, block).
    async fn remove_author(&self, owner: UserId, author: UserId) -> CacheResult<()>;

    /// Reads a ready timeline and marks its owner active. `None` if the owner has no
    /// timeline or it is still being rebuilt.
    async fn read(&self, owner: UserId, range: Range) -> CacheResult<Option<Slice>>;

    /// Creates an empty, not-yet-readable timeline that accepts inserts. Returns `false`
    /// if one already exists (someone else is rebuilding, or it is ready).
    async fn begin_rebuild(&self, owner: UserId) -> CacheResult<bool>;

    /// Merges `entries` (the newest ones pulled from storage) into a rebuilding timeline
    /// and makes it ready. `complete` says the pull returned everything there is, so the
    /// timeline has no floor. Does nothing if the timeline vanished meanwhile.
    async fn finish_rebuild(&self, owner: UserId, entries: &[Entry], complete: bool) -> CacheResult<()>;

    /// Drops one timeline.
    async fn evict(&self, owner: UserId) -> CacheResult<()>;

    /// Drops every timeline (operations; tests of the rebuild path).
    async fn clear(&self) -> CacheResult<()>;

    /// Number of timelines held (ready or rebuilding).
    async fn len(&self) -> CacheResult<usize>;
}
