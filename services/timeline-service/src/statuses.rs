//! A page's posts as Mastodon Statuses, with what they need besides the posts: each
//! author's counts and each reply's parent author, from the read model (storage on a miss).
//! A reblog wraps its original (which the page read fetched).
//!
//! Each status's reblog, favourite and reply counts and the reader's own flags on it
//! (`reblogged`, `favourited`) come from the read model too. The page read found them
//! with its posts (in this process's copy, or in one round trip, see `ReadModel::page`),
//! so only a reblogged original's are looked up here. The post-service writes them
//! through and logs the change when they change, so a reader's own favourite shows at
//! once; others' racing changes may show only within a minute.

use foldhash::{HashMap, HashMapExt};

use futures::future::try_join_all;

use starling_api::mastodon::PublicBase;
use starling_api::mastodon::json::{self, StatusArray};
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, PostRecord};
use starling_timeline_cache::read_model::CachedPost;

use crate::near::At;
use crate::stats::{Lookups, Peer};
use crate::{HomePage, ReadError, TimelineService};

impl TimelineService {
    /// Each author's follower and following counts: `cached` (from the read model), the
    /// misses from the graph (asked for at once: after a wipe, or as counts expire) and cached.
    async fn author_counts(
        &self,
        authors: &[UserId],
        cached: Vec<Option<Counts>>,
    ) -> Result<HashMap<UserId, Counts>, ReadError> {
        let mut counts: HashMap<UserId, Counts> = HashMap::with_capacity(authors.len());
        let mut missing = Vec::new();
        for (&author, c) in authors.iter().zip(cached) {
            match c {
                Some(c) => drop(counts.insert(author, c)),
                None => missing.push(author),
            }
        }
        let fetched = try_join_all(missing.iter().map(|&author| {
            self.stats.call(Peer::Graph);
            self.graph.counts(author)
        }))
        .await?;
        let filled: Vec<(UserId, Counts)> = missing.into_iter().zip(fetched).collect();
        counts.extend(filled.iter().copied());
        self.stats.lookups(Lookups::Counts, authors.len() - filled.len(), filled.len());
        if !filled.is_empty()
            && let Err(e) = self.model.fill_counts(&filled).await
        {
            tracing::warn!(error = %e, "could not cache counts");
        }
        Ok(counts)
    }

