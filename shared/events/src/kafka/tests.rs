//! Tests that need a broker read its address from `KAFKA_BROKERS`; they are compiled as
//! ignored (and reported so) unless `STARLING_TEST_SERVERS` was set for the build, as
//! `scripts/test.sh` does. Each uses its own topic prefix, so they run in parallel on one broker
//! (and next to anything else using it). Start one with `scripts/lib/kafka.sh`.

use std::time::Instant;

use super::*;
use crate::conformance;

/// The broker `scripts/test.sh` started: the tests that need one are compiled as ignored
/// unless `STARLING_TEST_SERVERS` was set for the build (`build.rs`).
fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").ok().filter(|b| !b.trim().is_empty()).unwrap_or_else(|| {
        panic!("KAFKA_BROKERS is not set: this test needs a Kafka-protocol broker (scripts/test.sh starts one)")
    })
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

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn an_idle_consumer_parks_and_misses_nothing_on_the_broker() {
    let brokers = brokers();
    an_idle_consumer_parks_and_misses_nothing(&*connect(&brokers, "park").await, 4).await;
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn kept_partitions_are_not_read_again_after_a_rebalance() {
    let brokers = brokers();
    kept_partitions_are_not_read_again(&*connect(&brokers, "kept").await, 4).await;
}

macro_rules! conformance_test {
    ($name:ident, $check:ident) => {
        #[cfg_attr(
            not(test_servers),
            ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)"
        )]
        #[tokio::test]
        async fn $name() {
            let brokers = brokers();
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

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn conformance_all_on_one_log() {
    let brokers = brokers();
    // Default partition count, every check on the same topics one after another.
    let options = KafkaOptions { topic_prefix: unique("all"), ..KafkaOptions::new(brokers) };
    let log = KafkaLog::connect(options).await.expect("connect");
    conformance::all(log.as_ref(), &unique("ns")).await;
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn topics_get_the_configured_partitions_and_connect_is_repeatable() {
    let brokers = brokers();
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
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn consumer_lag_metric_reports_each_partition_until_the_consumer_leaves() {
    let brokers = brokers();
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

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn headers_round_trip() {
    let brokers = brokers();
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
#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn trace_context_crosses_the_broker() {
    use opentelemetry::trace::TracerProvider as _;
    use starling_telemetry::propagation::{continue_from, trace_id};
    use tracing_subscriber::layer::SubscriberExt as _;
    let brokers = brokers();
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
        continue_from(&span, headers);
        trace_id(&span)
    };
    assert!(trace_id(&request).is_some());
    assert_eq!(apply(&got[0].headers), trace_id(&request), "the consumer continues the producer's trace");
    assert_ne!(apply(&got[1].headers), trace_id(&request), "a malformed header starts a trace of its own");
    assert_eq!(got[1].payload, Bytes::from_static(b"malformed"), "and the record is delivered intact");
    assert_eq!(got[1].headers, vec![("traceparent".to_owned(), Bytes::from_static(b"00-not-a-trace-01"))]);
}

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn dead_letter_keeps_the_record_and_says_why() {
    let brokers = brokers();
    let log = connect(&brokers, "dead").await;
    log.append(vec![record(Topic::Posts, 42, b"poison", &[("traceparent", b"00-ab-cd-01")])]).await.expect("append");
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

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn two_members_split_the_partitions_and_one_takes_all_when_the_other_leaves() {
    let brokers = brokers();
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
        cluster
            .request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER]);
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
