//! Counters of the read path: `prometheus` counters (an increment is one relaxed atomic
//! add), put in the process's registry by [`ReadStats::register`].

use starling_metrics::prometheus::{IntCounter, IntCounterVec, Opts};
use starling_metrics::{Metrics, names, prometheus};

/// A service the read path calls on a miss (in-process in standalone mode, internal HTTP
/// when distributed).
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Graph = 0,
    Posts = 1,
}

const PEERS: [&str; 2] = ["graph-service", "post-service"];

/// A collection of the read model.
#[derive(Clone, Copy, Debug)]
pub enum Lookups {
    Posts = 0,
    Following = 1,
    Recent = 2,
    Celebrities = 3,
    Counts = 4,
    Interactions = 5,
    /// This process's own copy (`NearCopy`), in front of `posts`, `interactions` and
    /// `counts`: its hits are counted as hits of those too (a post found there is a cached
    /// post).
    NearPosts = 6,
    NearInteractions = 7,
    NearCounts = 8,
}

const COLLECTIONS: [&str; 9] = [
    "posts",
    "following",
    "recent",
    "celebrities",
    "counts",
    "interactions",
    "near_posts",
    "near_interactions",
    "near_counts",
];

#[derive(Debug)]
pub struct ReadStats {
    pub reads: IntCounter,
    /// Reads whose reader had a ready timeline in the cache.
    pub cache_hits: IntCounter,
    pub rebuilds: IntCounter,
    /// Rounds served by pulling from storage (below the floor, or no timeline).
    pub pulls: IntCounter,
    peer_calls: IntCounterVec,
    lookups: IntCounterVec,
    /// The vectors' children, made up front so that every series is exported from the
    /// start (as zero) and counting looks no label up: calls by [`Peer`], read-model hits
    /// and misses by [`Lookups`].
    calls: [IntCounter; PEERS.len()],
    hits: [IntCounter; COLLECTIONS.len()],
    misses: [IntCounter; COLLECTIONS.len()],
}

impl Default for ReadStats {
    fn default() -> Self {
        // Panics only for an invalid name or help, which are constants.
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("a valid metric definition");
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition")
        };
        let peer_calls =
            vec(names::TIMELINE_PEER_CALLS, "Calls the read path made to another service, by target.", &["target"]);
        let lookups =
            vec(names::READ_MODEL_LOOKUPS, "Read-model lookups, by collection and result.", &["cache", "result"]);
        let result = |r: &str| -> [IntCounter; COLLECTIONS.len()] {
            std::array::from_fn(|i| lookups.with_label_values(&[COLLECTIONS[i], r]))
        };
        ReadStats {
            reads: counter(names::TIMELINE_READS, "Home timeline pages served."),
            cache_hits: counter(names::TIMELINE_CACHE_HITS, "Reads that found a ready timeline."),
            rebuilds: counter(names::TIMELINE_REBUILDS, "Timelines rebuilt from storage."),
            pulls: counter(names::TIMELINE_PULL_ROUNDS, "Merge rounds that pulled from storage."),
            calls: PEERS.map(|target| peer_calls.with_label_values(&[target])),
            hits: result("hit"),
            misses: result("miss"),
            peer_calls,
            lookups,
        }
    }
}

impl ReadStats {
    pub(crate) fn call(&self, peer: Peer) {
        self.calls[peer as usize].inc();
    }

    pub(crate) fn lookup(&self, what: Lookups, hit: bool) {
        let counters = if hit { &self.hits } else { &self.misses };
        counters[what as usize].inc();
    }

    pub(crate) fn lookups(&self, what: Lookups, hits: usize, misses: usize) {
        self.hits[what as usize].inc_by(hits as u64);
        self.misses[what as usize].inc_by(misses as u64);
    }

    /// Calls the read path made to `peer` so far.
    pub fn calls(&self, peer: Peer) -> u64 {
        self.calls[peer as usize].get()
    }

    /// Adds these counters to `metrics`' registry.
    pub fn register(&self, metrics: &Metrics) -> prometheus::Result<()> {
        for c in [&self.reads, &self.cache_hits, &self.rebuilds, &self.pulls] {
            metrics.register(c.clone())?;
        }
        metrics.register(self.peer_calls.clone())?;
        metrics.register(self.lookups.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_renders_from_zero_under_its_labels() {
        let stats = ReadStats::default();
        let metrics = Metrics::new("timeline-service");
        stats.register(&metrics).unwrap();
        stats.reads.inc();
        stats.call(Peer::Posts);
        stats.lookups(Lookups::Counts, 3, 1);
        let text = metrics.render();
        for line in [
            format!("{} 1\n", names::TIMELINE_READS),
            format!("{} 0\n", names::TIMELINE_REBUILDS),
            format!("{}{{target=\"graph-service\"}} 0\n", names::TIMELINE_PEER_CALLS),
            format!("{}{{target=\"post-service\"}} 1\n", names::TIMELINE_PEER_CALLS),
            format!("{}{{cache=\"counts\",result=\"hit\"}} 3\n", names::READ_MODEL_LOOKUPS),
            format!("{}{{cache=\"counts\",result=\"miss\"}} 1\n", names::READ_MODEL_LOOKUPS),
            format!("{}{{cache=\"posts\",result=\"miss\"}} 0\n", names::READ_MODEL_LOOKUPS),
        ] {
            assert!(text.contains(&line), "{line}in:\n{text}");
        }
        assert_eq!(stats.calls(Peer::Posts), 1);
    }
}
