//! The conformance suite every [`EventLog`] implementation runs (embedded and Kafka).
//!
//! Each check takes the log and a caller-chosen `namespace` that must be unique per run
//! (e.g. a uuid): group names are built from it, and every record a check appends carries
//! a marker derived from it. The topics are the real, fixed ones, so on a shared broker
//! they may hold records from other tests and a new group (which starts at the beginning)
//! reads those too; the checks only look at records carrying their own marker.
//!
//! The marker is the `event_id` of a [`pb::PostEvent`] / [`pb::GraphEvent`] with no
//! `kind`, so a real consumer sharing the broker sees an event of a kind it does not know
//! and skips it, instead of dead-lettering garbage.
//!
//! Checks panic on failure and bound every wait by [`DEADLINE`], so a broker that never
//! delivers fails the test instead of hanging it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use crate::{Consumer, Delivery, EventLog, Record, Topic, now_ms, pb};

/// How long a check waits for records it expects, generous enough for a Kafka rebalance.
pub const DEADLINE: Duration = Duration::from_secs(30);

const POLL_WAIT: Duration = Duration::from_millis(200);
const HEADER: &str = "x-starling-conformance";

/// Runs every check against one log, one after another, as a shared broker would see them.
pub async fn all(log: &dyn EventLog, namespace: &str) {
    append_then_consume_in_key_order(log, &format!("{namespace}-a")).await;
    every_group_sees_every_record(log, &format!("{namespace}-b")).await;
    resumes_after_committed_offset(log, &format!("{namespace}-c")).await;
    poll_times_out_then_wakes_on_append(log, &format!("{namespace}-d")).await;
    group_members_share_partitions(log, &format!("{namespace}-e")).await;
    lag_drops_to_zero_after_commit(log, &format!("{namespace}-f")).await;
    resumes_after_commit_later_and_a_clean_stop(log, &format!("{namespace}-g")).await;
}

/// Builds records with a marker unique to one check and recognises them on the way back.
struct Marked {
    prefix: String,
}

impl Marked {
    fn new(namespace: &str, check: &str) -> Self {
        Self { prefix: format!("conformance:{namespace}:{check}:") }
    }

    fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn record(&self, topic: Topic, key: u64, seq: u64) -> Record {
        let event_id = format!("{}{seq}", self.prefix);
        let payload = match topic {
            Topic::Posts => {
                pb::PostEvent { event_id: event_id.clone(), occurred_at_ms: now_ms(), kind: None }.encode_to_vec()
            }
            Topic::Graph => {
                pb::GraphEvent { event_id: event_id.clone(), occurred_at_ms: now_ms(), kind: None }.encode_to_vec()
            }
            Topic::Fanout => pb::FanoutSlice { event_id: event_id.clone(), ..Default::default() }.encode_to_vec(),
        };
        Record { topic, key, payload: payload.into(), headers: vec![(HEADER.to_owned(), Bytes::from(event_id))] }
    }

    /// The sequence number if `d` is one of ours.
    fn seq(&self, d: &Delivery) -> Option<u64> {
        let event_id = match d.topic {
            Topic::Posts => pb::PostEvent::decode(d.payload.as_ref()).ok()?.event_id,
            Topic::Graph => pb::GraphEvent::decode(d.payload.as_ref()).ok()?.event_id,
            Topic::Fanout => pb::FanoutSlice::decode(d.payload.as_ref()).ok()?.event_id,
        };
        event_id.strip_prefix(&self.prefix)?.parse().ok()
    }

    /// `n` records over every topic and `keys` keys; seq `i` has key `key_of(i)`.
    fn batch(&self, range: std::ops::Range<u64>, keys: u64) -> Vec<Record> {
        range.map(|i| self.record(topic_of(i), key_of(i, keys), i)).collect()
    }
}

fn topic_of(seq: u64) -> Topic {
    match seq % 5 {
        2 => Topic::Graph,
        4 => Topic::Fanout,
        _ => Topic::Posts,
    }
}

/// Keys far apart so they spread over partitions and never look like small test ids.
fn key_of(seq: u64, keys: u64) -> u64 {
    (seq % keys).wrapping_mul(0x0001_0000_0001) + 0x00F0_0000_0000_0000
}

