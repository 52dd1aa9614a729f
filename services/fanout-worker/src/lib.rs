//! fanout-worker: keeps materialised home timelines up to date.
//!
//! It consumes `posts.v1` and `graph.v1` and writes only to the timeline cache and the
//! read model beside it ([`starling_timeline_cache::read_model`]):
//!
//! | event | effect |
//! |---|---|
//! | post created (a reblog is one, of the reblogger's) | push to the author's own timeline; if the author is ordinary, to every follower that has a timeline (active readers) and does not mute the author; if a celebrity, add it to the author's cached recent list |
//! | post deleted | remove from the author's and followers' timelines; cache its tombstone (reads also drop deleted posts) |
//! | follow / unfollow / block / mute / unmute | *reconcile* the edge (a block: both directions): set it in the reader's cached follow list as the graph has it now (a muted follow does not count); if the follow counts, backfill the author's recent posts; if not, remove the author's entries |
//! | author class changed | set the author in the cached celebrity list as the graph has it now, forget its recent list; if the author is ordinary now, backfill its recent posts to its followers (posts made while it was a celebrity were never pushed) |
//!
//! Once applied, each post, delete and reader whose follows changed is announced on the
//! timeline bus ([`starling_timeline_cache::bus`]), which feeds the streaming API.
//!
//! Graph events are applied by looking at the graph's *current* state rather than
//! trusting the event, so redelivery, duplicates and reordering across topics all
//! converge on the same timeline. A post pushed after its reader unfollowed the author is
//! harmless: the read path filters by the reader's current follows.
//!
//! Backfills insert an author's newest `max_entries` posts, the timeline's own cap: any
//! older post of that author could not be among the reader's newest `max_entries`
//! entries, so the timeline stays exact above its floor.
//!
//! # Batches
//!
//! A poll hands over a batch; its partitions are applied in parallel, each in order. Within
//! a partition, consecutive `PostCreated` events are applied together as one *run*: each
//! author's class and followers are looked up once per run (concurrently across authors),
//! and all the run's pushes go to the cache in one [`TimelineCache::insert_all`], which the
//! Redis cache sends as a few pipelines (one `RPUSHX` per timeline, carrying every entry
//! that timeline gets from the run). Pushes commute (a timeline is kept sorted by post id,
//! and a push is idempotent), so applying a run at once gives the same timelines as one
//! event after another. Consecutive follow, unfollow and block events are applied together
//! the same way: the run's edges (each once) are looked up in one graph call, their follow
//! lists set concurrently, the backfills' recent posts read in one post-service call per
//! 64 authors, and every backfill written in one [`TimelineCache::insert_all`]. Edges
//! commute too, since each is reconciled against the graph as it is now. Any other event
//! (delete, class change, poison) ends the run and is applied on its own, so a delete still
//! comes after the creates before it and a class change after the follows before it.
//!
//! # Long follower lists
//!
//! A post whose author has more than `split_above` followers (and is still ordinary, below
//! the celebrity line) is not pushed by the worker that reads it: that worker pushes the
//! author's own timeline and publishes the follower list in slices of `slice_size` to
//! `fanout.v1`, keyed so the slices spread over the partitions, and every worker in the
//! group applies the slices its partitions get. One 9,000-follower post is then shared by
//! all workers instead of holding one partition while the rest idle. The post's offset moves
//! only after every slice is acknowledged by the log, so a crash in between publishes the
//! slices again, and pushes are idempotent. A slice applied after its post was deleted, or
//! after a follower unfollowed, leaves an entry the read path drops (it filters deleted
//! posts and unfollowed authors), as a redelivered push would.
//!
//! # Offsets
//!
//! Offsets move only after the cache writes of every event before them succeeded
//! (at-least-once; every effect is idempotent): once the whole batch is applied, its
//! positions are handed to [`Consumer::commit_later`], which for Kafka stores them for the
//! client's periodic background commit instead of waiting for a broker round trip per
//! batch. A crash loses at most that interval's commits, and those events are applied again.
//! A transient failure is retried with backoff and holds its partition; an undecodable
//! event is dead-lettered (retried until that succeeds) and skipped, so it never blocks a
//! partition.
//!
//! # Traces
//!
//! Each event carries the W3C trace context of the span that produced it (a request's, in
//! the post- or graph-service; or this worker's, for a slice), when traces are exported
//! ([`starling_telemetry`]). The span that applies an event (`fanout.event`) is its child;
//! a missing or malformed context starts a trace of its own and fails nothing. A run is
//! written under one `fanout.posts` (or `fanout.edges`) span, a child of the run's first
//! event's span, linked to the others'; a post's slices carry its event's context, and the
//! graph and cache calls under it have spans of their own, so one trace runs from the
//! request through the log and the workers to the timelines.

