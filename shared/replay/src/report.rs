//! The replay report: one `report.json` for programs, one `report.md` for people, and SVG
//! plots beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use starling_ids::{PostId, UserId};
use starling_oracle::Divergence;
use starling_trace::{Header, TraceUser};

use crate::engine::Pace;
use crate::record::{LagSummary, OpSummary, Recorder, SecondSummary};
use crate::svg::{Chart, Series, Style};

mod service;
pub use service::{CacheSize, FollowerBucket, ProcessCpu, ServiceMetrics, ServiceSample};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub items: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl Phase {
    pub fn new(items: u64, took: Duration) -> Phase {
        let seconds = took.as_secs_f64();
        Phase { items, seconds, per_second: if seconds > 0.0 { items as f64 / seconds } else { 0.0 } }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Divergent {
    pub user: TraceUser,
    pub user_id: UserId,
    pub expected_len: usize,
    pub served_len: usize,
    pub missing: usize,
    pub unexpected: usize,
    pub duplicates: usize,
    pub misordered: bool,
    /// A few of the ids involved, to start an investigation from.
    pub examples: Vec<PostId>,
}

impl Divergent {
    pub fn new(user: TraceUser, user_id: UserId, expected_len: usize, served_len: usize, d: &Divergence) -> Divergent {
        let examples = d.missing.iter().chain(&d.unexpected).chain(&d.duplicates).take(5).copied().collect();
        Divergent {
            user,
            user_id,
            expected_len,
            served_len,
            missing: d.missing.len(),
            unexpected: d.unexpected.len(),
            duplicates: d.duplicates.len(),
            misordered: d.misordered,
            examples,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Check {
    /// Whether a sample of users was checked rather than all.
    pub sampled: bool,
    pub users_checked: u64,
    pub entries_checked: u64,
    /// Users left out because a write touching them got no answer (its effect is unknown).
    pub skipped_uncertain: u64,
    pub divergent: Vec<Divergent>,
    pub read_errors: Vec<(TraceUser, String)>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.divergent.is_empty() && self.read_errors.is_empty()
    }
}

/// How the run was set up, for the report's first lines.
pub struct Inputs {
    pub trace: PathBuf,
    pub header: Header,
    pub started_at: time::OffsetDateTime,
    pub pace: Pace,
    pub concurrency: usize,
    pub seed: u64,
    pub run_id: String,
    pub lag_sample: f64,
    pub stopped: Option<String>,
    pub quiet: bool,
    pub settled: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub started_at: String,
    pub trace: String,
    pub trace_meta: Vec<(String, String)>,
    pub pace: Pace,
    pub concurrency: usize,
    pub seed: u64,
    pub run_id: String,
    pub lag_sample: f64,
    /// Why the replay stopped before the end of the trace, if it did.
    pub stopped_early: Option<String>,
    /// Whether the fan-out was seen to catch up before the check.
    pub quiet_before_check: bool,
    /// Whether the fan-out was seen to catch up with the graph load before the timed phase.
    pub settled_before_events: bool,
    pub register: Phase,
    pub graph_load: Phase,
    /// From the end of the graph load until the fan-out had applied it (same item count).
    pub graph_settle: Phase,
    pub replay: Phase,
    pub ops: Vec<OpSummary>,
    pub per_second: Vec<SecondSummary>,
    pub delivery_lag: LagSummary,
    pub service: ServiceMetrics,
    pub cache_at_end: CacheSize,
    pub process_cpu: Vec<ProcessCpu>,
    pub service_series: Vec<ServiceSample>,
    pub fanout_by_followers: Vec<FollowerBucket>,
    pub correctness: Check,
}

/// `bytes` for tables: KiB below a MiB, MiB above.
pub fn byte_size(bytes: f64) -> String {
    let (unit, scale) = byte_unit(bytes);
    format!("{:.1} {unit}", bytes / scale)
}

/// The unit [`byte_size`] shows `bytes` in, and its size.
pub fn byte_unit(bytes: f64) -> (&'static str, f64) {
    if bytes >= 1048576.0 { ("MiB", 1048576.0) } else { ("KiB", 1024.0) }
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        inputs: Inputs,
        register: Phase,
        graph_load: Phase,
        graph_settle: Phase,
        replay: Phase,
        rec: &Recorder,
        service: ServiceMetrics,
        cache_at_end: CacheSize,
        process_cpu: Vec<ProcessCpu>,
        service_series: Vec<ServiceSample>,
        fanout_by_followers: Vec<FollowerBucket>,
        correctness: Check,
    ) -> Report {
        let started_at = inputs.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Report {
            tool: format!("starling-replay {}", env!("CARGO_PKG_VERSION")),
            started_at,
            trace: inputs.trace.display().to_string(),
            trace_meta: inputs.header.meta,
            pace: inputs.pace,
            concurrency: inputs.concurrency,
            seed: inputs.seed,
            run_id: inputs.run_id,
            lag_sample: inputs.lag_sample,
            stopped_early: inputs.stopped,
            quiet_before_check: inputs.quiet,
            settled_before_events: inputs.settled,
            register,
            graph_load,
            graph_settle,
            replay,
            ops: rec.ops(),
            per_second: rec.seconds(),
            delivery_lag: rec.lag(),
            service,
            cache_at_end,
            process_cpu,
            service_series,
            fanout_by_followers,
            correctness,
        }
    }

    /// CPU seconds of every process per 1,000 timed events (None if a process did not say).
    pub fn cpu_seconds_per_1k_events(&self) -> Option<f64> {
        let total: Option<f64> = self.process_cpu.iter().map(|p| p.cpu_seconds).sum();
        total
            .filter(|_| self.replay.items > 0 && !self.process_cpu.is_empty())
            .map(|t| t * 1000.0 / self.replay.items as f64)
    }

    /// The timed phase's response-time percentiles of one operation.
    pub fn op(&self, name: &str) -> Option<&OpSummary> {
        self.ops.iter().find(|o| o.op == name)
    }

    /// Operations that ended in an error or a mismatch with the contract.
    pub fn failures(&self) -> u64 {
        self.ops.iter().map(|o| o.errors.values().sum::<u64>() + o.mismatches.values().sum::<u64>()).sum()
    }

    /// Writes `report.json`, `report.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self).map_err(std::io::Error::other)?)?;
        for (name, chart) in self.charts() {
            std::fs::write(dir.join(name), chart.render())?;
        }
        std::fs::write(dir.join("report.md"), self.markdown())
    }

    fn charts(&self) -> Vec<(&'static str, Chart)> {
        let mut ops: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &self.per_second {
            for (op, n) in &s.completed {
                ops.entry(op.as_str()).or_default().push((s.t_s as f64, *n as f64));
            }
        }
        let mut throughput = Chart::new("Completed operations per second", "time (s)", "operations/s");
        for (op, points) in ops {
            throughput = throughput.with(Series::new(op, Style::Line, points));
        }
        let inserts: Vec<(f64, f64)> = self
            .service_series
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (w[0].timeline_inserts?, w[1].timeline_inserts?);
                Some((w[1].t_s, (b - a) / (w[1].t_s - w[0].t_s).max(1e-3)))
            })
            .collect();
        let inserts =
            Chart::new("Fan-out: timeline inserts per second (the services' counter)", "time (s)", "inserts/s")
                .with(Series::new("timeline inserts", Style::Line, inserts));
        let series = |f: fn(&SecondSummary) -> Option<f64>| -> Vec<(f64, f64)> {
            self.per_second.iter().filter_map(|s| Some((s.t_s as f64, f(s)?))).collect()
        };
        let latency = Chart::new("Response time per second (from the intended send time)", "time (s)", "ms")
            .log_y()
            .with(Series::new("write p50", Style::Line, series(|s| s.write_p50_ms)))
            .with(Series::new("write p99", Style::Line, series(|s| s.write_p99_ms)))
            .with(Series::new("read p50", Style::Line, series(|s| s.read_p50_ms)))
            .with(Series::new("read p99", Style::Line, series(|s| s.read_p99_ms)));
        let lag = Chart::new("Delivery lag: post accepted → visible to a follower", "lag (ms)", "fraction of posts")
            .log_x()
            .with(Series::new("CDF", Style::Steps, self.delivery_lag.cdf.clone()));
        let buckets: Vec<&FollowerBucket> = self.fanout_by_followers.iter().filter(|b| b.posts > 0).collect();
        let x = |b: &FollowerBucket| b.mean_followers.max(0.5);
        let fanout = Chart::new(
            "Fan-out per post against the author's follower count",
            "followers (bucket mean)",
            "timelines per post",
        )
        .log_x()
        .log_y()
        .with(Series::new(
            "push to every follower",
            Style::Line,
            buckets.iter().map(|b| (x(b), b.mean_followers)).collect(),
        ))
        .with(Series::new(
            "pushed (measured)",
            Style::Points,
            buckets.iter().filter_map(|b| Some((x(b), b.service_push_targets_per_post?))).collect(),
        ))
        .with(Series::new(
            "all posts (measured)",
            Style::Points,
            // Inserts over every post, celebrities' merged ones included, at the mean
            // follower count of all posts.
            self.service
                .inserts_per_post
                .map(|per_post| {
                    let posts: u64 = buckets.iter().map(|b| b.posts).sum();
                    let mean =
                        buckets.iter().map(|b| b.mean_followers * b.posts as f64).sum::<f64>() / posts.max(1) as f64;
                    vec![(mean.max(0.5), per_post.max(0.5))]
                })
                .unwrap_or_default(),
        ));
        vec![
            ("throughput.svg", throughput),
            ("fanout_inserts.svg", inserts),
            ("latency.svg", latency),
            ("delivery_lag_cdf.svg", lag),
            ("fanout_by_followers.svg", fanout),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        let num = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        let _ = writeln!(m, "# Starling replay report\n");
        let _ = writeln!(m, "- Trace: `{}`", self.trace);
        for (k, v) in &self.trace_meta {
            let _ = writeln!(m, "  - {k}: {v}");
        }
        let _ = writeln!(
            m,
            "- Started {} with {}; pace {:?}, at most {} requests in flight, seed {}, run id `{}`",
            self.started_at, self.tool, self.pace, self.concurrency, self.seed, self.run_id
        );
        if let Some(why) = &self.stopped_early {
            let _ = writeln!(m, "- **Stopped before the end of the trace: {why}.**");
        }
        let c = &self.correctness;
        let verdict = if c.users_checked == 0 {
            "not checked".to_owned()
        } else if c.passed() {
            format!(
                "**passed**: {} users' timelines ({} entries) equal the oracle's{}",
                c.users_checked,
                c.entries_checked,
                if c.sampled { " (a seeded sample of users)" } else { "" }
            )
        } else {
            format!(
                "**failed**: {} of {} users diverge, {} could not be read",
                c.divergent.len(),
                c.users_checked,
                c.read_errors.len()
            )
        };
        let _ = writeln!(m, "\n## Summary\n");
        let _ = writeln!(m, "| | |\n|---|---|");
        let _ = writeln!(
            m,
            "| users registered | {} in {:.1} s ({:.0}/s) |",
            self.register.items, self.register.seconds, self.register.per_second
        );
        let _ = writeln!(
            m,
            "| initial graph | {} follows in {:.1} s ({:.0}/s) |",
            self.graph_load.items, self.graph_load.seconds, self.graph_load.per_second
        );
        let _ = writeln!(
            m,
            "| fan-out caught up with the graph | {:.1} s after the last follow{} |",
            self.graph_settle.seconds,
            if self.settled_before_events { "" } else { " (**not** caught up: the timed phase started anyway)" }
        );
        let _ = writeln!(
            m,
            "| timed events | {} in {:.1} s ({:.0}/s) |",
            self.replay.items, self.replay.seconds, self.replay.per_second
        );
        let _ = writeln!(m, "| errors and contract mismatches | {} |", self.failures());
        let _ = writeln!(
            m,
            "| delivery lag p50 / p99 | {} / {} ms ({} samples, {} timeouts) |",
            ms(self.delivery_lag.p50_ms),
            ms(self.delivery_lag.p99_ms),
            self.delivery_lag.samples,
            self.delivery_lag.timeouts
        );
        let _ = writeln!(
            m,
            "| fan-out amplification | {} timeline inserts per post |",
            self.service.inserts_per_post.map_or("–".to_owned(), |v| format!("{v:.2}"))
        );
        let _ = writeln!(
            m,
            "| cache hit rate | {} |",
            self.service.cache_hit_rate.map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0))
        );
        let _ = writeln!(
            m,
            "| storage reads per home-timeline page | {} ({} celebrity lists merged per page) |",
            self.service.storage_reads_per_page.map_or("–".to_owned(), |v| format!("{v:.2}")),
            self.service.celebrity_lists_per_page.map_or("–".to_owned(), |v| format!("{v:.2}"))
        );
        let cache = &self.cache_at_end;
        let _ = writeln!(
            m,
            "| timeline cache at the end | {} entries, {} in {} live timelines |",
            num(cache.entries),
            cache.bytes.map_or("–".to_owned(), byte_size),
            num(cache.timelines)
        );
        let _ = writeln!(
            m,
            "| CPU of the services | {} s per 1,000 timed events ({}) |",
            self.cpu_seconds_per_1k_events().map_or("–".to_owned(), |v| format!("{v:.2}")),
            self.process_cpu
                .iter()
                .map(|p| format!(
                    "{}: {} s",
                    p.service.as_deref().unwrap_or(&p.endpoint),
                    p.cpu_seconds.map_or("–".to_owned(), |c| format!("{c:.1}"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(m, "| correctness | {verdict} |");
        if !self.quiet_before_check {
            let _ = writeln!(
                m,
                "\nThe fan-out was not seen to catch up before the check (no counters, or not within the timeout): \
                 divergences may be lag rather than loss."
            );
        }

        let _ = writeln!(m, "\n## Operations\n");
        let _ = writeln!(
            m,
            "Response time counts from when the trace scheduled the event (open loop); service time from when \
             its request was sent.\n"
        );
        let _ = writeln!(
            m,
            "| op | count | ok | refused as predicted | mismatches | errors | skipped | response p50 | p90 | p99 | \
             p99.9 | max | service p50 | service p99 |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for o in &self.ops {
            let r = &o.response_time;
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                o.op,
                o.count,
                o.ok,
                o.refused_as_predicted,
                o.mismatches.values().sum::<u64>(),
                o.errors.values().sum::<u64>(),
                o.skipped,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_ms,
                o.service_time.p50_ms,
                o.service_time.p99_ms
            );
        }
        let kinds: BTreeMap<String, u64> = self.ops.iter().flat_map(|o| o.errors.iter().chain(&o.mismatches)).fold(
            BTreeMap::new(),
            |mut acc, (k, v)| {
                *acc.entry(k.clone()).or_default() += v;
                acc
            },
        );
        if !kinds.is_empty() {
            let _ = writeln!(m, "\nErrors by kind:\n");
            for (k, v) in kinds {
                let _ = writeln!(m, "- {k}: {v}");
            }
        }
        let _ = writeln!(
            m,
            "\n![throughput](throughput.svg)\n\n![latency](latency.svg)\n\n![fan-out inserts](fanout_inserts.svg)"
        );

        let l = &self.delivery_lag;
        let _ = writeln!(m, "\n## Delivery lag\n");
        let _ = writeln!(
            m,
            "A sampled {:.1} % of posts were timed from their `201 Created` until they showed in the timeline of \
             one follower who had read before (so whose timeline is materialised), polling from every 5 ms, backing off to every 100 ms (so within a quarter of the lag).\n",
            self.lag_sample * 100.0
        );
        let _ = writeln!(m, "| samples | timeouts | no reading follower | p50 | p90 | p99 | max |");
        let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} ms | {} ms | {} ms | {} ms |\n",
            l.samples,
            l.timeouts,
            l.no_active_follower,
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        );
        let _ = writeln!(m, "![delivery lag](delivery_lag_cdf.svg)");

        let s = &self.service;
        let _ = writeln!(m, "\n## Fan-out and cache (the services' own counters over the timed phase)\n");
        let _ = writeln!(m, "| counter | value |\n|---|---:|");
        for (name, v) in [
            ("posts pushed to followers", s.posts_pushed),
            ("posts merged at read (celebrities)", s.posts_merged_at_read),
            ("timeline inserts", s.timeline_inserts),
            ("inserts skipped (inactive readers)", s.skipped_inactive),
            ("entries backfilled (follows, demotions)", s.backfilled_entries),
            ("events applied by the fan-out", s.fanout_events_applied),
            ("dead-lettered events", s.dead_letters),
            ("home timeline pages served", s.timeline_reads),
            ("… from a materialised timeline", s.cache_hits),
            ("timelines rebuilt from storage", s.rebuilds),
            ("merge rounds that read storage", s.storage_pull_rounds),
            ("read-path calls to the stores (read-model misses)", s.read_path_store_calls),
            ("celebrity lists merged at read", s.celebrity_lists_merged),
        ] {
            let _ = writeln!(m, "| {name} | {} |", num(v));
        }
        let _ = writeln!(
            m,
            "\nPosts by their author's follower count when the post was accepted (the replay's count), and \
             what the fan-out did with them (its own count; the rest were merged at read):\n"
        );
        let _ = writeln!(
            m,
            "| followers | posts | mean followers | pushed by the fan-out | timelines per pushed post |\n\
             |---|---:|---:|---:|---:|"
        );
        for b in self.fanout_by_followers.iter().filter(|b| b.posts > 0 || b.service_pushed_posts.unwrap_or(0.0) > 0.0)
        {
            let _ = writeln!(
                m,
                "| {} | {} | {:.1} | {} | {} |",
                b.followers,
                b.posts,
                b.mean_followers,
                num(b.service_pushed_posts),
                b.service_push_targets_per_post.map_or("–".to_owned(), |v| format!("{v:.1}"))
            );
        }
        let _ = writeln!(m, "\n![fan-out by followers](fanout_by_followers.svg)");
        let _ = writeln!(
            m,
            "\nTimelines targeted include inactive readers' that the push skipped (counted above), \
             not the author's own."
        );

        let _ = writeln!(m, "\n## Correctness\n");
        let _ = writeln!(
            m,
            "After the replay (and once the fan-out had caught up), each checked user's whole home timeline was \
             read page by page and compared with the oracle's: the posts of the users they follow and their own, \
             not deleted, not blocked, newest first.\n"
        );
        let _ = writeln!(m, "{verdict}.");
        if c.skipped_uncertain > 0 {
            let _ = writeln!(
                m,
                "\n{} users were left out: a write touching them got no answer, so its effect is unknown.",
                c.skipped_uncertain
            );
        }
        if !c.divergent.is_empty() {
            let _ = writeln!(
                m,
                "\n| trace user | user id | expected | served | missing | unexpected | duplicates | misordered | e.g. |"
            );
            let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---|---|");
            for d in c.divergent.iter().take(50) {
                let eg: Vec<String> = d.examples.iter().map(|p| p.to_string()).collect();
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    d.user,
                    d.user_id,
                    d.expected_len,
                    d.served_len,
                    d.missing,
                    d.unexpected,
                    d.duplicates,
                    d.misordered,
                    eg.join(" ")
                );
            }
            if c.divergent.len() > 50 {
                let _ = writeln!(m, "\n… and {} more in report.json.", c.divergent.len() - 50);
            }
        }
        for (u, kind) in c.read_errors.iter().take(20) {
            let _ = writeln!(m, "- user {u}: timeline could not be read ({kind})");
        }
        m
    }
}
