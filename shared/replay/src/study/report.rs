//! The study's report: `study.json` (one row per configuration), `study.md` with the
//! rows side by side, and three plots: the cost of each configuration, write
//! amplification against read cost, and the delivery-lag CDFs overlaid.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{Configuration, Deployment};
use crate::report::{Report, byte_size, byte_unit};
use crate::svg::{Bars, Chart, Series, Style};

/// One configuration's replay.
pub struct Run {
    pub configuration: Configuration,
    pub report: Report,
}

impl Run {
    pub fn new(configuration: Configuration, report: Report) -> Run {
        Run { configuration, report }
    }

    fn row(&self) -> Row {
        let r = &self.report;
        let s = &r.service;
        let (write, read) = (r.op("post").map(|o| &o.response_time), r.op("read").map(|o| &o.response_time));
        Row {
            configuration: self.configuration.name(),
            label: self.configuration.to_string(),
            settings: self.configuration.settings().into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            events: r.replay.items,
            seconds: r.replay.seconds,
            posts_pushed: s.posts_pushed,
            posts_merged_at_read: s.posts_merged_at_read,
            timeline_inserts_per_post: s.inserts_per_post,
            cache_entries: r.cache_at_end.entries,
            cache_bytes: r.cache_at_end.bytes,
            write_p50_ms: write.map(|p| p.p50_ms),
            write_p99_ms: write.map(|p| p.p99_ms),
            read_p50_ms: read.map(|p| p.p50_ms),
            read_p99_ms: read.map(|p| p.p99_ms),
            lag_p50_ms: r.delivery_lag.p50_ms,
            lag_p99_ms: r.delivery_lag.p99_ms,
            lag_samples: r.delivery_lag.samples,
            lag_cdf: r.delivery_lag.cdf.clone(),
            storage_reads_per_page: s.storage_reads_per_page,
            celebrity_lists_per_page: s.celebrity_lists_per_page,
            cpu_seconds_per_1k_events: r.cpu_seconds_per_1k_events(),
            cpu_seconds_by_process: r
                .process_cpu
                .iter()
                .map(|p| (p.service.clone().unwrap_or_else(|| p.endpoint.clone()), p.cpu_seconds))
                .collect(),
            errors: r.failures(),
            oracle_passed: r.correctness.users_checked > 0 && r.correctness.passed(),
            users_checked: r.correctness.users_checked,
            entries_checked: r.correctness.entries_checked,
            report: format!("{}/report.md", self.configuration.name()),
        }
    }
}

/// One configuration's figures, as `study.json` and the tables carry them.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub configuration: String,
    pub label: String,
    pub settings: Vec<String>,
    pub events: u64,
    pub seconds: f64,
    pub posts_pushed: Option<f64>,
    pub posts_merged_at_read: Option<f64>,
    pub timeline_inserts_per_post: Option<f64>,
    pub cache_entries: Option<f64>,
    pub cache_bytes: Option<f64>,
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    pub read_p50_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub lag_samples: usize,
    /// (lag ms, fraction of samples at or below it), as in the run's own report.
    pub lag_cdf: Vec<(f64, f64)>,
    pub storage_reads_per_page: Option<f64>,
    pub celebrity_lists_per_page: Option<f64>,
    pub cpu_seconds_per_1k_events: Option<f64>,
    pub cpu_seconds_by_process: Vec<(String, Option<f64>)>,
    pub errors: u64,
    pub oracle_passed: bool,
    pub users_checked: u64,
    pub entries_checked: u64,
    /// The run's own report, relative to the study's directory.
    pub report: String,
}

#[derive(Serialize)]
pub struct StudyReport {
    pub tool: String,
    pub trace: String,
    pub trace_meta: Vec<(String, String)>,
    pub deployment: String,
    pub pace: String,
    pub seed: u64,
    pub rows: Vec<Row>,
}

