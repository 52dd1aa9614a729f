//! The Kafka event log, for the distributed mode: [`KafkaLog`] implements [`EventLog`] with
//! `rdkafka` (bundled librdkafka).
//!
//! - **Topics.** `{prefix}posts.v1`, `{prefix}graph.v1` and the dead-letter topic
//!   `{prefix}dead-letter.v1` are created with the configured partition count when the log
//!   connects (an existing topic is kept as it is). Brokers such as noida-db auto-create an
//!   unknown topic with a single partition on first use, so this must happen before any
//!   produce or subscribe. The prefix keeps parallel tests (and environments sharing a
//!   broker) apart; it also prefixes consumer group ids.
//! - **Appends.** An idempotent producer with `acks=all`: [`EventLog::append`] enqueues every
//!   record and returns only once the broker acknowledged all of them. The record key is
//!   sent as the Kafka key (8 bytes, big-endian), so records with the same `(topic, key)`
//!   land in one partition in order. Placement follows Kafka's own partitioner
//!   (`murmur2_random`, the Java client's), *not* [`crate::partition_for`]: Kafka-native
//!   tools and clients in other languages then agree with us on where a key lives.
//!   If an append fails part way, some of its records may still be in the log: a retry
//!   then appends them twice, which consumers tolerate (delivery is at-least-once anyway).
//!   An append fails after [`KafkaOptions::message_timeout`] without a broker (twice that
//!   at worst, see the next point), never hangs.
//! - **Producer recovery.** An idempotent producer can fail *fatally* (the broker's view
//!   of its sequence numbers no longer matches, as after a broker restart that lost its
//!   producer state) and then rejects every later record. The log then builds a new
//!   producer and retries the append once, instead of failing every write until the
//!   process restarts.
//! - **Consumers.** One `StreamConsumer` per [`EventLog::subscribe`]. Offsets move only
//!   when the caller says its side effects are done (`enable.auto.offset.store=false`, as
//!   in rust-rdkafka's `at_least_once` example), two ways: [`Consumer::commit`] commits
//!   synchronously (once it returns, a restarted or rebalanced member starts after those
//!   records); [`Consumer::commit_later`] only *stores* the offsets, and librdkafka's
//!   auto-commit sends what is stored every [`KafkaOptions::commit_interval`], when a
//!   partition is revoked, and when the consumer closes, so a busy consumer pays no broker
//!   round trip per batch. Each member keeps the highest offset committed (or stored) per
//!   partition and never commits below it, nor below what the group had committed when
//!   the partition was (re)assigned to it.
//! - **Idle consumers park** ([`idle`]): after [`KafkaOptions::park_after`] with nothing
//!   to read a consumer stops fetching and probes the partitions' end offsets instead,
//!   since a broker that answers empty fetches at once would otherwise keep it spinning.
//! - **Dead letters.** [`KafkaLog::dead_letter`] copies a poison delivery to the
//!   dead-letter topic with its error and origin in headers, so it never blocks a partition.
//! - **Lag.** [`Consumer::lag`] reads each owned partition's committed offset and high
//!   watermark from the broker; the log keeps every live consumer's last reading per
//!   partition for [`KafkaLog::consumer_lag_metric`], so a scrape costs no broker call.
//!
//! Group membership uses librdkafka's default (eager) assignors: on a rebalance a member
//! gives up all its partitions and reads the ones it gets back from the group's committed
//! offset, so uncommitted records may reach the same member twice. That is within the
//! at-least-once contract. Members only join, leave and rebalance while they poll (or are
//! dropped), and a member that crashed keeps its partitions for
//! [`KafkaOptions::session_timeout`].
//!
//! librdkafka's own logs and client errors go to `tracing` (target `rdkafka`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::oneshot::Canceled;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use starling_metrics::{Pulled, Samples, names};

use crate::{Consumer, Delivery, EventLog, LogError, Record, Topic};

mod idle;

/// Name (without prefix) of the dead-letter topic.
pub const DEAD_LETTER_TOPIC: &str = "dead-letter.v1";

/// Headers [`KafkaLog::dead_letter`] adds to a dead-lettered record.
pub mod dead_letter_headers {
    /// Why the consumer gave up on the record.
    pub const ERROR: &str = "error";
    /// The full Kafka topic name (with prefix) the record was consumed from.
    pub const SOURCE_TOPIC: &str = "source-topic";
    /// Its partition, in decimal.
    pub const SOURCE_PARTITION: &str = "source-partition";
    /// Its offset, in decimal.
    pub const SOURCE_OFFSET: &str = "source-offset";
}

/// How long `poll` keeps collecting after its first message.
const BATCH_LINGER: Duration = Duration::from_millis(2);