mod decode;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{StreamExt as _, TryStreamExt as _};
use starling_clients::{ClientError, GraphClient, PostClient};
use starling_events::{Consumer, Delivery, EventLog, LogError, Record, Topic, pb};
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, Window};
use starling_timeline_cache::bus::{Announcement, Bus, Change};
use starling_timeline_cache::read_model::{Collection, ReadModel};
use starling_timeline_cache::{CacheError, Entry, Push, TimelineCache};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use decode::{Decoded, Event, PostPush, decode, event_span};
pub use stats::FanoutStats;

pub const CONSUMER_GROUP: &str = "fanout-worker";

/// How long a graceful stop keeps applying what is left before it gives up (well inside
/// Kubernetes' 60 s grace period in `k8s/`).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutSettings {
    /// Consumers in this process (each owns a share of the partitions). One is enough:
    /// a consumer applies its partitions concurrently, and each more costs a fetch loop.
    /// With noida-db (which answers a fetch at once, one record per partition) a second
    /// consumer halved the fan-out bench's throughput on two cores. Scale out with
    /// processes instead.
    pub consumers: usize,
    /// Followers fetched per graph call.
    pub follower_page: usize,
    /// Deliveries taken per poll.
    pub batch: usize,
    /// Authors whose class and followers one run looks up at the same time.
    pub lookups_in_flight: usize,
    /// Timeline pushes (entry × owner) handed to the cache per call: bounds the memory a
    /// run of posts by authors with many followers holds at once.
    pub pushes_per_write: usize,
    /// A post whose author has more followers than this is pushed in slices (see the crate
    /// docs on long follower lists); 0 never splits.
    pub split_above: usize,
    /// Followers per slice.
    pub slice_size: usize,
    /// A consumer that reports lag but receives nothing for this long rejoins the group.
    pub stall_limit_ms: u64,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            consumers: 1,
            follower_page: 2_000,
            batch: 1_024,
            lookups_in_flight: 16,
            pushes_per_write: 65_536,
            split_above: 2_000,
            slice_size: 1_000,
            stall_limit_ms: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Applies events to the timeline cache.
pub struct Fanout {
    pub graph: Arc<dyn GraphClient>,
    pub posts: Arc<dyn PostClient>,
    pub cache: Arc<dyn TimelineCache>,
    /// Follow lists, celebrities and their recent posts, tombstones: what reads need.
    pub model: Arc<dyn ReadModel>,
    /// The cache's cap per timeline; backfills insert this many posts (see crate docs).
    pub max_entries: usize,
    pub settings: FanoutSettings,
    pub stats: Arc<FanoutStats>,
    /// Where applied changes are announced to the open streams.
    pub bus: Arc<dyn Bus>,
}

/// One push of a run, with the span of the event that asked for it.
struct Pending {
    push: PostPush,
    span: tracing::Span,
}

/// Edges of a graph event, with the span of the event.
struct PendingEdges {
    pairs: Vec<(UserId, UserId)>,
    span: tracing::Span,
}

/// Who gets an author's posts.
enum Audience {
    /// Merged at read time: only the author's own timeline is pushed to.
    Celebrity,
    Followers(Vec<UserId>),
}

