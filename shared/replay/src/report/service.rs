//! What the services say about themselves, read from their `/metrics` before and after
//! the timed phase: fan-out and read-path counters, the cache's size, each process's CPU
//! time, and the fan-out by the authors' follower counts.

use std::collections::HashMap;

use serde::Serialize;
use starling_metrics::names;

/// Counters the services keep about themselves, as differences over the timed phase
/// (None where the deployment does not expose the counter).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceMetrics {
    pub events_published: Option<f64>,
    pub fanout_events_applied: Option<f64>,
    pub posts_pushed: Option<f64>,
    pub posts_merged_at_read: Option<f64>,
    pub timeline_inserts: Option<f64>,
    pub skipped_inactive: Option<f64>,
    pub backfilled_entries: Option<f64>,
    pub dead_letters: Option<f64>,
    pub timeline_reads: Option<f64>,
    pub cache_hits: Option<f64>,
    pub rebuilds: Option<f64>,
    pub storage_pull_rounds: Option<f64>,
    /// Calls the read path made to the graph and post stores (or services) on read-model misses.
    pub read_path_store_calls: Option<f64>,
    /// Celebrities' recent-post lists the read path merged (read-model lookups of them).
    pub celebrity_lists_merged: Option<f64>,
    /// Timeline inserts per post fanned out (pushed or merged at read).
    pub inserts_per_post: Option<f64>,
    /// Reads that found a materialised timeline.
    pub cache_hit_rate: Option<f64>,
    /// Storage reads per home-timeline page: store calls on read-model misses, merge rounds
    /// that pulled from storage, and rebuilds.
    pub storage_reads_per_page: Option<f64>,
    pub celebrity_lists_per_page: Option<f64>,
}

impl ServiceMetrics {
    pub fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> ServiceMetrics {
        let d = |k: &str| after.get(k).map(|a| a - before.get(k).copied().unwrap_or(0.0));
        let mut m = ServiceMetrics {
            events_published: d(names::EVENTS_PUBLISHED),
            fanout_events_applied: d(names::FANOUT_EVENTS),
            posts_pushed: d(names::FANOUT_POSTS_PUSHED),
            posts_merged_at_read: d(names::FANOUT_POSTS_MERGED_AT_READ),
            timeline_inserts: d(names::FANOUT_TIMELINE_INSERTS),
            skipped_inactive: d(names::FANOUT_SKIPPED_INACTIVE),
            backfilled_entries: d(names::FANOUT_BACKFILLED),
            dead_letters: d(names::FANOUT_DEAD_LETTERS),
            timeline_reads: d(names::TIMELINE_READS),
            cache_hits: d(names::TIMELINE_CACHE_HITS),
            rebuilds: d(names::TIMELINE_REBUILDS),
            storage_pull_rounds: d(names::TIMELINE_PULL_ROUNDS),
            read_path_store_calls: delta_of_series(before, after, names::TIMELINE_PEER_CALLS, None),
            celebrity_lists_merged: delta_of_series(
                before,
                after,
                names::READ_MODEL_LOOKUPS,
                Some(("cache", "recent")),
            ),
            ..ServiceMetrics::default()
        };
        let posts = m.posts_pushed.unwrap_or(0.0) + m.posts_merged_at_read.unwrap_or(0.0);
        m.inserts_per_post = m.timeline_inserts.filter(|_| posts > 0.0).map(|i| i / posts);
        let reads = m.timeline_reads.filter(|r| *r > 0.0);
        m.cache_hit_rate = m.cache_hits.zip(reads).map(|(h, r)| h / r);
        m.storage_reads_per_page = reads.and_then(|r| {
            let storage = m.read_path_store_calls? + m.storage_pull_rounds? + m.rebuilds?;
            Some(storage / r)
        });
        m.celebrity_lists_per_page = m.celebrity_lists_merged.zip(reads).map(|(l, r)| l / r);
        m
    }
}

/// The sum over every series of `name` (with `label="value"` among its labels, if given),
/// as the difference between two scrapes; None if no series of it was exported.
fn delta_of_series(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    let sum = |m: &HashMap<String, f64>| sum_of_series(m, name, label);
    sum(after).map(|a| a - sum(before).unwrap_or(0.0))
}

