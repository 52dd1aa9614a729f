//! `starling trace replay`: the command-line face of [`crate::engine`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::{Client, Targets};
use crate::engine::{Config, Pace, replay};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace file (see shared/trace/FORMAT.md).
    pub trace: PathBuf,
    /// Base URL of a standalone server (`starling up`), or of the graph-service when the
    /// services run apart (then also give --posts-url and --timeline-url).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    #[arg(long)]
    pub posts_url: Option<String>,
    #[arg(long)]
    pub timeline_url: Option<String>,
    /// The deployment's operator token (its `admin.token`), which creates the trace's
    /// accounts in bulk.
    #[arg(long, env = "STARLING_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// A process whose Prometheus counters count (its base URL, or its `/metrics` URL);
    /// repeat for every process (default: the API URLs). Each must answer with
    /// Prometheus text at start, or the replay stops there.
    #[arg(long = "metrics-url")]
    pub metrics_urls: Vec<String>,
    /// Where the report goes (report.json, report.md, *.svg).
    #[arg(long, default_value = "replay-report")]
    pub out: PathBuf,
    /// Play trace time this many times faster than real time.
    #[arg(long, default_value_t = 1.0, conflicts_with_all = ["rate", "unpaced"])]
    pub speedup: f64,
    /// Play events at this fixed rate (events/s) instead of the trace's timestamps.
    #[arg(long, conflicts_with = "unpaced")]
    pub rate: Option<f64>,
    /// Play events as fast as the concurrency bound allows.
    #[arg(long)]
    pub unpaced: bool,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Stop after this many timed events.
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Stop the timed phase after this many seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Fraction of posts whose delivery lag is measured.
    #[arg(long, default_value_t = 0.05)]
    pub lag_sample: f64,
    /// Delivery probes in flight at most.
    #[arg(long, default_value_t = 8)]
    pub lag_probes: usize,
    /// Check this many users (a seeded sample) against the oracle; default all; 0 skips.
    #[arg(long)]
    pub check_users: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix for handles and idempotency keys (default: random), so one deployment can
    /// take several replays.
    #[arg(long)]
    pub run_id: Option<String>,
    /// How long to wait for the fan-out to catch up (after the graph load, before the check).
    #[arg(long, default_value_t = 600.0)]
    pub quiet_timeout_s: f64,
    /// No progress bars (for logs).
    #[arg(long)]
    pub quiet: bool,
}

impl ReplayArgs {
    pub fn config(&self) -> anyhow::Result<(Targets, Config)> {
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(self.speedup > 0.0, "--speedup must be positive");
        anyhow::ensure!((0.0..=1.0).contains(&self.lag_sample), "--lag-sample is a fraction from 0 to 1");
        let mut targets = Targets::single(&self.target);
        if let Some(p) = &self.posts_url {
            targets.posts = p.trim_end_matches('/').to_owned();
        }
        if let Some(t) = &self.timeline_url {
            targets.timeline = t.trim_end_matches('/').to_owned();
        }
        targets.metrics = if self.metrics_urls.is_empty() {
            let mut m = vec![targets.graph.clone(), targets.posts.clone(), targets.timeline.clone()];
            m.dedup();
            m
        } else {
            self.metrics_urls.iter().map(|u| metrics_base(u)).collect()
        };
        let pace = match (self.rate, self.unpaced) {
            (_, true) => Pace::Unpaced,
            (Some(r), _) if r > 0.0 => Pace::Rate(r),
            (Some(_), _) => anyhow::bail!("--rate must be positive"),
            (None, false) => Pace::Speedup(self.speedup),
        };
        let run_id = self.run_id.clone().unwrap_or_else(|| format!("r{:x}", rand::random::<u32>()));
        anyhow::ensure!(
            !run_id.is_empty() && run_id.len() <= 9 && run_id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "--run-id must be 1 to 9 letters or digits (it prefixes 30-character handles)"
        );
        let cfg = Config {
            pace,
            concurrency: self.concurrency,
            max_events: self.max_events,
            max_duration: self.max_seconds.map(Duration::from_secs_f64),
            lag_sample: self.lag_sample,
            lag_probes: self.lag_probes,
            check_users: self.check_users,
            seed: self.seed,
            run_id,
            progress: !self.quiet,
            quiet_timeout: Duration::from_secs_f64(self.quiet_timeout_s.max(0.0)),
            ..Config::default()
        };
        Ok((targets, cfg))
    }

    /// Runs the replay and writes the report; fails if the oracle check failed.
    pub async fn run(self) -> anyhow::Result<()> {
        let (targets, cfg) = self.config()?;
        let client = Client::new(targets, &self.admin_token, cfg.concurrency + cfg.lag_probes);
        client.check_metrics().await?;
        let report = replay(&self.trace, client, cfg).await?;
        report.write(&self.out)?;
        eprintln!(
            "{} events in {:.1} s ({:.0}/s); {} errors or mismatches; report in {}",
            report.replay.items,
            report.replay.seconds,
            report.replay.per_second,
            report.failures(),
            self.out.join("report.md").display()
        );
        anyhow::ensure!(
            report.correctness.passed(),
            "{} users' timelines diverge from the oracle (see the report)",
            report.correctness.divergent.len() + report.correctness.read_errors.len()
        );
        Ok(())
    }
}

/// The base a metrics URL is given as: the client appends `/metrics` itself, so a URL
/// that already ends in it is taken as meant.
fn metrics_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/metrics").unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use super::metrics_base;

    #[test]
    fn metrics_urls_are_taken_with_or_without_their_path() {
        for given in ["http://h:1", "http://h:1/", "http://h:1/metrics", "http://h:1/metrics/"] {
            assert_eq!(metrics_base(given), "http://h:1", "{given}");
        }
    }
}