/// Polls until every seq in `expected` has been seen or [`DEADLINE`] passes. Returns our
/// deliveries (with seq) in arrival order, and every delivery, ours or not.
async fn collect(
    consumer: &mut dyn Consumer,
    marked: &Marked,
    expected: &HashSet<u64>,
) -> (Vec<(u64, Delivery)>, Vec<Delivery>) {
    let started = Instant::now();
    let mut ours = Vec::new();
    let mut everything = Vec::new();
    let mut seen = HashSet::new();
    while !expected.is_subset(&seen) {
        assert!(
            started.elapsed() < DEADLINE,
            "only {} of {} expected records arrived within {DEADLINE:?}",
            expected.intersection(&seen).count(),
            expected.len()
        );
        for d in consumer.poll(17, POLL_WAIT).await.expect("poll") {
            if let Some(seq) = marked.seq(&d) {
                seen.insert(seq);
                ours.push((seq, d.clone()));
            }
            everything.push(d);
        }
    }
    (ours, everything)
}

/// Polls for `wait` more and returns whatever of ours arrived.
async fn drain_for(consumer: &mut dyn Consumer, marked: &Marked, wait: Duration) -> Vec<(u64, Delivery)> {
    let until = Instant::now() + wait;
    let mut ours = Vec::new();
    while Instant::now() < until {
        for d in consumer.poll(100, POLL_WAIT).await.expect("poll") {
            if let Some(seq) = marked.seq(&d) {
                ours.push((seq, d));
            }
        }
    }
    ours
}

fn seqs(range: std::ops::Range<u64>) -> HashSet<u64> {
    range.collect()
}

/// Within a partition offsets only grow; one key always maps to one partition.
fn assert_partition_order(deliveries: &[Delivery]) {
    let mut last: HashMap<(Topic, u32), u64> = HashMap::new();
    let mut home: HashMap<(Topic, u64), u32> = HashMap::new();
    for d in deliveries {
        if let Some(prev) = last.insert((d.topic, d.partition), d.offset) {
            assert!(d.offset > prev, "offsets go backwards in {:?}/{}: {prev} then {}", d.topic, d.partition, d.offset);
        }
        let p = *home.entry((d.topic, d.key)).or_insert(d.partition);
        assert_eq!(p, d.partition, "key {} of {:?} is in two partitions", d.key, d.topic);
    }
}

/// Per (topic, key), the first sighting of each seq comes in append order.
fn assert_key_order(ours: &[(u64, Delivery)]) {
    let mut seen = HashSet::new();
    let mut last: HashMap<(Topic, u64), u64> = HashMap::new();
    for (seq, d) in ours {
        if !seen.insert(*seq) {
            continue;
        }
        if let Some(prev) = last.insert((d.topic, d.key), *seq) {
            assert!(*seq > prev, "key {} of {:?}: seq {seq} arrived after {prev}", d.key, d.topic);
        }
    }
}

/// Records appended in several calls (one mixing topics) come back exactly once each, in
/// per-key order, with key, payload and headers intact.
pub async fn append_then_consume_in_key_order(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "order");
    let sent = m.batch(0..60, 6);
    log.append(sent[..25].to_vec()).await.expect("append");
    log.append(sent[25..26].to_vec()).await.expect("append one");
    log.append(Vec::new()).await.expect("append nothing");
    log.append(sent[26..].to_vec()).await.expect("append");

    // Subscribing after the appends: a new group starts at the beginning.
    let mut c = log.subscribe(&m.group("g"), &Topic::ALL).await.expect("subscribe");
    let (ours, everything) = collect(c.as_mut(), &m, &seqs(0..60)).await;
    assert_eq!(ours.len(), 60, "one consumer alone gets each record once");
    assert_partition_order(&everything);
    assert_key_order(&ours);
    for (seq, d) in &ours {
        let r = &sent[*seq as usize];
        assert_eq!((d.topic, d.key, &d.payload, &d.headers), (r.topic, r.key, &r.payload, &r.headers));
    }
    assert!(drain_for(c.as_mut(), &m, Duration::from_millis(300)).await.is_empty(), "nothing is handed out twice");
}

