//! The consuming side of [`KafkaLog`]: [`KafkaConsumer`], one member of a consumer group,
//! with its commits, its lag and its parking when idle, and the librdkafka context that
//! tracks its rebalances.

use super::*;

mod idle;

pub(super) use idle::PARK_AFTER;

impl KafkaLog {
    /// [`EventLog::subscribe`] without the box, for callers that want
    /// [`KafkaConsumer::assignment`]. Call it inside a Tokio runtime: the consumer starts a
    /// small task there.
    pub fn consumer(&self, group: &str, topics: &[Topic]) -> Result<KafkaConsumer, LogError> {
        let group_id = format!("{}{group}", self.options.topic_prefix);
        let context = ConsumerLogContext {
            group: group_id.clone(),
            rebalances: AtomicU64::new(0),
            positions: Default::default(),
            revoked: Default::default(),
        };
        let mut config = client_config(&self.options);
        if let Some(instance) = &self.options.instance_id {
            let n = self.consumers_created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            config.set("group.instance.id", format!("{instance}-{group}-{n}"));
        }
        config
            .set("group.id", &group_id)
            // Offsets move only through `commit` and `commit_later`, after the caller's
            // side effects: the auto-commit sends only offsets stored by `commit_later`.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", millis(self.options.commit_interval))
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning, as the trait promises.
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", millis(self.options.session_timeout))
            .set("heartbeat.interval.ms", millis((self.options.session_timeout / 3).min(Duration::from_secs(3))));
        for (key, value) in &self.options.consumer_config {
            config.set(key, value);
        }
        let consumer: StreamConsumer<ConsumerLogContext> = config.create_with_context(context).map_err(unavailable)?;
        let lag_id = self.lags.next.fetch_add(1, Ordering::Relaxed);
        let mut names: Vec<&str> = topics.iter().map(|&t| self.topic_name(t)).collect();
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            consumer.subscribe(&names).map_err(unavailable)?;
        }
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            topics: self.topics.clone(),
            group: group_id,
            committed: HashMap::new(),
            rebalances_seen: 0,
            request_timeout: self.options.request_timeout,
            parked: None,
            idle_since: None,
            park_after: self.options.park_after,
            lags: self.lags.clone(),
            lag_id,
        })
    }
}

/// One member of a consumer group. Dropping it leaves the group (librdkafka's consumer
/// close, which blocks the dropping thread briefly), so the others take its partitions
/// over at once rather than after the session timeout.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<ConsumerLogContext>>,
    topics: [String; Topic::ALL.len()],
    group: String,
    /// Highest offset (next to read) known committed per partition: what this member
    /// committed or stored for the auto-commit, or what the group had when the partition
    /// was assigned. A commit below it is skipped, so an old delivery never moves the
    /// group back.
    committed: HashMap<(Topic, i32), i64>,
    /// The rebalance count `committed` is valid for; after a rebalance another member may
    /// have committed further, so the map is rebuilt from the broker.
    rebalances_seen: u64,
    request_timeout: Duration,
    /// Set while the consumer is parked (see [`idle`]).
    parked: Option<idle::Parked>,
    /// Since when polls have found nothing.
    idle_since: Option<std::time::Instant>,
    park_after: Option<Duration>,
    /// Where [`Consumer::lag`] leaves its reading for the metric, under `lag_id`.
    lags: Arc<ConsumerLags>,
    lag_id: u64,
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // A consumer that left reports nothing: its partitions are its successors' now.
        self.lags.readings.lock().remove(&self.lag_id);
    }
}

impl KafkaConsumer {
    /// The partitions this member owns right now. Changes only while it polls (librdkafka
    /// applies rebalances then); empty until it has joined the group.
    pub fn assignment(&self) -> Result<Vec<(Topic, u32)>, LogError> {
        let tpl = self.owned()?;
        let mut out: Vec<(Topic, u32)> =
            tpl.elements().iter().filter_map(|e| Some((self.topic_of(e.topic())?, e.partition() as u32))).collect();
        out.sort_unstable();
        Ok(out)
    }

    fn topic_of(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().zip(&self.topics).find(|(_, n)| n.as_str() == name).map(|(t, _)| t)
    }