impl Fanout {
    /// Runs `settings.consumers` consumers until `shutdown`, then drains: each consumer
    /// keeps going until its partitions have nothing left, so a graceful stop leaves no
    /// accepted event unapplied (for at most [`DRAIN_LIMIT`]; the rest is redelivered).
    pub async fn run(self: Arc<Self>, log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Result<(), FanoutError> {
        let mut consumers = Vec::new();
        for _ in 0..self.settings.consumers.max(1) {
            consumers.push(log.subscribe(CONSUMER_GROUP, &Topic::ALL).await?);
        }
        *self.stats.lag.lock() = vec![0; consumers.len()];
        let tasks = consumers
            .into_iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(self.clone().consume(i, c, log.clone(), shutdown.clone())));
        for result in join_all(tasks).await {
            match result {
                Ok(r) => r?,
                Err(e) => tracing::error!(error = %e, "fan-out consumer task panicked"),
            }
        }
        Ok(())
    }

    async fn consume(
        self: Arc<Self>,
        index: usize,
        mut consumer: Box<dyn Consumer>,
        log: Arc<dyn EventLog>,
        shutdown: CancellationToken,
    ) -> Result<(), FanoutError> {
        let mut lag_read = std::time::Instant::now();
        let mut drain_started: Option<std::time::Instant> = None;
        let mut progress = std::time::Instant::now();
        loop {
            // Lag costs a round trip to a broker: read it when idle, or twice a second.
            if lag_read.elapsed() > Duration::from_millis(500) {
                self.record_lag(index, consumer.as_mut()).await;
                lag_read = std::time::Instant::now();
            }
            let draining = shutdown.is_cancelled();
            if draining && drain_started.get_or_insert_with(std::time::Instant::now).elapsed() > DRAIN_LIMIT {
                // Lag unreadable (broker gone) or not falling: stop anyway. Whatever is not
                // committed is redelivered to the next owner, so stopping loses nothing.
                tracing::warn!("drain did not finish within {DRAIN_LIMIT:?}; stopping with events left to redeliver");
                return Ok(());
            }
            let wait = if draining { Duration::from_millis(50) } else { Duration::from_millis(200) };
            let batch = match consumer.poll(self.settings.batch.max(1), wait).await {
                Ok(b) => b,
                Err(e) if draining => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let lag = self.record_lag(index, consumer.as_mut()).await;
                lag_read = std::time::Instant::now();
                if draining && lag == Some(0) {
                    return Ok(());
                }
                let stalled = Duration::from_millis(self.settings.stall_limit_ms);
                if !draining && lag.is_some_and(|l| l > 0) && progress.elapsed() > stalled {
                    // Records wait in this member's partitions, yet none came for a while:
                    // seen after broker restarts and rebalances on the test broker, with the
                    // group stuck until a member rejoined. A new member gets a fresh
                    // assignment from the committed offsets; nothing is lost.
                    tracing::warn!(
                        lag = lag.unwrap_or(0),
                        "consumer stalled with records waiting; rejoining the group"
                    );
                    match log.subscribe(CONSUMER_GROUP, &Topic::ALL).await {
                        Ok(fresh) => {
                            consumer = fresh;
                            self.stats.consumer_rebuilds.inc();
                        }
                        Err(e) => tracing::warn!(error = %e, "rejoining failed; trying again later"),
                    }
                    progress = std::time::Instant::now();
                }
                continue;
            }
            progress = std::time::Instant::now();
            self.apply_batch(&batch, log.as_ref()).await;
            commit_with_retry(consumer.as_mut(), &batch).await;
        }
    }

    async fn record_lag(&self, index: usize, consumer: &mut dyn Consumer) -> Option<u64> {
        match consumer.lag().await {
            Ok(lag) => {
                if let Some(slot) = self.stats.lag.lock().get_mut(index) {
                    *slot = lag;
                }
                Some(lag)
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading consumer lag failed");
                None
            }
        }
    }

    /// Applies a batch: partitions in parallel, each partition in order (see the crate
    /// docs on runs).
    async fn apply_batch(&self, batch: &[Delivery], log: &dyn EventLog) {
        let mut by_partition: BTreeMap<(Topic, u32), Vec<&Delivery>> = BTreeMap::new();
        for d in batch {
            by_partition.entry((d.topic, d.partition)).or_default().push(d);
        }
        join_all(by_partition.into_values().map(|deliveries| self.apply_partition(deliveries, log))).await;
    }

