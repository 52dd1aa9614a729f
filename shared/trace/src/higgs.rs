//! Importer for the SNAP Higgs Twitter data set: an activity file plus a (partial) follower graph.
//!
//! # Inputs
//!
//! * Activity: `userA userB unix_ts TYPE` per line, time-sorted, `TYPE` one of `RT` (A retweeted
//!   B), `MT` (A mentioned B), `RE` (A replied to B). Every line becomes a **post by userA**; userB
//!   only matters for the `interactions` fill and for the `active` user scope.
//! * Graph (optional): `A B` per line, read as **A follows B**. SNAP does not say which way the
//!   edges point, so we checked on the sample data: for retweets where both users are in the
//!   graph, the edge retweeter→retweeted exists 51 of 70 times against 17 the other way (one
//!   follows whom one retweets), and KONECT's copy of the graph has a maximum out-degree of 1,259
//!   (Twitter caps how many one may follow) against a maximum in-degree of 51,386 (celebrities).
//!   Both say the first column is the follower. The sample available to the project is a prefix of
//!   the full graph, grouped by first user, whose last group (user 22732) may be cut short; the
//!   importer takes what is there.
//!
//! # The gap between graph and activity
//!
//! The partial graph knows only some of the users who act. How to fill that gap changes the fan-out
//! a replay sees, so it is the researcher's explicit choice ([`Fill`]), written to the trace as
//! `#meta fill=...`:
//!
//! * `graph-only`: the edges exactly as in the file (after dedup and self-loop removal); users
//!   without edges post to nobody.
//! * `interactions`: the graph's edges plus, for each interaction A→B, the edge "A follows B"
//!   when it is missing, since a user who retweets, mentions or replies to another usually follows
//!   them.
//! * `known-only`: the graph's edges, and activity only by users who appear in the graph file
//!   (either column); the rest of the activity is dropped and counted.
//!
//! [`UserScope`] then says which edges are kept: `all` of them, or (`active`) only those whose two
//! ends both appear (as userA or userB) in the imported activity, which keeps a bounded sample small.
//!
//! # Time
//!
//! Higgs timestamps are whole seconds. `at_ms` is milliseconds since the first imported event; the
//! `k` events of one second are spread evenly across it in file order (the i-th, from 0, at
//! `i * 1000 / k` ms into the second), so a replay does not see artificial one-second pulses.
//!
//! # Reads
//!
//! Higgs has no reads. With `reads_per_post = r`, each post is followed, at the same `at_ms`, by
//! `floor(r)` reads plus one more with probability `r - floor(r)` (seeded), each by a follower of
//! the author drawn uniformly from the trace's graph (with replacement). An author without
//! followers gets no reads, so the `reads` count in the meta can be below `r * posts`.
//!
//! # Memory
//!
//! The importer holds the imported activity and the kept edges (16 bytes each, sorted for dedup and
//! a deterministic output order). That is a few MB for the sample and about 240 MB for the full
//! 14.8 M-edge graph with `users = all`. The written trace streams as usual.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::input::{file_name, for_each_line, id, input_error};
use crate::{Event, Op, TraceError, TraceUser, TraceWriter};

/// How the gap between the partial graph and the activity is filled (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    GraphOnly,
    Interactions,
    KnownOnly,
}

impl Fill {
    /// The name used in `#meta fill=` and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Fill::GraphOnly => "graph-only",
            Fill::Interactions => "interactions",
            Fill::KnownOnly => "known-only",
        }
    }
}

/// Which graph edges are kept (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UserScope {
    All,
    Active,
}

