//! Importers on tiny inline fixtures (every option and error) and on excerpts of the real data in
//! `tests/data` (see its README).

use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use starling_trace::edgelist::{self, EdgeListOptions};
use starling_trace::higgs::{self, Fill, HiggsOptions, UserScope};
use starling_trace::synth::ActivityConfig;
use starling_trace::{Event, Header, Op, Record, TraceError, TraceReader, TraceWriter};

struct Trace {
    header: Header,
    edges: Vec<(u64, u64)>,
    events: Vec<Event>,
}

fn parse(bytes: &[u8]) -> Trace {
    let reader = TraceReader::new(Cursor::new(bytes)).unwrap();
    let header = reader.header().clone();
    let (mut edges, mut events) = (Vec::new(), Vec::new());
    for r in reader {
        match r.unwrap() {
            Record::Edge { follower, followee } => edges.push((follower, followee)),
            Record::Event(e) => events.push(e),
        }
    }
    Trace { header, edges, events }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn run_higgs(
    activity: &Path,
    graph: Option<&Path>,
    opts: &HiggsOptions,
) -> Result<(higgs::ImportSummary, Vec<u8>), TraceError> {
    let mut w = TraceWriter::new(Vec::new(), &Header::default())?;
    let s = higgs::import(activity, graph, opts, &mut w)?;
    Ok((s, w.finish()?))
}

const ACTIVITY: &str = "10 20 1000 RT\n30 20 1000 MT\n10 40 1001 RE\n50 10 1003 RT\n";
const GRAPH: &str = "10 20\n10 20\n20 10\n30 30\n60 10\n";

fn posts(t: &Trace) -> Vec<(u64, u64)> {
    t.events.iter().filter(|e| matches!(e.op, Op::Post { .. })).map(|e| (e.at_ms, e.user)).collect()
}

fn opts(fill: Fill, users: UserScope) -> HiggsOptions {
    HiggsOptions { fill, users, max_events: None, reads_per_post: 0.0, seed: 1 }
}

#[test]
fn higgs_graph_only_keeps_the_file_edges_and_spreads_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, g) = (write(dir.path(), "act.txt", ACTIVITY), write(dir.path(), "graph.txt", GRAPH));
    let (s, bytes) = run_higgs(&a, Some(&g), &opts(Fill::GraphOnly, UserScope::All)).unwrap();
    let t = parse(&bytes);
    assert_eq!(t.edges, vec![(10, 20), (20, 10), (60, 10)]);
    // Two events in second 1000 are spread across it; then 1 s and 3 s later.
    assert_eq!(posts(&t), vec![(0, 10), (500, 30), (1000, 10), (3000, 50)]);
    let keys: HashSet<u64> = t.events.iter().filter_map(|e| e.op.arg()).collect();
    assert_eq!(keys.len(), 4, "post keys are unique");
    assert_eq!((s.self_loops, s.duplicate_edges, s.graph_lines, s.graph_edges), (1, 1, 5, 3));
    assert_eq!(t.header.get("source"), Some("higgs"));
    assert_eq!(t.header.get("fill"), Some("graph-only"));
    assert_eq!(t.header.get("users"), Some("all"));
    assert_eq!(t.header.get("activity"), Some("act.txt"));
    assert_eq!(t.header.get("graph"), Some("graph.txt"));
    assert_eq!(t.header.get("count.graph_edges"), Some("3"));
}

#[test]
fn higgs_interactions_add_missing_follows_within_active_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (a, g) = (write(dir.path(), "act.txt", ACTIVITY), write(dir.path(), "graph.txt", GRAPH));
    let (s, bytes) = run_higgs(&a, Some(&g), &opts(Fill::Interactions, UserScope::Active)).unwrap();
    let t = parse(&bytes);
    // 60 never acts: its edge is out of scope. 10→20 is already in the graph; three are added.
    assert_eq!(t.edges, vec![(10, 20), (10, 40), (20, 10), (30, 20), (50, 10)]);
    assert_eq!((s.out_of_scope_edges, s.interaction_edges, s.graph_edges), (1, 3, 2));
    assert_eq!(t.header.get("fill"), Some("interactions"));
    assert_eq!(t.header.get("users"), Some("active"));
}