impl StudyReport {
    pub fn new(trace: &Path, deployment: &Deployment, runs: &[Run]) -> StudyReport {
        let deployment = match deployment {
            Deployment::Fresh { env, .. } if env.is_empty() => {
                "a fresh standalone server per configuration (embedded backends, empty data directory)".to_owned()
            }
            Deployment::Fresh { env, .. } => {
                let env: Vec<String> = env.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
                format!(
                    "a fresh standalone server per configuration (embedded backends, empty data directory), with {}",
                    env.join(", ")
                )
            }
            Deployment::Reset { command, targets, .. } => {
                format!("the deployment at {}, reset before each configuration by `{command}`", targets.graph)
            }
        };
        let first = runs.first().map(|r| &r.report);
        StudyReport {
            tool: format!("starling-replay {}", env!("CARGO_PKG_VERSION")),
            trace: trace.display().to_string(),
            trace_meta: first.map(|r| r.trace_meta.clone()).unwrap_or_default(),
            deployment,
            pace: first.map(|r| format!("{:?}", r.pace)).unwrap_or_default(),
            seed: first.map_or(0, |r| r.seed),
            rows: runs.iter().map(Run::row).collect(),
        }
    }

    /// The configurations whose run did not pass the oracle check (or was not checked).
    pub fn failed(&self) -> Vec<String> {
        self.rows.iter().filter(|r| !r.oracle_passed).map(|r| r.configuration.clone()).collect()
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("study.json"), serde_json::to_string_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::write(dir.join("study_cost.svg"), self.cost_chart().render())?;
        std::fs::write(dir.join("study_write_vs_read.svg"), self.write_vs_read_chart().render())?;
        std::fs::write(dir.join("study_lag_cdf.svg"), self.lag_chart().render())?;
        std::fs::write(dir.join("study.md"), self.markdown())
    }

    fn cost_chart(&self) -> Bars {
        let column = |f: fn(&Row) -> Option<f64>| self.rows.iter().map(f).collect::<Vec<_>>();
        let (unit, scale) = byte_unit(self.rows.iter().filter_map(|r| r.cache_bytes).fold(0.0, f64::max));
        Bars {
            title: "Cost of each configuration, same trace".into(),
            categories: self.rows.iter().map(|r| r.configuration.clone()).collect(),
            panels: vec![
                ("timeline inserts per post".into(), column(|r| r.timeline_inserts_per_post)),
                ("CPU s per 1,000 events".into(), column(|r| r.cpu_seconds_per_1k_events)),
                (
                    format!("timeline cache at the end ({unit})"),
                    self.rows.iter().map(|r| r.cache_bytes.map(|b| b / scale)).collect(),
                ),
                ("storage reads per page".into(), column(|r| r.storage_reads_per_page)),
                ("celebrity lists merged per page".into(), column(|r| r.celebrity_lists_per_page)),
                ("read p99 (ms)".into(), column(|r| r.read_p99_ms)),
            ],
        }
    }

    fn write_vs_read_chart(&self) -> Chart {
        let mut chart = Chart::new(
            "Write amplification against read cost",
            "timeline inserts per post",
            "home timeline read p50 (ms)",
        );
        for r in &self.rows {
            let point = r.timeline_inserts_per_post.zip(r.read_p50_ms);
            chart = chart.with(Series::new(r.configuration.clone(), Style::Marks, point.into_iter().collect()));
        }
        chart
    }

