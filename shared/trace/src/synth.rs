//! Synthetic traces with the skew of real social networks: power-law follower counts with a few
//! celebrities, Zipf posting and reading rates, a traffic burst, and follows, unfollows, blocks and
//! deletes over time.
//!
//! # Determinism
//!
//! Every random choice comes from `ChaCha8Rng` seeded from the configuration (not `StdRng` or
//! `SmallRng`, whose algorithms may change between `rand` releases and platforms), and integer
//! ranges are always sampled as `u64`, never `usize`. The same configuration therefore gives a
//! byte-identical trace on every platform whose `f64` `powf`/`ln` agree, which the mainstream ones
//! do for the values involved. The graph and the activity draw from different ChaCha streams, so
//! using one seed for both does not correlate them.
//!
//! # The graph
//!
//! Users are `1..=users`; the celebrities are users `1..=celebrities`, so a researcher can find them.
//! Each user follows each celebrity with probability `celebrity_followers`. Every non-celebrity
//! gets a popularity weight drawn from a Pareto law truncated above, whose density falls as
//! `k^-follower_exponent` (so the follower-count CCDF has slope `1 - follower_exponent` on a log-log
//! plot). Each user then follows about `mean_following` users in all: the celebrities it picked plus
//! non-celebrities drawn in proportion to their weight (an alias table: O(1) per draw). A
//! non-celebrity's follower count is thus Poisson around its weight and inherits the power-law tail.
//! The truncation keeps every non-celebrity below half a celebrity's expected audience, so the
//! celebrities really are the most followed; the weight floor is solved for so that the mean
//! number followed matches `mean_following`.
//!
//! Edges stream out user by user: memory is O(users) (weights, alias table, permutations), never
//! O(edges), so millions of users fit on a laptop.
//!
//! # The activity
//!
//! One merged Poisson process over the trace's duration whose rate is the sum of the per-op rates,
//! multiplied by the burst's multiplier inside the burst window (thinning handles the step). Each
//! arrival is a post, read, follow, unfollow, block, unblock, reblog, unreblog, favourite,
//! unfavourite, mute or unmute in proportion to its rate:
//!
//! * posters are drawn from a Zipf law of exponent `post_zipf` over a random permutation of the
//!   users, readers from an independent Zipf (`read_zipf`) over another permutation, so heavy
//!   posters and heavy readers are different people;
//! * a post is deleted, with probability `deletes_per_post`, after an exponential delay (mean
//!   `delete_delay_s`) by its author; deletes falling after the end are dropped;
//! * a follow is made by a reader-Zipf user towards a poster-Zipf user (active people follow the
//!   prolific), never to oneself, twice, or across a block made in the trace;
//! * an unfollow undoes a random follow made earlier in the trace that is still in force, an unblock
//!   a random block made earlier in the trace; when there is none the arrival is skipped. A block
//!   ends trace-made follows between the two users either way, as the graph service does.
//!   The pools of undoable follows and blocks are bounded (`POOL_CAP` entries, a random one evicted
//!   when full), so memory stays bounded however long the trace. Initial-graph edges are never
//!   unfollowed: knowing them would take O(edges) memory.
//!
//! * a reblog or favourite is made by a reader-Zipf user on one of the last `RECENT_POSTS` posts
//!   (it may have been deleted since: the replayer judges the refusal), never twice by one user
//!   while in force; an unreblog or unfavourite undoes a random one still in force;
//! * a mute is made by a reader-Zipf user of a poster-Zipf user, an unmute undoes a random one.
//!
//! Follows may repeat an initial-graph edge (the generator does not remember the graph); a replayer
//! must treat "already following" as a no-op.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Event, Op, TraceError, TraceUser, TraceWriter};

/// How many of the newest posts reblogs and favourites pick from.
const RECENT_POSTS: usize = 1_024;

/// Bound on the trace-made follows (and blocks) remembered so that unfollows (unblocks) can undo
/// them.
pub const POOL_CAP: usize = 1 << 20;

/// How often (in records) `progress` is called; a power of two, tested with a mask.
const PROGRESS_EVERY: u64 = 1 << 16;

