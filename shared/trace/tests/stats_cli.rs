//! `stats` on a hand-checked trace, and the CLI commands end to end on temp files.

use std::io::Cursor;
use std::path::Path;

use clap::Parser;
use starling_trace::cli::{self, Command};
use starling_trace::stats::{self, Distribution, StatsOptions};
use starling_trace::{Record, TraceReader};

const TRACE: &str = "#starling-trace v1\n#meta source=t\nedge 1 2\nedge 3 2\nedge 4 2\nedge 2 1\n\
                     0 post 1 1\n500 post 1 2\n1000 post 2 3\n1100 read 3\n1200 follow 5 1\n1300 read 3\n\
                     2500 delete 1 1\n";

#[test]
fn stats_of_a_hand_checked_trace() {
    let reader = TraceReader::new(Cursor::new(TRACE)).unwrap();
    let s = stats::summarize_with(reader, &StatsOptions { follower_threshold: 2 }).unwrap();
    assert_eq!(s.meta, vec![("source".to_string(), "t".to_string())]);
    assert_eq!((s.users, s.edges, s.events), (5, 4, 7));
    assert_eq!(s.per_op["post"], 3);
    assert_eq!(s.per_op["read"], 2);
    assert_eq!(s.per_op["follow"], 1);
    assert_eq!(s.per_op["delete"], 1);
    assert_eq!(s.per_op["unblock"], 0);
    assert_eq!((s.first_at_ms, s.duration_ms), (0, 2500));
    assert_eq!((s.peak_second, s.peak_events_per_s), (1, 4));
    assert!((s.mean_events_per_s - 7.0 / 3.0).abs() < 1e-9);
    // Followers of users 1..=5: 1, 3, 0, 0, 0.
    assert_eq!(s.followers, Distribution { count: 5, min: 0, max: 3, mean: 0.8, p50: 0, p90: 3, p99: 3, p999: 3 });
    assert_eq!(s.users_at_or_above_threshold, 1);
    assert_eq!((s.posts_per_user.count, s.posts_per_user.max, s.posts_per_user.p50), (2, 2, 1));
    assert_eq!((s.reads_per_user.count, s.reads_per_user.max), (1, 2));
    let text = s.to_string();
    assert!(text.contains("events           7") && text.contains(">= 2"), "{text}");
    let json: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(json["followers"]["max"], 3);
}

#[test]
fn stats_report_read_errors() {
    let bad = TRACE.replace("2500 delete", "2 delete");
    let e = stats::summarize(TraceReader::new(Cursor::new(bad)).unwrap()).unwrap_err();
    assert_eq!(e.line(), Some(13));
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("trace").chain(args.iter().copied()))?;
    cli::run(cli.cmd)
}

fn read(path: &Path) -> (starling_trace::Header, Vec<Record>) {
    let r = TraceReader::open(path).unwrap();
    let h = r.header().clone();
    (h, r.collect::<Result<Vec<_>, _>>().unwrap())
}

#[test]
fn cli_generate_import_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth.trace");
    let o = out.to_str().unwrap();
    run(&["generate", "--out", o, "--users", "300", "--mean-following", "10", "--duration-s", "5", "--seed", "3"])
        .unwrap();
    let (h, records) = read(&out);
    assert_eq!(h.get("users"), Some("300"));
    assert_eq!(h.get("seed"), Some("3"));
    assert_eq!(h.get("activity.seed"), Some("3"));
    assert!(records.iter().any(|r| matches!(r, Record::Event(_))));
    run(&["stats", o, "--json"]).unwrap();
    run(&["stats", o, "--follower-threshold", "5"]).unwrap();

    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let higgs = dir.path().join("higgs.trace");
    run(&[
        "import-higgs",
        "--activity",
        data.join("higgs-activity.head2000.txt").to_str().unwrap(),
        "--graph",
        data.join("higgs-graph.excerpt.edgelist").to_str().unwrap(),
        "--fill",
        "known-only",
        "--users",
        "all",
        "--max-events",
        "100",
        "--out",
        higgs.to_str().unwrap(),
    ])
    .unwrap();
    let (h, _) = read(&higgs);
    assert_eq!((h.get("fill"), h.get("users"), h.get("max_events")), (Some("known-only"), Some("all"), Some("100")));

    let reed = dir.path().join("reed.trace");
    run(&[
        "import-edgelist",
        "--input",
        data.join("socfb-Reed98.edges").to_str().unwrap(),
        "--no-activity",
        "--directed",
        "--out",
        reed.to_str().unwrap(),
    ])
    .unwrap();
    let (h, records) = read(&reed);
    assert_eq!((h.get("undirected"), h.get("activity")), (Some("false"), Some("none")));
    assert_eq!(records.len(), 18_812);

    // A failed run leaves neither the trace nor its partial file.
    let failed = dir.path().join("failed.trace");
    let e = run(&["generate", "--out", failed.to_str().unwrap(), "--follower-exponent", "0.5"]).unwrap_err();
    assert!(e.to_string().contains("follower_exponent"), "{e}");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.contains("partial") && !n.starts_with("failed")), "{names:?}");
}