    fn delivery(&self, message: &BorrowedMessage<'_>) -> Option<Delivery> {
        let Some(topic) = self.topic_of(message.topic()) else {
            tracing::warn!(topic = message.topic(), "message from a topic this consumer does not know");
            return None;
        };
        let key = match message.key().map(<[u8; 8]>::try_from) {
            Some(Ok(bytes)) => u64::from_be_bytes(bytes),
            _ => {
                // Not written by us; hand it over anyway so the consumer can dead-letter
                // it rather than have it silently skipped.
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "message key is not 8 bytes; delivering it with key 0"
                );
                0
            }
        };
        // rdkafka panics on a header name that is not UTF-8 (which another producer could
        // write). Crashing here would crash the consumer again on every restart and block
        // the partition, so such a record is delivered without its headers instead.
        let headers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default()
        }))
        .unwrap_or_else(|_| {
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "message headers are not readable; delivering it without them"
            );
            Vec::new()
        });
        Some(Delivery {
            topic,
            partition: message.partition() as u32,
            offset: message.offset() as u64,
            key,
            payload: message.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            headers,
        })
    }

    /// Records how far this member handed out each partition (see
    /// [`ConsumerLogContext::rebalance`]).
    fn advance(&self, deliveries: &[Delivery]) {
        let mut next: HashMap<(Topic, i32), i64> = HashMap::new();
        for d in deliveries {
            let n = next.entry((d.topic, d.partition as i32)).or_default();
            *n = (*n).max(d.offset as i64 + 1);
        }
        let mut positions = self.consumer.context().positions.lock();
        for ((topic, partition), offset) in next {
            let p = positions.entry((self.topics[topic_index(topic)].clone(), partition)).or_default();
            *p = (*p).max(offset);
        }
    }

    /// Whether the consumer is parked (see [`idle`]): idle, not fetching.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// The partitions this member owns: its assignment, or what it parked.
    fn owned(&self) -> Result<TopicPartitionList, LogError> {
        match &self.parked {
            Some(parked) => Ok(parked.list()),
            None => self.consumer.assignment().map_err(unavailable),
        }
    }

    fn rebalances(&self) -> u64 {
        self.consumer.context().rebalances()
    }

    /// Forgets what `committed` knew if the group rebalanced since it was filled.
    fn check_rebalances(&mut self) {
        let now = self.rebalances();
        if now != self.rebalances_seen {
            self.committed.clear();
            self.rebalances_seen = now;
        }
    }

    /// Runs a blocking librdkafka call on the blocking pool.
    async fn with_consumer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StreamConsumer<ConsumerLogContext>) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let consumer = self.consumer.clone();
        blocking(move || f(&consumer)).await
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while out.is_empty() {
            // Parked, it still polls (the group's callbacks run there) but wakes to probe.
            let wake = match &self.parked {
                Some(parked) => deadline.min(tokio::time::Instant::now() + parked.probe_every),
                None => deadline,
            };
            match tokio::time::timeout_at(wake, self.consumer.recv()).await {
                Err(_) if wake < deadline => self.probe().await,
                Err(_) => {
                    self.maybe_park().await;
                    return Ok(out);
                }
                Ok(Ok(message)) if self.parked.as_ref().is_some_and(|p| !p.outdated(self.rebalances())) => {
                    // Fetched before parking and handed over late (librdkafka normally drops
                    // such records): resuming reads it again from where this member was.
                    drop(message);
                    self.unpark().await;
                }
                Ok(Ok(message)) => out.extend(self.delivery(&message)),
                Ok(Err(e)) => consume_error(&self.group, e)?,
            }
        }
        // Records come only from assigned partitions: a rebalance ended any parking.
        self.parked = None;
        self.idle_since = None;
        // Then whatever arrives within a short linger. Taking only what `recv` has ready
        // right now yields batches of one (the stream hands messages over through its
        // own task), and every batch costs the caller a synchronous commit.
        while out.len() < max {
            match tokio::time::timeout(BATCH_LINGER, self.consumer.recv()).await {
                Ok(Ok(message)) => out.extend(self.delivery(&message)),
                Ok(Err(e)) => {
                    consume_error(&self.group, e)?;
                    break;
                }
                Err(_) => break,
            }
        }
        self.advance(&out);
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(group = %self.group, deliveries = deliveries.len()))]
    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), LogError> {
        let Some((tpl, moved)) = self.offsets_to_commit(deliveries).await? else { return Ok(()) };
        // Stored too, so the auto-commit never sends an older stored offset after this.
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::debug!(group = %self.group, error = %e, "storing committed offsets failed");
        }
        let group = self.group.clone();
        let result = self.with_consumer(move |c| Ok(c.commit(&tpl, CommitMode::Sync))).await?;
        match result {
            Ok(()) => {}
            // Nothing was left to commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => return Ok(()),
            // The group is rebalancing or moved on without us: the commit is lost and the
            // records come again to whoever owns their partitions. That is redelivery,
            // which consumers tolerate, not a failure of the caller's work.
            Err(e) if lost_to_rebalance(&e) => {
                tracing::warn!(%group, error = %e, "commit lost to a rebalance; the records will be redelivered");
                return Ok(());
            }
            Err(e) => return Err(unavailable(e)),
        }
        self.mark_committed(moved);
        Ok(())
    }

    async fn commit_later(&mut self, deliveries: &[Delivery]) -> Result<(), LogError> {
        let Some((tpl, moved)) = self.offsets_to_commit(deliveries).await? else { return Ok(()) };
        // A local call: librdkafka keeps the offsets for its next auto-commit.
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {}
            // A partition revoked since the check above: its new owner reads the records again.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State) || lost_to_rebalance(&e) => {
                tracing::warn!(group = %self.group, error = %e, "offsets not stored: partitions revoked; the records will be redelivered");
                return Ok(());
            }
            Err(e) => return Err(unavailable(e)),
        }
        self.mark_committed(moved);
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64, LogError> {
        self.check_rebalances();
        let timeout = self.request_timeout;
        let owned = self.owned()?;
        let rows = self
            .with_consumer(move |c| {
                let committed = c.committed_offsets(owned, timeout).map_err(unavailable)?;
                let mut rows = Vec::with_capacity(committed.count());
                for e in committed.elements() {
                    let (low, high) = c.fetch_watermarks(e.topic(), e.partition(), timeout).map_err(unavailable)?;
                    let committed = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    rows.push((e.topic().to_owned(), e.partition(), committed, low, high));
                }
                // librdkafka hangs destroying a consumer while a list returned by
                // `committed` is alive: drop it here, before `c` can be the last handle.
                drop(committed);
                Ok(rows)
            })
            .await?;
        let mut lag = 0u64;
        let mut partitions = Vec::with_capacity(rows.len());
        for (name, partition, committed, low, high) in rows {
            let mine = self.topic_of(&name).and_then(|t| self.committed.get(&(t, partition)).copied());
            // No commit yet: the group starts at the earliest record still stored.
            let from = committed.into_iter().chain(mine).max().unwrap_or(low).max(low);
            let behind = (high - from).max(0) as u64;
            lag += behind;
            partitions.push((name, partition, behind));
        }
        self.lags.readings.lock().insert(self.lag_id, (self.group.clone(), partitions));
        Ok(lag)
    }
}