/// The whole synthetic trace: graph and activity.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthConfig {
    pub users: u64,
    /// Users `1..=celebrities`, each followed by a `celebrity_followers` fraction of all users.
    pub celebrities: u64,
    /// Mean number of users each user follows, celebrities included.
    pub mean_following: f64,
    /// Exponent of the power-law density of non-celebrity follower counts (Twitter-like graphs:
    /// about 2 to 2.5). Must be above 1.
    pub follower_exponent: f64,
    /// Fraction of all users following each celebrity.
    pub celebrity_followers: f64,
    /// Fraction of posts written by the celebrities (shared evenly among them). Left to the
    /// Zipf draw alone, the few celebrities would rarely post, and the read-time merge that
    /// their posts take would go unexercised; real prominent accounts post often.
    pub celebrity_post_share: f64,
    pub activity: ActivityConfig,
    /// Seed of the graph (the activity has its own).
    pub seed: u64,
}

impl Default for SynthConfig {
    /// Small enough that one laptop server replays it in about a minute: 10k users and 750k
    /// edges, then a 60 s trace of about 45k events with a four-fold 10 s burst.
    fn default() -> Self {
        SynthConfig {
            users: 10_000,
            celebrities: 5,
            mean_following: 75.0,
            follower_exponent: 2.2,
            celebrity_followers: 0.2,
            celebrity_post_share: 0.05,
            activity: ActivityConfig::default(),
            seed: 1,
        }
    }
}

/// The activity model, over any set of users (also used by the edge-list importer).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActivityConfig {
    pub duration_s: f64,
    pub posts_per_s: f64,
    pub reads_per_s: f64,
    /// Zipf exponent of posting over users (1.0: the top poster posts twice as often as the second).
    pub post_zipf: f64,
    /// Zipf exponent of home-timeline reads over users.
    pub read_zipf: f64,
    pub burst: Option<Burst>,
    pub follows_per_s: f64,
    pub unfollows_per_s: f64,
    /// Fraction of posts deleted later by their author.
    pub deletes_per_post: f64,
    /// Mean delay between a post and its deletion.
    pub delete_delay_s: f64,
    pub blocks_per_s: f64,
    pub unblocks_per_s: f64,
    pub reblogs_per_s: f64,
    pub unreblogs_per_s: f64,
    pub favourites_per_s: f64,
    pub unfavourites_per_s: f64,
    pub mutes_per_s: f64,
    pub unmutes_per_s: f64,
    pub seed: u64,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            duration_s: 60.0,
            posts_per_s: 50.0,
            reads_per_s: 500.0,
            post_zipf: 1.0,
            read_zipf: 0.8,
            burst: Some(Burst::default()),
            follows_per_s: 5.0,
            unfollows_per_s: 2.0,
            deletes_per_post: 0.01,
            delete_delay_s: 10.0,
            blocks_per_s: 0.5,
            unblocks_per_s: 0.1,
            reblogs_per_s: 5.0,
            unreblogs_per_s: 0.5,
            favourites_per_s: 10.0,
            unfavourites_per_s: 1.0,
            mutes_per_s: 0.2,
            unmutes_per_s: 0.05,
            seed: 1,
        }
    }
}

/// A window during which every rate is multiplied (a Super Bowl spike).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    pub at_s: f64,
    pub duration_s: f64,
    pub multiplier: f64,
}

impl Default for Burst {
    fn default() -> Self {
        Burst { at_s: 30.0, duration_s: 10.0, multiplier: 4.0 }
    }
}

/// What a generator wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub users: u64,
    pub edges: u64,
    pub events: u64,
    /// Events per op, indexed like [`Op::NAMES`].
    pub per_op: [u64; Op::COUNT],
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |m: &str| Err(TraceError::Config(m.to_string()));
        if self.users == 0 || self.users > u32::MAX as u64 {
            return bad("users must be between 1 and 2^32-1");
        }
        if self.celebrities > self.users {
            return bad("more celebrities than users");
        }
        if !(self.mean_following >= 0.0 && self.mean_following.is_finite()) {
            return bad("mean_following must be a non-negative number");
        }
        if !(self.follower_exponent > 1.0 && self.follower_exponent.is_finite()) {
            return bad("follower_exponent must be above 1");
        }
        if !(0.0..=1.0).contains(&self.celebrity_followers) {
            return bad("celebrity_followers is a fraction between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.celebrity_post_share) {
            return bad("celebrity_post_share is a fraction between 0 and 1");
        }
        self.activity.validate()
    }

    /// Writes the configuration as `#meta` lines, so the trace says how to regenerate it.
    pub fn write_meta<W: Write>(&self, out: &mut TraceWriter<W>) -> Result<(), TraceError> {
        out.meta("source", "synth")?;
        out.meta("seed", &self.seed.to_string())?;
        out.meta("users", &self.users.to_string())?;
        out.meta("celebrities", &self.celebrities.to_string())?;
        out.meta("mean_following", &self.mean_following.to_string())?;
        out.meta("follower_exponent", &self.follower_exponent.to_string())?;
        out.meta("celebrity_followers", &self.celebrity_followers.to_string())?;
        out.meta("celebrity_post_share", &self.celebrity_post_share.to_string())?;
        self.activity.write_meta(out)
    }
}