fn sum_of_series(m: &HashMap<String, f64>, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    let mut found = None;
    for (key, value) in m {
        let labels = match key.strip_prefix(name) {
            Some("") => "",
            Some(rest) if rest.starts_with('{') => rest,
            _ => continue,
        };
        if wanted.as_ref().is_none_or(|w| labels.contains(w.as_str())) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// What the timeline cache holds when the run ends (standalone's in-process cache; a
/// deployment on Redis does not export these).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheSize {
    pub timelines: Option<f64>,
    pub entries: Option<f64>,
    pub bytes: Option<f64>,
}

impl CacheSize {
    pub fn from_metrics(m: &HashMap<String, f64>) -> CacheSize {
        let get = |k: &str| m.get(k).copied();
        CacheSize {
            timelines: get(names::TIMELINES_MATERIALISED),
            entries: get(names::TIMELINE_CACHE_ENTRIES),
            bytes: get(names::TIMELINE_CACHE_BYTES),
        }
    }
}

/// CPU time one process (one metrics endpoint) spent from the start of the timed phase
/// until the fan-out had caught up after it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCpu {
    pub endpoint: String,
    /// The `service` label of its HTTP metrics (`starling` for the all-in-one process).
    pub service: Option<String>,
    pub cpu_seconds: Option<f64>,
}

impl ProcessCpu {
    /// One entry per endpoint that answered both scrapes.
    pub fn between(
        before: &[(String, HashMap<String, f64>)],
        after: &[(String, HashMap<String, f64>)],
    ) -> Vec<ProcessCpu> {
        const CPU: &str = "process_cpu_seconds_total";
        after
            .iter()
            .map(|(endpoint, a)| {
                let b = before.iter().find(|(e, _)| e == endpoint).map(|(_, b)| b);
                let service = a.keys().filter(|k| k.starts_with(names::HTTP_REQUESTS)).find_map(|k| {
                    let rest = &k[k.find("service=\"")? + "service=\"".len()..];
                    Some(rest[..rest.find('"')?].to_owned())
                });
                let cpu_seconds = b.and_then(|b| Some(a.get(CPU)? - b.get(CPU)?));
                ProcessCpu { endpoint: endpoint.clone(), service, cpu_seconds }
            })
            .collect()
    }
}

/// Cumulative service counters at one moment of the timed phase.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceSample {
    pub t_s: f64,
    pub timeline_inserts: Option<f64>,
    pub fanout_events_applied: Option<f64>,
    pub timeline_reads: Option<f64>,
}

impl ServiceSample {
    pub fn from_metrics(t_s: f64, m: &HashMap<String, f64>) -> ServiceSample {
        ServiceSample {
            t_s,
            timeline_inserts: m.get(names::FANOUT_TIMELINE_INSERTS).copied(),
            fanout_events_applied: m.get(names::FANOUT_EVENTS).copied(),
            timeline_reads: m.get(names::TIMELINE_READS).copied(),
        }
    }
}

/// Posts whose author had a follower count in one decade (0, 1-9, 10-99, …): counted by
/// the replay (with the author's follower count when the post was accepted) and, where the
/// fan-out exposes it, by the fan-out itself (posts it pushed, and to how many timelines).
#[derive(Clone, Debug, Serialize)]
pub struct FollowerBucket {
    pub followers: String,
    pub posts: u64,
    pub mean_followers: f64,
    pub service_pushed_posts: Option<f64>,
    pub service_push_targets_per_post: Option<f64>,
}

impl FollowerBucket {
    pub fn new(index: usize, last: bool, posts: u64, followers_sum: u64) -> FollowerBucket {
        let followers = match index {
            0 => "0".to_owned(),
            i if last => format!("{}+", 10u64.pow(i as u32 - 1)),
            i => format!("{}-{}", 10u64.pow(i as u32 - 1), 10u64.pow(i as u32) - 1),
        };
        FollowerBucket {
            followers,
            posts,
            mean_followers: if posts > 0 { followers_sum as f64 / posts as f64 } else { 0.0 },
            service_pushed_posts: None,
            service_push_targets_per_post: None,
        }
    }

    /// Adds the fan-out's own per-decade counters (differences over the timed phase).
    pub fn add_service(&mut self, before: &HashMap<String, f64>, after: &HashMap<String, f64>) {
        let d = |name: &str| {
            let key = format!("{name}{{followers=\"{}\"}}", self.followers);
            after.get(&key).map(|a| a - before.get(&key).copied().unwrap_or(0.0))
        };
        self.service_pushed_posts = d(names::FANOUT_PUSHED_POSTS_BY_FOLLOWERS);
        self.service_push_targets_per_post = d(names::FANOUT_PUSH_TARGETS_BY_FOLLOWERS)
            .zip(self.service_pushed_posts)
            .filter(|(_, p)| *p > 0.0)
            .map(|(t, p)| t / p);
    }
}
