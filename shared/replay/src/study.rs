//! What-if studies: one trace replayed under several fan-out configurations in turn —
//! push-all, pull-all and the hybrid at several celebrity lines — each on a fresh
//! deployment, and one report that puts the runs side by side ([`StudyReport`]).
//!
//! A configuration is nothing but settings of the services (`celebrity.mode`,
//! `celebrity.threshold`, `celebrity.demote_below`), so what a study measures is what a
//! deployment with those settings does. Deployments are either fresh standalone servers
//! the study starts itself (this binary's `up` on an empty data directory, embedded
//! backends), or one the researcher runs and a command of theirs resets between runs.

mod report;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

pub use report::{Run, StudyReport};

use crate::client::{Client, Targets};
use crate::engine::{Config, replay};

/// One deployment configuration of a study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Configuration {
    /// Every post pushed to every follower.
    PushAll,
    /// Every author with a follower merged at read.
    PullAll,
    /// Authors with at least `threshold` followers merged at read, the rest pushed.
    Hybrid { threshold: u64 },
}

impl Configuration {
    /// Push-all, the hybrid at 10k, 1k and 100 followers, pull-all: from the most writing
    /// to the most reading.
    pub const DEFAULT: &'static str = "push-all,hybrid:10000,hybrid:1000,hybrid:100,pull-all";

    /// A name fit for a directory.
    pub fn name(&self) -> String {
        match self {
            Configuration::PushAll => "push-all".into(),
            Configuration::PullAll => "pull-all".into(),
            Configuration::Hybrid { threshold } => format!("hybrid-{threshold}"),
        }
    }

    /// The services' settings that make this configuration, as environment variables.
    /// The hybrid's demotion line sits a fifth below its threshold, as the defaults do
    /// (10,000 and 8,000).
    pub fn settings(&self) -> Vec<(String, String)> {
        let var = |k: &str, v: String| (format!("STARLING__CELEBRITY__{k}"), v);
        match *self {
            Configuration::PushAll => vec![var("MODE", "push_all".into())],
            Configuration::PullAll => vec![var("MODE", "pull_all".into())],
            Configuration::Hybrid { threshold } => vec![
                var("MODE", "hybrid".into()),
                var("THRESHOLD", threshold.to_string()),
                var("DEMOTE_BELOW", (threshold - threshold / 5).max(1).to_string()),
            ],
        }
    }
}

impl fmt::Display for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Configuration::Hybrid { threshold } => write!(f, "hybrid, line at {threshold} followers"),
            other => f.write_str(&other.name()),
        }
    }
}

impl FromStr for Configuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Configuration, String> {
        match s.trim() {
            "push-all" => Ok(Configuration::PushAll),
            "pull-all" => Ok(Configuration::PullAll),
            other => {
                let threshold = other.strip_prefix("hybrid:").ok_or_else(|| {
                    format!("unknown configuration {other:?}: expected push-all, pull-all or hybrid:<followers>")
                })?;
                match threshold.parse::<u64>() {
                    Ok(t) if t > 0 => Ok(Configuration::Hybrid { threshold: t }),
                    _ => Err(format!("{other:?}: the hybrid's line is a follower count of at least 1")),
                }
            }
        }
    }
}

/// Where each configuration runs.
#[derive(Clone, Debug)]
pub enum Deployment {
    /// A fresh standalone server per configuration: `server up` on an empty data
    /// directory under `work/<configuration>/` (removed after its run; its log stays),
    /// with `env` (then the configuration's settings) in its environment.
    Fresh { server: PathBuf, env: Vec<(String, String)>, work: PathBuf },
    /// A running deployment at `targets`: `reset` (a shell command) runs before each
    /// configuration with that configuration's settings in its environment, and must
    /// leave the deployment empty, configured and answering.
    Reset { command: String, targets: Targets, admin_token: String },
}

