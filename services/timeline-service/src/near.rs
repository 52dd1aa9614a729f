//! This process's own copy of what pages read from the read model, in front of Redis:
//! posts, each status's counts, each reader's flags on them and authors' counts. A page
//! finds most of these here and asks Redis only for the rest.
//!
//! Posts never change; only a delete or an interaction (a reblog, favourite or reply and
//! their undoing) can make a copy wrong, and the read model's change log says which (see
//! [`starling_timeline_cache::read_model`]). The copy is *at* a log number once it has
//! dropped everything changed up to it. A page reads the log's number with the reader's
//! follow list (no extra round trip), and [`NearCopy::at`] brings the copy there first
//! when it is behind: one `changes_since` call, only after a change. A change is logged
//! before it is answered (see the read model on when it is not), so a page that starts
//! after it shows it: a deleted post is gone, the reader's own favourite shows.
//!
//! A fill races a catch-up: a page that read a post from Redis just before its delete was
//! logged must not put it back after the catch-up dropped it. So a fill carries the
//! number the copy was at when its page looked (what [`NearCopy::at`] returned) and is
//! kept only if the copy is still at that number; the catch-up moves the number under the
//! same lock.
//!
//! It also keeps the grants of the OAuth tokens pages were asked with (what the token
//! stands for), which only a revocation makes wrong; the home page confirms one after its
//! first round trip (see `grants.rs`).
//!
//! Authors' follower and following counts are not logged: the read model lets them be a
//! minute old, and the copy keeps them [`COUNTS_FOR`] more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use parking_lot::RwLock;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use starling_api::auth::AuthUser;
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions};
use starling_timeline_cache::CacheResult;
use starling_timeline_cache::read_model::{CachedPost, Change, ReadModel};

/// How long the copy keeps an author's counts (see the module docs).
pub const COUNTS_FOR: Duration = Duration::from_secs(5);

/// See the module docs.
pub struct NearCopy {
    posts: Cache<PostId, CachedPost, PostBytes>,
    /// Each status's (reblogs, favourites, replies).
    status_counts: Cache<PostId, [u64; 3]>,
    /// Each reader's (reblogged, favourited) on the statuses it was shown, kept by reader:
    /// a page's lookups then stay in one small map (one entry per reader and status missed
    /// the CPU cache on nearly every lookup).
    flags: Cache<UserId, Arc<ViewerFlags>, FlagsWeight>,
    counts: Cache<UserId, (Counts, Instant)>,
    /// Live OAuth grants by their token's SHA-256.
    grants: Cache<[u8; 32], AuthUser>,
    /// The log number the copy is at; `None` before the first catch-up.
    at: RwLock<Option<u64>>,
    /// One catch-up at a time: pages that queue behind one find the copy current.
    catching_up: tokio::sync::Mutex<()>,
}

/// One reader's flags: replaced whole, never changed in place (a page may be reading it).
type ViewerFlags = HashMap<PostId, (bool, bool)>;

/// A reader's flags past this many start again from a page's: a removal copies the map.
const FLAGS_PER_VIEWER: usize = 1_024;

/// A reader's weight in the copy: its flags (an entry each, and one for the map itself).
#[derive(Clone, Copy)]
struct FlagsWeight;

impl Weighter<UserId, Arc<ViewerFlags>> for FlagsWeight {
    fn weight(&self, _: &UserId, flags: &Arc<ViewerFlags>) -> u64 {
        flags.len() as u64 + 1
    }
}

/// The number a page found the copy at: what its fills must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At(u64);

/// A post's weight in the copy: about the bytes it holds (texts vary from a few bytes to
/// 2 KB, so a count would bound memory only loosely).
#[derive(Clone, Copy)]
struct PostBytes;

impl Weighter<PostId, CachedPost> for PostBytes {
    fn weight(&self, _: &PostId, post: &CachedPost) -> u64 {
        // The entry itself and the cache's own bookkeeping, then the strings.
        let fixed = (size_of::<PostId>() + size_of::<CachedPost>() + 16) as u64;
        match post {
            CachedPost::Live(p) => fixed + (p.author_handle.len() + p.text.len()) as u64,
            CachedPost::Deleted => fixed,
        }
    }
}

/// A cache of fixed-size entries of about `bytes` in all (key, value and ~16 bytes of the
/// cache's bookkeeping each).
fn fixed<K, V>(bytes: u64) -> Cache<K, V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    let entry = (size_of::<K>() + size_of::<V>() + 16) as u64;
    Cache::new((bytes / entry).max(1) as usize)
}

