//! timeline-service: the home timeline read path.
//!
//! A page is a k-way merge of *sources*, each a time-ordered list of posts:
//!
//! - the reader's materialised timeline in the cache (pushed posts of ordinary authors),
//! - the recent posts of every celebrity the reader follows (merged at read time),
//! - below the cached timeline's floor, or when there is no timeline, the posts of every
//!   author the reader follows, pulled from storage (fan-out on read).
//!
//! Every source returns at most `n` items per round. A source that returned `n` items may
//! have more beyond its last one, so the round only trusts ids up to the *bound*: the
//! last id of the least advanced such source. Items past the bound are fetched again in
//! the next round, which starts at the bound. This keeps pages exact with no gaps and no
//! duplicates, however the sources interleave.
//!
//! Entries are filtered against the reader's current follows (a push can race an
//! unfollow) and hydrated; deleted posts drop out at hydration.
//!
//! # Reblogs
//!
//! A reblog is a post of the reblogger's, so it arrives through the same sources. After
//! hydration a page keeps a reblog of status O only where the timeline shows O nowhere
//! else (the timeline contract: once per original):
//!
//! - O is gone: the reblog goes too (the delete takes its reblogs along; this covers the
//!   moment between);
//! - O's author is one of the reader's home authors (or the reader): O itself is in the
//!   timeline, older than any reblog of it;
//! - another home author (or the reader) reblogged O earlier: that older reblog is the
//!   one shown.
//!
//! The third check asks the post-service for O's earlier reblogs, so a page with reblogs of
//! statuses by authors the reader does not follow costs one call per such reblog.
//!
//! # Where a page comes from
//!
//! Everything a page needs besides the timeline is in the read model
//! ([`starling_timeline_cache::read_model`]): the reader's follow list, the celebrity list,
//! each followed celebrity's newest post ids and the posts themselves, kept current by the
//! events the services already publish. In the common case a page is two cache round
//! trips and no call to another service: the follow list with the celebrity version
//! (sent together with the first timeline read), then the page's posts. The celebrity
//! list and the celebrities' recent lists come from this process's view of them, read
//! again only when the version moved. A miss fills the model from the owning service,
//! and that call is counted by target (`starling_timeline_peer_calls_total`), as are hits
//! and misses per collection.
//!
//! The page is answered as Mastodon Statuses (`statuses`): each nests its author's
//! Account, whose counts come from the read model too (a minute old at most), read in the
//! second round trip with the posts (`ReadModel::page`).
//!
//! Across processes, the posts, their counts, the reader's flags on them and their
//! authors' counts mostly come from this process's own copy ([`NearCopy`], kept current by
//! the read model's change log, whose number the first round trip brings along): a warm
//! page then makes no second round trip at all, and another page asks only for what the
//! copy lacks.
//!
//! A reader without a timeline (new, or inactive long enough to be evicted) gets one
//! rebuilt from storage on this read, and the read is served from it: a full page, never
//! an empty one. Every read of authors' posts from storage (a rebuild, a page below the
//! cache's floor, a celebrity beyond its recent list) asks for all of a round's authors in
//! one call ([`PostClient::post_ids_by_authors`]: one HTTP call per 64 authors across
//! processes), not one per author, so a cold cache (after a Redis wipe) refills at a few
//! times the rate.

mod grants;
mod handlers;
mod hydrate;
mod near;
mod stats;
mod statuses;
mod streaming;

pub use near::NearCopy;
pub use stats::ReadStats;

use near::At;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;

use stats::{Lookups, Peer};

use futures::future::try_join_all;
use parking_lot::RwLock;
use starling_clients::{ClientError, GraphClient, PostClient};
use starling_ids::{PostId, UserId};
use starling_storage::{Counts, Interactions, Order, PostRecord, Window};
use starling_timeline_cache::bus::Bus;
use starling_timeline_cache::read_model::{Collection, Fill, RECENT_DEPTH, ReadModel, ReaderView, Recent};
use starling_timeline_cache::{CacheError, Entry, Range, Slice, TimelineCache};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Newest first, below `upper` (first page, `max_id`, `since_id`).
    Down,
    /// Oldest first, above `lower` (`min_id`); the handler reverses the page.
    Up,
}