impl KafkaConsumer {
    /// The offsets (next to read) that `deliveries` move forward, as a list ready to
    /// commit or store, and the same as pairs for [`KafkaConsumer::mark_committed`].
    /// `None` if nothing moves: partitions no longer assigned to this member are left to
    /// their new owner (our commit could only move them back or race theirs; their records
    /// are redelivered), and a partition is never moved below what is known committed.
    async fn offsets_to_commit(
        &mut self,
        deliveries: &[Delivery],
    ) -> Result<Option<(TopicPartitionList, Vec<((Topic, i32), i64)>)>, LogError> {
        let mut targets: HashMap<(Topic, i32), i64> = HashMap::new();
        for d in deliveries {
            let next = d.offset as i64 + 1;
            let t = targets.entry((d.topic, d.partition as i32)).or_insert(next);
            *t = (*t).max(next);
        }
        if targets.is_empty() {
            return Ok(None);
        }
        self.check_rebalances();

        let assignment = self.owned()?;
        let assigned = |topic: Topic, partition: i32| {
            assignment.find_partition(&self.topics[topic_index(topic)], partition).is_some()
        };
        targets.retain(|&(topic, partition), _| {
            let mine = assigned(topic, partition);
            if !mine {
                tracing::debug!(topic = topic.name(), partition, "not committing a partition no longer assigned");
            }
            mine
        });
        drop(assignment);

        // What the group had committed for partitions this member has not committed to
        // since its last rebalance, so it never moves them back either.
        let unknown: Vec<(Topic, i32)> = targets.keys().filter(|k| !self.committed.contains_key(k)).copied().collect();
        if !unknown.is_empty() {
            for (k, offset) in self.fetch_committed(unknown).await? {
                self.committed.insert(k, offset.unwrap_or(-1));
            }
        }

        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (&(topic, partition), &offset) in &targets {
            if self.committed.get(&(topic, partition)).is_some_and(|&c| c >= offset) {
                continue;
            }
            tpl.add_partition_offset(&self.topics[topic_index(topic)], partition, Offset::Offset(offset))
                .map_err(unavailable)?;
            moved.push(((topic, partition), offset));
        }
        Ok((!moved.is_empty()).then_some((tpl, moved)))
    }