/// Replays `trace` under each configuration in turn, writes each run's report to
/// `out/<configuration>/` and the comparison to `out/` (study.md, study.json, plots).
/// Every configuration runs even if an earlier one fails its oracle check; the caller
/// decides what a failed check means (see [`StudyReport::failed`]).
pub async fn study(
    trace: &Path,
    configurations: &[Configuration],
    deployment: &Deployment,
    cfg: &Config,
    out: &Path,
) -> anyhow::Result<StudyReport> {
    anyhow::ensure!(!configurations.is_empty(), "a study needs at least one configuration");
    let mut runs = Vec::new();
    for (i, configuration) in configurations.iter().enumerate() {
        let step = format!("study [{}/{}] {}", i + 1, configurations.len(), configuration.name());
        let t = Instant::now();
        let (targets, admin_token, server) = match deployment {
            Deployment::Fresh { server, env, work } => {
                let s = Server::start(server, env, configuration, &work.join(configuration.name())).await?;
                eprintln!("{step}: fresh server at {}", s.base);
                (Targets::single(&s.base), s.admin_token.clone(), Some(s))
            }
            Deployment::Reset { command, targets, admin_token } => {
                eprintln!("{step}: resetting the deployment");
                reset(command, configuration).await?;
                (targets.clone(), admin_token.clone(), None)
            }
        };
        let client = Client::new(targets, &admin_token, cfg.concurrency + cfg.lag_probes);
        wait_until_answering(&client, Duration::from_secs(120)).await.with_context(|| step.clone())?;
        // Every run gets its own handles, so a reset that forgot something shows as a conflict.
        let run_cfg = Config { run_id: format!("s{}", i + 1), ..cfg.clone() };
        let replayed = replay(trace, client, run_cfg).await;
        if let Some(server) = server {
            server.stop().await;
        }
        let report = replayed.with_context(|| format!("{step}: the replay"))?;
        let dir = out.join(configuration.name());
        report.write(&dir).with_context(|| format!("writing {}", dir.display()))?;
        eprintln!(
            "{step}: {} events in {:.1} s, oracle {} ({:.0} s with start and check)",
            report.replay.items,
            report.replay.seconds,
            if report.correctness.passed() { "passed" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        runs.push(Run::new(*configuration, report));
    }
    let study = StudyReport::new(trace, deployment, &runs);
    study.write(out).with_context(|| format!("writing the study to {}", out.display()))?;
    Ok(study)
}

/// Waits for the deployment's metrics endpoints to answer with Prometheus text.
async fn wait_until_answering(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match client.check_metrics().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("the deployment did not answer within {} s", timeout.as_secs())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn reset(command: &str, configuration: &Configuration) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("STARLING_STUDY_CONFIGURATION", configuration.name())
        .envs(configuration.settings())
        .status()
        .await
        .with_context(|| format!("running the reset command {command:?}"))?;
    anyhow::ensure!(status.success(), "the reset command {command:?} failed ({status})");
    Ok(())
}

/// A standalone server the study started, stopped with SIGTERM (so it shuts down as in
/// production) when its run is over.
struct Server {
    child: tokio::process::Child,
    base: String,
    admin_token: String,
    data: PathBuf,
}

impl Server {
    async fn start(bin: &Path, env: &[(String, String)], c: &Configuration, dir: &Path) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let data = dir.join("data");
        anyhow::ensure!(!data.exists(), "{} exists: a study starts every server on an empty directory", data.display());
        let log = std::fs::File::create(dir.join("server.log"))?;
        let admin_token = format!("study-{:016x}", rand::random::<u64>());
        let mut child = tokio::process::Command::new(bin)
            .args(["up", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            // A trace's heavy posters post faster than a person would.
            .env("STARLING__RATE_LIMIT__WRITES_PER_SECOND", "0")
            .envs(env.iter().cloned())
            .envs(c.settings())
            .env("STARLING__ADMIN__TOKEN", &admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let listening = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok(Some(addr.trim().to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let base = match listening {
            Ok(Ok(Some(base))) => base,
            _ => anyhow::bail!("the server did not start; see {}", dir.join("server.log").display()),
        };
        // Keep reading what it prints, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, base, admin_token, data })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            eprintln!("the study's server did not stop within 60 s of SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
        // The run's report is what the study keeps; a trace's store can be large.
        if let Err(e) = std::fs::remove_dir_all(&self.data) {
            eprintln!("could not remove {}: {e}", self.data.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_and_name_themselves() {
        let all: Vec<Configuration> = Configuration::DEFAULT.split(',').map(|c| c.parse().unwrap()).collect();
        let names: Vec<String> = all.iter().map(Configuration::name).collect();
        assert_eq!(names, ["push-all", "hybrid-10000", "hybrid-1000", "hybrid-100", "pull-all"]);
        assert_eq!(
            Configuration::Hybrid { threshold: 1000 }.settings(),
            [
                ("STARLING__CELEBRITY__MODE".to_owned(), "hybrid".to_owned()),
                ("STARLING__CELEBRITY__THRESHOLD".to_owned(), "1000".to_owned()),
                ("STARLING__CELEBRITY__DEMOTE_BELOW".to_owned(), "800".to_owned()),
            ]
        );
        assert_eq!(Configuration::Hybrid { threshold: 1 }.settings()[2].1, "1");
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        for (given, says) in [
            ("pushall", "expected push-all, pull-all or hybrid:<followers>"),
            ("hybrid:", "at least 1"),
            ("hybrid:0", "at least 1"),
            ("hybrid:1k", "at least 1"),
        ] {
            let e = given.parse::<Configuration>().unwrap_err();
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}