/// One page request: ids strictly between `lower` and `upper`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub upper: Option<PostId>,
    pub lower: Option<PostId>,
    pub direction: Direction,
    pub limit: usize,
}

/// A page of a home timeline, newest first (or oldest first for `min_id`), with the
/// originals its reblogs share.
#[derive(Clone, Debug, Default)]
pub struct HomePage {
    pub posts: Vec<PostRecord>,
    pub originals: HashMap<PostId, PostRecord>,
    /// What the read model said, with the posts, of their authors' counts and of their
    /// interactions (`None`: not cached), so that rendering asks only for the rest.
    pub counted: Counted,
    /// Where the page found this process's copy of posts, if it has one.
    near: Option<At>,
}

/// Counts and interactions read from the read model, cached or not.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    pub counts: HashMap<UserId, Option<Counts>>,
    pub interactions: HashMap<PostId, Option<Interactions>>,
}

/// Tuning of the read path.
#[derive(Clone, Copy, Debug)]
pub struct ReadSettings {
    /// The cache's cap per timeline: how much a rebuild pulls.
    pub max_entries: usize,
    /// Bytes of posts, counts and flags this process keeps in its own copy ([`NearCopy`]);
    /// 0: none, every page reads them from the read model (where that is in this process already).
    pub near_post_bytes: u64,
}

/// What this process holds of the celebrities, valid while the read model's celebrity
/// version is `version` (see [`starling_timeline_cache::read_model`]).
struct CelebrityView {
    version: u64,
    celebrities: Option<Arc<HashSet<UserId>>>,
    recent: HashMap<UserId, Arc<Recent>>,
}

pub struct TimelineService {
    pub cache: Arc<dyn TimelineCache>,
    pub model: Arc<dyn ReadModel>,
    /// For misses of the read model, and rebuilds.
    pub graph: Arc<dyn GraphClient>,
    pub posts: Arc<dyn PostClient>,
    pub settings: ReadSettings,
    /// What the fan-out announces: feeds the open streams.
    pub bus: Arc<dyn Bus>,
    celebrities: RwLock<CelebrityView>,
    near: Option<NearCopy>,
    pub stats: ReadStats,
}

/// One item a source produced.
#[derive(Clone, Copy)]
struct Item {
    post: PostId,
    author: UserId,
}

/// What one source returned in one round.
struct Fetched {
    items: Vec<Item>,
    /// `None` if nothing more exists in the requested range beyond `items`; otherwise the
    /// id up to which (inclusive) the source is known to be complete.
    known_to: Option<PostId>,
}

impl Fetched {
    /// A source that was asked for `n` items: if it returned fewer, it has no more.
    fn of(items: Vec<Item>, n: usize) -> Fetched {
        let known_to = if items.len() < n { None } else { items.last().map(|i| i.post) };
        Fetched { items, known_to }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The cache has not been read yet: the first round's read tells whether the reader
    /// has a timeline (no separate probe, which would cost a round trip per request).
    Unprobed,
    /// Cache plus celebrities; `floor` learnt from the cache (None: complete timeline).
    Cached { floor: Option<PostId> },
    /// Everything from storage: no usable timeline.
    Pull,
}

impl TimelineService {
    pub fn new(
        cache: Arc<dyn TimelineCache>,
        model: Arc<dyn ReadModel>,
        graph: Arc<dyn GraphClient>,
        posts: Arc<dyn PostClient>,
        settings: ReadSettings,
        bus: Arc<dyn Bus>,
    ) -> Self {
        TimelineService {
            cache,
            model,
            graph,
            posts,
            settings,
            bus,
            // No version matches this one until the first read replaces it.
            celebrities: RwLock::new(CelebrityView { version: u64::MAX, celebrities: None, recent: HashMap::new() }),
            near: (settings.near_post_bytes > 0).then(|| NearCopy::new(settings.near_post_bytes)),
            stats: ReadStats::default(),
        }
    }

