//! The embedded event log: a durable, partitioned log in a fjall database on local disk,
//! for the standalone mode where no Kafka runs.
//!
//! Layout (three keyspaces in one database):
//! - `log`: `topic tag (1) | partition (u32 BE) | offset (u64 BE)` → the encoded record
//!   (key, payload, headers). Big-endian so key order is offset order.
//! - `offsets`: `group | 0x00 | topic tag | partition (u32 BE)` → the group's next offset
//!   to consume (u64 BE). A group is registered here when it subscribes, so a group that
//!   has not committed yet still holds back retention.
//! - `meta`: the partition count the log was created with (changing it would move keys
//!   to other partitions and break per-key order, so the stored value wins).
//!
//! Offsets are assigned from in-memory counters under one mutex that is held until the
//! write batch is in the journal, so offsets within a partition become visible in order
//! and a reader that stops at the published end never skips a record that lands later.
//!
//! Consumer groups live in memory: the live members of a group share the partitions
//! round-robin by join order, and every join or leave rebalances. Retention deletes the
//! records every registered group has committed.
//!
//! Ends, starts and commits are all in memory, so the lag of every group on every
//! partition is cheap to compute whenever metrics are scraped
//! ([`EmbeddedLog::consumer_lag_metric`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::Mutex;
use starling_metrics::{Pulled, Samples, names};
use tokio::sync::watch;

use crate::{Consumer, Delivery, EventLog, LogError, Record, Topic, partition_for};

/// Retention deletes in steps of at least this many records per partition, so a consumer
/// committing one record at a time does not add a tombstone write to every commit.
const RETENTION_STEP: u64 = 64;

const META_PARTITIONS: &[u8] = b"partitions";

#[derive(Clone, Debug)]
pub struct EmbeddedLogOptions {
    /// Partitions per topic. Only used when the log is created; an existing log keeps the
    /// count it was created with.
    pub partitions: u32,
    /// `false`: each append is flushed to OS buffers, which survives a process crash
    /// (SIGKILL) but not a power loss. `true`: each append is `fdatasync`ed.
    pub sync: bool,
}

impl Default for EmbeddedLogOptions {
    fn default() -> Self {
        Self { partitions: 4, sync: false }
    }
}

/// See the module docs.
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

/// Shared by the log handle and its consumers, so a consumer keeps the database open.
struct Inner {
    db: Database,
    log: Keyspace,
    offsets: Keyspace,
    /// Deliveries set aside by [`EventLog::dead_letter`], keyed by time of arrival (u128
    /// nanoseconds BE): error, then the record as it was delivered.
    dead_letters: Keyspace,
    partitions: u32,
    /// Whether appends `fdatasync`; such appends run on the blocking pool.
    sync: bool,
    /// Next offset to assign per slot (see [`Inner::slot`]). The lock is held across the
    /// batch commit so offsets are committed in order.
    next: Mutex<Vec<u64>>,
    /// Published end (exclusive) per slot: every record below it is readable.
    ends: Vec<AtomicU64>,
    /// Lowest offset retention has not deleted, per slot.
    starts: Vec<AtomicU64>,
    /// Committed offsets of every registered group, mirroring the `offsets` keyspace.
    /// The lock also serialises commits with retention.
    commits: Mutex<HashMap<String, Vec<Option<u64>>>>,
    groups: Mutex<Groups>,
    /// Bumped after every append and every rebalance; waiting consumers watch it.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Groups {
    live: HashMap<String, Group>,
    next_member: u64,
    /// Global, so a group that empties and is created again never repeats a generation.
    next_generation: u64,
}

struct Group {
    /// Live members in join order.
    members: Vec<(u64, Vec<Topic>)>,
    generation: u64,
}

type Slot = usize;

impl EmbeddedLog {
    /// Opens (or creates) the log in `path`.
    pub fn open(path: &Path, options: EmbeddedLogOptions) -> Result<Arc<EmbeddedLog>, LogError> {
        let db = Database::builder(path).open().map_err(storage)?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default).map_err(storage);
        let log = ks("log")?;
        let offsets = ks("offsets")?;
        let dead_letters = ks("dead_letter")?;
        let meta = ks("meta")?;