#[test]
fn higgs_known_only_drops_activity_of_unknown_users() {
    let dir = tempfile::tempdir().unwrap();
    let (a, g) = (write(dir.path(), "act.txt", ACTIVITY), write(dir.path(), "graph.txt", GRAPH));
    let (s, bytes) = run_higgs(&a, Some(&g), &opts(Fill::KnownOnly, UserScope::All)).unwrap();
    let t = parse(&bytes);
    assert_eq!(s.dropped_unknown, 1);
    assert_eq!(posts(&t), vec![(0, 10), (500, 30), (1000, 10)]);
    assert_eq!(t.header.get("count.dropped_unknown"), Some("1"));
    let e = run_higgs(&a, None, &opts(Fill::KnownOnly, UserScope::All)).unwrap_err();
    assert!(matches!(e, TraceError::Config(_)), "{e}");
}

#[test]
fn higgs_reads_come_from_followers_at_the_post_time_and_are_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let (a, g) = (write(dir.path(), "act.txt", ACTIVITY), write(dir.path(), "graph.txt", GRAPH));
    let o = HiggsOptions { reads_per_post: 2.0, ..opts(Fill::Interactions, UserScope::Active) };
    let (s, bytes) = run_higgs(&a, Some(&g), &o).unwrap();
    let t = parse(&bytes);
    // Only 10 has followers (20 and 50): its two posts get two reads each.
    assert_eq!(s.reads, 4);
    let mut last_post = None;
    for e in &t.events {
        match e.op {
            Op::Post { .. } => last_post = Some(*e),
            Op::Read => {
                let p = last_post.unwrap();
                assert_eq!((p.user, p.at_ms), (10, e.at_ms));
                assert!([20, 50].contains(&e.user), "{e:?}");
            }
            _ => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(bytes, run_higgs(&a, Some(&g), &o).unwrap().1);
    let frac = HiggsOptions { reads_per_post: 0.5, ..o.clone() };
    let (s, _) = run_higgs(&a, Some(&g), &frac).unwrap();
    assert!(s.reads <= 2);
    assert_eq!(parse(&run_higgs(&a, Some(&g), &frac).unwrap().1).header.get("reads_per_post"), Some("0.5"));
}

#[test]
fn higgs_max_events_takes_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "act.txt", ACTIVITY);
    let o = HiggsOptions { max_events: Some(2), ..opts(Fill::Interactions, UserScope::Active) };
    let (s, bytes) = run_higgs(&a, None, &o).unwrap();
    assert_eq!(s.activity_lines, 2);
    let t = parse(&bytes);
    assert_eq!(posts(&t), vec![(0, 10), (500, 30)]);
    assert_eq!(t.edges, vec![(10, 20), (30, 20)]);
    assert_eq!(t.header.get("max_events"), Some("2"));
}

#[test]
fn higgs_rejects_malformed_input_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line) in [
        ("1 2 100 RT\n1 2 100\n", 2),
        ("1 2 100 RT\n1 2 100 LIKE\n", 2),
        ("1 2 100 RT\n\n1 x 100 RT\n", 3),
        ("1 2 100 RT\n1 2 99 RT\n", 2),
    ] {
        let a = write(dir.path(), "bad.txt", text);
        let e = run_higgs(&a, None, &opts(Fill::Interactions, UserScope::All)).unwrap_err();
        assert!(matches!(&e, TraceError::Input { line: l, .. } if *l == line), "{text:?}: {e}");
        assert!(e.to_string().contains("bad.txt"), "{e}");
    }
    let a = write(dir.path(), "act.txt", ACTIVITY);
    let g = write(dir.path(), "g.txt", "1 2\n3\n");
    let e = run_higgs(&a, Some(&g), &opts(Fill::GraphOnly, UserScope::All)).unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn higgs_sample_imports_with_every_fill() {
    let (a, g) = (data("higgs-activity.head2000.txt"), data("higgs-graph.excerpt.edgelist"));
    // The excerpt's distinct non-loop edges, computed independently of the importer.
    let text = std::fs::read_to_string(&g).unwrap();
    let file_edges: HashSet<(u64, u64)> = text
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            (f.next().unwrap(), f.next().unwrap())
        })
        .filter(|(a, b)| a != b)
        .collect();

    let (s, bytes) = run_higgs(&a, Some(&g), &opts(Fill::GraphOnly, UserScope::All)).unwrap();
    let t = parse(&bytes);
    assert_eq!(t.edges.len(), file_edges.len());
    assert!(t.edges.iter().all(|e| file_edges.contains(e)));
    assert_eq!(s.posts, 2000);
    // 1341100972 to 1341166952: the first 2,000 events span 65,980 s.
    assert_eq!(t.events.last().unwrap().at_ms / 1000, 65_980);

    let o = HiggsOptions { reads_per_post: 1.5, ..opts(Fill::Interactions, UserScope::Active) };
    let (s, bytes) = run_higgs(&a, Some(&g), &o).unwrap();
    let t = parse(&bytes);
    assert!(s.interaction_edges > 1000, "{s:?}");
    assert!(s.graph_edges < file_edges.len() as u64 && s.out_of_scope_edges > 0, "{s:?}");
    assert_eq!(t.edges.len() as u64, s.graph_edges + s.interaction_edges);
    // Most active users have no follower inside this small sample, so reads are fewer than 1.5 per
    // post; each one must still be by a follower of the post just before it.
    assert!(s.reads > 0 && s.reads <= 2 * 2000, "{s:?}");
    let follows: HashSet<(u64, u64)> = t.edges.iter().copied().collect();
    let mut author = 0;
    for e in &t.events {
        match e.op {
            Op::Post { .. } => author = e.user,
            _ => assert!(follows.contains(&(e.user, author)), "{e:?} does not follow {author}"),
        }
    }
    assert_eq!(t.events.len() as u64, s.posts + s.reads);
    assert_eq!(t.header.get("count.reads"), Some(s.reads.to_string().as_str()));

    let (s, _) = run_higgs(&a, Some(&g), &opts(Fill::KnownOnly, UserScope::Active)).unwrap();
    assert!(s.dropped_unknown > 0 && s.posts + s.dropped_unknown == 2000, "{s:?}");
}