    pub fn configure(self: &Arc<Self>, cfg: &mut actix_web::web::ServiceConfig) {
        handlers::configure(self, cfg);
    }

    /// Every celebrity as of celebrity version `version`: from this process's view if it
    /// is that recent, else from the read model (filled from the graph on a miss).
    async fn celebrity_set(&self, version: u64) -> Result<Arc<HashSet<UserId>>, ReadError> {
        {
            let view = self.celebrities.read();
            if let Some(set) = view.celebrities.as_ref().filter(|_| view.version == version) {
                return Ok(set.clone());
            }
        }
        let cached = self.model.celebrities().await?;
        let list = self
            .or_fill(
                Lookups::Celebrities,
                Collection::Celebrities,
                cached,
                Peer::Graph,
                || self.graph.celebrities(),
                |l| Fill::Users(l.clone()),
            )
            .await?;
        let set: Arc<HashSet<UserId>> = Arc::new(list.into_iter().collect());
        let mut view = self.celebrities.write();
        // `!=`, not `<`: after a wipe the version starts again (from the clock), so it
        // need not be above the one this view holds.
        if view.version != version {
            *view = CelebrityView { version, celebrities: None, recent: HashMap::new() };
        }
        view.celebrities = Some(set.clone());
        Ok(set)
    }

    /// Whom `reader` follows, the celebrity version and the change log's number, from
    /// the read model in one command (the follow list filled from the graph on a miss).
    async fn reader_view(&self, reader: UserId) -> Result<(Vec<UserId>, u64, Option<u64>), ReadError> {
        let ReaderView { following: cached, version, changes } = self.model.reader_view(reader).await?;
        let c = Collection::Following(reader);
        let list = self
            .or_fill(
                Lookups::Following,
                c,
                cached,
                Peer::Graph,
                || self.graph.following(reader),
                |l| Fill::Users(l.clone()),
            )
            .await?;
        Ok((list, version, changes))
    }

    /// The newest post ids of each of `authors` as of celebrity version `version`: from
    /// this process's view, else from the read model (filled from the post-service on a
    /// miss).
    async fn recent(&self, authors: &[UserId], version: u64) -> Result<Vec<Arc<Recent>>, ReadError> {
        let mut held: Vec<Option<Arc<Recent>>> = {
            let view = self.celebrities.read();
            let current = view.version == version;
            authors.iter().map(|a| view.recent.get(a).filter(|_| current).cloned()).collect()
        };
        let missing: Vec<UserId> = authors.iter().zip(&held).filter(|(_, h)| h.is_none()).map(|(a, _)| *a).collect();
        // What this process held counts as hits of the collection.
        self.stats.lookups(Lookups::Recent, authors.len() - missing.len(), 0);
        if missing.is_empty() {
            return Ok(held.into_iter().flatten().collect());
        }
        let cached = self.model.recent(&missing).await?;
        let mut fetched: HashMap<UserId, Arc<Recent>> = HashMap::with_capacity(missing.len());
        let mut unfilled = Vec::new();
        for (&author, cached) in missing.iter().zip(cached) {
            match cached {
                Some(recent) => drop(fetched.insert(author, Arc::new(recent))),
                None => unfilled.push(author),
            }
        }
        self.stats.lookups(Lookups::Recent, missing.len() - unfilled.len(), unfilled.len());
        if !unfilled.is_empty() {
            // Every missing list in one post-service call, each filled under its own token
            // (the read model's fill protocol, as `or_fill` does for one).
            let tokens = try_join_all(unfilled.iter().map(|&a| self.model.begin_fill(Collection::Recent(a)))).await?;
            self.stats.call(Peer::Posts);
            let lists = self.posts.post_ids_by_authors(&unfilled, Window::newest(RECENT_DEPTH)).await?;
            let fills = unfilled.iter().zip(tokens).zip(lists).map(|((&author, token), posts)| {
                let recent = Recent { complete: posts.len() < RECENT_DEPTH, posts };
                let fill = Fill::Recent(recent.clone());
                fetched.insert(author, Arc::new(recent));
                async move {
                    if let Err(e) = self.model.finish_fill(Collection::Recent(author), token, fill).await {
                        tracing::warn!(author = author.0, error = %e, "could not cache a recent list");
                    }
                }
            });
            futures::future::join_all(fills.collect::<Vec<_>>()).await;
        }
        {
            // Read after `version` was, so at least that recent: kept only under it.
            let mut view = self.celebrities.write();
            if view.version == version {
                view.recent.extend(fetched.iter().map(|(a, r)| (*a, r.clone())));
            }
        }
        for (slot, author) in held.iter_mut().zip(authors) {
            if slot.is_none() {
                *slot = fetched.get(author).cloned();
            }
        }
        Ok(held.into_iter().flatten().collect())
    }