impl NearCopy {
    /// A copy of about `bytes` at most (the least used go first): half for posts, the rest
    /// for the counts and flags a page shows with them.
    pub fn new(bytes: u64) -> Self {
        let posts = bytes / 2;
        NearCopy {
            posts: Cache::with_weighter((posts / 256).max(1) as usize, posts.max(1), PostBytes),
            status_counts: fixed(bytes / 8),
            flags: {
                // A map's entry (its key, value and control byte), twice: up to half a
                // map's room is spare.
                let entry = 2 * (size_of::<(PostId, (bool, bool))>() + 1) as u64;
                let entries = (bytes / 4 / entry).max(1);
                Cache::with_weighter((entries / 32).max(1) as usize, entries, FlagsWeight)
            },
            counts: fixed(bytes / 16),
            // A grant holds a handle, a client id and scopes: ~200 bytes.
            grants: Cache::new(((bytes / 16) / 200).max(1) as usize),
            at: RwLock::new(None),
            catching_up: Default::default(),
        }
    }

    /// Brings the copy to the log number `seen` (read with the reader view; `None` if the
    /// log had none) or later, and returns where it now is.
    pub async fn at(&self, model: &dyn ReadModel, seen: Option<u64>) -> CacheResult<At> {
        if let Some(at) = self.current(seen) {
            return Ok(at);
        }
        let _one = self.catching_up.lock().await;
        if let Some(at) = self.current(seen) {
            return Ok(at);
        }
        // Asked after `seen` was read, so the answer is at least that recent.
        let held = *self.at.read();
        let log = model.changes_since(held.unwrap_or(0)).await?;
        let mut at = self.at.write();
        if log.complete && held.is_some() {
            for change in log.changes {
                match change {
                    Change::Deleted(post) => {
                        self.posts.insert(post, CachedPost::Deleted);
                        self.status_counts.remove(&post);
                    }
                    Change::Interacted { post, viewer } => {
                        self.status_counts.remove(&post);
                        self.forget_flag(viewer, post);
                    }
                    Change::Revoked(hash) => drop(self.grants.remove(&hash)),
                }
            }
        } else {
            self.posts.clear();
            self.status_counts.clear();
            self.flags.clear();
            self.grants.clear();
        }
        *at = Some(log.seq);
        Ok(At(log.seq))
    }

    /// Where the copy is now (`None` before its first catch-up).
    pub fn now(&self) -> Option<At> {
        (*self.at.read()).map(At)
    }

    fn current(&self, seen: Option<u64>) -> Option<At> {
        let at = (*self.at.read())?;
        (seen == Some(at)).then_some(At(at))
    }

    /// What the copy holds of `ids`, in their order.
    pub fn get(&self, ids: &[PostId]) -> Vec<Option<CachedPost>> {
        ids.iter().map(|id| self.posts.get(id)).collect()
    }

    /// Keeps what a page read from the read model, unless the copy has moved since `at`.
    pub fn fill(&self, at: At, found: impl IntoIterator<Item = (PostId, CachedPost)>) {
        let now = self.at.read();
        if *now != Some(at.0) {
            return;
        }
        for (id, post) in found {
            self.posts.insert(id, post);
        }
    }

    /// Each status's interactions as `viewer` sees them, where the copy holds both its
    /// counts and the viewer's flags.
    pub fn interactions(&self, viewer: UserId, ids: &[PostId]) -> Vec<Option<Interactions>> {
        let mine = self.flags.get(&viewer);
        ids.iter()
            .map(|&id| {
                let [reblogs, favourites, replies] = self.status_counts.get(&id)?;
                let &(reblogged, favourited) = mine.as_ref()?.get(&id)?;
                Some(Interactions { reblogs, favourites, replies, reblogged, favourited })
            })
            .collect()
    }

    /// Keeps interactions a page read as `viewer`, unless the copy has moved since `at`.
    pub fn fill_interactions(&self, at: At, viewer: UserId, found: impl IntoIterator<Item = (PostId, Interactions)>) {
        let now = self.at.read();
        if *now != Some(at.0) {
            return;
        }
        // Under the number's read lock, like every fill: a catch-up's removals (under its
        // write lock) cannot fall between reading the reader's map and replacing it. Two
        // fills for one reader at once may lose one's flags: a miss later, nothing stale.
        let mut mine =
            self.flags.get(&viewer).filter(|m| m.len() < FLAGS_PER_VIEWER).map_or_else(HashMap::new, |m| (*m).clone());
        for (id, i) in found {
            self.status_counts.insert(id, [i.reblogs, i.favourites, i.replies]);
            mine.insert(id, (i.reblogged, i.favourited));
        }
        self.flags.insert(viewer, Arc::new(mine));
    }

