//! The outbox as a time-bucketed queue table.
//!
//! A queue in a log-structured store leaves a tombstone per acknowledged entry, and a scan
//! for pending entries reads every tombstone it passes until compaction drops them. So the
//! queue is split into short partitions by commit time (`bucket = seq >> 34`, ~4 s), and a
//! scan starts at a *floor*: the oldest bucket that may still hold pending entries. Scans
//! of long-settled, emptied buckets are thereby avoided, not merely cheap.
//!
//! A bucket may receive entries late: a commit draws its seq before its batch lands, and a
//! batch whose coordinator died is replayed from the batch log later. So a floor never
//! passes buckets younger than a settling time, and there are two floors: a fast one
//! (settles after a minute, used by most scans) and a deep one (settles after an hour,
//! stored in `outbox_floor` so a restart starts there, and used by one scan every five
//! minutes and by the first scan after start-up, which is the recovery drain).
//!
//! Cost: a scan reads the tombstones of the entries acknowledged in the buckets it visits,
//! i.e. about a minute of acknowledged events (an hour on deep scans) until compaction
//! drops them after `gc_grace_seconds`. That is the price of a queue in an LSM store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use starling_events::Record;
use starling_ids::IdGenerator;
use starling_storage::{OutboxEntry, StoreError, StoreResult};

use crate::model::{RecordTuple, outbox_bucket, outbox_bucket_at, record_from_tuple, record_to_tuple};
use crate::{ScyllaError, Staged, backend, now_ms, prepare_idempotent};

/// Which queue of the `outbox` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Posts = 1,
    Graph = 2,
    /// Not events: notes of graph changes in flight, for recovery (see [`crate::graph`]).
    GraphIntents = 3,
}

const FAST_SETTLE: Duration = Duration::from_secs(60);
const DEEP_SETTLE: Duration = Duration::from_secs(3600);
const DEEP_EVERY: Duration = Duration::from_secs(300);
/// Scans look this far past the local clock, for peers whose clocks run a little ahead.
const AHEAD: Duration = Duration::from_secs(5);
/// Buckets read at once during a scan: most are empty, so latency, not volume, dominates.
const SCAN_CONCURRENCY: usize = 16;
const PAGE_SIZE: i32 = 1000;
/// Deletes per acknowledgement batch (one partition each, so UNLOGGED is atomic anyway).
const ACK_CHUNK: usize = 100;

#[derive(Debug)]
struct Floors {
    fast: i64,
    deep: i64,
    last_deep: Option<Instant>,
}

pub struct OutboxQueue {
    session: Arc<Session>,
    stream: Stream,
    seqs: Arc<IdGenerator>,
    insert: PreparedStatement,
    scan: PreparedStatement,
    delete: PreparedStatement,
    save_floor: PreparedStatement,
    floors: Mutex<Floors>,
}