    /// `cached` if the read model had it; else fetched from `peer` and filled into `c`
    /// (see the read model's docs on fills). A failed fill only costs the next read
    /// another miss: this read has what it fetched.
    async fn or_fill<T, F, Fut>(
        &self,
        what: Lookups,
        c: Collection,
        cached: Option<T>,
        peer: Peer,
        fetch: F,
        to_fill: impl FnOnce(&T) -> Fill,
    ) -> Result<T, ReadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        if let Some(value) = cached {
            self.stats.lookup(what, true);
            return Ok(value);
        }
        self.stats.lookup(what, false);
        let token = self.model.begin_fill(c).await?;
        self.stats.call(peer);
        let value = fetch().await?;
        if let Err(e) = self.model.finish_fill(c, token, to_fill(&value)).await {
            tracing::warn!(collection = ?c, error = %e, "could not cache a fill");
        }
        Ok(value)
    }

    /// The page of `reader`'s home timeline described by `query`, in the query's direction.
    pub async fn home(&self, reader: UserId, query: Query) -> Result<HomePage, ReadError> {
        self.stats.reads.inc();
        // The first round's timeline read goes out with the follow list's: one round trip.
        let first = cache_range(query.upper, query.lower, query.limit, query.direction == Direction::Down);
        let ((following, version, changes), slice) =
            futures::try_join!(self.reader_view(reader), async { Ok(self.cache.read(reader, first).await?) })?;
        let near = match &self.near {
            Some(copy) => Some(copy.at(&*self.model, changes).await?),
            None => None,
        };
        let celebrities = self.celebrity_set(version).await?;
        let celebs: Vec<UserId> = following.iter().copied().filter(|a| celebrities.contains(a)).collect();
        let mut authors = following;
        authors.push(reader);
        let allowed: HashSet<UserId> = authors.iter().copied().collect();

        let ctx = Ctx { reader, authors: &authors, celebs: &celebs, allowed: Some(&allowed), version, near };
        self.collect(&ctx, query, Mode::Unprobed, Some((first, slice))).await
    }

    /// Rebuilds `reader`'s timeline from storage. Returns how the read should proceed.
    async fn rebuild(&self, reader: UserId, authors: &[UserId]) -> Result<Mode, ReadError> {
        if !self.cache.begin_rebuild(reader).await? {
            // Someone else is rebuilding right now: serve this read from storage.
            return Ok(Mode::Pull);
        }
        self.stats.rebuilds.inc();
        let ctx = Ctx { reader, authors, celebs: &[], allowed: None, version: 0, near: None };
        let query = Query { upper: None, lower: None, direction: Direction::Down, limit: self.settings.max_entries };
        let pulled = match self.merge(&ctx, query, Mode::Pull).await {
            Ok(p) => p,
            Err(e) => {
                // Leave no half-built timeline behind: it would stay unreadable.
                let _ = self.cache.evict(reader).await;
                return Err(e);
            }
        };
        let entries: Vec<Entry> = pulled.iter().map(|i| Entry { post: i.post, author: i.author }).collect();
        let complete = entries.len() < self.settings.max_entries;
        self.cache.finish_rebuild(reader, &entries, complete).await?;
        let floor = if complete { None } else { entries.last().map(|e| e.post) };
        Ok(Mode::Cached { floor })
    }