/// Two groups each get every record.
pub async fn every_group_sees_every_record(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "groups");
    let mut a = log.subscribe(&m.group("a"), &Topic::ALL).await.expect("subscribe a");
    let mut b = log.subscribe(&m.group("b"), &Topic::ALL).await.expect("subscribe b");
    log.append(m.batch(0..30, 5)).await.expect("append");
    for c in [&mut a, &mut b] {
        let (ours, everything) = collect(c.as_mut(), &m, &seqs(0..30)).await;
        assert_eq!(ours.len(), 30);
        assert_partition_order(&everything);
        assert_key_order(&ours);
    }
}

/// After a commit, the next member of the group starts after the committed point:
/// committed records are not redelivered, uncommitted ones are. Committing an older
/// delivery again never moves the committed point back.
pub async fn resumes_after_committed_offset(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "resume");
    let group = m.group("g");
    log.append(m.batch(0..40, 4)).await.expect("append");
    {
        let mut c = log.subscribe(&group, &Topic::ALL).await.expect("subscribe");
        let (ours, _) = collect(c.as_mut(), &m, &seqs(0..40)).await;
        let done: Vec<Delivery> = ours.iter().filter(|(s, _)| *s < 20).map(|(_, d)| d.clone()).collect();
        c.commit(&done).await.expect("commit");
        let oldest: Vec<Delivery> = ours.iter().filter(|(s, _)| *s == 0).map(|(_, d)| d.clone()).collect();
        c.commit(&oldest).await.expect("commit an old delivery again");
    }
    let mut c = log.subscribe(&group, &Topic::ALL).await.expect("subscribe again");
    let (mut ours, _) = collect(c.as_mut(), &m, &seqs(20..40)).await;
    ours.extend(drain_for(c.as_mut(), &m, Duration::from_millis(500)).await);
    let mut got: Vec<u64> = ours.iter().map(|(s, _)| *s).collect();
    got.sort();
    assert_eq!(got, (20..40).collect::<Vec<_>>(), "exactly the uncommitted records, once");
}

/// [`Consumer::commit_later`] and then a clean stop (the consumer dropped) is as good as
/// [`Consumer::commit`]: the next member starts after those records, and an old delivery
/// handed over again does not move the group back.
pub async fn resumes_after_commit_later_and_a_clean_stop(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "later");
    let group = m.group("g");
    log.append(m.batch(0..40, 4)).await.expect("append");
    {
        let mut c = log.subscribe(&group, &Topic::ALL).await.expect("subscribe");
        let (ours, _) = collect(c.as_mut(), &m, &seqs(0..40)).await;
        let done: Vec<Delivery> = ours.iter().filter(|(s, _)| *s < 20).map(|(_, d)| d.clone()).collect();
        c.commit_later(&done).await.expect("commit_later");
        let oldest: Vec<Delivery> = ours.iter().filter(|(s, _)| *s == 0).map(|(_, d)| d.clone()).collect();
        c.commit_later(&oldest).await.expect("commit_later an old delivery again");
    }
    let mut c = log.subscribe(&group, &Topic::ALL).await.expect("subscribe again");
    let (mut ours, _) = collect(c.as_mut(), &m, &seqs(20..40)).await;
    ours.extend(drain_for(c.as_mut(), &m, Duration::from_millis(500)).await);
    let mut got: Vec<u64> = ours.iter().map(|(s, _)| *s).collect();
    got.sort();
    assert_eq!(got, (20..40).collect::<Vec<_>>(), "exactly the records not committed later, once");
}

