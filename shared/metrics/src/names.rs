//! The name of every metric Starling exports, defined once: the services register and
//! render them under these names, and the tests, the benches and the replay read them by
//! these constants, never by copied string literals. The Prometheus rules and dashboard in
//! `k8s/monitoring/` use the same names: `scripts/lib/check_metrics.py` reads this file
//! (its `pub const NAME: &str = "...";` lines and [`HISTOGRAMS`]) as the contract they are
//! checked against (by `scripts/check-k8s.sh`).

// HTTP, per service (RED), from this crate's middleware.
pub const HTTP_REQUESTS: &str = "starling_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "starling_http_request_duration_seconds";

// The event log.
pub const EVENTS_PUBLISHED: &str = "starling_events_published_total";
/// Records of a partition its consumer group has not committed yet, by `topic`,
/// `partition` and `group` (full names, with any topic prefix).
pub const KAFKA_CONSUMER_LAG: &str = "starling_kafka_consumer_lag";
/// Events in a service's outbox not yet acknowledged as in the log, by `service`.
pub const OUTBOX_DEPTH: &str = "starling_outbox_depth";

// The read path (timeline-service).
pub const TIMELINE_READS: &str = "starling_timeline_reads_total";
pub const TIMELINE_CACHE_HITS: &str = "starling_timeline_cache_hits_total";
pub const TIMELINE_REBUILDS: &str = "starling_timeline_rebuilds_total";
pub const TIMELINE_PULL_ROUNDS: &str = "starling_timeline_pull_rounds_total";
pub const TIMELINE_PEER_CALLS: &str = "starling_timeline_peer_calls_total";
pub const READ_MODEL_LOOKUPS: &str = "starling_read_model_lookups_total";
pub const TIMELINES_MATERIALISED: &str = "starling_timelines_materialised";
/// Entries held by the in-process timeline cache (standalone), and the bytes they take.
pub const TIMELINE_CACHE_ENTRIES: &str = "starling_timeline_cache_entries";
pub const TIMELINE_CACHE_BYTES: &str = "starling_timeline_cache_bytes";

// The fan-out.
pub const FANOUT_EVENTS: &str = "starling_fanout_events_total";
pub const FANOUT_TIMELINE_INSERTS: &str = "starling_fanout_timeline_inserts_total";
pub const FANOUT_SKIPPED_INACTIVE: &str = "starling_fanout_skipped_inactive_total";
pub const FANOUT_POSTS_PUSHED: &str = "starling_fanout_posts_pushed_total";
pub const FANOUT_POSTS_MERGED_AT_READ: &str = "starling_fanout_posts_merged_at_read_total";
pub const FANOUT_BACKFILLED: &str = "starling_fanout_backfilled_entries_total";
pub const FANOUT_RETRIES: &str = "starling_fanout_retries_total";
pub const FANOUT_DEAD_LETTERS: &str = "starling_fanout_dead_letters_total";
pub const FANOUT_SLICES_PUBLISHED: &str = "starling_fanout_slices_published_total";
pub const FANOUT_SLICES_APPLIED: &str = "starling_fanout_slices_applied_total";
pub const FANOUT_CONSUMER_REBUILDS: &str = "starling_fanout_consumer_rebuilds_total";
pub const FANOUT_LAG: &str = "starling_fanout_lag";
pub const FANOUT_PUSHED_POSTS_BY_FOLLOWERS: &str = "starling_fanout_pushed_posts_by_followers_total";
pub const FANOUT_PUSH_TARGETS_BY_FOLLOWERS: &str = "starling_fanout_push_targets_by_followers_total";
/// Time to apply a run of events (or one event applied alone), by `topic`.
pub const FANOUT_EVENT_APPLY_DURATION: &str = "starling_fanout_event_apply_duration_seconds";
/// Time from a post's acceptance to its timeline pushes being written.
pub const FANOUT_DELIVERY_LAG: &str = "starling_fanout_delivery_lag_seconds";

/// The names above that are histograms: each also stands for its `_bucket`, `_count` and
/// `_sum` series.
pub const HISTOGRAMS: &[&str] = &[HTTP_REQUEST_DURATION, FANOUT_EVENT_APPLY_DURATION, FANOUT_DELIVERY_LAG];
