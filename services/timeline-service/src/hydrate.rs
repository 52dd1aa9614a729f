//! Hydration: a page's post ids into posts (this process's copy first, then the read
//! model, then the post-service), deleted ones dropped, and the reblogs a timeline shows
//! elsewhere left out (see the crate docs on reblogs).

use foldhash::{HashMap, HashMapExt, HashSet};

use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, Order, PostRecord, Window};
use starling_timeline_cache::read_model::{CachedPost, PageLookup};

use crate::near::At;
use crate::stats::{Lookups, Peer};
use crate::{Counted, ReadError, TimelineService};

impl TimelineService {
    /// `posts` without the reblogs a timeline whose authors are `home` (the reader
    /// included) shows elsewhere (see the crate docs on reblogs); the originals of those
    /// kept are added to `originals`.
    pub(crate) async fn without_repeats(
        &self,
        home: &HashSet<UserId>,
        posts: Vec<PostRecord>,
        originals: &mut HashMap<PostId, PostRecord>,
        near: Option<At>,
    ) -> Result<Vec<PostRecord>, ReadError> {
        if posts.iter().all(|p| p.reblog_of.is_none()) {
            return Ok(posts);
        }
        let wanted: Vec<PostId> =
            posts.iter().filter_map(|p| p.reblog_of).filter(|o| !originals.contains_key(o)).collect();
        for o in self.hydrate(&wanted, near).await? {
            originals.insert(o.id, o);
        }
        let at_home = |u: UserId| home.contains(&u);
        let mut kept = Vec::with_capacity(posts.len());
        for p in posts {
            let Some(o) = p.reblog_of else {
                kept.push(p);
                continue;
            };
            let Some(original) = originals.get(&o) else { continue };
            if at_home(original.author) || self.reblogged_earlier(o, p.id, &at_home).await? {
                continue;
            }
            kept.push(p);
        }
        Ok(kept)
    }

    /// Did anyone `at_home` reblog `original` before reblog `reblog`?
    async fn reblogged_earlier(
        &self,
        original: PostId,
        reblog: PostId,
        at_home: &impl Fn(UserId) -> bool,
    ) -> Result<bool, ReadError> {
        const PAGE: usize = 1_000;
        let mut after = None;
        loop {
            let window = Window { before: Some(reblog), after, limit: PAGE, order: Order::OldestFirst };
            self.stats.call(Peer::Posts);
            let earlier = self.posts.reblogs(original, window).await?;
            if earlier.iter().any(|&(_, user)| at_home(user)) {
                return Ok(true);
            }
            if earlier.len() < PAGE {
                return Ok(false);
            }
            after = earlier.last().map(|r| r.0);
        }
    }

