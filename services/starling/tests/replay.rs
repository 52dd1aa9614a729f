//! The trace replay tool end to end: traces (synthetic, and imported from the real Higgs
//! and socfb-Reed98 samples) replayed against the real binary, each checked against the
//! oracle by the tool itself, and its report read back.

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use starling_replay::{Client, Config, Pace, Report, Targets, replay};
use starling_trace::synth::{ActivityConfig, Burst, SynthConfig};
use starling_trace::{Header, TraceWriter};

/// A low celebrity line so the small traces below have celebrities merged at read time.
const SETTINGS: &[(&str, &str)] =
    &[("STARLING__CELEBRITY__THRESHOLD", "40"), ("STARLING__CELEBRITY__DEMOTE_BELOW", "30")];

fn config(run_id: &str) -> Config {
    Config {
        pace: Pace::Unpaced,
        concurrency: 32,
        lag_sample: 0.2,
        progress: false,
        run_id: run_id.into(),
        ..Config::default()
    }
}

async fn run(trace: &Path, run_id: &str, cfg: Config) -> (Report, Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), SETTINGS);
    let client = Client::new(Targets::single(&server.base), common::ADMIN_TOKEN, 64);
    let report = replay(trace, client, Config { run_id: run_id.into(), ..cfg }).await.expect("replay ran");
    (report, server, dir)
}