    /// Drops `viewer`'s flags on `post` (under the number's write lock, in a catch-up).
    fn forget_flag(&self, viewer: UserId, post: PostId) {
        if let Some(mine) = self.flags.get(&viewer).filter(|m| m.contains_key(&post)) {
            let mut mine = (*mine).clone();
            mine.remove(&post);
            self.flags.insert(viewer, Arc::new(mine));
        }
    }

    /// Whether the copy holds `viewer`'s flags on `post`.
    #[cfg(test)]
    fn has_flags(&self, viewer: UserId, post: PostId) -> bool {
        self.flags.get(&viewer).is_some_and(|m| m.contains_key(&post))
    }

    /// The grant of the token whose SHA-256 is `hash`, if the copy holds it.
    pub fn grant(&self, hash: &[u8; 32]) -> Option<AuthUser> {
        self.grants.get(hash)
    }

    /// Keeps a live grant looked up while the copy was at `at`, unless it has moved since.
    pub fn fill_grant(&self, at: At, hash: [u8; 32], user: AuthUser) {
        let now = self.at.read();
        if *now == Some(at.0) {
            self.grants.insert(hash, user);
        }
    }

    /// Each author's counts, where the copy has them from the last [`COUNTS_FOR`].
    pub fn counts(&self, authors: &[UserId]) -> Vec<Option<Counts>> {
        authors
            .iter()
            .map(|a| self.counts.get(a).filter(|(_, since)| since.elapsed() < COUNTS_FOR).map(|(c, _)| c))
            .collect()
    }