        let partitions = match meta.get(META_PARTITIONS).map_err(storage)? {
            Some(v) => {
                let stored = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("partition count"))?);
                if stored != options.partitions {
                    tracing::warn!(
                        configured = options.partitions,
                        stored,
                        "event log keeps the partition count it was created with"
                    );
                }
                stored
            }
            None => {
                let p = options.partitions.max(1);
                meta.insert(META_PARTITIONS, p.to_be_bytes()).map_err(storage)?;
                p
            }
        };
        let slots = Topic::ALL.len() * partitions as usize;

        let mut commits: HashMap<String, Vec<Option<u64>>> = HashMap::new();
        for guard in offsets.iter() {
            let (k, v) = guard.into_inner().map_err(storage)?;
            let Some((group, topic, partition)) = decode_offset_key(&k) else {
                return Err(corrupt("offsets key"));
            };
            if partition >= partitions {
                continue;
            }
            let value = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("offset"))?);
            let slot = slot_of(partitions, topic, partition);
            commits.entry(group.to_owned()).or_insert_with(|| vec![None; slots])[slot] = Some(value);
        }

        let mut next = vec![0u64; slots];
        let mut starts = Vec::with_capacity(slots);
        for topic in Topic::ALL {
            for partition in 0..partitions {
                let slot = slot_of(partitions, topic, partition);
                let mut iter = log.prefix(partition_prefix(topic, partition));
                let first = iter.next().map(|g| g.key().map_err(storage)).transpose()?;
                let last = iter.next_back().map(|g| g.key().map_err(storage)).transpose()?;
                let offset = |k: &[u8]| decode_log_key(k).map(|(_, _, o)| o).ok_or_else(|| corrupt("log key"));
                let first = first.as_deref().map(offset).transpose()?;
                let last = match last.as_deref() {
                    Some(k) => Some(offset(k)?),
                    None => first,
                };
                // Retention may have deleted every record of a partition; the committed
                // offsets still say how far it went, so offsets are never reused.
                let committed = commits.values().filter_map(|c| c[slot]).max().unwrap_or(0);
                let end = last.map_or(0, |l| l + 1).max(committed);
                next[slot] = end;
                starts.push(AtomicU64::new(first.unwrap_or(end)));
            }
        }
        let ends = next.iter().map(|&e| AtomicU64::new(e)).collect();

        Ok(Arc::new(EmbeddedLog {
            inner: Arc::new(Inner {
                db,
                log,
                offsets,
                dead_letters,
                partitions,
                sync: options.sync,
                next: Mutex::new(next),
                ends,
                starts,
                commits: Mutex::new(commits),
                groups: Mutex::new(Groups::default()),
                changed: watch::Sender::new(0),
            }),
        }))
    }

    /// The partition count in use (the one the log was created with).
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Records still stored (not yet removed by retention), for tests and operations.
    pub fn stored_records(&self) -> usize {
        self.inner.log.iter().count()
    }
}

impl EmbeddedLog {
    /// How many deliveries were dead-lettered (for operators and tests).
    pub fn dead_letter_count(&self) -> Result<usize, LogError> {
        self.inner.dead_letters.len().map_err(storage)
    }

    /// [`names::KAFKA_CONSUMER_LAG`], as the Kafka log reports it (by `topic`, `partition`
    /// and `group`): the records of each partition every registered group has not
    /// committed, computed when scraped. Holds the log weakly: once it is closed, nothing.
    pub fn consumer_lag_metric(&self) -> Pulled {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        Pulled::gauges(
            names::KAFKA_CONSUMER_LAG,
            "Records of a partition its consumer group has not committed.",
            &["topic", "partition", "group"],
            move || inner.upgrade().map(|i| i.lag_samples()).unwrap_or_default(),
        )
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), LogError> {
        let key = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_be_bytes();
        let mut value = Vec::with_capacity(error.len() + delivery.payload.len() + 32);
        let text = format!(
            "{error}\n{} partition {} offset {} key {}\n",
            delivery.topic.name(),
            delivery.partition,
            delivery.offset,
            delivery.key
        );
        value.extend_from_slice(&(text.len() as u32).to_be_bytes());
        value.extend_from_slice(text.as_bytes());
        value.extend_from_slice(&delivery.payload);
        self.inner.dead_letters.insert(key, value).map_err(storage)?;
        tracing::error!(topic = delivery.topic.name(), offset = delivery.offset, error, "dead-lettered a delivery");
        Ok(())
    }