/// What every replay in this file must show: nothing failed, and the oracle check ran on
/// every user and passed.
fn assert_sound(report: &Report, label: &str) {
    assert_eq!(report.failures(), 0, "{label}: errors or mismatches: {:#?}", report.ops);
    let c = &report.correctness;
    assert!(c.passed(), "{label}: {} users diverge: {:#?}", c.divergent.len(), c.divergent);
    assert_eq!(c.users_checked, report.register.items, "{label}: every user is checked");
    assert!(c.entries_checked > 0, "{label}: the check compared real timelines");
    assert!(report.quiet_before_check, "{label}: the fan-out caught up before the check");
    assert!(report.settled_before_events, "{label}: the fan-out caught up with the graph before the events");
    eprintln!(
        "{label}: {} users, {} follows, {} events ({:.0}/s), {} timeline entries equal to the oracle, lag p99 {:?} ms",
        report.register.items,
        report.graph_load.items,
        report.replay.items,
        report.replay.per_second,
        c.entries_checked,
        report.delivery_lag.p99_ms
    );
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/trace/tests/data").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synthetic_trace_with_celebrities_and_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("synth.trace");
    let cfg = SynthConfig {
        users: 300,
        celebrities: 3,
        mean_following: 12.0,
        celebrity_followers: 0.25,
        activity: ActivityConfig {
            duration_s: 20.0,
            posts_per_s: 40.0,
            reads_per_s: 60.0,
            burst: Some(Burst { at_s: 8.0, duration_s: 4.0, multiplier: 3.0 }),
            follows_per_s: 8.0,
            unfollows_per_s: 4.0,
            deletes_per_post: 0.05,
            delete_delay_s: 2.0,
            blocks_per_s: 1.0,
            unblocks_per_s: 0.5,
            ..ActivityConfig::default()
        },
        ..SynthConfig::default()
    };
    let mut w =
        TraceWriter::new(std::io::BufWriter::new(std::fs::File::create(&trace).unwrap()), &Header::default()).unwrap();
    starling_trace::synth::generate(&cfg, &mut w, &|_| {}).unwrap();
    w.finish().unwrap();

    let (report, _server, _dir) = run(&trace, "syn", config("syn")).await;
    assert_sound(&report, "synthetic");
    let ops = |name: &str| report.ops.iter().find(|o| o.op == name).map_or(0, |o| o.count);
    for op in ["post", "read", "follow", "unfollow", "delete", "block", "load_follow", "register"] {
        assert!(ops(op) > 0, "the trace exercised {op}");
    }
    // Some operations must be refused, and were refused as the contract says.
    assert!(report.ops.iter().map(|o| o.refused_as_predicted).sum::<u64>() > 0);
    let s = &report.service;
    assert!(s.posts_merged_at_read.unwrap() > 0.0, "celebrity posts are merged at read: {s:?}");
    assert!(s.posts_pushed.unwrap() > 0.0 && s.timeline_inserts.unwrap() > 0.0, "{s:?}");
    assert!(report.delivery_lag.samples > 0, "delivery lag was sampled: {:?}", report.delivery_lag);
    // The costs a study compares: CPU by process, what the cache holds, reads per page.
    let cpu = &report.process_cpu;
    assert!(cpu.len() == 1 && cpu[0].cpu_seconds.unwrap() > 0.0, "{cpu:?}");
    assert_eq!(cpu[0].service.as_deref(), Some("starling"), "{cpu:?}");
    let cache = &report.cache_at_end;
    assert!(cache.entries.unwrap() > 0.0 && cache.bytes.unwrap() >= 16.0 * cache.entries.unwrap(), "{cache:?}");
    assert!(s.celebrity_lists_per_page.unwrap() > 0.0 && s.storage_reads_per_page.is_some(), "{s:?}");
    // The fan-out's own per-decade counts agree with what it pushed in total.
    let pushed_by_decade: f64 = report.fanout_by_followers.iter().filter_map(|b| b.service_pushed_posts).sum();
    assert_eq!(pushed_by_decade, s.posts_pushed.unwrap(), "{:?}", report.fanout_by_followers);

    // The report on disk: JSON that parses back, Markdown with every section, four plots.
    let out = dir.path().join("report");
    report.write(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["correctness"]["users_checked"], report.register.items);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in
        ["## Summary", "## Operations", "## Delivery lag", "## Fan-out and cache", "## Correctness", "**passed**"]
    {
        assert!(md.contains(section), "report.md lacks {section}");
    }
    for plot in
        ["throughput.svg", "fanout_inserts.svg", "latency.svg", "delivery_lag_cdf.svg", "fanout_by_followers.svg"]
    {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<path"), "{plot} has lines");
        assert!(md.contains(plot), "report.md shows {plot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paced_replay_honours_the_event_limit() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("small.trace");
    let cfg = SynthConfig {
        users: 50,
        celebrities: 1,
        mean_following: 5.0,
        activity: ActivityConfig {
            duration_s: 30.0,
            posts_per_s: 20.0,
            reads_per_s: 20.0,
            burst: None,
            ..ActivityConfig::default()
        },
        ..SynthConfig::default()
    };
    let mut w = TraceWriter::new(std::fs::File::create(&trace).unwrap(), &Header::default()).unwrap();
    starling_trace::synth::generate(&cfg, &mut w, &|_| {}).unwrap();
    w.finish().unwrap();
    // 200 events at 400 events/s: about half a second, then a clean stop.
    let cfg = Config { pace: Pace::Rate(400.0), max_events: Some(200), ..config("lim") };
    let (report, _server, _dir) = run(&trace, "lim", cfg).await;
    assert_sound(&report, "paced");
    assert_eq!(report.replay.items, 200);
    assert_eq!(report.stopped_early.as_deref(), Some("event limit reached"));
    assert!(report.replay.seconds >= 0.45, "the pace held: {:?}", report.replay);
}

/// Writes a trace through `fill` into a new file in `dir`.
fn write_trace(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut TraceWriter<std::io::BufWriter<std::fs::File>>),
) -> PathBuf {
    let path = dir.join(name);
    let mut w =
        TraceWriter::new(std::io::BufWriter::new(std::fs::File::create(&path).unwrap()), &Header::default()).unwrap();
    fill(&mut w);
    w.finish().unwrap();
    path
}

/// The real Higgs sample, bounded: the first 1,500 activity events (each a post by the
/// retweeting/mentioning/replying user), the follower graph among the users they involve,
/// gaps filled with follows derived from the interactions, and reads by followers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higgs_sample_replays_equal_to_the_oracle() {
    use starling_trace::higgs::{Fill, HiggsOptions, UserScope};
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "higgs.trace", |w| {
        let opts = HiggsOptions {
            fill: Fill::Interactions,
            users: UserScope::Active,
            max_events: Some(1_500),
            reads_per_post: 1.0,
            seed: 7,
        };
        let s = starling_trace::higgs::import(
            &data("higgs-activity.head2000.txt"),
            Some(&data("higgs-graph.excerpt.edgelist")),
            &opts,
            w,
        )
        .unwrap();
        assert!(s.posts == 1_500 && s.graph_edges > 0 && s.interaction_edges > 0, "{s:?}");
    });
    // Real time would take hours: the three days' first 1,500 events as fast as they go.
    let (report, _server, _dir) = run(&trace, "hig", config("hig")).await;
    assert_sound(&report, "higgs");
    assert!(report.trace_meta.iter().any(|(k, v)| k == "fill" && v == "interactions"), "{:?}", report.trace_meta);
}