    pub fn fill_counts(&self, found: impl IntoIterator<Item = (UserId, Counts)>) {
        let now = Instant::now();
        for (author, c) in found {
            self.counts.insert(author, (c, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_ids::UserId;
    use starling_storage::PostRecord;
    use starling_timeline_cache::read_model::memory::{MemoryReadModel, MemoryReadModelOptions};

    fn live(n: u64) -> CachedPost {
        CachedPost::Live(PostRecord {
            id: PostId(n),
            author: UserId(1),
            author_handle: "a".into(),
            text: format!("post {n}"),
            reply_to: None,
            reblog_of: None,
        })
    }

    async fn seen(model: &MemoryReadModel) -> Option<u64> {
        model.reader_view(UserId(1)).await.unwrap().changes
    }

    #[tokio::test]
    async fn a_delete_reaches_the_copy_before_the_next_page() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearCopy::new(100_000);
        let at = near.at(&model, seen(&model).await).await.unwrap();
        near.fill(at, [(PostId(1), live(1)), (PostId(2), live(2))]);
        assert_eq!(near.get(&[PostId(2), PostId(3)]), vec![Some(live(2)), None]);
        model.posts_deleted(&[PostId(2)]).await.unwrap();
        // Still at the old number: the copy answers as it was (that page began before).
        assert_eq!(near.at(&model, Some(at.0)).await.unwrap(), at);
        let later = near.at(&model, seen(&model).await).await.unwrap();
        assert_ne!(later, at);
        assert_eq!(near.get(&[PostId(1), PostId(2)]), vec![Some(live(1)), Some(CachedPost::Deleted)]);
    }

    #[tokio::test]
    async fn a_fill_from_before_a_catch_up_is_dropped() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearCopy::new(100_000);
        let before = near.at(&model, seen(&model).await).await.unwrap();
        // A page read post 5 from the model; then it was deleted and the copy caught up…
        model.posts_deleted(&[PostId(5)]).await.unwrap();
        near.at(&model, seen(&model).await).await.unwrap();
        // …so that page's fill must not bring the post back.
        near.fill(before, [(PostId(5), live(5))]);
        assert_eq!(near.get(&[PostId(5)]), vec![Some(CachedPost::Deleted)]);
    }

    #[test]
    fn the_copy_is_bounded_by_bytes() {
        let near = NearCopy::new(128 * 1024);
        let at = At(0);
        *near.at.write() = Some(0);
        let big = |n: u64| match live(n) {
            CachedPost::Live(p) => CachedPost::Live(PostRecord { text: "x".repeat(2_000), ..p }),
            deleted => deleted,
        };
        near.fill(at, (0..1_000).map(|n| (PostId(n), big(n))));
        let held = near.get(&(0..1_000).map(PostId).collect::<Vec<_>>()).iter().flatten().count();
        assert!((1..=40).contains(&held), "{held} posts of 2 KB held in 64 KiB");
    }

    #[test]
    fn readers_flags_are_bounded_too() {
        // Room for ~1,000 flags.
        let near = NearCopy::new(4 * 34 * 1_000);
        *near.at.write() = Some(0);
        let seen = Interactions::default();
        for viewer in 0..500 {
            near.fill_interactions(At(0), UserId(viewer), (0..20).map(|p| (PostId(p), seen)));
        }
        let held: usize = (0..500).map(|v| (0..20).filter(|&p| near.has_flags(UserId(v), PostId(p))).count()).sum();
        assert!((20..=1_100).contains(&held), "{held} flags held in room for ~1,000");
        // A reader's own map starts again past its bound.
        let near = NearCopy::new(4 * 34 * 10 * FLAGS_PER_VIEWER as u64);
        *near.at.write() = Some(0);
        let many = FLAGS_PER_VIEWER as u64 + 10;
        near.fill_interactions(At(0), UserId(9_999), (0..many).map(|p| (PostId(p), seen)));
        assert!(near.has_flags(UserId(9_999), PostId(0)));
        near.fill_interactions(At(0), UserId(9_999), [(PostId(many), seen)]);
        assert!(near.has_flags(UserId(9_999), PostId(many)) && !near.has_flags(UserId(9_999), PostId(0)));
    }

    #[tokio::test]
    async fn a_copy_the_log_no_longer_covers_is_dropped() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearCopy::new(100_000);
        let at = near.at(&model, seen(&model).await).await.unwrap();
        near.fill(at, [(PostId(1), live(1))]);
        model.posts_deleted(&[PostId(9)]).await.unwrap();
        model.clear().await.unwrap();
        near.at(&model, seen(&model).await).await.unwrap();
        assert_eq!(near.get(&[PostId(1)]), vec![None]);
    }
    #[tokio::test]
    async fn an_interaction_reaches_the_copy_before_the_next_page() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearCopy::new(100_000);
        let (ann, bob) = (UserId(1), UserId(2));
        let seen_by = |i: Interactions| vec![Some(i)];
        let none = Interactions::default();
        let at = near.at(&model, seen(&model).await).await.unwrap();
        near.fill_interactions(at, ann, [(PostId(1), none)]);
        near.fill_interactions(at, bob, [(PostId(1), none)]);
        assert_eq!(near.interactions(ann, &[PostId(1)]), seen_by(none));
        let liked = Interactions { favourites: 1, favourited: true, ..none };
        model.set_interactions(ann, &[(PostId(1), liked)]).await.unwrap();
        near.at(&model, seen(&model).await).await.unwrap();
        // The status's counts went for everyone, the flags only for the one who acted.
        assert_eq!(near.interactions(ann, &[PostId(1)]), vec![None]);
        assert_eq!(near.interactions(bob, &[PostId(1)]), vec![None]);
        assert!(near.has_flags(bob, PostId(1)) && !near.has_flags(ann, PostId(1)));
        // A fill from before that catch-up is dropped; one from after it is kept.
        near.fill_interactions(at, ann, [(PostId(1), none)]);
        assert_eq!(near.interactions(ann, &[PostId(1)]), vec![None]);
        let later = near.at(&model, seen(&model).await).await.unwrap();
        near.fill_interactions(later, ann, [(PostId(1), liked)]);
        assert_eq!(near.interactions(ann, &[PostId(1)]), seen_by(liked));
    }

    #[test]
    fn authors_counts_are_kept_for_a_while() {
        let near = NearCopy::new(100_000);
        let c = Counts { followers: 3, following: 4 };
        near.fill_counts([(UserId(1), c)]);
        near.counts.insert(UserId(2), (c, Instant::now() - COUNTS_FOR));
        assert_eq!(near.counts(&[UserId(1), UserId(2), UserId(3)]), vec![Some(c), None, None]);
    }
    #[tokio::test]
    async fn a_revocation_drops_the_grant() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearCopy::new(100_000);
        let user = AuthUser {
            id: UserId(1),
            handle: "a".into(),
            scopes: starling_api::scopes::Scopes::all(),
            client_id: Some("app".into()),
        };
        let at = near.at(&model, seen(&model).await).await.unwrap();
        near.fill_grant(at, [1; 32], user.clone());
        near.fill_grant(at, [2; 32], user.clone());
        model.set_grant(&[1; 32], None).await.unwrap();
        near.at(&model, seen(&model).await).await.unwrap();
        assert_eq!((near.grant(&[1; 32]), near.grant(&[2; 32])), (None, Some(user.clone())));
        // A lookup from before that catch-up is not kept.
        near.fill_grant(at, [1; 32], user);
        assert_eq!(near.grant(&[1; 32]), None);
    }
}
