//! The `starling trace ...` subcommands. The binary (services/starling) only wires [`Command`] into
//! its own parser and calls [`run`]; everything else lives here so it is tested with the library.
//!
//! Every command that writes a trace writes `<out>.partial` first and renames it to `--out` only on
//! success, so an interrupted run never leaves a file that looks like a complete trace.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::edgelist::{self, EdgeListOptions};
use crate::higgs::{self, Fill, HiggsOptions, UserScope};
use crate::progress::Progress;
use crate::stats::{self, StatsOptions};
use crate::synth::{self, ActivityConfig, Burst, SynthConfig};
use crate::{Header, TraceReader, TraceWriter};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Generate a synthetic trace (power-law graph, Zipf activity, a burst).
    Generate(GenerateArgs),
    /// Import the SNAP Higgs Twitter activity (and follower graph).
    ImportHiggs(ImportHiggsArgs),
    /// Import a plain edge list (e.g. socfb-Reed98) and generate activity over its users.
    ImportEdgelist(ImportEdgelistArgs),
    /// Summarise a trace: op counts, graph and activity skew, peak rate.
    Stats(StatsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Trace file to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().users)]
    pub users: u64,
    /// Users 1..=N, each followed by --celebrity-followers of all users.
    #[arg(long, default_value_t = SynthConfig::default().celebrities)]
    pub celebrities: u64,
    /// Mean number of users each user follows.
    #[arg(long, default_value_t = SynthConfig::default().mean_following)]
    pub mean_following: f64,
    /// Exponent of the power-law density of follower counts (above 1).
    #[arg(long, default_value_t = SynthConfig::default().follower_exponent)]
    pub follower_exponent: f64,
    /// Fraction of users following each celebrity.
    #[arg(long, default_value_t = SynthConfig::default().celebrity_followers)]
    pub celebrity_followers: f64,
    /// Fraction of posts written by the celebrities (shared evenly among them).
    #[arg(long, default_value_t = SynthConfig::default().celebrity_post_share)]
    pub celebrity_post_share: f64,
    /// Seed of the graph; also of the activity unless --activity-seed is given.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    #[command(flatten)]
    pub activity: ActivityArgs,
}

/// The synthetic activity model's knobs (shared by `generate` and `import-edgelist`).
#[derive(clap::Args, Debug, Clone)]
pub struct ActivityArgs {
    #[arg(long, default_value_t = ActivityConfig::default().duration_s)]
    pub duration_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().posts_per_s)]
    pub posts_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().reads_per_s)]
    pub reads_per_s: f64,
    /// Zipf exponent of posting over users.
    #[arg(long, default_value_t = ActivityConfig::default().post_zipf)]
    pub post_zipf: f64,
    /// Zipf exponent of home-timeline reads over users.
    #[arg(long, default_value_t = ActivityConfig::default().read_zipf)]
    pub read_zipf: f64,
    #[arg(long, default_value_t = Burst::default().at_s)]
    pub burst_at_s: f64,
    #[arg(long, default_value_t = Burst::default().duration_s)]
    pub burst_duration_s: f64,
    /// Every rate is multiplied by this during the burst.
    #[arg(long, default_value_t = Burst::default().multiplier)]
    pub burst_multiplier: f64,
    /// No burst at all.
    #[arg(long)]
    pub no_burst: bool,
    #[arg(long, default_value_t = ActivityConfig::default().follows_per_s)]
    pub follows_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().unfollows_per_s)]
    pub unfollows_per_s: f64,
    /// Fraction of posts later deleted by their author.
    #[arg(long, default_value_t = ActivityConfig::default().deletes_per_post)]
    pub deletes_per_post: f64,
    #[arg(long, default_value_t = ActivityConfig::default().delete_delay_s)]
    pub delete_delay_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().blocks_per_s)]
    pub blocks_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().unblocks_per_s)]
    pub unblocks_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().reblogs_per_s)]
    pub reblogs_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().unreblogs_per_s)]
    pub unreblogs_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().favourites_per_s)]
    pub favourites_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().unfavourites_per_s)]
    pub unfavourites_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().mutes_per_s)]
    pub mutes_per_s: f64,
    #[arg(long, default_value_t = ActivityConfig::default().unmutes_per_s)]
    pub unmutes_per_s: f64,
    /// Seed of the activity (default: the command's --seed).
    #[arg(long)]
    pub activity_seed: Option<u64>,
}

