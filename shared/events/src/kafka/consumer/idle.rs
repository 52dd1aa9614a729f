//! Parking an idle consumer, so that it stops fetching.
//!
//! librdkafka sends the next Fetch as soon as the last one is answered and relies on the
//! broker to hold an empty one for `fetch.wait.max.ms`. A broker that answers at once
//! (noida-db, the test broker) turns an idle consumer into a busy loop: ~0.65 core in the
//! client and ~0.45 in the broker (BENCHMARKS.md). Pausing the partitions is no remedy:
//! librdkafka drops records it fetched but did not hand over when a partition is paused
//! before anything was consumed from it.
//!
//! Instead, a consumer that found nothing for [`PARK_AFTER`] (by default), with every owned partition
//! read to its end, *parks*: it commits what it stored, gives up its local assignment
//! (the group still counts it as the owner: nothing rebalances), and from then on asks
//! for the partitions' end offsets every [`PROBE_EVERY`] (one ListOffsets request) while
//! still serving the group's callbacks. As soon as a partition has a record beyond where
//! this member read, it assigns the partitions again, each at the offset it had reached
//! (or, if it had read nothing there, at the group's committed offset), so no record is
//! skipped whatever librdkafka had prefetched. A rebalance while parked assigns anew
//! through the rebalance callback, and the parked state is dropped.
//!
//! The probes start [`PROBE_EVERY`] apart and, while they find nothing, space out to
//! [`PROBE_AT_MOST`]: a consumer that just went quiet notices new records within a few
//! milliseconds, and one that stays idle costs the broker and itself a few requests a
//! second instead of two hundred. The price is up to [`PROBE_AT_MOST`] of extra latency
//! for the first record after a long quiet spell.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConsumer;
use crate::LogError;
use crate::kafka::unavailable;

/// How long polls must find nothing before the consumer parks, by default
/// ([`crate::kafka::KafkaOptions::park_after`]).
pub(in crate::kafka) const PARK_AFTER: Duration = Duration::from_millis(250);
/// How soon a consumer that just parked first asks whether records arrived; each probe
/// that finds nothing doubles the wait, up to [`PROBE_AT_MOST`].
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(5);
/// The longest wait between a parked consumer's probes.
pub(super) const PROBE_AT_MOST: Duration = Duration::from_millis(40);

/// A parked consumer's partitions.
pub(super) struct Parked {
    partitions: Vec<ParkedPartition>,
    /// The rebalance count when it parked: a rebalance since has assigned partitions anew.
    rebalances: u64,
    /// How long until the next probe (see the module docs).
    pub(super) probe_every: Duration,
}

struct ParkedPartition {
    topic: String,
    partition: i32,
    /// The next offset this member would read: a record there wakes it.
    read_to: i64,
    /// Where fetching resumes: `read_to`, or the group's committed offset (`Invalid`)
    /// where this member read nothing and the group committed nothing.
    resume: Offset,
}

impl Parked {
    /// Whether the group has rebalanced since this consumer parked.
    pub(super) fn outdated(&self, rebalances: u64) -> bool {
        self.rebalances != rebalances
    }

    /// The parked partitions, as a list like [`KafkaConsumer::assignment`]'s.
    pub(super) fn list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            tpl.add_partition(&p.topic, p.partition);
        }
        tpl
    }
}

impl KafkaConsumer {
    /// Called after a poll found nothing: parks once polls have found nothing for
    /// [`PARK_AFTER`] and every owned partition is read to its end.
    pub(super) async fn maybe_park(&mut self) {
        let Some(park_after) = self.park_after else { return };
        let idle_since = *self.idle_since.get_or_insert_with(Instant::now);
        if self.parked.is_some() || idle_since.elapsed() < park_after {
            return;
        }
        match self.park().await {
            Ok(parked) => self.parked = parked,
            Err(error) => tracing::debug!(group = %self.group, %error, "not parking: {error}"),
        }
        // Try again after another quiet spell, not on every poll.
        self.idle_since = Some(Instant::now());
    }