impl UserScope {
    pub fn name(&self) -> &'static str {
        match self {
            UserScope::All => "all",
            UserScope::Active => "active",
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HiggsOptions {
    pub fill: Fill,
    pub users: UserScope,
    /// Import only the first `n` activity lines.
    pub max_events: Option<usize>,
    /// Mean reads emitted after each post (Higgs has none of its own).
    pub reads_per_post: f64,
    pub seed: u64,
}

impl Default for HiggsOptions {
    fn default() -> Self {
        HiggsOptions {
            fill: Fill::Interactions,
            users: UserScope::Active,
            max_events: None,
            reads_per_post: 1.0,
            seed: 1,
        }
    }
}

/// What the importer read, kept, dropped and wrote; the same numbers go to `#meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Activity lines read (at most `max_events`).
    pub activity_lines: u64,
    /// Activity lines dropped by `known-only` because userA is not in the graph.
    pub dropped_unknown: u64,
    pub posts: u64,
    pub reads: u64,
    /// Graph file lines read.
    pub graph_lines: u64,
    pub self_loops: u64,
    pub duplicate_edges: u64,
    /// Graph edges left out by the `active` scope.
    pub out_of_scope_edges: u64,
    /// Distinct graph edges written.
    pub graph_edges: u64,
    /// Edges added by the `interactions` fill.
    pub interaction_edges: u64,
    /// Distinct users in the written trace.
    pub users: u64,
    /// `at_ms` of the last event.
    pub duration_ms: u64,
}

struct Activity {
    author: TraceUser,
    other: TraceUser,
    ts: u64,
}

/// Imports the activity (and graph) into `out`, whose header must still be open: the importer
/// appends its `#meta` lines.
pub fn import<W: Write>(
    activity: &Path,
    graph: Option<&Path>,
    opts: &HiggsOptions,
    out: &mut TraceWriter<W>,
) -> Result<ImportSummary, TraceError> {
    if !(opts.reads_per_post >= 0.0 && opts.reads_per_post.is_finite()) {
        return Err(TraceError::Config(format!("reads_per_post must be non-negative, not {}", opts.reads_per_post)));
    }
    if opts.fill == Fill::KnownOnly && graph.is_none() {
        return Err(TraceError::Config("fill known-only needs a graph file".into()));
    }
    let mut summary = ImportSummary::default();
    let mut acts = read_activity(activity, opts.max_events)?;
    summary.activity_lines = acts.len() as u64;

    if let (Fill::KnownOnly, Some(graph)) = (opts.fill, graph) {
        let mut known: HashSet<TraceUser> = HashSet::new();
        read_graph(graph, |a, b| {
            known.insert(a);
            known.insert(b);
        })?;
        acts.retain(|a| known.contains(&a.author));
        summary.dropped_unknown = summary.activity_lines - acts.len() as u64;
    }
    let active: HashSet<TraceUser> = acts.iter().flat_map(|a| [a.author, a.other]).collect();

    let mut edges: Vec<(TraceUser, TraceUser)> = Vec::new();
    if let Some(graph) = graph {
        summary.graph_lines = read_graph(graph, |a, b| {
            if a == b {
                summary.self_loops += 1;
            } else if opts.users == UserScope::Active && !(active.contains(&a) && active.contains(&b)) {
                summary.out_of_scope_edges += 1;
            } else {
                edges.push((a, b));
            }
        })?;
    }
    let before = edges.len();
    edges.sort_unstable();
    edges.dedup();
    summary.duplicate_edges = (before - edges.len()) as u64;
    summary.graph_edges = edges.len() as u64;

    if opts.fill == Fill::Interactions {
        let mut extra: Vec<(TraceUser, TraceUser)> = acts
            .iter()
            .filter(|a| a.author != a.other)
            .map(|a| (a.author, a.other))
            .filter(|e| edges.binary_search(e).is_err())
            .collect();
        extra.sort_unstable();
        extra.dedup();
        summary.interaction_edges = extra.len() as u64;
        edges.extend(extra);
        edges.sort_unstable();
    }

    // Followers of each author, for the synthetic reads; edges are sorted, so lists are too.
    let authors: HashSet<TraceUser> = acts.iter().map(|a| a.author).collect();
    let mut followers: HashMap<TraceUser, Vec<TraceUser>> = HashMap::new();
    if opts.reads_per_post > 0.0 {
        for &(follower, followee) in &edges {
            if authors.contains(&followee) {
                followers.entry(followee).or_default().push(follower);
            }
        }
    }

    let events = build_events(&acts, opts, &followers);
    summary.posts = acts.len() as u64;
    summary.reads = events.len() as u64 - summary.posts;
    summary.duration_ms = events.last().map_or(0, |e| e.at_ms);
    let mut users: HashSet<TraceUser> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
    users.extend(events.iter().map(|e| e.user));
    summary.users = users.len() as u64;
    drop(users);

    write_meta(out, activity, graph, opts, &summary)?;
    for &(a, b) in &edges {
        out.edge(a, b)?;
    }
    for e in &events {
        out.event(e)?;
    }
    Ok(summary)
}

fn read_activity(path: &Path, max: Option<usize>) -> Result<Vec<Activity>, TraceError> {
    let mut acts: Vec<Activity> = Vec::new();
    let limit = max.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(acts);
    }
    for_each_line(path, |line, f| {
        if f.len() != 4 {
            return Err(input_error(
                path,
                line,
                format!("expected `userA userB unix_ts TYPE`, got {} fields", f.len()),
            ));
        }
        if !matches!(f[3], "RT" | "MT" | "RE") {
            return Err(input_error(path, line, format!("unknown interaction type `{}`", f[3])));
        }
        let act = Activity {
            author: id(path, line, f[0], "userA")?,
            other: id(path, line, f[1], "userB")?,
            ts: id(path, line, f[2], "timestamp")?,
        };
        let prev = acts.last().map_or(0, |a| a.ts);
        if act.ts < prev {
            return Err(input_error(path, line, format!("timestamp {} before the previous {prev}", act.ts)));
        }
        acts.push(act);
        Ok(acts.len() < limit)
    })?;
    Ok(acts)
}

