//! Publishing a store's outbox to the event log.
//!
//! The write path is: commit the change and its events to the store (one atomic write),
//! then [`Publisher::publish`] appends the events to the log and acks them in the outbox,
//! then the client gets its 2xx. If the append fails the client gets an error, but the
//! events stay in the outbox and the [`Publisher::run_relay`] task appends them later, so
//! a durable change never goes without its event, even across a crash.
//!
//! The relay may append an event that the write path is appending at the same moment;
//! consumers tolerate duplicates, so this costs a little work and never correctness. To
//! keep it rare, the relay only publishes entries it has seen pending on two consecutive
//! sweeps (the write path acks within milliseconds).
//!
//! Each sweep also tells how deep the outbox is ([`Publisher::depth`]), the operator's sign
//! that committed changes are not reaching the log: a stuck outbox delays every timeline
//! without failing a request.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use starling_events::{EventLog, LogError, Record};
use starling_storage::{Outbox, StoreError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Publisher {
    outbox: Arc<dyn Outbox>,
    log: Arc<dyn EventLog>,
    /// Records appended to the log, for metrics (lets a test or an operator tell when
    /// consumers have caught up with everything published).
    published: Arc<AtomicU64>,
    /// Entries pending after the last sweep, up to [`RELAY_BATCH`] (see [`Publisher::depth`]).
    depth: Arc<AtomicU64>,
}

const RELAY_BATCH: usize = 512;

impl Publisher {
    pub fn new(outbox: Arc<dyn Outbox>, log: Arc<dyn EventLog>) -> Self {
        Publisher { outbox, log, published: Arc::new(AtomicU64::new(0)), depth: Arc::new(AtomicU64::new(0)) }
    }

    /// Events in the outbox not yet acknowledged as in the log, as the last sweep found
    /// them (start-up's drain, then the relay's, every few seconds), counting no further
    /// than one sweep's batch of 512: a longer backlog reads 512 until the relay has worked
    /// it down below that. A sweep reads the pending entries anyway, so this costs no store
    /// call of its own; counting a backlog in full would read all of it on every sweep,
    /// which on ScyllaDB also means reading past every tombstone an ack left.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Records this publisher has appended to the log (duplicates by the relay included).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Appends `records` (just committed under outbox sequence numbers `seqs`) and acks them.
    /// Returns once the log has them durably.
    pub async fn publish(&self, records: Vec<Record>, seqs: &[u64]) -> Result<(), PublishError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len() as u64;
        self.log.append(records).await?;
        self.published.fetch_add(n, Ordering::Relaxed);
        // A failed ack only means the relay appends a duplicate later.
        if let Err(e) = self.outbox.ack(seqs).await {
            tracing::warn!(error = %e, "outbox ack failed; the relay will republish");
        }
        Ok(())
    }

    /// Publishes everything pending now (start-up recovery). Returns how many were sent.
    pub async fn drain(&self) -> Result<usize, PublishError> {
        let mut total = 0;
        loop {
            let n = self.sweep(None).await?;
            total += n;
            if n < RELAY_BATCH {
                return Ok(total);
            }
        }
    }

    /// Republishes stale outbox entries until `cancel`, every `every`.
    pub async fn run_relay(self, every: Duration, cancel: CancellationToken) {
        let mut seen: HashSet<u64> = HashSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let mut now_pending = HashSet::new();
            match self.sweep(Some((&seen, &mut now_pending))).await {
                Ok(0) => {}
                // A full batch of stale entries means the log was failing for a while:
                // everything pending is stale, so send it all now.
                Ok(RELAY_BATCH) => match self.drain().await {
                    Ok(n) => tracing::info!(events = n + RELAY_BATCH, "relay republished a backlog"),
                    Err(e) => tracing::warn!(error = %e, "outbox relay drain failed"),
                },
                Ok(n) => tracing::info!(events = n, "relay republished stale outbox entries"),
                Err(e) => tracing::warn!(error = %e, "outbox relay sweep failed"),
            }
            seen = now_pending;
        }
    }

    /// One pass over the outbox. With `stale`, only entries in the previous pass's set
    /// are published, and every entry seen is recorded for the next pass.
    async fn sweep(&self, mut stale: Option<(&HashSet<u64>, &mut HashSet<u64>)>) -> Result<usize, PublishError> {
        let pending = self.outbox.pending(RELAY_BATCH).await?;
        let found = pending.len();
        // All of them are still pending unless the append and ack below succeed.
        self.depth.store(found as u64, Ordering::Relaxed);
        let mut records = Vec::new();
        let mut seqs = Vec::new();
        for entry in pending {
            if let Some((previous, now)) = stale.as_mut() {
                now.insert(entry.seq);
                if !previous.contains(&entry.seq) {
                    continue;
                }
            }
            seqs.push(entry.seq);
            records.push(entry.record);
        }
        let n = records.len();
        if n > 0 {
            self.log.append(records).await?;
            self.published.fetch_add(n as u64, Ordering::Relaxed);
            self.outbox.ack(&seqs).await?;
        }
        // A full batch may hide more behind it: the depth stays at the batch until a sweep
        // (the drain's next one, at once) sees the end of the backlog.
        if found < RELAY_BATCH {
            self.depth.store((found - n) as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use starling_events::embedded::{EmbeddedLog, EmbeddedLogOptions};
    use starling_events::{Record, Topic};
    use starling_ids::{PostId, UserId};
    use starling_storage::embedded::{Durability, EmbeddedStore};
    use starling_storage::{CreatePost, PostRecord, PostStore};

    use super::*;

    fn post(id: u64) -> PostRecord {
        PostRecord {
            id: PostId(id),
            author: UserId(7),
            author_handle: "a".into(),
            text: "t".into(),
            reply_to: None,
            reblog_of: None,
        }
    }

    fn record(n: u64) -> Record {
        Record { topic: Topic::Posts, key: 7, payload: n.to_be_bytes().to_vec().into(), headers: Vec::new() }
    }

    async fn log_payloads(log: &Arc<EmbeddedLog>) -> Vec<Vec<u8>> {
        let mut consumer = log.subscribe("check", &[Topic::Posts]).await.unwrap();
        let batch = consumer.poll(10_000, Duration::from_millis(10)).await.unwrap();
        batch.into_iter().map(|d| d.payload.to_vec()).collect()
    }

    /// A crash between the store commit and the log append loses nothing: the next start
    /// drains the outbox into the log, in commit order.
    #[tokio::test]
    async fn drain_publishes_what_a_crash_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s"), Durability::Buffer).unwrap();
        let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 2, sync: false }).unwrap();
        let posts = store.posts();
        for n in 1..=600 {
            let r = posts.create_post(&post(n), None, vec![record(n)]).await.unwrap();
            assert!(matches!(r, CreatePost::Created { .. }));
        }
        let publisher = Publisher::new(posts.clone(), log.clone());
        assert_eq!(publisher.drain().await.unwrap(), 600);
        assert_eq!(publisher.drain().await.unwrap(), 0, "drained entries are acked");
        let expected: Vec<Vec<u8>> = (1..=600u64).map(|n| n.to_be_bytes().to_vec()).collect();
        assert_eq!(log_payloads(&log).await, expected);
    }

    /// A log that refuses every append, as one that is down.
    struct Down;

    #[async_trait::async_trait]
    impl EventLog for Down {
        async fn append(&self, _: Vec<Record>) -> Result<(), LogError> {
            Err(LogError::Unavailable("down for the test".into()))
        }

        async fn subscribe(&self, _: &str, _: &[Topic]) -> Result<Box<dyn starling_events::Consumer>, LogError> {
            Err(LogError::Unavailable("down for the test".into()))
        }

        async fn dead_letter(&self, _: &starling_events::Delivery, _: &str) -> Result<(), LogError> {
            Err(LogError::Unavailable("down for the test".into()))
        }
    }

    /// The depth is what a sweep left pending: everything while the log refuses appends
    /// (up to one batch), nothing once they went out.
    #[tokio::test]
    async fn depth_counts_what_the_last_sweep_left_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s"), Durability::Buffer).unwrap();
        let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
        let posts = store.posts();
        for n in 1..=3 {
            posts.create_post(&post(n), None, vec![record(n)]).await.unwrap();
        }
        let stuck = Publisher::new(posts.clone(), Arc::new(Down));
        assert!(stuck.drain().await.is_err());
        assert_eq!(stuck.depth(), 3);
        for n in 4..=RELAY_BATCH as u64 + 10 {
            posts.create_post(&post(n), None, vec![record(n)]).await.unwrap();
        }
        assert!(stuck.drain().await.is_err());
        assert_eq!(stuck.depth(), RELAY_BATCH as u64, "a backlog beyond one batch reads as one batch");
        let publisher = Publisher::new(posts.clone(), log.clone());
        assert_eq!(publisher.drain().await.unwrap(), RELAY_BATCH + 10);
        assert_eq!(publisher.depth(), 0);
    }

    /// The relay leaves fresh entries to the write path and republishes only stale ones.
    #[tokio::test]
    async fn relay_waits_for_entries_to_go_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s"), Durability::Buffer).unwrap();
        let log = EmbeddedLog::open(&dir.path().join("l"), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
        let posts = store.posts();
        posts.create_post(&post(1), None, vec![record(1)]).await.unwrap();
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(
            Publisher::new(posts.clone(), log.clone()).run_relay(Duration::from_millis(150), cancel.clone()),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(log_payloads(&log).await.is_empty(), "one sweep must not publish a fresh entry");
        // The second sweep publishes it (polling: a loaded machine may delay the sweeps).
        let mut published = Vec::new();
        for _ in 0..50 {
            published = log_payloads(&log).await;
            if !published.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(published, vec![1u64.to_be_bytes().to_vec()]);
        assert!(posts.pending(10).await.unwrap().is_empty());
        cancel.cancel();
        relay.await.unwrap();
    }
}