/// socfb-Reed98 whole (962 users, 18,812 friendships = 37,624 follows) with synthetic
/// activity over its users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socfb_reed98_replays_equal_to_the_oracle() {
    use starling_trace::edgelist::EdgeListOptions;
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "reed.trace", |w| {
        let activity = ActivityConfig {
            duration_s: 10.0,
            posts_per_s: 100.0,
            reads_per_s: 100.0,
            burst: Some(Burst { at_s: 4.0, duration_s: 2.0, multiplier: 3.0 }),
            ..ActivityConfig::default()
        };
        let opts = EdgeListOptions { undirected: true, activity: Some(activity) };
        let s = starling_trace::edgelist::import(&data("socfb-Reed98.edges"), &opts, w, &|_| {}).unwrap();
        assert_eq!((s.users, s.edges), (962, 37_624), "{s:?}");
    });
    let (report, _server, _dir) = run(&trace, "fb", config("fb")).await;
    assert_sound(&report, "socfb-Reed98");
    assert_eq!(report.graph_load.items, 37_624);
    // Reed's best-connected students cross the (lowered) celebrity line.
    assert!(report.service.posts_merged_at_read.unwrap() > 0.0, "{:?}", report.service);
}

/// Writes a seeded synthetic trace with `celebrities` popular users to `dir/name`.
fn synthetic(dir: &Path, name: &str, users: u64, celebrities: u64, activity: ActivityConfig) -> PathBuf {
    let cfg = SynthConfig {
        users,
        celebrities,
        mean_following: 10.0,
        celebrity_followers: 0.3,
        celebrity_post_share: 0.2,
        activity,
        ..SynthConfig::default()
    };
    write_trace(dir, name, |w| starling_trace::synth::generate(&cfg, w, &|_| {}).map(drop).unwrap())
}

fn study_command(trace: &Path, out: &Path, configs: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_starling"));
    c.args(["trace", "study"])
        .arg(trace)
        .args(["--configs", configs, "--unpaced", "--concurrency", "32", "--lag-sample", "0.2", "--quiet", "--out"])
        .arg(out);
    c
}

/// `starling trace study` end to end: one trace under push-all, the hybrid and pull-all,
/// each on a fresh server the command starts itself. Every run passes the oracle check,
/// and the figures move the way the configurations say they must.
#[test]
fn study_puts_push_all_hybrid_and_pull_all_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let activity = ActivityConfig {
        duration_s: 10.0,
        posts_per_s: 20.0,
        reads_per_s: 40.0,
        burst: None,
        follows_per_s: 2.0,
        unfollows_per_s: 1.0,
        ..ActivityConfig::default()
    };
    let trace = synthetic(dir.path(), "study.trace", 200, 2, activity);
    let out = dir.path().join("study");
    let done = study_command(&trace, &out, "push-all,hybrid:40,pull-all").output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "the study failed: {stderr}");
    for step in ["study [1/3] push-all", "study [2/3] hybrid-40", "study [3/3] pull-all"] {
        assert!(stderr.contains(step), "progress names each step ({step}): {stderr}");
    }

    let study: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    let rows = study["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["configuration"].as_str().unwrap()).collect();
    assert_eq!(names, ["push-all", "hybrid-40", "pull-all"]);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {r}"));
    for r in rows {
        assert_eq!(r["oracle_passed"], true, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(f(r, "cpu_seconds_per_1k_events") > 0.0, "{r}");
        assert!(f(r, "cache_entries") > 0.0 && f(r, "cache_bytes") >= 16.0 * f(r, "cache_entries"), "{r}");
        assert!(f(r, "read_p99_ms") > 0.0 && f(r, "write_p99_ms") > 0.0, "{r}");
    }
    let (push, hybrid, pull) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(f(push, "posts_merged_at_read"), 0.0, "push-all merges nothing: {push}");
    assert_eq!(f(push, "celebrity_lists_per_page"), 0.0, "{push}");
    assert!(f(hybrid, "posts_merged_at_read") > 0.0 && f(hybrid, "posts_pushed") > 0.0, "{hybrid}");
    // Pull-all writes each post to its author's timeline alone, and reads merge instead.
    assert!(f(pull, "timeline_inserts_per_post") <= 1.0, "{pull}");
    assert!(f(pull, "celebrity_lists_per_page") > f(hybrid, "celebrity_lists_per_page"), "{pull} {hybrid}");
    let inserts = |r| f(r, "timeline_inserts_per_post");
    assert!(inserts(push) > inserts(hybrid) && inserts(hybrid) > inserts(pull), "{push} {hybrid} {pull}");
    assert!(f(push, "cache_entries") > f(pull, "cache_entries"), "{push} {pull}");

    let md = std::fs::read_to_string(out.join("study.md")).unwrap();
    for needle in ["## Cost", "## Latency", "## Side by side", "hybrid, line at 40 followers", "(push-all/report.md)"] {
        assert!(md.contains(needle), "study.md lacks {needle:?}:\n{md}");
    }
    for svg in ["study_cost.svg", "study_write_vs_read.svg", "study_lag_cdf.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("pull-all"), "{svg}");
    }
    for name in names {
        assert!(out.join(name).join("report.md").exists(), "{name}'s own report");
        assert!(!out.join(name).join("data").exists(), "{name}'s server data is removed after its run");
    }
}

/// Wrong study arguments are errors that say what is wrong, before any server starts.
#[test]
fn study_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let activity = ActivityConfig { duration_s: 1.0, burst: None, ..ActivityConfig::default() };
    let trace = synthetic(dir.path(), "tiny.trace", 20, 1, activity);
    let out = dir.path().join("out");
    for (configs, extra, says) in [
        ("push-all,hybrid:0", &[][..], "at least 1"),
        ("push-all,pushall", &[], "expected push-all, pull-all or hybrid:<followers>"),
        ("pull-all,pull-all", &[], "names pull-all twice"),
        ("push-all", &["--server-env", "NOEQUALS"], "expected KEY=VALUE"),
        ("push-all", &["--server-env", "STARLING__CELEBRITY__THRESHOLD=5"], "sets the celebrity settings itself"),
        ("push-all", &["--reset", "true"], "--target"),
    ] {
        let done = study_command(&trace, &out, configs).args(extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success() && stderr.contains(says), "{configs} {extra:?}: {stderr}");
    }
    assert!(!out.exists(), "nothing was written");
}

