//! A page's posts as Mastodon Statuses, with what they need besides the posts: each
//! author's counts and each reply's parent author, from the read model (storage on a miss).
//! A reblog wraps its original (which the page read fetched).
//!
//! Starling's home statuses carry no reblog, favourite or reply counts and no viewer flags
//! yet (0 and false): those live in the post-service, and a page reads nothing from it in
//! the common case. A single status (`GET /api/v1/statuses/{id}`) has them all.

use std::collections::HashMap;

use futures::future::try_join_all;

use starling_api::mastodon::{Account, PublicBase, RawAccount, Status};
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, PostRecord, UserRecord};
use starling_timeline_cache::read_model::CachedPost;

use crate::stats::{Lookups, Peer};
use crate::{HomePage, ReadError, TimelineService};

impl TimelineService {
    /// `posts` as Mastodon Statuses: each author's account with its counts (from the read
    /// model, a minute old at most; from the graph on a miss) and, for a reply, the
    /// parent's author (from the post cache; from the post-service on a miss).
    pub async fn statuses(&self, base: &PublicBase, page: HomePage) -> Result<Vec<Status>, ReadError> {
        let HomePage { posts, originals } = page;
        let mut authors: Vec<UserId> = posts.iter().chain(originals.values()).map(|p| p.author).collect();
        authors.sort_unstable();
        authors.dedup();
        let cached = self.model.counts(&authors).await?;
        let mut counts: HashMap<UserId, Counts> = HashMap::with_capacity(authors.len());
        let mut missing = Vec::new();
        for (&author, c) in authors.iter().zip(cached) {
            match c {
                Some(c) => drop(counts.insert(author, c)),
                None => missing.push(author),
            }
        }
        // The misses of a page (after a wipe, or as counts expire) asked for at once.
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

        let mut parents: Vec<PostId> = posts.iter().chain(originals.values()).filter_map(|p| p.reply_to).collect();
        parents.sort_unstable();
        parents.dedup();
        let mut parent_authors: HashMap<PostId, UserId> = HashMap::new();
        if !parents.is_empty() {
            let cached = self.model.posts(&parents).await?;
            let mut missing = Vec::new();
            for (&id, c) in parents.iter().zip(cached) {
                match c {
                    Some(CachedPost::Live(p)) => drop(parent_authors.insert(id, p.author)),
                    Some(CachedPost::Deleted) => {}
                    None => missing.push(id),
                }
            }
            if !missing.is_empty() {
                self.stats.call(Peer::Posts);
                for p in self.posts.get_posts(&missing).await?.into_iter().flatten() {
                    parent_authors.insert(p.id, p.author);
                }
            }
        }
        let mut accounts: HashMap<UserId, RawAccount> = HashMap::with_capacity(authors.len());
        let mut account = |p: &PostRecord| {
            let raw = accounts.entry(p.author).or_insert_with(|| {
                let author = UserRecord { id: p.author, handle: p.author_handle.clone() };
                let counts = counts.get(&p.author).copied().unwrap_or_default();
                // The post count is not indexed yet.
                RawAccount::new(&Account::new(base, &author, counts, 0))
            });
            raw.clone()
        };
        let parent = |p: &PostRecord| p.reply_to.and_then(|r| parent_authors.get(&r).copied());
        Ok(posts
            .iter()
            .filter_map(|p| match p.reblog_of {
                None => Some(Status::new(base, p, &account(p), parent(p))),
                Some(o) => {
                    let o = originals.get(&o)?;
                    let original = Status::new(base, o, &account(o), parent(o));
                    Some(Status::reblog(base, p, &account(p), original))
                }
            })
            .collect())
    }
}
