//! The read model: what a home-timeline page needs besides the timeline itself, cached
//! next to it so that a page makes no call to another service in the common case.
//!
//! | collection | holds | kept current by | filled on a miss from |
//! |---|---|---|---|
//! | posts | each post's fields, or a tombstone | post-service on create (write-through) and delete; the fan-out on `PostDeleted` | post-service (`get_posts`) |
//! | following | each reader's followees | the fan-out on every graph event (the edge's state read from the graph) | graph-service (`following`) |
//! | recent | each celebrity's newest post ids | the fan-out on each celebrity post; forgotten on a class change | post-service (`post_ids_by_author`) |
//! | celebrities | who is a celebrity now | the fan-out on `AuthorClassChanged` | graph-service (`celebrities`) |
//! | counts | each author's follower and following counts, as statuses show them | nothing: they expire (a minute in Redis), so they may be that old | graph-service (`counts`) |
//! | interactions | each status's reblog, favourite and reply counts, and each viewer's flags (reblogged, favourited) on it | the post-service on each change (write-through: the changed status's counts and the actor's flags); otherwise they expire (a minute in Redis) | post-service (`interactions`) |
//! | grants | what each OAuth access token stands for (opaque bytes), or a tombstone | graph-service on issue (write-through) and revoke (tombstone, before it answers) | graph-service (`/internal/v1/grants`) |
//!
//! # Fills race events; events win
//!
//! A fill reads storage, then writes the cache. An event that lands between the two (an
//! unfollow applied while the reader's follow list is on its way) would be overwritten by
//! the older list and lost for good. So a fill is two steps: [`ReadModel::begin_fill`]
//! records a token for the collection, then [`ReadModel::finish_fill`] writes the fetched
//! value only if that token is still there. Every event update removes the token first,
//! whether or not the collection is cached; a fill that lost the race writes nothing, and
//! the next read fills again (from storage that now has the change). The reader that
//! fetched still uses what it fetched: that is a read racing a write, which may see either.
//!
//! Grants need no token either: a fill only ever writes where nothing is cached
//! ([`ReadModel::fill_grant`]), and a revocation overwrites, so a revocation racing a fill
//! stays revoked. Interactions work the same way ([`ReadModel::fill_interactions`] against
//! [`ReadModel::set_interactions`]): a viewer's own favourite shows at once on its next
//! page; two people's changes to one status racing each other may leave its counts a
//! minute old.
//!
//! Posts need no token: a post never changes, so a fill can only add what storage has, and
//! adds never replace a tombstone ([`ReadModel::add_posts`]), so a delete racing a fill
//! stays deleted.
//!
//! Event updates touch only cached collections: adding a followee to a list nobody cached
//! would make a partial list look complete.
//!
//! # The celebrity version
//!
//! Every reader of a celebrity merges the same recent list, so a timeline-service process
//! keeps the celebrity list and the recent lists it has read, tagged with the model's
//! *celebrity version*, a counter that every change to either moves (a celebrity post,
//! a class change, a wipe). A page reads the version with the reader's follow list, in
//! one command, and reuses what it holds if the version has not moved: a celebrity's post
//! shows up on the next page read after the fan-out applied it, in every process, with no
//! per-page read of the lists. The counter is moved after the change it announces, so a
//! reader that sees the new version also sees the change; and it never comes back to a
//! value it had (in Redis a lost counter starts again from the clock), so a process never
//! takes lists it read before a wipe for current.
//!
//! # The change log
//!
//! Posts never change, so a timeline-service may keep its own copy of the posts it read,
//! with their counts and its readers' flags (`NearCopy` there): only a delete or an
//! interaction can make a copy wrong (and it may keep the OAuth grants its pages were
//! asked with, which only a revocation makes wrong). Every delete
//! ([`ReadModel::posts_deleted`]) writes its tombstones, every interaction
//! ([`ReadModel::set_interactions`]) its counts and flags and every revocation
//! ([`ReadModel::set_grant`]) its tombstone, then appends a [`Change`] each to the
//! *change log* and moves its sequence number. A page reads that number with the reader's follow list
//! ([`ReaderView::changes`], the same command); a process whose copy is at that number
//! serves from it, and one behind asks [`ReadModel::changes_since`] what to drop. The
//! post-service logs a change before it answers it, so a read that starts after it shows
//! it (as with the tombstone, best effort: if Redis fails just then, a delete is logged
//! by the fan-out's `PostDeleted`, retried until it is, and an interaction's counts are
//! a minute old at most, as when they expire). The log keeps the last [`CHANGE_LOG`]
//! changes; a holder further behind (or after a wipe, when the number starts again from
//! the clock, like the celebrity version) drops its whole copy.
//!
//! Every implementation passes [`conformance`].

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod memory;