    fn mark_committed(&mut self, moved: Vec<((Topic, i32), i64)>) {
        for (k, offset) in moved {
            let c = self.committed.entry(k).or_insert(offset);
            *c = (*c).max(offset);
        }
    }

    /// The group's committed offsets for `partitions` (`None`: nothing committed).
    async fn fetch_committed(
        &self,
        partitions: Vec<(Topic, i32)>,
    ) -> Result<Vec<((Topic, i32), Option<i64>)>, LogError> {
        let timeout = self.request_timeout;
        let topics = self.topics.clone();
        self.with_consumer(move |c| {
            let mut tpl = TopicPartitionList::new();
            for &(topic, partition) in &partitions {
                tpl.add_partition(&topics[topic_index(topic)], partition);
            }
            let committed = c.committed_offsets(tpl, timeout).map_err(unavailable)?;
            let out = partitions
                .iter()
                .map(|&(topic, partition)| {
                    let offset = committed.find_partition(&topics[topic_index(topic)], partition).and_then(|e| match e
                        .offset()
                    {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                    ((topic, partition), offset)
                })
                .collect();
            // See `lag`: never outlive the call.
            drop(committed);
            Ok(out)
        })
        .await
    }
}

/// [`LogContext`] for consumers, counting rebalances (see [`KafkaConsumer::committed`]).
struct ConsumerLogContext {
    group: String,
    rebalances: AtomicU64,
    /// Next offset to hand out per owned partition (full topic name, partition), advanced
    /// by `poll`. See [`ConsumerLogContext::rebalance`].
    positions: parking_lot::Mutex<HashMap<(String, i32), i64>>,
    /// What the last revoke gave up (unless the assignment was lost), so the next assign
    /// can tell which partitions this member kept.
    revoked: parking_lot::Mutex<HashSet<(String, i32)>>,
}

impl ConsumerLogContext {
    /// How many rebalances this consumer has been through.
    fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }
}

impl ClientContext for ConsumerLogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "rdkafka", group = %self.group, %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for ConsumerLogContext {
    /// librdkafka's eager rebalance, except that a partition this member keeps resumes where
    /// it was rather than at the group's committed offset.
    ///
    /// Every eager rebalance revokes all partitions and assigns a new set; by default a
    /// partition that comes straight back is read again from the committed offset, so the
    /// same member would see its uncommitted records twice, possibly after later ones (the
    /// trait promises it never does). Between one generation's revoke and the next one's
    /// assign nobody else can have owned a kept partition, so its position is still right.
    /// A partition that moved, or an assignment lost to a session timeout, starts at the
    /// committed offset as usual.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.rebalances.fetch_add(1, Ordering::AcqRel);
        let group = &self.group;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let revoked = std::mem::take(&mut *self.revoked.lock());
                let kept: Vec<((String, i32), i64)> = {
                    let mut positions = self.positions.lock();
                    let assigned: HashSet<(String, i32)> =
                        tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                    positions.retain(|k, _| assigned.contains(k) && revoked.contains(k));
                    positions.iter().map(|(k, &o)| (k.clone(), o)).collect()
                };
                for ((topic, partition), offset) in &kept {
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                        tracing::warn!(target: "rdkafka", %group, %error, "cannot keep a partition's position");
                    }
                }
                match consumer.assign(tpl) {
                    Ok(()) => {
                        tracing::info!(target: "rdkafka", %group, partitions = tpl.count(), kept = kept.len(), "partitions assigned")
                    }
                    Err(error) => tracing::error!(target: "rdkafka", %group, %error, "assigning partitions failed"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                {
                    let mut revoked = self.revoked.lock();
                    revoked.clear();
                    if lost {
                        // Others may have consumed and committed these meanwhile.
                        self.positions.lock().clear();
                    } else {
                        revoked.extend(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
                    }
                }
                if let Err(error) = consumer.unassign() {
                    tracing::error!(target: "rdkafka", %group, %error, "revoking partitions failed");
                }
                tracing::info!(target: "rdkafka", %group, partitions = tpl.count(), lost, "partitions revoked");
            }
            _ => {
                let error: RDKafkaErrorCode = err.into();
                tracing::warn!(target: "rdkafka", %group, %error, "rebalance failed");
                self.revoked.lock().clear();
                self.positions.lock().clear();
                if let Err(error) = consumer.unassign() {
                    tracing::error!(target: "rdkafka", %group, %error, "revoking partitions failed");
                }
            }
        }
    }
}