    async fn apply_partition(&self, deliveries: Vec<&Delivery>, log: &dyn EventLog) {
        let mut run: Vec<Pending> = Vec::new();
        let mut edges: Vec<PendingEdges> = Vec::new();
        for d in deliveries {
            let span = event_span(d);
            match decode(d) {
                Decoded::Push(push) => {
                    self.flush_edges(&mut edges).await;
                    run.push(Pending { push, span });
                }
                Decoded::Edges(pairs) => {
                    self.flush_posts(&mut run, log).await;
                    edges.push(PendingEdges { pairs, span });
                }
                Decoded::Single(event) => {
                    self.flush_posts(&mut run, log).await;
                    self.flush_edges(&mut edges).await;
                    let started = std::time::Instant::now();
                    self.apply_with_retry(d, event, log).instrument(span).await;
                    self.stats.applied(d.topic, started);
                }
            }
        }
        self.flush_posts(&mut run, log).await;
        self.flush_edges(&mut edges).await;
    }

    async fn flush_posts(&self, run: &mut Vec<Pending>, log: &dyn EventLog) {
        if !run.is_empty() {
            self.apply_run_with_retry(run, log).await;
            run.clear();
        }
    }

    async fn flush_edges(&self, run: &mut Vec<PendingEdges>) {
        if !run.is_empty() {
            self.apply_edges_with_retry(run).await;
            run.clear();
        }
    }