    /// The page for `query`, hydrated: deleted posts and reblogs shown elsewhere drop out
    /// and the merge goes on until the page is full or the sources are exhausted.
    async fn collect(
        &self,
        ctx: &Ctx<'_>,
        query: Query,
        mut mode: Mode,
        mut prefetched: Prefetched,
    ) -> Result<HomePage, ReadError> {
        let mut out = Vec::with_capacity(query.limit);
        let mut originals = HashMap::new();
        let mut counted = Counted::default();
        let mut round = query;
        loop {
            round.limit = query.limit - out.len();
            let Some((items, next)) = self.merge_round(ctx, round, &mut mode, &mut prefetched).await? else {
                // No timeline: rebuild it before serving from it.
                mode = self.rebuild(ctx.reader, ctx.authors).await?;
                continue;
            };
            // Hydrate only what the page still needs; more only if some were deleted.
            let mut rest = &items[..];
            while out.len() < query.limit && !rest.is_empty() {
                let take = (query.limit - out.len()).min(rest.len());
                let ids: Vec<PostId> = rest[..take].iter().map(|i| i.post).collect();
                let posts = if counted.interactions.is_empty() && ctx.allowed.is_some() {
                    // The page's first posts come with their counts: one round trip for both.
                    let mut authors: Vec<UserId> = rest[..take].iter().map(|i| i.author).collect();
                    authors.sort_unstable();
                    authors.dedup();
                    let (posts, c) = self.hydrate_counted(&ids, &authors, ctx.reader, ctx.near).await?;
                    counted = c;
                    posts
                } else {
                    self.hydrate(&ids, ctx.near).await?
                };
                out.extend(match ctx.allowed {
                    Some(home) => self.without_repeats(home, posts, &mut originals, ctx.near).await?,
                    None => posts,
                });
                rest = &rest[take..];
            }
            match next {
                Some(next) if out.len() < query.limit => round = next,
                _ => return Ok(HomePage { posts: out, originals, counted, near: ctx.near }),
            }
        }
    }

    /// The merge without hydration (the rebuild: storage holds no deleted posts).
    async fn merge(&self, ctx: &Ctx<'_>, query: Query, mut mode: Mode) -> Result<Vec<Item>, ReadError> {
        let mut out: Vec<Item> = Vec::with_capacity(query.limit);
        let mut round = query;
        loop {
            round.limit = query.limit - out.len();
            // Only ever called in pull mode, which never reports a missing timeline.
            let (items, next) = self.merge_round(ctx, round, &mut mode, &mut None).await?.unwrap_or_default();
            out.extend(items.into_iter().take(round.limit));
            match next {
                Some(next) if out.len() < query.limit => round = next,
                _ => return Ok(out),
            }
        }
    }