    fn lag_chart(&self) -> Chart {
        let mut chart =
            Chart::new("Delivery lag: post accepted → visible to a follower", "lag (ms)", "fraction of posts").log_x();
        for r in &self.rows {
            chart = chart.with(Series::new(r.configuration.clone(), Style::Steps, r.lag_cdf.clone()));
        }
        chart
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let f1 = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        let f2 = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
        let f0 = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        let _ = writeln!(m, "# Starling what-if study\n");
        let _ = writeln!(m, "- Trace: `{}`", self.trace);
        for (k, v) in &self.trace_meta {
            let _ = writeln!(m, "  - {k}: {v}");
        }
        let _ = writeln!(m, "- Deployment: {}", self.deployment);
        let _ = writeln!(m, "- Pace {}, seed {}, {}", self.pace, self.seed, self.tool);
        let _ = writeln!(
            m,
            "- Each configuration replayed the whole trace on its own deployment, one after the other on the \
             same machine; each run's full report is linked from its name.\n"
        );

        let _ = writeln!(m, "## Cost\n");
        let _ = writeln!(
            m,
            "| configuration | posts pushed / merged at read | timeline inserts per post | cache entries | cache size | \
             storage reads per page | celebrity lists per page | CPU s per 1k events | oracle |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let oracle = if r.oracle_passed {
                format!("passed ({} users, {} entries)", r.users_checked, r.entries_checked)
            } else {
                "**failed**".to_owned()
            };
            let _ = writeln!(
                m,
                "| [{}]({}) | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                r.report,
                f0(r.posts_pushed),
                f0(r.posts_merged_at_read),
                f2(r.timeline_inserts_per_post),
                f0(r.cache_entries),
                r.cache_bytes.map_or("–".to_owned(), byte_size),
                f2(r.storage_reads_per_page),
                f2(r.celebrity_lists_per_page),
                f2(r.cpu_seconds_per_1k_events),
                oracle
            );
        }
        let _ = writeln!(m, "\n## Latency\n");
        let _ = writeln!(
            m,
            "Response times count from when the trace scheduled each request (open loop); delivery lag from a \
             post's `201` until a follower who had read before sees it.\n"
        );
        let _ = writeln!(
            m,
            "| configuration | events | post p50 / p99 ms | read p50 / p99 ms | lag p50 / p99 ms (samples) | errors |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                m,
                "| {} | {} in {:.1} s | {} / {} | {} / {} | {} / {} ({}) | {} |",
                r.configuration,
                r.events,
                r.seconds,
                f2(r.write_p50_ms),
                f2(r.write_p99_ms),
                f2(r.read_p50_ms),
                f2(r.read_p99_ms),
                f1(r.lag_p50_ms),
                f1(r.lag_p99_ms),
                r.lag_samples,
                r.errors
            );
        }
        let _ = writeln!(
            m,
            "\n![cost](study_cost.svg)\n\n![write against read](study_write_vs_read.svg)\n\n![lag](study_lag_cdf.svg)\n"
        );
        let _ = writeln!(m, "## Side by side\n");
        for line in self.findings() {
            let _ = writeln!(m, "- {line}");
        }
        let failed = self.failed();
        if !failed.is_empty() {
            let _ = writeln!(
                m,
                "\n**The oracle check failed for {}: their figures are not to be trusted.**",
                failed.join(", ")
            );
        }
        let _ = writeln!(
            m,
            "\nInserts count every timeline entry the fan-out wrote (the authors' own timelines included), \
             storage reads per page the read path's store calls on read-model misses, merge rounds pulled \
             from storage and rebuilds; CPU is every process's own (`process_cpu_seconds_total`) from the \
             start of the timed events until the fan-out had caught up."
        );
        m
    }

    /// Sentences computed from the rows: which configuration is lowest and highest in
    /// each measure, and by how much.
    fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |what: &str, show: &dyn Fn(f64) -> String, f: fn(&Row) -> Option<f64>| {
            let measured: Vec<(&Row, f64)> = self.rows.iter().filter_map(|r| Some((r, f(r)?))).collect();
            let lo = measured.iter().min_by(|a, b| a.1.total_cmp(&b.1));
            let hi = measured.iter().max_by(|a, b| a.1.total_cmp(&b.1));
            let (Some(&(lo, l)), Some(&(hi, h))) = (lo, hi) else { return };
            if measured.len() < 2 {
                return;
            }
            let line = if l > 0.0 && h / l < 1.05 {
                format!("{what}: within 5 % across configurations ({} to {}).", show(l), show(h))
            } else {
                let ratio = if l > 0.0 { format!(", {:.1}× the lowest", h / l) } else { String::new() };
                format!(
                    "{what}: lowest with {} ({}), highest with {} ({}{ratio}).",
                    lo.configuration,
                    show(l),
                    hi.configuration,
                    show(h)
                )
            };
            out.push(line);
        };
        let plain = |v: f64| format!("{v:.2}");
        let ms = |v: f64| format!("{v:.1} ms");
        say("Timeline inserts per post", &plain, |r| r.timeline_inserts_per_post);
        say("CPU per 1,000 events", &|v| format!("{v:.2} s"), |r| r.cpu_seconds_per_1k_events);
        say("Timeline cache at the end", &byte_size, |r| r.cache_bytes);
        say("Storage reads per page", &plain, |r| r.storage_reads_per_page);
        say("Celebrity lists merged per page", &plain, |r| r.celebrity_lists_per_page);
        say("Read p50", &ms, |r| r.read_p50_ms);
        say("Read p99", &ms, |r| r.read_p99_ms);
        say("Post p99", &ms, |r| r.write_p99_ms);
        say("Delivery lag p99", &ms, |r| r.lag_p99_ms);
        out
    }
}
