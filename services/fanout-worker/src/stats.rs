//! What the fan-out worker measures, for `/metrics` and the benchmarks: counters of the
//! `prometheus` crate (an increment is one relaxed atomic add, as the plain atomics they
//! replaced), and the consumers' lag, read when scraped. [`FanoutStats::register`] puts them in the process's registry; a bench or
//! test that never registers them reads them with [`Counter::get`].

use std::sync::Arc;

use starling_metrics::prometheus::{IntCounter, IntCounterVec, Opts};
use starling_metrics::{Metrics, Pulled, names, prometheus};

/// A counter the worker bumps; registered under its name by [`FanoutStats::register`].
#[derive(Clone, Debug)]
pub struct Counter(IntCounter);

impl Counter {
    /// Panics only for an invalid name or help, which are constants.
    fn new(name: &str, help: &str) -> Counter {
        Counter(IntCounter::new(name, help).expect("a valid metric definition"))
    }

    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Debug)]
pub struct FanoutStats {
    /// Events applied, slices included.
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
    /// Slices of long follower lists this process published to the log, and applied.
    pub slices_published: Counter,
    pub slices_applied: Counter,
    /// Consumers rebuilt because they reported lag but received nothing (stalled).
    pub consumer_rebuilds: Counter,
    /// Posts by their author's follower count, for "fan-out against follower count".
    pub by_followers: ByFollowers,
    /// Last known lag of each consumer in this process (records not yet committed).
    pub lag: parking_lot::Mutex<Vec<u64>>,
}