impl OutboxQueue {
    pub(crate) async fn prepare(
        session: Arc<Session>,
        stream: Stream,
        seqs: Arc<IdGenerator>,
    ) -> Result<OutboxQueue, ScyllaError> {
        let s = &session;
        let insert = prepare_idempotent(
            s,
            "INSERT INTO outbox (stream, bucket, seq, topic, record_key, payload, headers) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .await?;
        let mut scan = prepare_idempotent(
            s,
            "SELECT seq, topic, record_key, payload, headers FROM outbox WHERE stream = ? AND bucket = ? LIMIT ?",
        )
        .await?;
        scan.set_page_size(PAGE_SIZE);
        let delete = prepare_idempotent(s, "DELETE FROM outbox WHERE stream = ? AND bucket = ? AND seq = ?").await?;
        let save_floor = prepare_idempotent(s, "INSERT INTO outbox_floor (stream, bucket) VALUES (?, ?)").await?;
        let load_floor = prepare_idempotent(s, "SELECT bucket FROM outbox_floor WHERE stream = ?").await?;

        let stored = s
            .execute_unpaged(&load_floor, (stream as i8,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<i64>,)>()?
            .and_then(|(b,)| b);
        let deep = match stored {
            Some(bucket) => bucket,
            None => {
                // A stream never opened before holds nothing older than now (minus the
                // clock skew a peer may have): start there and remember it.
                let bucket = outbox_bucket_at(now_ms().saturating_sub(DEEP_SETTLE.as_millis() as u64));
                s.execute_unpaged(&save_floor, (stream as i8, bucket)).await?;
                bucket
            }
        };
        Ok(OutboxQueue {
            session,
            stream,
            seqs,
            insert,
            scan,
            delete,
            save_floor,
            floors: Mutex::new(Floors { fast: deep, deep, last_deep: None }),
        })
    }

    /// Adds `events` to `batch` under fresh sequence numbers, which it returns.
    pub(crate) fn stage(&self, batch: &mut Staged, events: &[Record]) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(events.len());
        for record in events {
            // Below 2^63 for the next ~69 years of the id clock.
            let seq = self.seqs.next_raw();
            let s = seq as i64;
            let (topic, key, payload, headers) = record_to_tuple(record);
            batch.push(&self.insert, (self.stream as i8, outbox_bucket(s), s, topic, key, payload, headers));
            seqs.push(seq);
        }
        seqs
    }

    /// Pending entries, oldest first (by seq), at most `limit`.
    pub async fn pending(&self, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let (from, deep) = {
            let mut floors =
                self.floors.lock().map_err(|_| StoreError::Backend("outbox floor lock poisoned".into()))?;
            let deep = floors.last_deep.is_none_or(|t| t.elapsed() >= DEEP_EVERY);
            if deep {
                floors.last_deep = Some(Instant::now());
            }
            (if deep { floors.deep } else { floors.fast }, deep)
        };
        let to = outbox_bucket_at(now + AHEAD.as_millis() as u64);

        let mut entries = Vec::new();
        let mut first_found = None;
        let want = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut buckets =
            futures::stream::iter(from..=to).map(|bucket| self.read_bucket(bucket, want)).buffered(SCAN_CONCURRENCY);
        while let Some((bucket, found)) = buckets.try_next().await? {
            if !found.is_empty() && first_found.is_none() {
                first_found = Some(bucket);
            }
            entries.extend(found);
            if entries.len() >= limit {
                break;
            }
        }
        drop(buckets);
        entries.truncate(limit);
        self.advance_floors(now, first_found, deep).await?;
        Ok(entries)
    }

    async fn read_bucket(&self, bucket: i64, limit: i32) -> StoreResult<(i64, Vec<OutboxEntry>)> {
        let mut rows = self
            .session
            .execute_iter(self.scan.clone(), (self.stream as i8, bucket, limit))
            .await
            .map_err(backend)?
            .rows_stream::<(i64, i8, i64, bytes::Bytes, Option<Vec<(String, bytes::Bytes)>>)>()
            .map_err(backend)?;
        let mut entries = Vec::new();
        while let Some((seq, topic, key, payload, headers)) = rows.try_next().await.map_err(backend)? {
            let tuple: RecordTuple = (topic, key, payload, headers.unwrap_or_default());
            entries.push(OutboxEntry { seq: seq as u64, record: record_from_tuple(tuple)? });
        }
        Ok((bucket, entries))
    }

    /// Moves the floors up to the first bucket that held entries, but never into buckets
    /// that may still receive late entries.
    async fn advance_floors(&self, now: u64, first_found: Option<i64>, deep: bool) -> StoreResult<()> {
        let reach = first_found.unwrap_or(i64::MAX);
        let settled = |d: Duration| outbox_bucket_at(now.saturating_sub(d.as_millis() as u64));
        let save = {
            let mut floors =
                self.floors.lock().map_err(|_| StoreError::Backend("outbox floor lock poisoned".into()))?;
            floors.fast = floors.fast.max(reach.min(settled(FAST_SETTLE)));
            let mut save = None;
            if deep {
                let next = floors.deep.max(reach.min(settled(DEEP_SETTLE)));
                if next != floors.deep {
                    floors.deep = next;
                    save = Some(next);
                }
            }
            floors.fast = floors.fast.max(floors.deep);
            save
        };
        if let Some(bucket) = save {
            // Another replica may store an older floor concurrently; that costs it a longer
            // scan next time, never a missed entry.
            self.session.execute_unpaged(&self.save_floor, (self.stream as i8, bucket)).await.map_err(backend)?;
        }
        Ok(())
    }

    /// Deletes the entries; unknown seqs only leave a tombstone.
    pub async fn ack(&self, seqs: &[u64]) -> StoreResult<()> {
        let mut by_bucket: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for &seq in seqs {
            // A seq that does not fit was never handed out by this store.
            if let Ok(seq) = i64::try_from(seq) {
                by_bucket.entry(outbox_bucket(seq)).or_default().push(seq);
            }
        }
        for (bucket, seqs) in by_bucket {
            for chunk in seqs.chunks(ACK_CHUNK) {
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.set_is_idempotent(true);
                let mut values = Vec::with_capacity(chunk.len());
                for &seq in chunk {
                    batch.append_statement(self.delete.clone());
                    values.push((self.stream as i8, bucket, seq));
                }
                self.session.batch(&batch, &values).await.map_err(backend)?;
            }
        }
        Ok(())
    }
}