impl ActivityConfig {
    pub fn validate(&self) -> Result<(), TraceError> {
        let rates = [
            ("duration_s", self.duration_s),
            ("posts_per_s", self.posts_per_s),
            ("reads_per_s", self.reads_per_s),
            ("post_zipf", self.post_zipf),
            ("read_zipf", self.read_zipf),
            ("follows_per_s", self.follows_per_s),
            ("unfollows_per_s", self.unfollows_per_s),
            ("delete_delay_s", self.delete_delay_s),
            ("blocks_per_s", self.blocks_per_s),
            ("unblocks_per_s", self.unblocks_per_s),
            ("reblogs_per_s", self.reblogs_per_s),
            ("unreblogs_per_s", self.unreblogs_per_s),
            ("favourites_per_s", self.favourites_per_s),
            ("unfavourites_per_s", self.unfavourites_per_s),
            ("mutes_per_s", self.mutes_per_s),
            ("unmutes_per_s", self.unmutes_per_s),
        ];
        for (name, v) in rates {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(TraceError::Config(format!("{name} must be a non-negative number, not {v}")));
            }
        }
        if !(0.0..=1.0).contains(&self.deletes_per_post) {
            return Err(TraceError::Config("deletes_per_post is a fraction between 0 and 1".into()));
        }
        let burst_ok =
            |b: &Burst| b.at_s >= 0.0 && b.duration_s >= 0.0 && b.multiplier >= 0.0 && b.multiplier.is_finite();
        if !self.burst.as_ref().is_none_or(burst_ok) {
            return Err(TraceError::Config("burst times and multiplier must be non-negative".into()));
        }
        Ok(())
    }

    /// Writes the configuration as `#meta activity.*` lines.
    pub fn write_meta<W: Write>(&self, out: &mut TraceWriter<W>) -> Result<(), TraceError> {
        let f = |v: f64| v.to_string();
        out.meta("activity.seed", &self.seed.to_string())?;
        out.meta("activity.duration_s", &f(self.duration_s))?;
        out.meta("activity.posts_per_s", &f(self.posts_per_s))?;
        out.meta("activity.reads_per_s", &f(self.reads_per_s))?;
        out.meta("activity.post_zipf", &f(self.post_zipf))?;
        out.meta("activity.read_zipf", &f(self.read_zipf))?;
        let burst = match &self.burst {
            Some(b) => format!("at_s={} duration_s={} multiplier={}", b.at_s, b.duration_s, b.multiplier),
            None => "none".to_string(),
        };
        out.meta("activity.burst", &burst)?;
        out.meta("activity.follows_per_s", &f(self.follows_per_s))?;
        out.meta("activity.unfollows_per_s", &f(self.unfollows_per_s))?;
        out.meta("activity.deletes_per_post", &f(self.deletes_per_post))?;
        out.meta("activity.delete_delay_s", &f(self.delete_delay_s))?;
        out.meta("activity.blocks_per_s", &f(self.blocks_per_s))?;
        out.meta("activity.unblocks_per_s", &f(self.unblocks_per_s))?;
        out.meta("activity.reblogs_per_s", &f(self.reblogs_per_s))?;
        out.meta("activity.unreblogs_per_s", &f(self.unreblogs_per_s))?;
        out.meta("activity.favourites_per_s", &f(self.favourites_per_s))?;
        out.meta("activity.unfavourites_per_s", &f(self.unfavourites_per_s))?;
        out.meta("activity.mutes_per_s", &f(self.mutes_per_s))?;
        out.meta("activity.unmutes_per_s", &f(self.unmutes_per_s))
    }
}