#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Partitions for topics this log creates. An existing topic keeps its count (adding
    /// partitions would move keys and break per-key order), with a warning if it differs.
    pub partitions: i32,
    /// Replication factor for topics this log creates.
    pub replication: i32,
    /// Prepended to every topic name and consumer group id, so tests and environments
    /// sharing a broker never see each other's records.
    pub topic_prefix: String,
    /// Create and use the dead-letter topic. When `false`, [`KafkaLog::dead_letter`] logs
    /// the poison record at error level and drops it, so it still never blocks a partition.
    pub dead_letter: bool,
    /// Create the topics at connect (`false` where topics are managed outside the service
    /// and the service has no admin rights on the cluster).
    pub create_topics: bool,
    /// `message.timeout.ms`: how long the producer keeps retrying one record before the
    /// append fails. Bounds how long a write request can hang on a broker outage.
    pub message_timeout: Duration,
    /// Bound on admin, metadata, offset and watermark requests.
    pub request_timeout: Duration,
    /// `linger.ms`: how long the producer waits for more records before sending a batch.
    /// 0 by default: an append is already a batch, librdkafka still batches whatever queues
    /// up while a request is in flight, and a one-record append (the HTTP write path) then
    /// pays no wait. `benches/kafka_append.rs` measured 0 ms against 1 and 2 ms.
    pub linger: Duration,
    /// `session.timeout.ms`: how long a consumer that stopped heartbeating (crashed, hung)
    /// keeps its partitions before the group hands them to the others. A clean shutdown
    /// leaves the group at once and is not affected. Heartbeats go every third of it (at
    /// most every 3 s). Brokers bound it (Kafka: `group.min.session.timeout.ms`, 6 s).
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`, KIP-345): a stable name per process,
    /// e.g. the pod name. A restarted process takes over its predecessor's membership and
    /// partitions at once instead of waiting for the dead member to be expired. Each
    /// consumer this log creates appends its own sequence number.
    pub instance_id: Option<String>,
    /// `auto.commit.interval.ms`: how often offsets stored by [`Consumer::commit_later`]
    /// are committed. Longer: fewer commit requests; more records applied again after a
    /// crash (never lost: they are stored only once applied). 1 s: Kafka's own default is
    /// 5 s; noida-db rewrites its whole state file on every commit, and at 200 ms that
    /// alone cut the fan-out bench's throughput by 3× (`benches/fanout.rs`).
    pub commit_interval: Duration,
    /// How long a consumer's polls must find nothing before it parks (stops fetching
    /// until a probe sees a record; see `kafka/idle.rs`). `None`: never park, for brokers
    /// that hold empty fetches as Kafka does (parking then saves little).
    pub park_after: Option<Duration>,
    /// Extra librdkafka settings for consumers (`fetch.min.bytes`, say), applied last:
    /// tuning for a particular broker without a release.
    pub consumer_config: Vec<(String, String)>,
}

impl KafkaOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), ..Self::default() }
    }
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            partitions: 8,
            replication: 1,
            topic_prefix: String::new(),
            dead_letter: true,
            create_topics: true,
            message_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            linger: Duration::ZERO,
            // Kafka's default is 45 s; a crashed fan-out worker would hold its partitions
            // that long, far past the 1 s delivery-lag target.
            session_timeout: Duration::from_secs(10),
            instance_id: None,
            commit_interval: Duration::from_secs(1),
            park_after: Some(idle::PARK_AFTER),
            consumer_config: Vec::new(),
        }
    }
}

/// See the module docs.
pub struct KafkaLog {
    /// Replaced after a fatal error (see [`KafkaLog::produce`]).
    producer: parking_lot::RwLock<ProducerSlot>,
    options: KafkaOptions,
    /// Full Kafka topic names, indexed like [`Topic::ALL`].
    topics: [String; Topic::ALL.len()],
    dead_letter_topic: String,
    /// Numbers this log's consumers for their static member ids.
    consumers_created: std::sync::atomic::AtomicU64,
    /// What its consumers last read of their lag, for [`KafkaLog::consumer_lag_metric`].
    lags: Arc<ConsumerLags>,
}

/// Each live consumer's last [`Consumer::lag`] reading, by partition, keyed by a number the
/// log gives the consumer: a reading replaces that consumer's previous one whole, so a
/// partition it gave up in a rebalance leaves with it, and a dropped consumer takes its
/// readings along.
#[derive(Default)]
struct ConsumerLags {
    next: AtomicU64,
    /// Consumer number → (full group id, [(full topic name, partition, records behind)]).
    readings: parking_lot::Mutex<HashMap<u64, (String, Vec<(String, i32, u64)>)>>,
}

impl ConsumerLags {
    /// One sample per (group, topic, partition): the largest reading, since two consumers
    /// of this process may both report a partition between a rebalance and the next
    /// reading of the one that lost it.
    fn samples(&self) -> Samples {
        let mut largest: HashMap<(&str, &str, i32), u64> = HashMap::new();
        let readings = self.readings.lock();
        for (group, partitions) in readings.values() {
            for (topic, partition, lag) in partitions {
                let l = largest.entry((group.as_str(), topic.as_str(), *partition)).or_default();
                *l = (*l).max(*lag);
            }
        }
        largest
            .into_iter()
            .map(|((group, topic, partition), lag)| {
                (vec![topic.to_owned(), partition.to_string(), group.to_owned()], lag as f64)
            })
            .collect()
    }
}

impl KafkaLog {
    /// Creates the producer and, unless [`KafkaOptions::create_topics`] is off, the topics.
    /// Fails if the broker cannot be reached within [`KafkaOptions::request_timeout`].
    pub async fn connect(options: KafkaOptions) -> Result<Arc<KafkaLog>, LogError> {
        if options.partitions < 1 || options.replication < 1 {
            return Err(LogError::Storage(format!(
                "invalid Kafka options: partitions {} and replication {} must be at least 1",
                options.partitions, options.replication
            )));
        }
        let prefix = &options.topic_prefix;
        let topics = Topic::ALL.map(|t| format!("{prefix}{}", t.name()));
        let dead_letter_topic = format!("{prefix}{DEAD_LETTER_TOPIC}");

        let producer = parking_lot::RwLock::new(ProducerSlot { generation: 0, producer: new_producer(&options)? });
        let log = KafkaLog {
            producer,
            options,
            topics,
            dead_letter_topic,
            consumers_created: Default::default(),
            lags: Default::default(),
        };
        if log.options.create_topics {
            log.create_topics().await?;
        }
        Ok(Arc::new(log))
    }

    /// The full Kafka topic name of `topic` (with the prefix).
    pub fn topic_name(&self, topic: Topic) -> &str {
        &self.topics[topic_index(topic)]
    }

    /// The full name of the dead-letter topic (with the prefix).
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// [`names::KAFKA_CONSUMER_LAG`]: the records of each partition not yet committed by
    /// its group, as this log's consumers last read them with [`Consumer::lag`] (the
    /// fan-out does twice a second, and whenever a poll comes back empty), by `topic`,
    /// `partition` and `group`, full names with the prefix, as Kafka's own tools show them.
    /// Read when scraped: no broker call of its own.
    pub fn consumer_lag_metric(&self) -> Pulled {
        let lags = self.lags.clone();
        Pulled::gauges(
            names::KAFKA_CONSUMER_LAG,
            "Records of a partition its consumer group has not committed, as this process's consumers last read it.",
            &["topic", "partition", "group"],
            move || lags.samples(),
        )
    }

    /// Copies a delivery its consumer cannot apply to the dead-letter topic, with the same
    /// key, payload and headers plus [`dead_letter_headers`]. Returns once the broker
    /// acknowledged it; the caller then commits the delivery and moves on.
    #[tracing::instrument(skip_all, fields(topic = delivery.topic.name(), partition = delivery.partition, offset = delivery.offset))]
    pub async fn send_to_dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), LogError> {
        use dead_letter_headers::*;
        if !self.options.dead_letter {
            tracing::error!(error, "dead-letter topic disabled: dropping a record that cannot be applied");
            return Ok(());
        }
        let ours = [ERROR, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET];
        let mut headers: Vec<(String, Bytes)> =
            delivery.headers.iter().filter(|(name, _)| !ours.contains(&name.as_str())).cloned().collect();
        headers.push((ERROR.into(), Bytes::copy_from_slice(error.as_bytes())));
        headers.push((SOURCE_TOPIC.into(), Bytes::from(self.topic_name(delivery.topic).to_owned())));
        headers.push((SOURCE_PARTITION.into(), Bytes::from(delivery.partition.to_string())));
        headers.push((SOURCE_OFFSET.into(), Bytes::from(delivery.offset.to_string())));
        self.produce(&[(self.dead_letter_topic.as_str(), delivery.key, &delivery.payload, headers.as_slice())]).await?;
        tracing::warn!(error, "record sent to the dead-letter topic");
        Ok(())
    }

    async fn create_topics(&self) -> Result<(), LogError> {
        let admin: AdminClient<LogContext> =
            client_config(&self.options).create_with_context(LogContext).map_err(unavailable)?;
        let mut names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if self.options.dead_letter {
            names.push(&self.dead_letter_topic);
        }
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, self.options.partitions, TopicReplication::Fixed(self.options.replication)))
            .collect();
        let timeout = self.options.request_timeout;
        let admin_options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
        let results = admin.create_topics(&new, &admin_options).await.map_err(unavailable)?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, partitions = self.options.partitions, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Unavailable(format!("cannot create Kafka topic {name}: {code}")));
                }
            }
        }
        // Creation can be asynchronous on the broker side; wait until every topic has
        // partitions in the metadata, so nothing races ahead into auto-creation.
        let producer = self.producer.read().producer.clone();
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let configured = self.options.partitions;
        blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            for name in &names {
                loop {
                    let metadata = producer.client().fetch_metadata(Some(name), timeout).map_err(unavailable)?;
                    let found = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len());
                    match found {
                        Some(n) if n > 0 => {
                            if n != configured as usize {
                                tracing::warn!(
                                    topic = %name,
                                    partitions = n,
                                    configured,
                                    "existing topic keeps its partition count"
                                );
                            }
                            break;
                        }
                        _ if std::time::Instant::now() >= deadline => {
                            return Err(LogError::Unavailable(format!("Kafka topic {name} did not appear")));
                        }
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Appends `records`, replacing the producer and trying once more if it failed fatally.
    ///
    /// An idempotent producer fails *fatally* when the broker's view of its sequence
    /// numbers no longer matches its own (seen here when a broker restarted without its
    /// producer state): every later send fails at once, so without a new producer (a new
    /// producer id) the service could never write again. The retry may write records of
    /// the first attempt twice; consumers tolerate duplicates, and per-key order of first
    /// sightings is kept because the retry resends them in order.
    async fn produce(&self, records: &[Outgoing<'_>]) -> Result<(), LogError> {
        let mut retried = false;
        loop {
            let slot = self.producer.read().clone();
            let result = produce_on(&slot.producer, records).await;
            let Err(error) = result else { return Ok(()) };
            let Some((code, reason)) = slot.producer.client().fatal_error() else { return Err(error) };
            tracing::error!(%code, reason, "Kafka producer failed fatally; replacing it");
            self.replace_producer(slot.generation)?;
            if retried {
                return Err(error);
            }
            retried = true;
        }
    }

    /// Swaps in a new producer unless another append already replaced `generation`.
    fn replace_producer(&self, generation: u64) -> Result<(), LogError> {
        let mut slot = self.producer.write();
        if slot.generation != generation {
            return Ok(());
        }
        let old = std::mem::replace(&mut slot.producer, new_producer(&self.options)?);
        slot.generation += 1;
        drop(slot);
        // Dropping a producer purges and flushes for up to 500 ms: not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }
}

#[derive(Clone)]
struct ProducerSlot {
    /// Bumped on each replacement, so concurrent appends that all saw the same fatal error
    /// replace the producer once.
    generation: u64,
    producer: FutureProducer<LogContext>,
}

fn new_producer(options: &KafkaOptions) -> Result<FutureProducer<LogContext>, LogError> {
    client_config(options)
        // Implies acks=all, bounded in-flight requests and retries without duplicates or
        // reordering within a partition.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", millis(options.message_timeout))
        // Java's partitioner, so other Kafka clients place keys where we do.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", options.linger.as_millis().to_string())
        .create_with_context(LogContext)
        .map_err(unavailable)
}

/// Enqueues every record, then waits for all acknowledgements. Enqueueing in order from
/// one task is what keeps per-partition order; the idempotent producer keeps it across
/// retries.
async fn produce_on(producer: &FutureProducer<LogContext>, records: &[Outgoing<'_>]) -> Result<(), LogError> {
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(records.len());
    for &(topic, key, payload, headers) in records {
        let key = key.to_be_bytes();
        let mut record = FutureRecord::to(topic).key(&key[..]).payload(payload.as_ref());
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                h = h.insert(Header { key: name, value: Some(value.as_ref()) });
            }
            record = record.headers(h);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for the oldest record in flight,
                    // which frees room, then try again.
                    record = back;
                    match pending.pop_front() {
                        Some(delivery) => acknowledged(delivery.await)?,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => return Err(produce_error(e)),
            }
        }
    }
    for delivery in pending {
        acknowledged(delivery.await)?;
    }
    Ok(())
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), LogError> {
        self.send_to_dead_letter(delivery, error).await
    }

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn append(&self, records: Vec<Record>) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let outgoing: Vec<Outgoing<'_>> =
            records.iter().map(|r| (self.topic_name(r.topic), r.key, &r.payload, r.headers.as_slice())).collect();
        self.produce(&outgoing).await
    }

    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(self.consumer(group, topics)?))
    }
}

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
            let wake = if self.parked.is_some() {
                deadline.min(tokio::time::Instant::now() + idle::PROBE_EVERY)
            } else {
                deadline
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

/// A record on its way out: full topic name, key, payload, headers.
type Outgoing<'a> = (&'a str, u64, &'a Bytes, &'a [(String, Bytes)]);

/// Settings shared by the producer, the admin client and every consumer.
fn client_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", "starling")
        // librdkafka's own logging, forwarded to tracing by `LogContext`.
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// Forwards librdkafka's logs and client errors to `tracing`.
struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Mostly transient (a broker connection dropped); librdkafka retries by itself.
        tracing::warn!(target: "rdkafka", %error, reason, "Kafka client error");
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

fn log_to_tracing(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "rdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "rdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "rdkafka", facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "rdkafka", facility, "{message}"),
    }
}

fn topic_index(topic: Topic) -> usize {
    Topic::ALL.iter().position(|&t| t == topic).unwrap_or(0)
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LogError::Unavailable(format!("Kafka call panicked: {e}")))?
}

fn acknowledged(result: Result<OwnedDeliveryResult, Canceled>) -> Result<(), LogError> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(produce_error(e)),
        Err(_) => Err(LogError::Closed),
    }
}

fn produce_error(e: KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidArgument) => {
            LogError::Storage(format!("Kafka rejected the record: {e}"))
        }
        _ => unavailable(e),
    }
}

fn unavailable(e: KafkaError) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// Consumer errors are mostly transient (librdkafka reconnects and retries): keep polling.
/// Only a fatal error, after which the client is unusable, is returned. The same errors
/// also reach [`ConsumerLogContext::error`], which logs them at warn level.
fn consume_error(group: &str, e: KafkaError) -> Result<(), LogError> {
    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
        return Err(unavailable(e));
    }
    tracing::debug!(group, error = %e, "Kafka consumer error");
    Ok(())
}

fn lost_to_rebalance(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
        )
    )
}

#[cfg(test)]
mod tests {
    //! Tests that need a broker read its address from `KAFKA_BROKERS` and skip, saying so,
    //! without one. Each uses its own topic prefix, so they run in parallel on one broker
    //! (and next to anything else using it). Start one with `scripts/lib/kafka.sh`.

    use std::time::Instant;

    use super::*;
    use crate::conformance;

    fn brokers() -> Option<String> {
        match std::env::var("KAFKA_BROKERS") {
            Ok(b) if !b.trim().is_empty() => Some(b),
            _ => {
                println!("skipped: KAFKA_BROKERS not set");
                None
            }
        }
    }

    fn unique(name: &str) -> String {
        format!("test-{name}-{}-", &uuid::Uuid::new_v4().simple().to_string()[..12])
    }

    fn options(brokers: &str, name: &str) -> KafkaOptions {
        KafkaOptions { topic_prefix: unique(name), partitions: 4, ..KafkaOptions::new(brokers) }
    }

    async fn connect(brokers: &str, name: &str) -> Arc<KafkaLog> {
        KafkaLog::connect(options(brokers, name)).await.expect("connect")
    }

    /// A port nothing listens on: bound, then released.
    fn dead_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    fn record(topic: Topic, key: u64, payload: &'static [u8], headers: &[(&str, &'static [u8])]) -> Record {
        Record {
            topic,
            key,
            payload: Bytes::from_static(payload),
            headers: headers.iter().map(|&(n, v)| (n.to_owned(), Bytes::from_static(v))).collect(),
        }
    }

    /// Polls until `n` deliveries arrived (the topics are this test's own).
    async fn take(c: &mut dyn Consumer, n: usize) -> Vec<Delivery> {
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            assert!(started.elapsed() < conformance::DEADLINE, "only {} of {n} records arrived", got.len());
            got.extend(c.poll(n - got.len(), Duration::from_millis(200)).await.expect("poll"));
        }
        got
    }

    /// Polls both members until they split `partitions` between them; what each got meanwhile.
    async fn until_shared(
        a: &mut KafkaConsumer,
        b: &mut KafkaConsumer,
        partitions: usize,
    ) -> (Vec<Delivery>, Vec<Delivery>) {
        let (mut by_a, mut by_b, started) = (Vec::new(), Vec::new(), Instant::now());
        loop {
            assert!(started.elapsed() < conformance::DEADLINE, "the group never settled on two members");
            by_a.extend(a.poll(100, Duration::from_millis(50)).await.expect("poll a"));
            by_b.extend(b.poll(100, Duration::from_millis(50)).await.expect("poll b"));
            let (mine, theirs) = (a.assignment().unwrap(), b.assignment().unwrap());
            if !mine.is_empty() && !theirs.is_empty() && mine.len() + theirs.len() == partitions {
                return (by_a, by_b);
            }
        }
    }

    /// Records `from..from + n`, alternating topics, keys spread over the partitions, each
    /// payload its number.
    fn numbered(from: u64, n: u64) -> Vec<Record> {
        (from..from + n)
            .map(|i| Record {
                topic: Topic::ALL[(i % 2) as usize],
                key: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                payload: Bytes::from(i.to_be_bytes().to_vec()),
                headers: Vec::new(),
            })
            .collect()
    }

    /// A member that keeps a partition through a rebalance goes on where it was: it does
    /// not get the records it already handed out again (Kafka's default would re-read
    /// them from the committed offset), while the partitions that moved are read from the
    /// start by their new owner, since nothing was committed.
    async fn kept_partitions_are_not_read_again(log: &KafkaLog, partitions: u32) {
        let all: Vec<(Topic, u32)> = Topic::ALL.iter().flat_map(|&t| (0..partitions).map(move |p| (t, p))).collect();
        let mut a = log.consumer("g", &Topic::ALL).expect("subscribe a");
        let sent = numbered(0, 40);
        log.append(sent.clone()).await.expect("append");
        let first = take(&mut a, sent.len()).await;
        assert_eq!(a.assignment().unwrap(), all, "a alone owns every partition");

        let mut b = log.consumer("g", &Topic::ALL).expect("subscribe b");
        let (mut a_again, mut b_got) = until_shared(&mut a, &mut b, all.len()).await;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            a_again.extend(a.poll(100, Duration::from_millis(50)).await.expect("poll a"));
            b_got.extend(b.poll(100, Duration::from_millis(50)).await.expect("poll b"));
        }
        assert!(a_again.is_empty(), "a kept {:?} yet got {} records again", a.assignment().unwrap(), a_again.len());
        let theirs = b.assignment().unwrap();
        let key = |d: &Delivery| (d.topic, d.partition, d.offset);
        let mut expected: Vec<_> = first.iter().filter(|d| theirs.contains(&(d.topic, d.partition))).map(key).collect();
        let mut b_got: Vec<_> = b_got.iter().map(key).collect();
        expected.sort_unstable();
        b_got.sort_unstable();
        assert_eq!(b_got, expected, "b reads the partitions it took over from the start");
    }

    /// Polls until `c` has parked (see `idle`), handing back whatever it got meanwhile.
    async fn until_parked(c: &mut KafkaConsumer) -> Vec<Delivery> {
        let started = Instant::now();
        let mut got = Vec::new();
        while !c.is_parked() {
            assert!(started.elapsed() < conformance::DEADLINE, "the idle consumer never parked");
            got.extend(c.poll(100, Duration::from_millis(50)).await.expect("poll"));
        }
        got
    }

    fn numbers(got: &[Delivery]) -> Vec<u64> {
        let mut n: Vec<u64> = got.iter().map(|d| u64::from_be_bytes(d.payload[..8].try_into().unwrap())).collect();
        n.sort_unstable();
        n
    }

    /// An idle consumer parks (stops fetching) and still misses nothing: records appended
    /// while it is parked arrive, whether it had read nothing yet (the case where pausing
    /// partitions loses records) or had read and committed; it reports them as lag while
    /// parked, keeps owning its partitions, and a member joining meanwhile shares them.
    async fn an_idle_consumer_parks_and_misses_nothing(log: &KafkaLog, partitions: u32) {
        let all: Vec<(Topic, u32)> = Topic::ALL.iter().flat_map(|&t| (0..partitions).map(move |p| (t, p))).collect();
        let mut a = log.consumer("parking", &Topic::ALL).expect("subscribe a");
        assert!(until_parked(&mut a).await.is_empty());
        assert_eq!(a.assignment().unwrap(), all, "a parked consumer still owns its partitions");

        log.append(numbered(0, 30)).await.expect("append");
        assert!(a.lag().await.expect("lag") >= 30, "records waiting for a parked consumer are lag");
        let first = take(&mut a, 30).await;
        assert_eq!(numbers(&first), (0..30).collect::<Vec<_>>(), "nothing lost while parked before any read");
        a.commit(&first).await.expect("commit");

        assert!(until_parked(&mut a).await.is_empty(), "nothing is read twice");
        log.append(numbered(30, 30)).await.expect("append");
        let second = take(&mut a, 30).await;
        assert_eq!(numbers(&second), (30..60).collect::<Vec<_>>(), "nothing lost or repeated after a read");
        a.commit(&second).await.expect("commit");

        until_parked(&mut a).await;
        let mut b = log.consumer("parking", &Topic::ALL).expect("subscribe b");
        let (mut got, by_b) = until_shared(&mut a, &mut b, all.len()).await;
        got.extend(by_b);
        assert!(got.is_empty(), "committed records are not read again: {:?}", numbers(&got));
        log.append(numbered(60, 30)).await.expect("append");
        let started = Instant::now();
        while got.len() < 30 {
            assert!(started.elapsed() < conformance::DEADLINE, "only {} of 30 records arrived", got.len());
            got.extend(a.poll(100, Duration::from_millis(50)).await.expect("poll a"));
            got.extend(b.poll(100, Duration::from_millis(50)).await.expect("poll b"));
        }
        assert_eq!(numbers(&got), (60..90).collect::<Vec<_>>(), "the two members share the new records");
    }

    #[tokio::test]
    async fn an_idle_consumer_parks_and_misses_nothing_on_the_broker() {
        let Some(brokers) = brokers() else { return };
        an_idle_consumer_parks_and_misses_nothing(&*connect(&brokers, "park").await, 4).await;
    }

    #[tokio::test]
    async fn kept_partitions_are_not_read_again_after_a_rebalance() {
        let Some(brokers) = brokers() else { return };
        kept_partitions_are_not_read_again(&*connect(&brokers, "kept").await, 4).await;
    }

    macro_rules! conformance_test {
        ($name:ident, $check:ident) => {
            #[tokio::test]
            async fn $name() {
                let Some(brokers) = brokers() else { return };
                let log = connect(&brokers, stringify!($check)).await;
                conformance::$check(log.as_ref(), &unique("ns")).await;
            }
        };
    }

    conformance_test!(conformance_consume_in_key_order, append_then_consume_in_key_order);
    conformance_test!(conformance_every_group_sees_every_record, every_group_sees_every_record);
    conformance_test!(conformance_resumes_after_commit, resumes_after_committed_offset);
    conformance_test!(conformance_poll_times_out_and_wakes, poll_times_out_then_wakes_on_append);
    conformance_test!(conformance_members_share_partitions, group_members_share_partitions);
    conformance_test!(conformance_lag, lag_drops_to_zero_after_commit);
    conformance_test!(conformance_commit_later, resumes_after_commit_later_and_a_clean_stop);

    #[tokio::test]
    async fn conformance_all_on_one_log() {
        let Some(brokers) = brokers() else { return };
        // Default partition count, every check on the same topics one after another.
        let options = KafkaOptions { topic_prefix: unique("all"), ..KafkaOptions::new(brokers) };
        let log = KafkaLog::connect(options).await.expect("connect");
        conformance::all(log.as_ref(), &unique("ns")).await;
    }

    #[tokio::test]
    async fn topics_get_the_configured_partitions_and_connect_is_repeatable() {
        let Some(brokers) = brokers() else { return };
        let options = KafkaOptions { partitions: 3, ..options(&brokers, "topics") };
        let log = KafkaLog::connect(options.clone()).await.expect("connect");
        // The topics exist now: a second connect must accept that.
        let again = KafkaLog::connect(KafkaOptions { partitions: 5, ..options }).await.expect("connect again");
        let mut names: Vec<String> = Topic::ALL.iter().map(|&t| log.topic_name(t).to_owned()).collect();
        names.push(log.dead_letter_topic().to_owned());
        let producer = again.producer.read().producer.clone();
        let counts = blocking(move || {
            names
                .iter()
                .map(|name| {
                    let metadata =
                        producer.client().fetch_metadata(Some(name), Duration::from_secs(10)).map_err(unavailable)?;
                    Ok(metadata.topics().iter().find(|t| t.name() == name).map_or(0, |t| t.partitions().len()))
                })
                .collect::<Result<Vec<_>, LogError>>()
        })
        .await
        .expect("metadata");
        assert_eq!(counts, vec![3; Topic::ALL.len() + 1], "an existing topic keeps its partition count");
    }

    /// The lag metric holds each owned partition's last reading, under the full topic and
    /// group names; it drops to zero with the commit and leaves with the consumer.
    #[tokio::test]
    async fn consumer_lag_metric_reports_each_partition_until_the_consumer_leaves() {
        let Some(brokers) = brokers() else { return };
        let options = KafkaOptions { partitions: 2, ..options(&brokers, "lag-metric") };
        let prefix = options.topic_prefix.clone();
        let log = KafkaLog::connect(options).await.expect("connect");
        log.append(numbered(0, 6)).await.expect("append");
        let metrics = starling_metrics::Metrics::new("test");
        metrics.register(log.consumer_lag_metric()).unwrap();
        let series = || -> Vec<(String, f64)> {
            let text = metrics.render();
            let found = text.lines().filter_map(|l| l.strip_prefix(names::KAFKA_CONSUMER_LAG)?.strip_prefix('{'));
            found.filter_map(|l| Some((l.split_once('}')?.0.to_owned(), l.rsplit(' ').next()?.parse().ok()?))).collect()
        };
        let mut c = log.consumer("g", &[Topic::Posts, Topic::Graph]).expect("consumer");
        let got = take(&mut c, 6).await;
        assert!(series().is_empty(), "nothing is reported before the consumer reads its lag");
        assert_eq!(c.lag().await.expect("lag"), 6);
        let read = series();
        let mut labels: Vec<&str> = read.iter().map(|(l, _)| l.as_str()).collect();
        labels.sort_unstable();
        let mut want: Vec<String> = ["graph.v1", "posts.v1"]
            .iter()
            .flat_map(|t| {
                let prefix = &prefix;
                (0..2).map(move |p| format!("group=\"{prefix}g\",partition=\"{p}\",topic=\"{prefix}{t}\""))
            })
            .collect();
        want.sort_unstable();
        assert_eq!(labels, want, "one series per owned partition, by full names");
        assert_eq!(read.iter().map(|(_, v)| v).sum::<f64>(), 6.0, "{read:?}");
        c.commit(&got).await.expect("commit");
        assert_eq!(c.lag().await.expect("lag"), 0);
        assert!(series().iter().all(|(_, v)| *v == 0.0), "{:?}", series());
        drop(c);
        assert!(series().is_empty(), "a consumer that left reports nothing");
    }

    #[tokio::test]
    async fn headers_round_trip() {
        let Some(brokers) = brokers() else { return };
        let log = connect(&brokers, "headers").await;
        let sent = vec![
            record(
                Topic::Posts,
                1,
                b"with headers",
                &[
                    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                    ("binary", b"\x00\xff\x01"),
                    ("empty", b""),
                    // Kafka allows a name twice; order and both values survive.
                    ("binary", b"second"),
                ],
            ),
            record(Topic::Graph, u64::MAX, b"", &[]),
        ];
        log.append(sent.clone()).await.expect("append");
        let mut c = log.subscribe("g", &Topic::ALL).await.expect("subscribe");
        let mut got = take(c.as_mut(), 2).await;
        got.sort_by_key(|d| d.topic);
        for (d, r) in got.iter().zip(&sent) {
            assert_eq!((d.topic, d.key, &d.payload, &d.headers), (r.topic, r.key, &r.payload, &r.headers));
        }
    }

    /// The W3C trace context crosses the broker in the `traceparent` header: a consumer's
    /// span continues the producer's trace; a malformed header arrives as it was sent,
    /// gives no parent, and the record is delivered all the same.
    #[tokio::test]
    async fn trace_context_crosses_the_broker() {
        use opentelemetry::trace::TracerProvider as _;
        use starling_telemetry::propagation::{extract, set_parent, trace_id};
        use tracing_subscriber::layer::SubscriberExt as _;
        let Some(brokers) = brokers() else { return };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        // This test's thread only (a current-thread runtime): other tests are untouched.
        let _default = tracing::subscriber::set_default(subscriber);
        starling_telemetry::set_exporting_for_tests();
        let log = connect(&brokers, "trace").await;
        let event = crate::pb::PostEvent { event_id: "traced".into(), occurred_at_ms: 0, kind: None };
        let request = tracing::info_span!("request");
        let traced = request.in_scope(|| Record::post(7, &event));
        let malformed = record(Topic::Posts, 9, b"malformed", &[("traceparent", b"00-not-a-trace-01")]);
        log.append(vec![traced, malformed]).await.expect("append");

        let mut c = log.subscribe("g", &[Topic::Posts]).await.expect("subscribe");
        let mut got = take(c.as_mut(), 2).await;
        got.sort_by_key(|d| d.key);
        let apply = |headers: &[(String, Bytes)]| {
            let span = tracing::info_span!("apply");
            set_parent(&span, extract(headers));
            trace_id(&span)
        };
        assert!(trace_id(&request).is_some());
        assert_eq!(apply(&got[0].headers), trace_id(&request), "the consumer continues the producer's trace");
        assert_ne!(apply(&got[1].headers), trace_id(&request), "a malformed header starts a trace of its own");
        assert_eq!(got[1].payload, Bytes::from_static(b"malformed"), "and the record is delivered intact");
        assert_eq!(got[1].headers, vec![("traceparent".to_owned(), Bytes::from_static(b"00-not-a-trace-01"))]);
    }

    #[tokio::test]
    async fn dead_letter_keeps_the_record_and_says_why() {
        let Some(brokers) = brokers() else { return };
        let log = connect(&brokers, "dead").await;
        log.append(vec![record(Topic::Posts, 42, b"poison", &[("traceparent", b"00-ab-cd-01")])])
            .await
            .expect("append");
        let mut c = log.subscribe("worker", &[Topic::Posts]).await.expect("subscribe");
        let d = take(c.as_mut(), 1).await.remove(0);
        log.send_to_dead_letter(&d, "unknown event kind").await.expect("dead letter");
        c.commit(std::slice::from_ref(&d)).await.expect("commit");
        assert_eq!(c.lag().await.expect("lag"), 0);

        // Read the dead-letter topic as an operator's tool would: a plain Kafka consumer.
        let reader: StreamConsumer = client_config(&log.options)
            .set("group.id", format!("{}dl-reader", log.options.topic_prefix))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("reader");
        reader.subscribe(&[log.dead_letter_topic()]).expect("subscribe to the dead-letter topic");
        let message = tokio::time::timeout(conformance::DEADLINE, reader.recv())
            .await
            .expect("the dead letter arrives")
            .expect("recv");
        assert_eq!(message.payload(), Some(&b"poison"[..]));
        assert_eq!(message.key(), Some(&42u64.to_be_bytes()[..]));
        let headers: Vec<(String, Vec<u8>)> = message
            .headers()
            .expect("headers")
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = [
            ("traceparent", "00-ab-cd-01".to_owned()),
            (dead_letter_headers::ERROR, "unknown event kind".to_owned()),
            (dead_letter_headers::SOURCE_TOPIC, log.topic_name(Topic::Posts).to_owned()),
            (dead_letter_headers::SOURCE_PARTITION, d.partition.to_string()),
            (dead_letter_headers::SOURCE_OFFSET, d.offset.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
        assert_eq!(headers, expected);
    }

    #[tokio::test]
    async fn two_members_split_the_partitions_and_one_takes_all_when_the_other_leaves() {
        let Some(brokers) = brokers() else { return };
        let log = connect(&brokers, "rebalance").await;
        let all: Vec<(Topic, u32)> = Topic::ALL.iter().flat_map(|&t| (0..4).map(move |p| (t, p))).collect();
        let mut a = log.consumer("g", &Topic::ALL).expect("subscribe a");
        let mut b = log.consumer("g", &Topic::ALL).expect("subscribe b");

        // Members only join and rebalance while they poll.
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < conformance::DEADLINE, "the group never settled on two members");
            a.poll(10, Duration::from_millis(50)).await.expect("poll a");
            b.poll(10, Duration::from_millis(50)).await.expect("poll b");
            let (mine, theirs) = (a.assignment().unwrap(), b.assignment().unwrap());
            if !mine.is_empty() && !theirs.is_empty() && mine.len() + theirs.len() == all.len() {
                let mut union: Vec<_> = mine.iter().chain(&theirs).copied().collect();
                union.sort_unstable();
                assert_eq!(union, all, "each partition has exactly one owner");
                break;
            }
        }

        // With the group settled, each record goes to the owner of its partition, once.
        let sent: Vec<Record> = (0..40u64)
            .map(|i| Record {
                topic: Topic::ALL[(i % 2) as usize],
                key: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                payload: Bytes::from(i.to_be_bytes().to_vec()),
                headers: Vec::new(),
            })
            .collect();
        log.append(sent.clone()).await.expect("append");
        let started = Instant::now();
        let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
        while from_a.len() + from_b.len() < sent.len() {
            assert!(started.elapsed() < conformance::DEADLINE, "records went missing");
            from_a.extend(a.poll(100, Duration::from_millis(50)).await.expect("poll a"));
            from_b.extend(b.poll(100, Duration::from_millis(50)).await.expect("poll b"));
        }
        let (mine, theirs) = (a.assignment().unwrap(), b.assignment().unwrap());
        assert!(from_a.iter().all(|d| mine.contains(&(d.topic, d.partition))));
        assert!(from_b.iter().all(|d| theirs.contains(&(d.topic, d.partition))));
        assert_eq!(from_a.len() + from_b.len(), sent.len(), "no record twice");
        a.commit(&from_a).await.expect("commit a");

        // b leaves without committing: a gets all partitions and exactly b's records again.
        let left = Instant::now();
        drop(b);
        let leave_took = left.elapsed();
        assert!(leave_took < Duration::from_secs(10), "leaving the group took {leave_took:?}");
        let started = Instant::now();
        let mut again = Vec::new();
        while again.len() < from_b.len() || a.assignment().unwrap() != all {
            assert!(started.elapsed() < conformance::DEADLINE, "a never took over b's partitions");
            again.extend(a.poll(100, Duration::from_millis(100)).await.expect("poll a"));
        }
        again.extend(a.poll(100, Duration::from_millis(500)).await.expect("poll a"));
        let key = |d: &Delivery| (d.topic, d.partition, d.offset);
        let mut again: Vec<_> = again.iter().map(key).collect();
        let mut expected: Vec<_> = from_b.iter().map(key).collect();
        again.sort_unstable();
        expected.sort_unstable();
        assert_eq!(again, expected, "a gets what b had not committed, and nothing a committed");
    }

    /// librdkafka's in-process mock cluster: no broker needed, and it can inject errors.
    mod mock {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        use super::*;

        /// The mock answers no CreateTopics, so the topics are made on the mock directly.
        /// Its coordinator also waits out the session timeout of a member that left before
        /// it lets a new one join (a real broker does not), hence the short one.
        fn options(cluster: &MockCluster<'_, impl ClientContext>) -> KafkaOptions {
            let options = KafkaOptions {
                partitions: 3,
                topic_prefix: unique("mock"),
                create_topics: false,
                session_timeout: Duration::from_secs(3),
                ..KafkaOptions::new(cluster.bootstrap_servers())
            };
            for name in Topic::ALL.iter().map(|t| t.name()).chain([DEAD_LETTER_TOPIC]) {
                cluster.create_topic(&format!("{}{name}", options.topic_prefix), 3, 1).expect("create topic");
            }
            options
        }

        /// Each check on its own mock, so they overlap: most of their time is spent
        /// waiting for the mock's group coordinator.
        macro_rules! mock_conformance_test {
            ($name:ident, $check:ident) => {
                #[tokio::test]
                async fn $name() {
                    let cluster = MockCluster::new(1).expect("mock cluster");
                    let log = KafkaLog::connect(options(&cluster)).await.expect("connect");
                    conformance::$check(log.as_ref(), &unique("ns")).await;
                }
            };
        }

        #[tokio::test]
        async fn an_idle_consumer_parks_and_misses_nothing() {
            let cluster = MockCluster::new(1).expect("mock cluster");
            super::an_idle_consumer_parks_and_misses_nothing(
                &KafkaLog::connect(options(&cluster)).await.expect("connect"),
                3,
            )
            .await;
        }

        #[tokio::test]
        async fn kept_partitions_are_not_read_again_after_a_rebalance() {
            let cluster = MockCluster::new(1).expect("mock cluster");
            kept_partitions_are_not_read_again(&KafkaLog::connect(options(&cluster)).await.expect("connect"), 3).await;
        }

        mock_conformance_test!(conformance_consume_in_key_order, append_then_consume_in_key_order);
        mock_conformance_test!(conformance_every_group_sees_every_record, every_group_sees_every_record);
        mock_conformance_test!(conformance_resumes_after_commit, resumes_after_committed_offset);
        mock_conformance_test!(conformance_poll_times_out_and_wakes, poll_times_out_then_wakes_on_append);
        mock_conformance_test!(conformance_members_share_partitions, group_members_share_partitions);
        mock_conformance_test!(conformance_lag, lag_drops_to_zero_after_commit);
        mock_conformance_test!(conformance_commit_later, resumes_after_commit_later_and_a_clean_stop);

        #[tokio::test]
        async fn a_producer_that_failed_fatally_is_replaced_and_the_append_retried() {
            let cluster = MockCluster::new(1).expect("mock cluster");
            let log = KafkaLog::connect(options(&cluster)).await.expect("connect");
            log.append(vec![record(Topic::Posts, 1, b"first", &[])]).await.expect("append");
            // What a broker that lost its producer state answers: the idempotent producer
            // cannot recover from it.
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
            );
            log.append(vec![record(Topic::Posts, 1, b"second", &[])]).await.expect("append after the fatal error");
            assert_eq!(log.producer.read().generation, 1, "the producer was replaced once");
            log.append(vec![record(Topic::Posts, 1, b"third", &[])]).await.expect("append on the new producer");

            let mut c = log.subscribe("g", &[Topic::Posts]).await.expect("subscribe");
            let started = Instant::now();
            let mut got: Vec<Bytes> = Vec::new();
            while !(got.contains(&Bytes::from_static(b"second")) && got.contains(&Bytes::from_static(b"third"))) {
                assert!(started.elapsed() < conformance::DEADLINE, "got only {got:?}");
                got.extend(c.poll(10, Duration::from_millis(200)).await.expect("poll").into_iter().map(|d| d.payload));
            }
            got.dedup();
            let first = |p: &[u8]| got.iter().position(|g| g.as_ref() == p);
            assert!(first(b"first") < first(b"second") && first(b"second") < first(b"third"), "key order: {got:?}");
        }
    }

    // The tests below need no broker: they check what happens without one.

    #[tokio::test]
    async fn append_fails_in_bounded_time_when_the_broker_is_unreachable() {
        let options = KafkaOptions {
            brokers: format!("127.0.0.1:{}", dead_port()),
            create_topics: false,
            message_timeout: Duration::from_secs(2),
            ..KafkaOptions::default()
        };
        let log = KafkaLog::connect(options).await.expect("without topic creation, connect needs no broker");
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            log.append(vec![record(Topic::Posts, 1, b"lost", &[]), record(Topic::Graph, 2, b"lost", &[])]),
        )
        .await
        .expect("append must fail, not hang");
        assert!(matches!(result, Err(LogError::Unavailable(_))), "append to nowhere gave {result:?}");
        assert!(started.elapsed() >= Duration::from_millis(1500), "failed before message.timeout.ms");
    }

    #[tokio::test]
    async fn connect_fails_in_bounded_time_when_the_broker_is_unreachable() {
        let options = KafkaOptions {
            brokers: format!("127.0.0.1:{}", dead_port()),
            request_timeout: Duration::from_secs(2),
            ..KafkaOptions::default()
        };
        let result = tokio::time::timeout(Duration::from_secs(20), KafkaLog::connect(options))
            .await
            .expect("connect must fail, not hang");
        assert!(matches!(result, Err(LogError::Unavailable(_))), "connect to nowhere gave {:?}", result.err());
    }

    #[tokio::test]
    async fn a_disabled_dead_letter_topic_drops_the_record() {
        let options = KafkaOptions {
            brokers: format!("127.0.0.1:{}", dead_port()),
            create_topics: false,
            dead_letter: false,
            ..KafkaOptions::default()
        };
        let log = KafkaLog::connect(options).await.expect("connect");
        let d = Delivery {
            topic: Topic::Graph,
            partition: 0,
            offset: 9,
            key: 1,
            payload: Bytes::from_static(b"x"),
            headers: Vec::new(),
        };
        let result = tokio::time::timeout(Duration::from_secs(5), log.send_to_dead_letter(&d, "bad")).await;
        assert!(matches!(result, Ok(Ok(()))), "never blocks the partition");
    }

    #[tokio::test]
    async fn invalid_options_are_rejected() {
        let options = KafkaOptions { partitions: 0, create_topics: false, ..KafkaOptions::default() };
        assert!(KafkaLog::connect(options).await.is_err());
    }
}
