//! `starling trace replay`: the command-line face of [`crate::engine`] (and the playing
//! options `starling trace study` shares with it).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::{Client, Targets};
use crate::engine::{Config, Pace, replay};
use crate::study::{Configuration, Deployment, study};

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
    /// Prefix for handles and idempotency keys (default: random), so one deployment can
    /// take several replays.
    #[arg(long)]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub play: PlayArgs,
}

/// How a trace is played and checked (shared by `replay` and `study`).
#[derive(Args, Debug, Clone)]
pub struct PlayArgs {
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
    /// How long to wait for the fan-out to catch up (after the graph load, before the check).
    #[arg(long, default_value_t = 600.0)]
    pub quiet_timeout_s: f64,
    /// No progress bars (for logs).
    #[arg(long)]
    pub quiet: bool,
}

impl PlayArgs {
    /// The replay's configuration, with `run_id` (checked here) as its handle prefix.
    pub fn config(&self, run_id: String) -> anyhow::Result<Config> {
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(self.speedup > 0.0, "--speedup must be positive");
        anyhow::ensure!((0.0..=1.0).contains(&self.lag_sample), "--lag-sample is a fraction from 0 to 1");
        let pace = match (self.rate, self.unpaced) {
            (_, true) => Pace::Unpaced,
            (Some(r), _) if r > 0.0 => Pace::Rate(r),
            (Some(_), _) => anyhow::bail!("--rate must be positive"),
            (None, false) => Pace::Speedup(self.speedup),
        };
        anyhow::ensure!(
            !run_id.is_empty() && run_id.len() <= 9 && run_id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "--run-id must be 1 to 9 letters or digits (it prefixes 30-character handles)"
        );
        Ok(Config {
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
        })
    }
}

impl ReplayArgs {
    pub fn config(&self) -> anyhow::Result<(Targets, Config)> {
        let targets =
            targets(&self.target, self.posts_url.as_deref(), self.timeline_url.as_deref(), &self.metrics_urls);
        let run_id = self.run_id.clone().unwrap_or_else(|| format!("r{:x}", rand::random::<u32>()));
        Ok((targets, self.play.config(run_id)?))
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

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// The trace file (see shared/trace/FORMAT.md).
    pub trace: PathBuf,
    /// The configurations, in order: push-all, pull-all, hybrid:<followers> (the
    /// celebrity line).
    #[arg(long, value_delimiter = ',', default_value = Configuration::DEFAULT)]
    pub configs: Vec<Configuration>,
    /// Where the study goes (study.md, study.json, plots; each run's report in a
    /// directory named after its configuration, with its server's log).
    #[arg(long, default_value = "study-report")]
    pub out: PathBuf,
    /// A setting for every fresh server, as an environment variable (e.g.
    /// STARLING__TIMELINE__MAX_ENTRIES=200); repeat for more. Write rate limits are off
    /// unless set here.
    #[arg(long = "server-env", value_name = "KEY=VALUE", conflicts_with = "reset")]
    pub server_env: Vec<String>,
    /// The Starling binary that fresh servers run (default: this one).
    #[arg(long, conflicts_with = "reset")]
    pub server: Option<PathBuf>,
    /// Instead of fresh servers: a shell command that resets the deployment at --target
    /// (empties it and applies the configuration's settings, given to it as
    /// STARLING__CELEBRITY__* variables and STARLING_STUDY_CONFIGURATION) and returns once
    /// it answers again. Runs before each configuration.
    #[arg(long, requires = "target")]
    pub reset: Option<String>,
    /// With --reset: the deployment's base URL (as for `replay`).
    #[arg(long, requires = "reset")]
    pub target: Option<String>,
    #[arg(long, requires = "reset")]
    pub posts_url: Option<String>,
    #[arg(long, requires = "reset")]
    pub timeline_url: Option<String>,
    #[arg(long = "metrics-url", requires = "reset")]
    pub metrics_urls: Vec<String>,
    /// With --reset: the deployment's operator token.
    #[arg(long, env = "STARLING_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub play: PlayArgs,
}

impl StudyArgs {
    fn deployment(&self) -> anyhow::Result<Deployment> {
        if let Some(command) = &self.reset {
            let target = self.target.as_deref().expect("clap requires --target with --reset");
            let admin_token = self
                .admin_token
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--reset needs the deployment's operator token (--admin-token)"))?;
            let targets = targets(target, self.posts_url.as_deref(), self.timeline_url.as_deref(), &self.metrics_urls);
            return Ok(Deployment::Reset { command: command.clone(), targets, admin_token });
        }
        let env = self
            .server_env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => anyhow::bail!("--server-env {kv:?}: expected KEY=VALUE"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some((k, _)) = env.iter().find(|(k, _)| k.starts_with("STARLING__CELEBRITY__")) {
            anyhow::bail!("--server-env {k}: the study sets the celebrity settings itself, from --configs");
        }
        let server = match &self.server {
            Some(s) => s.clone(),
            None => std::env::current_exe().map_err(|e| anyhow::anyhow!("finding this binary: {e}"))?,
        };
        Ok(Deployment::Fresh { server, env, work: self.out.clone() })
    }

    /// Runs every configuration and writes the study; fails if any run failed its
    /// oracle check.
    pub async fn run(self) -> anyhow::Result<()> {
        let deployment = self.deployment()?;
        // Each run gets its own handle prefix (`s1`, `s2`, …); this one only stands in for them.
        let cfg = self.play.config("s".into())?;
        let mut seen = std::collections::HashSet::new();
        if let Some(c) = self.configs.iter().find(|c| !seen.insert(c.name())) {
            anyhow::bail!("--configs names {} twice", c.name());
        }
        let report = study(&self.trace, &self.configs, &deployment, &cfg, &self.out).await?;
        eprintln!("study of {} configurations in {}", report.rows.len(), self.out.join("study.md").display());
        let failed = report.failed();
        anyhow::ensure!(failed.is_empty(), "the oracle check failed for {} (see their reports)", failed.join(", "));
        Ok(())
    }
}

/// A deployment's URLs: `target` serves everything not overridden; the metrics
/// endpoints default to the API URLs.
pub fn targets(target: &str, posts: Option<&str>, timeline: Option<&str>, metrics: &[String]) -> Targets {
    let mut targets = Targets::single(target);
    if let Some(p) = posts {
        targets.posts = p.trim_end_matches('/').to_owned();
    }
    if let Some(t) = timeline {
        targets.timeline = t.trim_end_matches('/').to_owned();
    }
    targets.metrics = if metrics.is_empty() {
        let mut m = vec![targets.graph.clone(), targets.posts.clone(), targets.timeline.clone()];
        m.dedup();
        m
    } else {
        metrics.iter().map(|u| metrics_base(u)).collect()
    };
    targets
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
