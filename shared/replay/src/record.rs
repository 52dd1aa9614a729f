//! What the replay measures from the client side, while it runs: per-operation outcome
//! counts and HDR latency histograms, a per-second time series, and delivery-lag samples.
//!
//! Latency is kept twice: *service time* (request sent → answer) and *response time*
//! measured from when the trace said the event should happen. The second is what an
//! open-loop client sees: when the system falls behind, queued events wait, and that wait
//! counts (the coordinated-omission correction).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// How an operation ended, judged against the oracle's prediction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded, as predicted.
    Ok,
    /// Refused with the status the contract prescribes (e.g. following twice → 409).
    Refused,
    /// Answered, but not as the contract predicts (a correctness finding).
    Mismatch { expected: u16, got: u16 },
    /// No usable answer: transport errors, 5xx, 429.
    Error(String),
    /// Not sent: it depended on something that failed earlier (a delete of a post whose
    /// creation failed).
    Skipped,
}

pub struct OpStats {
    pub count: u64,
    pub ok: u64,
    pub refused: u64,
    pub mismatches: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub skipped: u64,
    service_us: Histogram<u64>,
    response_us: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            count: 0,
            ok: 0,
            refused: 0,
            mismatches: BTreeMap::new(),
            errors: BTreeMap::new(),
            skipped: 0,
            service_us: hist(),
            response_us: hist(),
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// One second of the replay.
#[derive(Default)]
struct Second {
    completed: BTreeMap<&'static str, u64>,
    errors: u64,
    /// Response times (µs) of writes and of reads.
    writes: Option<Histogram<u64>>,
    reads: Option<Histogram<u64>>,
}

#[derive(Default)]
struct Lag {
    /// Milliseconds from the post's 201 to its first sighting in the follower's timeline.
    samples_ms: Vec<f64>,
    timeouts: u64,
    no_active_follower: u64,
}

pub struct Recorder {
    started: Mutex<Instant>,
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
    seconds: Mutex<Vec<Second>>,
    lag: Mutex<Lag>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of_us(h: &Histogram<u64>) -> Percentiles {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OpSummary {
    pub op: String,
    pub count: u64,
    pub ok: u64,
    pub refused_as_predicted: u64,
    pub mismatches: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub skipped: u64,
    pub service_time: Percentiles,
    pub response_time: Percentiles,
}

#[derive(Clone, Debug, Serialize)]
pub struct SecondSummary {
    pub t_s: u64,
    pub completed: BTreeMap<String, u64>,
    pub errors: u64,
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    pub read_p50_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LagSummary {
    pub samples: usize,
    pub timeouts: u64,
    /// Sampled posts whose author had no follower who had read yet (see the report notes).
    pub no_active_follower: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// (lag ms, fraction of samples at or below it), at most 200 points.
    pub cdf: Vec<(f64, f64)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Mutex::new(Instant::now()),
            ops: Mutex::new(BTreeMap::new()),
            seconds: Mutex::new(Vec::new()),
            lag: Mutex::new(Lag::default()),
        }
    }

    /// Restarts the time series clock (at the start of the timed phase).
    pub fn restart_clock(&self) {
        *self.started.lock() = Instant::now();
        self.seconds.lock().clear();
    }

    /// Records one finished operation. `intended` is when the trace scheduled it, `sent`
    /// when its request left.
    pub fn record(&self, op: &'static str, outcome: &Outcome, intended: Instant, sent: Instant) {
        let now = Instant::now();
        let service = now.saturating_duration_since(sent);
        let response = now.saturating_duration_since(intended);
        let error = matches!(outcome, Outcome::Error(_) | Outcome::Mismatch { .. });
        {
            let mut ops = self.ops.lock();
            let s = ops.entry(op).or_insert_with(OpStats::new);
            s.count += 1;
            match outcome {
                Outcome::Ok => s.ok += 1,
                Outcome::Refused => s.refused += 1,
                Outcome::Mismatch { expected, got } => {
                    *s.mismatches.entry(format!("expected {expected}, got {got}")).or_default() += 1
                }
                Outcome::Error(kind) => *s.errors.entry(kind.clone()).or_default() += 1,
                Outcome::Skipped => s.skipped += 1,
            }
            if *outcome != Outcome::Skipped {
                s.service_us.saturating_record(service.as_micros() as u64);
                s.response_us.saturating_record(response.as_micros() as u64);
            }
        }
        if *outcome == Outcome::Skipped {
            return;
        }
        let second = now.saturating_duration_since(*self.started.lock()).as_secs() as usize;
        let mut seconds = self.seconds.lock();
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Second::default);
        }
        let s = &mut seconds[second];
        *s.completed.entry(op).or_default() += 1;
        s.errors += u64::from(error);
        let h = if op == "read" { &mut s.reads } else { &mut s.writes };
        h.get_or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static bounds"))
            .saturating_record(response.as_micros().max(1) as u64);
    }

