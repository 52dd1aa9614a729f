//! Counters the fan-out worker keeps, for metrics and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Events applied.
    pub events: Counter,
    /// Timeline entries written by pushes (not counting backfills).
    pub inserts: Counter,
    /// Pushes skipped because the follower has no materialised timeline (inactive).
    pub skipped_inactive: Counter,
    /// Posts pushed to followers (ordinary authors).
    pub posts_pushed: Counter,
    /// Posts left to read-time merge (celebrity authors).
    pub posts_merged_at_read: Counter,
    /// Entries inserted by backfills (follow, demotion).
    pub backfilled: Counter,
    pub retries: Counter,
    pub dead_letters: Counter,
    /// Last known lag of each consumer in this process (records not yet committed).
    pub lag: parking_lot::Mutex<Vec<u64>>,
}

impl FanoutStats {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows = [
            ("starling_fanout_events_total", "Events applied.", self.events.get()),
            ("starling_fanout_timeline_inserts_total", "Timeline entries written by pushes.", self.inserts.get()),
            (
                "starling_fanout_skipped_inactive_total",
                "Pushes skipped for readers without a timeline.",
                self.skipped_inactive.get(),
            ),
            ("starling_fanout_posts_pushed_total", "Posts pushed to followers.", self.posts_pushed.get()),
            (
                "starling_fanout_posts_merged_at_read_total",
                "Celebrity posts left to read-time merge.",
                self.posts_merged_at_read.get(),
            ),
            ("starling_fanout_backfilled_entries_total", "Entries inserted by backfills.", self.backfilled.get()),
            ("starling_fanout_retries_total", "Transient failures retried.", self.retries.get()),
            ("starling_fanout_dead_letters_total", "Undecodable events skipped.", self.dead_letters.get()),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        let lag: u64 = self.lag.lock().iter().sum();
        out.push_str(&format!(
            "# HELP starling_fanout_lag Records in this process's partitions not yet applied.\n# TYPE starling_fanout_lag gauge\nstarling_fanout_lag {lag}\n"
        ));
        out
    }
}