use async_trait::async_trait;
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, PostRecord};

use crate::{CacheError, CacheResult};

/// How many of a celebrity's newest post ids the recent list keeps; deeper pages go to
/// storage.
pub const RECENT_DEPTH: usize = 128;

/// How many of the newest changes the change log keeps (see the module docs).
pub const CHANGE_LOG: usize = 10_000;

/// What a page reads first, in one command: the reader's followees (`None` if not cached),
/// the celebrity version and the change log's number (`None` if it has none yet: a new
/// or wiped model). See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderView {
    pub following: Option<Vec<UserId>>,
    pub version: u64,
    pub changes: Option<u64>,
}

/// One entry of the change log: what a holder of copies must drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// The post was deleted.
    Deleted(PostId),
    /// `viewer` reblogged, favourited or replied to `post` (or undid it): the post's
    /// counts and the viewer's flags on it moved.
    Interacted { post: PostId, viewer: UserId },
    /// The OAuth access token whose SHA-256 this is was revoked.
    Revoked([u8; 32]),
}

/// [`ReadModel::changes_since`]'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The log's number now: a holder that applied `changes` is at it.
    pub seq: u64,
    /// Logged after the number asked about, oldest first.
    pub changes: Vec<Change>,
    /// `false` if the log no longer reaches back to the number asked about (trimmed, or
    /// wiped and started again): `changes` is then empty, and a holder must drop its copy.
    pub complete: bool,
}

/// A cached post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachedPost {
    Live(PostRecord),
    /// Deleted (or never existed): a read drops it without asking storage.
    Deleted,
}

/// [`ReadModel::page`]'s answer: each list in the order of what it was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageLookup {
    pub posts: Vec<Option<CachedPost>>,
    pub counts: Vec<Option<Counts>>,
    pub interactions: Vec<Option<Interactions>>,
}

/// A celebrity's newest post ids, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recent {
    pub posts: Vec<PostId>,
    /// `true` if these are all of the author's posts; `false` if older ones may exist
    /// beyond the last (the list was cut at [`RECENT_DEPTH`]).
    pub complete: bool,
}

/// A collection that is filled from storage and kept current by events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collection {
    /// Whom this reader follows.
    Following(UserId),
    /// This author's newest post ids.
    Recent(UserId),
    /// Every celebrity.
    Celebrities,
}

/// A fetched value for [`ReadModel::finish_fill`]; its kind must match the collection's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fill {
    Users(Vec<UserId>),
    Recent(Recent),
}

/// Proof that a fill began; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillToken(pub u64);

