//! Append throughput of the Kafka event log: `EventLog::append` with batches of 1000
//! `PostCreated` events (each with a `traceparent` header), timed until the broker has
//! acknowledged every record (`acks=all`, idempotent producer).
//!
//! ```sh
//! source scripts/lib/kafka.sh && kafka_start 19093 /tmp/kafka-bench
//! KAFKA_BROKERS=127.0.0.1:19093 cargo bench -p starling-events --bench kafka_append
//! kafka_stop /tmp/kafka-bench && rm -rf /tmp/kafka-bench
//! ```
//!
//! `-- quick` runs a tenth of the batches. Without `KAFKA_BROKERS` it prints a skip line.
//! Topics get a fresh prefix each run (8 partitions, the default). Use a fresh broker
//! directory for each run: noida-db keeps its whole state in one JSON file that it
//! rewrites as it grows (~1 KB per record here), and later runs on a big one are slower.
//!
//! Last run (November 2026; release; noida-db 0.2.3 on loopback; broker, bench and other
//! people's builds sharing the 2 cores; three runs on one fresh broker gave 330k–480k
//! records/s for one appender and 420k–590k for four, the first run the fastest):
//!
//! | appenders | batches × records | seconds | records/s | batch p50 ms | batch p99 ms |
//! |---:|---:|---:|---:|---:|---:|
//! | 1 | 200 × 1000 | 0.41 | 482159 | 1.8 | 9.6 |
//! | 4 | 200 × 1000 | 0.37 | 540560 | 6.7 | 14.2 |
//!
//! single-record append, 1000 in a row: p50 0.09 ms, p99 2.83 ms
//!
//! `linger.ms` 0 (the default in `KafkaOptions`) against 1 and 2 ms, same set-up: one
//! appender 540k vs 375k vs 260k records/s, single-record p50 0.11 vs 1.2 vs 2.2 ms; four
//! appenders within noise of each other (600k–850k).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use starling_events::kafka::{KafkaLog, KafkaOptions};
use starling_events::{EventLog, Record, event_id, now_ms, pb};

const BATCH: usize = 1000;

fn batch(author_base: u64, n: u64) -> Vec<Record> {
    (0..BATCH as u64)
        .map(|i| {
            let author = author_base + (n * BATCH as u64 + i) % 10_000;
            let event = pb::PostEvent {
                event_id: event_id(),
                occurred_at_ms: now_ms(),
                kind: Some(pb::post_event::Kind::Created(pb::PostCreated {
                    post_id: (now_ms() as u64) << 22 | i,
                    author_id: author,
                    reply_to: None,
                    reblog_of: None,
                })),
            };
            let mut r = Record::post(author, &event);
            r.headers.push((
                "traceparent".into(),
                Bytes::from_static(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ));
            r
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `appenders` tasks, each appending `batches` batches one after another.
async fn run(log: &Arc<KafkaLog>, appenders: usize, batches: u64) {
    // Build the records first so the timing covers only the appends.
    let work: Vec<Vec<Vec<Record>>> =
        (0..appenders).map(|a| (0..batches).map(|n| batch(1_000_000 * (a as u64 + 1), n)).collect()).collect();
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(batches.len());
                for b in batches {
                    let t = Instant::now();
                    log.append(b).await.expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("appender"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let records = latencies.len() * BATCH;
    println!(
        "| {appenders} | {} × {BATCH} | {elapsed:.2} | {:.0} | {:.1} | {:.1} |",
        latencies.len(),
        records as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}

/// Latency of one-record appends, as the write path of an HTTP request pays it.
async fn single(log: &Arc<KafkaLog>, n: u64) {
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut records = batch(7, i);
        records.truncate(1);
        let t = Instant::now();
        log.append(records).await.expect("append");
        latencies.push(t.elapsed());
    }
    latencies.sort_unstable();
    println!();
    println!(
        "single-record append, {n} in a row: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}

fn main() {
    let Ok(brokers) = std::env::var("KAFKA_BROKERS") else {
        println!("skipped: KAFKA_BROKERS not set");
        return;
    };
    let quick = std::env::args().any(|a| a == "quick");
    let batches = if quick { 20 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let prefix = format!("bench-{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let log = KafkaLog::connect(KafkaOptions { topic_prefix: prefix, ..KafkaOptions::new(brokers) })
            .await
            .expect("connect");
        // Warm-up: connections, producer id, topic metadata.
        for n in 0..5 {
            log.append(batch(1, n)).await.expect("append");
        }
        println!("| appenders | batches × records | seconds | records/s | batch p50 ms | batch p99 ms |");
        println!("|---:|---:|---:|---:|---:|---:|");
        run(&log, 1, batches).await;
        run(&log, 4, batches / 4).await;
        single(&log, if quick { 100 } else { 1000 }).await;
    });
}
