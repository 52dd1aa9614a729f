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

mod consumer;

pub use consumer::KafkaConsumer;

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
            park_after: Some(consumer::PARK_AFTER),
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
mod tests;
