//! Importer for plain edge lists such as socfb-Reed98 (the Facebook graph DeathStarBench uses).
//!
//! Input: `a b` per line; blank lines and lines starting with `%` or `#` (the comment styles of
//! Network Repository, KONECT and SNAP) are skipped, and columns after the second (weights,
//! timestamps in some KONECT files) are ignored. With `undirected` (friendship graphs) each line
//! becomes two follow edges, `a b` and `b a`; otherwise `a b` means a follows b. Self-loops and
//! duplicates are dropped; edges are written sorted, so the output does not depend on input order.
//!
//! A plain edge list has no activity, so it is generated over the imported users by the synthetic
//! activity model ([`crate::synth::activity`], seeded) and its configuration recorded as
//! `#meta activity.*`. Memory: the edges (16 bytes each) and the users; the activity streams.

use std::io::Write;
use std::path::Path;

use crate::input::{file_name, for_each_line, id, input_error};
use crate::synth::{self, ActivityConfig};
use crate::{TraceError, TraceUser, TraceWriter};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EdgeListOptions {
    /// Each line is a friendship: two follow edges.
    pub undirected: bool,
    /// The activity to generate over the imported users; `None` for a graph-only trace.
    pub activity: Option<ActivityConfig>,
}

impl Default for EdgeListOptions {
    fn default() -> Self {
        EdgeListOptions { undirected: true, activity: Some(ActivityConfig::default()) }
    }
}

/// What the importer read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EdgeListSummary {
    pub lines: u64,
    pub self_loops: u64,
    pub duplicate_edges: u64,
    /// Follow edges written.
    pub edges: u64,
    pub users: u64,
    /// The generated activity, if any.
    pub activity: Option<synth::Summary>,
}

/// Imports `input` into `out`, whose header must still be open: the importer appends its `#meta`.
pub fn import<W: Write>(
    input: &Path,
    opts: &EdgeListOptions,
    out: &mut TraceWriter<W>,
    progress: &dyn Fn(u64),
) -> Result<EdgeListSummary, TraceError> {
    if let Some(activity) = &opts.activity {
        activity.validate()?;
    }
    let mut summary = EdgeListSummary::default();
    let mut edges: Vec<(TraceUser, TraceUser)> = Vec::new();
    for_each_line(input, |line, f| {
        if f.len() < 2 {
            return Err(input_error(input, line, "expected `a b`"));
        }
        let (a, b) = (id(input, line, f[0], "a")?, id(input, line, f[1], "b")?);
        summary.lines += 1;
        if a == b {
            summary.self_loops += 1;
            return Ok(true);
        }
        edges.push((a, b));
        if opts.undirected {
            edges.push((b, a));
        }
        Ok(true)
    })?;
    let before = edges.len();
    edges.sort_unstable();
    edges.dedup();
    summary.duplicate_edges = (before - edges.len()) as u64;
    summary.edges = edges.len() as u64;
    let mut users: Vec<TraceUser> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
    users.sort_unstable();
    users.dedup();
    summary.users = users.len() as u64;

    out.meta("source", "edgelist")?;
    out.meta("input", &file_name(input))?;
    out.meta("undirected", &opts.undirected.to_string())?;
    out.meta("count.lines", &summary.lines.to_string())?;
    out.meta("count.self_loops", &summary.self_loops.to_string())?;
    out.meta("count.duplicate_edges", &summary.duplicate_edges.to_string())?;
    out.meta("count.edges", &summary.edges.to_string())?;
    out.meta("count.users", &summary.users.to_string())?;
    match &opts.activity {
        Some(activity) => {
            out.meta("seed", &activity.seed.to_string())?;
            activity.write_meta(out)?;
        }
        None => out.meta("activity", "none")?,
    }
    for &(a, b) in &edges {
        out.edge(a, b)?;
    }
    drop(edges);
    if let Some(activity) = &opts.activity {
        summary.activity = Some(synth::activity(&users, activity, out, progress)?);
    }
    Ok(summary)
}
