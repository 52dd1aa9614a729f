//! Events and the event log.
//!
//! - [`pb`]: the protobuf messages from `proto/starling/events/v1`, generated at build time.
//! - [`EventLog`] / [`Consumer`]: the seam between services and the log. The embedded
//!   implementation ([`embedded::EmbeddedLog`]) keeps the log in a fjall keyspace on local
//!   disk; the distributed one talks to Kafka. Both pass [`conformance`].
//!
//! Delivery is at-least-once: a consumer commits a delivery only after its side effects
//! succeeded, so after a crash it sees the uncommitted tail again. Consumers must be
//! idempotent and tolerate duplicates and unknown fields.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod kafka;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;

pub mod pb {
    //! Generated protobuf types.
    include!(concat!(env!("OUT_DIR"), "/starling.events.v1.rs"));
}

/// A versioned topic. The name carries the schema version so a breaking change can run
/// side by side with the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// [`pb::PostEvent`], keyed by author id.
    Posts,
    /// [`pb::GraphEvent`], keyed by the acting user.
    Graph,
    /// [`pb::FanoutSlice`], keyed by post id plus slice number; written by the fan-out
    /// worker to share one long follower list among the workers.
    Fanout,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Posts, Topic::Graph, Topic::Fanout];

    pub const fn name(self) -> &'static str {
        match self {
            Topic::Posts => "posts.v1",
            Topic::Graph => "graph.v1",
            Topic::Fanout => "fanout.v1",
        }
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A stable one-byte tag for compact storage keys.
    pub const fn tag(self) -> u8 {
        match self {
            Topic::Posts => 1,
            Topic::Graph => 2,
            Topic::Fanout => 3,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.tag() == tag)
    }
}

/// A message to append. Records with the same `(topic, key)` keep their relative order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    pub key: u64,
    pub payload: Bytes,
    /// Metadata such as W3C `traceparent`; never needed to apply the event.
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    /// A post event, in the trace of the current span (see [`Record::traced`]).
    pub fn post(author: u64, event: &pb::PostEvent) -> Record {
        Record { topic: Topic::Posts, key: author, payload: event.encode_to_vec().into(), headers: Vec::new() }
            .traced(&tracing::Span::current())
    }

    /// A graph event, in the trace of the current span.
    pub fn graph(key: u64, event: &pb::GraphEvent) -> Record {
        Record { topic: Topic::Graph, key, payload: event.encode_to_vec().into(), headers: Vec::new() }
            .traced(&tracing::Span::current())
    }

    /// A slice of a post's fan-out, in the trace of the worker span that split it.
    pub fn fanout_slice(key: u64, event: &pb::FanoutSlice, span: &tracing::Span) -> Record {
        Record { topic: Topic::Fanout, key, payload: event.encode_to_vec().into(), headers: Vec::new() }.traced(span)
    }

    /// Carries `span`'s W3C trace context in the headers (`traceparent`, `tracestate`),
    /// replacing any they had, when traces are exported: the consumer that applies the
    /// event opens its span as a child of `span` ([`starling_telemetry::propagation`]).
    pub fn traced(mut self, span: &tracing::Span) -> Record {
        starling_telemetry::propagation::inject(span, &mut self.headers);
        self
    }
}

/// A message handed to a consumer, with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub topic: Topic,
    pub partition: u32,
    pub offset: u64,
    pub key: u64,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log storage failed: {0}")]
    Storage(String),
    #[error("event log is unavailable: {0}")]
    Unavailable(String),
    #[error("event log is closed")]
    Closed,
}

/// A durable, partitioned, append-only log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends records and returns only once all of them are durable (the embedded log
    /// flushed them; Kafka acknowledged them with `acks=all`). Records with the same topic
    /// and key land in the same partition in the order given.
    async fn append(&self, records: Vec<Record>) -> Result<(), LogError>;

    /// Joins consumer group `group` on `topics`. Members of one group share the
    /// partitions; each group sees every record. A new group starts at the beginning.
    async fn subscribe(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>, LogError>;

    /// Sets aside a delivery that can never be applied (undecodable, say), with the
    /// error, where an operator can inspect and replay it; the consumer then commits
    /// past it, so a poison event never blocks its partition.
    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), LogError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Returns up to `max` deliveries, waiting up to `max_wait` for the first one; an empty
    /// vector means nothing arrived in time. Within a partition deliveries come in offset
    /// order. Uncommitted deliveries are not handed out twice by the same consumer, but
    /// are redelivered to whoever owns the partition after a restart.
    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError>;

    /// Records that these deliveries (and everything before them in their partitions) are
    /// processed. Call only after their side effects succeeded.
    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), LogError>;

    /// Like [`Consumer::commit`], without waiting for the log to persist it: the positions
    /// are committed in the background soon after (Kafka: by the client's periodic commit,
    /// and when the consumer is dropped), and [`Consumer::lag`] counts them as committed at
    /// once. A crash before then redelivers these deliveries, which at-least-once allows.
    /// Call only after their side effects succeeded. By default it is `commit`.
    async fn commit_later(&mut self, deliveries: &[Delivery]) -> Result<(), LogError> {
        self.commit(deliveries).await
    }

    /// Records in this consumer's partitions that are not committed yet (the lag).
    async fn lag(&mut self) -> Result<u64, LogError>;
}

/// Milliseconds since the Unix epoch, for `occurred_at_ms`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A fresh event id.
pub fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Which partition a key goes to (shared by every implementation so tests can reason
/// about placement).
pub fn partition_for(key: u64, partitions: u32) -> u32 {
    // Fibonacci hashing spreads sequential ids (Snowflakes) evenly.
    ((key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(partitions.max(1))) as u32
}