#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Same length and order as `ids`; `None` where the post is not cached.
    async fn posts(&self, ids: &[PostId]) -> CacheResult<Vec<Option<CachedPost>>>;

    /// Caches posts that are not cached yet (write-through on create, fill after a miss).
    /// Never replaces what is cached, so a tombstone stays.
    async fn add_posts(&self, posts: &[PostRecord]) -> CacheResult<()>;

    /// Caches tombstones for these posts, replacing whatever was cached, then appends them
    /// to the change log (see the module docs).
    async fn posts_deleted(&self, ids: &[PostId]) -> CacheResult<()>;

    /// `reader`'s followees in no particular order, the celebrity version and the change
    /// log's number (see the module docs), in one lookup.
    async fn reader_view(&self, reader: UserId) -> CacheResult<ReaderView>;

    /// What changed since the change log stood at `after` (see the module docs).
    /// Starts the log if it has none.
    async fn changes_since(&self, after: u64) -> CacheResult<Changes>;

    /// Every celebrity, `None` if not cached.
    async fn celebrities(&self) -> CacheResult<Option<Vec<UserId>>>;

    /// Same length and order as `authors`; `None` where not cached.
    async fn recent(&self, authors: &[UserId]) -> CacheResult<Vec<Option<Recent>>>;

    /// Starts a fill of `collection` (see the module docs), replacing any fill in progress.
    async fn begin_fill(&self, collection: Collection) -> CacheResult<FillToken>;

    /// Caches `value` as `collection` if `token` is still its fill in progress. Returns
    /// whether it did.
    async fn finish_fill(&self, collection: Collection, token: FillToken, value: Fill) -> CacheResult<bool>;

    /// An event: `member` is now in (`true`) or out of `collection` (`Following` or
    /// `Celebrities`). Cancels fills in progress; changes the collection only if cached.
    async fn set_member(&self, collection: Collection, member: UserId, present: bool) -> CacheResult<()>;

    /// An event: `author` made `posts`. Cancels fills in progress; adds them to the recent
    /// list only if it is cached (keeping it newest first, unique, at most [`RECENT_DEPTH`]).
    async fn add_recent(&self, author: UserId, posts: &[PostId]) -> CacheResult<()>;

    /// Drops a collection and any fill in progress (an author's class changed: its recent
    /// list no longer follows its posts).
    async fn forget(&self, collection: Collection) -> CacheResult<()>;

    /// Same length and order as `users`; `None` where not cached (or expired).
    async fn counts(&self, users: &[UserId]) -> CacheResult<Vec<Option<Counts>>>;

    /// Caches counts read from the graph, replacing what is cached.
    async fn fill_counts(&self, counts: &[(UserId, Counts)]) -> CacheResult<()>;

    /// Same length and order as `ids`: each status's interactions as `viewer` sees them,
    /// `None` where its counts or the viewer's flags are not cached (or expired).
    async fn interactions(&self, viewer: UserId, ids: &[PostId]) -> CacheResult<Vec<Option<Interactions>>>;

    /// [`ReadModel::counts`] of `authors` and [`ReadModel::interactions`] of `statuses`, as
    /// one page needs them: in one round trip where the backend can.
    async fn page_counts(
        &self,
        authors: &[UserId],
        statuses: &[PostId],
        viewer: UserId,
    ) -> CacheResult<(Vec<Option<Counts>>, Vec<Option<Interactions>>)> {
        page_counts_apart(self, authors, statuses, viewer).await
    }

    /// What a page's first hydration reads: the posts `posts` (those the caller does not
    /// hold already), the counts of `authors`, and the interactions of `statuses` as
    /// `viewer` sees them (each as its own method answers), in one round trip where the
    /// backend can. A page of plain posts then needs nothing more.
    async fn page(
        &self,
        posts: &[PostId],
        statuses: &[PostId],
        authors: &[UserId],
        viewer: UserId,
    ) -> CacheResult<PageLookup> {
        page_apart(self, posts, statuses, authors, viewer).await
    }

    /// Caches interactions read from the post-service, where nothing is cached yet.
    async fn fill_interactions(&self, viewer: UserId, found: &[(PostId, Interactions)]) -> CacheResult<()>;

    /// `viewer` changed these statuses (write-through): their counts and `viewer`'s flags
    /// on them, replacing what is cached, then appended to the change log.
    async fn set_interactions(&self, viewer: UserId, changed: &[(PostId, Interactions)]) -> CacheResult<()>;

    /// The cached grant of the token whose SHA-256 is `hash`: `Some(Some(bytes))` live,
    /// `Some(None)` revoked or unknown, `None` not cached.
    async fn grant(&self, hash: &[u8; 32]) -> CacheResult<Option<Option<Vec<u8>>>>;

    /// Caches what storage said of `hash` (`None`: no live grant), unless something is
    /// cached already.
    async fn fill_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()>;

    /// A grant was issued (`Some`) or revoked (`None`): replaces whatever is cached; a
    /// revocation is then appended to the change log.
    async fn set_grant(&self, hash: &[u8; 32], grant: Option<&[u8]>) -> CacheResult<()>;

    /// Drops everything (operations; tests of the fill paths).
    async fn clear(&self) -> CacheResult<()>;
}

/// [`ReadModel::page_counts`] as two lookups in flight together: the default, and what
/// backends fall back to where they cannot do better.
pub async fn page_counts_apart<M: ReadModel + ?Sized>(
    model: &M,
    authors: &[UserId],
    statuses: &[PostId],
    viewer: UserId,
) -> CacheResult<(Vec<Option<Counts>>, Vec<Option<Interactions>>)> {
    futures::try_join!(model.counts(authors), model.interactions(viewer, statuses))
}

/// [`ReadModel::page`] as the posts and the page counts in flight together: the default,
/// and what backends fall back to where they cannot do better.
pub async fn page_apart<M: ReadModel + ?Sized>(
    model: &M,
    posts: &[PostId],
    statuses: &[PostId],
    authors: &[UserId],
    viewer: UserId,
) -> CacheResult<PageLookup> {
    let (posts, (counts, interactions)) =
        futures::try_join!(model.posts(posts), model.page_counts(authors, statuses, viewer))?;
    Ok(PageLookup { posts, counts, interactions })
}

/// Checks a fill's value against its collection.
pub(crate) fn check_fill(collection: Collection, value: &Fill) -> CacheResult<()> {
    match (collection, value) {
        (Collection::Following(_) | Collection::Celebrities, Fill::Users(_)) => Ok(()),
        (Collection::Recent(_), Fill::Recent(_)) => Ok(()),
        _ => Err(CacheError::Backend(format!("a fill of {collection:?} needs a value of its kind"))),
    }
}