    /// Runs `apply` until it succeeds: transient failures are retried forever (with
    /// backoff), since skipping would lose the effect, and the partition is better held
    /// than wrong.
    async fn until_applied<F, Fut>(&self, span: &tracing::Span, what: &str, mut apply: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), FanoutError>>,
    {
        let mut backoff = Duration::from_millis(20);
        while let Err(e) = apply().instrument(span.clone()).await {
            self.stats.retries.inc();
            tracing::warn!(parent: span, error = %e, "{what} failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn apply_run_with_retry(&self, run: &[Pending], log: &dyn EventLog) {
        // A run's work continues its first event's trace; the others link to it.
        let span = tracing::info_span!(parent: &run[0].span, "fanout.posts", events = run.len());
        for p in &run[1..] {
            span.follows_from(&p.span);
        }
        let started = std::time::Instant::now();
        self.until_applied(&span, "applying posts", || self.apply_run(run, log)).await;
        self.stats.applied_run(started, run.iter().map(|p| (p.push.post, p.push.slice.is_some())));
        self.stats.events.add(run.len() as u64);
        // Once per post (its slices are the same post again), after its pushes.
        let posted: Vec<Announcement> = run
            .iter()
            .filter(|p| p.push.slice.is_none())
            .map(|p| Announcement::traced(Change::Posted { post: p.push.post, author: p.push.author }, &p.span))
            .collect();
        self.announce(&posted).await;
    }

    /// Tells the open streams (best effort: a stream that misses it catches up by reading).
    async fn announce(&self, changes: &[Announcement]) {
        if let Err(e) = self.bus.publish(changes).await {
            tracing::warn!(error = %e, changes = changes.len(), "could not announce changes to the streams");
        }
    }

    async fn apply_edges_with_retry(&self, run: &[PendingEdges]) {
        let span = tracing::info_span!(parent: &run[0].span, "fanout.edges", events = run.len());
        for e in &run[1..] {
            span.follows_from(&e.span);
        }
        let edges: Vec<(UserId, UserId)> = run.iter().flat_map(|e| e.pairs.iter().copied()).collect();
        let started = std::time::Instant::now();
        self.until_applied(&span, "reconciling edges", || self.reconcile_all(&edges)).await;
        self.stats.applied(Topic::Graph, started);
        self.stats.events.add(run.len() as u64);
        let mut readers: Vec<UserId> = edges.iter().map(|e| e.0).collect();
        readers.sort_unstable();
        readers.dedup();
        let follows: Vec<Announcement> =
            readers.into_iter().map(|reader| Announcement::new(Change::Follows { reader })).collect();
        self.announce(&follows).await;
    }

    /// Like [`Fanout::until_applied`]; a poison event is retried until it is
    /// dead-lettered.
    async fn apply_with_retry(&self, d: &Delivery, event: Event, log: &dyn EventLog) {
        let mut backoff = Duration::from_millis(20);
        loop {
            let result = match &event {
                Event::Poison(why) => {
                    tracing::error!(topic = d.topic.name(), partition = d.partition, offset = d.offset, error = %why, "dead-lettering undecodable event");
                    // Set aside before committing past it; if even that fails, retry:
                    // skipping silently would lose the event's evidence.
                    match log.dead_letter(d, why).await {
                        Ok(()) => {
                            self.stats.dead_letters.inc();
                            return;
                        }
                        Err(e) => Err(FanoutError::from(e)),
                    }
                }
                Event::Deleted { post, author } => self.post_deleted(*post, *author).await,
                Event::ClassChanged(author) => self.class_changed(*author).await,
                Event::Unknown => Ok(()),
            };
            match result {
                Ok(()) => {
                    self.stats.events.inc();
                    if let Event::Deleted { post, author } = &event {
                        let deleted = Change::Deleted { post: *post, author: *author };
                        self.announce(&[Announcement::traced(deleted, &tracing::Span::current())]).await;
                    }
                    return;
                }
                Err(e) => {
                    self.stats.retries.inc();
                    tracing::warn!(topic = d.topic.name(), offset = d.offset, error = %e, "applying event failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Calls `f` with each page of `author`'s followers.
    async fn for_each_follower_page<F, Fut>(&self, author: UserId, mut f: F) -> Result<(), FanoutError>
    where
        F: FnMut(Vec<UserId>) -> Fut,
        Fut: Future<Output = Result<(), FanoutError>>,
    {
        let page = self.settings.follower_page.max(1);
        let mut after = None;
        loop {
            let followers = self.graph.followers(author, after, page).await?;
            let done = followers.len() < page;
            after = followers.last().copied();
            if !followers.is_empty() {
                f(followers).await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Who gets `author`'s posts now. The class is read now, not taken from the event:
    /// see the crate docs on class changes.
    async fn audience(&self, author: UserId) -> Result<Audience, FanoutError> {
        let (class, muters) = futures::try_join!(self.graph.author_class(author), self.graph.muters(author))?;
        if class == AuthorClass::Celebrity {
            return Ok(Audience::Celebrity);
        }
        let mut all = Vec::new();
        self.for_each_follower_page(author, |page| {
            all.extend(page);
            async { Ok(()) }
        })
        .await?;
        Ok(Audience::Followers(without(all, &muters)))
    }

    async fn audience_of(&self, author: UserId) -> Result<(UserId, Audience), FanoutError> {
        Ok((author, self.audience(author).await?))
    }

    /// Applies a run of pushes at once (see the crate docs on runs): the created posts'
    /// audiences are looked up, long ones are published as slices, and every other push is
    /// written to the cache.
    async fn apply_run(&self, run: &[Pending], log: &dyn EventLog) -> Result<(), FanoutError> {
        let mut authors: Vec<UserId> = run.iter().filter(|p| p.push.slice.is_none()).map(|p| p.push.author).collect();
        authors.sort_unstable();
        authors.dedup();
        let lookups: Vec<_> = authors.into_iter().map(|a| self.audience_of(a)).collect();
        let audiences: HashMap<UserId, Audience> = futures::stream::iter(lookups)
            .buffer_unordered(self.settings.lookups_in_flight.max(1))
            .try_collect()
            .await?;
        let limit = self.settings.pushes_per_write.max(1);
        let mut pushes: Vec<Push<'_>> = Vec::new();
        let mut slices: Vec<Record> = Vec::new();
        let mut pending = 0;
        let (mut pushed, mut merged) = (0u64, 0u64);
        // Celebrities' posts, for their recent lists.
        let mut recent: BTreeMap<UserId, Vec<PostId>> = BTreeMap::new();
        for p in run {
            let (post, author) = (p.push.post, p.push.author);
            let entry = Entry { post, author };
            if let Some(followers) = &p.push.slice {
                pushes.push(Push { entry, owners: followers });
                pending += followers.len();
            } else {
                // The author's own timeline, then the followers'.
                pushes.push(Push { entry, owners: std::slice::from_ref(&p.push.author) });
                pending += 1;
                match &audiences[&author] {
                    Audience::Celebrity => {
                        merged += 1;
                        recent.entry(author).or_default().push(post);
                    }
                    Audience::Followers(followers) if self.splits(followers.len()) => {
                        pushed += 1;
                        slices.extend(self.slices(post, author, followers, &p.span));
                    }
                    Audience::Followers(followers) => {
                        pushed += 1;
                        pushes.push(Push { entry, owners: followers });
                        pending += followers.len();
                    }
                }
            }
            if pending >= limit {
                self.write(&pushes, pending).await?;
                pushes.clear();
                pending = 0;
            }
        }
        self.write(&pushes, pending).await?;
        for (author, posts) in &recent {
            self.model.add_recent(*author, posts).await?;
        }
        if !slices.is_empty() {
            let n = slices.len() as u64;
            log.append(slices).await?;
            self.stats.slices_published.add(n);
        }
        // Counted once the run's writes all succeeded, so a retried run counts once.
        self.stats.posts_pushed.add(pushed);
        self.stats.posts_merged_at_read.add(merged);
        for p in run {
            match &p.push.slice {
                Some(_) => self.stats.slices_applied.inc(),
                None => {
                    if let Audience::Followers(followers) = &audiences[&p.push.author] {
                        self.stats.by_followers.pushed(followers.len());
                    }
                }
            }
        }
        Ok(())
    }

    fn splits(&self, followers: usize) -> bool {
        self.settings.split_above > 0 && followers > self.settings.split_above
    }

    /// `post`'s followers as slice records, in the trace of the post's event `span`.
    fn slices(&self, post: PostId, author: UserId, followers: &[UserId], span: &tracing::Span) -> Vec<Record> {
        let chunks = followers.chunks(self.settings.slice_size.max(1));
        let slices = chunks.len() as u32;
        chunks
            .enumerate()
            .map(|(i, chunk)| {
                let event = pb::FanoutSlice {
                    event_id: starling_events::event_id(),
                    occurred_at_ms: starling_events::now_ms(),
                    post_id: post.0,
                    author_id: author.0,
                    follower_ids: chunk.iter().map(|f| f.0).collect(),
                    slice: i as u32,
                    slices,
                };
                // Consecutive keys land on different partitions (see `partition_for`).
                Record::fanout_slice(post.0.wrapping_add(i as u64), &event, span)
            })
            .collect()
    }

    async fn write(&self, pushes: &[Push<'_>], owners: usize) -> Result<(), FanoutError> {
        if pushes.is_empty() {
            return Ok(());
        }
        let delivered = self.cache.insert_all(pushes).await?;
        self.stats.inserts.add(delivered as u64);
        self.stats.skipped_inactive.add((owners - delivered) as u64);
        Ok(())
    }

    pub async fn post_deleted(&self, post: PostId, author: UserId) -> Result<(), FanoutError> {
        // The post-service caches the tombstone too, but only as best effort.
        self.model.posts_deleted(&[post]).await?;
        self.cache.remove_post(&[author], post).await?;
        self.for_each_follower_page(author, |followers| async move {
            self.cache.remove_post(&followers, post).await?;
            Ok(())
        })
        .await
    }

    /// Makes `reader`'s timeline agree with whether it follows `author` now.
    pub async fn reconcile(&self, reader: UserId, author: UserId) -> Result<(), FanoutError> {
        self.reconcile_all(&[(reader, author)]).await
    }

    /// [`Fanout::reconcile`] of many `(reader, author)` edges at once (see the crate docs
    /// on runs): the same effects, in a few round trips for the whole run.
    pub async fn reconcile_all(&self, edges: &[(UserId, UserId)]) -> Result<(), FanoutError> {
        let mut edges = edges.to_vec();
        edges.sort_unstable();
        edges.dedup();
        let states = self.graph.edges(&edges).await?;
        // By value: futures over borrowed items would not be `Send` for every lifetime.
        let with_states = || edges.iter().copied().zip(states.iter().copied());
        let in_flight = self.settings.lookups_in_flight.max(1) * 4;
        let member_updates = with_states().map(|((reader, author), state)| {
            self.model.set_member(Collection::Following(reader), author, state.follows)
        });
        futures::stream::iter(member_updates).buffer_unordered(in_flight).try_collect::<()>().await?;
        let removals = with_states()
            .filter(|(_, state)| !state.follows)
            .map(|((reader, author), _)| self.cache.remove_author(reader, author));
        futures::stream::iter(removals).buffer_unordered(in_flight).try_collect::<()>().await?;
        // Celebrities are merged at read time; their posts need no backfill.
        let mut readers: BTreeMap<UserId, Vec<UserId>> = BTreeMap::new();
        for ((reader, author), state) in with_states() {
            if state.follows && !state.celebrity {
                readers.entry(author).or_default().push(reader);
            }
        }
        if readers.is_empty() {
            return Ok(());
        }
        let authors: Vec<UserId> = readers.keys().copied().collect();
        let recent = self.posts.post_ids_by_authors(&authors, Window::newest(self.max_entries)).await?;
        let mut pushes = Vec::new();
        let mut backfilled = 0;
        for ((author, readers), posts) in readers.iter().zip(&recent) {
            backfilled += posts.len() * readers.len();
            pushes.extend(posts.iter().map(|&post| Push { entry: Entry { post, author: *author }, owners: readers }));
        }
        self.cache.insert_all(&pushes).await?;
        self.stats.backfilled.add(backfilled as u64);
        Ok(())
    }

    pub async fn class_changed(&self, author: UserId) -> Result<(), FanoutError> {
        let celebrity = self.graph.author_class(author).await? == AuthorClass::Celebrity;
        self.model.set_member(Collection::Celebrities, author, celebrity).await?;
        // Its recent list stopped following its posts while it was ordinary (or never
        // existed): the next read fills a fresh one.
        self.model.forget(Collection::Recent(author)).await?;
        if celebrity {
            // Newly a celebrity: its posts already pushed stay; new ones merge at read.
            return Ok(());
        }
        let entries = self.recent_entries(author).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let muters = self.graph.muters(author).await?;
        self.for_each_follower_page(author, |followers| {
            let entries = &entries;
            let followers = without(followers, &muters);
            async move {
                let pushes: Vec<Push<'_>> = entries.iter().map(|&entry| Push { entry, owners: &followers }).collect();
                self.cache.insert_all(&pushes).await?;
                Ok(())
            }
        })
        .await
    }

    async fn recent_entries(&self, author: UserId) -> Result<Vec<Entry>, FanoutError> {
        let posts = self.posts.post_ids_by_author(author, Window::newest(self.max_entries)).await?;
        Ok(posts.into_iter().map(|post| Entry { post, author }).collect())
    }
}

/// `followers` without the `muters` (usually none).
fn without(mut followers: Vec<UserId>, muters: &[UserId]) -> Vec<UserId> {
    if !muters.is_empty() {
        let muters: std::collections::HashSet<UserId> = muters.iter().copied().collect();
        followers.retain(|f| !muters.contains(f));
    }
    followers
}

async fn commit_with_retry(consumer: &mut dyn Consumer, batch: &[Delivery]) {
    let mut backoff = Duration::from_millis(20);
    // A commit that keeps failing only means redelivery later, which is idempotent; but
    // we do not move on without it, or lag would be misreported during drain.
    for _ in 0..20 {
        match consumer.commit_later(batch).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::error!("giving up committing offsets; the batch will be redelivered");
}

#[cfg(test)]
mod tests;