    async fn park(&self) -> Result<Option<Parked>, LogError> {
        let rebalances = self.rebalances();
        let positions = self.consumer.context().positions.lock().clone();
        let timeout = self.request_timeout;
        self.with_consumer(move |c| {
            let assignment = c.assignment().map_err(unavailable)?;
            if assignment.count() == 0 {
                return Ok(None);
            }
            let ends = end_offsets(c, &assignment, timeout)?;
            let committed = c.committed_offsets(assignment, timeout).map_err(unavailable)?;
            let mut partitions = Vec::with_capacity(committed.count());
            let mut waiting = false;
            let mut unknown = Vec::new();
            for e in committed.elements() {
                let key = (e.topic().to_owned(), e.partition());
                let end = ends.get(&key).copied().unwrap_or(i64::MAX);
                match (positions.get(&key), e.offset()) {
                    (Some(&p), _) | (None, Offset::Offset(p)) => {
                        waiting |= p < end;
                        let (topic, partition) = key;
                        partitions.push(ParkedPartition { topic, partition, read_to: p, resume: Offset::Offset(p) });
                    }
                    // Nothing read and nothing committed: it starts at the beginning.
                    (None, _) => unknown.push((key, end)),
                }
            }
            // librdkafka hangs destroying a consumer while a list returned by `committed`
            // is alive: drop it before `c` can be the last handle.
            drop(committed);
            for ((topic, partition), end) in unknown {
                let (low, _) = c.fetch_watermarks(&topic, partition, timeout).map_err(unavailable)?;
                waiting |= low < end;
                partitions.push(ParkedPartition { topic, partition, read_to: low, resume: Offset::Invalid });
            }
            if waiting || c.context().rebalances() != rebalances {
                return Ok(None);
            }
            // What `commit_later` stored goes to the group now, not at the next interval.
            let _ = c.commit_consumer_state(CommitMode::Sync);
            c.assign(&TopicPartitionList::new()).map_err(unavailable)?;
            tracing::debug!(partitions = partitions.len(), "consumer parked");
            Ok(Some(Parked { partitions, rebalances, probe_every: PROBE_EVERY }))
        })
        .await
    }

    /// A parked consumer's check: unparks if a rebalance assigned partitions anew or a
    /// record arrived. A failed check is tried again at the next probe.
    pub(super) async fn probe(&mut self) {
        let Some(parked) = &self.parked else { return };
        if parked.outdated(self.rebalances()) {
            self.parked = None;
            return;
        }
        let list = parked.list();
        let read_to: Vec<i64> = parked.partitions.iter().map(|p| p.read_to).collect();
        let timeout = self.request_timeout;
        let arrived = self
            .with_consumer(move |c| {
                let ends = end_offsets(c, &list, timeout)?;
                Ok(list
                    .elements()
                    .iter()
                    .zip(&read_to)
                    .any(|(e, read)| ends.get(&(e.topic().to_owned(), e.partition())).is_none_or(|end| end > read)))
            })
            .await;
        match arrived {
            Ok(false) => {
                if let Some(parked) = &mut self.parked {
                    parked.probe_every = (parked.probe_every * 2).min(PROBE_AT_MOST);
                }
            }
            Ok(true) => self.unpark().await,
            Err(error) => tracing::debug!(group = %self.group, %error, "probing parked partitions failed"),
        }
    }

    pub(super) async fn unpark(&mut self) {
        let Some(parked) = self.parked.take() else { return };
        let mut tpl = TopicPartitionList::new();
        for p in &parked.partitions {
            if let Err(error) = tpl.add_partition_offset(&p.topic, p.partition, p.resume) {
                tracing::warn!(group = %self.group, %error, "cannot resume a parked partition");
            }
        }
        let rebalances = parked.rebalances;
        let result = self
            .with_consumer(move |c| {
                // A rebalance between the probe and here has assigned partitions itself.
                if c.context().rebalances() == rebalances {
                    c.assign(&tpl).map_err(unavailable)?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                self.idle_since = None;
                tracing::debug!(group = %self.group, "consumer unparked");
            }
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "resuming parked partitions failed; retrying");
                self.parked = Some(parked);
            }
        }
    }
}

/// Each partition's end offset (the next offset a record gets), from one ListOffsets
/// request per broker.
fn end_offsets<C: rdkafka::consumer::ConsumerContext>(
    c: &impl rdkafka::consumer::Consumer<C>,
    list: &TopicPartitionList,
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, LogError> {
    let mut query = TopicPartitionList::new();
    for e in list.elements() {
        query.add_partition_offset(e.topic(), e.partition(), Offset::End).map_err(unavailable)?;
    }
    let answer = c.offsets_for_times(query, timeout).map_err(unavailable)?;
    let mut ends = HashMap::with_capacity(answer.count());
    for e in answer.elements() {
        match e.offset() {
            Offset::Offset(o) => ends.insert((e.topic().to_owned(), e.partition()), o),
            other => {
                return Err(LogError::Unavailable(format!(
                    "no end offset for {}/{}: {other:?}",
                    e.topic(),
                    e.partition()
                )));
            }
        };
    }
    Ok(ends)
}