    async fn append(&self, records: Vec<Record>) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let partitions = self.inner.partitions;
        let encoded = records
            .iter()
            .map(|r| Ok((slot_of(partitions, r.topic, partition_for(r.key, partitions)), encode_record(r)?)))
            .collect::<Result<Vec<_>, LogError>>()?;
        if self.inner.sync {
            // fdatasync takes milliseconds; keep it off the async workers.
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.append(encoded))
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?
        } else {
            // A buffered write is one `write` syscall: cheaper inline than a thread hop.
            self.inner.append(encoded)
        }
    }

    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>, LogError> {
        let mut topics = topics.to_vec();
        topics.sort();
        topics.dedup();
        self.inner.register(group, &topics)?;
        let member = {
            let mut groups = self.inner.groups.lock();
            let member = groups.next_member;
            groups.next_member += 1;
            groups.next_generation += 1;
            let generation = groups.next_generation;
            let g = groups.live.entry(group.to_owned()).or_insert_with(|| Group { members: Vec::new(), generation });
            g.members.push((member, topics.clone()));
            g.generation = generation;
            member
        };
        self.inner.bump();
        let slots = self.inner.slots();
        Ok(Box::new(EmbeddedConsumer {
            inner: self.inner.clone(),
            group: group.to_owned(),
            member,
            generation: None,
            assigned: Vec::new(),
            positions: vec![None; slots],
            rotate: 0,
            changed: self.inner.changed.subscribe(),
        }))
    }
}

impl Inner {
    fn slots(&self) -> usize {
        Topic::ALL.len() * self.partitions as usize
    }