fn run_edgelist(input: &Path, opts: &EdgeListOptions) -> (edgelist::EdgeListSummary, Vec<u8>) {
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    let s = edgelist::import(input, opts, &mut w, &|_| {}).unwrap();
    (s, w.finish().unwrap())
}

#[test]
fn edgelist_reads_comments_loops_duplicates_and_direction() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "g.edges", "% bipartite\n# comment\n1 2\n2 1\n3 3\n2\t3 0.5 77\n\n");
    let (s, bytes) = run_edgelist(&p, &EdgeListOptions { undirected: true, activity: None });
    let t = parse(&bytes);
    assert_eq!(t.edges, vec![(1, 2), (2, 1), (2, 3), (3, 2)]);
    assert!(t.events.is_empty());
    assert_eq!((s.lines, s.self_loops, s.duplicate_edges, s.users), (4, 1, 2, 3));
    assert_eq!(t.header.get("activity"), Some("none"));
    let (_, bytes) = run_edgelist(&p, &EdgeListOptions { undirected: false, activity: None });
    assert_eq!(parse(&bytes).edges, vec![(1, 2), (2, 1), (2, 3)]);

    let bad = write(dir.path(), "bad.edges", "1 2\n1 b\n");
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    let e = edgelist::import(&bad, &EdgeListOptions::default(), &mut w, &|_| {}).unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn edgelist_reed98_with_generated_activity() {
    let activity = ActivityConfig { duration_s: 10.0, posts_per_s: 20.0, reads_per_s: 50.0, ..Default::default() };
    let opts = EdgeListOptions { undirected: true, activity: Some(activity) };
    let (s, bytes) = run_edgelist(&data("socfb-Reed98.edges"), &opts);
    let t = parse(&bytes);
    assert_eq!((s.lines, s.users), (18_812, 962));
    assert_eq!(t.edges.len() as u64, s.edges);
    assert_eq!(s.edges, 2 * 18_812 - s.duplicate_edges);
    let edge_set: HashSet<(u64, u64)> = t.edges.iter().copied().collect();
    assert!(t.edges.iter().all(|&(a, b)| edge_set.contains(&(b, a))), "undirected means symmetric");
    let users: HashSet<u64> = t.edges.iter().map(|e| e.0).collect();
    assert!(t.events.len() > 300);
    assert!(t.events.iter().all(|e| users.contains(&e.user)), "activity only by imported users");
    assert_eq!(t.header.get("source"), Some("edgelist"));
    assert_eq!(t.header.get("input"), Some("socfb-Reed98.edges"));
    assert_eq!(t.header.get("activity.posts_per_s"), Some("20"));
    assert_eq!(bytes, run_edgelist(&data("socfb-Reed98.edges"), &opts).1, "seeded");
}
