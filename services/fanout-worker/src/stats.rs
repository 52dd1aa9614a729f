//! Counters the fan-out worker keeps, for metrics and benchmarks.

use starling_metrics::names;
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

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows = [
            (names::FANOUT_EVENTS, "Events applied, slices included.", self.events.get()),
            (names::FANOUT_TIMELINE_INSERTS, "Timeline entries written by pushes.", self.inserts.get()),
            (
                names::FANOUT_SKIPPED_INACTIVE,
                "Pushes skipped for readers without a timeline.",
                self.skipped_inactive.get(),
            ),
            (names::FANOUT_POSTS_PUSHED, "Posts pushed to followers.", self.posts_pushed.get()),
            (
                names::FANOUT_POSTS_MERGED_AT_READ,
                "Celebrity posts left to read-time merge.",
                self.posts_merged_at_read.get(),
            ),
            (names::FANOUT_BACKFILLED, "Entries inserted by backfills.", self.backfilled.get()),
            (names::FANOUT_RETRIES, "Transient failures retried.", self.retries.get()),
            (names::FANOUT_DEAD_LETTERS, "Undecodable events skipped.", self.dead_letters.get()),
            (
                names::FANOUT_SLICES_PUBLISHED,
                "Slices of long follower lists published for the workers to share.",
                self.slices_published.get(),
            ),
            (names::FANOUT_SLICES_APPLIED, "Follower-list slices applied.", self.slices_applied.get()),
            (
                names::FANOUT_CONSUMER_REBUILDS,
                "Consumers that rejoined the group after stalling with records waiting.",
                self.consumer_rebuilds.get(),
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        out.push_str(&self.by_followers.render());
        let lag: u64 = self.lag.lock().iter().sum();
        let name = names::FANOUT_LAG;
        out.push_str(&format!(
            "# HELP {name} Records in this process's partitions not yet applied.\n# TYPE {name} gauge\n{name} {lag}\n"
        ));
        out
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
#[derive(Debug, Default)]
pub struct ByFollowers {
    posts: [Counter; DECADES],
    targets: [Counter; DECADES],
}

impl ByFollowers {
    pub fn pushed(&self, followers: usize) {
        let d = decade(followers);
        self.posts[d].inc();
        self.targets[d].add(followers as u64);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counters) in [
            (names::FANOUT_PUSHED_POSTS_BY_FOLLOWERS, "Pushed posts by the author's follower count.", &self.posts),
            (names::FANOUT_PUSH_TARGETS_BY_FOLLOWERS, "Timelines targeted by those pushes.", &self.targets),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (i, c) in counters.iter().enumerate() {
                out.push_str(&format!("{name}{{followers=\"{}\"}} {}\n", decade_label(i), c.get()));
            }
        }
        out
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
        let b = ByFollowers::default();
        b.pushed(75);
        b.pushed(12);
        let text = b.render();
        let (posts, targets) = (names::FANOUT_PUSHED_POSTS_BY_FOLLOWERS, names::FANOUT_PUSH_TARGETS_BY_FOLLOWERS);
        assert!(text.contains(&format!("{posts}{{followers=\"10-99\"}} 2\n")), "{text}");
        assert!(text.contains(&format!("{targets}{{followers=\"10-99\"}} 87\n")), "{text}");
    }
}
