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

use std::collections::HashSet;
use std::sync::Arc;
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
}

const RELAY_BATCH: usize = 512;

impl Publisher {
    pub fn new(outbox: Arc<dyn Outbox>, log: Arc<dyn EventLog>) -> Self {
        Publisher { outbox, log }
    }

    /// Appends `records` (just committed under outbox sequence numbers `seqs`) and acks them.
    /// Returns once the log has them durably.
    pub async fn publish(&self, records: Vec<Record>, seqs: &[u64]) -> Result<(), PublishError> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.append(records).await?;
        // A failed ack only means the relay appends a duplicate later.
        if let Err(e) = self.outbox.ack(seqs).await {
            tracing::warn!(error = %e, "outbox ack failed; the relay will republish");
        }
        Ok(())
    }

    /// Publishes everything pending now (start-up recovery). Returns how many were sent.
    pub async fn drain(&self) -> Result<usize, PublishError> {
        self.sweep(None).await
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
            self.outbox.ack(&seqs).await?;
        }
        Ok(n)
    }
}