    fn topic_partition(&self, slot: Slot) -> (Topic, u32) {
        let p = self.partitions as usize;
        (Topic::ALL[slot / p], (slot % p) as u32)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn append(&self, encoded: Vec<(Slot, Vec<u8>)>) -> Result<(), LogError> {
        let persist = if self.sync { PersistMode::SyncData } else { PersistMode::Buffer };
        {
            let mut next = self.next.lock();
            let mut assigned: Vec<(Slot, u64)> = Vec::new();
            // Without an explicit durability the batch may sit in a userspace buffer that
            // a SIGKILL loses.
            let mut batch = self.db.batch().durability(Some(persist));
            for (slot, value) in encoded {
                let offset = match assigned.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, n)) => {
                        *n += 1;
                        *n - 1
                    }
                    None => {
                        assigned.push((slot, next[slot] + 1));
                        next[slot]
                    }
                };
                let (topic, partition) = self.topic_partition(slot);
                batch.insert(&self.log, log_key(topic, partition, offset), value);
            }
            // Counters move only once the batch is in the journal, so a failed append
            // leaves no hole in the offsets.
            batch.commit().map_err(storage)?;
            for (slot, end) in assigned {
                next[slot] = end;
                self.ends[slot].store(end, Ordering::Release);
            }
        }
        self.bump();
        Ok(())
    }

    /// Makes `group` known for every partition of `topics`, so retention waits for it
    /// even before its first commit.
    fn register(&self, group: &str, topics: &[Topic]) -> Result<(), LogError> {
        let slots = self.slots();
        let mut commits = self.commits.lock();
        let current = commits.get(group);
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut added = Vec::new();
        for &topic in topics {
            for partition in 0..self.partitions {
                let slot = slot_of(self.partitions, topic, partition);
                if current.and_then(|c| c[slot]).is_none() {
                    // Below `start` nothing is left, so starting there is starting at 0.
                    let start = self.starts[slot].load(Ordering::Acquire);
                    batch.insert(&self.offsets, offset_key(group, topic, partition), start.to_be_bytes());
                    added.push((slot, start));
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        batch.commit().map_err(storage)?;
        let c = commits.entry(group.to_owned()).or_insert_with(|| vec![None; slots]);
        for (slot, start) in added {
            c[slot] = Some(start);
        }
        Ok(())
    }

    /// Every registered group's lag on every partition of the topics it subscribed to
    /// (as [`Consumer::lag`] counts it), for the metric.
    fn lag_samples(&self) -> Samples {
        let commits = self.commits.lock();
        let mut out = Vec::new();
        for (group, slots) in commits.iter() {
            for (slot, committed) in slots.iter().enumerate() {
                let Some(committed) = committed else { continue };
                let start = self.starts[slot].load(Ordering::Acquire);
                let lag = self.ends[slot].load(Ordering::Acquire).saturating_sub((*committed).max(start));
                let (topic, partition) = self.topic_partition(slot);
                out.push((vec![topic.name().to_owned(), partition.to_string(), group.clone()], lag as f64));
            }
        }
        out
    }

    fn committed(&self, group: &str, slot: Slot) -> u64 {
        self.commits.lock().get(group).and_then(|c| c[slot]).unwrap_or(0)
    }

    /// Moves `group`'s committed offsets forward (never back) and applies retention to the
    /// partitions that moved, all in one batch.
    fn commit(&self, group: &str, targets: &[(Slot, u64)]) -> Result<(), LogError> {
        let slots = self.slots();
        let mut commits = self.commits.lock();
        let mut updated = commits.get(group).cloned().unwrap_or_else(|| vec![None; slots]);
        // Offsets are only lost to a power cut here, which means redelivery: no need to sync.
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut moved = Vec::new();
        for &(slot, offset) in targets {
            let offset = offset.min(self.ends[slot].load(Ordering::Acquire));
            if updated[slot].is_some_and(|c| c >= offset) {
                continue;
            }
            let (topic, partition) = self.topic_partition(slot);
            batch.insert(&self.offsets, offset_key(group, topic, partition), offset.to_be_bytes());
            updated[slot] = Some(offset);
            moved.push(slot);
        }
        if moved.is_empty() {
            return Ok(());
        }
        let mut new_starts = Vec::new();
        for &slot in &moved {
            let low = commits
                .iter()
                .filter(|(g, _)| g.as_str() != group)
                .filter_map(|(_, c)| c[slot])
                .chain(updated[slot])
                .min()
                .unwrap_or(0);
            let start = self.starts[slot].load(Ordering::Acquire);
            if low >= start + RETENTION_STEP {
                let (topic, partition) = self.topic_partition(slot);
                // Offsets are dense, so the keys to delete are known without a scan.
                for offset in start..low {
                    batch.remove(&self.log, log_key(topic, partition, offset));
                }
                new_starts.push((slot, low));
            }
        }
        batch.commit().map_err(storage)?;
        commits.insert(group.to_owned(), updated);
        for (slot, start) in new_starts {
            self.starts[slot].store(start, Ordering::Release);
        }
        Ok(())
    }

    fn read(&self, slot: Slot, from: u64, max: usize, out: &mut Vec<Delivery>) -> Result<Option<u64>, LogError> {
        let end = self.ends[slot].load(Ordering::Acquire);
        if from >= end || max == 0 {
            return Ok(None);
        }
        let (topic, partition) = self.topic_partition(slot);
        let mut last = None;
        for guard in self.log.range(log_key(topic, partition, from)..log_key(topic, partition, end)).take(max) {
            let (k, v) = guard.into_inner().map_err(storage)?;
            let (_, _, offset) = decode_log_key(&k).ok_or_else(|| corrupt("log key"))?;
            let (key, payload, headers) = decode_record(&v).ok_or_else(|| corrupt("log record"))?;
            out.push(Delivery { topic, partition, offset, key, payload, headers });
            last = Some(offset);
        }
        Ok(last)
    }

    fn leave(&self, group: &str, member: u64) {
        {
            let mut groups = self.groups.lock();
            groups.next_generation += 1;
            let generation = groups.next_generation;
            if let Some(g) = groups.live.get_mut(group) {
                g.members.retain(|(m, _)| *m != member);
                g.generation = generation;
                if g.members.is_empty() {
                    groups.live.remove(group);
                }
            }
        }
        self.bump();
    }

    /// The slots `member` owns now, or `None` if the generation is still `seen`.
    fn assignment(&self, group: &str, member: u64, seen: Option<u64>) -> Option<(u64, Vec<Slot>)> {
        let groups = self.groups.lock();
        let g = groups.live.get(group)?;
        if seen == Some(g.generation) {
            return None;
        }
        // Round-robin over every (topic, partition) in order, among the members
        // subscribed to that topic, in join order.
        let mut mine = Vec::new();
        let mut turn = 0usize;
        for topic in Topic::ALL {
            let eligible: Vec<u64> = g.members.iter().filter(|(_, t)| t.contains(&topic)).map(|(m, _)| *m).collect();
            if eligible.is_empty() {
                continue;
            }
            for partition in 0..self.partitions {
                if eligible[turn % eligible.len()] == member {
                    mine.push(slot_of(self.partitions, topic, partition));
                }
                turn += 1;
            }
        }
        Some((g.generation, mine))
    }
}

/// One member of a consumer group of an [`EmbeddedLog`]. Dropping it leaves the group.
pub struct EmbeddedConsumer {
    inner: Arc<Inner>,
    group: String,
    member: u64,
    /// The group generation `assigned` was computed for.
    generation: Option<u64>,
    assigned: Vec<Slot>,
    /// Next offset to hand out per slot (only meaningful for assigned slots).
    positions: Vec<Option<u64>>,
    /// Which assigned partition reads first, so one busy partition cannot starve others.
    rotate: usize,
    changed: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    fn refresh(&mut self) {
        let Some((generation, assigned)) = self.inner.assignment(&self.group, self.member, self.generation) else {
            return;
        };
        let mut positions = vec![None; self.positions.len()];
        for &slot in &assigned {
            // A partition kept across the rebalance keeps its position, so nothing this
            // member already handed out comes again; a new one starts at the commit.
            positions[slot] = Some(self.positions[slot].unwrap_or_else(|| self.inner.committed(&self.group, slot)));
        }
        self.positions = positions;
        self.assigned = assigned;
        self.generation = Some(generation);
        tracing::debug!(group = %self.group, member = self.member, partitions = self.assigned.len(), "assigned");
    }

    fn take(&mut self, max: usize) -> Result<Vec<Delivery>, LogError> {
        let mut out = Vec::new();
        let n = self.assigned.len();
        for i in 0..n {
            let slot = self.assigned[(self.rotate + i) % n];
            let from = self.positions[slot].unwrap_or(0);
            if let Some(last) = self.inner.read(slot, from, max - out.len(), &mut out)? {
                self.positions[slot] = Some(last + 1);
            }
            if out.len() >= max {
                break;
            }
        }
        self.rotate = self.rotate.wrapping_add(1);
        Ok(out)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Marking the version seen before reading means an append that lands after
            // the read still wakes the wait below.
            self.changed.borrow_and_update();
            self.refresh();
            let out = self.take(max)?;
            if !out.is_empty() {
                return Ok(out);
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in `inner`, which this consumer keeps alive.
                Ok(Err(_)) => return Err(LogError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), LogError> {
        let partitions = self.inner.partitions;
        let mut targets: Vec<(Slot, u64)> = Vec::new();
        for d in deliveries {
            if d.partition >= partitions {
                continue;
            }
            let slot = slot_of(partitions, d.topic, d.partition);
            match targets.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, o)) => *o = (*o).max(d.offset + 1),
                None => targets.push((slot, d.offset + 1)),
            }
        }
        // A member that lost a partition may still commit what it processed: the offset
        // only moves forward, so this never hides records from the new owner's view of
        // what is unprocessed beyond that point.
        self.inner.commit(&self.group, &targets)
    }

    async fn lag(&mut self) -> Result<u64, LogError> {
        self.refresh();
        let commits = self.inner.commits.lock();
        let mine = commits.get(&self.group);
        Ok(self
            .assigned
            .iter()
            .map(|&slot| {
                let start = self.inner.starts[slot].load(Ordering::Acquire);
                let committed = mine.and_then(|c| c[slot]).unwrap_or(0).max(start);
                self.inner.ends[slot].load(Ordering::Acquire).saturating_sub(committed)
            })
            .sum())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.inner.leave(&self.group, self.member);
    }
}

fn slot_of(partitions: u32, topic: Topic, partition: u32) -> Slot {
    let t = Topic::ALL.iter().position(|&x| x == topic).unwrap_or(0);
    t * partitions as usize + partition as usize
}

fn partition_prefix(topic: Topic, partition: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = topic.tag();
    k[1..5].copy_from_slice(&partition.to_be_bytes());
    k
}

fn log_key(topic: Topic, partition: u32, offset: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&partition_prefix(topic, partition));
    k[5..].copy_from_slice(&offset.to_be_bytes());
    k
}