    /// The author of each of `parents` that still exists: from the post cache (this
    /// process's copy first, at `near`), the misses from the post-service.
    async fn parent_authors(&self, parents: &[PostId], near: Option<At>) -> Result<HashMap<PostId, UserId>, ReadError> {
        let mut authors: HashMap<PostId, UserId> = HashMap::new();
        if parents.is_empty() {
            return Ok(authors);
        }
        let cached = self.cached_posts(parents, near).await?;
        let mut missing = Vec::new();
        for (&id, c) in parents.iter().zip(cached) {
            match c {
                Some(CachedPost::Live(p)) => drop(authors.insert(id, p.author)),
                Some(CachedPost::Deleted) => {}
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            self.stats.call(Peer::Posts);
            for p in self.posts.get_posts(&missing).await?.into_iter().flatten() {
                authors.insert(p.id, p.author);
            }
        }
        Ok(authors)
    }

    /// Each status's interactions as `viewer` sees them: `cached` (from the read model), the
    /// misses from the post-service in one call (and cached).
    async fn interactions(
        &self,
        viewer: UserId,
        ids: &[PostId],
        cached: Vec<Option<Interactions>>,
    ) -> Result<HashMap<PostId, Interactions>, ReadError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let missing: Vec<PostId> = ids.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(&id, _)| id).collect();
        self.stats.lookups(Lookups::Interactions, ids.len() - missing.len(), missing.len());
        let mut all: HashMap<PostId, Interactions> =
            ids.iter().zip(cached).filter_map(|(&id, c)| c.map(|c| (id, c))).collect();
        if !missing.is_empty() {
            self.stats.call(Peer::Posts);
            let found: Vec<(PostId, Interactions)> =
                missing.iter().copied().zip(self.posts.interactions(&missing, Some(viewer)).await?).collect();
            if let Err(e) = self.model.fill_interactions(viewer, &found).await {
                tracing::warn!(error = %e, "could not cache interactions");
            }
            all.extend(found);
        }
        Ok(all)
    }

    /// `posts` as Mastodon Statuses, as `viewer` sees them: each author's account with its
    /// counts (from the read model, a minute old at most; from the graph on a miss), each
    /// status's interactions, and for a reply the parent's author (from the post cache; from
    /// the post-service on a miss). The lookups go out together: one round trip.
    pub async fn statuses(&self, base: &PublicBase, page: HomePage, viewer: UserId) -> Result<StatusArray, ReadError> {
        let HomePage { posts, originals, counted, near } = page;
        // The statuses shown in full: plain posts and reblogged originals.
        let shown: Vec<PostId> =
            posts.iter().filter(|p| p.reblog_of.is_none()).map(|p| p.id).chain(originals.keys().copied()).collect();
        let mut authors: Vec<UserId> = posts.iter().chain(originals.values()).map(|p| p.author).collect();
        authors.sort_unstable();
        authors.dedup();
        let mut parents: Vec<PostId> = posts.iter().chain(originals.values()).filter_map(|p| p.reply_to).collect();
        parents.sort_unstable();
        parents.dedup();
        // What the page read did not bring along (reblogged originals, their authors).
        let unread_authors: Vec<UserId> = authors.iter().copied().filter(|a| !counted.counts.contains_key(a)).collect();
        let unread: Vec<PostId> = shown.iter().copied().filter(|id| !counted.interactions.contains_key(id)).collect();
        let ((more_counts, more_interactions), parent_authors) = futures::try_join!(
            async {
                if unread_authors.is_empty() && unread.is_empty() {
                    return Ok((Vec::new(), Vec::new()));
                }
                Ok(self.model.page_counts(&unread_authors, &unread, viewer).await?)
            },
            self.parent_authors(&parents, near)
        )?;
        let mut counted = counted;
        counted.counts.extend(unread_authors.into_iter().zip(more_counts));
        counted.interactions.extend(unread.into_iter().zip(more_interactions));
        let cached_counts: Vec<Option<Counts>> =
            authors.iter().map(|a| counted.counts.get(a).copied().flatten()).collect();
        let cached_interactions: Vec<Option<Interactions>> =
            shown.iter().map(|id| counted.interactions.get(id).copied().flatten()).collect();
        let (counts, interactions) = futures::try_join!(
            self.author_counts(&authors, cached_counts),
            self.interactions(viewer, &shown, cached_interactions),
        )?;
        // Each author's Account and URLs written once per page, copied into each of their statuses.
        let mut accounts: HashMap<UserId, json::Author> = HashMap::with_capacity(authors.len());
        for p in posts.iter().chain(originals.values()) {
            accounts.entry(p.author).or_insert_with(|| {
                let counts = counts.get(&p.author).copied().unwrap_or_default();
                // The post count is not indexed yet.
                json::author(base, p.author, &p.author_handle, counts, 0)
            });
        }
        let shown = |p| status_of(p, &accounts, &parent_authors, &interactions);
        let mut out = StatusArray::with_capacity(posts.len());
        for p in &posts {
            match p.reblog_of {
                None => out.push(|o| json::status(o, &shown(p))),
                Some(o) => {
                    let Some(original) = originals.get(&o) else { continue };
                    out.push(|o| json::reblog(o, &shown(p), &shown(original)));
                }
            }
        }
        Ok(out)
    }
}

/// `p` with what its Status shows besides the post: its author's account (written for each
/// author of the page), its parent's author, its interactions.
fn status_of<'a>(
    p: &'a PostRecord,
    accounts: &'a HashMap<UserId, json::Author>,
    parent_authors: &HashMap<PostId, UserId>,
    interactions: &HashMap<PostId, Interactions>,
) -> json::Shown<'a> {
    json::Shown {
        post: p,
        author: &accounts[&p.author],
        parent_author: p.reply_to.and_then(|r| parent_authors.get(&r).copied()),
        interactions: interactions.get(&p.id).copied().unwrap_or_default(),
    }
}