/// A study of a deployment the researcher runs: `--reset` restarts it empty with each
/// configuration's settings (here a standalone server on a fixed port, started by a
/// shell command as a researcher's script would), and the study measures it at `--target`.
#[test]
fn study_resets_a_given_deployment_between_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let activity =
        ActivityConfig { duration_s: 4.0, posts_per_s: 20.0, reads_per_s: 20.0, burst: None, ..Default::default() };
    let trace = synthetic(dir.path(), "reset.trace", 60, 1, activity);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (pid, log, seen) = (dir.path().join("server.pid"), dir.path().join("server.log"), dir.path().join("seen"));
    // Stops the last server, then starts one on an empty data directory; records the
    // settings it was given, so the test can check them.
    let reset = format!(
        "[ -f {pid} ] && kill $(cat {pid}) && while kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.1; done; \
         rm -rf {data}; echo \"$STARLING_STUDY_CONFIGURATION $STARLING__CELEBRITY__MODE\" >> {seen}; \
         STARLING__ADMIN__TOKEN={token} STARLING__RATE_LIMIT__WRITES_PER_SECOND=0 RUST_LOG=warn \
         {bin} up --bind 127.0.0.1:{port} --data-dir {data} >>{log} 2>&1 & echo $! > {pid}",
        pid = pid.display(),
        data = dir.path().join("data").display(),
        seen = seen.display(),
        token = common::ADMIN_TOKEN,
        bin = env!("CARGO_BIN_EXE_starling"),
        log = log.display(),
    );
    let out = dir.path().join("study");
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["trace", "study"])
        .arg(&trace)
        .args(["--configs", "push-all,pull-all", "--unpaced", "--quiet", "--reset", &reset])
        .args(["--target", &format!("http://127.0.0.1:{port}"), "--admin-token", common::ADMIN_TOKEN, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stopped = std::fs::read_to_string(&pid).map(|p| std::process::Command::new("kill").arg(p.trim()).status());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "the study failed: {stderr}\nserver log: {:?}", std::fs::read_to_string(&log));
    assert!(stopped.is_ok_and(|s| s.is_ok_and(|s| s.success())), "the last server was running");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "push-all push_all\npull-all pull_all\n");
    let study: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    let rows = study["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["oracle_passed"] == true), "{rows:?}");
    assert_eq!(rows[0]["posts_merged_at_read"], 0.0, "push-all");
    assert!(rows[1]["posts_merged_at_read"].as_f64().unwrap() > 0.0, "pull-all");
    assert!(study["deployment"].as_str().unwrap().contains("reset before each configuration"), "{study}");
}