/// Generates a whole trace: meta, graph, activity. `progress` is called now and then with the
/// number of records written so far.
pub fn generate<W: Write>(
    cfg: &SynthConfig,
    out: &mut TraceWriter<W>,
    progress: &dyn Fn(u64),
) -> Result<Summary, TraceError> {
    cfg.validate()?;
    cfg.write_meta(out)?;
    let edges = graph(cfg, out, progress)?;
    let users: Vec<TraceUser> = (1..=cfg.users).collect();
    let celebrities: Vec<TraceUser> = (1..=cfg.celebrities).collect();
    let base = edges;
    let prominent = Prominent { users: &celebrities, post_share: cfg.celebrity_post_share };
    let mut summary = activity_with(&users, prominent, &cfg.activity, out, &|n| progress(base + n))?;
    summary.edges = edges;
    Ok(summary)
}

/// Writes the initial graph (see the module docs); returns the number of edges.
fn graph<W: Write>(cfg: &SynthConfig, out: &mut TraceWriter<W>, progress: &dyn Fn(u64)) -> Result<u64, TraceError> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = cfg.users;
    let c = cfg.celebrities;
    let regular = n - c;
    let p_celeb = cfg.celebrity_followers;
    let mean_regular = (cfg.mean_following - c as f64 * p_celeb).max(0.0);
    // Nobody can have more followers than there are other users; and with celebrities, keeping
    // every other user under half a celebrity's audience makes "celebrity" mean something.
    let mut cap = (regular.saturating_sub(1)) as f64;
    if c > 0 && p_celeb > 0.0 {
        cap = cap.min(p_celeb * n as f64 / 2.0);
    }
    let alias = if regular > 1 && mean_regular > 0.0 && cap >= 1.0 {
        let a = cfg.follower_exponent - 1.0;
        let mean_weight = mean_regular.min(cap);
        let xmin = solve_xmin(a, cap, mean_weight);
        let weights: Vec<f64> = (0..regular).map(|_| truncated_pareto(&mut rng, a, xmin, cap)).collect();
        Some(AliasTable::new(&weights))
    } else {
        None
    };
    // Out-degrees spread around the mean (half fixed, half exponential) and stay well below the
    // number of candidates so that rejecting duplicates terminates quickly.
    let max_out = (regular.saturating_sub(1) / 2) as f64;
    let mut chosen: HashSet<TraceUser> = HashSet::new();
    let mut row: Vec<TraceUser> = Vec::new();
    let mut written = 0u64;
    for u in 1..=n {
        row.clear();
        for celeb in 1..=c {
            if celeb != u && rng.random::<f64>() < p_celeb {
                row.push(celeb);
            }
        }
        if let Some(alias) = &alias {
            let want = (mean_regular * (0.5 + 0.5 * exp1(&mut rng))).round().min(max_out) as usize;
            chosen.clear();
            let mut tries = 0usize;
            while chosen.len() < want && tries < want * 20 + 20 {
                tries += 1;
                let v = c + 1 + alias.sample(&mut rng);
                if v != u {
                    chosen.insert(v);
                }
            }
            let start = row.len();
            row.extend(chosen.iter().copied());
            // HashSet order is not deterministic; the output must be.
            row[start..].sort_unstable();
        }
        for &v in &row {
            out.edge(u, v)?;
            written += 1;
            if written & (PROGRESS_EVERY - 1) == 0 {
                progress(written);
            }
        }
    }
    Ok(written)
}

/// Mean of a Pareto law of CCDF exponent `a`, floor `xmin`, truncated at `cap`.
fn truncated_mean(a: f64, xmin: f64, cap: f64) -> f64 {
    if xmin >= cap {
        return cap;
    }
    let r = xmin / cap;
    let norm = 1.0 - r.powf(a);
    if (a - 1.0).abs() < 1e-9 {
        xmin * (cap / xmin).ln() / norm
    } else {
        a * xmin.powf(a) * (xmin.powf(1.0 - a) - cap.powf(1.0 - a)) / ((a - 1.0) * norm)
    }
}

