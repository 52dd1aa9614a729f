//! A one-pass summary of any trace: what a researcher checks before replaying it (how many of each
//! op, how skewed the graph and the posting are, how bursty the load is).
//!
//! Streaming: memory is O(distinct users + distinct seconds), never O(records). Edges are counted
//! as written; duplicate edge lines (which no producer in this crate writes) would be counted twice,
//! since detecting them needs O(edges) memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::BufRead;

use crate::{Op, Record, TraceError, TraceReader, TraceUser};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsOptions {
    /// Users with at least this many followers in the initial graph are counted (a fan-out cost
    /// indicator: a push-based design pays per follower).
    pub follower_threshold: u64,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions { follower_threshold: 1000 }
    }
}

/// Order statistics of a set of per-user counts (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Distribution {
    /// How many users the distribution is over.
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
}

impl Distribution {
    /// Sorts `values` in place and summarises them.
    pub fn of(values: &mut [u64]) -> Self {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_unstable();
        let n = values.len();
        let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Distribution {
            count: n as u64,
            min: values[0],
            max: values[n - 1],
            mean: values.iter().sum::<u64>() as f64 / n as f64,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            p999: rank(0.999),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "over {} users: mean {:.2}, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            self.count, self.mean, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// The summary of one trace.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Stats {
    /// The trace's `#meta` entries, in file order (a JSON object when serialised).
    #[serde(serialize_with = "meta_as_map")]
    pub meta: Vec<(String, String)>,
    pub edges: u64,
    pub events: u64,
    /// Events per op name; every op is present, possibly with 0.
    pub per_op: BTreeMap<String, u64>,
    /// Distinct users appearing anywhere (edges, event users, follow/block targets).
    pub users: u64,
    pub first_at_ms: u64,
    /// `at_ms` of the last event: the trace's length at 1x replay speed.
    pub duration_ms: u64,
    /// Events over the duration (whole seconds, at least one).
    pub mean_events_per_s: f64,
    /// The busiest one-second window `[s, s+1)` and its event count: shows a burst.
    pub peak_second: u64,
    pub peak_events_per_s: u64,
    /// Followers in the initial graph, over every user of the trace (zeros included).
    pub followers: Distribution,
    /// Followees in the initial graph, over every user of the trace.
    pub following: Distribution,
    pub follower_threshold: u64,
    /// Users with at least `follower_threshold` followers in the initial graph.
    pub users_at_or_above_threshold: u64,
    /// Posts per user, over the users who post at least once.
    pub posts_per_user: Distribution,
    /// Reads per user, over the users who read at least once.
    pub reads_per_user: Distribution,
}

#[derive(Default, Clone, Copy)]
struct PerUser {
    followers: u64,
    following: u64,
    posts: u64,
    reads: u64,
}

/// Summarises a trace with the default [`StatsOptions`].
pub fn summarize<R: BufRead>(reader: TraceReader<R>) -> Result<Stats, TraceError> {
    summarize_with(reader, &StatsOptions::default())
}

pub fn summarize_with<R: BufRead>(reader: TraceReader<R>, opts: &StatsOptions) -> Result<Stats, TraceError> {
    let meta = reader.header().meta.clone();
    let mut users: HashMap<TraceUser, PerUser> = HashMap::new();
    let mut per_second: HashMap<u64, u64> = HashMap::new();
    let (mut edges, mut events) = (0u64, 0u64);
    let mut per_op = [0u64; Op::COUNT];
    let (mut first, mut last) = (None, 0u64);
    for record in reader {
        match record? {
            Record::Edge { follower, followee } => {
                edges += 1;
                users.entry(follower).or_default().following += 1;
                users.entry(followee).or_default().followers += 1;
            }
            Record::Event(e) => {
                events += 1;
                per_op[e.op.index()] += 1;
                first.get_or_insert(e.at_ms);
                last = e.at_ms;
                *per_second.entry(e.at_ms / 1000).or_default() += 1;
                let u = users.entry(e.user).or_default();
                match e.op {
                    Op::Post { .. } => u.posts += 1,
                    Op::Read => u.reads += 1,
                    Op::Follow { target }
                    | Op::Unfollow { target }
                    | Op::Block { target }
                    | Op::Unblock { target }
                    | Op::Mute { target }
                    | Op::Unmute { target } => {
                        users.entry(target).or_default();
                    }
                    Op::Delete { .. }
                    | Op::Reblog { .. }
                    | Op::Unreblog { .. }
                    | Op::Favourite { .. }
                    | Op::Unfavourite { .. } => {}
                }
            }
        }
    }
    let (peak_second, peak_events_per_s) =
        per_second.iter().map(|(&s, &n)| (s, n)).max_by_key(|&(s, n)| (n, std::cmp::Reverse(s))).unwrap_or((0, 0));
    let column = |f: fn(&PerUser) -> u64, nonzero: bool| -> Distribution {
        let mut v: Vec<u64> = users.values().map(f).filter(|&x| !nonzero || x > 0).collect();
        Distribution::of(&mut v)
    };
    let followers = column(|u| u.followers, false);
    let following = column(|u| u.following, false);
    let posts_per_user = column(|u| u.posts, true);
    let reads_per_user = column(|u| u.reads, true);
    Ok(Stats {
        meta,
        edges,
        events,
        per_op: Op::NAMES.iter().zip(per_op).map(|(n, c)| (n.to_string(), c)).collect(),
        users: users.len() as u64,
        first_at_ms: first.unwrap_or(0),
        duration_ms: last,
        mean_events_per_s: events as f64 / (last.div_ceil(1000)).max(1) as f64,
        peak_second,
        peak_events_per_s,
        followers,
        following,
        follower_threshold: opts.follower_threshold,
        users_at_or_above_threshold: users.values().filter(|u| u.followers >= opts.follower_threshold).count() as u64,
        posts_per_user,
        reads_per_user,
    })
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.meta {
            writeln!(f, "meta {k} = {v}")?;
        }
        writeln!(f, "users            {}", self.users)?;
        writeln!(f, "edges            {}", self.edges)?;
        writeln!(f, "events           {}", self.events)?;
        for name in Op::NAMES {
            writeln!(f, "  {name:<14} {}", self.per_op.get(name).copied().unwrap_or(0))?;
        }
        writeln!(
            f,
            "duration         {:.3} s (first event at {:.3} s)",
            self.duration_ms as f64 / 1000.0,
            self.first_at_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "rate             {:.1} events/s mean, peak {} in second {}",
            self.mean_events_per_s, self.peak_events_per_s, self.peak_second
        )?;
        writeln!(f, "followers        {}", self.followers)?;
        writeln!(f, "  >= {:<11} {} users", self.follower_threshold, self.users_at_or_above_threshold)?;
        writeln!(f, "following        {}", self.following)?;
        writeln!(f, "posts per user   {}", self.posts_per_user)?;
        write!(f, "reads per user   {}", self.reads_per_user)
    }
}

fn meta_as_map<S: serde::Serializer>(meta: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(meta.iter().map(|(k, v)| (k, v)))
}