fn decode_log_key(k: &[u8]) -> Option<(Topic, u32, u64)> {
    if k.len() != 13 {
        return None;
    }
    Some((
        Topic::from_tag(k[0])?,
        u32::from_be_bytes(k[1..5].try_into().ok()?),
        u64::from_be_bytes(k[5..].try_into().ok()?),
    ))
}

fn offset_key(group: &str, topic: Topic, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 6);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition_prefix(topic, partition));
    k
}

/// Parsed from the end, so a group name may contain any byte.
fn decode_offset_key(k: &[u8]) -> Option<(&str, Topic, u32)> {
    let split = k.len().checked_sub(6)?;
    let (group, rest) = k.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let topic = Topic::from_tag(rest[1])?;
    let partition = u32::from_be_bytes(rest[2..].try_into().ok()?);
    Some((std::str::from_utf8(group).ok()?, topic, partition))
}

/// `key u64 | payload len u32 | payload | header count u32 | (name len u32 | name |
/// value len u32 | value)*`, all big-endian.
fn encode_record(r: &Record) -> Result<Vec<u8>, LogError> {
    let len = |n: usize| u32::try_from(n).map_err(|_| LogError::Storage("record too large".into()));
    let size = 16 + r.payload.len() + r.headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&r.key.to_be_bytes());
    out.extend_from_slice(&len(r.payload.len())?.to_be_bytes());
    out.extend_from_slice(&r.payload);
    out.extend_from_slice(&len(r.headers.len())?.to_be_bytes());
    for (name, value) in &r.headers {
        out.extend_from_slice(&len(name.len())?.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len(value.len())?.to_be_bytes());
        out.extend_from_slice(value);
    }
    Ok(out)
}