    /// One round of the merge described in the crate docs: up to `query.limit` items in
    /// the query's direction, plus the query for the next round if the sources may hold more.
    async fn merge_round(
        &self,
        ctx: &Ctx<'_>,
        query: Query,
        mode: &mut Mode,
        prefetched: &mut Prefetched,
    ) -> Result<Option<(Vec<Item>, Option<Query>)>, ReadError> {
        let down = query.direction == Direction::Down;
        let upper = query.upper;
        // The cache may hold entries the filter drops; over-fetch from it a little.
        let n = cache_fetch(query.limit);
        if let Mode::Cached { floor: Some(f) } = *mode {
            // Going down, once the range lies wholly below the floor only storage has it.
            if down && upper.is_some_and(|u| u <= f) {
                *mode = Mode::Pull;
            }
        }
        let Some(fetched) = self.fetch_round(ctx, mode, prefetched, query).await? else {
            return Ok(None);
        };

        // The bound: how far every source is known to be complete.
        let bound = fetched.iter().filter_map(|f| f.known_to).reduce(|a, b| if down { a.max(b) } else { a.min(b) });
        let mut items: Vec<Item> = Vec::with_capacity(fetched.iter().map(|f| f.items.len()).sum());
        items.extend(
            fetched
                .into_iter()
                .flat_map(|f| f.items)
                .filter(|i| bound.is_none_or(|b| if down { i.post >= b } else { i.post <= b }))
                .filter(|i| ctx.allowed.is_none_or(|allowed| allowed.contains(&i.author))),
        );
        items.sort_unstable_by(|a, b| if down { b.post.cmp(&a.post) } else { a.post.cmp(&b.post) });
        items.dedup_by_key(|i| i.post);
        // Items beyond what this round needs are fetched again later; keeping the page
        // short here keeps hydration to the page.
        let next = match bound {
            _ if items.len() > n => {
                items.truncate(n);
                let last = items.last().map(|i| i.post);
                Some(if down { Query { upper: last, ..query } } else { Query { lower: last, ..query } })
            }
            None => None,
            Some(b) if down => Some(Query { upper: Some(b), ..query }),
            Some(b) => Some(Query { lower: Some(b), ..query }),
        };
        Ok(Some((items, next)))
    }

    /// Fetches one round from every source of `mode`: `limit` items from each author (an
    /// author's posts are never filtered out) and a little more from the cache.
    async fn fetch_round(
        &self,
        ctx: &Ctx<'_>,
        mode: &mut Mode,
        prefetched: &mut Prefetched,
        round: Query,
    ) -> Result<Option<Vec<Fetched>>, ReadError> {
        let (upper, lower, limit) = (round.upper, round.lower, round.limit);
        let down = round.direction == Direction::Down;
        let order = if down { Order::NewestFirst } else { Order::OldestFirst };
        let n = limit;
        // These authors' posts from storage in this round's window (capped at `cap`): one
        // batched call, whatever the number of authors.
        let from_storage = |authors: Vec<UserId>, cap: Option<PostId>| {
            let before = match (upper, cap) {
                (Some(u), Some(c)) => Some(u.min(c)),
                (u, c) => u.or(c),
            };
            let window = Window { before, after: lower, limit: n, order };
            async move {
                if authors.is_empty() {
                    return Ok(Vec::new());
                }
                self.stats.call(Peer::Posts);
                let lists = self.posts.post_ids_by_authors(&authors, window).await?;
                let fetched = authors
                    .iter()
                    .zip(lists)
                    .map(|(&a, ids)| Fetched::of(ids.into_iter().map(|post| Item { post, author: a }).collect(), n));
                Ok::<_, ReadError>(fetched.collect::<Vec<_>>())
            }
        };
        match *mode {
            Mode::Pull => {
                self.stats.pulls.inc();
                from_storage(ctx.authors.to_vec(), None).await.map(Some)
            }
            Mode::Cached { .. } | Mode::Unprobed => {
                let range = cache_range(upper, lower, limit, down);
                let slice = match prefetched.take() {
                    Some((asked, slice)) if asked == range => slice,
                    _ => self.cache.read(ctx.reader, range).await?,
                };
                let Some(slice) = slice else {
                    if *mode == Mode::Unprobed {
                        return Ok(None);
                    }
                    // Evicted between rounds: storage has everything.
                    *mode = Mode::Pull;
                    return Box::pin(self.fetch_round(ctx, mode, &mut None, round)).await;
                };
                if *mode == Mode::Unprobed {
                    self.stats.cache_hits.inc();
                }
                let floor = slice.floor;
                *mode = Mode::Cached { floor };
                if down && floor.is_some_and(|f| upper.is_some_and(|u| u <= f)) {
                    // The whole range lies below the floor: only storage has it. (Trusting
                    // the cache "down to the floor" here would put the bound above the
                    // cursor and page backwards.)
                    *mode = Mode::Pull;
                    return Box::pin(self.fetch_round(ctx, mode, &mut None, round)).await;
                }
                let items: Vec<Item> =
                    slice.entries.into_iter().map(|e| Item { post: e.post, author: e.author }).collect();
                let mut cached = Fetched::of(items, cache_fetch(limit));
                let mut fetched = Vec::new();
                // The cache is complete for this range only above its floor.
                match floor.filter(|f| lower.is_none_or(|l| l < *f)) {
                    Some(f) if down && cached.known_to.is_none() => {
                        // Exhausted down to the floor: trusted to there; the next round
                        // starts at the floor and switches to storage.
                        cached.known_to = Some(f);
                        fetched.push(cached);
                    }
                    Some(f) if !down => {
                        // Going up from below the floor: storage covers (lower, floor).
                        fetched.push(cached);
                        self.stats.pulls.inc();
                        fetched.extend(from_storage(ctx.authors.to_vec(), Some(f)).await?);
                    }
                    _ => fetched.push(cached),
                }
                // Going up (`min_id`) the recent lists do not help: storage answers.
                let recents = if down && !ctx.celebs.is_empty() {
                    self.recent(ctx.celebs, ctx.version).await?
                } else {
                    Vec::new()
                };
                // A celebrity whose recent list does not cover the round is read from storage.
                let mut uncovered = Vec::new();
                for (i, &a) in ctx.celebs.iter().enumerate() {
                    match recents.get(i).and_then(|r| recent_window(r, a, upper, lower, n)) {
                        Some(f) => fetched.push(f),
                        None => uncovered.push(a),
                    }
                }
                fetched.extend(from_storage(uncovered, None).await?);
                Ok(Some(fetched))
            }
        }
    }
}