    /// Looks the posts up; drops deleted ones. Keeps order.
    pub(crate) async fn hydrate(&self, ids: &[PostId], near: Option<At>) -> Result<Vec<PostRecord>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cached = self.cached_posts(ids, near).await?;
        self.hydrated(ids, cached).await
    }

    /// [`Self::hydrate`], reading with the posts their `authors`' counts and their
    /// interactions as `viewer` sees them: from this process's copy where it has them, the
    /// rest from the read model in one round trip (none if the copy has everything).
    pub(crate) async fn hydrate_counted(
        &self,
        ids: &[PostId],
        authors: &[UserId],
        viewer: UserId,
        near: Option<At>,
    ) -> Result<(Vec<PostRecord>, Counted), ReadError> {
        let (held, missing) = self.held_posts(ids, near);
        let (mut counts, mut interactions) = self.held_counted(authors, ids, viewer, near);
        let unread_authors = gaps(authors, &counts);
        let unread = gaps(ids, &interactions);
        let found = if missing.is_empty() && unread_authors.is_empty() && unread.is_empty() {
            Vec::new()
        } else {
            let PageLookup { posts, counts: c, interactions: i } =
                self.model.page(&missing, &unread, &unread_authors, viewer).await?;
            if let (Some(copy), Some(at)) = (&self.near, near) {
                copy.fill_counts(unread_authors.iter().zip(&c).filter_map(|(&a, c)| Some((a, (*c)?))));
                copy.fill_interactions(at, viewer, unread.iter().zip(&i).filter_map(|(&id, i)| Some((id, (*i)?))));
            }
            fill_gaps(&mut counts, c);
            fill_gaps(&mut interactions, i);
            posts
        };
        let counted = Counted {
            counts: authors.iter().copied().zip(counts).collect(),
            interactions: ids.iter().copied().zip(interactions).collect(),
        };
        let cached = self.with_found(held, &missing, found, near);
        Ok((self.hydrated(ids, cached).await?, counted))
    }

    /// What this process's copy holds of `authors`' counts and of `viewer`'s interactions
    /// with `ids` (all `None` without one), in order.
    fn held_counted(
        &self,
        authors: &[UserId],
        ids: &[PostId],
        viewer: UserId,
        near: Option<At>,
    ) -> (Vec<Option<Counts>>, Vec<Option<Interactions>>) {
        let (Some(copy), Some(_)) = (&self.near, near) else {
            return (vec![None; authors.len()], vec![None; ids.len()]);
        };
        let (counts, interactions) = (copy.counts(authors), copy.interactions(viewer, ids));
        let c = counts.iter().flatten().count();
        let i = interactions.iter().flatten().count();
        self.stats.lookups(Lookups::NearCounts, c, authors.len() - c);
        self.stats.lookups(Lookups::NearInteractions, i, ids.len() - i);
        (counts, interactions)
    }

    /// The posts `ids` as the read model has them (`None`: not cached), from this
    /// process's copy where it holds them (at `near`).
    pub(crate) async fn cached_posts(
        &self,
        ids: &[PostId],
        near: Option<At>,
    ) -> Result<Vec<Option<CachedPost>>, ReadError> {
        let (held, missing) = self.held_posts(ids, near);
        let found = if missing.is_empty() { Vec::new() } else { self.model.posts(&missing).await? };
        Ok(self.with_found(held, &missing, found, near))
    }

    /// What this process's copy holds of `ids` (all `None` without one), and the ids it
    /// lacks, in order.
    fn held_posts(&self, ids: &[PostId], near: Option<At>) -> (Vec<Option<CachedPost>>, Vec<PostId>) {
        let held = match (&self.near, near) {
            (Some(copy), Some(_)) => copy.get(ids),
            _ => vec![None; ids.len()],
        };
        let missing = gaps(ids, &held);
        if self.near.is_some() {
            self.stats.lookups(Lookups::NearPosts, ids.len() - missing.len(), missing.len());
        }
        (held, missing)
    }

    /// `held` with the read model's answers for `missing` (in its order) put in their
    /// places; those answers are kept in this process's copy.
    fn with_found(
        &self,
        mut held: Vec<Option<CachedPost>>,
        missing: &[PostId],
        found: Vec<Option<CachedPost>>,
        near: Option<At>,
    ) -> Vec<Option<CachedPost>> {
        if let (Some(copy), Some(at)) = (&self.near, near) {
            copy.fill(at, missing.iter().zip(&found).filter_map(|(&id, p)| Some((id, p.clone()?))));
        }
        fill_gaps(&mut held, found);
        held
    }

    /// The posts `ids` from what the read model had of them (`cached`), the misses from
    /// the post-service (and cached); deleted ones dropped, order kept.
    async fn hydrated(&self, ids: &[PostId], cached: Vec<Option<CachedPost>>) -> Result<Vec<PostRecord>, ReadError> {
        let missing: Vec<PostId> = ids.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(&id, _)| id).collect();
        self.stats.lookups(Lookups::Posts, ids.len() - missing.len(), missing.len());
        let mut fetched: HashMap<PostId, PostRecord> = HashMap::new();
        if !missing.is_empty() {
            self.stats.call(Peer::Posts);
            let found = self.posts.get_posts(&missing).await?;
            let gone: Vec<PostId> =
                missing.iter().zip(&found).filter(|(_, p)| p.is_none()).map(|(&id, _)| id).collect();
            let live: Vec<PostRecord> = found.into_iter().flatten().collect();
            // Best effort, like every fill: the page has what it fetched.
            if let Err(e) = self.model.add_posts(&live).await {
                tracing::warn!(error = %e, "could not cache posts");
            }
            if let Err(e) = self.model.posts_deleted(&gone).await {
                tracing::warn!(error = %e, "could not cache tombstones");
            }
            fetched = live.into_iter().map(|p| (p.id, p)).collect();
        }
        let mut posts = Vec::with_capacity(ids.len());
        posts.extend(ids.iter().zip(cached).filter_map(|(id, c)| match c {
            Some(CachedPost::Live(p)) => Some(p),
            Some(CachedPost::Deleted) => None,
            None => fetched.remove(id),
        }));
        Ok(posts)
    }
}

/// The keys whose slot in `held` is empty, in order.
fn gaps<K: Copy, V>(keys: &[K], held: &[Option<V>]) -> Vec<K> {
    keys.iter().zip(held).filter(|(_, h)| h.is_none()).map(|(&k, _)| k).collect()
}

/// Puts `found` (the answers for [`gaps`] of `held`, in order) in their places.
fn fill_gaps<V>(held: &mut [Option<V>], found: Vec<Option<V>>) {
    let mut found = found.into_iter();
    for slot in held.iter_mut().filter(|h| h.is_none()) {
        *slot = found.next().flatten();
    }
}