type Decoded = (u64, Bytes, Vec<(String, Bytes)>);

fn decode_record(v: &[u8]) -> Option<Decoded> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u32(&mut self) -> Option<usize> {
            Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?) as usize)
        }
        fn chunk(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()?;
            self.bytes(n)
        }
    }
    let mut r = Reader(v);
    let key = u64::from_be_bytes(r.bytes(8)?.try_into().ok()?);
    let payload = Bytes::copy_from_slice(r.chunk()?);
    let count = r.u32()?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = std::str::from_utf8(r.chunk()?).ok()?.to_owned();
        headers.push((name, Bytes::copy_from_slice(r.chunk()?)));
    }
    r.0.is_empty().then_some((key, payload, headers))
}

fn storage(e: fjall::Error) -> LogError {
    LogError::Storage(e.to_string())
}

fn corrupt(what: &str) -> LogError {
    LogError::Storage(format!("corrupt {what} in the event log"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn open(dir: &Path) -> Arc<EmbeddedLog> {
        EmbeddedLog::open(dir, EmbeddedLogOptions::default()).expect("open log")
    }

    fn rec(key: u64, n: u64) -> Record {
        Record {
            topic: Topic::Posts,
            key,
            payload: Bytes::from(n.to_be_bytes().to_vec()),
            headers: vec![("n".into(), Bytes::from(n.to_string()))],
        }
    }

    fn n_of(d: &Delivery) -> u64 {
        u64::from_be_bytes(d.payload.as_ref().try_into().expect("8-byte payload"))
    }

    async fn drain(c: &mut dyn Consumer) -> Vec<Delivery> {
        let mut all = Vec::new();
        loop {
            let got = c.poll(1000, Duration::from_millis(50)).await.expect("poll");
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }

    /// The lag metric counts, per group and partition, what the group has not committed,
    /// and ends with the log.
    #[tokio::test]
    async fn consumer_lag_metric_is_per_group_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
        log.append((0..5).map(|n| rec(7, n)).collect()).await.unwrap();
        let mut consumer = log.subscribe("g", &[Topic::Posts]).await.unwrap();
        let got = drain(consumer.as_mut()).await;
        consumer.commit(&got[..2]).await.unwrap();
        let metrics = starling_metrics::Metrics::new("test");
        metrics.register(log.consumer_lag_metric()).unwrap();
        let text = metrics.render();
        let series = |topic: &str, lag: u64| {
            format!("{}{{group=\"g\",partition=\"0\",topic=\"{topic}\"}} {lag}\n", names::KAFKA_CONSUMER_LAG)
        };
        assert!(text.contains(&series("posts.v1", 3)), "{text}");
        assert!(!text.contains("topic=\"graph.v1\""), "only the topics the group subscribed to:\n{text}");
        drop(consumer);
        drop(log);
        assert!(!metrics.render().contains(names::KAFKA_CONSUMER_LAG), "a closed log reports nothing");
    }

    #[tokio::test]
    async fn conformance_consume_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        conformance::append_then_consume_in_key_order(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_consume_in_key_order_synced() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions { partitions: 3, sync: true }).unwrap();
        conformance::append_then_consume_in_key_order(log.as_ref(), "embedded-sync").await;
    }

    #[tokio::test]
    async fn conformance_every_group_sees_every_record() {
        let dir = tempfile::tempdir().unwrap();
        conformance::every_group_sees_every_record(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_resumes_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        conformance::resumes_after_committed_offset(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_poll_times_out_and_wakes() {
        let dir = tempfile::tempdir().unwrap();
        conformance::poll_times_out_then_wakes_on_append(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_members_share_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let shared = conformance::group_members_share_partitions(log.as_ref(), "embedded").await;
        // The embedded log rebalances synchronously, so it can promise more than Kafka:
        // both members got work and no record went to both.
        assert!(!shared.first.is_empty() && !shared.second.is_empty(), "both members get partitions");
        for d in &shared.first {
            assert!(
                !shared.second.iter().any(|e| e.topic == d.topic && e.partition == d.partition),
                "a partition belongs to one live member"
            );
        }
    }

    #[tokio::test]
    async fn conformance_lag() {
        let dir = tempfile::tempdir().unwrap();
        conformance::lag_drops_to_zero_after_commit(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_commit_later() {
        let dir = tempfile::tempdir().unwrap();
        conformance::resumes_after_commit_later_and_a_clean_stop(open(dir.path()).as_ref(), "embedded").await;
    }

    #[tokio::test]
    async fn conformance_all_on_one_log() {
        // As a shared broker would be used: every test on the same log at once.
        let dir = tempfile::tempdir().unwrap();
        conformance::all(open(dir.path()).as_ref(), "shared").await;
    }

    #[tokio::test]
    async fn idle_poll_is_empty_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut c = log.subscribe("g", &Topic::ALL).await.unwrap();
        let started = std::time::Instant::now();
        assert!(c.poll(10, Duration::from_millis(100)).await.unwrap().is_empty());
        assert!(started.elapsed() >= Duration::from_millis(95));
        assert_eq!(c.lag().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn reopen_keeps_records_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path());
            let records: Vec<Record> = (0..30).map(|n| rec(n % 7, n)).collect();
            log.append(records).await.unwrap();
            let mut c = log.subscribe("g", &[Topic::Posts]).await.unwrap();
            let got = drain(c.as_mut()).await;
            assert_eq!(got.len(), 30);
            let done: Vec<Delivery> = got.iter().filter(|d| n_of(d) < 10).cloned().collect();
            c.commit(&done).await.unwrap();
            assert_eq!(c.lag().await.unwrap(), 20);
        }
        let log = open(dir.path());
        let mut c = log.subscribe("g", &[Topic::Posts]).await.unwrap();
        assert_eq!(c.lag().await.unwrap(), 20);
        let mut rest: Vec<u64> = drain(c.as_mut()).await.iter().map(n_of).collect();
        rest.sort();
        assert_eq!(rest, (10..30).collect::<Vec<_>>());

        // Offsets continue after the reopen rather than restarting.
        log.append(vec![rec(1, 99)]).await.unwrap();
        let fresh = drain(c.as_mut()).await;
        assert_eq!(fresh.len(), 1);
        let p = fresh[0].partition;
        let mut other = log.subscribe("h", &[Topic::Posts]).await.unwrap();
        let all = drain(other.as_mut()).await;
        let max_old = all.iter().filter(|d| d.partition == p && n_of(d) != 99).map(|d| d.offset).max();
        assert!(max_old.is_none_or(|m| fresh[0].offset > m));
    }

    #[tokio::test]
    async fn retention_deletes_committed_records_and_offsets_survive_it() {
        let dir = tempfile::tempdir().unwrap();
        let last_offset;
        {
            let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions { partitions: 1, sync: false }).unwrap();
            log.append((0..300).map(|n| rec(5, n)).collect()).await.unwrap();
            let mut slow = log.subscribe("slow", &[Topic::Posts]).await.unwrap();
            let mut fast = log.subscribe("fast", &[Topic::Posts]).await.unwrap();
            let got = drain(fast.as_mut()).await;
            fast.commit(&got).await.unwrap();
            // "slow" registered but never committed: nothing may go yet.
            assert_eq!(log.stored_records(), 300);
            let got = drain(slow.as_mut()).await;
            assert_eq!(got.len(), 300);
            slow.commit(&got[..200]).await.unwrap();
            assert_eq!(log.stored_records(), 100);
            slow.commit(&got).await.unwrap();
            assert_eq!(log.stored_records(), 0);
            last_offset = got.last().unwrap().offset;
        }
        // Every record is gone; the committed offsets still fix where the log ends.
        let log = open(dir.path());
        assert_eq!(log.partitions(), 1, "the stored partition count wins");
        log.append(vec![rec(5, 300)]).await.unwrap();
        let mut c = log.subscribe("fast", &[Topic::Posts]).await.unwrap();
        let got = drain(c.as_mut()).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, last_offset + 1);
        assert_eq!(n_of(&got[0]), 300);
        // A new group starts at the beginning of what is left.
        let mut new = log.subscribe("new", &[Topic::Posts]).await.unwrap();
        assert_eq!(new.lag().await.unwrap(), 1);
        assert_eq!(drain(new.as_mut()).await.len(), 1);
    }

    #[tokio::test]
    async fn a_departing_member_hands_its_partitions_over() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut a = log.subscribe("g", &[Topic::Posts]).await.unwrap();
        let mut b = log.subscribe("g", &[Topic::Posts]).await.unwrap();
        log.append((0..40).map(|n| rec(n, n)).collect()).await.unwrap();
        let from_a = drain(a.as_mut()).await;
        let from_b = drain(b.as_mut()).await;
        assert_eq!(from_a.len() + from_b.len(), 40);
        a.commit(&from_a).await.unwrap();
        drop(b);
        // b committed nothing: a now gets b's records again, and only those.
        let mut again: Vec<u64> = drain(a.as_mut()).await.iter().map(n_of).collect();
        let mut expected: Vec<u64> = from_b.iter().map(n_of).collect();
        again.sort();
        expected.sort();
        assert_eq!(again, expected);
    }

    /// Run by `records_survive_a_crash` in a child process: appends, then aborts without
    /// running any destructor.
    #[tokio::test]
    #[ignore = "helper for records_survive_a_crash"]
    async fn crash_child() {
        let Ok(dir) = std::env::var("STARLING_EVENTS_CRASH_DIR") else { return };
        let log = open(Path::new(&dir));
        for n in 0..10 {
            log.append(vec![rec(n, n)]).await.unwrap();
        }
        std::process::abort();
    }

    #[test]
    fn records_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "embedded::tests::crash_child", "--ignored", "--nocapture"])
            .env("STARLING_EVENTS_CRASH_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let log = open(dir.path());
            let mut c = log.subscribe("g", &[Topic::Posts]).await.unwrap();
            let mut got: Vec<u64> = drain(c.as_mut()).await.iter().map(n_of).collect();
            got.sort();
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        });
    }

    #[test]
    fn record_encoding_round_trips() {
        let r = Record {
            topic: Topic::Graph,
            key: u64::MAX,
            payload: Bytes::from_static(b"\x00payload"),
            headers: vec![("traceparent".into(), Bytes::from_static(b"00-ab")), (String::new(), Bytes::new())],
        };
        let (key, payload, headers) = decode_record(&encode_record(&r).unwrap()).unwrap();
        assert_eq!((key, payload, headers), (r.key, r.payload, r.headers));
        assert!(decode_record(b"short").is_none());
        assert_eq!(decode_offset_key(&offset_key("a\0b", Topic::Graph, 7)), Some(("a\0b", Topic::Graph, 7)));
    }
}
