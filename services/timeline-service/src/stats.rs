//! Counters of the read path, rendered for `/metrics`.

use starling_metrics::names;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

const COLLECTIONS: [&str; 6] = ["posts", "following", "recent", "celebrities", "counts", "interactions"];

#[derive(Debug, Default)]
pub struct ReadStats {
    pub reads: AtomicU64,
    /// Reads whose reader had a ready timeline in the cache.
    pub cache_hits: AtomicU64,
    pub rebuilds: AtomicU64,
    /// Rounds served by pulling from storage (below the floor, or no timeline).
    pub pulls: AtomicU64,
    /// Calls to another service, by [`Peer`].
    calls: [AtomicU64; 2],
    /// Read-model hits and misses, by [`Lookups`].
    hits: [AtomicU64; COLLECTIONS.len()],
    misses: [AtomicU64; COLLECTIONS.len()],
}

impl ReadStats {
    pub(crate) fn call(&self, peer: Peer) {
        self.calls[peer as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, what: Lookups, hit: bool) {
        let counters = if hit { &self.hits } else { &self.misses };
        counters[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lookups(&self, what: Lookups, hits: usize, misses: usize) {
        self.hits[what as usize].fetch_add(hits as u64, Ordering::Relaxed);
        self.misses[what as usize].fetch_add(misses as u64, Ordering::Relaxed);
    }

    /// Calls the read path made to `peer` so far.
    pub fn calls(&self, peer: Peer) -> u64 {
        self.calls[peer as usize].load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let rows = [
            (names::TIMELINE_READS, "Home timeline pages served.", &self.reads),
            (names::TIMELINE_CACHE_HITS, "Reads that found a ready timeline.", &self.cache_hits),
            (names::TIMELINE_REBUILDS, "Timelines rebuilt from storage.", &self.rebuilds),
            (names::TIMELINE_PULL_ROUNDS, "Merge rounds that pulled from storage.", &self.pulls),
        ];
        let mut out = String::new();
        for (name, help, v) in rows {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n", v.load(Ordering::Relaxed));
        }
        let name = names::TIMELINE_PEER_CALLS;
        let _ = write!(
            out,
            "# HELP {name} Calls the read path made to another service, by target.\n# TYPE {name} counter\n"
        );
        for (target, v) in PEERS.iter().zip(&self.calls) {
            let _ = writeln!(out, "{name}{{target=\"{target}\"}} {}", v.load(Ordering::Relaxed));
        }
        let name = names::READ_MODEL_LOOKUPS;
        let _ = write!(out, "# HELP {name} Read-model lookups, by collection and result.\n# TYPE {name} counter\n");
        for (i, cache) in COLLECTIONS.iter().enumerate() {
            for (result, v) in [("hit", &self.hits[i]), ("miss", &self.misses[i])] {
                let _ = writeln!(out, "{name}{{cache=\"{cache}\",result=\"{result}\"}} {}", v.load(Ordering::Relaxed));
            }
        }
        out
    }
}