/// The floor that gives the truncated law the wanted mean (the mean grows with the floor).
fn solve_xmin(a: f64, cap: f64, mean: f64) -> f64 {
    let (mut lo, mut hi) = (1e-9_f64, cap);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if truncated_mean(a, mid, cap) < mean {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// Inverse-CDF draw from the truncated Pareto law.
fn truncated_pareto(rng: &mut ChaCha8Rng, a: f64, xmin: f64, cap: f64) -> f64 {
    if xmin >= cap {
        return cap;
    }
    let u: f64 = rng.random();
    let tail = 1.0 - (xmin / cap).powf(a);
    xmin * (1.0 - u * tail).powf(-1.0 / a)
}

/// A standard exponential draw.
fn exp1(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - u is in (0, 1], so the log is finite.
    -(1.0 - rng.random::<f64>()).ln()
}

/// A uniform integer in `0..n` (n > 0), always through u64 so 32- and 64-bit targets agree.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.random_range(0..n)
}

/// Walker's alias method: O(1) weighted draws from O(n) memory.
struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias = vec![0u32; n];
        let (mut small, mut large): (Vec<u32>, Vec<u32>) = (0..n as u32).partition(|&i| prob[i as usize] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s as usize] = l;
            prob[l as usize] -= 1.0 - prob[s as usize];
            if prob[l as usize] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        for i in small.into_iter().chain(large) {
            prob[i as usize] = 1.0;
        }
        AliasTable { prob, alias }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let i = below(rng, self.prob.len() as u64) as usize;
        if rng.random::<f64>() < self.prob[i] { i as u64 } else { self.alias[i] as u64 }
    }
}

/// Zipf draws over `users` permuted: rank r (1-based) has weight r^-s.
struct Zipf {
    cdf: Vec<f64>,
    users: Vec<TraceUser>,
}

impl Zipf {
    fn new(rng: &mut ChaCha8Rng, users: &[TraceUser], s: f64) -> Self {
        let mut users = users.to_vec();
        // Fisher-Yates through `below` so the permutation is the same on every platform.
        for i in (1..users.len()).rev() {
            let j = below(rng, i as u64 + 1) as usize;
            users.swap(i, j);
        }
        let mut acc = 0.0;
        let cdf = (1..=users.len())
            .map(|r| {
                acc += (r as f64).powf(-s);
                acc
            })
            .collect();
        Zipf { cdf, users }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> TraceUser {
        let total = *self.cdf.last().expect("at least one user");
        let x = rng.random::<f64>() * total;
        let i = self.cdf.partition_point(|&c| c <= x).min(self.users.len() - 1);
        self.users[i]
    }
}

/// A bounded set of user pairs that can also give back a random member in O(1).
struct PairPool {
    items: Vec<(TraceUser, TraceUser)>,
    index: HashMap<(TraceUser, TraceUser), usize>,
}

impl PairPool {
    fn new() -> Self {
        PairPool { items: Vec::new(), index: HashMap::new() }
    }

    fn contains(&self, pair: (TraceUser, TraceUser)) -> bool {
        self.index.contains_key(&pair)
    }

    fn insert(&mut self, rng: &mut ChaCha8Rng, pair: (TraceUser, TraceUser)) {
        if self.items.len() >= POOL_CAP {
            let victim = self.items[below(rng, self.items.len() as u64) as usize];
            self.remove(victim);
        }
        self.index.insert(pair, self.items.len());
        self.items.push(pair);
    }

    fn remove(&mut self, pair: (TraceUser, TraceUser)) -> bool {
        let Some(i) = self.index.remove(&pair) else { return false };
        self.items.swap_remove(i);
        if let Some(&moved) = self.items.get(i) {
            self.index.insert(moved, i);
        }
        true
    }

    fn take_random(&mut self, rng: &mut ChaCha8Rng) -> Option<(TraceUser, TraceUser)> {
        if self.items.is_empty() {
            return None;
        }
        let pair = self.items[below(rng, self.items.len() as u64) as usize];
        self.remove(pair);
        Some(pair)
    }
}

/// Writes the activity over `users` (see the module docs). `users` must be non-empty unless every
/// rate is zero; the edges, if any, must already be written.
pub fn activity<W: Write>(
    users: &[TraceUser],
    cfg: &ActivityConfig,
    out: &mut TraceWriter<W>,
    progress: &dyn Fn(u64),
) -> Result<Summary, TraceError> {
    activity_with(users, Prominent { users: &[], post_share: 0.0 }, cfg, out, progress)
}

/// Users who write a fixed share of the posts, beside the Zipf draw.
#[derive(Clone, Copy)]
struct Prominent<'a> {
    users: &'a [TraceUser],
    post_share: f64,
}

