//! fanout-worker: keeps materialised home timelines up to date.
//!
//! It consumes `posts.v1` and `graph.v1` and writes only to the timeline cache:
//!
//! | event | effect |
//! |---|---|
//! | post created | push to the author's own timeline; if the author is ordinary, to every follower that has a timeline (active readers) |
//! | post deleted | remove from the author's and followers' timelines (reads also drop deleted posts) |
//! | follow / unfollow / block | *reconcile* the edge: if the follow exists now, backfill the author's recent posts; if not, remove the author's entries |
//! | author class changed | if the author is ordinary now, backfill its recent posts to its followers (posts made while it was a celebrity were never pushed) |
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
//! Offsets are committed only after the cache writes succeeded (at-least-once; every
//! effect is idempotent). A transient failure is retried with backoff and holds its
//! partition; an undecodable event is logged, counted as dead-lettered and skipped, so it
//! never blocks a partition.

mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use prost::Message;
use starling_clients::{ClientError, GraphClient, PostClient};
use starling_events::{Consumer, Delivery, EventLog, LogError, Topic, pb};
use starling_ids::{PostId, UserId};
use starling_storage::{AuthorClass, Window};
use starling_timeline_cache::{CacheError, Entry, TimelineCache};
use tokio_util::sync::CancellationToken;

pub use stats::FanoutStats;

pub const CONSUMER_GROUP: &str = "fanout-worker";

#[derive(Clone, Debug, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutSettings {
    /// Consumers in this process (each owns a share of the partitions).
    pub consumers: usize,
    /// Followers fetched and written per cache call.
    pub follower_page: usize,
    /// Deliveries taken per poll.
    pub batch: usize,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings { consumers: 2, follower_page: 2_000, batch: 256 }
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
    /// The cache's cap per timeline; backfills insert this many posts (see crate docs).
    pub max_entries: usize,
    pub settings: FanoutSettings,
    pub stats: Arc<FanoutStats>,
}

/// Whether a delivery could be applied.
enum Applied {
    Done,
    /// Not decodable: it can never succeed, so it is dead-lettered.
    Poison(String),
}