    pub fn lag_sample(&self, lag: Duration) {
        let mut l = self.lag.lock();
        // Enough for a smooth CDF and exact percentiles of any replay a laptop can run.
        if l.samples_ms.len() < 1_000_000 {
            l.samples_ms.push(lag.as_secs_f64() * 1000.0);
        }
    }

    pub fn lag_timeout(&self) {
        self.lag.lock().timeouts += 1;
    }

    pub fn lag_no_active_follower(&self) {
        self.lag.lock().no_active_follower += 1;
    }

    pub fn ops(&self) -> Vec<OpSummary> {
        self.ops
            .lock()
            .iter()
            .map(|(op, s)| OpSummary {
                op: (*op).to_owned(),
                count: s.count,
                ok: s.ok,
                refused_as_predicted: s.refused,
                mismatches: s.mismatches.clone(),
                errors: s.errors.clone(),
                skipped: s.skipped,
                service_time: Percentiles::of_us(&s.service_us),
                response_time: Percentiles::of_us(&s.response_us),
            })
            .collect()
    }

    pub fn seconds(&self) -> Vec<SecondSummary> {
        let q = |h: &Option<Histogram<u64>>, p: f64| h.as_ref().map(|h| h.value_at_quantile(p) as f64 / 1000.0);
        self.seconds
            .lock()
            .iter()
            .enumerate()
            .map(|(t, s)| SecondSummary {
                t_s: t as u64,
                completed: s.completed.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                errors: s.errors,
                write_p50_ms: q(&s.writes, 0.5),
                write_p99_ms: q(&s.writes, 0.99),
                read_p50_ms: q(&s.reads, 0.5),
                read_p99_ms: q(&s.reads, 0.99),
            })
            .collect()
    }

    pub fn lag(&self) -> LagSummary {
        let l = self.lag.lock();
        let mut v = l.samples_ms.clone();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| (!v.is_empty()).then(|| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]);
        let step = (v.len() / 200).max(1);
        let mut cdf: Vec<(f64, f64)> =
            v.iter().enumerate().step_by(step).map(|(i, x)| (*x, (i + 1) as f64 / v.len() as f64)).collect();
        if let Some(last) = v.last() {
            cdf.push((*last, 1.0));
        }
        LagSummary {
            samples: v.len(),
            timeouts: l.timeouts,
            no_active_follower: l.no_active_follower,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: v.last().copied(),
            cdf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outcomes_and_keeps_both_latencies() {
        let r = Recorder::new();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let sent = Instant::now();
        r.record("post", &Outcome::Ok, t0, sent);
        r.record("post", &Outcome::Error("transport".into()), t0, sent);
        r.record("follow", &Outcome::Refused, t0, sent);
        r.record("follow", &Outcome::Mismatch { expected: 409, got: 200 }, t0, sent);
        r.record("delete", &Outcome::Skipped, t0, sent);
        let ops = r.ops();
        let post = ops.iter().find(|o| o.op == "post").unwrap();
        assert_eq!((post.count, post.ok, post.errors["transport"]), (2, 1, 1));
        // The response time counts the 5 ms the event waited before it was sent.
        assert!(post.response_time.p50_ms >= 5.0 && post.service_time.p50_ms < 5.0, "{post:?}");
        let follow = ops.iter().find(|o| o.op == "follow").unwrap();
        assert_eq!((follow.refused_as_predicted, follow.mismatches["expected 409, got 200"]), (1, 1));
        let delete = ops.iter().find(|o| o.op == "delete").unwrap();
        assert_eq!((delete.skipped, delete.service_time.count), (1, 0));
        let secs = r.seconds();
        assert_eq!(secs[0].completed.values().sum::<u64>(), 4);
        assert_eq!(secs[0].errors, 2);
    }

    #[test]
    fn lag_percentiles_and_cdf() {
        let r = Recorder::new();
        for ms in 1..=100 {
            r.lag_sample(Duration::from_millis(ms));
        }
        r.lag_timeout();
        let l = r.lag();
        assert_eq!((l.samples, l.timeouts), (100, 1));
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(l.cdf.last(), Some(&(100.0, 1.0)));
        assert!(l.cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }
}