fn activity_with<W: Write>(
    users: &[TraceUser],
    prominent: Prominent<'_>,
    cfg: &ActivityConfig,
    out: &mut TraceWriter<W>,
    progress: &dyn Fn(u64),
) -> Result<Summary, TraceError> {
    cfg.validate()?;
    let mut summary = Summary { users: users.len() as u64, ..Summary::default() };
    let rates = [
        cfg.posts_per_s,
        cfg.reads_per_s,
        cfg.follows_per_s,
        cfg.unfollows_per_s,
        cfg.blocks_per_s,
        cfg.unblocks_per_s,
        cfg.reblogs_per_s,
        cfg.unreblogs_per_s,
        cfg.favourites_per_s,
        cfg.unfavourites_per_s,
        cfg.mutes_per_s,
        cfg.unmutes_per_s,
    ];
    let base: f64 = rates.iter().sum();
    if base == 0.0 || cfg.duration_s == 0.0 {
        return Ok(summary);
    }
    if users.is_empty() {
        return Err(TraceError::Config("activity needs at least one user".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // A separate stream from the graph's, which may use the same seed.
    rng.set_stream(1);
    let posters = Zipf::new(&mut rng, users, cfg.post_zipf);
    let readers = Zipf::new(&mut rng, users, cfg.read_zipf);
    let (b_start, b_end, mult) = match &cfg.burst {
        Some(b) => (b.at_s, b.at_s + b.duration_s, b.multiplier),
        None => (0.0, 0.0, 1.0),
    };
    let peak = base * mult.max(1.0);
    let end_ms = (cfg.duration_s * 1000.0) as u64;
    let mut follows = PairPool::new();
    let mut blocks = PairPool::new();
    // (user, post key) in force, and (muter, muted).
    let (mut reblogs, mut favourites, mut mutes) = (PairPool::new(), PairPool::new(), PairPool::new());
    // The newest post keys, as a ring: what reblogs and favourites pick from.
    let mut recent: Vec<u64> = Vec::with_capacity(RECENT_POSTS);
    // Scheduled deletes: (at_ms, key, user), earliest first; keys are unique so ties are ordered.
    let mut deletes: BinaryHeap<Reverse<(u64, u64, TraceUser)>> = BinaryHeap::new();
    let mut next_key = 1u64;
    let mut t = 0.0f64;
    let emit = |out: &mut TraceWriter<W>, e: Event, summary: &mut Summary| -> Result<(), TraceError> {
        out.event(&e)?;
        summary.events += 1;
        summary.per_op[e.op.index()] += 1;
        if summary.events & (PROGRESS_EVERY - 1) == 0 {
            progress(summary.events);
        }
        Ok(())
    };
    loop {
        t += exp1(&mut rng) / peak;
        if t >= cfg.duration_s {
            break;
        }
        let rate = if t >= b_start && t < b_end { base * mult } else { base };
        if rng.random::<f64>() * peak >= rate {
            continue;
        }
        let at_ms = ((t * 1000.0) as u64).min(end_ms.saturating_sub(1));
        while let Some(&Reverse((due, key, user))) = deletes.peek() {
            if due > at_ms {
                break;
            }
            deletes.pop();
            emit(out, Event { at_ms: due, user, op: Op::Delete { key } }, &mut summary)?;
        }
        let mut pick = rng.random::<f64>() * base;
        let mut kind = 0;
        while kind < rates.len() - 1 && pick >= rates[kind] {
            pick -= rates[kind];
            kind += 1;
        }
        let event = match kind {
            0 => {
                let user = if !prominent.users.is_empty() && rng.random::<f64>() < prominent.post_share {
                    prominent.users[below(&mut rng, prominent.users.len() as u64) as usize]
                } else {
                    posters.sample(&mut rng)
                };
                let key = next_key;
                next_key += 1;
                if rng.random::<f64>() < cfg.deletes_per_post {
                    let delay_ms = (exp1(&mut rng) * cfg.delete_delay_s * 1000.0) as u64;
                    let due = at_ms.saturating_add(delay_ms.max(1));
                    if due < end_ms {
                        deletes.push(Reverse((due, key, user)));
                    }
                }
                if recent.len() < RECENT_POSTS {
                    recent.push(key);
                } else {
                    recent[(key % RECENT_POSTS as u64) as usize] = key;
                }
                Some(Event { at_ms, user, op: Op::Post { key } })
            }
            1 => Some(Event { at_ms, user: readers.sample(&mut rng), op: Op::Read }),
            2 => {
                let mut made = None;
                for _ in 0..8 {
                    let (f, g) = (readers.sample(&mut rng), posters.sample(&mut rng));
                    if f != g && !follows.contains((f, g)) && !blocks.contains((f, g)) && !blocks.contains((g, f)) {
                        follows.insert(&mut rng, (f, g));
                        made = Some(Event { at_ms, user: f, op: Op::Follow { target: g } });
                        break;
                    }
                }
                made
            }
            3 => follows.take_random(&mut rng).map(|(f, g)| Event { at_ms, user: f, op: Op::Unfollow { target: g } }),
            4 => {
                let mut made = None;
                for _ in 0..8 {
                    let b = readers.sample(&mut rng);
                    let target = users[below(&mut rng, users.len() as u64) as usize];
                    if b != target && !blocks.contains((b, target)) {
                        blocks.insert(&mut rng, (b, target));
                        follows.remove((b, target));
                        follows.remove((target, b));
                        made = Some(Event { at_ms, user: b, op: Op::Block { target } });
                        break;
                    }
                }
                made
            }
            5 => blocks.take_random(&mut rng).map(|(b, g)| Event { at_ms, user: b, op: Op::Unblock { target: g } }),
            6 | 8 => {
                let pool = if kind == 6 { &mut reblogs } else { &mut favourites };
                let user = readers.sample(&mut rng);
                let key = (!recent.is_empty()).then(|| recent[below(&mut rng, recent.len() as u64) as usize]);
                key.filter(|&key| !pool.contains((user, key))).map(|key| {
                    pool.insert(&mut rng, (user, key));
                    let op = if kind == 6 { Op::Reblog { key } } else { Op::Favourite { key } };
                    Event { at_ms, user, op }
                })
            }
            7 => reblogs.take_random(&mut rng).map(|(user, key)| Event { at_ms, user, op: Op::Unreblog { key } }),
            9 => favourites.take_random(&mut rng).map(|(user, key)| Event { at_ms, user, op: Op::Unfavourite { key } }),
            10 => {
                let (m, target) = (readers.sample(&mut rng), posters.sample(&mut rng));
                (m != target && !mutes.contains((m, target))).then(|| {
                    mutes.insert(&mut rng, (m, target));
                    Event { at_ms, user: m, op: Op::Mute { target } }
                })
            }
            _ => mutes.take_random(&mut rng).map(|(m, g)| Event { at_ms, user: m, op: Op::Unmute { target: g } }),
        };
        if let Some(e) = event {
            emit(out, e, &mut summary)?;
        }
    }
    while let Some(Reverse((due, key, user))) = deletes.pop() {
        emit(out, Event { at_ms: due, user, op: Op::Delete { key } }, &mut summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solved_floor_gives_the_wanted_mean() {
        for (a, cap, mean) in [(1.2, 1000.0, 70.0), (1.0, 500.0, 20.0), (2.0, 10_000.0, 5.0)] {
            let xmin = solve_xmin(a, cap, mean);
            assert!((truncated_mean(a, xmin, cap) - mean).abs() < 1e-6 * mean, "{a} {cap} {mean}");
        }
    }

    #[test]
    fn alias_table_draws_in_proportion() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let table = AliasTable::new(&[1.0, 2.0, 7.0]);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[table.sample(&mut rng) as usize] += 1;
        }
        for (c, share) in counts.iter().zip([0.1, 0.2, 0.7]) {
            assert!((*c as f64 / 100_000.0 - share).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn pair_pool_keeps_index_consistent() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut pool = PairPool::new();
        for i in 0..100 {
            pool.insert(&mut rng, (i, i + 1));
        }
        assert!(pool.remove((0, 1)));
        assert!(!pool.remove((0, 1)));
        for _ in 0..99 {
            let p = pool.take_random(&mut rng).unwrap();
            assert!(!pool.contains(p));
        }
        assert!(pool.take_random(&mut rng).is_none());
    }
}
