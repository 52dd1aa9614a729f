//! Progress of long commands (trace generation and import, replays) on stderr: indicatif's
//! bar on a terminal; elsewhere (output sent to a file, a CI log) a plain line every few
//! seconds and one at the end, so a run whose output goes to a file still says how far it
//! is, where indicatif would print nothing until the end.
//!
//! `events: 120000/500000 (24.0 %), 11873/s, 10 s elapsed, eta 32 s`

use std::io::{IsTerminal as _, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

/// How often a line is written when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Progress(Shown);

#[derive(Clone)]
enum Shown {
    Hidden,
    Bar(ProgressBar),
    Lines(Arc<Lines>),
}

struct Lines {
    what: String,
    len: Option<u64>,
    every: Duration,
    started: Instant,
    pos: AtomicU64,
    /// When the last line was written, the message and where lines go.
    out: Mutex<(Instant, String, Box<dyn Write + Send>)>,
}

impl Progress {
    /// Progress of `what` towards `len` (a count of unknown end if `None`), shown on stderr
    /// if `show`: as a bar on a terminal, as lines otherwise.
    pub fn new(what: &str, len: Option<u64>, show: bool) -> Progress {
        if !show {
            return Progress(Shown::Hidden);
        }
        if !std::io::stderr().is_terminal() {
            return Progress::lines(what, len, LINE_EVERY, Box::new(std::io::stderr()));
        }
        let bar = match len {
            Some(len) => {
                let bar = ProgressBar::new(len);
                if let Ok(style) =
                    ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            }
            None => {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) =
                    ProgressStyle::with_template("{spinner} {prefix}: {human_pos} ({per_sec}, {elapsed}) {msg}")
                {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
        };
        bar.set_prefix(what.to_owned());
        Progress(Shown::Bar(bar))
    }

    /// Lines to `out`, at most one per `every` (and one at the end).
    pub fn lines(what: &str, len: Option<u64>, every: Duration, out: Box<dyn Write + Send>) -> Progress {
        let started = Instant::now();
        Progress(Shown::Lines(Arc::new(Lines {
            what: what.to_owned(),
            len,
            every,
            started,
            pos: AtomicU64::new(0),
            out: Mutex::new((started, String::new(), out)),
        })))
    }

    pub fn inc(&self, n: u64) {
        match &self.0 {
            Shown::Hidden => {}
            Shown::Bar(bar) => bar.inc(n),
            Shown::Lines(lines) => {
                lines.pos.fetch_add(n, Ordering::Relaxed);
                lines.maybe_write(false);
            }
        }
    }

    pub fn set_position(&self, pos: u64) {
        match &self.0 {
            Shown::Hidden => {}
            Shown::Bar(bar) => bar.set_position(pos),
            Shown::Lines(lines) => {
                lines.pos.store(pos, Ordering::Relaxed);
                lines.maybe_write(false);
            }
        }
    }

    /// What is being waited for now, shown after the count.
    pub fn set_message(&self, message: String) {
        match &self.0 {
            Shown::Hidden => {}
            Shown::Bar(bar) => bar.set_message(message),
            Shown::Lines(lines) => {
                lines.out.lock().1 = message;
                lines.maybe_write(false);
            }
        }
    }

    /// Done: the bar stays as it ends; as lines, a last one.
    pub fn finish(&self) {
        match &self.0 {
            Shown::Hidden => {}
            Shown::Bar(bar) => bar.finish(),
            Shown::Lines(lines) => lines.maybe_write(true),
        }
    }

    /// Done: the bar goes (what follows says the result); as lines, a last one.
    pub fn finish_and_clear(&self) {
        match &self.0 {
            Shown::Hidden => {}
            Shown::Bar(bar) => bar.finish_and_clear(),
            Shown::Lines(lines) => lines.maybe_write(true),
        }
    }
}

impl Lines {
    fn maybe_write(&self, last: bool) {
        let mut out = self.out.lock();
        let now = Instant::now();
        if !last && now.duration_since(out.0) < self.every {
            return;
        }
        out.0 = now;
        let pos = self.pos.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { pos as f64 / secs } else { 0.0 };
        let mut line = format!("{}: {pos}", self.what);
        if let Some(len) = self.len.filter(|&l| l > 0) {
            line.push_str(&format!("/{len} ({:.1} %)", 100.0 * pos as f64 / len as f64));
        }
        line.push_str(&format!(", {rate:.0}/s, {secs:.0} s elapsed"));
        if let Some(len) = self.len
            && !last
            && rate > 0.0
            && len > pos
        {
            line.push_str(&format!(", eta {:.0} s", (len - pos) as f64 / rate));
        }
        if last {
            line.push_str(", done");
        }
        if !out.1.is_empty() {
            line.push_str(&format!(" ({})", out.1));
        }
        // Progress is best effort: a closed stderr must not fail the run.
        let _ = writeln!(out.2, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(b: &Buffer) -> String {
        String::from_utf8(b.0.lock().clone()).unwrap()
    }

    #[test]
    fn lines_say_how_far_and_end_with_a_last_one() {
        let out = Buffer::default();
        let p = Progress::lines("events", Some(200), Duration::ZERO, Box::new(out.clone()));
        p.inc(50);
        p.set_message("fan-out catching up".into());
        p.set_position(200);
        p.finish();
        let text = text(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("events: 50/200 (25.0 %), "), "{text}");
        assert!(lines[1].ends_with("(fan-out catching up)"), "{text}");
        assert!(lines[3].starts_with("events: 200/200 (100.0 %)") && lines[3].contains("done"), "{text}");
    }

    #[test]
    fn lines_are_rate_limited_and_an_unknown_end_shows_a_count() {
        let out = Buffer::default();
        let p = Progress::lines("records", None, Duration::from_secs(3600), Box::new(out.clone()));
        for _ in 0..1000 {
            p.inc(1);
        }
        assert_eq!(text(&out), "", "nothing before the interval");
        p.finish_and_clear();
        let text = text(&out);
        assert!(text.starts_with("records: 1000, ") && text.trim_end().ends_with("done"), "{text}");
        assert_eq!(text.lines().count(), 1);
        let hidden = Progress::new("x", Some(1), false);
        hidden.inc(1);
        hidden.finish();
    }
}
