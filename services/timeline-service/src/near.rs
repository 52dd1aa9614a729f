//! This process's own copy of the posts it has read from the read model, in front of
//! Redis: a page finds most of its posts here and asks Redis only for the rest.
//!
//! Posts never change; only a delete can make a copy wrong, and the read model's deletion
//! log says which (see [`starling_timeline_cache::read_model`]). The copy is *at* a log
//! number once it has dropped every post deleted up to it. A page reads the log's number
//! with the reader's follow list (no extra round trip), and [`NearPosts::at`] brings the
//! copy there first when it is behind: one `deletions_since` call, only after a delete.
//! A delete is logged before it is answered (see the read model on when it is not), so
//! a page that starts after it never shows the post.
//!
//! A fill races a catch-up: a page that read a post from Redis just before its delete was
//! logged must not put it back after the catch-up dropped it. So a fill carries the
//! number the copy was at when its page looked (what [`NearPosts::at`] returned) and is
//! kept only if the copy is still at that number; the catch-up moves the number under the
//! same lock.

use parking_lot::RwLock;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use starling_ids::PostId;
use starling_timeline_cache::CacheResult;
use starling_timeline_cache::read_model::{CachedPost, ReadModel};

/// See the module docs.
pub struct NearPosts {
    posts: Cache<PostId, CachedPost, Bytes>,
    /// The log number the copy is at; `None` before the first catch-up.
    at: RwLock<Option<u64>>,
    /// One catch-up at a time: pages that queue behind one find the copy current.
    catching_up: tokio::sync::Mutex<()>,
}

/// The number a page found the copy at: what its fills must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At(u64);

/// A post's weight in the copy: about the bytes it holds (texts vary from a few bytes to
/// 2 KB, so a count would bound memory only loosely).
#[derive(Clone, Copy)]
struct Bytes;

impl Weighter<PostId, CachedPost> for Bytes {
    fn weight(&self, _: &PostId, post: &CachedPost) -> u64 {
        // The entry itself and the cache's own bookkeeping, then the strings.
        let fixed = (size_of::<PostId>() + size_of::<CachedPost>() + 16) as u64;
        match post {
            CachedPost::Live(p) => fixed + (p.author_handle.len() + p.text.len()) as u64,
            CachedPost::Deleted => fixed,
        }
    }
}

impl NearPosts {
    /// A copy of about `bytes` of posts at most (the least used go first).
    pub fn new(bytes: u64) -> Self {
        let posts = Cache::with_weighter((bytes / 256).max(1) as usize, bytes.max(1), Bytes);
        NearPosts { posts, at: RwLock::new(None), catching_up: Default::default() }
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
        let log = model.deletions_since(held.unwrap_or(0)).await?;
        let mut at = self.at.write();
        if log.complete && held.is_some() {
            for id in log.posts {
                self.posts.insert(id, CachedPost::Deleted);
            }
        } else {
            self.posts.clear();
        }
        *at = Some(log.seq);
        Ok(At(log.seq))
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
        model.reader_view(UserId(1)).await.unwrap().deletions
    }

    #[tokio::test]
    async fn a_delete_reaches_the_copy_before_the_next_page() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearPosts::new(100_000);
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
        let near = NearPosts::new(100_000);
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
        let near = NearPosts::new(64 * 1024);
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

    #[tokio::test]
    async fn a_copy_the_log_no_longer_covers_is_dropped() {
        let model = MemoryReadModel::new(MemoryReadModelOptions::default());
        let near = NearPosts::new(100_000);
        let at = near.at(&model, seen(&model).await).await.unwrap();
        near.fill(at, [(PostId(1), live(1))]);
        model.posts_deleted(&[PostId(9)]).await.unwrap();
        model.clear().await.unwrap();
        near.at(&model, seen(&model).await).await.unwrap();
        assert_eq!(near.get(&[PostId(1)]), vec![None]);
    }
}
