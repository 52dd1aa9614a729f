//! The synthetic generator: determinism, and the shape of what it produces.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use starling_trace::synth::{self, ActivityConfig, Burst, SynthConfig};
use starling_trace::{Event, Header, Op, Record, TraceReader, TraceWriter};

fn generate(cfg: &SynthConfig) -> Vec<u8> {
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    synth::generate(cfg, &mut w, &|_| {}).unwrap();
    w.finish().unwrap()
}

fn records(bytes: &[u8]) -> Vec<Record> {
    TraceReader::new(Cursor::new(bytes)).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

fn events(records: &[Record]) -> Vec<Event> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn small() -> SynthConfig {
    SynthConfig {
        users: 2_000,
        mean_following: 20.0,
        activity: ActivityConfig { duration_s: 20.0, posts_per_s: 100.0, reads_per_s: 100.0, ..Default::default() },
        ..Default::default()
    }
}

#[test]
fn celebrities_write_their_share_of_posts() {
    for share in [0.0, 0.2] {
        let cfg = SynthConfig { celebrity_post_share: share, ..small() };
        let posts: Vec<Event> =
            events(&records(&generate(&cfg))).into_iter().filter(|e| matches!(e.op, Op::Post { .. })).collect();
        let by_celebrities = posts.iter().filter(|e| e.user <= cfg.celebrities).count() as f64 / posts.len() as f64;
        // The Zipf draw alone gives 5 of 2,000 users next to nothing; the share adds on top.
        assert!((by_celebrities - share).abs() < 0.03, "share {share}: celebrities wrote {by_celebrities}");
    }
}

#[test]
fn same_seed_gives_identical_bytes_and_different_seeds_differ() {
    let a = generate(&small());
    assert_eq!(a, generate(&small()));
    let other_graph = SynthConfig { seed: 99, ..small() };
    let b = generate(&other_graph);
    assert_ne!(a, b);
    let mut other_activity = small();
    other_activity.activity.seed = 99;
    let c = generate(&other_activity);
    // Only the activity changed: the edges are the same, the events are not.
    let (ra, rc) = (records(&a), records(&c));
    let edges = |r: &[Record]| r.iter().filter(|r| matches!(r, Record::Edge { .. })).copied().collect::<Vec<_>>();
    assert_eq!(edges(&ra), edges(&rc));
    assert_ne!(events(&ra), events(&rc));
}

#[test]
fn header_records_the_configuration() {
    let bytes = generate(&small());
    let reader = TraceReader::new(Cursor::new(&bytes)).unwrap();
    let h = reader.header();
    assert_eq!(h.get("source"), Some("synth"));
    assert_eq!(h.get("users"), Some("2000"));
    assert_eq!(h.get("activity.seed"), Some("1"));
    assert_eq!(h.get("activity.burst"), Some("at_s=30 duration_s=10 multiplier=4"));
}

/// Follower counts of every user.
fn followers(records: &[Record]) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for r in records {
        if let Record::Edge { followee, .. } = r {
            *counts.entry(*followee).or_insert(0) += 1;
        }
    }
    counts
}

/// Least-squares slope of log CCDF against log k, at log-spaced k in `lo..=hi`.
fn ccdf_slope(values: &[u64], lo: f64, hi: f64) -> f64 {
    let n = values.len() as f64;
    let mut pts = Vec::new();
    let mut k = lo;
    while k <= hi {
        let above = values.iter().filter(|&&v| v as f64 >= k).count() as f64;
        pts.push((k.ln(), (above / n).ln()));
        k *= 1.25;
    }
    let m = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / m, sy / m);
    let cov: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    cov / var
}

fn graph_only(users: u64, exponent: f64) -> SynthConfig {
    SynthConfig {
        users,
        celebrities: 5,
        mean_following: 20.0,
        follower_exponent: exponent,
        celebrity_followers: 0.2,
        celebrity_post_share: 0.0,
        activity: ActivityConfig { duration_s: 0.0, ..Default::default() },
        seed: 7,
    }
}