impl Default for FanoutStats {
    fn default() -> Self {
        let c = Counter::new;
        FanoutStats {
            events: c(names::FANOUT_EVENTS, "Events applied, slices included."),
            inserts: c(names::FANOUT_TIMELINE_INSERTS, "Timeline entries written by pushes."),
            skipped_inactive: c(names::FANOUT_SKIPPED_INACTIVE, "Pushes skipped for readers without a timeline."),
            posts_pushed: c(names::FANOUT_POSTS_PUSHED, "Posts pushed to followers."),
            posts_merged_at_read: c(names::FANOUT_POSTS_MERGED_AT_READ, "Celebrity posts left to read-time merge."),
            backfilled: c(names::FANOUT_BACKFILLED, "Entries inserted by backfills."),
            retries: c(names::FANOUT_RETRIES, "Transient failures retried."),
            dead_letters: c(names::FANOUT_DEAD_LETTERS, "Undecodable events skipped."),
            slices_published: c(
                names::FANOUT_SLICES_PUBLISHED,
                "Slices of long follower lists published for the workers to share.",
            ),
            slices_applied: c(names::FANOUT_SLICES_APPLIED, "Follower-list slices applied."),
            consumer_rebuilds: c(
                names::FANOUT_CONSUMER_REBUILDS,
                "Consumers that rejoined the group after stalling with records waiting.",
            ),
            by_followers: ByFollowers::default(),
            lag: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl FanoutStats {
    /// Whether `events` events from the services (slices not counted) are applied, and with
    /// them every slice this process published: "done" for a single-process test or bench.
    pub fn applied_all(&self, events: u64) -> bool {
        // In this order: a run publishes its slices before it counts its events, so once
        // `events` counts a post, `published` already counts its slices.
        let from_services = self.service_events();
        from_services >= events && self.slices_applied.get() >= self.slices_published.get()
    }

    /// Events from the services applied: `events` without the slices (which may be
    /// counted a moment later than their own tally, so this can briefly read low).
    pub fn service_events(&self) -> u64 {
        let all = self.events.get();
        all.saturating_sub(self.slices_applied.get())
    }

    /// Adds these metrics to `metrics`' registry. The consumers' lag is read when scraped.
    pub fn register(self: &Arc<Self>, metrics: &Metrics) -> prometheus::Result<()> {
        for c in [
            &self.events,
            &self.inserts,
            &self.skipped_inactive,
            &self.posts_pushed,
            &self.posts_merged_at_read,
            &self.backfilled,
            &self.retries,
            &self.dead_letters,
            &self.slices_published,
            &self.slices_applied,
            &self.consumer_rebuilds,
        ] {
            metrics.register(c.0.clone())?;
        }
        metrics.register(self.by_followers.posts_vec.clone())?;
        metrics.register(self.by_followers.targets_vec.clone())?;
        let stats = self.clone();
        metrics.register(Pulled::gauge(
            names::FANOUT_LAG,
            "Records in this process's partitions not yet applied.",
            move || stats.lag.lock().iter().sum::<u64>() as f64,
        ))
    }
}

/// Follower-count decades: 0, 1–9, 10–99, … , 1M and more.
pub const DECADES: usize = 8;

/// The label of decade `i`, as the replay report spells it.
pub fn decade_label(i: usize) -> String {
    match i {
        0 => "0".to_owned(),
        i if i == DECADES - 1 => format!("{}+", 10u64.pow(i as u32 - 1)),
        i => format!("{}-{}", 10u64.pow(i as u32 - 1), 10u64.pow(i as u32) - 1),
    }
}

pub fn decade(followers: usize) -> usize {
    if followers == 0 { 0 } else { (followers.ilog10() as usize + 1).min(DECADES - 1) }
}

/// Pushed posts and their push targets per follower-count decade. Celebrity posts are
/// counted apart: they are never pushed, and learning their follower count would cost
/// the lookup their class exists to avoid.
#[derive(Debug)]
pub struct ByFollowers {
    posts_vec: IntCounterVec,
    targets_vec: IntCounterVec,
    /// The vectors' children, one per decade, made up front: every decade is exported
    /// from the start (as zero), and a push looks no label up.
    posts: [IntCounter; DECADES],
    targets: [IntCounter; DECADES],
}

impl Default for ByFollowers {
    fn default() -> Self {
        let vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["followers"]).expect("a valid metric definition")
        };
        let posts_vec = vec(names::FANOUT_PUSHED_POSTS_BY_FOLLOWERS, "Pushed posts by the author's follower count.");
        let targets_vec = vec(names::FANOUT_PUSH_TARGETS_BY_FOLLOWERS, "Timelines targeted by those pushes.");
        let children = |v: &IntCounterVec| std::array::from_fn(|i| v.with_label_values(&[decade_label(i).as_str()]));
        ByFollowers { posts: children(&posts_vec), targets: children(&targets_vec), posts_vec, targets_vec }
    }
}

impl ByFollowers {
    pub fn pushed(&self, followers: usize) {
        let d = decade(followers);
        self.posts[d].inc();
        self.targets[d].inc_by(followers as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_and_their_labels() {
        assert_eq!([0, 1, 9, 10, 99, 100, 5_000_000].map(decade), [0, 1, 1, 2, 2, 3, 7]);
        assert_eq!(
            (decade_label(0), decade_label(2), decade_label(7)),
            ("0".into(), "10-99".into(), "1000000+".into())
        );
        let stats = Arc::new(FanoutStats::default());
        stats.by_followers.pushed(75);
        stats.by_followers.pushed(12);
        let metrics = Metrics::new("fanout-worker");
        stats.register(&metrics).unwrap();
        let text = metrics.render();
        let (posts, targets) = (names::FANOUT_PUSHED_POSTS_BY_FOLLOWERS, names::FANOUT_PUSH_TARGETS_BY_FOLLOWERS);
        assert!(text.contains(&format!("{posts}{{followers=\"10-99\"}} 2\n")), "{text}");
        assert!(text.contains(&format!("{targets}{{followers=\"10-99\"}} 87\n")), "{text}");
        assert!(text.contains(&format!("{posts}{{followers=\"1000000+\"}} 0\n")), "every decade, from zero:\n{text}");
    }

    #[test]
    fn counters_render_under_their_names_and_lag_is_read_when_scraped() {
        let stats = Arc::new(FanoutStats::default());
        let metrics = Metrics::new("fanout-worker");
        stats.register(&metrics).unwrap();
        stats.events.add(5);
        stats.inserts.inc();
        *stats.lag.lock() = vec![3, 4];
        let text = metrics.render();
        assert!(text.contains(&format!("# TYPE {0} counter\n{0} 5\n", names::FANOUT_EVENTS)), "{text}");
        assert!(text.contains(&format!("{} 1\n", names::FANOUT_TIMELINE_INSERTS)), "{text}");
        assert!(text.contains(&format!("# TYPE {0} gauge\n{0} 7\n", names::FANOUT_LAG)), "{text}");
        assert_eq!(stats.events.get(), 5, "what the benches read is what is exported");
    }
}