impl ActivityArgs {
    pub fn config(&self, default_seed: u64) -> ActivityConfig {
        ActivityConfig {
            duration_s: self.duration_s,
            posts_per_s: self.posts_per_s,
            reads_per_s: self.reads_per_s,
            post_zipf: self.post_zipf,
            read_zipf: self.read_zipf,
            burst: (!self.no_burst).then_some(Burst {
                at_s: self.burst_at_s,
                duration_s: self.burst_duration_s,
                multiplier: self.burst_multiplier,
            }),
            follows_per_s: self.follows_per_s,
            unfollows_per_s: self.unfollows_per_s,
            deletes_per_post: self.deletes_per_post,
            delete_delay_s: self.delete_delay_s,
            blocks_per_s: self.blocks_per_s,
            unblocks_per_s: self.unblocks_per_s,
            reblogs_per_s: self.reblogs_per_s,
            unreblogs_per_s: self.unreblogs_per_s,
            favourites_per_s: self.favourites_per_s,
            unfavourites_per_s: self.unfavourites_per_s,
            mutes_per_s: self.mutes_per_s,
            unmutes_per_s: self.unmutes_per_s,
            seed: self.activity_seed.unwrap_or(default_seed),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportHiggsArgs {
    /// Higgs activity file (`userA userB unix_ts RT|MT|RE`).
    #[arg(long)]
    pub activity: PathBuf,
    /// Higgs follower edge list (`A B`: A follows B).
    #[arg(long)]
    pub graph: Option<PathBuf>,
    /// How to fill the gap between the partial graph and the activity.
    #[arg(long, value_enum, default_value_t = HiggsOptions::default().fill)]
    pub fill: Fill,
    /// Keep all graph edges, or only those between users of the imported activity.
    #[arg(long, value_enum, default_value_t = HiggsOptions::default().users)]
    pub users: UserScope,
    /// Import only the first N activity lines.
    #[arg(long)]
    pub max_events: Option<usize>,
    /// Mean reads by followers emitted after each post (Higgs has no reads).
    #[arg(long, default_value_t = HiggsOptions::default().reads_per_post)]
    pub reads_per_post: f64,
    #[arg(long, default_value_t = HiggsOptions::default().seed)]
    pub seed: u64,
    /// Trace file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportEdgelistArgs {
    /// Edge list (`a b` per line; `%` and `#` comments).
    #[arg(long)]
    pub input: PathBuf,
    /// Read `a b` as one follow edge (a follows b) instead of a friendship (two edges).
    #[arg(long)]
    pub directed: bool,
    /// Write the graph only, without generated activity.
    #[arg(long)]
    pub no_activity: bool,
    /// Seed of the generated activity (unless --activity-seed is given).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub activity: ActivityArgs,
    /// Trace file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    /// Trace file to summarise.
    pub trace: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Count users with at least this many followers.
    #[arg(long, default_value_t = StatsOptions::default().follower_threshold)]
    pub follower_threshold: u64,
}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Generate(a) => {
            let cfg = SynthConfig {
                users: a.users,
                celebrities: a.celebrities,
                mean_following: a.mean_following,
                follower_exponent: a.follower_exponent,
                celebrity_followers: a.celebrity_followers,
                celebrity_post_share: a.celebrity_post_share,
                activity: a.activity.config(a.seed),
                seed: a.seed,
            };
            cfg.validate()?;
            let bar = progress_bar("generating");
            let summary = write_trace(&a.out, |w| Ok(synth::generate(&cfg, w, &|n| bar.set_position(n))?))?;
            bar.finish_and_clear();
            eprintln!("wrote {} edges and {} events to {}", summary.edges, summary.events, a.out.display());
        }
        Command::ImportHiggs(a) => {
            let opts = HiggsOptions {
                fill: a.fill,
                users: a.users,
                max_events: a.max_events,
                reads_per_post: a.reads_per_post,
                seed: a.seed,
            };
            let bar = progress_bar("importing");
            let s = write_trace(&a.out, |w| Ok(higgs::import(&a.activity, a.graph.as_deref(), &opts, w)?))?;
            bar.finish_and_clear();
            eprintln!(
                "wrote {} edges ({} from the graph, {} from interactions) and {} events ({} posts, {} reads; {} \
                 dropped as unknown) to {}",
                s.graph_edges + s.interaction_edges,
                s.graph_edges,
                s.interaction_edges,
                s.posts + s.reads,
                s.posts,
                s.reads,
                s.dropped_unknown,
                a.out.display()
            );
        }
        Command::ImportEdgelist(a) => {
            let opts = EdgeListOptions {
                undirected: !a.directed,
                activity: (!a.no_activity).then(|| a.activity.config(a.seed)),
            };
            let bar = progress_bar("importing");
            let s = write_trace(&a.out, |w| Ok(edgelist::import(&a.input, &opts, w, &|n| bar.set_position(n))?))?;
            bar.finish_and_clear();
            let events = s.activity.as_ref().map_or(0, |x| x.events);
            eprintln!("wrote {} users, {} edges and {} events to {}", s.users, s.edges, events, a.out.display());
        }
        Command::Stats(a) => {
            let reader = TraceReader::open(&a.trace).with_context(|| format!("reading {}", a.trace.display()))?;
            let opts = StatsOptions { follower_threshold: a.follower_threshold };
            let s = stats::summarize_with(reader, &opts).with_context(|| format!("reading {}", a.trace.display()))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// A count of records on stderr: a spinner on a terminal, lines otherwise.
fn progress_bar(what: &str) -> Progress {
    Progress::new(what, None, true)
}

/// Writes a trace through `f` to `<out>.partial`, then renames it to `out`.
fn write_trace<T>(out: &Path, f: impl FnOnce(&mut TraceWriter<File>) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let result = (|| {
        let mut w = TraceWriter::new(file, &Header::default())?;
        let value = f(&mut w)?;
        w.finish()?.sync_all()?;
        Ok(value)
    })();
    match result {
        Ok(value) => {
            std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