impl Fanout {
    /// Runs `settings.consumers` consumers until `shutdown`, then drains: each consumer
    /// keeps going until its partitions have nothing left, so a graceful stop leaves no
    /// accepted event unapplied.
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
        loop {
            // Lag costs a round trip to a broker: read it when idle, or twice a second.
            if lag_read.elapsed() > Duration::from_millis(500) {
                self.record_lag(index, consumer.as_mut()).await;
                lag_read = std::time::Instant::now();
            }
            let draining = shutdown.is_cancelled();
            let wait = if draining { Duration::from_millis(50) } else { Duration::from_millis(200) };
            let batch = match consumer.poll(self.settings.batch, wait).await {
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
                continue;
            }
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

    /// Applies a batch: partitions in parallel, each partition in order.
    async fn apply_batch(&self, batch: &[Delivery], log: &dyn EventLog) {
        let mut by_partition: BTreeMap<(Topic, u32), Vec<&Delivery>> = BTreeMap::new();
        for d in batch {
            by_partition.entry((d.topic, d.partition)).or_default().push(d);
        }
        join_all(by_partition.into_values().map(|deliveries| async move {
            for d in deliveries {
                self.apply_with_retry(d, log).await;
            }
        }))
        .await;
    }

    /// Retries transient failures forever (with backoff): skipping would lose the effect,
    /// and the partition is better held than wrong.
    async fn apply_with_retry(&self, d: &Delivery, log: &dyn EventLog) {
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.apply(d).await {
                Ok(Applied::Done) => {
                    self.stats.events.inc();
                    return;
                }
                Ok(Applied::Poison(why)) => {
                    tracing::error!(topic = d.topic.name(), partition = d.partition, offset = d.offset, error = %why, "dead-lettering undecodable event");
                    // Set aside before committing past it; if even that fails, retry:
                    // skipping silently would lose the event's evidence.
                    match log.dead_letter(d, &why).await {
                        Ok(()) => {
                            self.stats.dead_letters.inc();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "dead-lettering failed; retrying"),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
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

    async fn apply(&self, d: &Delivery) -> Result<Applied, FanoutError> {
        match d.topic {
            Topic::Posts => {
                let event = match pb::PostEvent::decode(d.payload.as_ref()) {
                    Ok(e) => e,
                    Err(e) => return Ok(Applied::Poison(e.to_string())),
                };
                match event.kind {
                    Some(pb::post_event::Kind::Created(c)) => {
                        self.post_created(PostId(c.post_id), UserId(c.author_id)).await?
                    }
                    Some(pb::post_event::Kind::Deleted(c)) => {
                        self.post_deleted(PostId(c.post_id), UserId(c.author_id)).await?
                    }
                    // A kind this version does not know: newer producers may add some.
                    None => {}
                }
            }
            Topic::Graph => {
                let event = match pb::GraphEvent::decode(d.payload.as_ref()) {
                    Ok(e) => e,
                    Err(e) => return Ok(Applied::Poison(e.to_string())),
                };
                use pb::graph_event::Kind;
                match event.kind {
                    Some(Kind::Followed(e)) => self.reconcile(UserId(e.follower_id), UserId(e.followee_id)).await?,
                    Some(Kind::Unfollowed(e)) => self.reconcile(UserId(e.follower_id), UserId(e.followee_id)).await?,
                    Some(Kind::Blocked(e)) => {
                        self.reconcile(UserId(e.blocker_id), UserId(e.blocked_id)).await?;
                        self.reconcile(UserId(e.blocked_id), UserId(e.blocker_id)).await?;
                    }
                    Some(Kind::AuthorClassChanged(e)) => self.class_changed(UserId(e.author_id)).await?,
                    None => {}
                }
            }
        }
        Ok(Applied::Done)
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

    pub async fn post_created(&self, post: PostId, author: UserId) -> Result<(), FanoutError> {
        let entry = Entry { post, author };
        // Read the class now, not from the event: see the crate docs on class changes.
        if self.graph.author_class(author).await? == AuthorClass::Celebrity {
            self.stats.posts_merged_at_read.inc();
            let own = self.cache.insert(&[author], entry).await?;
            self.stats.inserts.add(own as u64);
            return Ok(());
        }
        self.stats.posts_pushed.inc();
        // The author's own timeline rides along with the first page: one round trip fewer.
        let mut own = Some(author);
        self.for_each_follower_page(author, |mut followers| {
            let own = own.take();
            async move {
                followers.extend(own);
                let n = self.cache.insert(&followers, entry).await?;
                self.stats.inserts.add(n as u64);
                self.stats.skipped_inactive.add((followers.len() - n) as u64);
                Ok(())
            }
        })
        .await?;
        // No followers at all: the page callback never ran.
        if let Some(author) = own {
            let n = self.cache.insert(&[author], entry).await?;
            self.stats.inserts.add(n as u64);
        }
        Ok(())
    }

    pub async fn post_deleted(&self, post: PostId, author: UserId) -> Result<(), FanoutError> {
        self.cache.remove_post(&[author], post).await?;
        self.for_each_follower_page(author, |followers| async move {
            self.cache.remove_post(&followers, post).await?;
            Ok(())
        })
        .await
    }

    /// Makes `reader`'s timeline agree with whether it follows `author` now.
    pub async fn reconcile(&self, reader: UserId, author: UserId) -> Result<(), FanoutError> {
        if !self.graph.follows(reader, author).await? {
            self.cache.remove_author(reader, author).await?;
            return Ok(());
        }
        // Celebrities are merged at read time; their posts need no backfill.
        if self.graph.author_class(author).await? == AuthorClass::Celebrity {
            return Ok(());
        }
        let entries = self.recent_entries(author).await?;
        self.cache.insert_many(reader, &entries).await?;
        self.stats.backfilled.add(entries.len() as u64);
        Ok(())
    }

    pub async fn class_changed(&self, author: UserId) -> Result<(), FanoutError> {
        if self.graph.author_class(author).await? == AuthorClass::Celebrity {
            // Newly a celebrity: its posts already pushed stay; new ones merge at read.
            return Ok(());
        }
        let entries = self.recent_entries(author).await?;
        if entries.is_empty() {
            return Ok(());
        }
        self.for_each_follower_page(author, |followers| {
            let entries = &entries;
            async move {
                for follower in followers {
                    self.cache.insert_many(follower, entries).await?;
                }
                Ok(())
            }
        })
        .await
    }

    async fn recent_entries(&self, author: UserId) -> Result<Vec<Entry>, FanoutError> {
        let posts = self.posts.posts_by_author(author, Window::newest(self.max_entries)).await?;
        Ok(posts.into_iter().map(|p| Entry { post: p.id, author }).collect())
    }
}

async fn commit_with_retry(consumer: &mut dyn Consumer, batch: &[Delivery]) {
    let mut backoff = Duration::from_millis(20);
    // A commit that keeps failing only means redelivery later, which is idempotent; but
    // we do not move on without it, or lag would be misreported during drain.
    for _ in 0..20 {
        match consumer.commit(batch).await {
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
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use starling_clients::local::{LocalGraph, LocalPosts};
    use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
    use starling_events::{EventLog, Record, Topic, pb};
    use starling_ids::{PostId, UserId};
    use starling_storage::embedded::{Durability, EmbeddedStore};
    use starling_storage::{GraphStore, PostRecord, PostStore, UserRecord};
    use starling_timeline_cache::memory::{MemoryCache, MemoryCacheOptions};
    use starling_timeline_cache::{Range, TimelineCache};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// An undecodable event is set aside in the dead-letter store and the events behind it
    /// in the same partition are still applied.
    #[tokio::test]
    async fn poison_events_are_dead_lettered_and_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s"), Durability::Buffer).unwrap();
        let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
        let cache = Arc::new(MemoryCache::new(MemoryCacheOptions::default()));
        let (author, reader) = (UserId(10), UserId(11));
        let graph = store.graph();
        for (id, h) in [(author, "a"), (reader, "r")] {
            graph.create_user(&UserRecord { id, handle: h.into() }).await.unwrap();
        }
        graph.follow(reader, author, Vec::new()).await.unwrap();
        assert!(cache.begin_rebuild(reader).await.unwrap());
        cache.finish_rebuild(reader, &[], true).await.unwrap();
        let post = PostRecord { id: PostId(99), author, author_handle: "a".into(), text: "t".into(), reply_to: None };
        store.posts().create_post(&post, None, Vec::new()).await.unwrap();

        let poison = Record {
            topic: Topic::Posts,
            key: author.get(),
            payload: vec![0xff, 0xff, 0xff].into(),
            headers: Vec::new(),
        };
        let created = pb::PostEvent {
            event_id: String::new(),
            occurred_at_ms: 0,
            kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
                post_id: 99,
                author_id: author.get(),
                reply_to: None,
            })),
        };
        log.append(vec![poison, Record::post(author.get(), &created)]).await.unwrap();

        let stats = Arc::new(FanoutStats::default());
        let fanout = Arc::new(Fanout {
            graph: Arc::new(LocalGraph(graph)),
            posts: Arc::new(LocalPosts(store.posts())),
            cache: cache.clone(),
            max_entries: 800,
            settings: FanoutSettings::default(),
            stats: stats.clone(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(fanout.run(log.clone(), stop.clone()));
        for _ in 0..200 {
            if stats.events.get() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(stats.dead_letters.get(), 1);
        assert_eq!(log.dead_letter_count().unwrap(), 1);
        let range = Range { before: None, after: None, limit: 10, oldest_first: false };
        let slice = cache.read(reader, range).await.unwrap().unwrap();
        assert_eq!(slice.entries.iter().map(|e| e.post).collect::<Vec<_>>(), vec![PostId(99)]);
    }
}
