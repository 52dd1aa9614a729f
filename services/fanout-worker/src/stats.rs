//! What the fan-out worker measures, for `/metrics` and the benchmarks: counters of the
//! `prometheus` crate (an increment is one relaxed atomic add, as the plain atomics they
//! replaced), the apply-time and delivery-lag histograms, and the consumers' lag, read
//! when scraped. [`FanoutStats::register`] puts them in the process's registry; a bench or
//! test that never registers them reads them with [`Counter::get`].

use std::sync::Arc;
use std::time::Instant;

use starling_events::Topic;
use starling_ids::PostId;
use starling_metrics::prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use starling_metrics::{Metrics, Pulled, names, prometheus};

/// Apply-time buckets, in seconds: a run is a few cache round trips (milliseconds); a
/// long one, or one retried while a dependency is down, takes seconds.
const APPLY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Delivery-lag buckets, in seconds. 1 is the objective (`k8s/monitoring/rules.yaml` reads
/// its `le="1"` bucket), so it must stay a bound; above it, how late a backlog is.
const DELIVERY_BUCKETS: [f64; 14] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

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
    /// Time to apply a run or a lone event, by topic; one child per topic, indexed like
    /// [`Topic::ALL`], so that observing looks no label up.
    apply: ApplyTimes,
    /// Seconds from a post's acceptance to its pushes being written.
    delivery: Histogram,
}

#[derive(Debug)]
struct ApplyTimes {
    vec: HistogramVec,
    by_topic: [Histogram; Topic::ALL.len()],
}

impl Default for FanoutStats {
    fn default() -> Self {
        let c = Counter::new;
        let apply = HistogramVec::new(
            HistogramOpts::new(
                names::FANOUT_EVENT_APPLY_DURATION,
                "Time to apply a run of events (consecutive posts, or graph edges, of one partition, \
                 applied together) or an event applied alone, retries included, by topic.",
            )
            .buckets(APPLY_BUCKETS.to_vec()),
            &["topic"],
        )
        .expect("a valid metric definition");
        let by_topic = Topic::ALL.map(|t| apply.with_label_values(&[t.name()]));
        let delivery = Histogram::with_opts(
            HistogramOpts::new(
                names::FANOUT_DELIVERY_LAG,
                "Seconds from a post's acceptance (the time in its id) to its timeline pushes being \
                 written, once per post event and per follower-list slice applied.",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
        )
        .expect("a valid metric definition");
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
            apply: ApplyTimes { vec: apply, by_topic },
            delivery,
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

    /// An event applied alone, or a run of graph edges, that started at `started`.
    pub(crate) fn applied(&self, topic: Topic, started: Instant) {
        self.apply.by_topic[topic_index(topic)].observe(started.elapsed().as_secs_f64());
    }

    /// A run of pushes whose writes all succeeded, started at `started`: `posts` holds each
    /// push's post and whether it is a slice (all of a run are, or none: a run is one
    /// partition of one topic). Each push counts as a delivery of its post, timed from
    /// the post's acceptance: a post id carries the millisecond it was made, which the
    /// post-service does as it accepts the post, and unlike the event's `occurred_at_ms`
    /// that holds for slices too (a slice's own time is when the worker split the post).
    pub(crate) fn applied_run(&self, started: Instant, posts: impl IntoIterator<Item = (PostId, bool)>) {
        let now_ms = u64::try_from(starling_events::now_ms()).unwrap_or(0);
        let mut topic = Topic::Posts;
        for (post, slice) in posts {
            if slice {
                topic = Topic::Fanout;
            }
            // A clock behind the post-service's would make this negative: count it as no lag.
            let lag_ms = now_ms.saturating_sub(post.unix_millis());
            self.delivery.observe(lag_ms as f64 / 1000.0);
        }
        self.applied(topic, started);
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
        metrics.register(self.apply.vec.clone())?;
        metrics.register(self.delivery.clone())?;
        let stats = self.clone();
        metrics.register(Pulled::gauge(
            names::FANOUT_LAG,
            "Records in this process's partitions not yet applied.",
            move || stats.lag.lock().iter().sum::<u64>() as f64,
        ))
    }
}

fn topic_index(topic: Topic) -> usize {
    Topic::ALL.iter().position(|&t| t == topic).unwrap_or(0)
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

    #[test]
    fn a_run_is_timed_under_its_topic_and_each_push_by_its_post_age() {
        let stats = Arc::new(FanoutStats::default());
        let metrics = Metrics::new("fanout-worker");
        stats.register(&metrics).unwrap();
        let now = u64::try_from(starling_events::now_ms()).unwrap();
        let made_at = |ago_ms: u64| starling_ids::post_id_floor_at(now - ago_ms);
        stats.applied_run(Instant::now(), [(made_at(200), false), (made_at(3_000), false)]);
        stats.applied_run(Instant::now(), [(made_at(100), true)]);
        // A post id from the future (the post-service's clock ahead of ours) is no lag.
        stats.applied_run(Instant::now(), [(starling_ids::post_id_floor_at(now + 60_000), false)]);
        stats.applied(Topic::Graph, Instant::now());
        let text = metrics.render();
        let lag = names::FANOUT_DELIVERY_LAG;
        assert!(text.contains(&format!("{lag}_count 4\n")), "{text}");
        // 0, 0.1 and 0.2 s are within 1 s; 3 s is not. The bound is written `1`, as the rules match it.
        assert!(text.contains(&format!("{lag}_bucket{{le=\"1\"}} 3\n")), "{text}");
        assert!(text.contains(&format!("{lag}_bucket{{le=\"5\"}} 4\n")), "{text}");
        let apply = names::FANOUT_EVENT_APPLY_DURATION;
        for (topic, n) in [("posts.v1", 2), ("fanout.v1", 1), ("graph.v1", 1)] {
            assert!(text.contains(&format!("{apply}_count{{topic=\"{topic}\"}} {n}\n")), "{topic}:\n{text}");
        }
    }
}