/// Calls `f(a, b)` for every edge line; returns the number of edge lines.
fn read_graph(path: &Path, mut f: impl FnMut(TraceUser, TraceUser)) -> Result<u64, TraceError> {
    let mut lines = 0;
    for_each_line(path, |line, fields| {
        if fields.len() != 2 {
            return Err(input_error(path, line, format!("expected `A B`, got {} fields", fields.len())));
        }
        f(id(path, line, fields[0], "A")?, id(path, line, fields[1], "B")?);
        lines += 1;
        Ok(true)
    })?;
    Ok(lines)
}

fn build_events(acts: &[Activity], opts: &HiggsOptions, followers: &HashMap<TraceUser, Vec<TraceUser>>) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let whole = opts.reads_per_post.floor() as u64;
    let frac = opts.reads_per_post - opts.reads_per_post.floor();
    let first_ts = acts.first().map_or(0, |a| a.ts);
    let mut events = Vec::with_capacity(acts.len() * (1 + whole as usize));
    let mut key = 0u64;
    let mut i = 0;
    while i < acts.len() {
        let ts = acts[i].ts;
        let group = acts[i..].iter().take_while(|a| a.ts == ts).count() as u64;
        for j in 0..group {
            let act = &acts[i + j as usize];
            let at_ms = (ts - first_ts) * 1000 + j * 1000 / group;
            key += 1;
            events.push(Event { at_ms, user: act.author, op: Op::Post { key } });
            if opts.reads_per_post > 0.0 {
                let n = whole + u64::from(frac > 0.0 && rng.random::<f64>() < frac);
                if let Some(fs) = followers.get(&act.author) {
                    for _ in 0..n {
                        let reader = fs[rng.random_range(0..fs.len() as u64) as usize];
                        events.push(Event { at_ms, user: reader, op: Op::Read });
                    }
                }
            }
        }
        i += group as usize;
    }
    events
}

fn write_meta<W: Write>(
    out: &mut TraceWriter<W>,
    activity: &Path,
    graph: Option<&Path>,
    opts: &HiggsOptions,
    s: &ImportSummary,
) -> Result<(), TraceError> {
    out.meta("source", "higgs")?;
    out.meta("activity", &file_name(activity))?;
    out.meta("graph", &graph.map_or_else(|| "none".to_string(), file_name))?;
    out.meta("edge_direction", "A B = A follows B")?;
    out.meta("fill", opts.fill.name())?;
    out.meta("users", opts.users.name())?;
    out.meta("max_events", &opts.max_events.map_or_else(|| "all".to_string(), |n| n.to_string()))?;
    out.meta("reads_per_post", &opts.reads_per_post.to_string())?;
    out.meta("seed", &opts.seed.to_string())?;
    out.meta("time", "unix seconds to ms since the first event; events of one second spread evenly across it")?;
    out.meta("count.activity_lines", &s.activity_lines.to_string())?;
    out.meta("count.dropped_unknown", &s.dropped_unknown.to_string())?;
    out.meta("count.posts", &s.posts.to_string())?;
    out.meta("count.reads", &s.reads.to_string())?;
    out.meta("count.graph_lines", &s.graph_lines.to_string())?;
    out.meta("count.self_loops", &s.self_loops.to_string())?;
    out.meta("count.duplicate_edges", &s.duplicate_edges.to_string())?;
    out.meta("count.out_of_scope_edges", &s.out_of_scope_edges.to_string())?;
    out.meta("count.graph_edges", &s.graph_edges.to_string())?;
    out.meta("count.interaction_edges", &s.interaction_edges.to_string())?;
    out.meta("count.users", &s.users.to_string())
}