/// Adds `new` to a newest-first list: unique, sorted, cut at [`RECENT_DEPTH`] (which
/// makes it incomplete).
pub(crate) fn merge_recent(list: &mut Recent, new: &[PostId]) {
    list.posts.extend_from_slice(new);
    list.posts.sort_unstable_by(|a, b| b.cmp(a));
    list.posts.dedup();
    if list.posts.len() > RECENT_DEPTH {
        list.posts.truncate(RECENT_DEPTH);
        list.complete = false;
    }
}

/// The compact encoding of a cached post (Redis values; sizes in the crate docs):
/// `kind ‖ id ‖ author ‖ target ‖ handle length (1 byte) ‖ handle ‖ text`, ids big-endian,
/// where kind `1` is a post and `target` the post it replies to (0 = none), and kind `2` a
/// reblog and `target` its original; a tombstone is the single byte `0`.
pub mod codec {
    use super::*;

    pub const TOMBSTONE: &[u8] = &[0];

    pub fn encode(p: &PostRecord) -> Vec<u8> {
        let handle = p.author_handle.as_bytes();
        let handle = &handle[..handle.len().min(255)];
        let mut out = Vec::with_capacity(26 + handle.len() + p.text.len());
        let (kind, target) = match p.reblog_of {
            Some(original) => (2, Some(original)),
            None => (1, p.reply_to),
        };
        out.push(kind);
        out.extend_from_slice(&p.id.0.to_be_bytes());
        out.extend_from_slice(&p.author.0.to_be_bytes());
        out.extend_from_slice(&target.map_or(0, |r| r.0).to_be_bytes());
        out.push(handle.len() as u8);
        out.extend_from_slice(handle);
        out.extend_from_slice(p.text.as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> CacheResult<CachedPost> {
        let corrupt = || CacheError::Backend("corrupt cached post".into());
        let reblog = match b.first() {
            Some(0) if b.len() == 1 => return Ok(CachedPost::Deleted),
            Some(1) if b.len() >= 26 => false,
            Some(2) if b.len() >= 26 => true,
            _ => return Err(corrupt()),
        };
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let handle_len = b[25] as usize;
        let text_at = 26 + handle_len;
        if b.len() < text_at {
            return Err(corrupt());
        }
        let text = |r: &[u8]| String::from_utf8(r.to_vec()).map_err(|_| corrupt());
        let target = u64_at(17);
        let target = (target != 0).then_some(PostId(target));
        Ok(CachedPost::Live(PostRecord {
            id: PostId(u64_at(1)),
            author: UserId(u64_at(9)),
            reply_to: if reblog { None } else { target },
            reblog_of: if reblog { target } else { None },
            author_handle: text(&b[26..text_at])?,
            text: text(&b[text_at..])?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_round_trip_through_the_codec() {
        let p = PostRecord {
            id: PostId(u64::MAX - 3),
            author: UserId((1 << 53) + 1),
            author_handle: "zoë".into(),
            text: "héllo <b>".into(),
            reply_to: Some(PostId(7)),
            reblog_of: None,
        };
        assert_eq!(codec::decode(&codec::encode(&p)).unwrap(), CachedPost::Live(p.clone()));
        let reblog = PostRecord { reply_to: None, reblog_of: Some(PostId(9)), text: String::new(), ..p.clone() };
        assert_eq!(codec::decode(&codec::encode(&reblog)).unwrap(), CachedPost::Live(reblog));
        let plain = PostRecord { reply_to: None, text: String::new(), ..p };
        assert_eq!(codec::decode(&codec::encode(&plain)).unwrap(), CachedPost::Live(plain));
        assert_eq!(codec::decode(codec::TOMBSTONE).unwrap(), CachedPost::Deleted);
        assert!(codec::decode(&[1, 2, 3]).is_err());
        assert!(codec::decode(&[]).is_err());
    }

    #[test]
    fn recent_lists_stay_sorted_unique_and_bounded() {
        let mut r = Recent { posts: vec![PostId(9), PostId(5)], complete: true };
        merge_recent(&mut r, &[PostId(7), PostId(9), PostId(11)]);
        assert_eq!(r.posts, vec![PostId(11), PostId(9), PostId(7), PostId(5)]);
        assert!(r.complete);
        merge_recent(&mut r, &(100..100 + RECENT_DEPTH as u64).map(PostId).collect::<Vec<_>>());
        assert_eq!(r.posts.len(), RECENT_DEPTH);
        assert_eq!(r.posts[0], PostId(99 + RECENT_DEPTH as u64));
        assert!(!r.complete);
    }
}