#[test]
fn follower_counts_follow_the_configured_power_law_and_celebrities_lead() {
    for exponent in [2.2, 2.6] {
        let cfg = graph_only(20_000, exponent);
        let recs = records(&generate(&cfg));
        let counts = followers(&recs);
        let edges = recs.len() as f64;
        assert!((edges / 20_000.0 - 20.0).abs() < 1.5, "mean following {}", edges / 20_000.0);
        let mut ranked: Vec<(u64, u64)> = counts.iter().map(|(&u, &c)| (c, u)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let top: HashSet<u64> = ranked[..5].iter().map(|&(_, u)| u).collect();
        assert_eq!(top, (1..=5).collect(), "celebrities are not the five most followed: {:?}", &ranked[..8]);
        let regular: Vec<u64> = (6..=20_000).map(|u| counts.get(&u).copied().unwrap_or(0)).collect();
        // Fitted well below the truncation (2,000 here), which otherwise steepens the tail.
        let slope = ccdf_slope(&regular, 15.0, 250.0);
        let want = 1.0 - exponent;
        eprintln!("exponent {exponent}: CCDF slope {slope:.3}, want {want:.3}, top {:?}", &ranked[..7]);
        assert!((slope - want).abs() < 0.2, "exponent {exponent}: CCDF slope {slope}, want {want}");
    }
}

fn activity_trace(activity: ActivityConfig) -> Vec<Event> {
    let users: Vec<u64> = (1..=5_000).collect();
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    synth::activity(&users, &activity, &mut w, &|_| {}).unwrap();
    events(&records(&w.finish().unwrap()))
}

#[test]
fn zipf_posting_makes_heavy_posters() {
    let evs = activity_trace(ActivityConfig {
        duration_s: 100.0,
        posts_per_s: 200.0,
        reads_per_s: 0.0,
        burst: None,
        ..Default::default()
    });
    let mut posts: HashMap<u64, u64> = HashMap::new();
    for e in &evs {
        if let Op::Post { .. } = e.op {
            *posts.entry(e.user).or_insert(0) += 1;
        }
    }
    let mut counts: Vec<u64> = posts.values().copied().collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let top = *counts.last().unwrap();
    assert!(top >= 50 * median, "top poster {top}, median {median}");
}

#[test]
fn burst_raises_the_event_rate() {
    let evs = activity_trace(ActivityConfig {
        duration_s: 40.0,
        posts_per_s: 100.0,
        reads_per_s: 200.0,
        burst: Some(Burst { at_s: 10.0, duration_s: 10.0, multiplier: 5.0 }),
        ..Default::default()
    });
    let inside = evs.iter().filter(|e| (10_000..20_000).contains(&e.at_ms)).count() as f64 / 10.0;
    let outside = evs.iter().filter(|e| !(10_000..20_000).contains(&e.at_ms)).count() as f64 / 30.0;
    let ratio = inside / outside;
    assert!((ratio - 5.0).abs() < 0.5, "burst ratio {ratio} ({inside}/s vs {outside}/s)");
}

#[test]
fn activity_is_consistent_over_time() {
    let cfg = SynthConfig {
        activity: ActivityConfig {
            duration_s: 60.0,
            posts_per_s: 50.0,
            reads_per_s: 50.0,
            deletes_per_post: 0.3,
            delete_delay_s: 5.0,
            follows_per_s: 40.0,
            unfollows_per_s: 30.0,
            blocks_per_s: 10.0,
            unblocks_per_s: 5.0,
            reblogs_per_s: 20.0,
            unreblogs_per_s: 5.0,
            favourites_per_s: 20.0,
            unfavourites_per_s: 5.0,
            mutes_per_s: 5.0,
            unmutes_per_s: 2.0,
            ..Default::default()
        },
        ..small()
    };
    let recs = records(&generate(&cfg));
    let mut following: HashSet<(u64, u64)> = HashSet::new();
    let mut authors: HashMap<u64, u64> = HashMap::new();
    let mut deleted: HashSet<u64> = HashSet::new();
    let mut acted: HashSet<(usize, u64, u64)> = HashSet::new();
    let mut muted: HashSet<(u64, u64)> = HashSet::new();
    let mut blocked: HashSet<(u64, u64)> = HashSet::new();
    let mut last = 0;
    let mut per_op = [0u64; Op::COUNT];
    for r in &recs {
        match *r {
            Record::Edge { follower, followee } => {
                assert_ne!(follower, followee, "self-follow");
                assert!(following.insert((follower, followee)), "duplicate edge");
            }
            Record::Event(e) => {
                assert!(e.at_ms >= last && e.at_ms < 60_000, "time {} after {last}", e.at_ms);
                last = e.at_ms;
                per_op[e.op.index()] += 1;
                match e.op {
                    Op::Post { key } => assert!(authors.insert(key, e.user).is_none(), "post key {key} reused"),
                    Op::Delete { key } => {
                        assert_eq!(authors.get(&key), Some(&e.user), "delete of {key} not by its author");
                        assert!(deleted.insert(key), "post {key} deleted twice");
                    }
                    Op::Follow { target } => {
                        assert_ne!(e.user, target);
                        assert!(!blocked.contains(&(e.user, target)) && !blocked.contains(&(target, e.user)));
                        following.insert((e.user, target));
                    }
                    Op::Unfollow { target } => {
                        assert!(following.remove(&(e.user, target)), "unfollow of a follow not in force");
                    }
                    Op::Block { target } => {
                        assert!(blocked.insert((e.user, target)), "block twice");
                        following.remove(&(e.user, target));
                        following.remove(&(target, e.user));
                    }
                    Op::Unblock { target } => assert!(blocked.remove(&(e.user, target)), "unblock without block"),
                    Op::Reblog { key } | Op::Favourite { key } => {
                        assert!(authors.contains_key(&key), "{} of post {key} before it", e.op);
                        assert!(acted.insert((e.op.index(), e.user, key)), "{} twice in force", e.op);
                    }
                    Op::Unreblog { key } | Op::Unfavourite { key } => {
                        let done = e.op.index() - 1;
                        assert!(acted.remove(&(done, e.user, key)), "{} of nothing in force", e.op);
                    }
                    Op::Mute { target } => {
                        assert_ne!(e.user, target);
                        assert!(muted.insert((e.user, target)), "mute twice");
                    }
                    Op::Unmute { target } => assert!(muted.remove(&(e.user, target)), "unmute without mute"),
                    Op::Read => {}
                }
            }
        }
    }
    // Every kind of event really occurs.
    assert!(per_op.iter().all(|&n| n > 0), "{per_op:?}");
    assert!(per_op[1] > 100, "deletes: {per_op:?}");
}