/// An idle poll waits about `max_wait` and returns nothing; a poll that is waiting
/// returns soon after an append instead of sleeping out its `max_wait`.
pub async fn poll_times_out_then_wakes_on_append(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "wait");
    let mut c = log.subscribe(&m.group("g"), &Topic::ALL).await.expect("subscribe");

    // Read past whatever other tests left in the topics, then time an idle poll. On a busy
    // shared broker the poll may legitimately return someone else's records.
    let started = Instant::now();
    let mut idle = false;
    while started.elapsed() < DEADLINE {
        let t = Instant::now();
        let got = c.poll(1000, Duration::from_millis(300)).await.expect("poll");
        assert!(got.iter().all(|d| m.seq(d).is_none()), "nothing of ours was appended yet");
        if got.is_empty() {
            let waited = t.elapsed();
            assert!(waited >= Duration::from_millis(250), "an empty poll returned after only {waited:?}");
            assert!(waited < Duration::from_secs(5), "an empty poll overslept: {waited:?}");
            idle = true;
            break;
        }
    }
    assert!(idle, "the topics never went quiet");

    let append = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.append(vec![m.record(Topic::Posts, 7, 0)]).await.expect("append");
    };
    let wait = async {
        let t = Instant::now();
        loop {
            let got = c.poll(100, Duration::from_secs(20)).await.expect("poll");
            if got.iter().any(|d| m.seq(d) == Some(0)) {
                return t.elapsed();
            }
            assert!(t.elapsed() < DEADLINE, "the appended record never arrived");
        }
    };
    let ((), waited) = tokio::join!(append, wait);
    assert!(waited < Duration::from_secs(10), "a waiting poll took {waited:?} to see an append");
}

/// What [`group_members_share_partitions`] saw, so an implementation that rebalances
/// synchronously can assert more (e.g. that no partition went to both members).
pub struct Shared {
    /// Our deliveries to the first member before the second left.
    pub first: Vec<Delivery>,
    /// Our deliveries to the second member.
    pub second: Vec<Delivery>,
}

/// Two members of one group together see every record, each in per-key order; when one
/// leaves without committing, the other gets the records it had.
pub async fn group_members_share_partitions(log: &dyn EventLog, namespace: &str) -> Shared {
    let m = Marked::new(namespace, "share");
    let group = m.group("g");
    let mut a = log.subscribe(&group, &Topic::ALL).await.expect("subscribe a");
    let mut b = log.subscribe(&group, &Topic::ALL).await.expect("subscribe b");
    log.append(m.batch(0..80, 16)).await.expect("append");

    let started = Instant::now();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    while seen.len() < 80 {
        assert!(started.elapsed() < DEADLINE, "members saw only {} of 80 records", seen.len());
        for (c, out) in [(&mut a, &mut from_a), (&mut b, &mut from_b)] {
            for d in c.poll(13, Duration::from_millis(50)).await.expect("poll") {
                if let Some(seq) = m.seq(&d) {
                    seen.insert(seq);
                    out.push((seq, d));
                }
            }
        }
    }
    assert_key_order(&from_a);
    assert_key_order(&from_b);

    // b leaves having committed nothing: a takes over its partitions from the start.
    let b_had: HashSet<u64> = from_b.iter().map(|(s, _)| *s).collect();
    drop(b);
    let (again, _) = collect(a.as_mut(), &m, &b_had).await;
    assert_key_order(&again);

    Shared { first: from_a.into_iter().map(|(_, d)| d).collect(), second: from_b.into_iter().map(|(_, d)| d).collect() }
}

/// Lag counts uncommitted records and reaches zero once everything is committed.
pub async fn lag_drops_to_zero_after_commit(log: &dyn EventLog, namespace: &str) {
    let m = Marked::new(namespace, "lag");
    log.append(m.batch(0..25, 5)).await.expect("append");
    let mut c = log.subscribe(&m.group("g"), &Topic::ALL).await.expect("subscribe");
    let (_, everything) = collect(c.as_mut(), &m, &seqs(0..25)).await;
    let lag = c.lag().await.expect("lag");
    assert!(lag >= 25, "25 records are polled but uncommitted, yet lag is {lag}");

    // Commit one delivery per partition (the last): that covers everything before it.
    let mut last: BTreeMap<(Topic, u32), Delivery> = BTreeMap::new();
    for d in everything {
        last.insert((d.topic, d.partition), d);
    }
    c.commit(&last.into_values().collect::<Vec<_>>()).await.expect("commit");

    // Others may append meanwhile on a shared broker: keep committing until quiet.
    let started = Instant::now();
    loop {
        let lag = c.lag().await.expect("lag");
        if lag == 0 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "lag stuck at {lag}");
        let more = c.poll(1000, POLL_WAIT).await.expect("poll");
        c.commit(&more).await.expect("commit");
    }
}