/// A celebrity's posts in the window from its recent list, or `None` if the window
/// reaches past what the list holds (then storage answers).
fn recent_window(
    recent: &Recent,
    author: UserId,
    upper: Option<PostId>,
    lower: Option<PostId>,
    n: usize,
) -> Option<Fetched> {
    // Sized up front: a filtered iterator's collect grows the vector a step at a time.
    let mut items: Vec<Item> = Vec::with_capacity(n.min(recent.posts.len()));
    items.extend(
        recent
            .posts
            .iter()
            .filter(|id| upper.is_none_or(|u| **id < u) && lower.is_none_or(|l| **id > l))
            .take(n)
            .map(|&post| Item { post, author }),
    );
    // A cut list may have older posts beyond its end, inside the window.
    let reaches_past_end = recent.posts.last().is_none_or(|oldest| lower.is_none_or(|l| l < *oldest));
    if items.len() < n && !recent.complete && reaches_past_end {
        return None;
    }
    Some(Fetched::of(items, n))
}

/// How many entries to ask the cache for when `limit` are needed: some may be filtered.
fn cache_fetch(limit: usize) -> usize {
    limit + limit / 4 + 4
}

/// The cache read of a round asking for `limit` items.
fn cache_range(upper: Option<PostId>, lower: Option<PostId>, limit: usize, down: bool) -> Range {
    Range { before: upper, after: lower, limit: cache_fetch(limit), oldest_first: !down }
}

/// The first round's timeline read, made before the round (with the follow list's).
type Prefetched = Option<(Range, Option<Slice>)>;

struct Ctx<'a> {
    reader: UserId,
    /// Everyone the reader follows, plus the reader.
    authors: &'a [UserId],
    /// The celebrities among them.
    celebs: &'a [UserId],
    /// `authors` as a set, for filtering cache entries; `None` trusts every source.
    allowed: Option<&'a HashSet<UserId>>,
    /// The celebrity version read with the follow list.
    version: u64,
    /// Where this process's copy of posts is for this page (`None`: not used).
    near: Option<At>,
}
